"""Prompt types, shaped like vLLM's ``vllm.inputs.data``.

A prompt is one of:

- ``str`` or ``TextPrompt``: text, tokenized by the engine; with ``text_pair``
  the two texts are encoded as a pair (the tokenizer's pair template and
  token type ids), as cross-encoders (the "score" task) take them;
- ``TokensPrompt``: token ids used as they are (``token_type_ids`` optional);
- ``TokensPrompt`` with ``multi_modal_data``: named tensors (``pixel_values`` ...)
  for models that take tensor inputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NotRequired, TypedDict, Union


class TextPrompt(TypedDict):
    """Text to be tokenized by the engine."""

    prompt: str
    text_pair: NotRequired[str]
    multi_modal_data: NotRequired[Mapping[str, Any]]


class TokensPrompt(TypedDict):
    """Token ids, optionally with tensor inputs."""

    prompt_token_ids: list[int]
    token_type_ids: NotRequired[list[int]]
    multi_modal_data: NotRequired[Mapping[str, Any]]


PromptType = Union[str, TextPrompt, TokensPrompt]


def prompt_kind(prompt: Any) -> str:
    """Classify a prompt as "text", "tokens" or "tensors"; raise ValueError if none.

    Raised errors become INVALID_ARGUMENT for that prompt.
    """
    if isinstance(prompt, str):
        return "text"
    if not isinstance(prompt, Mapping):
        raise ValueError(
            f"A prompt must be a str or a dict with 'prompt' or 'prompt_token_ids', "
            f"got {type(prompt).__name__}"
        )
    mm = prompt.get("multi_modal_data")
    if mm:
        import torch  # here, not at import: the plugin interface imports without torch

        if not isinstance(mm, Mapping) or not all(isinstance(v, torch.Tensor) for v in mm.values()):
            raise ValueError("multi_modal_data must map names to torch.Tensor values")
        return "tensors"
    if "prompt" in prompt:
        if not isinstance(prompt["prompt"], str):
            raise ValueError("'prompt' must be a string")
        if "text_pair" in prompt and not isinstance(prompt["text_pair"], str):
            raise ValueError("'text_pair' must be a string")
        return "text"
    if "prompt_token_ids" in prompt:
        return "tokens"
    raise ValueError("A prompt dict needs 'prompt', 'prompt_token_ids' or 'multi_modal_data'")
