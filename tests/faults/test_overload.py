"""Overload: RESOURCE_EXHAUSTED with RetryInfo from the queue estimate, never a hang.

One in-process server with a small queue (32 prompts), 8 concurrent calls and batches of 2.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
import pytest_asyncio
from poolstream.config import LimitsConfig
from poolstream.v1 import pooling_pb2
from poolstream.v1 import pooling_service_pb2 as pb
from poolstream.v1 import pooling_service_pb2_grpc as pb_grpc

from tests.faults._common import assert_documented, retry_delay_s, status_of
from tests.grpc_helpers import json_payload
from tests.ops._util import inproc

pytestmark = pytest.mark.asyncio(loop_scope="module")
QUEUE, CALLS = 32, 8


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server():
    async with inproc(limits=LimitsConfig(max_concurrent_calls=CALLS), max_queued_prompts=QUEUE,
                      max_num_seqs=2) as s:
        async with grpc.aio.insecure_channel(s.address) as ch:  # warm-up: a throughput estimate
            await pb_grpc.PoolingServiceStub(ch).Process(
                pb.ProcessRequest(data=json_payload({"texts": [f"warm {i}" for i in range(20)]})))
        yield s


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stub(server):
    async with grpc.aio.insecure_channel(server.address) as channel:
        yield pb_grpc.PoolingServiceStub(channel)


def _texts(n, prefix):
    return [f"{prefix} sentence {i} for the overload test" for i in range(n)]


async def test_queue_full_with_retry_info_from_the_estimate(server, stub):
    engine = server.state.engine
    first = asyncio.ensure_future(stub.Process(pb.ProcessRequest(
        data=json_payload({"texts": _texts(QUEUE - 2, "first")})), timeout=60))
    while engine.stats.queued_prompts < QUEUE - 6:  # the first request is queued
        await asyncio.sleep(0.005)
    estimate = engine.estimate_wait_s()
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.Process(pb.ProcessRequest(data=json_payload({"texts": _texts(20, "second")})), timeout=60)
    assert status_of(e.value) == ("RESOURCE_EXHAUSTED", "QUEUE_FULL")
    delay = retry_delay_s(e.value)
    assert delay is not None and 0.05 <= delay <= 30
    assert delay == pytest.approx(estimate, rel=0.75, abs=0.1)  # the queue's own estimate
    # The rejected request's admitted prompts were released: the first request completes.
    assert len((await first).data.json["norms"]) == QUEUE - 2
    # Honouring RetryInfo works: after the delay there is room.
    await asyncio.sleep(delay)
    ok = await stub.Process(pb.ProcessRequest(data=json_payload({"texts": _texts(10, "retry")})), timeout=60)
    assert len(ok.data.json["norms"]) == 10


async def test_encode_reports_queue_full_per_prompt(server, stub):
    """Encode keeps streaming: prompts over the queue bound get an in-stream QUEUE_FULL + RetryInfo."""
    from google.rpc import error_details_pb2

    n = QUEUE + 20
    out = [r async for r in stub.Encode(pb.EncodeRequest(
        prompts=[pooling_pb2.Prompt(text=t) for t in _texts(n, "encode")]), timeout=60)]
    assert sorted(r.index for r in out) == list(range(n))
    ok = [r for r in out if r.HasField("output")]
    refused = [r for r in out if r.HasField("error")]
    assert len(ok) >= QUEUE - 2 and refused, (len(ok), len(refused))
    for r in refused:
        assert r.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        kinds = {d.type_url.rsplit(".", 1)[-1] for d in r.error.details}
        assert {"ErrorInfo", "RetryInfo"} <= kinds
        info = error_details_pb2.ErrorInfo()
        next(d for d in r.error.details if d.Is(info.DESCRIPTOR)).Unpack(info)
        assert info.reason == "QUEUE_FULL"


async def test_too_many_calls(server, stub):
    holders = [asyncio.ensure_future(stub.Process(pb.ProcessRequest(
        data=json_payload({"texts": ["hold"], "hang_post_s": 1.0})), timeout=60)) for _ in range(CALLS)]
    while server.state.active_calls < CALLS:
        await asyncio.sleep(0.005)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.Process(pb.ProcessRequest(data=json_payload({"texts": ["one more"]})), timeout=60)
    assert status_of(e.value) == ("RESOURCE_EXHAUSTED", "TOO_MANY_CALLS")
    assert retry_delay_s(e.value) >= 0.05
    await asyncio.gather(*holders)
    assert server.state.active_calls == 0


async def test_burst_every_call_answered_and_retries_succeed(server, stub):
    """150 concurrent callers against a 32-prompt queue and 8 call slots: each one is answered
    at once (OK or RESOURCE_EXHAUSTED), and callers that wait for RetryInfo all get served."""
    first_attempt: dict[str, int] = {}

    async def caller(k: int):
        texts = _texts(3, f"burst{k}")
        for attempt in range(60):
            start = time.monotonic()
            try:
                r = await stub.Process(pb.ProcessRequest(data=json_payload({"texts": texts, "tag": k})),
                                       timeout=30)
            except grpc.aio.AioRpcError as e:
                code, reason = assert_documented(e)
                assert code == "RESOURCE_EXHAUSTED", (code, reason, e.details())
                assert time.monotonic() - start < 5  # a refusal is immediate, never a hang
                if attempt == 0:
                    first_attempt[reason] = first_attempt.get(reason, 0) + 1
                await asyncio.sleep(retry_delay_s(e))
                continue
            assert r.data.json["tag"] == k and len(r.data.json["norms"]) == 3
            return attempt
        raise AssertionError(f"caller {k} never got through")

    start = time.monotonic()
    attempts = await asyncio.wait_for(asyncio.gather(*(caller(k) for k in range(150))), 120)
    print(f"\nburst: 150 callers served in {time.monotonic() - start:.1f}s; first-attempt refusals "
          f"{first_attempt}; most attempts {max(attempts) + 1}")
    assert sum(first_attempt.values()) > 0, "the burst never overloaded the server"
    assert max(attempts) > 0
    assert server.state.active_calls == 0 and server.state.engine.stats.queued_prompts == 0
