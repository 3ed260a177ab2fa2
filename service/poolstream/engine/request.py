"""The engine's per-prompt request, shared by the client (event loop) and the core thread.

Ownership (NOTE(engine)): the client creates an ``EngineRequest`` and only
ever touches ``future``; the core thread fills the processing fields. The
``status`` field is the one both sides change, and only while holding the
engine lock (see ``AsyncEngine._lock``), which is what makes "an aborted
request is never executed afterwards" hold.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import torch

from poolstream.pooling_params import PoolingParams


class RequestStatus(IntEnum):
    WAITING = 0  # admitted: in the input queue or the scheduler
    RUNNING = 1  # in a batch that is executing
    FINISHED = 2
    ABORTED = 3
    EXPIRED = 4  # deadline passed before batching
    FAILED = 5  # rejected by the processor (tokenization, validation)

    @property
    def is_final(self) -> bool:
        return self >= RequestStatus.FINISHED


@dataclass(slots=True, eq=False)
class EngineRequest:
    """One prompt in flight. Identity equality: two requests are never "equal"."""

    request_id: str
    kind: str  # "text" | "tokens" | "tensors" (poolstream.inputs.prompt_kind)
    prompt: Any
    params: PoolingParams
    normalize: bool  # resolved against the model default at admission
    dimensions: int | None
    priority: int
    deadline: float | None  # time.monotonic() value
    arrival: float
    seq: int  # admission order: FIFO tie-break within a priority
    future: asyncio.Future[Any] | None = None  # loop side only
    task: str = "embed"  # resolved pooling task (models.base.TASKS)
    activation: bool = True  # classify/score/token_classify: apply the model's activation
    status: RequestStatus = RequestStatus.WAITING
    # Filled by the processor in the core thread.
    token_ids: list[int] = field(default_factory=list)
    truncated: bool = False
    token_type_ids: list[int] | None = None  # pair prompts only
    tensors: dict[str, torch.Tensor] | None = None
    cost: int = 0  # scheduler units: tokens, or model-defined tensor cost
    group: Hashable = ("tokens",)  # only requests with equal groups share a batch

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    def drop_inputs(self) -> None:
        """Forget the prompt and its tensors once the request is final (its output is built).

        A tensor prompt may be a view of a large shared buffer (a whole raster): whoever still
        holds the request object (a stats record, a late abort) must not keep that alive."""
        self.prompt = None
        self.tensors = None
