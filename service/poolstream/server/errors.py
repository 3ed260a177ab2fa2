"""One table from exceptions to gRPC statuses with ``google.rpc.Status`` details.

Every error a client sees carries an ``ErrorInfo`` (domain ``poolstream.dev``
and a reason from the table in ``pooling_service.proto``), plus
``BadRequest`` field violations or ``RetryInfo`` where they apply.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from poolstream.engine.errors import (
    DeadlineExceededError,
    EngineDeadError,
    EngineError,
    EngineOverloadedError,
    InvalidPromptError,
    NonFiniteInputError,
    PromptTooLargeError,
    RequestAbortedError,
)
from poolstream.plugins.io_processors.pipeline import PayloadError, PluginFailedError, TooManyPromptsError
from poolstream.prompt_costs import RequestTooLargeError
from poolstream.server.observability import current_call

logger = logging.getLogger(__name__)

DOMAIN = "poolstream.dev"

# Bounds on what a status carries (characters). A status travels in the trailers, which
# clients cap (grpc-core: 8 KiB of headers by default; the details travel base64-encoded):
# an error that echoes a client string (a path, a JSON key, a type URL) unbounded made
# the client see RESOURCE_EXHAUSTED without details instead of the real error.
MAX_MESSAGE_CHARS = 1024
MAX_FIELD_CHARS = 256
MAX_DESCRIPTION_CHARS = 512
MAX_VIOLATIONS = 8
MAX_METADATA_CHARS = 256


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, saying how long it was."""
    if len(text) <= limit:
        return text
    note = f"...[{len(text)} chars]"
    return text[: max(0, limit - len(note))] + note


def echo(value: object, limit: int = 64) -> str:
    """A client-sent string for an error message: repr'd (control characters escaped) and clipped."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        return repr(text[:limit]) + f"...[{len(text)} chars]"
    return repr(text)


@dataclass
class ServiceError(Exception):
    """An error with its gRPC code, ErrorInfo reason and optional details."""

    code: grpc.StatusCode
    reason: str
    message: str
    field_violations: Sequence[tuple[str, str]] = ()  # (field path, description)
    retry_after_s: float | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message


def invalid_argument(reason: str, message: str, field_path: str | None = None) -> ServiceError:
    violations = [(field_path, message)] if field_path else []
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, reason, message, violations)


def with_field(error: ServiceError, field_path: str) -> ServiceError:
    """An INVALID_ARGUMENT without field violations gets one for ``field_path`` (BadRequest everywhere)."""
    if error.code != grpc.StatusCode.INVALID_ARGUMENT or error.field_violations:
        return error
    return replace(error, field_violations=[(field_path, error.message)])


def to_service_error(exc: BaseException) -> ServiceError:
    """Map any exception to a ServiceError, following the documented table."""
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, EngineOverloadedError):
        return ServiceError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "QUEUE_FULL",
            str(exc) or "The engine queue is full; retry later.",
            retry_after_s=exc.retry_after_s,
        )
    if isinstance(exc, PromptTooLargeError):
        return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "PROMPT_TOO_LARGE", str(exc))
    if isinstance(exc, NonFiniteInputError):
        return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "NON_FINITE_INPUT", str(exc))
    if isinstance(exc, InvalidPromptError):
        return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PROMPT", str(exc))
    if isinstance(exc, RequestAbortedError):
        return ServiceError(grpc.StatusCode.CANCELLED, "ABORTED", str(exc) or "the request was aborted")
    if isinstance(exc, DeadlineExceededError):
        return ServiceError(grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED", str(exc))
    if isinstance(exc, EngineDeadError):
        return ServiceError(grpc.StatusCode.UNAVAILABLE, "ENGINE_DEAD", str(exc))
    if isinstance(exc, EngineError):  # the model failed on this prompt's batch (logged by the engine)
        return ServiceError(grpc.StatusCode.INTERNAL, "MODEL_FAILED", str(exc))
    if isinstance(exc, TooManyPromptsError):
        return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "TOO_MANY_PROMPTS", str(exc), [("data", str(exc))])
    if isinstance(exc, DecodeError):  # client bytes inside a message (an Any's value) that do not parse
        return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAYLOAD", f"cannot decode: {exc}")
    if isinstance(exc, RequestTooLargeError):
        return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_TOO_LARGE", str(exc), [(exc.field, str(exc))])
    if isinstance(exc, PayloadError):
        # A plugin's ValueError may carry its own ErrorInfo reason and metadata (what was
        # expected and seen): `reason` (UPPER_SNAKE_CASE) and `details` (str -> str) attributes.
        cause = exc.__cause__
        reason = getattr(cause, "reason", None)
        meta = getattr(cause, "details", None)
        return ServiceError(
            grpc.StatusCode.INVALID_ARGUMENT,
            reason if isinstance(reason, str) and re.fullmatch(r"[A-Z][A-Z0-9_]{0,62}", reason) else "INVALID_PAYLOAD",
            str(exc), [("data", str(exc))],
            metadata={str(k): str(v) for k, v in meta.items()} if isinstance(meta, Mapping) else {},
        )
    if isinstance(exc, PluginFailedError):
        logger.error("Plugin hook failed: %s", exc, exc_info=exc.__cause__)
        return ServiceError(grpc.StatusCode.INTERNAL, f"{exc.stage.upper()}_FAILED", f"The plugin's {exc}")
    logger.exception("Unexpected error", exc_info=exc)
    return ServiceError(grpc.StatusCode.INTERNAL, "INTERNAL", f"{type(exc).__name__}: {exc}")


def to_status_proto(error: ServiceError) -> status_pb2.Status:
    """Build the ``google.rpc.Status`` (code, message, details) for an error."""
    details = []
    metadata = {clip(str(k), 64): clip(str(v), MAX_METADATA_CHARS) for k, v in list(error.metadata.items())[:16]}
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN, metadata=metadata)
    details.append(info)
    if error.field_violations:
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=clip(f, MAX_FIELD_CHARS), description=clip(d, MAX_DESCRIPTION_CHARS))
                    for f, d in list(error.field_violations)[:MAX_VIOLATIONS]
                ]
            )
        )
    if error.retry_after_s is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(max(error.retry_after_s, 0.001) * 1e9))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    packed = []
    for d in details:
        a = any_pb2.Any()
        a.Pack(d)
        packed.append(a)
    return status_pb2.Status(code=error.code.value[0], message=clip(error.message, MAX_MESSAGE_CHARS), details=packed)


async def abort(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    """End the call with the mapped status; never returns."""
    error = to_service_error(exc)
    call = current_call()
    if call is not None:  # for the access log and the errors metric
        call.reason = error.reason
    await context.abort_with_status(rpc_status.to_status(to_status_proto(error)))
