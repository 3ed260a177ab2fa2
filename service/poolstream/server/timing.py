"""Engine timing per call, reported to the client in trailing metadata.

Like TEI's ``x-queue-time`` / ``x-inference-time`` response headers: a client
(or ``grpcurl -v``) sees how much of a call's latency the engine spent
queueing and running its prompts, and so how much was transport and server
work around them.

- ``poolstream-queue-time-ms``: the longest time one of the call's prompts
  waited in the engine queue (admission to the start of its batch);
- ``poolstream-inference-time-ms``: from the start of the call's first batch
  to the end of its last (collation, forward, post-processing, copy to the
  host); for one prompt, its batch's time.

Only calls that ran prompts and ended OK carry them. Values are milliseconds
as decimal strings.
"""

from __future__ import annotations

from typing import Any

QUEUE_TIME_KEY = "poolstream-queue-time-ms"
INFERENCE_TIME_KEY = "poolstream-inference-time-ms"
_MARK = "engine_timing"  # CallContext.marks entry: [first batch start, last batch end, longest queue]


def note_output(marks: dict[str, Any], out: Any) -> None:
    """Fold one engine output's timing into the call's marks."""
    timing = getattr(out, "timing", None)
    if timing is None:
        return
    acc = marks.get(_MARK)
    if acc is None:
        marks[_MARK] = [timing.started, timing.finished, timing.queue_s]
    else:
        acc[0] = min(acc[0], timing.started)
        acc[1] = max(acc[1], timing.finished)
        acc[2] = max(acc[2], timing.queue_s)


def trailing_metadata(marks: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The timing trailers for a call's marks (empty when no prompt ran)."""
    acc = marks.get(_MARK)
    if acc is None:
        return ()
    return ((QUEUE_TIME_KEY, f"{acc[2] * 1e3:.3f}"), (INFERENCE_TIME_KEY, f"{max(0.0, acc[1] - acc[0]) * 1e3:.3f}"))
