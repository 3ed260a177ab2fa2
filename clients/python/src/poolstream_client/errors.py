"""PoolstreamError: a failed call with its google.rpc details decoded.

The server puts a ``google.rpc.Status`` in the ``grpc-status-details-bin``
trailer with ErrorInfo (domain ``poolstream.dev``, a reason, metadata),
BadRequest (the offending fields) and RetryInfo (when to come back). The
three messages are decoded here from the protobuf wire format directly: they
are small and stable, and it keeps the client free of the protobuf runtime.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from ._messages import rpc

__all__ = ["FieldViolation", "PoolstreamError"]

_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
_BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
_CODES = {c.value[0]: c for c in grpc.StatusCode}


@dataclass(frozen=True)
class FieldViolation:
    """One entry of google.rpc.BadRequest: which field, and what is wrong with it."""

    field: str
    description: str
    reason: str = ""


class PoolstreamError(Exception):
    """A failed call (or a failed prompt of an Encode/EncodeAll request).

    - ``code``: the ``grpc.StatusCode``; ``details``: the status message;
    - ``reason``, ``domain``, ``metadata``: google.rpc.ErrorInfo;
    - ``field_violations``: google.rpc.BadRequest;
    - ``retry_delay``: google.rpc.RetryInfo in seconds (None without one);
    - ``index``: the prompt's index for a per-prompt error, else None.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str,
        reason: str = "",
        domain: str = "",
        index: int | None = None,
        *,
        metadata: dict[str, str] | None = None,
        field_violations: tuple[FieldViolation, ...] = (),
        retry_delay: float | None = None,
    ):
        where = f"prompt {index}: " if index is not None else ""
        super().__init__(f"{where}{code.name}{f' ({reason})' if reason else ''}: {details}")
        self.code = code
        self.details = details
        self.reason = reason
        self.domain = domain
        self.index = index
        self.metadata = dict(metadata or {})
        self.field_violations = tuple(field_violations)
        self.retry_delay = retry_delay

    @property
    def retryable(self) -> bool:
        """The server asked to come back later (RetryInfo), or was unreachable or not ready."""
        return self.retry_delay is not None or self.code == grpc.StatusCode.UNAVAILABLE

    def at(self, index: int) -> PoolstreamError:
        """The same error for the prompt at ``index`` (a chunk's index made global)."""
        return PoolstreamError(self.code, self.details, self.reason, self.domain, index, metadata=self.metadata,
                               field_violations=self.field_violations, retry_delay=self.retry_delay)

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> PoolstreamError:
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = (error.details() if hasattr(error, "details") else "") or ""
        metadata = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
        for key, val in metadata or ():
            if key == "grpc-status-details-bin":
                with contextlib.suppress(Exception):  # details are best effort
                    return cls.from_status(rpc.Status.parse(val), code=code, details=details)
        return cls(code, details)

    @classmethod
    def from_status(cls, status: rpc.Status, index: int | None = None, *,
                    code: grpc.StatusCode | None = None, details: str | None = None) -> PoolstreamError:
        fields: dict[str, Any] = {"metadata": {}, "field_violations": (), "retry_delay": None}
        reason = domain = ""
        for detail in status.details:
            with contextlib.suppress(Exception):
                if detail.type_url == _ERROR_INFO:
                    reason, domain, fields["metadata"] = _error_info(detail.value)
                elif detail.type_url == _BAD_REQUEST:
                    fields["field_violations"] = _bad_request(detail.value)
                elif detail.type_url == _RETRY_INFO:
                    fields["retry_delay"] = _retry_info(detail.value)
        return cls(code or _CODES.get(status.code, grpc.StatusCode.UNKNOWN),
                   status.message if details is None else details, reason, domain, index, **fields)


# -- protobuf wire format (just enough for the three detail messages) ---------------------------


def _varint(data: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of each field: an int for varints, bytes for length-delimited."""
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i)
            yield number, value
        elif wire == 2:
            n, i = _varint(data, i)
            if i + n > len(data):
                raise ValueError("truncated field")
            yield number, data[i:i + n]
            i += n
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")


def _error_info(data: bytes) -> tuple[str, str, dict[str, str]]:
    reason = domain = ""
    metadata: dict[str, str] = {}
    for number, value in _fields(data):
        if number == 1 and isinstance(value, bytes):
            reason = value.decode()
        elif number == 2 and isinstance(value, bytes):
            domain = value.decode()
        elif number == 3 and isinstance(value, bytes):  # map<string, string> entry
            entry = {n: v for n, v in _fields(value) if isinstance(v, bytes)}
            metadata[entry.get(1, b"").decode()] = entry.get(2, b"").decode()
    return reason, domain, metadata


def _bad_request(data: bytes) -> tuple[FieldViolation, ...]:
    out = []
    for number, value in _fields(data):
        if number == 1 and isinstance(value, bytes):
            entry = {n: v for n, v in _fields(value) if isinstance(v, bytes)}
            out.append(FieldViolation(entry.get(1, b"").decode(), entry.get(2, b"").decode(),
                                      entry.get(3, b"").decode()))
    return tuple(out)


def _retry_info(data: bytes) -> float:
    seconds = nanos = 0
    for number, value in _fields(data):
        if number == 1 and isinstance(value, bytes):  # google.protobuf.Duration
            for n, v in _fields(value):
                if n == 1 and isinstance(v, int):
                    seconds = v
                elif n == 2 and isinstance(v, int):
                    nanos = v
    return seconds + nanos / 1e9
