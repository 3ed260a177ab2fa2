"""``vllm.inputs``: prompt types."""

from vllm.inputs.data import DataPrompt, EmbedsPrompt, PromptType, SingletonPrompt, TextPrompt, TokensPrompt

__all__ = ["DataPrompt", "EmbedsPrompt", "PromptType", "SingletonPrompt", "TextPrompt", "TokensPrompt"]
