"""The client's logic, written once for the blocking and the asyncio client.

A *plan* is a generator that says what to do next by yielding operations
(``Start`` a unary call, ``Wait`` for one, ``Sleep``); the driver of each
client carries them out (``future()`` and ``time.sleep`` in :class:`Client`,
``grpc.aio`` calls and ``asyncio.sleep`` in :class:`AsyncClient`) and sends
the result back, or throws the call's :class:`PoolstreamError` into it.
Chunking under the server's limits, retries and progress live here only.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import random
from collections import deque
from collections.abc import Callable, Generator, Sequence
from typing import Any

import betterproto2
import grpc

from ._messages import v1
from .errors import PoolstreamError


@dataclasses.dataclass(frozen=True, slots=True)
class Start:
    """Start the unary call ``method`` (e.g. "EncodeAll"); the driver sends back its handle."""

    method: str
    request: Any


@dataclasses.dataclass(frozen=True, slots=True)
class Wait:
    """Wait for a started call; the driver sends back its response or throws its error."""

    handle: Any


@dataclasses.dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


Op = Start | Wait | Sleep
Plan = Generator[Op, Any, Any]

# Defaults for a server that reports no limit (0): gRPC's own.
_DEFAULT_MESSAGE_BYTES = 4 * 1024 * 1024
# Prompts per request when the server allows more: large enough to fill the engine's
# batches, small enough that a chunk's wait in the queue stays well inside a call's
# deadline and the progress bar moves.
DEFAULT_CHUNK = 256


@dataclasses.dataclass(frozen=True)
class ServerLimits:
    """What the server advertises in GetServerInfo (``limits``), with gRPC's defaults for zeros."""

    max_prompts_per_request: int = 1024
    max_queued_prompts: int = 4096
    max_receive_message_bytes: int = _DEFAULT_MESSAGE_BYTES  # the largest request the server takes
    max_send_message_bytes: int = _DEFAULT_MESSAGE_BYTES  # the largest response it sends
    output_bytes_per_prompt: int = 0  # float32 size of one pooled output (0: unknown)

    @classmethod
    def from_info(cls, info: v1.GetServerInfoResponse) -> ServerLimits:
        lim = info.limits or v1.Limits()
        shape = list(info.model.output_shape) if info.model else []
        return cls(
            max_prompts_per_request=lim.max_prompts_per_request or cls.max_prompts_per_request,
            max_queued_prompts=lim.max_queued_prompts or cls.max_queued_prompts,
            max_receive_message_bytes=lim.max_receive_message_bytes or _DEFAULT_MESSAGE_BYTES,
            max_send_message_bytes=lim.max_send_message_bytes or _DEFAULT_MESSAGE_BYTES,
            output_bytes_per_prompt=4 * math.prod(shape) if shape and all(s > 0 for s in shape) else 0,
        )


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """When to retry a refused call or prompt, and after how long.

    Retried: a status with RetryInfo (QUEUE_FULL, TOO_MANY_CALLS), after that delay;
    DEADLINE_TOO_SHORT (refused at admission, no work done: the queue ahead needs more
    than the call's deadline), after the difference the server reported; and UNAVAILABLE
    (not ready, draining, unreachable), after exponential backoff. Each delay
    is stretched by a random factor in [1, 1 + jitter] so that callers refused together do
    not come back together. RESOURCE_EXHAUSTED without RetryInfo (a message over gRPC's
    size limit) is not retried: it would fail again.
    """

    max_attempts: int = 6
    initial_backoff: float = 0.1
    max_backoff: float = 10.0
    jitter: float = 0.25

    def delay(self, error: PoolstreamError, attempt: int) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None: give up."""
        if attempt + 1 >= self.max_attempts:
            return None
        if error.retry_delay is not None:
            base = error.retry_delay
        elif error.reason == "DEADLINE_TOO_SHORT" and error.domain == "poolstream.dev":
            try:
                wait = float(error.metadata["estimated_wait_s"]) - float(error.metadata["time_remaining_s"])
            except (KeyError, ValueError):
                return None
            base = min(self.max_backoff * 6, max(self.initial_backoff, wait))
        elif error.code == grpc.StatusCode.UNAVAILABLE:
            base = min(self.max_backoff, self.initial_backoff * 2**attempt)
        else:
            return None
        return base * (1 + random.uniform(0, self.jitter))


NO_RETRY = RetryPolicy(max_attempts=1)


# -- keyword checking ----------------------------------------------------------------------------

_PARAM_FIELDS = tuple(f.name for f in dataclasses.fields(v1.PoolingParams))


def check_keywords(kwargs: dict[str, Any], allowed: Sequence[str], where: str) -> None:
    """TypeError for a keyword that is neither a method argument nor a PoolingParams field."""
    for key in kwargs:
        if key not in allowed and key not in _PARAM_FIELDS:
            close = difflib.get_close_matches(key, [*allowed, *_PARAM_FIELDS], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TypeError(f"{where}() got an unexpected keyword argument {key!r}{hint}")


def pooling_params(params: v1.PoolingParams | None = None, **kwargs: Any) -> v1.PoolingParams | None:
    """PoolingParams from a message and/or keyword fields (normalize=, dimensions=,
    truncate=, truncate_prompt_tokens=, output_dtype=, include_float_values=, ...);
    None when neither is given. An unknown keyword is a TypeError."""
    check_keywords(kwargs, (), "pooling_params")
    if not any(v is not None for v in kwargs.values()):
        return params
    base = params.to_dict(casing=betterproto2.Casing.SNAKE) if params else {}
    p = v1.PoolingParams.from_dict(base)
    for key, val in kwargs.items():
        if val is None:
            continue
        if key == "output_dtype" and isinstance(val, str):
            val = v1.DType[val.upper().removeprefix("DTYPE_")]
        setattr(p, key, val)
    return p


# -- chunking ------------------------------------------------------------------------------------


def chunk_indices(prompts: Sequence[v1.Prompt], limits: ServerLimits, chunk_size: int | None,
                  max_in_flight: int) -> list[list[int]]:
    """Split prompt indices into requests the server accepts: at most ``chunk_size``
    (default ``DEFAULT_CHUNK``) and ``max_prompts_per_request`` prompts (and a share of its queue, so that the chunks in
    flight fit in it together), requests under its receive limit, and responses under
    its send limit."""
    n = min(limits.max_prompts_per_request, DEFAULT_CHUNK if chunk_size is None else max(1, chunk_size))
    n = min(n, max(1, limits.max_queued_prompts // max(1, max_in_flight)))
    if limits.output_bytes_per_prompt:
        n = min(n, max(1, (limits.max_send_message_bytes // 2) // limits.output_bytes_per_prompt))
    budget = max(1024, limits.max_receive_message_bytes * 3 // 4 - 1024)  # room for params and framing
    chunks: list[list[int]] = []
    current: list[int] = []
    size = 0
    for i, prompt in enumerate(prompts):
        cost = len(bytes(prompt)) + 8
        if current and (len(current) >= n or size + cost > budget):
            chunks.append(current)
            current, size = [], 0
        current.append(i)
        size += cost
    if current:
        chunks.append(current)
    return chunks


# -- plans ---------------------------------------------------------------------------------------


def unary_plan(method: str, request: Any, retry: RetryPolicy) -> Plan:
    """One unary call, retried per ``retry``."""
    attempt = 0
    while True:
        handle = yield Start(method, request)
        try:
            return (yield Wait(handle))
        except PoolstreamError as e:
            delay = retry.delay(e, attempt)
            if delay is None:
                raise
            attempt += 1
            yield Sleep(delay)


def encode_all_plan(prompts: Sequence[v1.Prompt], make_request: Callable[[list[v1.Prompt], int], Any],
                    limits: ServerLimits, retry: RetryPolicy, *, chunk_size: int | None = None,
                    max_in_flight: int = 2, progress: Any = None) -> Plan:
    """EncodeAll over any number of prompts: chunked (``chunk_indices``), up to
    ``max_in_flight`` chunks at once, refused calls and refused prompts (per-prompt
    errors with RetryInfo, e.g. QUEUE_FULL) retried. Returns every prompt's
    EncodeResponse in input order with its global ``index``; a prompt's non-retryable
    error stays in its response. ``make_request(prompts, chunk_number)`` builds a request."""
    results: list[v1.EncodeResponse | None] = [None] * len(prompts)
    todo: deque[tuple[list[int], int, float]] = deque(  # (indices, attempt, delay before sending)
        (c, 0, 0.0) for c in chunk_indices(prompts, limits, chunk_size, max_in_flight))
    in_flight: deque[tuple[list[int], int, Any]] = deque()
    sent = 0
    while todo or in_flight:
        while todo and len(in_flight) < max(1, max_in_flight):
            indices, attempt, delay = todo.popleft()
            if delay > 0:
                yield Sleep(delay)
            handle = yield Start("EncodeAll", make_request([prompts[i] for i in indices], sent))
            sent += 1
            in_flight.append((indices, attempt, handle))
        indices, attempt, handle = in_flight.popleft()
        try:
            response = yield Wait(handle)
        except PoolstreamError as e:
            delay = retry.delay(e, attempt)
            if delay is None:
                raise
            todo.appendleft((indices, attempt + 1, delay))
            continue
        again: list[int] = []
        delays: list[float] = []
        done = 0
        for r in response.results:
            if r.index >= len(indices):
                raise PoolstreamError(grpc.StatusCode.INTERNAL, f"the server answered for prompt {r.index} "
                                      f"of a {len(indices)}-prompt request")
            global_index = indices[r.index]
            if r.error is not None:
                err = PoolstreamError.from_status(r.error, global_index)
                delay = retry.delay(err, attempt)
                if delay is not None:
                    again.append(global_index)
                    delays.append(delay)
                    continue
            r.index = global_index
            results[global_index] = r
            done += 1
        if again:
            todo.append((again, attempt + 1, max(delays)))
        if progress is not None and done:
            progress.update(done)
    missing = [i for i, r in enumerate(results) if r is None]
    if missing:
        raise PoolstreamError(grpc.StatusCode.INTERNAL, f"no result for prompts {missing[:10]}")
    return results
