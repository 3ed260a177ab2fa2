"""Server lifecycle: bind, load the model, serve, drain on SIGTERM/SIGINT.

Order matters for orchestrators:
1. plugin selection (fails fast, before the slow model load);
2. bind and start with health NOT_SERVING, so probes get an answer at once;
3. load the model in a thread (the event loop keeps answering health);
4. SERVING, and the bound port is written to ``--port-file``;
5. on the first SIGTERM/SIGINT: NOT_SERVING (still serving for
   ``drain_delay_s`` so load balancers move away), then stop accepting, let
   in-flight calls finish within the grace period, shut the engine down, exit 0.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from poolstream.config import PoolstreamConfig
from poolstream.http.core import ServingCore
from poolstream.plugins.io_processors import select_io_processor
from poolstream.server.health import NOT_SERVING, SERVING, ServerHealth
from poolstream.server.interceptors import AuthInterceptor, ObservabilityInterceptor, install_client_gone_filter
from poolstream.server.metrics import ServerMetrics
from poolstream.server.reflection import enable_reflection
from poolstream.server.servicer import PoolingServicer
from poolstream.server.security import TokenAuthenticator, describe_security
from poolstream.server.state import ServerState
from poolstream.server.transport import TransportConfig, server_options
from poolstream.tei.servicer import SERVICE_NAMES as TEI_SERVICES
from poolstream.tei.servicer import TEIServicers
from poolstream.v1 import pooling_service_pb2, pooling_service_pb2_grpc

logger = logging.getLogger(__name__)

# Seconds a front end keeps answering UNAVAILABLE ENGINE_DEAD after its engine died, then exits.
ENGINE_DEAD_LINGER_S = 1.0

SERVICE_NAME = pooling_service_pb2.DESCRIPTOR.services_by_name["PoolingService"].full_name
TEI_PREFIX = "/tei.v1."


@dataclass(frozen=True)
class ListenConfig:
    host: str = "127.0.0.1"
    port: int = 50051
    port_file: str | None = None
    grace_period_s: float = 30.0
    # Seconds to keep serving after NOT_SERVING so load balancers notice first.
    drain_delay_s: float = 0.0
    # Keepalive, connection age, TLS, auth, metrics and health ports (server/transport.py).
    transport: TransportConfig = field(default_factory=TransportConfig)
    # SO_REUSEPORT on the listeners: the N front ends of --api-server-count share the port
    # (off otherwise, so that a second server on a taken port fails instead of sharing it).
    reuse_port: bool = False
    # The HTTP/JSON front door (poolstream.http): None = off, 0 = a free port.
    http_port: int | None = None
    http_host: str | None = None  # None: `host`
    http_port_file: str | None = None  # the bound HTTP port is written here once SERVING


def _import_payload_types() -> None:
    """Register the built-in typed payload messages so reflection and Any unpacking find them."""
    import importlib
    import pkgutil

    import poolstream.payloads as payloads

    for mod in pkgutil.walk_packages(payloads.__path__, payloads.__name__ + "."):
        if mod.name.endswith("_pb2"):
            importlib.import_module(mod.name)


def build_server(
    config: PoolstreamConfig,
    state: ServerState,
    health: ServerHealth,
    transport: TransportConfig | None = None,
    metrics: ServerMetrics | None = None,
    tei: TEIServicers | None = None,
    reuse_port: bool = False,
) -> grpc.aio.Server:
    transport = transport or TransportConfig()
    install_client_gone_filter()
    interceptors: list[grpc.aio.ServerInterceptor] = [
        ObservabilityInterceptor(metrics, transport.access_log, config.limits.max_send_message_bytes)]
    if transport.auth_tokens:
        authenticator = TokenAuthenticator(list(transport.auth_tokens))
        interceptors.append(AuthInterceptor(authenticator))
        interceptors.append(AuthInterceptor(authenticator, TEI_PREFIX))  # TEI's API: the same token
    options = [o for o in server_options(config.limits, transport) if o[0] != "grpc.so_reuseport"]
    options.append(("grpc.so_reuseport", 1 if reuse_port else 0))
    server = grpc.aio.server(options=options, interceptors=interceptors)
    pooling_service_pb2_grpc.add_PoolingServiceServicer_to_server(PoolingServicer(state, metrics), server)
    if tei is not None:
        tei.add_to_server(server)
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    health_pb2_grpc.add_HealthServicer_to_server(health.servicer, server)
    _import_payload_types()
    enable_reflection(server, [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                               *(TEI_SERVICES if tei is not None else ())])
    return server


class PoolstreamServer:
    """One server: plugin selection, gRPC listener, engine. ``serve()`` adds signals."""

    def __init__(self, config: PoolstreamConfig, listen: ListenConfig, plugin_from_init: str | None = None,
                 engine_factory: Callable[["PoolstreamServer"], Awaitable[Any]] | None = None):
        self.config = config
        self.listen = listen
        # None: the engine runs in this process. A front end of --api-server-count N passes
        # one that connects to the engine process (server/processes.py).
        self.engine_factory = engine_factory
        # Set when the engine died: serve() then stops and exits non-zero.
        self.engine_dead = asyncio.Event()
        # Called once SERVING (a front end tells its supervisor).
        self.on_serving: Callable[[], None] | None = None
        # Fails fast (vLLM's errors) before anything binds or loads.
        self.state = ServerState(config, select_io_processor(config, plugin_from_init))
        self.health = ServerHealth([SERVICE_NAME])
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self.metrics = ServerMetrics(lambda: self.state.engine)
        self.state.metrics = self.metrics  # the core feeds it from each call's record
        self.health_server: grpc.Server | None = None
        self.health_port = 0
        self._batch_sampler: asyncio.Task[None] | None = None
        # The other front doors (TEI's gRPC API, HTTP/JSON) share the serving core (self.state)
        # through their adapter (http/core.py).
        self.core = ServingCore(self.state, self.metrics)
        self.tei = TEIServicers(self.core)
        self.http: Any = None  # poolstream.http.app.HttpFrontDoor when --http-port is set
        self.http_port = 0

    @property
    def address(self) -> str:
        return f"{self.listen.host}:{self.port}"

    async def bind(self) -> None:
        """Listen with health NOT_SERVING."""
        await self.health.set_all(NOT_SERVING)
        await self.tei.set_health(self.health, loaded=False)
        transport = self.listen.transport
        self.server = build_server(self.config, self.state, self.health, transport, self.metrics, self.tei,
                                   reuse_port=self.listen.reuse_port)
        bind_to = f"{self.listen.host}:{self.listen.port}"
        if transport.tls is not None:
            self.port = self.server.add_secure_port(bind_to, transport.tls.server_credentials())
        else:
            self.port = self.server.add_insecure_port(bind_to)
        if self.port == 0:
            raise OSError(f"could not bind {self.listen.host}:{self.listen.port}")
        await self.server.start()
        await self._start_side_listeners()
        await self._start_http()
        logger.info(
            "Listening on %s%s (NOT_SERVING while the model loads)", self.address,
            "" if transport.tls is None else (" with mutual TLS" if transport.tls.mutual else " with TLS"),
        )
        logger.info("%s", describe_security(transport.tls, transport.auth_tokens, transport.auth_source))

    async def _start_side_listeners(self) -> None:
        """The Prometheus endpoint and the plaintext health-only port, when configured."""
        transport = self.listen.transport
        if transport.metrics_port:
            self.metrics.start_http(transport.metrics_host or self.listen.host, transport.metrics_port)
        if transport.health_port:
            from grpc_health.v1 import health_pb2_grpc

            # A threaded server, not one on the event loop: probes must be answered while the
            # loop works through a burst of large requests (kubelet restarts a pod whose
            # liveness probe times out).
            self.health_server = grpc.server(
                ThreadPoolExecutor(max_workers=2, thread_name_prefix="poolstream-health"),
                options=[("grpc.so_reuseport", 1 if self.listen.reuse_port else 0)])
            health_pb2_grpc.add_HealthServicer_to_server(self.health.threaded_servicer, self.health_server)
            self.health_port = self.health_server.add_insecure_port(f"{self.listen.host}:{transport.health_port}")
            if self.health_port == 0:
                raise OSError(f"could not bind the health port {self.listen.host}:{transport.health_port}")
            self.health_server.start()

    async def _start_http(self) -> None:
        """The HTTP/JSON front door on this event loop (answers 503 on API routes until loaded)."""
        listen = self.listen
        if listen.http_port is None:
            return
        from poolstream.http.app import HttpFrontDoor, create_app  # deferred: only with --http-port

        transport = listen.transport
        app = create_app(self.core, self.metrics, transport.auth_tokens, transport.access_log)
        self.http = HttpFrontDoor(app, listen.http_host or listen.host, listen.http_port, transport.tls,
                                  listen.grace_period_s, reuse_port=listen.reuse_port)
        self.http_port = await self.http.start()

    async def load(self) -> None:
        """Load the model in a thread, then go SERVING."""
        from poolstream.engine.cpu_threads import confine_other_threads

        if self.engine_factory is not None:
            engine = await self.engine_factory(self)
        else:
            from poolstream.engine import AsyncEngine  # deferred: heavy import

            engine = await asyncio.to_thread(AsyncEngine.from_config, self.config)
            await engine.start()
        # Only the engine core thread runs multi-threaded torch: one OpenMP team more
        # (plugin work on the loop or an executor thread) throttles the engine's (engine/cpu_threads.py).
        confine_other_threads(asyncio.get_running_loop())
        # ~170k long-lived objects (torch, protobuf, the model) exist by now; a full
        # garbage collection walks them all: 100-125 ms with the event loop stopped,
        # measured as health-check spikes under load. Freezing them keeps later
        # collections to what requests allocate.
        gc.collect()
        gc.freeze()
        self.state.attach_engine(engine)
        self._batch_sampler = asyncio.create_task(self.metrics.run_batch_sampler())
        if self.engine_dead.is_set():  # died while we were getting ready
            return
        await self.health.set_all(SERVING)
        await self.tei.set_health(self.health)
        if self.listen.http_port_file and self.http is not None:
            _write_port_file(self.listen.http_port_file, self.http_port)
        if self.on_serving is not None:
            self.on_serving()
        if self.listen.port_file:
            _write_port_file(self.listen.port_file, self.port)
        mi = engine.model_info
        logger.info(
            "SERVING %s (%s on %s) with plugin %s on %s",
            mi.name, mi.architecture, mi.device, self.state.selection.name or "none", self.address,
        )

    async def start(self) -> None:
        await self.bind()
        await self.load()

    def on_engine_dead(self, error: BaseException) -> None:
        """The engine (process) died: NOT_SERVING, and serve() ends with a non-zero exit.
        Calls from now on answer UNAVAILABLE ENGINE_DEAD (serving/core.py)."""
        logger.error("The engine died (%s): NOT_SERVING; exiting", error)
        self.engine_dead.set()
        asyncio.get_running_loop().create_task(self.health.set_all(NOT_SERVING))

    async def drain_and_stop(self) -> None:
        """NOT_SERVING, optional drain delay, stop accepting, grace for in-flight calls."""
        listen = self.listen
        logger.info(
            "Draining: NOT_SERVING for %.1fs, then finishing in-flight calls (grace %.1fs)",
            listen.drain_delay_s, listen.grace_period_s,
        )
        await self.health.drain()
        if listen.drain_delay_s > 0:
            await asyncio.sleep(listen.drain_delay_s)
        self.state.draining = True
        stops = [self.server.stop(listen.grace_period_s)] if self.server is not None else []
        if self.http is not None:
            stops.append(self.http.stop(graceful=True))
        await asyncio.gather(*stops)
        await self.close()

    async def close(self) -> None:
        if self.server is not None:
            await self.server.stop(0)
        if self.http is not None:
            await self.http.stop(graceful=False)
            self.http = None
        if self.health_server is not None:
            await asyncio.to_thread(self.health_server.stop(0).wait)
        if self._batch_sampler is not None:
            self._batch_sampler.cancel()
        self.metrics.stop_http()
        if self.state.engine is not None:
            engine, self.state.engine = self.state.engine, None
            await engine.shutdown()


async def serve(config: PoolstreamConfig, listen: ListenConfig, plugin_from_init: str | None = None,
                server: PoolstreamServer | None = None) -> int:
    """Run the server until SIGTERM/SIGINT; return the process exit code (1 if the engine died)."""
    server = server or PoolstreamServer(config, listen, plugin_from_init)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waiters: list[asyncio.Task[Any]] = []
    try:
        await server.bind()
        load = asyncio.create_task(server.load())
        stopper = asyncio.create_task(stop.wait())
        dead = asyncio.create_task(server.engine_dead.wait())
        waiters += [stopper, dead]
        await asyncio.wait({load, stopper, dead}, return_when=asyncio.FIRST_COMPLETED)
        if not load.done():  # a signal (or the engine's death) during the model load
            load.cancel()
            await asyncio.gather(load, return_exceptions=True)
            await server.close()
            return 1 if server.engine_dead.is_set() else 0
        load.result()
        await asyncio.wait({stopper, dead}, return_when=asyncio.FIRST_COMPLETED)
        if server.engine_dead.is_set():
            # Calls in flight have their ENGINE_DEAD answers; give them a moment to go out.
            await asyncio.sleep(ENGINE_DEAD_LINGER_S)
            await server.close()
            return 1
        await server.drain_and_stop()
        return 0
    finally:
        for w in waiters:
            w.cancel()
        await server.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _write_port_file(path: str, port: int) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f"{port}\n")
    os.replace(tmp, path)
