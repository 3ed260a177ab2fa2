"""The engine process: owns the model and the device, serves prompt groups to front ends.

Started by the supervisor (``server/processes.py``) with ``--api-server-count N``. One
``AsyncEngine`` (the same engine as in one process: its queue bound, scheduler, side lane
and RetryInfo estimate are global to all front ends), one ZeroMQ ROUTER socket, and an
event loop that does nothing but move prompts in and results out:

- a ``SUBMIT`` becomes ``engine.submit_group``; results go back through done-callbacks,
  every result of one batch for one front end in one ``RESULTS`` message;
- an ``ABORT`` closes the group (queued prompts never run);
- every ``STATS_INTERVAL_S`` each front end gets the engine's stats and wait estimate;
- the supervisor stops it through its control pipe (EOF included: a supervisor that died
  takes the engine with it). SIGTERM and SIGINT are ignored: draining is the supervisor's
  order (front ends first, then the engine).

Its death is seen by front ends through the death pipe it holds the only write end of.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import logging
import os
import signal
import time
from multiprocessing.connection import Connection
from typing import Any

import zmq
import zmq.asyncio

from poolstream.config import PoolstreamConfig
from poolstream.engine.ipc import protocol as wire

logger = logging.getLogger(__name__)


class _Skipped(Exception):
    """Stands for a prompt the front end already answered."""


_SKIPPED = _Skipped()


class EngineServer:
    def __init__(self, engine: Any, address: str, stats_path: str | None = None):
        self.engine = engine
        self.address = address
        self.stats_path = stats_path
        self._ctx = zmq.asyncio.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self._groups: dict[tuple[bytes, int], Any] = {}
        self._front_ends: dict[bytes, dict[str, Any]] = {}
        self._pending: dict[bytes, list[Any]] = {}
        self._flush_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()

    async def run(self, control: Connection | None = None) -> None:
        self._loop = loop = asyncio.get_running_loop()
        self._sock.bind(self.address)
        if control is not None:
            loop.add_reader(control.fileno(), self._on_control, control)
        tasks = [asyncio.create_task(self._receive()), asyncio.create_task(self._publish_stats())]
        try:
            await self._stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if control is not None:
                loop.remove_reader(control.fileno())
            for group in self._groups.values():
                group.close()
            self._sock.close(0)
            self._ctx.term()

    def stop(self) -> None:
        self._stop.set()

    def _on_control(self, control: Connection) -> None:
        try:
            msg = control.recv()
        except (EOFError, OSError):
            msg = "stop"
        if msg == "stop":
            logger.info("Engine process: stop requested")
            self.stop()

    async def _receive(self) -> None:
        sock = self._sock
        while True:
            frames = await sock.recv_multipart(copy=True)
            try:
                self._handle(frames)
            except Exception:
                logger.exception("Engine process: bad message dropped")

    def _handle(self, frames: list[bytes]) -> None:
        identity, kind, body = frames[0], frames[1], frames[2]
        if kind == wire.SUBMIT:
            gid, request_id, prompts, params, priority, deadline = wire.decode(body)
            # None: a prompt that failed in the front end (already answered there).
            prompts = [_SKIPPED if p is None else p for p in prompts]
            group = self.engine.submit_group(prompts, wire.params_from_wire(params), request_id, priority, deadline)
            key = (identity, gid)
            left = [group.size]

            def deliver(index: int, result: Any) -> None:
                if result is _SKIPPED:
                    pass
                elif isinstance(result, BaseException):
                    self._queue(identity, (gid, index, False, wire.error_to_wire(result)))
                else:
                    self._queue(identity, (gid, index, True, wire.output_to_wire(result)))
                left[0] -= 1
                if left[0] == 0:
                    self._groups.pop(key, None)

            self._groups[key] = group
            group.on_result(deliver)
        elif kind == wire.ABORT:
            group = self._groups.pop((identity, wire.decode(body)), None)
            if group is not None:
                group.close()
        elif kind == wire.HELLO:
            hello = wire.decode(body)
            self._front_ends[identity] = hello
            logger.info("Engine process: front end %s (pid %s) connected", hello.get("index"), hello.get("pid"))
            self._sock.send_multipart([identity, wire.WELCOME, wire.encode(self._welcome())])

    def _welcome(self) -> dict[str, Any]:
        mi = self.engine.model_info
        info = {f.name: getattr(mi, f.name) for f in dataclasses.fields(mi)}
        info["output_dtype"] = str(mi.output_dtype).removeprefix("torch.")
        info["compute_dtype"] = str(mi.compute_dtype).removeprefix("torch.")
        info["output_shape"] = list(mi.output_shape)
        info["tensor_inputs"] = list(mi.tensor_inputs)
        info["extra"] = {k: v for k, v in mi.extra.items() if isinstance(v, (str, int, float, bool))}
        return {"model_info": info, "pid": os.getpid()}

    def _queue(self, identity: bytes, item: Any) -> None:
        self._pending.setdefault(identity, []).append(item)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            assert self._loop is not None
            # After the other done-callbacks of this batch: one message per front end.
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, {}
        for identity, items in pending.items():
            try:
                self._sock.send_multipart([identity, wire.RESULTS, wire.encode(items)], flags=zmq.NOBLOCK)
            except zmq.ZMQError:
                logger.warning("Engine process: results for a front end that went away were dropped")

    async def _publish_stats(self) -> None:
        last_file = 0.0
        while True:
            await asyncio.sleep(wire.STATS_INTERVAL_S)
            stats = self.stats_dict()
            body = wire.encode(stats)
            for identity in list(self._front_ends):
                try:
                    self._sock.send_multipart([identity, wire.STATS, body], flags=zmq.NOBLOCK)
                except zmq.ZMQError:
                    pass
            now = time.monotonic()
            if self.stats_path and now - last_file >= 0.5:
                last_file = now
                _write_json(self.stats_path, stats)

    def stats_dict(self) -> dict[str, Any]:
        st = self.engine.stats
        out = {f.name: getattr(st, f.name) for f in dataclasses.fields(st)
               if isinstance(getattr(st, f.name), (int, float, bool))}
        out["recent_batch_sizes"] = [(b.index, len(b.request_ids)) for b in getattr(st, "recent_batches", ())]
        out["estimate_wait_s"] = self.engine.estimate_wait_s()
        out["running"] = bool(self.engine.is_running)
        return out


def _write_json(path: str, data: dict[str, Any]) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def engine_main(config: PoolstreamConfig, address: str, ready: Connection, control: Connection,
                death_write: Connection, stats_path: str | None, log_level: str, log_format: str) -> None:
    """Entry point of the engine process (multiprocessing, spawn)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from poolstream.server.observability import configure_logging

    configure_logging(log_level, log_format)
    _keep = death_write  # held open for this process's lifetime: front ends see EOF when it dies
    try:
        asyncio.run(_engine_async(config, address, ready, control, stats_path))
    except Exception as e:
        logger.exception("Engine process failed")
        try:
            ready.send(("failed", f"{type(e).__name__}: {e}"))
        except OSError:
            pass
        raise SystemExit(1) from None
    finally:
        del _keep


async def _engine_async(config: PoolstreamConfig, address: str, ready: Connection, control: Connection,
                        stats_path: str | None) -> None:
    from poolstream.engine import AsyncEngine
    from poolstream.engine.cpu_threads import confine_other_threads

    engine = await asyncio.to_thread(AsyncEngine.from_config, config)
    await engine.start()
    confine_other_threads(asyncio.get_running_loop())
    gc.collect()
    gc.freeze()
    server = EngineServer(engine, address, stats_path)
    run = asyncio.create_task(server.run(control))
    await asyncio.sleep(0)  # bound before anyone is told
    ready.send(("ready", os.getpid()))
    try:
        await run
    finally:
        await engine.shutdown()
        logger.info("Engine process: stopped")
