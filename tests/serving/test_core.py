"""The serving core without any transport: what an HTTP door or the in-process API gets.

A real engine (the embedded all-MiniLM-L6-v2) under a ServingCore; no gRPC involved."""

from __future__ import annotations

import asyncio
import time

import pytest

from poolstream.config import EngineConfig, LimitsConfig, ModelConfig, PoolstreamConfig, default_model_path
from poolstream.engine import AsyncEngine
from poolstream.plugins.io_processors import select_io_processor
from poolstream.pooling_params import PoolingParams
from poolstream.serving import CallContext, CallResult, Code, PromptResult, PromptsReady, ServingCore, ServingError


@pytest.fixture
async def core():
    config = PoolstreamConfig(ModelConfig.from_dir(default_model_path(), io_processor_plugin="text_embedding"),
                              EngineConfig(num_threads=1, max_num_seqs=2, max_queued_prompts=64),
                              LimitsConfig(max_prompts_per_request=40, max_concurrent_calls=3))
    engine = await asyncio.to_thread(AsyncEngine.from_config, config)
    await engine.start()
    core = ServingCore(config, select_io_processor(config))
    core.attach_engine(engine)
    yield core
    await engine.shutdown()


async def test_encode_yields_every_prompt_with_a_bad_one_reported_alone(core):
    prompts = ["a sentence", {"prompt_token_ids": [10**9]}, "another one"]
    ctx = CallContext(request_id="call-1")
    results = [r async for r in core.encode(prompts, PoolingParams(), ctx)]
    assert sorted(r.index for r in results) == [0, 1, 2]
    by_index = {r.index: r for r in results}
    assert by_index[0].output.outputs.data.shape == (384,) and by_index[0].output.request_id == "call-1-0"
    bad = by_index[1].error
    assert bad is not None and by_index[1].output is None
    assert (bad.code, bad.reason, bad.field_violations[0][0]) == (Code.INVALID_ARGUMENT, "INVALID_PROMPT",
                                                                   "prompts[1]")
    assert bad.code.grpc == 3 and bad.code.http_status == 400 and bad.as_dict()["reason"] == "INVALID_PROMPT"
    assert [r.completed for r in results] == [1, 2, 3] and {r.total for r in results} == {3}
    # The record the watchdog, the metrics and the timing trailers read.
    record = ctx.record
    assert record.waiting == 0 and len(record.produced) == 2 and record.batch_start is not None
    assert core.active_calls == 0


async def test_whole_call_errors_are_serving_errors(core):
    with pytest.raises(ServingError) as e:
        [r async for r in core.encode([], None, CallContext())]
    assert (e.value.code, e.value.reason) == (Code.INVALID_ARGUMENT, "INVALID_PROMPT")
    with pytest.raises(ServingError) as e:
        [r async for r in core.encode(["x"] * 41, None, CallContext())]
    assert e.value.reason == "TOO_MANY_PROMPTS"
    with pytest.raises(ServingError) as e:  # a deadline already passed
        [r async for r in core.encode(["x"], None, CallContext(deadline=time.monotonic() - 1))]
    assert (e.value.code, e.value.reason) == (Code.DEADLINE_EXCEEDED, "DEADLINE_TOO_SHORT")
    core.draining = True
    with pytest.raises(ServingError) as e:
        await core.process({"texts": ["a"]}, None, CallContext())
    assert (e.value.code, e.value.reason, e.value.code.http_status) == (Code.UNAVAILABLE, "DRAINING", 503)
    core.draining = False
    assert core.active_calls == 0


async def test_call_cap_counts_open_calls_and_retry_after(core):
    iterators = [core.encode(["x"], None, CallContext()) for _ in range(3)]
    for it in iterators:  # each admitted at its first step and held open
        await it.__anext__()
    assert core.active_calls == 3
    with pytest.raises(ServingError) as e:
        await core.process({"texts": ["a"]}, None, CallContext())
    assert e.value.reason == "TOO_MANY_CALLS" and e.value.retry_after_s is not None
    for it in iterators:
        await it.aclose()
    assert core.active_calls == 0


async def test_process_and_process_stream_events(core):
    ctx = CallContext(request_id="p-1")
    result = await core.process({"texts": ["one", "two", "three"]}, None, ctx)
    assert result.response.request_id == "p-1" and result.prompt_count == 3
    assert ctx.record.pre_done is not None and ctx.record.consumed == 3
    events = [e async for e in core.process_stream({"texts": ["one", "two"]}, None, CallContext())]
    assert isinstance(events[0], PromptsReady) and events[0].total == 2
    assert [type(e) for e in events[1:]] == [PromptResult, PromptResult, CallResult]
    with pytest.raises(ServingError) as e:
        await core.process({"texts": "not a list"}, None, CallContext())
    assert e.value.reason == "INVALID_PAYLOAD" and e.value.field_violations[0][0] == "data"


async def test_ctx_cancel_aborts_the_engine_work(core):
    engine = core.engine
    texts = [f"sentence {i} " * 30 for i in range(40)]
    ctx = CallContext()

    async def consume() -> int:
        n = 0
        async for _ in core.encode(texts, None, ctx):
            n += 1
        return n

    task = asyncio.create_task(consume())
    while engine.stats.prompts_executed < 2:
        await asyncio.sleep(0.005)
    assert ctx.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine.stats.queued_prompts == 0 and engine.stats.prompts_aborted > 0
    executed = engine.stats.prompts_executed
    await asyncio.sleep(0.2)
    assert engine.stats.prompts_executed <= executed + 4 < 40  # at most the batches already running
    assert ctx.record.waiting == 0 and core.active_calls == 0


def test_in_process_llm_goes_through_the_core():
    from poolstream.engine.errors import InvalidPromptError
    from poolstream.entrypoints.llm import LLM

    with LLM(io_processor_plugin="text_embedding", engine_config=EngineConfig(num_threads=1)) as llm:
        [out] = llm.encode({"data": {"texts": ["a", "b"]}})
        assert out.finished and out.request_id.startswith("pool-")
        outs = llm.encode(["one", "two"], request_id="r")
        assert [o.request_id for o in outs] == ["r-0", "r-1"]
        with pytest.raises(InvalidPromptError):  # the engine's own exception, as vLLM raises it
            llm.encode([{"prompt_token_ids": [10**9]}])
        with pytest.raises(ValueError):  # the plugin's payload error
            llm.process({"texts": "not a list"})
