"""Errors on the HTTP door: the gRPC error table, written as each API's own error body.

The status is the HTTP equivalent of the gRPC code (google.rpc.Code's
mapping: INVALID_ARGUMENT 400, UNAUTHENTICATED 401, RESOURCE_EXHAUSTED 429,
DEADLINE_EXCEEDED 504, UNAVAILABLE 503, ...). The body follows the API the
route belongs to:

- OpenAI (``/v1/...``): ``{"error": {"message", "type", "param", "code"}}``,
  ``type`` one of OpenAI's (``invalid_request_error``, ``rate_limit_error``...),
  ``code`` the ErrorInfo reason, ``param`` the first field violation;
- vLLM (``/pooling``, ``/classify``, ``/rerank`` with ``documents``):
  vLLM's ``ErrorResponse``, ``{"error": {"message", "type", "param", "code"}}``
  with ``type`` e.g. ``BadRequestError`` and ``code`` the HTTP status;
- TEI (``/embed``, ``/predict``, ``/rerank`` with ``texts``, ...):
  ``{"error", "error_type"}``, ``error_type`` one of TEI's (``Validation``,
  ``Overloaded``, ``Unhealthy``, ``Backend``, ``Empty``).

Every body also carries poolstream's ``reason`` (and the field violations),
and overload answers carry ``Retry-After`` (RetryInfo's delay, rounded up).
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Any

import grpc
from fastapi.responses import JSONResponse

from poolstream.server.errors import DOMAIN, ServiceError

HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    501: "not_implemented_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}

_VLLM_TYPES = {
    400: "BadRequestError",
    401: "UnauthorizedError",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    413: "PayloadTooLargeError",
    429: "TooManyRequestsError",
    499: "ClientClosedRequestError",
    501: "NotImplementedError",
    503: "ServiceUnavailableError",
    504: "GatewayTimeoutError",
}

_TEI_TYPES = {
    grpc.StatusCode.INVALID_ARGUMENT: "Validation",
    grpc.StatusCode.FAILED_PRECONDITION: "Validation",
    grpc.StatusCode.OUT_OF_RANGE: "Validation",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "Overloaded",
    grpc.StatusCode.UNAVAILABLE: "Unhealthy",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthorized",
    grpc.StatusCode.UNIMPLEMENTED: "Validation",
    grpc.StatusCode.DEADLINE_EXCEEDED: "Backend",
    grpc.StatusCode.CANCELLED: "Backend",
}


class ErrorStyle(str, Enum):
    """Which API's error body a route answers with."""

    OPENAI = "openai"
    VLLM = "vllm"
    TEI = "tei"


def http_status(error: ServiceError) -> int:
    return HTTP_STATUS.get(error.code, 500)


def error_body(error: ServiceError, style: ErrorStyle, status: int | None = None) -> dict[str, Any]:
    status = status or http_status(error)
    param = error.field_violations[0][0] if error.field_violations else None
    extra: dict[str, Any] = {"reason": error.reason, "domain": DOMAIN}
    if error.field_violations:
        extra["field_violations"] = [{"field": f, "description": d} for f, d in error.field_violations]
    if error.retry_after_s is not None:
        extra["retry_after_s"] = round(error.retry_after_s, 3)
    if error.metadata:
        extra["metadata"] = dict(error.metadata)
    if style is ErrorStyle.TEI:
        fallback = "Backend" if status >= 500 else "Validation"
        return {"error": error.message, "error_type": _TEI_TYPES.get(error.code, fallback), **extra}
    if style is ErrorStyle.VLLM:
        kind = _VLLM_TYPES.get(status, "InternalServerError" if status >= 500 else "BadRequestError")
        return {"error": {"message": error.message, "type": kind, "param": param, "code": status, **extra}}
    kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": error.message, "type": kind, "param": param, "code": error.reason, **extra}}


def error_response(
    error: ServiceError, style: ErrorStyle, status: int | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    status = status or http_status(error)
    out = dict(headers or {})
    if error.retry_after_s is not None:
        out["Retry-After"] = str(max(1, math.ceil(error.retry_after_s)))
    if error.code == grpc.StatusCode.UNAUTHENTICATED:
        out["WWW-Authenticate"] = "Bearer"
    return JSONResponse(error_body(error, style, status), status_code=status, headers=out)


def style_of(path: str, body_hint: Any = None) -> ErrorStyle:
    """The error style of a request path (``/rerank`` is TEI's or vLLM's by its body)."""
    if path.startswith("/v1/"):
        return ErrorStyle.VLLM if path in ("/v1/score", "/v1/rerank") else ErrorStyle.OPENAI
    if path in ("/pooling", "/classify", "/score", "/pooling/stream"):
        return ErrorStyle.VLLM
    if path == "/rerank" and isinstance(body_hint, dict) and "documents" in body_hint:
        return ErrorStyle.VLLM
    return ErrorStyle.TEI
