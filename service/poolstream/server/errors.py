"""The gRPC side of the error table: a ``ServingError`` as ``google.rpc.Status`` with details.

The table itself (exception -> code, reason) is transport-neutral: ``serving/errors.py``.

Every error a client sees carries an ``ErrorInfo`` (domain ``poolstream.dev``
and a reason from the table in ``pooling_service.proto``), plus
``BadRequest`` field violations or ``RetryInfo`` where they apply.
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from poolstream.serving.errors import (
    DOMAIN,
    Code,
    ServingError,
    invalid_argument,
    to_serving_error,
    with_field,
)
from poolstream.server.observability import current_call

logger = logging.getLogger(__name__)

# The gRPC door's names for the serving core's error type and table (serving/errors.py).
ServiceError = ServingError
to_service_error = to_serving_error

__all__ = ["DOMAIN", "Code", "ServiceError", "ServingError", "abort", "grpc_code", "invalid_argument",
           "to_service_error", "to_serving_error", "to_status_proto", "with_field"]

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


def grpc_code(error: ServingError) -> grpc.StatusCode:
    """The ``grpc.StatusCode`` of an error's ``Code`` (same member names)."""
    return grpc.StatusCode[error.code.name]


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
    return status_pb2.Status(code=error.code.grpc, message=clip(error.message, MAX_MESSAGE_CHARS), details=packed)


async def abort(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    """End the call with the mapped status; never returns."""
    error = to_service_error(exc)
    call = current_call()
    if call is not None:  # for the access log and the errors metric
        call.reason = error.reason
    await context.abort_with_status(rpc_status.to_status(to_status_proto(error)))
