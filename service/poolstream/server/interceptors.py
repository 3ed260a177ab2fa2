"""Server interceptors: per-call context, metrics, access logs, malformed messages, auth.

``ObservabilityInterceptor`` (outermost) gives every call a
:class:`~poolstream.server.observability.CallContext` (request id, W3C trace
context, an OpenTelemetry span when the ``otel`` extra is installed), counts
it in the Prometheus metrics, writes one access-log line, and turns request
bytes that do not decode as the method's message into INVALID_ARGUMENT
``MALFORMED_MESSAGE`` (gRPC's own answer would be UNKNOWN without details).

``AuthInterceptor`` requires ``authorization: Bearer <token>`` on
PoolingService methods only; health and reflection stay open.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from typing import Any

import grpc

from poolstream.request_ids import MAX_REQUEST_ID_CHARS, RequestIds
from poolstream.server.errors import ServiceError, abort
from poolstream.server.metrics import ServerMetrics
from poolstream.server.observability import (
    CURRENT_CALL,
    CallContext,
    TraceContext,
    choose_request_id,
    end_span,
    finish_server_span,
    metadata_value,
    parse_traceparent,
    span_ids_of,
    start_server_span,
)
from poolstream.server import timing
from poolstream.server.security import TokenAuthenticator

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("poolstream.access")

POOLING_PREFIX = "/poolstream.v1.PoolingService/"


class _Malformed:
    """Stands in for a request message whose bytes did not decode."""

    __slots__ = ("error",)

    def __init__(self, error: str):
        self.error = error


def _safe_deserializer(inner):
    def deserialize(data: bytes):
        try:
            return inner(data)
        except Exception as e:  # noqa: BLE001  DecodeError, and anything else a parser may raise
            return _Malformed(f"{type(e).__name__}: {e}")

    return deserialize


def _malformed_error(method: str, bad: _Malformed) -> ServiceError:
    return ServiceError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "MALFORMED_MESSAGE",
        f"the request is not a valid {method.rsplit('/', 1)[-1]} request message ({bad.error})",
        [("", "the request bytes do not decode as the method's protobuf message")],
    )


def _final_code(context: grpc.aio.ServicerContext, exc: BaseException | None,
                client_gone: bool = False) -> str:
    if client_gone:
        return "CANCELLED"
    if isinstance(exc, asyncio.CancelledError):
        remaining = context.time_remaining()
        return "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"
    code = context.code()
    if code is None:
        return "OK" if exc is None else "UNKNOWN"
    if isinstance(code, grpc.StatusCode):
        return code.name
    return next((c.name for c in grpc.StatusCode if c.value[0] == code), str(code))


def _bad_request_id(call: CallContext) -> ServiceError:
    return ServiceError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST_ID",
        f"the request id has {len(call.request_id)} characters; at most {MAX_REQUEST_ID_CHARS}",
        [("request_id", f"at most {MAX_REQUEST_ID_CHARS} characters (the field or x-request-id)")],
    )


def _too_large(size: int, limit: int) -> ServiceError:
    return ServiceError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "RESPONSE_TOO_LARGE",
        f"the response message has {size} bytes, over this server's --max-send-message-bytes "
        f"({limit}); ask for less per call (fewer prompts, a smaller output_dtype, no "
        "include_float_values) or use the streaming method",
        metadata={"size_bytes": str(size), "max_send_message_bytes": str(limit)},
    )


class ObservabilityInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: ServerMetrics | None = None, access_log: bool = True,
                 max_send_message_bytes: int | None = None):
        self.metrics = metrics
        self.access_log = access_log
        # Responses over it are refused here with details (gRPC's own check fails the call
        # after the handler returned, so it was logged and counted as OK).
        self.max_send = max_send_message_bytes
        self.request_ids = RequestIds()  # ids of PoolingService calls in flight (request_ids.py)
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming:
            return handler  # unknown method (UNIMPLEMENTED), or reflection's bidi stream
        # Wrapped handlers are built once per (method, handler) and reused: the
        # per-call data (metadata) is read from the call's context instead.
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap_handler(handler, method)
        if len(self._wrapped) < 256:  # bounded: one entry per method of this server
            self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap_handler(self, handler, method: str):
        deserializer = handler.request_deserializer
        if deserializer is not None:
            deserializer = _safe_deserializer(deserializer)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, method),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, method),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    # -- per-call bookkeeping ------------------------------------------------
    def _begin(self, method: str, metadata, request: Any, context) -> CallContext:
        call = CallContext(method=method, trace=parse_traceparent(metadata_value(metadata, "traceparent")))
        client_id = getattr(request, "request_id", "") if not isinstance(request, _Malformed) else ""
        call.request_id = choose_request_id(client_id, metadata)
        if method.startswith(POOLING_PREFIX) and len(call.request_id) <= MAX_REQUEST_ID_CHARS:
            # Unique among calls in flight: a reused id never reaches another call's prompts.
            call.request_id = self.request_ids.claim(call.request_id)
            call.marks["id_claimed"] = True
        # The peer is for the access log alone: read only when a line will be written, and
        # here, while the call is live. Read after a streaming call has ended (cancelled, or
        # closed from another task), grpc's context.peer() crashed the process (SIGSEGV).
        if self.access_log and access_logger.isEnabledFor(_access_level(method)):
            try:
                call.peer = context.peer() or ""
            except Exception:  # noqa: BLE001
                call.peer = ""
        if self.metrics is not None:
            self.metrics.in_flight_of(method).inc()
        return call

    def _end(self, call: CallContext, context, exc: BaseException | None) -> None:
        if call.marks.get("id_claimed"):
            self.request_ids.release(call.request_id)
        code = _final_code(context, exc, bool(call.marks.get("client_gone")))
        duration = time.monotonic() - call.start
        end_span(call.span, code, call.reason)
        if self.metrics is not None:
            self.metrics.in_flight_of(call.method).dec()
            self.metrics.observe_call(call.method, code, duration, call.reason)
        if self.access_log:
            level = _access_level(call.method)
            if access_logger.isEnabledFor(level):
                access_logger.log(
                    level,
                    "%s %s%s %.1fms",
                    call.method, code, f" ({call.reason})" if call.reason else "", duration * 1000,
                    extra={"code": code, "reason": call.reason, "duration_ms": round(duration * 1000, 3),
                           "peer": call.peer},
                )

    def _enter(self, method: str, request: Any, context) -> tuple[CallContext, Any, Any]:
        """Per-call setup: (call, context-variable token, span token)."""
        metadata = tuple(context.invocation_metadata() or ())
        call = self._begin(method, metadata, request, context)
        token = CURRENT_CALL.set(call)
        span, span_token = start_server_span(method, metadata)
        call.span = span
        ids = span_ids_of(span)
        if ids is not None and call.trace is not None:
            # Logs show the caller's trace id and this server span's id.
            call.trace = TraceContext(ids[0], ids[1], call.trace.flags, call.trace.version)
        return call, token, span_token

    def _exit(self, call: CallContext, token, span_token, context, exc: BaseException | None) -> None:
        self._end(call, context, exc)
        finish_server_span(call.span, span_token)
        _reset(token)

    def _wrap_unary(self, behavior, method):
        async def unary(request, context):
            call, token, span_token = self._enter(method, request, context)
            exc: BaseException | None = None
            try:
                if isinstance(request, _Malformed):
                    await abort(context, _malformed_error(method, request))
                if len(call.request_id) > MAX_REQUEST_ID_CHARS:
                    await abort(context, _bad_request_id(call))
                response = await behavior(request, context)
                await self._check_size(response, context)
                _report_timing(call, context)
                return response
            except BaseException as e:
                exc = e
                raise
            finally:
                self._exit(call, token, span_token, context, exc)

        return unary

    def _wrap_stream(self, behavior, method):
        is_gen = inspect.isasyncgenfunction(behavior)

        # A coroutine that writes each response itself (context.write) rather than an async
        # generator that grpc writes from: a write to a client that has gone (it reset the
        # stream, e.g. on a message over its receive limit) then fails here, where it is
        # recorded as CANCELLED, instead of inside grpc, which logged an ERROR traceback and
        # closed the generator (recorded as UNKNOWN).
        async def stream(request, context):
            call, token, span_token = self._enter(method, request, context)
            exc: BaseException | None = None
            responses = None
            try:
                if isinstance(request, _Malformed):
                    await abort(context, _malformed_error(method, request))
                if len(call.request_id) > MAX_REQUEST_ID_CHARS:
                    await abort(context, _bad_request_id(call))
                if is_gen:
                    responses = behavior(request, context)
                else:
                    result = behavior(request, context)
                    if inspect.isawaitable(result):
                        result = await result
                    responses = result if result is not None and hasattr(result, "__aiter__") else None
                if responses is not None:
                    async for response in responses:
                        await self._check_size(response, context)
                        if not await _write(context, response):
                            call.marks["client_gone"] = True
                            return
                _report_timing(call, context)
            except BaseException as e:
                exc = e
                raise
            finally:
                if responses is not None and hasattr(responses, "aclose"):
                    await responses.aclose()  # a call that ends early aborts its prompts now
                self._exit(call, token, span_token, context, exc)

        return stream

    def _check_size(self, response: Any, context):
        """Awaitable: abort the call with RESPONSE_TOO_LARGE if ``response`` is over the send limit."""
        limit = self.max_send
        if limit is None or response is None:
            return _noop()
        size = response.ByteSize()
        if size <= limit:
            return _noop()
        return abort(context, _too_large(size, limit))


async def _noop() -> None:
    return None


async def _write(context, response) -> bool:
    """Send one streamed response; False when the client has gone (the stream is reset)."""
    try:
        await context.write(response)
        return True
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - grpc's ExecuteBatchError (internal type): the stream is dead
        return False


class ClientGoneFilter(logging.Filter):
    """grpc's own ERROR traceback for a final send that failed because the client had reset
    the stream (a unary answer over the client's receive limit, or a client that went away
    as the answer left) becomes one INFO line: nothing failed on the server. Streamed
    answers never reach it (``_write`` records them as CANCELLED)."""

    _PREFIX = "ExecuteBatchError raised in core by servicer method"

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and str(record.msg).startswith(self._PREFIX):
            method = record.getMessage()[len(self._PREFIX):].strip(" []")
            record.msg = ("the client reset the stream before the answer to %s was sent "
                          "(its receive limit, or it went away)")
            record.args = (method,)
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info, record.exc_text = None, None
        return True


def install_client_gone_filter() -> None:
    grpc_logger = logging.getLogger("grpc._cython.cygrpc")
    if not any(isinstance(f, ClientGoneFilter) for f in grpc_logger.filters):
        grpc_logger.addFilter(ClientGoneFilter())


def _access_level(method: str) -> int:
    """Access-log level: PoolingService calls at INFO, health and reflection at DEBUG."""
    return logging.INFO if method.startswith(POOLING_PREFIX) else logging.DEBUG


def _report_timing(call: CallContext, context) -> None:
    """A call about to end OK: its engine timing (if it ran prompts) and its request id as trailers."""
    if context.code() in (None, grpc.StatusCode.OK):
        trailers = timing.trailing_metadata(call.record)
        if call.marks.get("id_claimed") and call.request_id.isascii() and call.request_id.isprintable():
            # The id the call ran under (made unique if the client's was in flight).
            trailers = (*trailers, ("x-request-id", call.request_id))
        if trailers:
            context.set_trailing_metadata(trailers)


def _reset(token) -> None:
    try:
        CURRENT_CALL.reset(token)
    except ValueError:  # reset from another context (a generator closed elsewhere): harmless
        pass


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """UNAUTHENTICATED (ErrorInfo reason UNAUTHENTICATED) for PoolingService calls without a valid token."""

    def __init__(self, authenticator: TokenAuthenticator, protected_prefix: str = POOLING_PREFIX):
        self.authenticator = authenticator
        self.prefix = protected_prefix

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        if not method.startswith(self.prefix):
            return await continuation(handler_call_details)
        authorization = metadata_value(handler_call_details.invocation_metadata, "authorization")
        if self.authenticator.check(authorization):
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        error = ServiceError(
            grpc.StatusCode.UNAUTHENTICATED,
            "UNAUTHENTICATED",
            "a valid bearer token is required: send the metadata `authorization: Bearer <token>`"
            if not authorization else "the bearer token is not valid",
            metadata={"scheme": "Bearer"},
        )

        # The request is not parsed (raw bytes): nothing of it reaches the server's code.
        if handler.unary_unary is not None:
            async def deny_unary(request, context):
                await abort(context, error)

            return grpc.unary_unary_rpc_method_handler(deny_unary)
        if handler.unary_stream is not None:
            async def deny_stream(request, context):
                await abort(context, error)
                yield  # pragma: no cover

            return grpc.unary_stream_rpc_method_handler(deny_stream)
        if handler.stream_unary is not None:
            async def deny_stream_unary(request_iterator, context):
                await abort(context, error)

            return grpc.stream_unary_rpc_method_handler(deny_stream_unary)

        async def deny_bidi(request_iterator, context):
            await abort(context, error)
            yield  # pragma: no cover

        return grpc.stream_stream_rpc_method_handler(deny_bidi)
