"""Keepalive and max_connection_age: the flags reach gRPC, and an aged connection is replaced
(so a load balancer can rebalance) without failing the call in flight."""

from __future__ import annotations

import asyncio
import logging

import grpc

from poolstream.config import LimitsConfig
from poolstream.server.observability import RequestContextFilter
from poolstream.server.transport import TransportConfig, server_options
from poolstream.v1 import pooling_service_pb2 as pb
from poolstream.v1 import pooling_service_pb2_grpc as pb_grpc
from tests.grpc_helpers import json_payload
from tests.ops._util import inproc


def test_server_options_from_flags():
    opts = dict(server_options(LimitsConfig(max_receive_message_bytes=1234), TransportConfig(
        keepalive_time_s=30, keepalive_timeout_s=5, keepalive_min_client_interval_s=15,
        max_connection_age_s=300, max_connection_age_grace_s=45)))
    assert opts["grpc.max_receive_message_length"] == 1234
    assert opts["grpc.keepalive_time_ms"] == 30_000
    assert opts["grpc.keepalive_timeout_ms"] == 5_000
    assert opts["grpc.keepalive_permit_without_calls"] == 1
    assert opts["grpc.http2.min_recv_ping_interval_without_data_ms"] == 15_000
    assert opts["grpc.max_connection_age_ms"] == 300_000
    assert opts["grpc.max_connection_age_grace_ms"] == 45_000
    # Age 0 means "never": gRPC's own default (no option at all).
    assert "grpc.max_connection_age_ms" not in dict(server_options(LimitsConfig(), TransportConfig()))


class _Peers(logging.Handler):
    def __init__(self):
        super().__init__()
        self.addFilter(RequestContextFilter())
        self.peers: dict[str, str] = {}

    def emit(self, record):
        if record.name == "poolstream.access":
            self.peers[record.request_id] = (record.peer, record.code)


async def test_max_connection_age_replaces_the_connection_without_failing_calls():
    handler = _Peers()
    access = logging.getLogger("poolstream.access")
    access.addHandler(handler)
    old_level = access.level
    access.setLevel(logging.INFO)
    transport = TransportConfig(max_connection_age_s=0.5, max_connection_age_grace_s=10)
    try:
        async with inproc(transport=transport) as server:
            async with grpc.aio.insecure_channel(server.address) as channel:
                stub = pb_grpc.PoolingServiceStub(channel)
                await stub.Process(pb.ProcessRequest(request_id="first", data=json_payload({"texts": ["a"]})))
                # A call that outlives the connection's age (5 outputs x 0.4 s): finishes within the grace.
                events = [e async for e in stub.ProcessStream(pb.ProcessStreamRequest(
                    request_id="long", data=json_payload({"texts": list("abcde"), "hang_s": 0.4})), timeout=30)]
                assert events[-1].result.request_id == "long"
                await asyncio.sleep(0.3)
                await stub.Process(pb.ProcessRequest(request_id="after", data=json_payload({"texts": ["b"]})))
    finally:
        access.removeHandler(handler)
        access.setLevel(old_level)
    peers = handler.peers
    assert peers["long"][1] == "OK" and peers["after"][1] == "OK"
    assert peers["first"][0] == peers["long"][0]  # same connection while young
    assert peers["after"][0] != peers["first"][0]  # GOAWAY at max age: the client reconnected
