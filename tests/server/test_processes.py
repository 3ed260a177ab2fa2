"""--api-server-count N: an engine process behind N gRPC front ends, across the process boundary.

The gRPC behaviour tests run against this layout too (tests/conftest.py, LAYOUTS); these
are the cases that only exist with processes: the engine's death, SIGTERM with N front
ends, cancellation and the queue bound across the boundary, one metrics scrape for all.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from poolstream.v1 import pooling_pb2
from poolstream.v1 import pooling_service_pb2 as pb
from poolstream.v1 import pooling_service_pb2_grpc as pb_grpc
from tests.grpc_helpers import error_details, json_payload
from tests.ops._util import free_port
from tests.ops.test_observability import _scrape, _value

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
ENCODE = {"grpc_service": "poolstream.v1.PoolingService", "grpc_method": "Encode"}


def texts(n: int, tag: str = "") -> list[pooling_pb2.Prompt]:
    return [pooling_pb2.Prompt(text=f"{tag} sentence {i} with a few words to keep the engine busy")
            for i in range(n)]


async def front_ends_seen(address: str, want: int, tries: int = 40) -> dict[int, int]:
    """GetServerInfo over fresh connections until ``want`` front ends answered: {index: pid}."""
    seen: dict[int, int] = {}
    for _ in range(tries):
        async with grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
            info = await pb_grpc.PoolingServiceStub(ch).GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
        seen[info.layout.front_end_index] = info.layout.front_end_pid
        if len(seen) == want:
            break
    return seen


async def test_layout_is_reported_and_front_ends_share_the_port(start_server_process):
    server = start_server_process("--api-server-count", "2")
    async with grpc.aio.insecure_channel(server.address) as ch:
        info = await pb_grpc.PoolingServiceStub(ch).GetServerInfo(pb.GetServerInfoRequest())
    layout = info.layout
    assert layout.engine_process and layout.api_server_count == 2
    assert layout.engine_pid not in (0, layout.front_end_pid, server.proc.pid)
    seen = await front_ends_seen(server.address, 2)
    assert sorted(seen) == [0, 1] and len(set(seen.values())) == 2  # two processes, one port


async def test_engine_death_answers_unavailable_and_exits_non_zero(start_server_process):
    server = start_server_process("--api-server-count", "2", "--max-num-seqs", "2")
    async with grpc.aio.insecure_channel(server.address) as ch:
        stub = pb_grpc.PoolingServiceStub(ch)
        engine_pid = (await stub.GetServerInfo(pb.GetServerInfoRequest())).layout.engine_pid
        in_flight = asyncio.ensure_future(stub.EncodeAll(pb.EncodeAllRequest(prompts=texts(300)), timeout=60))
        await asyncio.sleep(0.5)
        os.kill(engine_pid, signal.SIGKILL)
        # The call in flight ends UNAVAILABLE: its prompts fail ENGINE_DEAD, or the whole call
        # does, or its front end is already gone. Never a hang, never OK with missing results.
        try:
            result = await in_flight
            errors = [r for r in result.results if r.HasField("error")]
            assert errors and all(e.error.code == grpc.StatusCode.UNAVAILABLE.value[0] for e in errors)
        except grpc.aio.AioRpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE, e
        try:
            await stub.Encode(pb.EncodeRequest(prompts=texts(1))).read()
            raise AssertionError("answered after the engine died")
        except grpc.aio.AioRpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE
            if e.details() and "ENGINE_DEAD" not in str(e.trailing_metadata() or ""):
                pass  # the connection may have closed with the front end
    code = await asyncio.to_thread(server.proc.wait, 60)
    assert code != 0, server.log()
    assert "The engine process exited" in server.log()


async def test_sigterm_drains_every_front_end_then_the_engine(start_server_process):
    server = start_server_process("--api-server-count", "2", "--drain-delay", "1", "--grace-period", "60",
                                  "--max-num-seqs", "4")
    calls = []
    channels = [grpc.aio.insecure_channel(server.address, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(6)]
    try:
        for ch in channels:  # connections spread over both front ends
            stub = pb_grpc.PoolingServiceStub(ch)
            calls.append(stub.EncodeAll(pb.EncodeAllRequest(prompts=texts(40)), timeout=120))
        await asyncio.sleep(0.3)
        health = health_pb2_grpc.HealthStub(channels[0])
        assert (await health.Check(health_pb2.HealthCheckRequest())).status == SERVING
        server.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)  # inside --drain-delay: still answering, NOT_SERVING
        assert (await health.Check(health_pb2.HealthCheckRequest())).status == NOT_SERVING
        results = await asyncio.gather(*calls)
        assert all(len(r.results) == 40 and all(x.HasField("output") for x in r.results) for r in results)
    finally:
        for ch in channels:
            await ch.close()
    assert await asyncio.to_thread(server.proc.wait, 90) == 0, server.log()
    log = server.log()
    assert log.count("Draining") == 2 and "Engine process: stopped" in log
    assert log.index("Draining") < log.index("Engine process: stop requested")


async def test_cancel_aborts_engine_work_across_the_boundary(start_server_process):
    port = free_port()
    server = start_server_process("--api-server-count", "2", "--max-num-seqs", "2", "--metrics-port", str(port))
    async with grpc.aio.insecure_channel(server.address) as ch:
        stub = pb_grpc.PoolingServiceStub(ch)
        call = stub.Encode(pb.EncodeRequest(prompts=texts(300)))
        await call.read()  # running
        call.cancel()
        await asyncio.sleep(1.5)  # the abort crossed; the stats file is rewritten every 0.5 s
        first = await asyncio.to_thread(_scrape, port)
        await asyncio.sleep(1.5)
        second = await asyncio.to_thread(_scrape, port)
    executed = _value(second, "poolstream_engine_prompts_executed_total")
    assert executed == _value(first, "poolstream_engine_prompts_executed_total") < 300  # stopped, not finished
    assert _value(second, "poolstream_engine_prompts_aborted_total") > 0
    assert _value(second, "poolstream_engine_queued_prompts") == 0


async def test_queue_bound_and_retry_info_are_global(start_server_process):
    server = start_server_process("--api-server-count", "2", "--max-num-seqs", "2", "--max-queued-prompts", "30")
    channels = [grpc.aio.insecure_channel(server.address, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(4)]
    try:
        results = await asyncio.gather(*(
            pb_grpc.PoolingServiceStub(ch).EncodeAll(pb.EncodeAllRequest(prompts=texts(20, str(i))), timeout=120)
            for i, ch in enumerate(channels)))
    finally:
        for ch in channels:
            await ch.close()
    refused = [r for res in results for r in res.results if r.HasField("error")]
    assert refused, "80 prompts fit a queue of 30"
    assert {r.error.code for r in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]}
    assert sum(r.HasField("output") for res in results for r in res.results) >= 30


async def test_one_scrape_sums_every_process(start_server_process):
    port = free_port()
    server = start_server_process("--api-server-count", "2", "--metrics-port", str(port))
    seen = await front_ends_seen(server.address, 2)
    assert len(seen) == 2
    per_front_end: dict[int, int] = {}
    for _ in range(12):  # fresh connections: both front ends take some of the calls
        async with grpc.aio.insecure_channel(server.address, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
            stub = pb_grpc.PoolingServiceStub(ch)
            index = (await stub.GetServerInfo(pb.GetServerInfoRequest())).layout.front_end_index
            out = [r async for r in stub.Encode(pb.EncodeRequest(prompts=texts(2)))]
            assert all(r.HasField("output") for r in out)
            per_front_end[index] = per_front_end.get(index, 0) + 1
    deadline = time.monotonic() + 10
    while True:  # the engine's stats file is rewritten every 0.5 s
        text = await asyncio.to_thread(_scrape, port)
        try:
            if _value(text, "poolstream_engine_prompts_executed_total") >= 24:
                break
        except AssertionError:
            pass
        assert time.monotonic() < deadline, text
        await asyncio.sleep(0.3)
    assert len(per_front_end) == 2, per_front_end  # both processes served calls
    assert _value(text, "poolstream_requests_total", **ENCODE, grpc_code="OK") == 12
    assert _value(text, "poolstream_prompts_total", outcome="ok") == 24
    assert _value(text, "poolstream_requests_in_flight", **ENCODE) == 0
    assert _value(text, "poolstream_batch_size_sum") >= 1
    assert _value(text, "poolstream_engine_prompts_executed_total") == 24


async def test_plugin_errors_cross_unchanged(start_server_process):
    server = start_server_process("--api-server-count", "1")
    async with grpc.aio.insecure_channel(server.address) as ch:
        stub = pb_grpc.PoolingServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.Process(pb.ProcessRequest(data=json_payload({"texts": "not a list"})))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_details(e.value)["reason"] == "INVALID_PAYLOAD"
        too_long = pooling_pb2.Prompt(text="word " * 600)
        res = await stub.EncodeAll(pb.EncodeAllRequest(prompts=[too_long], params=pooling_pb2.PoolingParams(
            truncate=False)))
        assert res.results[0].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        cut = await stub.EncodeAll(pb.EncodeAllRequest(prompts=[too_long]))
        assert cut.results[0].output.truncated and len(cut.results[0].output.prompt_token_ids) == 256


def _listening_pids(port: int, pids: list[int]) -> set[int]:
    """Which of ``pids`` hold a listening TCP socket on ``port`` (read from /proc, Linux)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[1].endswith(f":{port:04X}") and cols[3] == "0A":  # 0A: LISTEN
                    inodes.add(cols[9])
    holders = set()
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        for fd in os.listdir(fd_dir):
            try:
                target = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                holders.add(pid)
    return holders


async def test_every_front_end_serves_the_http_door_on_one_port(start_server_process):
    import httpx

    http_port = free_port()
    server = start_server_process("--api-server-count", "2", "--http-port", str(http_port))
    seen = await front_ends_seen(server.address, 2)
    assert sorted(seen) == [0, 1]
    # Both front-end processes listen on the HTTP port (SO_REUSEPORT), not front end 0 alone.
    assert _listening_pids(http_port, list(seen.values())) == set(seen.values())
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=60) as client:
        for i in range(6):
            r = await client.post("/v1/embeddings", json={"input": [f"text {i}", "another"]})
            assert r.status_code == 200, r.text
            assert len(r.json()["data"]) == 2
