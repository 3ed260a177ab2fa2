"""Batch selection: plain CPU policy, no threads, no torch (like vLLM's Scheduler).

The algorithm of ``schedule()``:

1. Walk priority levels from the lowest value (most urgent) up. Within a
   level, requests are FIFO by admission.
2. The oldest waiting request of the first non-empty level is the batch
   *head*; it is always taken, so nothing starves.
3. The next ``window`` waiting requests of that level are candidates. Those
   in the head's group (text/token prompts together; tensor prompts only
   with identical input shapes) are tried in order of length closeness to
   the head, so a batch holds similar lengths and padding stays small.
   A candidate joins while
   - the batch has fewer than ``max_num_seqs`` prompts,
   - the padded cost (``max_len * n`` for text, the sum of costs for
     tensors) stays within ``max_num_batched_tokens``,
   - the padding added stays under ``max(pad_slack_tokens, pad_ratio * real tokens)``.
4. Only when a level is entirely taken does the batch continue into the
   next level: a lower-priority prompt never rides ahead of a waiting
   higher-priority one.

Requests leave the deques lazily: aborted/expired ones stay until they are
met and skipped (status is the source of truth; the core thread meets them at
its next ``schedule()``). The deadline heap is different: an entry can sit
there until its deadline (a client's gRPC deadline can be minutes away), so
a request's entry is neutralised the moment it leaves the waiting state
(scheduled, expired, or ``forget()`` on abort): the heap never keeps a
finished or cancelled request, or the tensors it holds, alive. The caller
holds the engine lock around every method.
"""

from __future__ import annotations

import heapq
from collections import deque

from poolstream.engine.request import EngineRequest, RequestStatus

_WAITING = RequestStatus.WAITING


class Scheduler:
    def __init__(
        self,
        max_num_batched_tokens: int,
        max_num_seqs: int,
        *,
        pad_slack_tokens: int = 512,
        pad_ratio: float = 0.5,
        window: int | None = None,
    ):
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_num_seqs = max_num_seqs
        self.pad_slack_tokens = pad_slack_tokens
        self.pad_ratio = pad_ratio
        self.window = window or 4 * max_num_seqs
        self._levels: dict[int, deque[EngineRequest]] = {}
        # Min-heap of [deadline, seq, request or None]; None once the request left the queue.
        self._deadlines: list[list] = []
        self._deadline_entry: dict[int, list] = {}  # seq -> its live heap entry
        self._compact_at = 1024
        self._size = 0  # entries in the deques, dead ones included
        self._compact_levels_at = 4096

    def add(self, req: EngineRequest) -> None:
        self._levels.setdefault(req.priority, deque()).append(req)
        self._size += 1
        if self._size > self._compact_levels_at:
            # Aborted requests deep in a deque leave only when reached; sweep them so the
            # deques stay proportional to the live queue (amortised O(1) per add).
            for prio, dq in list(self._levels.items()):
                live = [r for r in dq if r.status is _WAITING]
                if live:
                    self._levels[prio] = deque(live)
                else:
                    del self._levels[prio]
            self._size = sum(len(dq) for dq in self._levels.values())
            self._compact_levels_at = max(4096, 2 * self._size)
        if req.deadline is not None:
            entry = [req.deadline, req.seq, req]
            self._deadline_entry[req.seq] = entry
            heap = self._deadlines
            heapq.heappush(heap, entry)
            if len(heap) > self._compact_at:
                # Neutralised entries linger until their deadline; drop them so far-off
                # deadlines cannot grow the heap without bound (amortised O(1) per add).
                self._deadlines = [e for e in heap if e[2] is not None and e[2].status is _WAITING]
                self._deadline_entry = {e[1]: e for e in self._deadlines}
                heapq.heapify(self._deadlines)
                self._compact_at = max(1024, 2 * len(self._deadlines))

    def forget(self, req: EngineRequest) -> None:
        """``req`` left the waiting state outside ``schedule()`` (aborted): drop its deadline entry.

        Its deque slot goes lazily (met and skipped by the next ``schedule()``)."""
        entry = self._deadline_entry.pop(req.seq, None)
        if entry is not None:
            entry[2] = None

    def has_waiting(self) -> bool:
        # Lazily-deleted entries make this an over-estimate; schedule() corrects it.
        return any(self._levels.values())

    def expire(self, now: float) -> list[EngineRequest]:
        """Waiting requests whose deadline has passed (status still WAITING; caller marks them)."""
        out = []
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            _, seq, req = heapq.heappop(heap)
            if req is not None:
                del self._deadline_entry[seq]
                if req.status is _WAITING:
                    out.append(req)
        return out

    def schedule(self) -> list[EngineRequest]:
        """The next batch (possibly empty). Chosen requests are removed from the queue."""
        batch: list[EngineRequest] = []
        state = _BatchState()
        for prio in sorted(self._levels):
            dq = self._levels[prio]
            cands: list[EngineRequest] = []
            while dq and len(cands) < self.window:
                req = dq.popleft()
                self._size -= 1
                if req.status is _WAITING:
                    cands.append(req)
            if not cands:
                del self._levels[prio]
                continue
            taken = self._fill(batch, state, cands)
            rest = [r for r, t in zip(cands, taken) if not t]
            dq.extendleft(reversed(rest))
            self._size += len(rest)
            if not dq:
                del self._levels[prio]
            if rest or dq or len(batch) >= self.max_num_seqs:
                break  # strict priority: the next level only once this one is exhausted
        for req in batch:
            if req.deadline is not None:
                self.forget(req)  # no longer waiting: its deadline is the caller's business now
        return batch

    def drain(self) -> list[EngineRequest]:
        """Remove and return every waiting request (engine shutdown)."""
        out = [r for dq in self._levels.values() for r in dq if r.status is _WAITING]
        self._levels.clear()
        self._deadlines.clear()
        self._deadline_entry.clear()
        self._size = 0
        return out

    def _fill(self, batch: list[EngineRequest], st: "_BatchState", cands: list[EngineRequest]) -> list[bool]:
        taken = [False] * len(cands)
        order = range(len(cands))
        if not batch:
            head = cands[0]
            st.start(head)
            batch.append(head)
            taken[0] = True
            order = range(1, len(cands))
        head_len = st.head_len
        # Closest length first; index (admission order) breaks ties: FIFO among equals.
        ranked = sorted((abs(cands[i].cost - head_len), i) for i in order if cands[i].group == st.group)
        for _, i in ranked:
            if len(batch) >= self.max_num_seqs:
                break
            if st.try_add(cands[i], self):
                batch.append(cands[i])
                taken[i] = True
        return taken


class _BatchState:
    """Running totals of the batch being built."""

    __slots__ = ("group", "head_len", "max_len", "n", "real", "padded_kind")

    def start(self, head: EngineRequest) -> None:
        self.group = head.group
        self.head_len = head.cost
        self.max_len = head.cost
        self.n = 1
        self.real = head.cost
        # Text batches pad to the longest prompt; tensor batches have equal shapes (no padding).
        self.padded_kind = head.group[0] == "tokens"

    def try_add(self, req: EngineRequest, s: Scheduler) -> bool:
        real = self.real + req.cost
        if self.padded_kind:
            max_len = max(self.max_len, req.cost)
            padded = max_len * (self.n + 1)
            if padded - real > max(s.pad_slack_tokens, s.pad_ratio * real):
                return False
        else:
            max_len, padded = self.max_len, real
        if padded > s.max_num_batched_tokens:
            return False
        self.max_len, self.real, self.n = max_len, real, self.n + 1
        return True
