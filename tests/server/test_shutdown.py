"""Issue 2: graceful shutdown — NOT_SERVING while draining, in-flight calls finish, exit 0."""

from __future__ import annotations

import asyncio
import signal

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from google.protobuf import struct_pb2

from poolstream.v1 import payload_pb2
from poolstream.v1 import pooling_service_pb2 as pb
from poolstream.v1 import pooling_service_pb2_grpc as pb_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _payload(texts: list[str]) -> payload_pb2.PluginPayload:
    s = struct_pb2.Struct()
    s.update({"texts": texts})
    return payload_pb2.PluginPayload(json=s)


async def test_sigterm_drains_and_exits_zero(start_server_process):
    server = start_server_process("--drain-delay", "1.5", "--grace-period", "60", "--max-num-seqs", "4")
    async with grpc.aio.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        stub = pb_grpc.PoolingServiceStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service="poolstream.v1.PoolingService"))
        assert (await watch.read()).status == SERVING

        # A long call in flight when the signal arrives (~200 prompts in batches of 4).
        texts = [f"sentence number {i} about draining servers" for i in range(200)]
        in_flight = stub.ProcessStream(pb.ProcessStreamRequest(data=_payload(texts), detail=pb.STREAM_DETAIL_PROGRESS))
        first = await in_flight.read()
        assert first.progress.total == 200

        server.proc.send_signal(signal.SIGTERM)
        assert (await asyncio.wait_for(watch.read(), 10)).status == NOT_SERVING
        check = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert check.status == NOT_SERVING

        result = None
        while (event := await in_flight.read()) is not grpc.aio.EOF:
            if event.HasField("result"):
                result = event.result
        assert result is not None and len(result.data.json["embeddings"]) == 200

    assert await asyncio.to_thread(server.proc.wait, 60) == 0
    assert "Draining" in server.log()


async def test_calls_after_drain_are_refused(start_server_process):
    server = start_server_process("--drain-delay", "0", "--grace-period", "5")
    server.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(server.proc.wait, 60) == 0
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = pb_grpc.PoolingServiceStub(channel)
        try:
            await stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=2)
            raise AssertionError("a stopped server answered")
        except grpc.aio.AioRpcError as e:
            assert e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
