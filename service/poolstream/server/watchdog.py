"""``--plugin-timeout``: ends a plugin request whose hooks hang.

A plugin request alternates between the plugin's own code (parse_request,
pre_process, post_process, output_to_response) and waiting for the engine.
Only the first is bounded here: the request fails with DEADLINE_EXCEEDED,
ErrorInfo reason ``PLUGIN_TIMEOUT`` (metadata ``stage``), once its plugin
hooks have run for ``plugin_timeout_s`` seconds in a row while none of its
prompts was queued or running in the engine. Engine time is not counted
(the gRPC deadline and the queue bound that), so a long queue never trips it.

Engine activity comes from :class:`poolstream.server.metrics.ObservedEngine`,
which marks ``CallContext.marks["waiting"]`` (prompts of this call awaiting
the engine) and ``marks["activity"]`` (the last time that changed).

The watchdog wakes at most once per ``plugin_timeout_s`` per request, so it
costs nothing measurable under load. Limits: a *synchronous* hook that the
pipeline runs in a worker thread cannot be interrupted; the request still
ends on time and its engine work is aborted, but the thread runs on until the
hook returns.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from poolstream.server.errors import ServiceError
from poolstream.server.observability import CURRENT_CALL, CallContext, current_call

logger = logging.getLogger(__name__)

# How long a timed-out pipeline gets to unwind (abort its engine requests) after cancel.
_CANCEL_WAIT_S = 2.0


async def run_plugin_guarded(
    start: Callable[[Any, Callable[[int], None]], Awaitable[Any]],
    observer: Any,
    on_prompt_count: Callable[[int], None] | None,
    timeout_s: float,
    metrics: Any = None,
) -> Any:
    """Run ``start(observer, on_prompt_count)`` (the pipeline) under the plugin watchdog."""
    call = current_call()
    token = None
    if call is None:  # no interceptor (direct servicer use): still track this call
        call = CallContext(method="")
        token = CURRENT_CALL.set(call)
    marks = call.marks
    t0 = time.monotonic()

    def prompt_count(n: int) -> None:
        now = time.monotonic()
        marks["pre_done"] = now
        marks["activity"] = max(marks.get("activity", 0.0), now)
        if metrics is not None:
            metrics.pre_process_time.observe(now - t0)
        if on_prompt_count is not None:
            on_prompt_count(n)

    task = asyncio.ensure_future(start(observer, prompt_count))
    try:
        if timeout_s and timeout_s > 0:
            await _watch(task, marks, t0, timeout_s)
        result = await task
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=_CANCEL_WAIT_S)
            if not task.done():
                logger.error("A plugin request ignored cancellation; leaving it behind")
        elif not task.cancelled():
            task.exception()  # mark retrieved
        if token is not None:
            CURRENT_CALL.reset(token)
    if metrics is not None and "last_output" in marks:
        metrics.post_process_time.observe(max(0.0, time.monotonic() - marks["last_output"]))
    return result


async def _watch(task: asyncio.Future, marks: dict[str, float], t0: float, timeout_s: float) -> None:
    idle_since = t0
    next_check = t0 + timeout_s
    while True:
        done, _ = await asyncio.wait({task}, timeout=max(0.0, next_check - time.monotonic()))
        if done:
            return
        now = time.monotonic()
        if marks.get("waiting", 0) > 0:
            idle_since = now  # the engine is working for this request
        else:
            idle_since = max(idle_since, marks.get("activity", t0))
        if now - idle_since >= timeout_s:
            stage = "post_process" if "pre_done" in marks else "pre_process"
            task.cancel()
            await asyncio.wait({task}, timeout=_CANCEL_WAIT_S)
            raise ServiceError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "PLUGIN_TIMEOUT",
                f"the plugin's {stage} ran for {now - idle_since:.1f}s without finishing "
                f"(--plugin-timeout {timeout_s:g}s); its engine work was aborted",
                metadata={"stage": stage, "plugin_timeout_s": f"{timeout_s:g}"},
            )
        next_check = idle_since + timeout_s
