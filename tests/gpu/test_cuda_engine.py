"""The engine on CUDA: embeddings against sentence-transformers, batching, per-prompt
streaming, abort, the queue bound and a responsive event loop.

The figures each test prints (max abs error, batch sizes, loop gaps) are the
point of a run on a GPU machine; bench/gpu_check.sh collects them.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import torch

from poolstream.config import EngineConfig, ModelConfig, PoolstreamConfig
from poolstream.engine import AsyncEngine, EngineOverloadedError, RequestAbortedError
from tests.engine.conftest import first, long_text, loop_gaps, make_corpus


async def start_engine(model_dir: str, **engine_kwargs) -> AsyncEngine:
    config = PoolstreamConfig(ModelConfig.from_dir(model_dir), EngineConfig(device="cuda", **engine_kwargs))
    engine = await asyncio.to_thread(AsyncEngine.from_config, config)
    await engine.start()
    return engine


async def encode_concurrently(engine: AsyncEngine, texts: list[str], tag: str) -> tuple[list, torch.Tensor]:
    outs = await asyncio.gather(*(first(engine.encode(t, None, f"{tag}-{i}")) for i, t in enumerate(texts)))
    return outs, torch.stack([o.outputs.data for o in outs])


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return make_corpus(256)  # one in 16 truncates at 256 tokens


async def test_float32_on_cuda_matches_st(model_dir, st_fp32, corpus):
    engine = await start_engine(model_dir, dtype="float32")
    try:
        assert engine.model_info.compute_dtype == torch.float32
        outs, ours = await encode_concurrently(engine, corpus, "f32")
        assert ours.device.type == "cpu" and ours.dtype == torch.float32  # one D2H copy per batch
        ref = st_fp32.encode(corpus, batch_size=16, convert_to_tensor=True).cpu()
        err = (ours - ref).abs().max().item()
        print(f"\ncuda float32 vs sentence-transformers (cuda float32): max abs {err:.2e} over "
              f"{len(corpus)} sentences in {engine.stats.batches_executed} batches")
        # CPU matches to 1e-5 (tests/engine); CUDA kernels sum in another order.
        assert err < 1e-4
        assert sum(o.truncated for o in outs) >= 10
        assert engine.stats.batches_executed < len(corpus)
    finally:
        await engine.shutdown()


@pytest.mark.parametrize("dtype", ["auto", "bfloat16"])
async def test_half_precision_on_cuda_is_close_to_st(model_dir, st_fp32, corpus, dtype):
    engine = await start_engine(model_dir, dtype=dtype)
    try:
        want = torch.float16 if dtype == "auto" else torch.bfloat16  # auto = float16 on CUDA
        assert engine.model_info.compute_dtype == want
        _, ours = await encode_concurrently(engine, corpus, dtype)
        assert ours.dtype == torch.float32  # outputs are float32 whatever the compute dtype
        ref = st_fp32.encode(corpus, batch_size=16, convert_to_tensor=True).cpu()
        cos = torch.nn.functional.cosine_similarity(ours, ref, dim=-1)
        err = (ours - ref).abs().max().item()
        print(f"\ncuda {want} vs ST float32: min cosine {cos.min().item():.6f}, max abs {err:.2e}")
        assert cos.min().item() > (0.999 if want == torch.float16 else 0.99)
    finally:
        await engine.shutdown()


async def test_batching_streaming_and_abort_on_cuda(model_dir, corpus):
    engine = await start_engine(model_dir, max_num_seqs=8)
    try:
        received: dict[str, float] = {}
        texts = corpus * 4  # 1024 prompts, 8 per batch: >= 128 batches

        async def one(i: int, t: str):
            try:
                out = await first(engine.encode(t, None, f"s-{i}"))
            except RequestAbortedError:
                return None
            received[out.request_id] = time.monotonic()
            return out

        tasks = [asyncio.create_task(one(i, t)) for i, t in enumerate(texts)]
        await asyncio.sleep(0)  # all admitted, most still queued
        victims = [f"s-{i}" for i in range(len(texts) - 200, len(texts))]
        engine.abort(victims)
        outs = await asyncio.gather(*tasks)
        aborted = sum(o is None for o in outs)
        batches = engine.stats.recent_batches
        print(f"\ncuda: {engine.stats.batches_executed} batches, avg {engine.stats.avg_batch_size:.1f} prompts, "
              f"{aborted} of 200 aborted before running")
        assert aborted > 0 and engine.stats.prompts_aborted == aborted
        assert all(o is not None for o in outs[: len(texts) - 200])
        executed = {rid for b in batches for rid in b.request_ids}
        assert not executed & {v for v, o in zip(victims, outs[-200:]) if o is None}
        assert any(b.size > 1 for b in batches) and all(b.size <= 8 for b in batches)
        # Per-prompt streaming: the first batch's prompts arrived before the last batch ended.
        first_batch, last_batch = batches[0], batches[-1]
        assert all(received[rid] < last_batch.finished for rid in first_batch.request_ids if rid in received)
    finally:
        await engine.shutdown()


async def test_queue_bound_on_cuda(model_dir):
    engine = await start_engine(model_dir, max_queued_prompts=16, max_num_seqs=4)
    try:
        async def one(i: int):
            try:
                return await first(engine.encode(long_text(), None, f"q-{i}"))
            except EngineOverloadedError as e:
                return e

        outs = await asyncio.gather(*(one(i) for i in range(200)))
        rejected = [o for o in outs if isinstance(o, EngineOverloadedError)]
        print(f"\ncuda: {len(rejected)} of 200 refused at a bound of 16 queued prompts")
        assert rejected and all(e.retry_after_s > 0 for e in rejected)
        assert engine.stats.prompts_rejected == len(rejected)
        assert engine.stats.prompts_executed == 200 - len(rejected)
        await first(engine.encode("room again", None, "later"))
    finally:
        await engine.shutdown()


async def test_event_loop_stays_responsive_on_cuda(model_dir, corpus):
    """64 clients, each sending one prompt at a time: the engine stays saturated
    while the loop's ticker measures how long it is kept from running."""
    engine = await start_engine(model_dir)
    try:
        work = list(enumerate(corpus * 8))

        async def client() -> None:
            while work:
                i, text = work.pop()
                await first(engine.encode(text, None, f"load-{i}"))

        async with loop_gaps() as gaps:
            await asyncio.gather(*(client() for _ in range(64)))
        gaps.sort()
        print(f"\ncuda: event loop gaps over {len(gaps)} ticks of 5 ms: p50 {gaps[len(gaps) // 2] * 1e3:.1f} ms, "
              f"max {gaps[-1] * 1e3:.1f} ms, while the engine ran {engine.stats.batches_executed} batches "
              f"(avg {engine.stats.avg_batch_size:.1f} prompts)")
        assert gaps[-1] < 0.5
    finally:
        await engine.shutdown()
