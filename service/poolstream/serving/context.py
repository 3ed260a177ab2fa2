"""A call as the serving core sees it: its context, its record, its events.

:class:`CallContext` is what a door hands the core with each call: request id, deadline
(``time.monotonic()``), priority, the authenticated principal, and a way to cancel it.
:class:`CallRecord` is the one per-call record of progress that the plugin watchdog, the
metrics and the timing trailers read; the core fills it as the call's events happen.
The events themselves (:class:`PromptsReady`, :class:`PromptResult`, :class:`CallResult`)
are what ``ServingCore.encode`` and ``ServingCore.process_stream`` yield.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from poolstream.outputs import PoolingRequestOutput
from poolstream.serving.errors import ServingError


@dataclass(slots=True)
class CallRecord:
    """Progress of one call (one Encode, one plugin request), in ``time.monotonic()`` seconds.

    Engine side (the core, as prompts are submitted and finish): ``waiting`` prompts of the
    call are queued or running, ``activity`` is when that last changed, ``produced`` the
    arrival time of each output, ``last_output`` the latest. Plugin side (the pipeline's
    callbacks): ``progress`` is when the plugin last made progress, ``pre_done`` when
    pre-processing ended, ``consumed`` how many outputs the plugin took. ``batch_start``,
    ``batch_end`` and ``longest_queue_s`` fold the engine timing of every output (the
    timing trailers).
    """

    waiting: int = 0
    activity: float = 0.0
    produced: list[float] = field(default_factory=list)
    last_output: float | None = None
    progress: float = 0.0
    pre_done: float | None = None
    consumed: int = 0
    prompt_count: int = 0
    batch_start: float | None = None
    batch_end: float = 0.0
    longest_queue_s: float = 0.0
    # The call's prompt groups in flight (plugin calls): the watchdog asks them whether
    # results wait for the plugin and whether the engine still works for the call.
    groups: list[Any] = field(default_factory=list)

    def note_output(self, out: Any, now: float) -> None:
        """A prompt's final output arrived at ``now``."""
        self.produced.append(now)
        self.last_output = now
        timing = getattr(out, "timing", None)
        if timing is None:
            return
        if self.batch_start is None:
            self.batch_start, self.batch_end, self.longest_queue_s = timing.started, timing.finished, timing.queue_s
        else:
            self.batch_start = min(self.batch_start, timing.started)
            self.batch_end = max(self.batch_end, timing.finished)
            self.longest_queue_s = max(self.longest_queue_s, timing.queue_s)

    def stalled_since(self) -> float | None:
        """Since when the plugin has held the call up; None while it waits for the engine."""
        oldest_ready: float | None = None
        engine_busy = False
        for group in self.groups:
            ready = group.pending_since()
            if ready is not None and (oldest_ready is None or ready < oldest_ready):
                oldest_ready = ready
            if group.outstanding():
                engine_busy = True
        if oldest_ready is not None:  # an output is ready and the plugin has not taken it
            return max(self.progress, oldest_ready)
        if engine_busy:  # the plugin waits for the engine
            return None
        return max(self.progress, self.activity)


@dataclass(slots=True)
class CallContext:
    """What a door knows about a call; the core reads it and fills ``record``.

    ``deadline`` is absolute (``time.monotonic()``), None for none; ``principal`` names the
    authenticated caller where the door authenticates (informative: the core does not
    authorise). Cancel a call by cancelling the task that awaits the core, by closing the
    iterator it returned, or with :meth:`cancel` from elsewhere (an HTTP door that sees the
    client go away): every prompt still queued is aborted in the engine.
    """

    request_id: str = ""
    deadline: float | None = None
    priority: int = 0
    principal: str | None = None
    record: CallRecord = field(default_factory=CallRecord)
    task: asyncio.Task[Any] | None = None  # set by the core when the call starts

    @classmethod
    def with_timeout(cls, timeout_s: float | None, **kwargs: Any) -> "CallContext":
        """A context whose deadline is ``timeout_s`` from now (None: no deadline)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        return cls(deadline=deadline, **kwargs)

    def time_remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def cancel(self) -> bool:
        """Cancel the call's task (aborting its engine work); False when it is not running."""
        task = self.task
        return task is not None and not task.done() and task.cancel()


def new_request_id() -> str:
    return f"pool-{uuid.uuid4().hex}"


@dataclass(slots=True)
class PromptsReady:
    """A plugin request's pre-processing produced ``total`` prompts."""

    total: int


@dataclass(slots=True)
class PromptResult:
    """One prompt finished: ``output``, or ``error`` (its field names ``prompts[index]``).

    ``completed`` of ``total`` prompts of the call are done, this one included.
    """

    index: int
    output: PoolingRequestOutput | None
    error: ServingError | None = None
    completed: int = 0
    total: int = 0


@dataclass(slots=True)
class CallResult:
    """A plugin request's result: the plugin's response and its usage."""

    result: Any  # poolstream.plugins.io_processors.pipeline.PipelineResult


# What ServingCore.process_stream yields.
ProcessEvent = PromptsReady | PromptResult | CallResult
