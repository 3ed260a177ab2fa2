"""The front end's engine: the engine process behind the same interface as ``AsyncEngine``.

``EngineProcessClient.submit_group`` returns a :class:`RemoteGroup` that iterates results
in completion order and aborts on ``close()``, exactly like the in-process
``LocalGroup`` (engine/group.py), so the serving core does not know which it has
(vLLM's AsyncMPClient idea). Text is tokenized here, in the front end, with the model's
own tokenizer and the engine's rules (engine/processor.py), so tokenization scales
with the number of front ends; the engine gets token ids.

The engine's death (the death pipe reaches EOF) fails every group in flight and every
later one with ``EngineDeadError`` (UNAVAILABLE ENGINE_DEAD) and calls ``on_dead``.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import torch
import zmq
import zmq.asyncio

from poolstream.engine.errors import EngineDeadError, InvalidPromptError
from poolstream.engine.ipc import protocol as wire
from poolstream.engine.processor import load_tokenizer
from poolstream.inputs import prompt_kind
from poolstream.pooling_params import PoolingParams

logger = logging.getLogger(__name__)


@dataclass
class RemoteStats:
    """The engine's stats as last published (attribute access like ``EngineStats``)."""

    values: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None


class RemoteGroup:
    """A prompt group in the engine process (see engine/group.py for the contract)."""

    __slots__ = ("_client", "gid", "size", "_results", "_waiter", "_left", "_truncated", "_closed", "_delivered",
                 "_arrivals")

    def __init__(self, client: "EngineProcessClient", gid: int, size: int):
        self._client = client
        self.gid = gid
        self.size = size
        self._results: collections.deque[tuple[int, Any]] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._left = size  # results not yet delivered by the engine
        self._truncated: set[int] | None = None  # prompts the front end's tokenizer cut
        self._closed = False
        self._delivered: set[int] = set()
        self._arrivals: collections.deque[float] = collections.deque()

    def _deliver(self, index: int, result: Any) -> None:
        if self._truncated and index in self._truncated and not isinstance(result, BaseException):
            result.truncated = True
        self._left -= 1
        self._delivered.add(index)
        self._results.append((index, result))
        self._arrivals.append(time.monotonic())
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __aiter__(self) -> "RemoteGroup":
        return self

    async def __anext__(self) -> tuple[int, Any]:
        while not self._results:
            if self._left <= 0 or self._closed:
                raise StopAsyncIteration
            self._waiter = self._client._loop.create_future()  # type: ignore[union-attr]
            try:
                await self._waiter
            finally:
                self._waiter = None
        self._arrivals.popleft()
        return self._results.popleft()

    def track_arrivals(self) -> None:
        return None  # always tracked

    def pending_since(self) -> float | None:
        return self._arrivals[0] if self._arrivals else None

    def outstanding(self) -> int:
        return max(0, self._left)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._left > 0:
            self._client._abort(self)
        self._results.clear()
        self._arrivals.clear()


class EngineProcessClient:
    """Connects a front end to the engine process (``engine/ipc/engine_process.py``)."""

    def __init__(self, address: str, death: Connection | None, index: int, model_dir: str,
                 on_dead: Callable[[EngineDeadError], None] | None = None):
        self.address = address
        self.index = index
        self._death = death
        self._model_dir = model_dir
        self._on_dead = on_dead
        self._ctx = zmq.asyncio.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._groups: dict[int, RemoteGroup] = {}
        self._gids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stats = RemoteStats()
        self._estimate_wait_s = 0.0
        self._reader: asyncio.Task[None] | None = None
        self._dead: EngineDeadError | None = None
        self._model_info: Any = None
        self.engine_pid = 0
        self._tokenizer: Any = None
        self._max_model_len = 0
        # Called with each STATS message's values (front end 0 records batch sizes from it).
        self.on_stats: Callable[[dict[str, Any]], None] | None = None

    # -- lifecycle ---------------------------------------------------------------
    async def connect(self, timeout_s: float = 600.0) -> None:
        """Connect, say hello, and wait for the engine's welcome (it is ready by then)."""
        self._loop = loop = asyncio.get_running_loop()
        if self._death is not None:
            loop.add_reader(self._death.fileno(), self._on_death_pipe)
        self._sock.connect(self.address)
        await self._sock.send_multipart([wire.HELLO, wire.encode({"index": self.index, "pid": os.getpid()})])
        deadline = time.monotonic() + timeout_s
        while True:
            if self._dead is not None:
                raise self._dead
            if not await self._sock.poll(timeout=100):
                if time.monotonic() > deadline:
                    raise TimeoutError("the engine process did not answer")
                continue
            kind, body = await self._sock.recv_multipart()
            if kind == wire.WELCOME:
                welcome = wire.decode(body)
                break
        self._model_info = _model_info_from_wire(welcome["model_info"])
        self.engine_pid = int(welcome["pid"])
        mi = self._model_info
        self._max_model_len = int(mi.max_model_len)
        if self._max_model_len > 0:
            from poolstream.models.model_dir import read_model_dir

            tokenizer_file = read_model_dir(self._model_dir).tokenizer_file
            self._tokenizer = load_tokenizer(Path(tokenizer_file)) if tokenizer_file else None
        self._reader = asyncio.create_task(self._read())

    async def start(self) -> None:  # the in-process engine's lifecycle call
        return None

    async def shutdown(self) -> None:
        """Disconnect (the engine process is stopped by the supervisor, not by a front end)."""
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
        if self._death is not None and self._loop is not None:
            self._loop.remove_reader(self._death.fileno())
        self._fail_all(EngineDeadError("the server is shutting down"), notify=False)
        self._sock.close(0)
        self._ctx.term()

    # -- the engine interface -----------------------------------------------------
    def submit_group(
        self,
        prompts: Sequence[Any],
        params: PoolingParams | None,
        request_id: str,
        priority: int = 0,
        deadline: float | None = None,
    ) -> RemoteGroup:
        gid = next(self._gids)
        group = RemoteGroup(self, gid, len(prompts))
        if self._dead is not None:
            for i in range(len(prompts)):
                group._deliver(i, self._dead)
            return group
        params = params or PoolingParams()
        tokenized = self._tokenize(prompts, params, group)
        wire_prompts: list[Any] = []
        local: list[tuple[int, BaseException]] = []
        for i, prompt in enumerate(prompts):
            ready = tokenized.get(i, prompt)
            if isinstance(ready, BaseException):  # failed here: the engine skips a None
                local.append((i, ready))
                wire_prompts.append(None)
            else:
                wire_prompts.append(ready)
        if len(local) < len(prompts):
            self._groups[gid] = group
            body = wire.encode((gid, request_id, wire_prompts, wire.params_to_wire(params), priority, deadline))
            self._sock.send_multipart([wire.SUBMIT, body], copy=False)
        for i, exc in local:
            group._deliver(i, exc)
        return group

    def _tokenize(self, prompts: Sequence[Any], params: PoolingParams, group: RemoteGroup) -> dict[int, Any]:
        """Text prompts as token-id prompts (the engine's rules), or their error, by index."""
        tok = self._tokenizer
        if tok is None:
            return {}
        texts: list[tuple[int, str]] = []
        for i, p in enumerate(prompts):
            if isinstance(p, str):
                texts.append((i, p))
            elif isinstance(p, dict) and "prompt" in p and not p.get("multi_modal_data"):
                try:
                    if prompt_kind(p) == "text":
                        texts.append((i, p["prompt"]))
                except ValueError:
                    pass  # the engine reports it
        if not texts:
            return {}
        limit = params.truncate_prompt_tokens or self._max_model_len
        tok.enable_truncation(limit)
        encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
        out: dict[int, Any] = {}
        encodings = [tok.encode(texts[0][1])] if len(texts) == 1 else encode([t for _, t in texts])
        for (i, _), enc in zip(texts, encodings):
            truncated = bool(enc.overflowing)
            if truncated and params.truncate is False and params.truncate_prompt_tokens is None:
                out[i] = InvalidPromptError(
                    f"prompt is longer than the model's maximum of {self._max_model_len} tokens "
                    "and truncate is false")
                continue
            if truncated:
                if group._truncated is None:
                    group._truncated = set()
                group._truncated.add(i)
            out[i] = {"prompt_token_ids": enc.ids}
        return out

    def _abort(self, group: RemoteGroup) -> None:
        if self._groups.pop(group.gid, None) is not None and self._dead is None:
            try:
                self._sock.send_multipart([wire.ABORT, wire.encode(group.gid)], flags=zmq.NOBLOCK)
            except zmq.ZMQError:
                logger.warning("could not send an abort to the engine process")

    def abort(self, request_ids: Any) -> None:  # the in-process engine's API; groups abort on close()
        return None

    def estimate_wait_s(self) -> float:
        return self._estimate_wait_s

    @property
    def stats(self) -> RemoteStats:
        return self._stats

    @property
    def model_info(self) -> Any:
        return self._model_info

    @property
    def is_running(self) -> bool:
        return self._dead is None and self._model_info is not None

    @property
    def dead_error(self) -> EngineDeadError | None:
        return self._dead

    # -- receiving -------------------------------------------------------------------
    async def _read(self) -> None:
        sock = self._sock
        groups = self._groups
        while True:
            kind, body = await sock.recv_multipart()
            if kind == wire.RESULTS:
                for gid, index, ok, payload in wire.decode(body):
                    group = groups.get(gid)
                    if group is None:
                        continue  # closed meanwhile
                    result = wire.output_from_wire(payload) if ok else wire.error_from_wire(payload)
                    group._deliver(index, result)
                    if group._left <= 0:
                        groups.pop(gid, None)
            elif kind == wire.STATS:
                values = wire.decode(body)
                self._estimate_wait_s = float(values.get("estimate_wait_s", 0.0))
                self._stats = RemoteStats(values)
                if self.on_stats is not None:
                    try:
                        self.on_stats(values)
                    except Exception:
                        logger.debug("stats hook failed", exc_info=True)

    def _on_death_pipe(self) -> None:
        try:
            self._death.recv()  # type: ignore[union-attr]
        except (EOFError, OSError):
            pass
        else:
            return
        assert self._loop is not None and self._death is not None
        self._loop.remove_reader(self._death.fileno())
        self._fail_all(EngineDeadError("the engine process exited"), notify=True)

    def _fail_all(self, error: EngineDeadError, notify: bool) -> None:
        if self._dead is None:
            self._dead = error
            if notify:
                logger.error("Front end %d: %s", self.index, error)
        groups, self._groups = self._groups, {}
        for group in groups.values():
            for index in range(group.size):
                if index not in group._delivered:
                    group._deliver(index, error)
        if notify and self._on_dead is not None:
            self._on_dead(error)


def _model_info_from_wire(raw: dict[str, Any]) -> Any:
    from poolstream.engine.async_engine import ModelInfo

    raw = dict(raw)
    raw["output_dtype"] = getattr(torch, raw["output_dtype"])
    raw["compute_dtype"] = getattr(torch, raw["compute_dtype"])
    raw["output_shape"] = tuple(raw["output_shape"])
    raw["tensor_inputs"] = tuple(raw["tensor_inputs"])
    return ModelInfo(**raw)
