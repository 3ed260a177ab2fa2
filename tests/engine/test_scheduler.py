"""Scheduler policy on synthetic requests (no model, no threads)."""

from __future__ import annotations

import itertools
import weakref

import torch

from poolstream.engine.request import EngineRequest, RequestStatus
from poolstream.engine.scheduler import Scheduler
from poolstream.pooling_params import PoolingParams

_seq = itertools.count()


def req(rid: str, cost: int = 10, priority: int = 0, group=("tokens",), deadline=None) -> EngineRequest:
    r = EngineRequest(request_id=rid, kind="tokens" if group[0] == "tokens" else "tensors", prompt=None,
                      params=PoolingParams(), normalize=True, dimensions=None, priority=priority,
                      deadline=deadline, arrival=0.0, seq=next(_seq))
    r.cost, r.group, r.token_ids = cost, group, [0] * cost
    return r


def ids(batch) -> list[str]:
    return [r.request_id for r in batch]


def drain(s: Scheduler) -> list[list[str]]:
    out = []
    while batch := s.schedule():
        out.append(ids(batch))
    return out


def test_priority_then_fifo_and_max_num_seqs():
    s = Scheduler(10_000, max_num_seqs=2)
    for r in [req("l0", priority=5), req("h0", priority=-1), req("m0"), req("l1", priority=5), req("h1", priority=-1)]:
        s.add(r)
    assert drain(s) == [["h0", "h1"], ["m0", "l0"], ["l1"]]


def test_strict_priority_never_lets_lower_priority_jump_ahead():
    s = Scheduler(10_000, max_num_seqs=8, pad_slack_tokens=0, pad_ratio=0.0)
    s.add(req("urgent-long", cost=100, priority=0))
    s.add(req("urgent-short", cost=5, priority=0))  # too much padding next to the head
    s.add(req("lazy", cost=100, priority=1))  # fits the head perfectly, but must wait
    assert drain(s) == [["urgent-long"], ["urgent-short"], ["lazy"]]


def test_token_budget_counts_padding():
    s = Scheduler(max_num_batched_tokens=100, max_num_seqs=64, pad_slack_tokens=1000, pad_ratio=10)
    for i in range(5):
        s.add(req(f"r{i}", cost=30))
    # 3 * 30 = 90 <= 100; a 4th would make 120.
    assert [len(b) for b in drain(s)] == [3, 2]
    s.add(req("short", cost=10))
    s.add(req("long", cost=60))  # padded: 60 * 2 = 120 > 100
    assert drain(s) == [["short"], ["long"]]


def test_oversized_head_still_runs_alone():
    s = Scheduler(max_num_batched_tokens=50, max_num_seqs=4)
    s.add(req("huge", cost=500))
    s.add(req("small", cost=5))
    assert drain(s) == [["huge"], ["small"]]


def test_length_aware_grouping_keeps_padding_small():
    s = Scheduler(100_000, max_num_seqs=64, pad_slack_tokens=32, pad_ratio=0.1)
    lengths = [10, 200, 12, 190, 11, 210, 9, 205]
    for i, n in enumerate(lengths):
        s.add(req(f"r{i}-{n}", cost=n))
    batches = drain(s)
    assert batches == [["r0-10", "r4-11", "r6-9", "r2-12"], ["r1-200", "r7-205", "r3-190", "r5-210"]]


def test_tensor_prompts_batch_by_identical_shape_and_sum_costs():
    a = ("tensors", ("pixel_values", (3, 8, 8)))
    b = ("tensors", ("pixel_values", (3, 16, 16)))
    s = Scheduler(max_num_batched_tokens=10, max_num_seqs=64)
    for i, g in enumerate([a, b, a, a, b, a]):
        s.add(req(f"t{i}", cost=4 if g == a else 16, group=g))
    s.add(req("text", cost=4))
    # Shape-a prompts cost 4: two fit the budget of 10; shape b runs alone (16 > 10, head).
    assert drain(s) == [["t0", "t2"], ["t1"], ["t3", "t5"], ["t4"], ["text"]]


def test_aborted_and_expired_requests_are_skipped():
    s = Scheduler(10_000, max_num_seqs=8)
    gone, late, ok = req("gone"), req("late", deadline=5.0), req("ok", deadline=50.0)
    for r in (gone, late, ok):
        s.add(r)
    gone.status = RequestStatus.ABORTED
    assert s.expire(now=1.0) == []
    expired = s.expire(now=10.0)
    assert expired == [late]
    late.status = RequestStatus.EXPIRED
    assert drain(s) == [["ok"]]
    assert not s.has_waiting()


def test_dead_entries_are_compacted():
    s = Scheduler(10_000, max_num_seqs=8)
    for i in range(10_000):
        r = req(f"r{i}", deadline=1e9)
        s.add(r)
        r.status = RequestStatus.ABORTED  # aborted while queued, never reached by schedule()
    assert sum(len(d) for d in s._levels.values()) < 5_000
    assert len(s._deadlines) < 5_000
    assert drain(s) == []


def _tensor_req(rid: str, deadline: float) -> tuple[EngineRequest, weakref.ref]:

    r = req(rid, group=("tensors", ()), deadline=deadline)
    pixels = torch.zeros(4, 8, 8)
    r.prompt = {"multi_modal_data": {"pixel_values": pixels}}
    r.tensors = {"pixel_values": pixels}
    return r, weakref.ref(pixels)


def test_scheduled_and_aborted_requests_leave_the_deadline_heap():
    """A far-off deadline must not keep a request that left the queue (and its tensors) alive."""
    import gc

    s = Scheduler(10_000, max_num_seqs=1)
    done, done_ref = _tensor_req("done", deadline=1e9)
    gone, gone_ref = _tensor_req("gone", deadline=1e9)
    s.add(done)
    s.add(gone)
    [batch] = [s.schedule()]
    assert batch == [done]
    gone.status = RequestStatus.ABORTED
    s.forget(gone)
    assert all(e[2] is None for e in s._deadlines)
    assert s._deadline_entry == {}
    # What the engine does with final requests: drop their inputs; then nothing holds the tensors.
    done.status = RequestStatus.FINISHED
    for r in (done, gone):
        r.drop_inputs()
    del done, gone, batch
    assert drain(s) == []
    gc.collect()
    assert done_ref() is None and gone_ref() is None
    assert s.expire(now=2e9) == []  # neutralised entries pop without effect
    assert s._deadlines == []
