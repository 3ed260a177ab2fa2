"""Model runner: device/dtype, collation, forward, output post-processing.

Runs only in the core thread. ``execute()`` returns a ``BatchHandle``: on CPU
the work is already done; on CUDA the forward and the device->host copy are
queued on the stream (pinned buffers, ``non_blocking=True``) and the handle
holds an event, so the core thread can collate the next batch while the GPU
works. Outputs come back with ONE copy per batch.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from poolstream.engine.errors import EngineError
from poolstream.engine.request import EngineRequest
from poolstream.engine.tasks import apply_activation, labelled, sparse_output
from poolstream.models.base import TOKEN_TASKS, ModelSpec, PoolingModel
from poolstream.outputs import PoolingOutput

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda:0 when available, else cpu. Asking for cuda without one is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise EngineError("device 'cuda' was requested but torch sees no CUDA device")
        dev = torch.device(name)
        return torch.device("cuda", dev.index if dev.index is not None else torch.cuda.current_device())
    if name != "cpu":
        raise EngineError(f"unknown device {name!r}: use auto, cuda or cpu")
    return torch.device("cpu")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """"auto" -> float16 on CUDA, float32 on CPU (CPU half kernels are slow and inexact)."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if name not in _DTYPES:
        raise EngineError(f"unknown dtype {name!r}: use auto, float32, float16 or bfloat16")
    return _DTYPES[name]


@dataclass
class BatchHandle:
    """A batch in flight. ``wait()`` -> one float32 CPU tensor per request, in batch order."""

    batch: list[EngineRequest]
    parts: list[tuple[torch.Tensor, list[int]]]  # (host output, batch rows it holds)
    event: torch.cuda.Event | None = None
    started: float = 0.0  # time.monotonic() at launch

    def ready(self) -> bool:
        return self.event is None or self.event.query()

    def wait(self) -> list[torch.Tensor]:
        if self.event is not None:
            self.event.synchronize()
        rows: list[torch.Tensor | None] = [None] * len(self.batch)
        for host, idx in self.parts:
            if self.event is not None:
                # Own the memory: pinned blocks go back to the allocator's cache, and
                # callers may keep outputs for long.
                host = host.clone()
            for row, i in zip(host.unbind(0), idx):
                rows[i] = row
        return rows  # type: ignore[return-value]


def _l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """``F.normalize(x, p=2, dim=-1)`` (same ops, same values) without its Python wrapper and
    ``expand_as``: one op fewer on the lone-request path, where each op runs cache-cold."""
    return x / x.norm(2.0, -1, True).clamp_min(1e-12)


class ModelRunner:
    def __init__(self, model: PoolingModel, device: torch.device, dtype: torch.dtype):
        self.model = model
        self.spec: ModelSpec = model.spec()
        self.device = device
        self.dtype = dtype
        self.is_cuda = device.type == "cuda"

    # ---- collation ------------------------------------------------------

    def _collate_tokens(self, batch: list[EngineRequest]) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(batch)
        if n == 1 and not self.is_cuda:
            # A lone prompt has no padding: two small ops instead of the numpy masking below.
            # After a forward has flushed the CPU caches, every op on this path is a cache-cold
            # one; measured on the 2-core CPU: ~75 us here vs ~200 us for the general path.
            ids = torch.tensor([batch[0].token_ids], dtype=torch.int64)
            return ids, torch.ones_like(ids)
        lens = np.fromiter((len(r.token_ids) for r in batch), dtype=np.int64, count=n)
        seq = int(lens.max())
        # [n, seq] right-padded ids and 0/1 mask, built with two numpy ops instead of n row copies.
        ids = torch.zeros((n, seq), dtype=torch.int64, pin_memory=self.is_cuda)
        mask = torch.empty((n, seq), dtype=torch.int64, pin_memory=self.is_cuda)
        valid = np.arange(seq)[None, :] < lens[:, None]  # [n, seq] bool
        flat = np.fromiter(itertools.chain.from_iterable(r.token_ids for r in batch), dtype=np.int64,
                           count=int(lens.sum()))
        ids.numpy()[valid] = flat  # boolean-mask order is row-major == right padding
        mask.numpy()[:] = valid
        return self._to_device(ids), self._to_device(mask)

    def _collate_token_types(self, batch: list[EngineRequest], seq: int) -> torch.Tensor | None:
        """[n, seq] token type ids when a prompt of the batch is a pair, else None."""
        if not any(r.token_type_ids for r in batch):
            return None
        types = torch.zeros((len(batch), seq), dtype=torch.int64, pin_memory=self.is_cuda)
        for i, r in enumerate(batch):
            if r.token_type_ids:
                types[i, : len(r.token_type_ids)] = torch.tensor(r.token_type_ids, dtype=torch.int64)
        return self._to_device(types)

    def _collate_tensors(self, batch: list[EngineRequest]) -> dict[str, torch.Tensor]:
        out = {}
        for name in batch[0].tensors or {}:
            items = [r.tensors[name] for r in batch]  # type: ignore[index]
            t = torch.stack(items)
            if self.is_cuda:
                t = t.pin_memory()
            t = self._to_device(t)
            if t.is_floating_point():
                t = t.to(self.dtype)
            out[name] = t
        return out

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.device, non_blocking=True) if self.is_cuda else t

    # ---- execution ------------------------------------------------------

    def forward(self, batch: list[EngineRequest]) -> torch.Tensor:
        """[n, ...] model outputs on the device (no post-processing)."""
        if batch[0].kind == "tensors":
            return self.model.forward_tensors(**self._collate_tensors(batch))
        ids, mask = self._collate_tokens(batch)
        task = batch[0].task  # one task per batch (the processor's groups)
        types = self._collate_token_types(batch, ids.shape[1]) if self.spec.token_type_ids else None
        if task == "embed" and types is None:
            return self.model.forward_tokens(ids, mask)  # the fast path models tune
        return self.model.forward_task(task, ids, mask, types)

    def execute(self, batch: list[EngineRequest]) -> BatchHandle:
        out = self.forward(batch)
        if out.shape[0] != len(batch):
            raise EngineError(f"model returned {out.shape[0]} rows for a batch of {len(batch)}")
        parts = self._postprocess(out, batch)
        if not self.is_cuda:
            return BatchHandle(batch, [(t.contiguous(), idx) for t, idx in parts])
        host_parts = []
        for t, idx in parts:
            host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
            host.copy_(t, non_blocking=True)
            host_parts.append((host, idx))
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self.device))
        return BatchHandle(batch, host_parts, event)

    def _postprocess(self, out: torch.Tensor, batch: list[EngineRequest]) -> list[tuple[torch.Tensor, list[int]]]:
        """Per-request post-processing of one task's output, as few ops as the batch allows:
        normalize / Matryoshka-truncate embeddings, activations of classifier logits, per-prompt
        rows of token tasks."""
        if out.dtype is not torch.float32:
            out = out.float()
        task = batch[0].task
        if batch[0].kind == "tensors" or (out.dim() != 2 and task not in TOKEN_TASKS):
            return [(out, list(range(len(batch))))]  # dense outputs (segmentation maps)
        if task in TOKEN_TASKS:
            return self._postprocess_tokens(out, batch, task)
        if task in ("classify", "score"):
            act = self.spec.score_activation if task == "score" else self.spec.classify_activation
            return [(apply_activation(x, act) if on else x, idx)
                    for on, (x, idx) in self._groups(out, batch, lambda r: r.activation).items()]
        if task != "embed":
            return [(out, list(range(len(batch))))]  # embed_sparse: rows finished in make_output
        parts = []
        for (normalize, dims), (x, idx) in self._groups(out, batch, lambda r: (r.normalize, r.dimensions)).items():
            if dims is not None:
                x = x[:, :dims]
            if normalize:
                x = _l2_normalize(x)  # after truncation: Matryoshka re-normalises
            parts.append((x, idx))
        return parts

    @staticmethod
    def _groups(out: torch.Tensor, batch: list[EngineRequest], key: Any) -> dict[Any, tuple[torch.Tensor, list[int]]]:
        """Rows of ``out`` grouped by ``key(request)``: one slice per distinct setting."""
        groups: dict[Any, list[int]] = {}
        for i, r in enumerate(batch):
            groups.setdefault(key(r), []).append(i)
        if len(groups) == 1:
            return {k: (out, idx) for k, idx in groups.items()}
        return {k: (out[torch.tensor(idx, device=out.device)], idx) for k, idx in groups.items()}

    def _postprocess_tokens(self, out: torch.Tensor, batch: list[EngineRequest],
                            task: str) -> list[tuple[torch.Tensor, list[int]]]:
        """[b, s, d] -> one [1, tokens_i, d] part per prompt (its padding cut off)."""
        parts = []
        for i, r in enumerate(batch):
            x = out[i, : len(r.token_ids)]
            if task == "token_embed":
                if r.dimensions is not None:
                    x = x[:, : r.dimensions]
                if r.normalize:
                    x = _l2_normalize(x)
            elif r.activation:
                x = apply_activation(x, self.spec.classify_activation)
            parts.append((x.unsqueeze(0), [i]))
        return parts

    def make_output(self, req: EngineRequest, row: torch.Tensor, tokenizer: Any = None) -> PoolingOutput:
        """One request's host row -> its PoolingOutput (labels, sparse terms)."""
        task = req.task
        if req.kind == "tensors" or task in ("embed", "token_embed"):
            return PoolingOutput(data=row)
        if task == "embed_sparse":
            return sparse_output(row, req.params.sparse_top_k, tokenizer)
        return labelled(row, self.spec.labels)

    def bind_thread(self) -> None:
        """Per-thread setup for the calling (core) thread: its CUDA device."""
        if self.is_cuda:
            torch.cuda.set_device(self.device)

    def warmup(self) -> None:
        """One tiny forward so the first request does not pay for lazy kernel init."""
        if self.spec.max_model_len <= 0:
            return  # tensor models: input shapes are unknown here
        ids = torch.zeros((1, 4), dtype=torch.int64, device=self.device)
        with torch.inference_mode():
            self.model.forward_tokens(ids, torch.ones_like(ids))
        if self.is_cuda:
            torch.cuda.synchronize(self.device)
