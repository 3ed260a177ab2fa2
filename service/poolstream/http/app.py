"""The HTTP/JSON front door: a FastAPI app served by uvicorn on the gRPC server's event loop.

``--http-port`` turns it on. It shares everything with the gRPC door: the
engine, the plugin, the limits, the bearer tokens, TLS (the same certificate),
the Prometheus registry and the error table (``http/core.py``). It starts
after the gRPC listener (answering 503 on API routes until the model is
loaded, like NOT_SERVING), and on shutdown it stops accepting with the gRPC
listener and gives requests in flight the same grace period.

Routes: OpenAI (``/v1/embeddings``, ``/v1/models``), vLLM (``/pooling``,
``/v1/score``, ``/rerank``, ``/v1/rerank``, ``/classify``), TEI (``/embed``,
``/rerank``, ``/predict``, ``/tokenize``, ``/info``, ``/health``, ``/metrics``),
``/pooling/stream`` (NDJSON progress), the page at ``/`` and the OpenAPI docs
at ``/docs``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

import poolstream
from poolstream.http import openai_routes, stream_routes, tei_routes, vllm_routes
from poolstream.http.common import guarded, json_body, note_error, validation_error
from poolstream.http.core import ServingCore
from poolstream.http.errors import ErrorStyle, error_response, style_of
from poolstream.http.middleware import FrontDoorMiddleware
from poolstream.http.schemas import RerankRequest
from poolstream.server.errors import ServiceError
from poolstream.server.metrics import ServerMetrics
from poolstream.server.security import TLSConfig, TokenAuthenticator

import grpc

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"


def create_app(core: ServingCore, metrics: ServerMetrics | None = None, auth_tokens: tuple[str, ...] = (),
               access_log: bool = True) -> Any:
    """The ASGI app (the FastAPI app inside the front-door middleware)."""
    app = FastAPI(
        title="poolstream",
        version=poolstream.__version__,
        description="Pooling models over HTTP/JSON: OpenAI embeddings, vLLM /pooling with IO Processor "
        "plugins, and TEI-compatible routes. The gRPC API (poolstream.v1, tei.v1) is the primary contract.",
    )
    app.state.core = core
    app.state.metrics = metrics
    app.include_router(openai_routes.router)
    app.include_router(vllm_routes.router)
    app.include_router(stream_routes.router)
    app.include_router(tei_routes.router)

    @app.post("/rerank", tags=["vLLM", "TEI"],
              summary="Rerank: vLLM/Jina/Cohere form (query, documents) or TEI's (query, texts)")
    async def rerank(request: Request) -> Response:
        async def work() -> Response:
            raw = await json_body(request)
            if isinstance(raw, dict) and "texts" in raw and "documents" not in raw:
                return await tei_routes.tei_rerank(request, raw)
            return await vllm_routes.vllm_rerank(request, RerankRequest.model_validate(raw))

        return await guarded(ErrorStyle.VLLM, work)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> Response:
        # FastAPI's 422 becomes INVALID_ARGUMENT (400) in the route's own error body.
        return error_response(note_error(validation_error(exc.errors())), style_of(request.url.path))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: grpc.StatusCode.NOT_FOUND, 405: grpc.StatusCode.UNIMPLEMENTED}.get(
            exc.status_code, grpc.StatusCode.INVALID_ARGUMENT)
        reason = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 400: "INVALID_JSON"}.get(exc.status_code, "HTTP_ERROR")
        detail = exc.detail
        if exc.status_code == 400:  # FastAPI could not parse the body (not JSON, bad UTF-8, nested too deep)
            detail = "the body is not valid JSON (or is not UTF-8, or nests too deeply)"
        error = note_error(ServiceError(code, reason, f"{request.method} {request.url.path}: {detail}",
                                        [("body", str(detail))] if exc.status_code == 400 else []))
        return error_response(error, style_of(request.url.path), exc.status_code)

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    authenticator = TokenAuthenticator(list(auth_tokens)) if auth_tokens else None
    return FrontDoorMiddleware(app, max_body_bytes=core.limits.max_receive_message_bytes,
                               authenticator=authenticator, metrics=metrics, access_log=access_log)


class HttpFrontDoor:
    """uvicorn on the running event loop, on its own socket (port 0 picks one)."""

    def __init__(self, asgi_app: Any, host: str, port: int, tls: TLSConfig | None = None,
                 grace_period_s: float = 30.0, reuse_port: bool = False):
        self.host = host
        # Several front-end processes may serve one HTTP port (SO_REUSEPORT: the kernel spreads
        # connections across them), as they do the gRPC port.
        self.reuse_port = reuse_port
        self.requested_port = port
        self.port = 0
        kwargs: dict[str, Any] = {}
        if tls is not None:
            kwargs.update(ssl_certfile=tls.cert_file, ssl_keyfile=tls.key_file)
            if tls.client_ca_file:
                kwargs.update(ssl_ca_certs=tls.client_ca_file, ssl_cert_reqs=ssl.CERT_REQUIRED)
        self.config = uvicorn.Config(
            asgi_app, host=host, port=port, log_config=None, access_log=False, lifespan="off",
            timeout_graceful_shutdown=max(1, int(grace_period_s)), server_header=False,
            # Idle keep-alive connections live longer than a load balancer's idle timeout (60 s on
            # common ones): a server closing first makes the balancer answer 502 (uvicorn's default: 5 s).
            timeout_keep_alive=75,
            # No proxy headers: the peer and scheme are the socket's (a proxy in front sets its own).
            proxy_headers=False, **kwargs)
        self.server = uvicorn.Server(self.config)
        self._socket: socket.socket | None = None
        self._loop_task: asyncio.Task | None = None

    async def start(self) -> int:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted connections only for
        # sockets that say they are TCP. Without it, Nagle held every small response's body
        # until the client's delayed ACK: +40 ms per single-text call (bench/bench_http.py).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((self.host, self.requested_port))
        except OSError as e:
            sock.close()
            raise OSError(f"could not bind the HTTP port {self.host}:{self.requested_port}: {e.strerror}") from e
        sock.listen(1024)
        sock.setblocking(False)
        self._socket = sock
        self.port = sock.getsockname()[1]
        self.config.load()
        self.server.lifespan = self.config.lifespan_class(self.config)
        await self.server.startup(sockets=[sock])
        self._loop_task = asyncio.create_task(self.server.main_loop())
        scheme = "https" if self.config.ssl_certfile else "http"
        logger.info("HTTP/JSON on %s://%s:%d (OpenAPI docs at /docs)", scheme, self.host, self.port)
        return self.port

    async def stop(self, graceful: bool = True) -> None:
        if self._loop_task is None:
            return
        self.server.should_exit = True
        if not graceful:
            self.server.force_exit = True
        await self._loop_task
        self._loop_task = None
        await self.server.shutdown(sockets=[self._socket] if self._socket else None)
        self._socket = None
