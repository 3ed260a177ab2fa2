"""``--plugin-timeout``: ends a plugin request whose hooks hang.

A plugin request alternates between the plugin's own code (parse_request,
pre_process, post_process, output_to_response) and waiting for the engine.
Only the first is bounded here: the request fails with DEADLINE_EXCEEDED,
ErrorInfo reason ``PLUGIN_TIMEOUT`` (metadata ``stage``), once the plugin
has been the one holding the request up for ``plugin_timeout_s`` seconds
without making progress. The plugin holds the request up when

- an engine output is ready that it has not taken (measured from the
  oldest such output), or
- none of the request's prompts is queued or running in the engine
  (pre-processing, or post-processing after the last output).

It makes progress when pre-processing ends and each time it takes an output.
Time the plugin spends waiting for the engine never counts (the gRPC
deadline and the queue bound that), so a long queue never trips it, while a
plugin stuck on its first output is stopped after ``plugin_timeout_s`` and
the request's remaining queued prompts are aborted.

Engine activity comes from the call's :class:`~poolstream.serving.context.CallRecord`,
which the serving core keeps as prompts are submitted and finish: ``waiting``
(prompts of this call awaiting the engine), ``activity`` (the last time that
changed) and ``produced`` (arrival times of the call's outputs); the pipeline's
observer callback gives ``consumed`` (outputs the plugin took).

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

from poolstream.serving.context import CallRecord
from poolstream.serving.errors import Code, ServingError

logger = logging.getLogger(__name__)

# How long a timed-out pipeline gets to unwind (abort its engine requests) after cancel.
_CANCEL_WAIT_S = 2.0


async def run_plugin_guarded(
    start: Callable[[Any, Callable[[int], None]], Awaitable[Any]],
    record: CallRecord,
    observer: Any,
    on_prompt_count: Callable[[int], None] | None,
    timeout_s: float,
    metrics: Any = None,
) -> Any:
    """Run ``start(observer, on_prompt_count)`` (the pipeline) under the plugin watchdog."""
    t0 = time.monotonic()
    record.progress = t0

    def prompt_count(n: int) -> None:
        now = time.monotonic()
        record.pre_done = record.progress = now
        record.prompt_count = n
        if metrics is not None:
            metrics.pre_process_time.observe(now - t0)
        if on_prompt_count is not None:
            on_prompt_count(n)

    def consumed(index: int, output: Any, completed: int, total: int) -> None:
        record.consumed = completed
        record.progress = time.monotonic()
        if observer is not None:
            observer(index, output, completed, total)

    task = asyncio.ensure_future(start(consumed, prompt_count))
    try:
        if timeout_s and timeout_s > 0:
            await _watch(task, record, t0, timeout_s)
        result = await task
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=_CANCEL_WAIT_S)
            if not task.done():
                logger.error("A plugin request ignored cancellation; leaving it behind")
        elif not task.cancelled():
            task.exception()  # mark retrieved
    if metrics is not None and record.last_output is not None:
        metrics.post_process_time.observe(max(0.0, time.monotonic() - record.last_output))
    return result


async def _watch(task: asyncio.Future[Any], record: CallRecord, t0: float, timeout_s: float) -> None:
    next_check = t0 + timeout_s
    while True:
        done, _ = await asyncio.wait({task}, timeout=max(0.0, next_check - time.monotonic()))
        if done:
            return
        now = time.monotonic()
        idle_since = record.stalled_since()
        if idle_since is None:
            next_check = now + timeout_s
            continue
        if now - idle_since >= timeout_s:
            stage = "post_process" if record.pre_done is not None else "pre_process"
            task.cancel()
            await asyncio.wait({task}, timeout=_CANCEL_WAIT_S)
            raise ServingError(
                Code.DEADLINE_EXCEEDED,
                "PLUGIN_TIMEOUT",
                f"the plugin's {stage} ran for {now - idle_since:.1f}s without finishing "
                f"(--plugin-timeout {timeout_s:g}s); its engine work was aborted",
                metadata={"stage": stage, "plugin_timeout_s": f"{timeout_s:g}"},
            )
        next_check = idle_since + timeout_s
