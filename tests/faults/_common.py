"""Shared by the fault suite: documented-status checks."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.ops.test_error_table import doc_table

DOCUMENTED = doc_table()  # (code, reason) pairs of docs/operations.md
# Statuses that legitimately come without poolstream details: made by the client library
# (deadline, cancel, connection) or by gRPC itself (message size).
WITHOUT_DETAILS = {"DEADLINE_EXCEEDED", "CANCELLED", "UNAVAILABLE", "RESOURCE_EXHAUSTED", "UNIMPLEMENTED"}


def status_of(err: grpc.RpcError) -> tuple[str, str | None]:
    """(code name, ErrorInfo reason or None)."""
    code = err.code().name
    status = rpc_status.from_call(err)
    if status is None:
        return code, None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            assert info.domain == "poolstream.dev", info
            return code, info.reason
    raise AssertionError(f"{code} status without ErrorInfo: {status}")


def assert_documented(err: grpc.RpcError, *, allow_internal: bool = False) -> tuple[str, str | None]:
    code, reason = status_of(err)
    if reason is None:
        assert code in WITHOUT_DETAILS, f"{code} without details: {err.details()}"
    else:
        assert (code, reason) in DOCUMENTED, f"undocumented status {code} {reason}: {err.details()}"
    assert code != "UNKNOWN", err.details()
    if not allow_internal:
        assert code != "INTERNAL", f"server-side failure: {reason}: {err.details()}"
    return code, reason


def retry_delay_s(err: grpc.RpcError) -> float | None:
    status = rpc_status.from_call(err)
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToTimedelta().total_seconds()
    return None
