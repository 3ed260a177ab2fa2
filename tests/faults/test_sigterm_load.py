"""SIGTERM under load: in-flight calls finish within the grace period, new ones are refused, exit 0."""

from __future__ import annotations

import asyncio
import signal
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from poolstream.v1 import pooling_service_pb2 as pb
from poolstream.v1 import pooling_service_pb2_grpc as pb_grpc

from tests.faults._common import assert_documented
from tests.grpc_helpers import json_payload

IN_FLIGHT = 40
PROMPTS = 10
DRAIN_DELAY = 1.0


async def test_sigterm_under_load(start_server_process):
    server = start_server_process("--io-processor-plugin", "dummy_echo", "--drain-delay", str(DRAIN_DELAY),
                                  "--grace-period", "60", "--max-num-seqs", "4")
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = pb_grpc.PoolingServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service="poolstream.v1.PoolingService"))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING

        calls = [stub.ProcessStream(pb.ProcessStreamRequest(
            request_id=f"drain-{k}", detail=pb.STREAM_DETAIL_PROGRESS,
            data=json_payload({"texts": [f"call {k} prompt {i}" for i in range(PROMPTS)], "tag": k})),
            timeout=120) for k in range(IN_FLIGHT)]
        for call in calls:  # every call is admitted and running
            assert (await call.read()).progress.total == PROMPTS

        async def finish(call):
            while True:
                ev = await call.read()
                assert ev is not grpc.aio.EOF, "the stream ended without a result"
                if ev.HasField("result"):
                    return ev.result

        finishing = [asyncio.ensure_future(finish(c)) for c in calls]
        sigterm_at = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert (await asyncio.wait_for(watch.read(), 10)).status == health_pb2.HealthCheckResponse.NOT_SERVING

        # During the drain delay calls are still accepted (load balancers are moving away).
        early = await stub.Process(pb.ProcessRequest(data=json_payload({"texts": ["early"], "tag": "early"})),
                                   timeout=30)
        assert early.data.json["tag"] == "early"

        # After it, new calls are refused (on this connection and on new ones) while in-flight ones finish.
        await asyncio.sleep(max(0.0, DRAIN_DELAY + 0.5 - (time.monotonic() - sigterm_at)))
        refused = 0
        for ch in (channel, grpc.aio.insecure_channel(server.address)):
            try:
                await pb_grpc.PoolingServiceStub(ch).Process(
                    pb.ProcessRequest(data=json_payload({"texts": ["late"]})), timeout=5)
            except grpc.aio.AioRpcError as e:
                code, _ = assert_documented(e)
                assert code == "UNAVAILABLE", e
                refused += 1
            finally:
                if ch is not channel:
                    await ch.close()
        assert refused == 2

        results = await asyncio.wait_for(asyncio.gather(*finishing), 60)
        assert [r.data.json["tag"] for r in results] == list(range(IN_FLIGHT))
        assert all(len(r.data.json["norms"]) == PROMPTS for r in results)
        assert [r.request_id for r in results] == [f"drain-{k}" for k in range(IN_FLIGHT)]

    assert await asyncio.to_thread(server.proc.wait, 60) == 0
    assert time.monotonic() - sigterm_at < 60
