"""A plugin that raises or hangs: documented statuses, bounded time, engine work aborted, server fine.

``--plugin-timeout`` (LimitsConfig.plugin_timeout_s) ends a hung hook with DEADLINE_EXCEEDED
``PLUGIN_TIMEOUT``; time the plugin spends waiting for the engine never counts.
One in-process server (dummy_echo, batches of 2) serves the whole module.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import grpc
import pytest
import pytest_asyncio
from poolstream.config import LimitsConfig
from poolstream.v1 import pooling_service_pb2 as pb
from poolstream.v1 import pooling_service_pb2_grpc as pb_grpc

from tests.faults._common import assert_documented, status_of
from tests.grpc_helpers import error_details, json_payload
from tests.ops._util import inproc

pytestmark = pytest.mark.asyncio(loop_scope="module")
TIMEOUT_S = 0.6


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server():
    async with inproc(limits=LimitsConfig(plugin_timeout_s=TIMEOUT_S), max_num_seqs=2) as s:
        yield s


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stub(server):
    async with grpc.aio.insecure_channel(server.address) as channel:
        yield pb_grpc.PoolingServiceStub(channel)


def _set_plugin_timeout(server, seconds: float) -> None:
    config = server.state.config
    server.state.config = replace(config, limits=replace(config.limits, plugin_timeout_s=seconds))


def _req(**fields) -> pb.ProcessRequest:
    return pb.ProcessRequest(data=json_payload({"texts": ["alpha", "beta", "gamma"], **fields}))


@pytest.mark.parametrize(("fields", "code", "reason"), [
    ({"fail": "parse"}, "INVALID_ARGUMENT", "INVALID_PAYLOAD"),
    ({"fail": "pre"}, "INVALID_ARGUMENT", "INVALID_PAYLOAD"),
    ({"fail": "pre_internal"}, "INTERNAL", "PRE_PROCESS_FAILED"),
    ({"fail": "post"}, "INTERNAL", "POST_PROCESS_FAILED"),
    ({"hang_post_s": 60}, "DEADLINE_EXCEEDED", "PLUGIN_TIMEOUT"),
    ({"hang_pre_s": 2}, "DEADLINE_EXCEEDED", "PLUGIN_TIMEOUT"),
    ({"texts": ["a", "b", "c", "d"], "hang_s": 60}, "DEADLINE_EXCEEDED", "PLUGIN_TIMEOUT"),
])
@pytest.mark.parametrize("streaming", [False, True], ids=["Process", "ProcessStream"])
async def test_plugin_raises_or_hangs(server, stub, fields, code, reason, streaming):
    start = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as e:
        if streaming:
            _ = [ev async for ev in stub.ProcessStream(pb.ProcessStreamRequest(data=_req(**fields).data),
                                                       timeout=30)]
        else:
            await stub.Process(_req(**fields), timeout=30)
    elapsed = time.monotonic() - start
    assert status_of(e.value) == (code, reason), e.value.details()
    assert_documented(e.value, allow_internal=True)
    if code == "INVALID_ARGUMENT":
        assert error_details(e.value)["violations"][0][0] == "data"
    if reason == "PLUGIN_TIMEOUT":
        # Ended by the watchdog, long before the hang or the call's own deadline would end it.
        assert TIMEOUT_S <= elapsed < TIMEOUT_S + 2.5, elapsed
        stage = "pre_process" if "hang_pre_s" in fields else "post_process"
        assert error_details(e.value)["reason"] == "PLUGIN_TIMEOUT" and stage in e.value.details()
    # The server is fine afterwards and answers normally.
    ok = await stub.Process(_req(tag="after"), timeout=30)
    assert ok.data.json["tag"] == "after"
    assert server.state.active_calls == 0


async def test_slow_engine_does_not_trip_the_plugin_timeout(server, stub):
    """A long queue (120-prompt requests in batches of 2) is engine time: a 0.2 s plugin timeout holds."""
    _set_plugin_timeout(server, 0.2)
    try:
        texts = [f"a somewhat longer sentence number {i} to keep the engine busy" for i in range(120)]
        start = time.monotonic()
        results = await asyncio.gather(*(
            stub.Process(pb.ProcessRequest(data=json_payload({"texts": texts, "tag": k})), timeout=120)
            for k in range(3)))
        elapsed = time.monotonic() - start
    finally:
        _set_plugin_timeout(server, TIMEOUT_S)
    assert [r.data.json["tag"] for r in results] == [0, 1, 2]
    assert all(len(r.data.json["norms"]) == 120 for r in results)
    assert elapsed > 1.0  # the engine really took several plugin timeouts


async def test_hung_plugin_frees_its_engine_work(server, stub):
    """A plugin stuck on its first output: stopped after the timeout, its queued prompts aborted."""
    engine = server.state.engine
    before = engine.stats
    texts = [f"sentence {i}" for i in range(400)]
    start = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.Process(pb.ProcessRequest(data=json_payload({"texts": texts, "hang_s": 3600})), timeout=120)
    elapsed = time.monotonic() - start
    assert status_of(e.value) == ("DEADLINE_EXCEEDED", "PLUGIN_TIMEOUT")
    at_error = engine.stats
    assert elapsed < TIMEOUT_S + 2.5
    await asyncio.sleep(0.3)
    settled = engine.stats
    executed = settled.prompts_executed - before.prompts_executed
    aborted = settled.prompts_aborted - before.prompts_aborted
    assert executed + aborted == 400, (executed, aborted)
    assert aborted > 0, (executed, aborted)  # the part still queued never ran
    # Freed at once: at most the batches already running finished after the error: 2 prompts
    # each, and up to two batches (the core thread's and, on CPU, the side lane's).
    in_flight = 2 * (2 if engine._core.side_lane else 1)
    assert settled.prompts_executed - at_error.prompts_executed <= in_flight
    assert settled.queued_prompts == 0 and settled.running_prompts == 0
