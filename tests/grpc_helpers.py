"""Small client-side helpers for tests: payloads and error details."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from poolstream.v1 import payload_pb2


def json_payload(obj: dict[str, Any]) -> payload_pb2.PluginPayload:
    s = struct_pb2.Struct()
    s.update(obj)
    return payload_pb2.PluginPayload(json=s)


def typed_payload(message) -> payload_pb2.PluginPayload:
    p = payload_pb2.PluginPayload()
    p.typed.Pack(message)
    return p


def error_details(e: grpc.aio.AioRpcError) -> dict[str, Any]:
    """{"reason", "domain", "violations", "retry_s"} from a call's google.rpc.Status."""
    status = rpc_status.from_call(e)
    assert status is not None, f"no google.rpc.Status details on {e.code()}: {e.details()}"
    out: dict[str, Any] = {"violations": [], "retry_s": None}
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            out["reason"], out["domain"] = info.reason, info.domain
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            detail.Unpack(br)
            out["violations"] = [(v.field, v.description) for v in br.field_violations]
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            ri = error_details_pb2.RetryInfo()
            detail.Unpack(ri)
            out["retry_s"] = ri.retry_delay.ToTimedelta().total_seconds()
    return out
