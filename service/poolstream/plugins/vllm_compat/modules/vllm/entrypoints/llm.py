"""``vllm.entrypoints.llm``: the offline ``LLM`` (poolstream's in-process API)."""

from poolstream.entrypoints.llm import LLM

__all__ = ["LLM"]
