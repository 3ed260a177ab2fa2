"""The HTTP door's per-request layer (pure ASGI, outermost): what gRPC's interceptors do.

For every request, before any route runs:

- **body bound**: a ``Content-Length`` over the limit (``--max-receive-message-bytes``,
  the gRPC receive limit) is refused with 413 before one byte of the body is
  read; a chunked body is counted as it arrives and refused the moment it passes
  the limit;
- **bearer token**: the gRPC tokens, required on every API route (the page,
  ``/docs``, ``/openapi.json``, ``/health`` and ``/metrics`` stay open, as health
  and reflection do on gRPC);
- **call context**: request id (``X-Request-Id`` -> ``pool-<id>``, echoed back),
  W3C ``traceparent`` (in log lines; no OpenTelemetry span yet), the same
  Prometheus series as gRPC calls (``grpc_service="http"``, ``grpc_method``
  ``POST /v1/embeddings``...), one access-log line, and the engine timing as
  response headers (TEI's ``x-queue-time``/``x-inference-time`` and the gRPC
  trailer names);
- **deadline**: ``X-Request-Timeout`` seconds (or the OpenAI SDK's
  ``X-Stainless-Timeout``, the time the client will wait) becomes the call's
  deadline, with gRPC's deadline-aware admission and engine deadlines;
- **cancellation**: a client that disconnects cancels its request's task, which
  aborts its prompts in the engine (as a cancelled gRPC call does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import grpc

from poolstream.http.errors import error_response, style_of
from poolstream.server import timing
from poolstream.server.errors import ServiceError
from poolstream.server.metrics import ServerMetrics
from poolstream.server.observability import CURRENT_CALL, CallContext, new_request_id, parse_traceparent
from poolstream.server.security import TokenAuthenticator

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

access_logger = logging.getLogger("poolstream.access")
HTTP_SERVICE = "http"  # the grpc_service label of HTTP requests in the shared metrics

# Open without a token: the page, the API docs, health and metrics.
OPEN_PATHS = {"/", "/index.html", "/favicon.ico", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json",
              "/health", "/metrics"}
OPEN_PREFIXES = ("/static/",)
# Routes whose calls are counted under their own path (others: "HTTP other", bounded cardinality).
API_PATHS = {"/v1/embeddings", "/v1/models", "/pooling", "/v1/score", "/score", "/rerank", "/v1/rerank",
             "/classify", "/embed", "/predict", "/info", "/tokenize", "/pooling/stream"}
_QUIET_PATHS = {"/health", "/metrics"}

_CODE_OF_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                   405: "UNIMPLEMENTED", 413: "RESOURCE_EXHAUSTED", 415: "INVALID_ARGUMENT",
                   422: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 501: "UNIMPLEMENTED",
                   503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def deadline_of(scope: Scope) -> float | None:
    """Seconds left for this request (None: no deadline), from the middleware's state."""
    deadline = scope.get("state", {}).get("poolstream_deadline")
    return None if deadline is None else deadline - time.monotonic()


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", ()):
        if k == name:
            return v.decode("latin-1")
    return None


def _timeout_s(scope: Scope) -> float | None:
    for name in (b"x-request-timeout", b"x-stainless-timeout"):
        value = _header(scope, name)
        if value is None:
            continue
        try:
            seconds = float(value)
        except ValueError:
            raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_TIMEOUT",
                               f"{name.decode()} must be a number of seconds, got {value!r}",
                               [(name.decode(), "not a number")]) from None
        if not math.isfinite(seconds):
            raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_TIMEOUT",
                               f"{name.decode()} must be finite, got {value!r}", [(name.decode(), "not finite")])
        return seconds
    return None


class FrontDoorMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, authenticator: TokenAuthenticator | None,
                 metrics: ServerMetrics | None, access_log: bool = True):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.authenticator = authenticator
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        method = f"{scope.get('method', 'GET')} {path}" if path in API_PATHS or path in _QUIET_PATHS else "HTTP other"
        client_id = _header(scope, b"x-request-id")
        call = CallContext(method=method, trace=parse_traceparent(_header(scope, b"traceparent")))
        call.request_id = f"pool-{client_id}" if client_id else new_request_id()
        client = scope.get("client")
        call.peer = f"{client[0]}:{client[1]}" if client else ""
        token = CURRENT_CALL.set(call)
        if self.metrics is not None:
            self.metrics.in_flight.labels(grpc_service=HTTP_SERVICE, grpc_method=method).inc()
        status = {"code": 0}

        async def send_wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                headers = list(message.get("headers", ()))
                headers.append((b"x-request-id", call.request_id.encode("latin-1")))
                for key, value in timing.trailing_metadata(call.marks):
                    headers.append((key.encode(), value.encode()))
                    tei_name = b"x-queue-time" if key == timing.QUEUE_TIME_KEY else b"x-inference-time"
                    headers.append((tei_name, value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            error = self._refusal(scope, path)
            if error is not None:
                await error_response(error[0], style_of(path), error[1])(scope, receive, send_wrapped)
                return
            await self._run(scope, receive, send_wrapped, status, call)
        finally:
            code = call.marks.get("grpc_code") or _code_name(status["code"])
            duration = time.monotonic() - call.start
            if self.metrics is not None:
                _observe(self.metrics, method, code, duration, call.reason)
            if self.access_log:
                level = logging.DEBUG if (path not in API_PATHS) else logging.INFO
                if access_logger.isEnabledFor(level):
                    access_logger.log(
                        level, "%s %s %s%s %.1fms", method if method != "HTTP other" else path,
                        status["code"], code, f" ({call.reason})" if call.reason else "", duration * 1000,
                        extra={"code": code, "reason": call.reason, "duration_ms": round(duration * 1000, 3),
                               "peer": call.peer, "http_status": status["code"]},
                    )
            with contextlib.suppress(ValueError):
                CURRENT_CALL.reset(token)

    def _refusal(self, scope: Scope, path: str) -> tuple[ServiceError, int | None] | None:
        """Refusals decided from the headers alone: auth, an over-limit body, a bad timeout."""
        open_path = path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)
        call = CURRENT_CALL.get()
        if self.authenticator is not None and not open_path:
            authorization = _header(scope, b"authorization")
            if not self.authenticator.check(authorization):
                return _noted(call, ServiceError(
                    grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED",
                    "a valid bearer token is required: send the header `Authorization: Bearer <token>`"
                    if not authorization else "the bearer token is not valid",
                    metadata={"scheme": "Bearer"},
                )), None
        if scope.get("method") == "POST" and path in API_PATHS:
            media = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
            if media != "application/json" and not media.endswith("+json"):
                return _noted(call, ServiceError(
                    grpc.StatusCode.INVALID_ARGUMENT, "UNSUPPORTED_MEDIA_TYPE",
                    f"the body must be JSON: send `Content-Type: application/json` (got {media or 'none'!r})",
                    [("content-type", "not application/json")],
                )), 415
        length = _header(scope, b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > self.max_body_bytes:
            return _noted(call, _too_large(int(length), self.max_body_bytes)), 413
        try:
            timeout = _timeout_s(scope)
        except ServiceError as e:
            return _noted(call, e), None
        if timeout is not None:
            scope.setdefault("state", {})["poolstream_deadline"] = time.monotonic() + timeout
        return None

    async def _run(self, scope: Scope, receive: Receive, send: Send, status: dict[str, int],
                   call: CallContext) -> None:
        """Read the body (bounded), then run the app; a disconnect cancels it."""
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_body_bytes:
                await error_response(_noted(call, _too_large(size, self.max_body_bytes)),
                                     style_of(scope.get("path", "")), 413)(scope, receive, send)
                return
            chunks.append(body)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        chunks.clear()
        disconnected = asyncio.Event()
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    disconnected.set()
                    return

        app = asyncio.ensure_future(self.app(scope, replay, send))
        watcher = asyncio.ensure_future(watch())
        try:
            await asyncio.wait({app, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not app.done():
                # The client went away: end the request's work now (its prompts are aborted).
                app.cancel()
                call.marks.setdefault("grpc_code", "CANCELLED")
                status["code"] = status["code"] or 499
                with contextlib.suppress(asyncio.CancelledError):
                    await app
            else:
                app.result()
        finally:
            watcher.cancel()
            if not app.done():
                app.cancel()


def _observe(metrics: ServerMetrics, method: str, code: str, duration: float, reason: str) -> None:
    """The gRPC calls' series, with grpc_service "http" and the route as grpc_method."""
    labels = {"grpc_service": HTTP_SERVICE, "grpc_method": method}
    metrics.in_flight.labels(**labels).dec()
    metrics.requests.labels(**labels, grpc_code=code).inc()
    metrics.duration.labels(**labels).observe(duration)
    if code != "OK":
        metrics.errors.labels(**labels, grpc_code=code, reason=reason or "-").inc()


def _noted(call: CallContext | None, error: ServiceError) -> ServiceError:
    if call is not None:
        call.reason = error.reason
        call.marks["grpc_code"] = error.code.name
    return error


def _too_large(size: int, limit: int) -> ServiceError:
    return ServiceError(
        grpc.StatusCode.RESOURCE_EXHAUSTED, "BODY_TOO_LARGE",
        f"the request body has {size} bytes or more; at most {limit} are accepted (--max-receive-message-bytes)",
        metadata={"limit_bytes": str(limit)},
    )


def _code_name(status: int) -> str:
    if 200 <= status < 400:
        return "OK"
    return _CODE_OF_STATUS.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT")

