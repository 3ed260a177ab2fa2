"""Load: hundreds of concurrent streams against one ``poolstream serve`` (loopback, bounded).

Every request must end with its own correct result (each prompt's embedding equal to the
reference for that prompt's text, under that request's id) or a documented error; requests
refused for overload retry after their RetryInfo delay. The server's RSS is sampled from
/proc throughout and must stay bounded, also under a burst of oversized messages.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time

import grpc
import pytest
import torch
from poolstream.tensors import tensor_from_proto
from poolstream.v1 import pooling_pb2
from poolstream.v1 import pooling_service_pb2 as pb
from poolstream.v1 import pooling_service_pb2_grpc as pb_grpc

from tests.faults._common import assert_documented, retry_delay_s, status_of
from tests.grpc_helpers import json_payload
from tests.ops._util import rss_kib

MiB = 1024 * 1024
STREAMS = 300
QUEUE = 512
RECV_LIMIT = 4 * MiB
PAYLOAD_LIMIT = 1 * MiB
# Bounds on the server's resident memory above its warmed-up baseline.
LOAD_RSS_BOUND_MIB = 400
OVERSIZE_RSS_BOUND_MIB = 600

TEXTS = [f"load test sentence {i}: " + " ".join(["word"] * (i % 7 * 5)) + f" ending {i}" for i in range(24)]


class RssSampler(threading.Thread):
    def __init__(self, pid: int, period: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.period, self.peak = pid, period, 0
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            try:
                self.peak = max(self.peak, rss_kib(self.pid))
            except (OSError, RuntimeError):
                return
            self._halt.wait(self.period)

    def stop(self) -> int:
        self._halt.set()
        self.join(5)
        return self.peak


def _vec(output: pooling_pb2.PoolingRequestOutput) -> torch.Tensor:
    return tensor_from_proto(output.outputs.data).float().reshape(-1)


async def _with_retries(make_call, stats: dict, max_attempts: int = 40):
    """Run ``make_call()`` until it is not RESOURCE_EXHAUSTED, sleeping RetryInfo's delay between."""
    for _ in range(max_attempts):
        try:
            return await make_call()
        except grpc.aio.AioRpcError as e:
            code, reason = assert_documented(e)
            if code != "RESOURCE_EXHAUSTED":
                raise
            stats[reason] = stats.get(reason, 0) + 1
            await asyncio.sleep(retry_delay_s(e))
    raise AssertionError("still overloaded after every retry")


@pytest.fixture(scope="module")
def server(start_server_process_module):
    return start_server_process_module(
        "--io-processor-plugin", "dummy_echo", "--max-queued-prompts", str(QUEUE),
        "--max-concurrent-calls", "1000", "--max-num-seqs", "32",
        "--max-receive-message-bytes", str(RECV_LIMIT), "--max-payload-bytes", str(PAYLOAD_LIMIT),
    )


@pytest.fixture(scope="module")
def start_server_process_module():
    from tests.conftest import launch_server

    started = []

    def start(*args):
        s = launch_server(*args)
        started.append(s)
        return s

    yield start
    for s in started:
        assert s.stop() == 0, s.log()[-3000:]


async def test_hundreds_of_concurrent_streams(server, record_property):
    channels = [grpc.aio.insecure_channel(server.address) for _ in range(4)]
    stubs = [pb_grpc.PoolingServiceStub(c) for c in channels]
    try:
        refs = [r async for r in stubs[0].Encode(pb.EncodeRequest(
            prompts=[pooling_pb2.Prompt(text=t) for t in TEXTS]), timeout=60)]
        ref = {TEXTS[r.index]: _vec(r.output) for r in refs}
        pid = server.proc.pid
        baseline = rss_kib(pid)
        sampler = RssSampler(pid)
        sampler.start()
        rng = random.Random(7)
        jobs = [(k, rng.sample(TEXTS, rng.randint(1, 4))) for k in range(STREAMS)]
        overload: dict[str, int] = {}
        start = time.monotonic()

        async def process_stream(k, texts):
            stub = stubs[k % len(stubs)]

            async def call():
                return [ev async for ev in stub.ProcessStream(pb.ProcessStreamRequest(
                    request_id=f"load-{k}", data=json_payload({"texts": texts, "tag": k})), timeout=120)]

            events = await _with_retries(call, overload)
            chunks = [ev.chunk for ev in events if ev.HasField("chunk")]
            assert sorted(c.index for c in chunks) == list(range(len(texts)))
            for c in chunks:
                assert c.output.request_id == f"load-{k}-{c.index}"
                assert torch.allclose(_vec(c.output), ref[texts[c.index]], atol=1e-4)
            result = events[-1].result
            assert result.request_id == f"load-{k}" and result.data.json["tag"] == k
            assert len(result.data.json["norms"]) == len(texts)
            assert sorted(result.data.json["arrival_order"]) == list(range(len(texts)))
            return len(texts)

        async def encode(k, texts):
            stub = stubs[k % len(stubs)]
            out = [r async for r in stub.Encode(pb.EncodeRequest(
                request_id=f"load-{k}", prompts=[pooling_pb2.Prompt(text=t) for t in texts]), timeout=120)]
            assert sorted(r.index for r in out) == list(range(len(texts)))
            todo = []
            for r in out:
                if r.HasField("error"):  # only overload may refuse a prompt; retry it alone
                    assert r.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], r.error
                    todo.append(r.index)
                    continue
                assert r.output.request_id == f"load-{k}-{r.index}"
                assert torch.allclose(_vec(r.output), ref[texts[r.index]], atol=1e-4)
            for i in todo:
                overload["QUEUE_FULL(in-stream)"] = overload.get("QUEUE_FULL(in-stream)", 0) + 1

                async def one(i=i):
                    res = [x async for x in stub.Encode(pb.EncodeRequest(
                        request_id=f"load-{k}-retry{i}", prompts=[pooling_pb2.Prompt(text=texts[i])]),
                        timeout=120)]
                    if res[0].HasField("error"):
                        raise _InStreamOverload(res[0].error)
                    return res[0]

                r = await _retry_in_stream(one)
                assert torch.allclose(_vec(r.output), ref[texts[i]], atol=1e-4)
            return len(texts)

        prompts = await asyncio.wait_for(asyncio.gather(*(
            (process_stream if k % 2 else encode)(k, texts) for k, texts in jobs)), 150)
        elapsed = time.monotonic() - start
        peak = sampler.stop()
        info = await stubs[0].GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
        assert info.limits.max_queued_prompts == QUEUE
    finally:
        for c in channels:
            await c.close()
    growth_mib = (peak - baseline) / 1024
    record_property("load_streams", STREAMS)
    record_property("load_prompts", sum(prompts))
    record_property("load_seconds", round(elapsed, 2))
    record_property("load_overload_refusals", dict(overload))
    record_property("load_rss_baseline_mib", round(baseline / 1024))
    record_property("load_rss_peak_mib", round(peak / 1024))
    print(f"\nload: {STREAMS} streams, {sum(prompts)} prompts in {elapsed:.1f}s; refusals {overload}; "
          f"RSS {baseline / 1024:.0f} -> peak {peak / 1024:.0f} MiB (+{growth_mib:.0f})")
    assert growth_mib < LOAD_RSS_BOUND_MIB


class _InStreamOverload(Exception):
    def __init__(self, status):
        super().__init__(status.message)
        self.status = status


async def _retry_in_stream(call, max_attempts: int = 40):
    from google.rpc import error_details_pb2

    for _ in range(max_attempts):
        try:
            return await call()
        except _InStreamOverload as e:
            delay = 0.1
            for d in e.status.details:
                if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                    ri = error_details_pb2.RetryInfo()
                    d.Unpack(ri)
                    delay = ri.retry_delay.ToTimedelta().total_seconds()
            await asyncio.sleep(delay)
    raise AssertionError("still overloaded after every retry")


async def test_oversized_messages_keep_memory_bounded(server, record_property):
    """Concurrent messages over --max-receive-message-bytes (gRPC refuses them) and payloads over
    --max-payload-bytes (INVALID_ARGUMENT PAYLOAD_TOO_LARGE): refused, and RSS stays bounded."""
    pid = server.proc.pid
    baseline = rss_kib(pid)
    sampler = RssSampler(pid)
    sampler.start()
    big_text = "x" * (RECV_LIMIT + MiB)  # one 5 MiB prompt: over the receive limit
    mid_text = "y" * (3 * MiB)  # under the receive limit, over the payload limit
    async with grpc.aio.insecure_channel(server.address, options=[
            ("grpc.max_send_message_length", 64 * MiB)]) as channel:
        stub = pb_grpc.PoolingServiceStub(channel)

        async def oversize():
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await stub.Process(pb.ProcessRequest(data=json_payload({"texts": [big_text]})), timeout=60)
            assert status_of(e.value) == ("RESOURCE_EXHAUSTED", None)

        async def too_large_payload():
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await stub.Process(pb.ProcessRequest(data=json_payload({"texts": [mid_text]})), timeout=60)
            assert status_of(e.value) == ("INVALID_ARGUMENT", "PAYLOAD_TOO_LARGE")

        for _ in range(3):
            await asyncio.wait_for(asyncio.gather(*([oversize() for _ in range(40)]
                                                    + [too_large_payload() for _ in range(40)])), 120)
        ok = await stub.Process(pb.ProcessRequest(data=json_payload({"texts": ["still fine"], "tag": 1})),
                                timeout=30)
        assert ok.data.json["tag"] == 1
    peak = sampler.stop()
    growth_mib = (peak - baseline) / 1024
    record_property("oversize_rss_peak_growth_mib", round(growth_mib))
    print(f"\noversize: 240 refused calls (40 x 5 MiB + 40 x 3 MiB, 3 rounds); RSS {baseline / 1024:.0f} -> "
          f"peak {peak / 1024:.0f} MiB (+{growth_mib:.0f})")
    assert growth_mib < OVERSIZE_RSS_BOUND_MIB
