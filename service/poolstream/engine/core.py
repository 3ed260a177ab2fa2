"""The engine core: one dedicated thread that owns model work (on CPU under load,
with a side lane: a second thread that runs one batch at a time beside it).

Each iteration of ``run()``:

1. ingest: drain the thread-safe input queue (block only when idle), validate
   every new token-id or tensor request in one go (``InputProcessor``), hand
   new text requests to the tokenizing threads (``TokenizeWorker``) and take
   back the ones they finished (they come through the same input queue);
2. schedule (under the engine lock): drop expired requests, pick the next
   batch, mark it RUNNING; aborted requests are skipped here, so once
   ``abort()`` returned, the request can no longer enter a batch;
3. execute the batch (``ModelRunner``); on CUDA it is left in flight while
   the next iteration collates the following batch (one batch prefetched,
   like TEI's batching task);
4. deliver: every finished/failed request of the iteration goes back to the
   event loop with ONE ``loop.call_soon_threadsafe`` call.

The side lane only schedules, executes and delivers (see "the CPU side
lane" below); ingesting stays on the core thread, tokenizing happens on neither.

Nothing here touches asyncio objects: futures are resolved by the callback,
on the loop.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from poolstream.engine.cpu_threads import set_torch_threads
from poolstream.engine.errors import DeadlineExceededError, EngineDeadError, EngineError
from poolstream.engine.processor import InputProcessor
from poolstream.engine.request import EngineRequest, RequestStatus
from poolstream.engine.runner import BatchHandle, ModelRunner
from poolstream.engine.scheduler import Scheduler
from poolstream.engine.stats import StatsTracker
from poolstream.engine.tokenize_worker import TokenizeWorker
from poolstream.outputs import PoolingRequestOutput, RequestTiming

logger = logging.getLogger(__name__)

# (request, output or exception) pairs handed to the event loop.
Finished = list[tuple[EngineRequest, Any]]

_SHUTDOWN = object()


class _Tokenized:
    """Text requests back from the tokenizing threads (an input-queue item)."""

    __slots__ = ("done", "failed")

    def __init__(self, done: list[EngineRequest], failed: list[tuple[EngineRequest, Exception]]):
        self.done = done
        self.failed = failed
_WAITING, _RUNNING = RequestStatus.WAITING, RequestStatus.RUNNING


class EngineCore:
    def __init__(
        self,
        runner: ModelRunner,
        processor: InputProcessor,
        scheduler: Scheduler,
        lock: threading.Lock,
        stats: StatsTracker,
        deliver: Callable[[Finished], None],
        num_threads: int = 1,
        side_lane: bool = False,
    ):
        self.runner = runner
        self.processor = processor
        self.scheduler = scheduler
        self.lock = lock
        self.stats = stats
        self.deliver = deliver  # thread-safe: posts to the event loop
        self.num_threads = num_threads  # intra-op threads of the core thread (see cpu_threads)
        self._configured = threading.Event()
        self.inputs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.dead: EngineDeadError | None = None  # set (under the lock) when the thread ends
        self._stopping = False
        self._running: set[EngineRequest] = set()  # in batches not yet completed (under the lock)
        # The CPU side lane (see _run_side): a second thread that runs batches on one torch
        # thread while the core thread runs its own on num_threads - 1.
        self.side_lane = side_lane and num_threads >= 2
        self.side_thread: threading.Thread | None = None
        self._side_cv = threading.Condition(lock)
        self._side_go = False  # the core thread asks the side lane for one batch
        self._side_busy = False
        self._side_stop = False
        self._core_parallel = False  # the core thread's batch runs beside the side lane's
        self._core_threads = num_threads  # the core thread's current torch thread count
        self.tokenizer = (TokenizeWorker(processor, lambda done, failed: self.inputs.put(_Tokenized(done, failed)))
                          if processor.tokenizer is not None else None)

    # ---- called from the event loop -------------------------------------

    def start(self) -> None:
        if self.tokenizer is not None:
            self.tokenizer.start()
        self.thread = threading.Thread(target=self._run_guarded, name="poolstream-engine-core", daemon=True)
        self.thread.start()
        # Return once the thread has set its torch thread count: that call also changes
        # torch's default for threads started later, which callers may then reset
        # (cpu_threads.confine_other_threads).
        self._configured.wait()
        if self.side_lane:
            self.side_thread = threading.Thread(target=self._run_side_guarded, name="poolstream-engine-side",
                                                daemon=True)
            self.side_thread.start()

    def submit(self, req: EngineRequest) -> None:
        self.inputs.put(req)

    def stop(self) -> None:
        self.inputs.put(_SHUTDOWN)

    # ---- the thread -----------------------------------------------------

    def _run_guarded(self) -> None:
        try:
            set_torch_threads(self.num_threads)  # this thread's count only (cpu_threads)
        finally:
            self._configured.set()
        try:
            self.runner.bind_thread()
            with torch.inference_mode():
                self._run()
        except BaseException as e:  # noqa: BLE001 - the engine must report any death
            logger.exception("engine core died")
            death = EngineDeadError(f"engine died: {e!r}")
        else:
            death = EngineDeadError("engine was shut down")
        self._stop_side_lane()  # its batch in flight completes and is delivered first
        if self.tokenizer is not None:
            self.tokenizer.stop()
            # Joined, not left to interpreter exit: a daemon thread still inside the native
            # tokenizer while the process finalizes can abort it (exit -6 after a clean drain).
            self.tokenizer.join(timeout=5)
        # Under the lock: admission checks `dead` and enqueues under the same lock, so
        # nothing can slip into the queue after the drain below.
        with self.lock:
            self.dead = death
        self._fail_all_waiting()

    def _run(self) -> None:
        pending: BatchHandle | None = None
        while True:
            finished: Finished = []
            idle = pending is None and not self.scheduler.has_waiting()
            self._ingest(block=idle, finished=finished)
            if self._stopping:
                if pending is not None:
                    self._complete(pending, finished)
                self.deliver(finished)
                return
            batch = self._schedule(finished)
            if batch and (self.side_lane or self._core_threads != self.num_threads):
                self._pick_lanes()  # (the second case: the side lane died while in use)
            handle = self._execute(batch, finished) if batch else None
            if self._core_parallel:
                with self.lock:
                    self._core_parallel = False
            if pending is not None:
                self._complete(pending, finished)
                pending = None
            if handle is not None:
                if handle.ready():  # always on CPU: deliver now rather than next iteration
                    self._complete(handle, finished)
                else:
                    pending = handle
            if finished:
                self.deliver(finished)
            # Drop this iteration's references before blocking on the next input:
            # a batch's tensors may be views of a large shared buffer (a raster).
            batch = handle = finished = None  # type: ignore[assignment]

    # ---- the CPU side lane ------------------------------------------------
    #
    # Why: on a small CPU the model's OpenMP threads share the cores with the
    # event loop, gRPC and local clients. Whenever one of them preempts an
    # OpenMP thread, its partner waits for it at the end of every op, so
    # under load the forward ran ~25% slower than alone. With work queued
    # beyond the core thread's batch, the core thread runs on num_threads - 1
    # and this lane runs the next batch on one thread: no thread waits for
    # another across lanes, and a preempted lane slows only itself. A lone
    # request still gets every thread. libgomp counts only the threads it
    # starts: the side lane never starts a team (one thread), so the process
    # stays at num_threads OpenMP threads and is not throttled (cpu_threads).

    def _pick_lanes(self) -> None:
        """Core thread, batch chosen: run beside the side lane when more work is waiting."""
        with self.lock:
            more = self.side_lane and self.scheduler.has_waiting()
            if more and not self._side_busy:
                self._side_go = True
                self._side_cv.notify()
            self._core_parallel = more or self._side_busy
        want = self.num_threads - 1 if self._core_parallel else self.num_threads
        if want != self._core_threads:
            torch.set_num_threads(want)  # cheap; per thread (this one keeps its OpenMP pool)
            self._core_threads = want

    def _run_side_guarded(self) -> None:
        try:
            set_torch_threads(1)
            self.runner.bind_thread()
            with torch.inference_mode():
                self._run_side()
        except BaseException:  # noqa: BLE001 - the core thread carries on alone
            logger.exception("engine side lane died; the core thread carries on alone")
            with self.lock:
                self.side_lane = False
                self._side_busy = False

    def _run_side(self) -> None:
        while True:
            with self._side_cv:
                while not (self._side_go or self._side_stop):
                    self._side_cv.wait()
                if self._side_stop:
                    return
                self._side_go = False
                self._side_busy = True
            finished: Finished = []
            try:
                batch = self._schedule(finished)
                handle = self._execute(batch, finished) if batch else None
                if handle is not None:
                    self._complete(handle, finished)
            finally:
                with self.lock:
                    self._side_busy = False
                    # Go on while work is left and the core thread runs beside this lane.
                    self._side_go = self._core_parallel and self.scheduler.has_waiting()
            if finished:
                self.deliver(finished)
            batch = handle = finished = None  # type: ignore[assignment]

    def _stop_side_lane(self) -> None:
        if self.side_thread is None:
            return
        with self._side_cv:
            self._side_stop = True
            self._side_cv.notify()
        self.side_thread.join()

    def _ingest(self, block: bool, finished: Finished) -> None:
        new: list[EngineRequest] = []
        texts: list[EngineRequest] = []
        failed: list[tuple[EngineRequest, Exception]] = []
        try:
            item = self.inputs.get() if block else self.inputs.get_nowait()
            while True:
                if item is _SHUTDOWN:
                    self._stopping = True
                elif isinstance(item, _Tokenized):
                    new.extend(item.done)
                    failed.extend(item.failed)
                elif item.status is _WAITING:  # else aborted while in the queue
                    (texts if item.kind == "text" else new).append(item)
                item = self.inputs.get_nowait()
        except queue.Empty:
            pass
        if texts:
            if self.tokenizer is not None:
                self.tokenizer.submit(texts)
            else:  # check() refuses texts without a tokenizer; this is a guard
                failed.extend((r, EngineError("no tokenizer")) for r in texts)
        untokenized = [r for r in new if r.kind != "text"]
        if untokenized:
            try:
                failed.extend(self.processor.process(untokenized))
            except Exception as e:  # noqa: BLE001 - fail these prompts, keep running
                logger.exception("processing %d prompts failed", len(untokenized))
                failed.extend((req, EngineError(f"prompt processing failed: {e}")) for req in untokenized)
        if not new and not failed:
            return
        with self.lock:
            for req, exc in failed:
                if req.status is _WAITING:
                    req.status = RequestStatus.FAILED
                    self.stats.queued_prompts -= 1
                    self.stats.prompts_failed += 1
                    finished.append((req, exc))
            for req in new:
                if req.status is _WAITING:
                    self.scheduler.add(req)

    def _schedule(self, finished: Finished) -> list[EngineRequest]:
        now = time.monotonic()
        with self.lock:
            for req in self.scheduler.expire(now):
                req.status = RequestStatus.EXPIRED
                req.drop_inputs()
                self.stats.queued_prompts -= 1
                self.stats.prompts_expired += 1
                finished.append((req, DeadlineExceededError(
                    f"request {req.request_id} passed its deadline while queued")))
            batch = self.scheduler.schedule()
            for req in batch:
                req.status = _RUNNING
            self._running.update(batch)
            self.stats.queued_prompts -= len(batch)
            self.stats.running_prompts += len(batch)
        return batch

    def _execute(self, batch: list[EngineRequest], finished: Finished) -> BatchHandle | None:
        started = time.monotonic()
        try:
            handle = self.runner.execute(batch)
        except Exception as e:  # noqa: BLE001 - a model failure fails this batch, not the engine
            logger.exception("batch of %d prompts failed", len(batch))
            self._fail_batch(batch, EngineError(f"model failed: {e}"), finished)
            return None
        handle.started = started
        return handle

    def _complete(self, handle: BatchHandle, finished: Finished) -> None:
        batch = handle.batch
        try:
            rows = handle.wait()
        except Exception as e:  # noqa: BLE001
            logger.exception("batch of %d prompts failed", len(batch))
            self._fail_batch(batch, EngineError(f"model failed: {e}"), finished)
            return
        done = time.monotonic()
        tokens = sum(r.cost for r in batch)
        padded = max(r.cost for r in batch) * len(batch) if batch[0].kind != "tensors" else tokens
        make_output, tokenizer = self.runner.make_output, self.processor.tokenizer
        for req, row in zip(batch, rows):
            out = PoolingRequestOutput(request_id=req.request_id, outputs=make_output(req, row, tokenizer),
                                       prompt_token_ids=req.token_ids, truncated=req.truncated,
                                       timing=RequestTiming(req.arrival, handle.started, done))
            finished.append((req, out))
        with self.lock:
            for req in batch:
                req.status = RequestStatus.FINISHED
                req.drop_inputs()
            self.stats.running_prompts -= len(batch)
            self._running.difference_update(batch)
            self.stats.record_batch(tuple(r.request_id for r in batch), tokens, padded,
                                    handle.started, done)

    def _fail_batch(self, batch: list[EngineRequest], exc: Exception, finished: Finished) -> None:
        with self.lock:
            for req in batch:
                req.status = RequestStatus.FAILED
                req.drop_inputs()
            self.stats.running_prompts -= len(batch)
            self.stats.prompts_failed += len(batch)
            self._running.difference_update(batch)
        finished.extend((req, exc) for req in batch)

    def _fail_all_waiting(self) -> None:
        """After the loop ends: everything queued (or running, after a crash) fails with
        EngineDeadError, so no encode() waits forever."""
        exc = self.dead
        finished: Finished = []
        leftovers = []
        try:
            while True:
                item = self.inputs.get_nowait()
                if isinstance(item, _Tokenized):
                    leftovers.extend(item.done)
                    leftovers.extend(r for r, _ in item.failed)
                elif item is not _SHUTDOWN:
                    leftovers.append(item)
        except queue.Empty:
            pass
        tokenizing = self.tokenizer.take_pending() if self.tokenizer is not None else []
        with self.lock:
            for req in leftovers + tokenizing + self.scheduler.drain():
                if req.status is _WAITING:
                    req.status = RequestStatus.FAILED
                    self.stats.queued_prompts -= 1
                    finished.append((req, exc))
            for req in self._running:
                req.status = RequestStatus.FAILED
                finished.append((req, exc))
            self.stats.running_prompts -= len(self._running)
            self._running.clear()
        try:
            self.deliver(finished)
        except RuntimeError:  # the event loop is already closed
            pass
