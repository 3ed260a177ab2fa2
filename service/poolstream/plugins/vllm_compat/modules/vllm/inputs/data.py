"""``vllm.inputs.data``: prompt types (poolstream's, plus vLLM's offline ``DataPrompt``)."""

from typing import Any, TypedDict

from poolstream.inputs import PromptType, TextPrompt, TokensPrompt


class DataPrompt(TypedDict):
    """An offline plugin prompt: ``LLM.encode({"data": ..., "data_format": ...})``."""

    data: Any
    data_format: str


class EmbedsPrompt(TypedDict):
    """Prompt embeddings (not served by poolstream's engine; the type exists for imports)."""

    prompt_embeds: Any


SingletonPrompt = PromptType

__all__ = ["DataPrompt", "EmbedsPrompt", "PromptType", "SingletonPrompt", "TextPrompt", "TokensPrompt"]
