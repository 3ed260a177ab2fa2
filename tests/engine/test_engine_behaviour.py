"""AsyncEngine behaviour on the real model: batching, streaming, priority, abort,
overload, deadlines, truncation, and an event loop that stays responsive.

Ordering tests occupy the core thread with a "blocker" batch of long prompts,
then admit the requests under test in one event-loop step, so they are all
queued together before the scheduler looks at them.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from poolstream.engine import (
    DeadlineExceededError,
    EngineOverloadedError,
    InvalidPromptError,
    RequestAbortedError,
)
from poolstream.pooling_params import PoolingParams
from tests.engine.conftest import first, long_text, loop_gaps, make_corpus, wait_until


async def start_blocker(engine, n: int = 8) -> list[asyncio.Task]:
    """Keep the core busy with one batch of n 256-token prompts; return once it runs."""
    tasks = [asyncio.create_task(first(engine.encode(long_text(), None, f"blocker-{i}"))) for i in range(n)]
    await wait_until(lambda: engine.stats.running_prompts > 0)
    return tasks


def executed_ids(engine) -> list[str]:
    return [rid for b in engine.stats.recent_batches for rid in b.request_ids]


async def test_concurrent_requests_share_batches(make_engine):
    engine = await make_engine()
    texts = make_corpus(40)[4:36]
    outs = await asyncio.gather(*(first(engine.encode(t, None, f"c-{i}")) for i, t in enumerate(texts)))
    assert [o.request_id for o in outs] == [f"c-{i}" for i in range(len(texts))]
    batches = engine.stats.recent_batches
    assert any(len(set(b.request_ids)) > 1 for b in batches)
    assert sum(b.size for b in batches) == len(texts)
    st = engine.stats
    assert st.prompts_executed == len(texts) and st.queued_prompts == 0 and st.running_prompts == 0
    # Each output says when it was admitted and when its batch ran; a batch's prompts share its times.
    for o in outs:
        assert o.timing.arrival <= o.timing.started < o.timing.finished
    by_batch = {rid: b for b in batches for rid in b.request_ids}
    for o in outs:
        b = by_batch[o.request_id]
        assert (o.timing.started, o.timing.finished) == (b.started, b.finished)
    assert st.avg_batch_size > 1 and st.total_tokens == sum(len(o.prompt_token_ids) for o in outs)


async def test_outputs_stream_per_batch(make_engine):
    """An early prompt's output arrives before a later batch has finished."""
    engine = await make_engine(max_num_seqs=2)
    received: dict[str, float] = {}

    async def one(i: int) -> None:
        out = await first(engine.encode(f"sentence number {i} " * 20, None, f"s-{i}"))
        received[out.request_id] = time.monotonic()

    await asyncio.gather(*(one(i) for i in range(8)))
    batches = engine.stats.recent_batches
    assert len(batches) >= 4 and all(b.size <= 2 for b in batches)
    first_batch, last_batch = batches[0], batches[-1]
    for rid in first_batch.request_ids:
        assert received[rid] < last_batch.finished


async def test_priority_then_fifo(make_engine):
    engine = await make_engine(max_num_seqs=1)
    blocker = await start_blocker(engine, 4)
    spec = [("low-0", 5), ("high-0", -1), ("mid-0", 0), ("low-1", 5), ("high-1", -1), ("mid-1", 0)]
    tasks = [asyncio.create_task(first(engine.encode("same length text", None, rid, priority=p)))
             for rid, p in spec]
    await asyncio.gather(*blocker, *tasks)
    order = [rid for rid in executed_ids(engine) if not rid.startswith("blocker")]
    assert order == ["high-0", "high-1", "mid-0", "mid-1", "low-0", "low-1"]


async def test_abort_queued_request_is_never_executed(make_engine):
    engine = await make_engine()
    blocker = await start_blocker(engine)
    victim = asyncio.create_task(first(engine.encode("abort me", None, "victim")))
    keeper = asyncio.create_task(first(engine.encode("keep me", None, "keeper")))
    await asyncio.sleep(0)  # both admitted
    assert engine.stats.queued_prompts == 2
    engine.abort("victim")
    assert engine.stats.prompts_aborted == 1 and engine.stats.queued_prompts == 1
    with pytest.raises(RequestAbortedError):
        await victim
    assert (await keeper).request_id == "keeper"
    await asyncio.gather(*blocker)
    assert "victim" not in executed_ids(engine)
    assert "keeper" in executed_ids(engine)
    engine.abort(["victim", "unknown-id"])  # finished / unknown ids are ignored


async def test_cancelled_consumer_aborts_its_request(make_engine):
    engine = await make_engine()
    blocker = await start_blocker(engine)
    task = asyncio.create_task(first(engine.encode("cancel me", None, "cancelled")))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine.stats.prompts_aborted == 1
    await asyncio.gather(*blocker)
    await first(engine.encode("after", None, "after"))  # the engine keeps going
    assert "cancelled" not in executed_ids(engine)
    # The id is free again once the request is gone.
    assert (await first(engine.encode("again", None, "cancelled"))).request_id == "cancelled"


async def test_queue_bound_raises_overloaded(make_engine):
    engine = await make_engine(max_queued_prompts=4)
    blocker = await start_blocker(engine, 4)  # running, so no longer counted as queued
    tasks = [asyncio.create_task(first(engine.encode(f"q {i}", None, f"q-{i}"))) for i in range(4)]
    await asyncio.sleep(0)
    assert engine.stats.queued_prompts == 4
    with pytest.raises(EngineOverloadedError) as err:
        await first(engine.encode("one too many", None, "overflow"))
    assert err.value.retry_after_s > 0
    assert engine.stats.prompts_rejected == 1
    await asyncio.gather(*blocker, *tasks)
    assert engine.estimate_wait_s() == 0.0  # nothing queued any more
    await first(engine.encode("room again", None, "later"))


async def test_deadline_expired_prompts_are_dropped(make_engine):
    engine = await make_engine()
    with pytest.raises(DeadlineExceededError):  # already past at admission
        await first(engine.encode("late", None, "late", deadline=time.monotonic() - 1))
    blocker = await start_blocker(engine)
    assert engine.estimate_wait_s() >= 0.0
    expiring = asyncio.create_task(first(engine.encode("x", None, "expiring", deadline=time.monotonic() + 0.001)))
    patient = asyncio.create_task(first(engine.encode("y", None, "patient", deadline=time.monotonic() + 600)))
    with pytest.raises(DeadlineExceededError):
        await expiring
    assert (await patient).request_id == "patient"
    await asyncio.gather(*blocker)
    assert engine.stats.prompts_expired == 1
    assert "expiring" not in executed_ids(engine)


async def test_truncation_flag_and_truncate_false(make_engine):
    engine = await make_engine()
    short = await first(engine.encode("short text", None, "short"))
    assert not short.truncated
    long = await first(engine.encode(long_text(400), None, "long"))
    assert long.truncated and len(long.prompt_token_ids) == 256
    assert long.prompt_token_ids[0] == 101 and long.prompt_token_ids[-1] == 102  # [CLS] ... [SEP] kept
    cut = await first(engine.encode(long_text(400), PoolingParams(truncate_prompt_tokens=10), "cut"))
    assert cut.truncated and len(cut.prompt_token_ids) == 10
    fits = await first(engine.encode("short text", PoolingParams(truncate=False), "fits"))
    assert not fits.truncated
    with pytest.raises(InvalidPromptError, match="truncate"):
        await first(engine.encode(long_text(400), PoolingParams(truncate=False), "too-long"))
    with pytest.raises(InvalidPromptError):
        await first(engine.encode({"prompt_token_ids": list(range(1000, 1300))}, PoolingParams(truncate=False),
                                  "too-long-ids"))
    toks = await first(engine.encode({"prompt_token_ids": list(range(1000, 1300))}, None, "long-ids"))
    assert toks.truncated and len(toks.prompt_token_ids) == 256
    assert engine.stats.prompts_failed == 2


@pytest.mark.parametrize("prompt, params, match", [
    ({"prompt_token_ids": []}, None, "non-empty"),
    ({"prompt_token_ids": [101, -5, 102]}, None, "token ids"),
    ({"prompt_token_ids": [101, 999_999, 102]}, None, "token ids"),
    ({"prompt_token_ids": ["a", "b"]}, None, "integers"),
    (42, None, "prompt"),
    ({"nothing": 1}, None, "prompt"),
    ("text", PoolingParams(dimensions=0), "dimensions"),
    ("text", PoolingParams(dimensions=1000), "dimensions"),
    ("text", PoolingParams(truncate_prompt_tokens=1000), "max_model_len"),
    ({"prompt_token_ids": [1], "multi_modal_data": {"pixel_values": __import__("torch").zeros(3)}}, None,
     "tensor"),
])
async def test_invalid_prompts(make_engine, prompt, params, match):
    engine = await make_engine()
    with pytest.raises(InvalidPromptError, match=match):
        await first(engine.encode(prompt, params, "bad"))
    assert "bad" not in executed_ids(engine)


async def test_duplicate_request_id_rejected(make_engine):
    engine = await make_engine()
    blocker = await start_blocker(engine)
    task = asyncio.create_task(first(engine.encode("one", None, "dup")))
    await asyncio.sleep(0)
    with pytest.raises(InvalidPromptError, match="already in flight"):
        await first(engine.encode("two", None, "dup"))
    await asyncio.gather(task, *blocker)


async def test_event_loop_stays_responsive_under_load(make_engine):
    engine = await make_engine()
    texts = make_corpus(96)
    async with loop_gaps() as gaps:
        await asyncio.gather(*(first(engine.encode(t, None, f"load-{i}")) for i, t in enumerate(texts)))
    worst = max(gaps)
    print(f"\nevent loop: {len(gaps)} ticks of 5 ms, max gap {worst * 1e3:.1f} ms while the engine "
          f"ran {engine.stats.batches_executed} batches")
    assert worst < 0.5


async def test_shutdown_fails_queued_and_rejects_new(make_engine):
    from poolstream.engine import EngineDeadError

    engine = await make_engine()
    blocker = await start_blocker(engine)
    queued = asyncio.create_task(first(engine.encode("queued at shutdown", None, "queued")))
    await asyncio.sleep(0)
    await engine.shutdown()
    with pytest.raises(EngineDeadError):
        await queued
    await asyncio.gather(*blocker)  # the batch in flight completed
    with pytest.raises(EngineDeadError):
        await first(engine.encode("after shutdown", None, "late"))
    assert not engine.is_running


async def test_model_info(make_engine):
    import torch

    info = (await make_engine()).model_info
    assert info.architecture == "BertModel" and info.output_shape == (384,)
    assert info.output_dtype == torch.float32 and info.compute_dtype == torch.float32
    assert info.max_model_len == 256 and info.pooling == "mean" and info.normalize is True
    assert info.device == "cpu" and info.tensor_inputs == ()


async def test_submit_and_release(make_engine):
    """submit(): admitted at once, the future resolves with the output; release() of an
    unfinished request aborts it (never executed) and frees its id."""
    engine = await make_engine()
    blocker = await start_blocker(engine)
    kept = engine.submit("kept", None, "sub-kept")
    dropped = engine.submit("dropped", None, "sub-dropped")
    assert engine.stats.queued_prompts == 2
    engine.release(dropped)
    assert dropped.future.cancelled() and engine.stats.prompts_aborted == 1
    out = await kept.future
    engine.release(kept)
    assert out.request_id == "sub-kept" and out.outputs.data.shape == (384,)
    await asyncio.gather(*blocker)
    assert "sub-dropped" not in executed_ids(engine)
    # Both ids are free again.
    again = engine.submit("again", None, "sub-dropped")
    assert (await again.future).request_id == "sub-dropped"
    engine.release(again)
    with pytest.raises(InvalidPromptError):
        engine.submit("", PoolingParams(dimensions=10_000), "sub-bad")  # admission errors raise here
    # A future cancelled by its awaiter still leaves the queue on release().
    blocker = await start_blocker(engine)
    awaited = engine.submit("awaited then cancelled", None, "sub-awaited")
    waiter = asyncio.ensure_future(awaited.future)
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.sleep(0)
    assert awaited.future.cancelled()
    aborted = engine.stats.prompts_aborted
    engine.release(awaited)
    assert engine.stats.prompts_aborted == aborted + 1
    await asyncio.gather(*blocker)
    assert "sub-awaited" not in executed_ids(engine)
