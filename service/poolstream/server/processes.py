"""``--api-server-count N``: N gRPC front-end processes and one engine process.

    supervisor (this process: ``poolstream serve``)
      |-- engine process      owns the model and the device (engine/ipc/engine_process.py)
      |-- front end 0 .. N-1  gRPC on the same port (SO_REUSEPORT), the serving core,
                              tokenization and plugin hooks; each reaches the engine
                              through ZeroMQ (engine/ipc/client.py)

The supervisor does no request work. It picks the port (so that ``--port 0`` gives all
front ends one port), starts the engine, then the front ends, writes ``--port-file``
once every front end is SERVING, serves ``--metrics-port`` for all processes at once
(prometheus_client's multiprocess mode), and coordinates the end:

- SIGTERM/SIGINT: every front end drains (NOT_SERVING, ``--drain-delay``, in-flight calls
  finish within ``--grace-period``) and exits; then the engine is told to stop; exit 0.
- The engine dies: every front end sees EOF on the death pipe, answers UNAVAILABLE
  ENGINE_DEAD, goes NOT_SERVING and exits 1; the supervisor exits 1 too (never hangs:
  front ends that do not exit in time are killed).
- A front end dies: the whole server stops and exits 1 (an orchestrator restarts it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import tempfile
import time
import types
from multiprocessing.connection import Connection
from typing import Any

from poolstream.config import PoolstreamConfig

logger = logging.getLogger(__name__)

# How long the front ends get to exit after the engine died, before they are killed.
_DEAD_EXIT_WAIT_S = 10.0
# Seconds added to drain delay + grace before a draining front end is killed.
_DRAIN_MARGIN_S = 10.0
# How long the engine gets to stop once the front ends are gone.
_ENGINE_STOP_WAIT_S = 30.0


def default_api_server_count(device: str) -> int:
    """``--api-server-count`` when not given: 0 (one process) on CPU, front ends on CUDA.

    On CPU the model is the limit and a second process only takes cores from torch
    (bench/results: the engine in process is the CPU default). On CUDA the Python around
    each call is the limit, so the front ends scale it: min(4, cores // 4) of them, which
    leaves most cores to tokenization in the front ends and to the engine's own loop."""
    if device == "cpu":
        return 0
    try:
        import torch

        cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    except Exception:  # pragma: no cover - a broken torch install fails later anyway
        cuda = False
    if not cuda:
        return 0
    return max(1, min(4, (os.cpu_count() or 4) // 4))


def _reserve_port(host: str, port: int) -> tuple[socket.socket, int]:
    """A bound (not listening) SO_REUSEPORT socket holding the port the front ends share."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]"), port))
    return sock, sock.getsockname()[1]


def run_multiprocess(config: PoolstreamConfig, listen: Any, plugin_from_init: str | None, count: int,
                     log_level: str = "INFO", log_format: str = "text") -> int:
    """Start the engine process and ``count`` front ends; return the exit code."""
    from poolstream.engine.ipc.engine_process import engine_main
    from poolstream.plugins.io_processors import select_io_processor

    select_io_processor(config, plugin_from_init)  # fails fast, before anything starts
    workdir = tempfile.mkdtemp(prefix="poolstream-")
    metrics_dir = os.path.join(workdir, "metrics")
    os.mkdir(metrics_dir)
    # Children import prometheus_client with this set: their metrics go to files here.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    address = f"ipc://{workdir}/engine.sock"
    stats_path = os.path.join(workdir, "engine_stats.json")
    reserve, port = _reserve_port(listen.host, listen.port)
    # The HTTP door (--http-port) is served by every front end on one port too (SO_REUSEPORT);
    # a requested port 0 becomes one concrete free port here, shared by all of them.
    http_reserve = None
    http_port = listen.http_port
    if http_port is not None:
        http_reserve, http_port = _reserve_port(listen.http_host or listen.host, http_port)
    ctx = multiprocessing.get_context("spawn")
    stopping = False
    metrics_http = None

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    engine = None
    front_ends: list[Any] = []
    try:
        ready_r, ready_w = ctx.Pipe(duplex=False)
        control_r, control_w = ctx.Pipe(duplex=False)
        death_r, death_w = ctx.Pipe(duplex=False)
        engine = ctx.Process(target=engine_main, name="poolstream-engine", args=(
            config, address, ready_w, control_r, death_w, stats_path, log_level, log_format))
        engine.start()
        # Only the engine holds the death pipe's write end: its death is EOF for the front ends.
        death_w.close()
        control_r.close()
        ready_w.close()
        layout = {"engine_process": True, "api_server_count": count, "engine_pid": engine.pid}
        fe_listen = dataclasses.replace(
            listen, port=port, port_file=None, reuse_port=True, http_port=http_port,
            transport=dataclasses.replace(listen.transport, metrics_port=0))
        status_r, status_w = ctx.Pipe(duplex=False)
        for i in range(count):
            # Every front end serves the HTTP door on the shared port; front end 0 writes its port file.
            listen_i = fe_listen if i == 0 else dataclasses.replace(fe_listen, http_port_file=None)
            p = ctx.Process(target=frontend_main, name=f"poolstream-api-{i}", args=(
                config, listen_i, plugin_from_init, address, death_r, i, dict(layout, front_end_index=i),
                status_w, log_level, log_format))
            p.start()
            front_ends.append(p)
        death_r.close()
        status_w.close()
        logger.info("Started the engine process (pid %d) and %d front ends on %s:%d", engine.pid, count,
                    listen.host, port)

        serving: set[int] = set()
        engine_ready = False
        port_written = False
        exit_code = 0
        while True:
            conns: list[Any] = [engine.sentinel, *(p.sentinel for p in front_ends)]
            if not ready_r.closed:
                conns.append(ready_r)
            if not status_r.closed:
                conns.append(status_r)
            ready = multiprocessing.connection.wait(conns, timeout=0.2)
            if stopping:
                break
            if ready_r in ready:
                try:
                    msg = ready_r.recv()
                    if msg[0] == "ready":
                        engine_ready = True
                        logger.info("The engine process is ready")
                    else:
                        logger.error("The engine process failed to start: %s", msg[1])
                except EOFError:
                    ready_r.close()
            if status_r in ready:
                try:
                    kind, index = status_r.recv()
                    if kind == "serving":
                        serving.add(index)
                except EOFError:
                    status_r.close()
            if engine.exitcode is not None:
                logger.error("The engine process exited (code %s); stopping the front ends", engine.exitcode)
                exit_code = 1
                _wait_or_kill(front_ends, _DEAD_EXIT_WAIT_S)
                return exit_code
            dead = [p for p in front_ends if p.exitcode is not None]
            if dead:
                logger.error("Front end %s exited (code %s); stopping the server", dead[0].name, dead[0].exitcode)
                exit_code = 1
                break
            if engine_ready and len(serving) == count and not port_written:
                port_written = True
                if listen.transport.metrics_port:
                    metrics_http = _serve_metrics(listen, metrics_dir, stats_path)
                if listen.port_file:
                    _write_port_file(listen.port_file, port)
                logger.info("SERVING on %s:%d with %d front ends", listen.host, port, count)

        # Drain: every front end first (each drains its calls), then the engine.
        logger.info("Stopping: draining %d front ends, then the engine", len(front_ends))
        for p in front_ends:
            if p.exitcode is None and p.pid is not None:
                os.kill(p.pid, signal.SIGTERM)
        _wait_or_kill(front_ends, listen.drain_delay_s + listen.grace_period_s + _DRAIN_MARGIN_S)
        if any(p.exitcode not in (0, None) for p in front_ends):
            exit_code = exit_code or 1
        try:
            control_w.send("stop")
        except OSError:
            pass
        engine.join(_ENGINE_STOP_WAIT_S)
        if engine.exitcode is None:
            logger.error("The engine process did not stop in %.0fs; killing it", _ENGINE_STOP_WAIT_S)
            engine.kill()
            engine.join()
            exit_code = 1
        elif engine.exitcode != 0:
            exit_code = 1
        return exit_code
    finally:
        for p in [*front_ends, *([engine] if engine is not None else [])]:
            if p.exitcode is None and p.pid is not None:
                p.kill()
                p.join()
        if metrics_http is not None:
            metrics_http.shutdown()
            metrics_http.server_close()
        reserve.close()
        if http_reserve is not None:
            http_reserve.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_or_kill(procs: list[Any], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.exitcode is None:
            logger.error("%s did not exit in %.0fs; killing it", p.name, timeout_s)
            p.kill()
            p.join()


def _serve_metrics(listen: Any, metrics_dir: str, stats_path: str) -> Any:
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=metrics_dir)
    registry.register(EngineStatsFileCollector(stats_path))
    host = listen.transport.metrics_host or listen.host
    http, _thread = start_http_server(listen.transport.metrics_port, addr=host, registry=registry)
    logger.info("Prometheus metrics of all processes on http://%s:%d/metrics", host, http.server_port)
    return http


class EngineStatsFileCollector:
    """The engine's counters and gauges (server/metrics_collectors.py) for an engine in another
    process: read at scrape time from the stats file the engine process rewrites every 0.5 s."""

    def __init__(self, path: str):
        self.path = path

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        import json

        from poolstream.server.metrics_collectors import engine_families

        try:
            with open(self.path, encoding="utf-8") as f:
                stats = json.load(f)
        except (OSError, ValueError):
            return
        yield from engine_families(stats)


def _write_port_file(path: str, port: int) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f"{port}\n")
    os.replace(tmp, path)


def frontend_main(config: PoolstreamConfig, listen: Any, plugin_from_init: str | None, address: str,
                  death: Connection, index: int, layout: dict[str, Any], status: Connection,
                  log_level: str, log_format: str) -> None:
    """Entry point of front end ``index`` (multiprocessing, spawn)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor turns Ctrl-C into SIGTERM
    from poolstream.server.observability import configure_logging

    configure_logging(log_level, log_format)
    code = asyncio.run(_frontend(config, listen, plugin_from_init, address, death, index, layout, status))
    raise SystemExit(code)


async def _frontend(config: PoolstreamConfig, listen: Any, plugin_from_init: str | None, address: str,
                    death: Connection, index: int, layout: dict[str, Any], status: Connection) -> int:
    from poolstream.engine.ipc.client import EngineProcessClient
    from poolstream.server.app import PoolstreamServer, serve

    async def connect(server: PoolstreamServer) -> Any:
        client = EngineProcessClient(address, death, index, config.model_config.model,
                                     on_dead=server.on_engine_dead)
        await client.connect()
        if index == 0:  # one front end records the engine's batch sizes (the scrape sums processes)
            client.on_stats = lambda values: server.metrics.sample_batches({"recent_batches": [
                types.SimpleNamespace(index=i, request_ids=range(n)) for i, n in values.get("recent_batch_sizes", ())]})
        return client

    server = PoolstreamServer(config, listen, plugin_from_init, engine_factory=connect)
    server.state.layout.update(layout)
    server.on_serving = lambda: status.send(("serving", index))  # the supervisor writes --port-file
    return await serve(config, listen, plugin_from_init, server=server)
