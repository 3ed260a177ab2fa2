"""Per-request cost caps: what all the prompts of one request may add up to.

Per-prompt caps are the engine's (``InputProcessor.check``: every prompt,
whoever made it). These bound a request as a whole, before any of its prompts
is admitted: the sum over an Encode request's prompts (counted on the wire
message, before anything is decoded), or over the prompts a plugin made from
one payload. Transport-neutral: the gRPC handlers, the plugin pipeline and any
other front door call the same functions with the server's ``LimitsConfig``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from poolstream.config import LimitsConfig
from poolstream.engine.errors import PromptTooLargeError


class RequestTooLargeError(ValueError):
    """A request over a per-request cost cap -> INVALID_ARGUMENT REQUEST_TOO_LARGE."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


def check_request_costs(chars: int, token_ids: int, tensor_bytes: int, limits: LimitsConfig,
                        field: str = "prompts") -> None:
    """Raise RequestTooLargeError when a request's totals pass a cap."""
    for total, cap, what, flag in (
        (chars, limits.max_request_chars, "characters of text", "--max-request-chars"),
        (token_ids, limits.max_request_token_ids, "token ids", "--max-request-token-ids"),
        (tensor_bytes, limits.max_request_tensor_bytes, "bytes of tensors", "--max-request-tensor-bytes"),
    ):
        if total > cap:
            raise RequestTooLargeError(
                f"the request's prompts hold {total} {what}; at most {cap} per request ({flag})", field)


def check_prompt_list(prompts: Sequence[Any], limits: LimitsConfig, field: str = "data") -> None:
    """Per-request caps over engine prompts (str, {"prompt"}, {"prompt_token_ids"}, tensors)."""
    chars = token_ids = tensor_bytes = 0
    for p in prompts:
        if isinstance(p, str):
            chars += len(p)
            continue
        if not isinstance(p, Mapping):
            continue  # the engine refuses it
        text = p.get("prompt")
        if isinstance(text, str):
            chars += len(text)
        ids = p.get("prompt_token_ids")
        if ids is not None and hasattr(ids, "__len__"):
            token_ids += len(ids)
        mm = p.get("multi_modal_data")
        if isinstance(mm, Mapping):
            tensor_bytes += sum(_nbytes(t) for t in mm.values())
    check_request_costs(chars, token_ids, tensor_bytes, limits, field)


def proto_prompt_totals(prompts: Iterable[Any]) -> tuple[int, int, int]:
    """(characters, token ids, tensor bytes) of ``poolstream.v1.Prompt`` messages, read from the
    wire message's lengths (nothing is decoded or copied)."""
    chars = token_ids = tensor_bytes = 0
    for p in prompts:
        kind = p.WhichOneof("input")
        if kind == "text":
            chars += len(p.text)
        elif kind == "token_ids":
            token_ids += len(p.token_ids.ids)
        elif kind == "multi_modal":
            token_ids += len(p.multi_modal.prompt_token_ids)
            for t in p.multi_modal.multi_modal_data.values():
                tensor_bytes += len(t.data) + 4 * len(t.float_values)
    return chars, token_ids, tensor_bytes


def check_proto_tensor_bytes(prompt: Any, limits: LimitsConfig) -> None:
    """The per-prompt tensor bytes cap on a ``poolstream.v1.Prompt`` before its tensors are
    decoded (the engine checks every prompt again; this spares the copy of one too large)."""
    if prompt.WhichOneof("input") != "multi_modal":
        return
    size = sum(len(t.data) + 4 * len(t.float_values) for t in prompt.multi_modal.multi_modal_data.values())
    if size > limits.max_prompt_tensor_bytes:
        raise PromptTooLargeError(
            f"the prompt's tensors hold {size} bytes; at most {limits.max_prompt_tensor_bytes} per prompt "
            "(--max-prompt-tensor-bytes)")


def _nbytes(t: Any) -> int:
    if isinstance(t, torch.Tensor):
        return t.numel() * t.element_size()
    return int(getattr(t, "nbytes", 0) or 0)
