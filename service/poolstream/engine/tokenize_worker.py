"""Tokenization off the engine's core thread.

The core thread only hands new text prompts over and takes tokenized ones back
(through its input queue), so the batches of other callers never wait for a
tokenizer. Two threads, each with its own copy of the tokenizer:

- the *first-pass* thread takes every newly arrived text in one batch call on
  its character-bounded prefix (``engine/text_cut.py``): a few thousand
  characters per text, whatever its length, which settles ordinary texts;
- the *rest* thread settles, one at a time, the texts whose prefix did not
  prove exact (long whitespace runs, no whitespace at all, ...): it may read up
  to a whole text (bounded by ``--max-prompt-chars``), and only texts like that
  wait behind it.

Both batch calls release the GIL (the Rust tokenizer), so neither thread
holds up the event loop or the core thread's forward passes.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from poolstream.engine.errors import EngineError
from poolstream.engine.processor import InputProcessor
from poolstream.engine.request import EngineRequest, RequestStatus

logger = logging.getLogger(__name__)

# (tokenized requests, (request, error) pairs): posted back to the core thread.
Post = Callable[[list[EngineRequest], list[tuple[EngineRequest, Exception]]], None]
_STOP = object()


class TokenizeWorker:
    def __init__(self, processor: InputProcessor, post: Post):
        self.processor = processor
        self.post = post
        self._first: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._rest: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        # Handed over and not yet posted back: failed by the core if the engine dies.
        self._lock = threading.Lock()
        self._pending: set[EngineRequest] = set()

    def start(self) -> None:
        for name, target in (("first", self._run_first), ("rest", self._run_rest)):
            cutter = self.processor.new_cutter()
            t = threading.Thread(target=self._guarded, args=(target, cutter),
                                 name=f"poolstream-tokenize-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def submit(self, reqs: list[EngineRequest]) -> None:
        with self._lock:
            self._pending.update(reqs)
        self._first.put(reqs)

    def take_pending(self) -> list[EngineRequest]:
        """Everything handed over and not posted back (the core fails these when it stops)."""
        with self._lock:
            pending, self._pending = list(self._pending), set()
        return pending

    def _post(self, done: list[EngineRequest], failed: list[tuple[EngineRequest, Exception]],
              skipped: list[EngineRequest] = ()) -> None:  # type: ignore[assignment]
        with self._lock:
            self._pending.difference_update(done)
            self._pending.difference_update(r for r, _ in failed)
            self._pending.difference_update(skipped)
        if done or failed:
            self.post(done, failed)

    def stop(self) -> None:
        self._first.put(_STOP)
        self._rest.put(_STOP)

    def join(self, timeout: float | None = None) -> None:
        for t in self._threads:
            t.join(timeout)

    def _guarded(self, target, cutter) -> None:
        try:
            target(cutter)
        except BaseException:  # noqa: BLE001 - logged; the core fails what it handed over
            logger.exception("tokenizer thread died")

    def _run_first(self, cutter) -> None:
        while True:
            item = self._first.get()
            if item is _STOP:
                return
            reqs: list[EngineRequest] = list(item)  # type: ignore[call-overload]
            try:  # everything queued meanwhile goes in the same batch call
                while True:
                    more = self._first.get_nowait()
                    if more is _STOP:
                        self._first.put(_STOP)
                        break
                    reqs.extend(more)  # type: ignore[arg-type]
            except queue.Empty:
                pass
            live = [r for r in reqs if r.status is RequestStatus.WAITING]  # aborted meanwhile: skip
            if len(live) != len(reqs):
                self._post([], [], [r for r in reqs if r.status is not RequestStatus.WAITING])
            try:
                done, failed, rest = self.processor.tokenize_pass(cutter, live)
            except Exception as e:  # noqa: BLE001 - fail these prompts, keep tokenizing
                logger.exception("tokenizing %d prompts failed", len(live))
                done, failed, rest = [], [(r, EngineError(f"tokenization failed: {e}")) for r in live], []
            for req in rest:
                self._rest.put(req)
            self._post(done, failed)

    def _run_rest(self, cutter) -> None:
        while True:
            req = self._rest.get()
            if req is _STOP:
                return
            assert isinstance(req, EngineRequest)
            if req.status is not RequestStatus.WAITING:
                self._post([], [], [req])
                continue
            try:
                error = self.processor.tokenize_rest(cutter, req)
            except Exception as e:  # noqa: BLE001
                logger.exception("tokenizing a prompt failed")
                error = EngineError(f"tokenization failed: {e}")
            if error is None:
                self._post([req], [])
            else:
                self._post([], [(req, error)])
