"""The CPU side lane (engine/core.py): under load a second thread runs batches beside the
core thread's. Results must be exactly what a lone request gets, nothing may be lost or
left waiting (abort, shutdown), and without the lane batches never overlap."""

from __future__ import annotations

import asyncio
import itertools

import pytest
import torch

from poolstream.engine import EngineDeadError
from tests.engine.conftest import first, make_corpus, wait_until

N = 160


def overlapping_batches(engine) -> int:
    """Pairs of batches whose execution intervals intersect (only possible with two lanes)."""
    recs = sorted(engine.stats.recent_batches, key=lambda b: b.started)
    return sum(1 for a, b in itertools.combinations(recs, 2) if b.started < a.finished and a.started < b.finished)


async def test_side_lane_results_equal_lone_requests_and_batches_overlap(make_engine):
    texts = make_corpus(N, seed=77)
    engine = await make_engine(num_threads=2, max_num_seqs=8)
    assert engine._core.side_lane
    # Reference: each prompt alone (one batch at a time: the core thread with both threads).
    alone = [await first(engine.encode(t, None, f"alone-{i}")) for i, t in enumerate(texts[:24])]
    assert overlapping_batches(engine) == 0
    outs = await asyncio.gather(*(first(engine.encode(t, None, f"load-{i}")) for i, t in enumerate(texts)))
    assert [o.request_id for o in outs] == [f"load-{i}" for i in range(N)]
    for ref, out in zip(alone, outs):
        assert ref.prompt_token_ids == out.prompt_token_ids and ref.truncated == out.truncated
        assert torch.allclose(ref.outputs.data, out.outputs.data, atol=1e-5, rtol=0)
    stats = engine.stats
    assert stats.prompts_executed == 24 + N and stats.queued_prompts == 0 and stats.running_prompts == 0
    assert overlapping_batches(engine) > 0, "the side lane never ran a batch beside the core thread"


async def test_without_side_lane_batches_never_overlap(make_engine):
    engine = await make_engine(num_threads=2, max_num_seqs=8, cpu_side_lane=False)
    assert not engine._core.side_lane
    await asyncio.gather(*(first(engine.encode(t, None, f"r{i}")) for i, t in enumerate(make_corpus(64))))
    assert engine.stats.prompts_executed == 64
    assert overlapping_batches(engine) == 0


async def test_cancel_with_both_lanes_busy_leaves_nothing_behind(make_engine):
    engine = await make_engine(num_threads=2, max_num_seqs=4)
    tasks = [asyncio.ensure_future(first(engine.encode(t, None, f"c{i}"))) for i, t in enumerate(make_corpus(N))]
    await wait_until(lambda: engine.stats.prompts_executed >= 8)
    for t in tasks[::2]:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await wait_until(lambda: engine.stats.queued_prompts == 0 and engine.stats.running_prompts == 0)
    stats = engine.stats
    assert stats.prompts_executed + stats.prompts_aborted == N
    assert all(t.cancelled() or t.result().finished for t in tasks)
    assert not engine._requests  # no request left registered


async def test_shutdown_with_both_lanes_busy_fails_the_queue_and_stops_both(make_engine):
    engine = await make_engine(num_threads=2, max_num_seqs=4)
    tasks = [asyncio.ensure_future(first(engine.encode(t, None, f"s{i}"))) for i, t in enumerate(make_corpus(N))]
    await wait_until(lambda: engine.stats.prompts_executed >= 8)
    await engine.shutdown()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    done = [r for r in results if not isinstance(r, BaseException)]
    failed = [r for r in results if isinstance(r, BaseException)]
    assert done and failed and len(done) + len(failed) == N
    assert all(isinstance(e, EngineDeadError) for e in failed)
    assert not engine._core.thread.is_alive() and not engine._core.side_thread.is_alive()
    with pytest.raises(EngineDeadError):
        await first(engine.encode("after", None, "after"))


def test_throughput_estimate_counts_overlapping_batches_once():
    """Two lanes, 2-prompt batches of 100 ms each, 1 ms apart: 40 prompts/s in all. (A mean of
    per-batch rates would read the 1 ms gaps as 2000 prompts/s and promise far too short waits.)"""
    from poolstream.engine.stats import StatsTracker

    st = StatsTracker()
    t = 0.0
    for _ in range(50):
        st.record_batch(("a", "b"), 10, 10, t, t + 0.100)
        st.record_batch(("c", "d"), 10, 10, t + 0.001, t + 0.101)
        t += 0.100
    assert 30 < st.throughput_prompts_per_s < 50, st.throughput_prompts_per_s
    st.queued_prompts = 40
    assert 0.8 < st.estimate_wait_s() < 1.4
