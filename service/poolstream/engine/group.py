"""The one way into an engine: submit a group of prompts, iterate results, close.

    group = engine.submit_group(prompts, params, request_id, priority, deadline)
    try:
        async for index, result in group:   # completion order
            ...  # result: a PoolingRequestOutput, or the exception that prompt failed with
    finally:
        group.close()                        # aborts every prompt not yet finished

The serving core (``poolstream.serving``) talks to engines only through this interface,
so the in-process :class:`~poolstream.engine.AsyncEngine` and the client of an engine in
another process (``poolstream.engine.ipc``) are interchangeable. A prompt's admission
error (invalid prompt, full queue, dead engine) is its result, not an exception of
``submit_group``: a multi-prompt call reports it for that prompt and goes on.

Prompt ``i`` runs as engine request ``f"{request_id}-{i}"``.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from poolstream.outputs import PoolingRequestOutput
from poolstream.pooling_params import PoolingParams

if TYPE_CHECKING:
    from poolstream.engine.async_engine import AsyncEngine
    from poolstream.engine.request import EngineRequest

# What a group yields: (prompt index, its output or the exception it failed with).
GroupResult = tuple[int, "PoolingRequestOutput | BaseException"]


class PromptGroup(Protocol):
    """Prompts submitted together; results in completion order; ``close()`` aborts the rest."""

    size: int

    def __aiter__(self) -> "PromptGroup": ...

    async def __anext__(self) -> GroupResult: ...

    def close(self) -> None: ...

    def pending_since(self) -> float | None:
        """When the oldest result that arrived but was not yet taken arrived (None: none)."""
        ...

    def outstanding(self) -> int:
        """Prompts the engine has not answered yet."""
        ...


class EngineClient(Protocol):
    """What the serving core needs of an engine, in process or across a process boundary."""

    def submit_group(
        self,
        prompts: Sequence[Any],
        params: PoolingParams | None,
        request_id: str,
        priority: int = 0,
        deadline: float | None = None,
    ) -> PromptGroup: ...

    def estimate_wait_s(self) -> float: ...

    @property
    def model_info(self) -> Any: ...

    @property
    def stats(self) -> Any: ...

    @property
    def is_running(self) -> bool: ...

    async def shutdown(self) -> None: ...


class LocalGroup:
    """A group on the in-process :class:`AsyncEngine`: one future per admitted prompt.

    A lone prompt (the common single-text call) is awaited directly; several report
    through done-callbacks into a queue, so nothing runs per prompt until it finishes.
    """

    __slots__ = ("_engine", "_live", "_ready", "_queue", "size", "_closed", "_arrivals", "_single_at")

    def __init__(self, engine: "AsyncEngine", size: int):
        self._engine = engine
        self.size = size
        self._live: dict[asyncio.Future[Any], tuple[int, EngineRequest]] = {}
        self._ready: list[GroupResult] = []  # admission errors, reported first
        self._queue: asyncio.Queue[asyncio.Future[Any]] | None = None
        self._closed = False
        self._arrivals: collections.deque[float] = collections.deque()  # of queued, untaken results
        self._single_at: float | None = None  # a lone prompt's arrival, once track_arrivals() asked


    def _add(self, index: int, req: "EngineRequest") -> None:
        assert req.future is not None
        self._live[req.future] = (index, req)

    def _arm(self) -> None:
        if len(self._live) > 1:
            queue: asyncio.Queue[asyncio.Future[Any]] = asyncio.Queue()
            self._queue = queue
            arrivals = self._arrivals

            def arrived(fut: asyncio.Future[Any]) -> None:
                arrivals.append(time.monotonic())
                queue.put_nowait(fut)

            for fut in self._live:
                fut.add_done_callback(arrived)

    def track_arrivals(self) -> None:
        """Note when a lone prompt's result arrives too (the plugin watchdog needs it; the
        single-text Encode path does not pay for it)."""
        if self._queue is None and self._live:

            def arrived(fut: asyncio.Future[Any]) -> None:
                self._single_at = time.monotonic()

            next(iter(self._live)).add_done_callback(arrived)

    def pending_since(self) -> float | None:
        if self._queue is not None:
            return self._arrivals[0] if self._arrivals else None
        if self._ready:
            return 0.0
        if self._live and next(iter(self._live)).done():
            return self._single_at if self._single_at is not None else time.monotonic()
        return None

    def outstanding(self) -> int:
        return sum(1 for fut in self._live if not fut.done())

    def __aiter__(self) -> "LocalGroup":
        return self

    async def __anext__(self) -> GroupResult:
        if self._ready:
            return self._ready.pop(0)
        live = self._live
        if not live:
            raise StopAsyncIteration
        if self._queue is None:  # one prompt: await its future (cancelling us cancels it)
            fut = next(iter(live))
            try:
                await fut
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # our caller was cancelled: close() aborts the prompt
            except Exception:
                pass  # the prompt's error: read from the future below
        else:
            while True:
                fut = await self._queue.get()
                if self._arrivals:
                    self._arrivals.popleft()
                if fut in live:
                    break
        index, req = live.pop(fut)
        self._engine.release(req)
        if fut.cancelled():
            return index, asyncio.CancelledError()
        exc = fut.exception()
        return index, (exc if exc is not None else fut.result())

    def on_result(self, callback: Any) -> None:
        """Deliver results to ``callback(index, result)`` as they come instead of iterating:
        admission errors at once, outputs from the futures' done callbacks (the engine
        process answers front ends this way, without a task per group)."""
        for index, error in self._ready:
            callback(index, error)
        self._ready.clear()
        self._queue = None
        release = self._engine.release
        live = self._live

        def done(fut: asyncio.Future[Any]) -> None:
            entry = live.pop(fut, None)
            if entry is None:
                return  # closed meanwhile
            index, req = entry
            release(req)
            if fut.cancelled():
                callback(index, asyncio.CancelledError())
            else:
                exc = fut.exception()
                callback(index, exc if exc is not None else fut.result())

        for fut in list(live):
            fut.add_done_callback(done)

    def close(self) -> None:
        """Abort every prompt not finished (never executed if still queued); free their ids."""
        if self._closed:
            return
        self._closed = True
        release = self._engine.release
        for _index, req in self._live.values():
            release(req)
        self._live.clear()
        self._ready.clear()
