"""Errors every door maps the same way: a status code, an ErrorInfo reason, a message, details.

The serving core raises :class:`ServingError` (and reports per-prompt failures as one);
:func:`to_serving_error` is the one table from any exception (engine, plugin pipeline,
protobuf decoding, anything else) to a ``ServingError``. A transport maps a
``ServingError`` to its own form: gRPC to ``google.rpc.Status`` with ErrorInfo/BadRequest/
RetryInfo details (``server/errors.py``), HTTP to ``Code.http_status`` and a JSON body.

No transport is imported here: :class:`Code` carries both the gRPC numeric code and the
HTTP status of each code (the mapping of google.rpc.Code's documentation).
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from google.protobuf.message import DecodeError

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

logger = logging.getLogger(__name__)

# ErrorInfo.domain of every error.
DOMAIN = "poolstream.dev"


class Code(enum.Enum):
    """A status code: the member name is gRPC's, ``grpc`` its number, ``http_status`` HTTP's."""

    OK = (0, 200)
    CANCELLED = (1, 499)
    UNKNOWN = (2, 500)
    INVALID_ARGUMENT = (3, 400)
    DEADLINE_EXCEEDED = (4, 504)
    NOT_FOUND = (5, 404)
    ALREADY_EXISTS = (6, 409)
    PERMISSION_DENIED = (7, 403)
    RESOURCE_EXHAUSTED = (8, 429)
    FAILED_PRECONDITION = (9, 400)
    ABORTED = (10, 409)
    OUT_OF_RANGE = (11, 400)
    UNIMPLEMENTED = (12, 501)
    INTERNAL = (13, 500)
    UNAVAILABLE = (14, 503)
    DATA_LOSS = (15, 500)
    UNAUTHENTICATED = (16, 401)

    @property
    def grpc(self) -> int:
        return self.value[0]

    @property
    def http_status(self) -> int:
        return self.value[1]

    @classmethod
    def of(cls, code: Any) -> "Code":
        """A ``Code`` from itself, a ``grpc.StatusCode`` (same member names) or a name."""
        if isinstance(code, Code):
            return code
        return cls[code if isinstance(code, str) else code.name]


@dataclass
class ServingError(Exception):
    """An error with its status code, ErrorInfo reason and optional details.

    ``code`` accepts a :class:`Code`, a ``grpc.StatusCode`` or a code name; it is stored as a
    ``Code``. ``field_violations`` become BadRequest (gRPC) or a ``fields`` list (HTTP),
    ``retry_after_s`` RetryInfo or ``Retry-After``, ``metadata`` ErrorInfo metadata.
    """

    code: Code
    reason: str
    message: str
    field_violations: Sequence[tuple[str, str]] = ()  # (field path, description)
    retry_after_s: float | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.code = Code.of(self.code)

    def __str__(self) -> str:
        return self.message

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form for HTTP doors (``{"code", "reason", "message", ...}``)."""
        out: dict[str, Any] = {"code": self.code.name, "reason": self.reason, "domain": DOMAIN,
                               "message": self.message}
        if self.field_violations:
            out["field_violations"] = [{"field": f, "description": d} for f, d in self.field_violations]
        if self.retry_after_s is not None:
            out["retry_after_s"] = self.retry_after_s
        if self.metadata:
            out["metadata"] = dict(self.metadata)
        return out


def invalid_argument(reason: str, message: str, field_path: str | None = None) -> ServingError:
    violations = [(field_path, message)] if field_path else []
    return ServingError(Code.INVALID_ARGUMENT, reason, message, violations)


def with_field(error: ServingError, field_path: str) -> ServingError:
    """An INVALID_ARGUMENT without field violations gets one for ``field_path`` (BadRequest everywhere)."""
    if error.code is not Code.INVALID_ARGUMENT or error.field_violations:
        return error
    return replace(error, field_violations=[(field_path, error.message)])


def to_serving_error(exc: BaseException) -> ServingError:
    """Map any exception to a ServingError: the one table (pooling_service.proto lists it)."""
    if isinstance(exc, ServingError):
        return exc
    if isinstance(exc, EngineOverloadedError):
        return ServingError(
            Code.RESOURCE_EXHAUSTED,
            "QUEUE_FULL",
            str(exc) or "The engine queue is full; retry later.",
            retry_after_s=exc.retry_after_s,
        )
    if isinstance(exc, PromptTooLargeError):
        return ServingError(Code.INVALID_ARGUMENT, "PROMPT_TOO_LARGE", str(exc))
    if isinstance(exc, NonFiniteInputError):
        return ServingError(Code.INVALID_ARGUMENT, "NON_FINITE_INPUT", str(exc))
    if isinstance(exc, InvalidPromptError):
        return ServingError(Code.INVALID_ARGUMENT, "INVALID_PROMPT", str(exc))
    if isinstance(exc, RequestAbortedError):
        return ServingError(Code.CANCELLED, "ABORTED", str(exc) or "the request was aborted")
    if isinstance(exc, DeadlineExceededError):
        return ServingError(Code.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED", str(exc))
    if isinstance(exc, EngineDeadError):
        return ServingError(Code.UNAVAILABLE, "ENGINE_DEAD", str(exc))
    if isinstance(exc, EngineError):  # the model failed on this prompt's batch (logged by the engine)
        return ServingError(Code.INTERNAL, "MODEL_FAILED", str(exc))
    if isinstance(exc, TooManyPromptsError):
        return ServingError(Code.INVALID_ARGUMENT, "TOO_MANY_PROMPTS", str(exc), [("data", str(exc))])
    if isinstance(exc, DecodeError):  # client bytes inside a message (an Any's value) that do not parse
        return ServingError(Code.INVALID_ARGUMENT, "INVALID_PAYLOAD", f"cannot decode: {exc}")
    if isinstance(exc, RequestTooLargeError):
        return ServingError(Code.INVALID_ARGUMENT, "REQUEST_TOO_LARGE", str(exc), [(exc.field, str(exc))])
    if isinstance(exc, PayloadError):
        # A plugin's ValueError may carry its own ErrorInfo reason and metadata (what was
        # expected and seen): `reason` (UPPER_SNAKE_CASE) and `details` (str -> str) attributes.
        cause = exc.__cause__
        reason = getattr(cause, "reason", None)
        meta = getattr(cause, "details", None)
        return ServingError(
            Code.INVALID_ARGUMENT,
            reason if isinstance(reason, str) and re.fullmatch(r"[A-Z][A-Z0-9_]{0,62}", reason) else "INVALID_PAYLOAD",
            str(exc), [("data", str(exc))],
            metadata={str(k): str(v) for k, v in meta.items()} if isinstance(meta, Mapping) else {},
        )
    if isinstance(exc, PluginFailedError):
        logger.error("Plugin hook failed: %s", exc, exc_info=exc.__cause__)
        return ServingError(Code.INTERNAL, f"{exc.stage.upper()}_FAILED", f"The plugin's {exc}")
    logger.exception("Unexpected error", exc_info=exc)
    return ServingError(Code.INTERNAL, "INTERNAL", f"{type(exc).__name__}: {exc}")
