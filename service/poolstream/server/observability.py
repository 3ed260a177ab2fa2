"""Per-call context for logs and traces: request ids, W3C trace context, log filter.

Every gRPC call runs with a :class:`CallContext` in the ``CURRENT_CALL``
context variable (set by :class:`poolstream.server.interceptors.ObservabilityInterceptor`).
It travels with the call into the tasks and worker threads it starts
(``asyncio.create_task`` and ``asyncio.to_thread`` copy context variables),
so any log record emitted on behalf of the call carries its ``request_id``,
``trace_id`` and ``span_id`` (see :class:`RequestContextFilter`).

The trace context comes from the ``traceparent`` metadata header (W3C Trace
Context). It is parsed here in pure Python, so log lines are correlated with
the caller's trace even without OpenTelemetry. When the optional extra
``otel`` is installed (``pip install 'poolstream[otel]'``), each call also
runs inside an OpenTelemetry server span whose parent is the caller's span;
exporting spans is left to the operator's OpenTelemetry SDK configuration.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

try:  # the optional `otel` extra
    from opentelemetry import context as _otel_context
    from opentelemetry import propagate as _otel_propagate
    from opentelemetry import trace as _otel_trace

    HAVE_OTEL = True
except ImportError:  # pragma: no cover - depends on the environment
    _otel_context = None  # type: ignore[assignment]
    _otel_propagate = None  # type: ignore[assignment]
    _otel_trace = None  # type: ignore[assignment]
    HAVE_OTEL = False


@dataclass(frozen=True)
class TraceContext:
    """A parsed W3C ``traceparent``: 32 hex trace id, 16 hex parent span id, flags."""

    trace_id: str
    span_id: str
    flags: int
    version: int = 0

    @property
    def sampled(self) -> bool:
        return bool(self.flags & 0x01)


_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")


def parse_traceparent(value: str | bytes | None) -> TraceContext | None:
    """Parse a W3C Trace Context ``traceparent`` header; None when absent or invalid.

    Follows the spec's rules: lower-case hex only; version ``ff`` is invalid;
    all-zero trace or span ids are invalid; version 00 has exactly four
    fields, later versions may append more (ignored).
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    value = value.strip()
    m = _TRACEPARENT.match(value)
    if m is None:
        return None
    version, trace_id, span_id, flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return TraceContext(trace_id=trace_id, span_id=span_id, flags=int(flags, 16), version=int(version, 16))


@dataclass
class CallContext:
    """What is known about the current call; mutable so handlers can add to it."""

    method: str
    request_id: str = ""
    trace: TraceContext | None = None
    peer: str = ""
    start: float = field(default_factory=time.monotonic)
    # The ErrorInfo reason of the status the call ended with (set by errors.abort).
    reason: str = ""
    # The serving core's progress record of the call (serving/context.py: CallRecord), shared
    # by the servicer; the timing trailers read it. None for calls that run no prompts.
    record: Any = None
    # Free-form notes of the door about the call (the HTTP door's gRPC-equivalent code).
    marks: dict[str, Any] = field(default_factory=dict)
    # The OpenTelemetry server span (otel extra only).
    span: Any = None

    @property
    def trace_id(self) -> str:
        return self.trace.trace_id if self.trace else ""

    @property
    def span_id(self) -> str:
        return self.trace.span_id if self.trace else ""


CURRENT_CALL: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar("poolstream_call", default=None)


def current_call() -> CallContext | None:
    return CURRENT_CALL.get()


def new_request_id() -> str:
    return f"pool-{uuid.uuid4().hex}"


def choose_request_id(client_id: str, metadata: Iterable[Any] | None) -> str:
    """The request id: the client's field, else ``pool-<x-request-id>``, else ``pool-<uuid4 hex>``."""
    if client_id:
        return client_id
    header = metadata_value(metadata, "x-request-id")
    return f"pool-{header}" if header else new_request_id()


def metadata_value(metadata: Iterable[Any] | None, key: str) -> str | None:
    """The first value of ``key`` in gRPC metadata (tuples or ``_Metadatum``)."""
    for item in metadata or ():
        k, v = item[0], item[1]
        if k == key:
            return v.decode("latin-1") if isinstance(v, bytes) else v
    return None


def split_method(method: str) -> tuple[str, str]:
    """``/package.Service/Method`` -> (``package.Service``, ``Method``); a path that is not
    of that form is its own service name with an empty method."""
    service, sep, name = method.lstrip("/").rpartition("/")
    return (service, name) if sep else (method, "")


# Status codes that make a SERVER span an error, per the OpenTelemetry RPC semantic
# conventions for gRPC: a server span is Error only when the server failed. Client-side
# errors (INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED, CANCELLED, UNAUTHENTICATED,
# FAILED_PRECONDITION...) leave it Unset: the server did its job by refusing them.
SERVER_ERROR_CODES = frozenset({"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE",
                                "DATA_LOSS"})
_STATUS_NUMBERS: dict[str, int] = {}

_server_tracer: Any = None


def start_server_span(method: str, metadata: Iterable[Any] | None) -> tuple[Any, Any]:
    """An OpenTelemetry SERVER span parented on the caller's ``traceparent``, made current:
    (span, context token), or (None, None) without otel. ``finish_server_span`` ends it.

    Named and attributed per the RPC semantic conventions: span name
    ``package.Service/Method`` (the path without its leading slash), ``rpc.system``
    ``grpc``, ``rpc.service``, ``rpc.method``; ``end_span`` adds ``rpc.grpc.status_code``.

    What ``start_as_current_span`` does (start the span, make it current, end it on
    exit), in two plain calls and with the tracer fetched once: on every call of a
    ~10 ms request its context-manager layers cost tens of microseconds.
    """
    if not HAVE_OTEL:
        return None, None
    global _server_tracer
    if _server_tracer is None:
        # A ProxyTracer while no SDK provider is set: it follows one set later.
        _server_tracer = _otel_trace.get_tracer("poolstream.server")
    carrier = {}
    for item in metadata or ():
        k, v = item[0], item[1]
        if k in ("traceparent", "tracestate", "baggage"):
            carrier[k] = v.decode("latin-1") if isinstance(v, bytes) else v
    service, name = split_method(method)
    span = _server_tracer.start_span(
        method.lstrip("/"), context=_otel_propagate.extract(carrier), kind=_otel_trace.SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
    )
    return span, _otel_context.attach(_otel_trace.set_span_in_context(span))


def finish_server_span(span: Any, token: Any) -> None:
    """Leave and end the span of ``start_server_span``."""
    if token is not None:
        _detach(token)
    if span is not None:
        span.end()


def _detach(token: Any) -> None:
    """``opentelemetry.context.detach`` without its error log for a token from another
    context: a streaming call's generator closed from another task (a cancelled call)
    cannot reset the context it entered, and that is harmless (the task's context ends
    with it). otel's own ``detach`` logs "Failed to detach context" at ERROR then."""
    runtime = getattr(_otel_context, "_RUNTIME_CONTEXT", None)
    if runtime is None:  # another otel layout: its public detach (which may log)
        _otel_context.detach(token)
        return
    try:
        runtime.detach(token)
    except (ValueError, RuntimeError):
        pass


def status_number(code: str) -> int:
    """The numeric gRPC status of a ``grpc.StatusCode`` name (2, UNKNOWN, for an unknown name)."""
    number = _STATUS_NUMBERS.get(code)
    if number is None:
        import grpc

        number = next((c.value[0] for c in grpc.StatusCode if c.name == code), 2)
        _STATUS_NUMBERS[code] = number
    return number


def end_span(span: Any, code: str, reason: str) -> None:
    """Record the call's gRPC status on its span: ``rpc.grpc.status_code`` always, the span
    status Error only for the server-error codes of the semantic conventions
    (``SERVER_ERROR_CODES``), then with the code as ``error.type`` and the ErrorInfo reason
    in its description; the reason is also ``poolstream.error_reason`` on any failed call."""
    if span is None or not HAVE_OTEL or not span.is_recording():
        return
    span.set_attribute("rpc.grpc.status_code", status_number(code))
    if reason:
        span.set_attribute("poolstream.error_reason", reason)
    if code in SERVER_ERROR_CODES:
        span.set_attribute("error.type", code)
        span.set_status(_otel_trace.Status(_otel_trace.StatusCode.ERROR, f"{code} {reason}".strip()))


def span_ids_of(span: Any) -> tuple[str, str] | None:
    """(trace id, span id) hex of a recording OpenTelemetry span, else None."""
    if span is None:
        return None
    sc = span.get_span_context()
    if not sc.is_valid:
        return None
    return f"{sc.trace_id:032x}", f"{sc.span_id:016x}"


# -- logging -------------------------------------------------------------------


class RequestContextFilter(logging.Filter):
    """Adds ``request_id``, ``trace_id``, ``span_id`` and ``rpc`` to every record.

    Empty strings outside a call, so format strings may always use them.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        call = CURRENT_CALL.get()
        if call is None:
            record.request_id = getattr(record, "request_id", "")
            record.trace_id = getattr(record, "trace_id", "")
            record.span_id = getattr(record, "span_id", "")
            record.rpc = getattr(record, "rpc", "")
        else:
            record.request_id = call.request_id
            record.trace_id = call.trace_id
            record.span_id = call.span_id
            record.rpc = call.method
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, request_id, trace_id, span_id, rpc, exc."""

    _EXTRA = ("request_id", "trace_id", "span_id", "rpc", "code", "reason", "duration_ms", "peer")

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in self._EXTRA:
            value = getattr(record, key, None)
            if value not in (None, ""):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s %(trace_id)s]: %(message)s"

# Control characters (and the Unicode line and paragraph separators) that would start a new
# line or rewrite a terminal, escaped in text logs.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_log_field(text: str) -> str:
    """``text`` with control characters as escapes (``\\n``, ``\\x1b``): one record, one line."""
    if not _CONTROL.search(text):
        return text
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class TextFormatter(logging.Formatter):
    """TEXT_FORMAT with every client-influenced field escaped: a newline in a request id
    (or in a message that quotes client input) cannot forge a log line. The traceback of
    an exception still spans its lines, after the escaped message."""

    def format(self, record: logging.LogRecord) -> str:
        saved = record.msg, record.args, getattr(record, "request_id", "")
        record.msg = escape_log_field(record.getMessage())
        record.args = None
        record.request_id = escape_log_field(str(saved[2]))
        try:
            return super().format(record)
        finally:
            record.msg, record.args, record.request_id = saved


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Root logging for ``poolstream serve``: text or JSON lines, with the call context filter."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestContextFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter(TEXT_FORMAT))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
