"""User-facing entry points: the in-process ``LLM`` API and request/response types."""
