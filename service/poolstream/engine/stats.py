"""Engine statistics: counters the core thread updates (under the engine lock)
and the immutable snapshot ``AsyncEngine.stats`` returns."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, fields

# Weight of the newest batch in the throughput moving average.
_EMA_ALPHA = 0.2


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """One executed batch: who was in it and what it cost (time.monotonic() times)."""

    index: int
    request_ids: tuple[str, ...]
    num_tokens: int  # real tokens (text) or summed cost (tensors)
    padded_tokens: int  # max_len * n for text
    started: float
    finished: float

    @property
    def size(self) -> int:
        return len(self.request_ids)


@dataclass(frozen=True)
class EngineStats:
    """A snapshot; every counter is cumulative since start unless named otherwise."""

    queued_prompts: int = 0  # admitted, not yet in a batch
    running_prompts: int = 0  # in the batch executing now
    prompts_admitted: int = 0
    prompts_executed: int = 0
    prompts_aborted: int = 0  # aborted before execution (their work was never done)
    prompts_expired: int = 0  # deadline passed before batching
    prompts_failed: int = 0  # rejected by the processor or failed by the model
    prompts_rejected: int = 0  # refused at admission: queue full
    batches_executed: int = 0
    last_batch_size: int = 0
    avg_batch_size: float = 0.0
    total_tokens: int = 0
    total_padded_tokens: int = 0
    busy_s: float = 0.0  # time spent executing batches
    throughput_prompts_per_s: float = 0.0  # moving average over recent batches
    # The most recent batches, oldest first (bounded): batch composition for tests and debugging.
    recent_batches: tuple[BatchRecord, ...] = ()


@dataclass
class StatsTracker:
    """Mutable counters behind ``EngineStats``; every access holds the engine lock."""

    queued_prompts: int = 0
    running_prompts: int = 0
    prompts_admitted: int = 0
    prompts_executed: int = 0
    prompts_aborted: int = 0
    prompts_expired: int = 0
    prompts_failed: int = 0
    prompts_rejected: int = 0
    batches_executed: int = 0
    last_batch_size: int = 0
    total_tokens: int = 0
    total_padded_tokens: int = 0
    busy_s: float = 0.0
    throughput_prompts_per_s: float = 0.0
    recent: deque[BatchRecord] = field(default_factory=lambda: deque(maxlen=256))
    _last_finished: float = 0.0
    _s_per_prompt: float = 0.0

    def record_batch(self, request_ids: tuple[str, ...], tokens: int, padded: int,
                     started: float, finished: float) -> None:
        n = len(request_ids)
        self.batches_executed += 1
        self.prompts_executed += n
        self.last_batch_size = n
        self.total_tokens += tokens
        self.total_padded_tokens += padded
        self.busy_s += max(finished - started, 0.0)
        # Throughput over wall time: from the later of this batch's start and the previous
        # completion. One lane: the batch's own duration. Two lanes (the CPU side lane)
        # overlap, and the time since the previous completion counts each prompt once.
        dt = max(finished - max(started, self._last_finished), 1e-6)
        self._last_finished = max(self._last_finished, finished)
        # Average seconds per prompt, not prompts per second: overlapping lanes give
        # alternating short and long intervals, and a mean of rates would be dominated
        # by the short ones (a 1 ms interval reads as 2000 prompts/s).
        per_prompt = dt / n
        ema = self._s_per_prompt
        self._s_per_prompt = per_prompt if ema == 0.0 else _EMA_ALPHA * per_prompt + (1 - _EMA_ALPHA) * ema
        self.throughput_prompts_per_s = 1.0 / self._s_per_prompt
        self.recent.append(BatchRecord(self.batches_executed, request_ids, tokens, padded, started, finished))

    def estimate_wait_s(self) -> float:
        """Seconds until the queued and running prompts are done, at the recent throughput."""
        if self.throughput_prompts_per_s <= 0.0:
            return 0.0
        return (self.queued_prompts + self.running_prompts) / self.throughput_prompts_per_s

    def snapshot(self) -> EngineStats:
        values = {f.name: getattr(self, f.name) for f in fields(EngineStats)
                  if f.name not in ("avg_batch_size", "recent_batches")}
        avg = self.prompts_executed / self.batches_executed if self.batches_executed else 0.0
        return EngineStats(**values, avg_batch_size=avg, recent_batches=tuple(self.recent))
