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


def trailing_metadata(record: Any) -> tuple[tuple[str, str], ...]:
    """The timing trailers of a call's ``CallRecord`` (empty when no prompt ran)."""
    if record is None or record.batch_start is None:
        return ()
    inference_s = max(0.0, record.batch_end - record.batch_start)
    return ((QUEUE_TIME_KEY, f"{record.longest_queue_s * 1e3:.3f}"), (INFERENCE_TIME_KEY, f"{inference_s * 1e3:.3f}"))
