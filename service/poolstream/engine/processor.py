"""Prompt validation and tokenization.

Two phases, on purpose:

- ``check()`` runs on the event loop at admission. It is O(1)-ish (types,
  params, tensor names/shapes) so a malformed prompt fails ``encode()`` at
  once, before it takes a queue slot.
- ``process()`` runs in the core thread: it tokenizes every newly arrived
  text prompt with ONE ``encode_batch`` call per truncation length (the Rust
  tokenizer parallelises and releases the GIL), validates token ids and sets
  each request's scheduler cost and batching group.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from tokenizers import Tokenizer

from poolstream.engine.errors import InvalidPromptError
from poolstream.engine.request import EngineRequest
from poolstream.engine.tasks import check_task_params, resolve_task, task_dim
from poolstream.inputs import prompt_kind
from poolstream.models.base import ModelSpec, PoolingModel
from poolstream.pooling_params import PoolingParams

_TEXT_GROUP = ("tokens",)


class Checked(NamedTuple):
    """What admission resolved for one prompt."""

    kind: str  # "text" | "tokens" | "tensors"
    normalize: bool
    dimensions: int | None
    task: str
    activation: bool


def load_tokenizer(path: Path | None) -> Tokenizer | None:
    """The fast tokenizer with its file's padding/truncation removed (the engine does both)."""
    if path is None:
        return None
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.no_truncation()
    return tok


class InputProcessor:
    def __init__(self, model: PoolingModel, spec: ModelSpec, tokenizer: Tokenizer | None, vocab_size: int,
                 prompts: Mapping[str, str] | None = None, default_prompt_name: str | None = None,
                 model_name: str = "this model"):
        self.model = model
        # sentence-transformers prompts (config_sentence_transformers.json), prepended to text.
        self.prompts = dict(prompts or {})
        self.default_prompt_name = default_prompt_name if default_prompt_name in self.prompts else None
        self.model_name = model_name
        self.spec = spec
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.max_model_len = spec.max_model_len
        self._truncation: int | None = None  # current tokenizer truncation length

    # ---- event loop side -------------------------------------------------

    def check(self, prompt: Any, params: PoolingParams) -> Checked:
        """Validate a prompt and its params; resolve its task, normalize and dimensions."""
        try:
            kind = prompt_kind(prompt)
            params.verify()
        except ValueError as e:
            raise InvalidPromptError(str(e)) from None
        if kind in ("text", "tokens") and self.max_model_len == 0:
            raise InvalidPromptError("this model takes tensor inputs, not text or token ids")
        if kind == "text" and self.tokenizer is None:
            raise InvalidPromptError("this model directory has no tokenizer.json: send token ids")
        task = resolve_task(self.spec, params.task, self.model_name)
        if not self.spec.tensor_inputs:
            check_task_params(task, params)
        if kind == "tensors":
            self._check_tensors(prompt)
        if params.prompt_name is not None:
            if params.prompt_name not in self.prompts:
                known = ", ".join(repr(n) for n in self.prompts) or "none"
                raise InvalidPromptError(
                    f"unknown prompt_name {params.prompt_name!r}; this model's prompts: {known}")
            if kind != "text":
                raise InvalidPromptError("prompt_name applies to text prompts only")
        if kind == "tokens" and "token_type_ids" in prompt:
            self._check_token_types(prompt)
        tpt = params.truncate_prompt_tokens
        if tpt is not None and self.max_model_len and tpt > self.max_model_len:
            raise InvalidPromptError(
                f"truncate_prompt_tokens ({tpt}) is greater than max_model_len ({self.max_model_len})"
            )
        dims = params.dimensions
        if dims is not None:
            size = task_dim(self.spec, task) if task in ("embed", "token_embed") else None
            if size is None:
                raise InvalidPromptError("dimensions applies to embedding models only")
            if dims > size:
                raise InvalidPromptError(f"dimensions ({dims}) is greater than the model's {size}")
            if dims == size:
                dims = None
        normalize = self.spec.normalize if params.normalize is None else bool(params.normalize)
        activation = True if params.use_activation is None else bool(params.use_activation)
        return Checked(kind, normalize, dims, task, activation)

    def _check_token_types(self, prompt: Mapping[str, Any]) -> None:
        types = prompt["token_type_ids"]
        arr = np.asarray(types)
        if arr.ndim != 1 or arr.size != len(prompt["prompt_token_ids"]) or (arr.size and arr.dtype.kind not in "iu"):
            raise InvalidPromptError("token_type_ids must be integers, one per prompt token id")
        limit = int(self.spec.extra.get("type_vocab_size", 1)) if self.spec.token_type_ids else 1
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= limit):
            raise InvalidPromptError(f"token_type_ids must be in [0, {limit})")

    def _check_tensors(self, prompt: Mapping[str, Any]) -> None:
        expected = set(self.spec.tensor_inputs)
        if not expected:
            raise InvalidPromptError("this model takes no tensor inputs")
        mm = prompt["multi_modal_data"]
        if set(mm) != expected:
            raise InvalidPromptError(
                f"tensor inputs must be exactly {sorted(expected)}, got {sorted(mm)}"
            )
        try:
            self.model.check_tensor_inputs(mm)
        except ValueError as e:
            raise InvalidPromptError(str(e)) from None

    # ---- core thread side ------------------------------------------------

    def process(self, reqs: list[EngineRequest]) -> list[tuple[EngineRequest, Exception]]:
        """Fill token_ids / cost / group of each request; return those that failed."""
        failed: list[tuple[EngineRequest, Exception]] = []
        by_limit: dict[int, list[EngineRequest]] = {}
        for req in reqs:
            try:
                if req.kind == "text":
                    by_limit.setdefault(self._limit(req.params), []).append(req)
                elif req.kind == "tokens":
                    self._process_tokens(req, req.prompt["prompt_token_ids"])
                else:
                    self._process_tensors(req)
            except (InvalidPromptError, ValueError, TypeError) as e:
                failed.append((req, e if isinstance(e, InvalidPromptError) else InvalidPromptError(str(e))))
        for limit, group in by_limit.items():
            self._tokenize(limit, group, failed)
        return failed

    def _limit(self, params: PoolingParams) -> int:
        return params.truncate_prompt_tokens or self.max_model_len

    def _tokenize(self, limit: int, reqs: list[EngineRequest], failed: list) -> None:
        assert self.tokenizer is not None  # check() guarantees it for text prompts
        if self._truncation != limit:
            self.tokenizer.enable_truncation(limit)
            self._truncation = limit
        texts = [self._text_input(r) for r in reqs]
        # encode_batch_fast (tokenizers >= 0.21) skips char offsets, which we never read.
        encode = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)
        for req, text, enc in zip(reqs, texts, encode(texts)):
            # Cut text lands in `overflowing` (stride 0), so non-empty means truncated.
            truncated = bool(enc.overflowing)
            if truncated and req.params.truncate is False and req.params.truncate_prompt_tokens is None:
                failed.append((req, InvalidPromptError(
                    f"prompt is longer than the model's maximum of {self.max_model_len} tokens "
                    "and truncate is false")))
                continue
            req.token_ids = enc.ids
            if isinstance(text, tuple) and self.spec.token_type_ids:
                req.token_type_ids = enc.type_ids
            req.truncated = truncated
            req.cost = len(req.token_ids)
            req.group = (_TEXT_GROUP[0], req.task)

    def _text_input(self, req: EngineRequest) -> str | tuple[str, str]:
        """The text to tokenize: the sentence-transformers prompt + the text, or a (text, pair) tuple."""
        if isinstance(req.prompt, str):
            text, pair = req.prompt, None
        else:
            text, pair = req.prompt["prompt"], req.prompt.get("text_pair")
        name = req.params.prompt_name or self.default_prompt_name
        if name is not None:
            text = self.prompts[name] + text
        return text if pair is None else (text, pair)

    def _process_tokens(self, req: EngineRequest, ids: Any) -> None:
        arr = np.asarray(ids)
        if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iu":
            raise InvalidPromptError("prompt_token_ids must be a non-empty list of integers")
        if int(arr.min()) < 0 or int(arr.max()) >= self.vocab_size:
            raise InvalidPromptError(f"token ids must be in [0, {self.vocab_size})")
        ids = ids if isinstance(ids, list) else arr.tolist()
        limit = self._limit(req.params)
        if len(ids) > limit:
            if req.params.truncate is False and req.params.truncate_prompt_tokens is None:
                raise InvalidPromptError(
                    f"prompt has {len(ids)} tokens, more than the model's maximum of "
                    f"{self.max_model_len}, and truncate is false")
            ids, req.truncated = ids[:limit], True
        req.token_ids = list(ids)
        types = req.prompt.get("token_type_ids")
        if types is not None and self.spec.token_type_ids and any(types):
            req.token_type_ids = [int(t) for t in types][: len(ids)]
        req.cost = len(ids)
        req.group = (_TEXT_GROUP[0], req.task)

    def _process_tensors(self, req: EngineRequest) -> None:
        mm: Mapping[str, torch.Tensor] = req.prompt["multi_modal_data"]
        req.tensors = dict(mm)
        ids = req.prompt.get("prompt_token_ids") or []
        req.token_ids = [int(i) for i in ids]
        req.cost = max(1, int(self.model.tensor_prompt_cost(mm)))
        # Tensor prompts batch only with prompts of identical names, shapes and dtypes.
        req.group = ("tensors",) + tuple(sorted((k, tuple(v.shape), v.dtype) for k, v in mm.items()))
