"""Prompt validation and tokenization.

Three phases, on purpose:

- ``check()`` runs on the event loop at admission. It is O(1)-ish (types,
  params, per-prompt cost caps, tensor names/shapes/finiteness) so a malformed
  or oversized prompt fails ``encode()`` at once, before it takes a queue slot.
- ``process()`` runs in the core thread for token-id and tensor prompts:
  validates token ids and sets each request's scheduler cost and batching group.
- Text prompts are tokenized OFF the core thread (``engine/tokenize_worker.py``),
  from character-bounded prefixes (``engine/text_cut.py``): a huge text costs its
  sender, never the batches of other callers. ``tokenize_pass`` and
  ``tokenize_rest`` are what those threads call.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from tokenizers import Tokenizer

from poolstream.config import LimitsConfig
from poolstream.engine.errors import InvalidPromptError, NonFiniteInputError, PromptTooLargeError
from poolstream.engine.request import EngineRequest
from poolstream.engine.tasks import check_task_params, resolve_task, task_dim
from poolstream.engine.text_cut import TextCutter
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
                 model_name: str = "this model", limits: LimitsConfig | None = None):
        self.model = model
        # sentence-transformers prompts (config_sentence_transformers.json), prepended to text.
        self.prompts = dict(prompts or {})
        self.default_prompt_name = default_prompt_name if default_prompt_name in self.prompts else None
        self.model_name = model_name
        self.spec = spec
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.max_model_len = spec.max_model_len
        self.limits = limits or LimitsConfig()
        # Characters per token of the text cut (engine/text_cut.py); GetServerInfo reports it.
        self.chars_per_token = TextCutter(tokenizer).chars_per_token if tokenizer is not None else 0

    def new_cutter(self) -> TextCutter:
        """A TextCutter on a copy of the tokenizer (one per tokenizing thread: truncation is state)."""
        assert self.tokenizer is not None
        return TextCutter(Tokenizer.from_str(self.tokenizer.to_str()), self.chars_per_token)

    def text_cut_chars(self) -> int:
        """The first prefix tried for a text at the model's full length (0: no tokenizer)."""
        return self.max_model_len * self.chars_per_token if self.tokenizer is not None else 0

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
        if kind == "text":
            self._check_text(prompt)
        elif kind == "tokens":
            self._check_token_count(prompt["prompt_token_ids"])
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

    def _check_text(self, prompt: Any) -> None:
        if isinstance(prompt, str):
            n = len(prompt)
        else:
            pair = prompt.get("text_pair")
            n = len(prompt["prompt"]) + (len(pair) if isinstance(pair, str) else 0)
        cap = self.limits.max_prompt_chars
        if n > cap:
            raise PromptTooLargeError(
                f"the text has {n} characters; at most {cap} per prompt (--max-prompt-chars)")

    def _check_token_count(self, ids: Any) -> None:
        cap = self.limits.max_prompt_token_ids
        try:
            n = len(ids)
        except TypeError:
            return  # not a list: process() refuses it
        if n > cap:
            raise PromptTooLargeError(
                f"the prompt has {n} token ids; at most {cap} per prompt (--max-prompt-token-ids)")

    def _check_tensors(self, prompt: Mapping[str, Any]) -> None:
        expected = set(self.spec.tensor_inputs)
        if not expected:
            raise InvalidPromptError("this model takes no tensor inputs")
        mm = prompt["multi_modal_data"]
        if set(mm) != expected:
            raise InvalidPromptError(
                f"tensor inputs must be exactly {sorted(expected)}, got {sorted(mm)}"
            )
        size = sum(t.numel() * t.element_size() for t in mm.values())
        cap = self.limits.max_prompt_tensor_bytes
        if size > cap:
            raise PromptTooLargeError(
                f"the prompt's tensors hold {size} bytes; at most {cap} per prompt (--max-prompt-tensor-bytes)")
        if not self.limits.allow_non_finite_inputs:
            for name, t in mm.items():
                if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                    bad = int((~torch.isfinite(t)).sum())
                    raise NonFiniteInputError(
                        f"tensor {name[:64]!r} holds {bad} NaN or infinite values; inputs must be finite "
                        "(the server refuses them unless started with --allow-non-finite-inputs)")
        try:
            self.model.check_tensor_inputs(mm)
            cost = int(self.model.tensor_prompt_cost(mm))
        except (ValueError, TypeError, RuntimeError, OverflowError) as e:
            raise InvalidPromptError(str(e)) from None
        if cost > self.limits.max_prompt_tensor_cost:
            raise PromptTooLargeError(
                f"the prompt costs {cost} units of the model (its tensor_prompt_cost); at most "
                f"{self.limits.max_prompt_tensor_cost} per prompt (--max-prompt-tensor-cost)")

    # ---- core thread side ------------------------------------------------

    def process(self, reqs: list[EngineRequest]) -> list[tuple[EngineRequest, Exception]]:
        """Token-id and tensor prompts (not texts: see tokenize_pass): fill token_ids / cost /
        group of each request; return those that failed."""
        failed: list[tuple[EngineRequest, Exception]] = []
        for req in reqs:
            try:
                if req.kind == "tokens":
                    self._process_tokens(req, req.prompt["prompt_token_ids"])
                else:
                    self._process_tensors(req)
            except (InvalidPromptError, ValueError, TypeError) as e:
                failed.append((req, e if isinstance(e, InvalidPromptError) else InvalidPromptError(str(e))))
        return failed

    def _limit(self, params: PoolingParams) -> int:
        return params.truncate_prompt_tokens or self.max_model_len

    # ---- tokenizing threads (engine/tokenize_worker.py) --------------------

    def tokenize_pass(self, cutter: TextCutter, reqs: list[EngineRequest]
                      ) -> tuple[list[EngineRequest], list[tuple[EngineRequest, Exception]], list[EngineRequest]]:
        """The first, bounded pass over newly arrived texts: (done, failed, left for tokenize_rest).

        Text pairs are never cut (truncating a pair takes from the longer side, so its result
        depends on both whole lengths): a pair longer than the bound is read whole by the
        rest thread."""
        done: list[EngineRequest] = []
        failed: list[tuple[EngineRequest, Exception]] = []
        rest: list[EngineRequest] = []
        by_limit: dict[int, list[tuple[EngineRequest, Any]]] = {}
        for req in reqs:
            try:
                text = self._text_input(req)
            except (KeyError, TypeError, ValueError) as e:
                failed.append((req, InvalidPromptError(str(e))))
                continue
            by_limit.setdefault(self._limit(req.params), []).append((req, text))
        for limit, group in by_limit.items():
            singles = [(r, t) for r, t in group if isinstance(t, str)]
            pairs = [(r, t) for r, t in group if not isinstance(t, str)]
            bound = cutter.cut_chars(limit)
            rest.extend(r for r, t in pairs if len(t[0]) + len(t[1]) > bound)
            short_pairs = [(r, t) for r, t in pairs if len(t[0]) + len(t[1]) <= bound]
            encodings = cutter.first_pass([t for _, t in singles], limit) + \
                cutter.encode_whole([t for _, t in short_pairs], limit)
            for (req, text), enc in zip(singles + short_pairs, encodings):
                if enc is None:
                    rest.append(req)
                    continue
                error = self._apply_encoding(req, text, enc)
                if error is None:
                    done.append(req)
                else:
                    failed.append((req, error))
        return done, failed, rest

    def tokenize_rest(self, cutter: TextCutter, req: EngineRequest) -> Exception | None:
        """A text the first pass could not settle (see text_cut); None, or its error."""
        text = self._text_input(req)
        limit = self._limit(req.params)
        enc = cutter.finish(text, limit) if isinstance(text, str) else cutter.encode_whole([text], limit)[0]
        return self._apply_encoding(req, text, enc)

    def _apply_encoding(self, req: EngineRequest, text: Any, enc: Any) -> Exception | None:
        # Cut text lands in `overflowing` (stride 0), so non-empty means truncated.
        truncated = bool(enc.overflowing)
        if truncated and req.params.truncate is False and req.params.truncate_prompt_tokens is None:
            return InvalidPromptError(
                f"prompt is longer than the model's maximum of {self.max_model_len} tokens "
                "and truncate is false")
        req.token_ids = enc.ids
        if isinstance(text, tuple) and self.spec.token_type_ids:
            req.token_type_ids = enc.type_ids
        req.truncated = truncated
        req.cost = len(req.token_ids)
        req.group = (_TEXT_GROUP[0], req.task)
        return None

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
