"""Tensor prompts through the engine: grouping by shape, costs, validation."""

from __future__ import annotations

import asyncio

import pytest
import torch

from poolstream.config import EngineConfig, ModelConfig, PoolstreamConfig
from poolstream.engine import AsyncEngine, InvalidPromptError
from poolstream.models import registry
from tests.engine import tiny_tensor_model as tiny
from tests.engine.conftest import first


@pytest.fixture
async def tensor_engine(tmp_path, monkeypatch):
    monkeypatch.setitem(registry._MODELS, tiny.ARCH, ("tests.engine.tiny_tensor_model", "TinyConvSegmenter"))
    model_dir = tiny.write_model_dir(tmp_path)
    # Budget 10 "patches": two 8x8 images (4 each) per batch, a 16x16 one (16) alone.
    config = PoolstreamConfig(ModelConfig.from_dir(model_dir),
                              EngineConfig(max_num_batched_tokens=10, num_threads=1))
    engine = await asyncio.to_thread(AsyncEngine.from_config, config)
    await engine.start()
    yield engine
    await engine.shutdown()


def image(h: int, w: int, seed: int) -> torch.Tensor:
    return torch.randn(tiny.CHANNELS, h, w, generator=torch.Generator().manual_seed(seed))


async def test_tensor_prompts_grouped_by_shape(tensor_engine):
    engine = tensor_engine
    assert engine.model_info.tensor_inputs == ("pixel_values",)
    assert engine.model_info.output_shape == (tiny.CLASSES, -1, -1) and engine.model_info.max_model_len == 0
    shapes = [(8, 8), (16, 16), (8, 8), (8, 8), (16, 16), (8, 8), (8, 12)]
    images = [image(h, w, i) for i, (h, w) in enumerate(shapes)]
    # Occupy the core first so that all the others queue up together.
    blocker = asyncio.create_task(first(engine.encode(
        {"prompt_token_ids": [], "multi_modal_data": {"pixel_values": image(64, 64, 99)}}, None, "blocker")))
    await asyncio.sleep(0)
    outs = await asyncio.gather(*(
        first(engine.encode({"prompt_token_ids": [7], "multi_modal_data": {"pixel_values": img}}, None, f"t{i}"))
        for i, img in enumerate(images)))
    await blocker
    model = engine._core.runner.model
    for img, out in zip(images, outs):
        with torch.inference_mode():
            ref = model.conv(img[None])[0]
        assert out.outputs.data.shape == ref.shape and out.outputs.data.dtype == torch.float32
        assert torch.allclose(out.outputs.data, ref, atol=1e-6)
        assert out.prompt_token_ids == [7] and not out.truncated
    shape_of = {f"t{i}": s for i, s in enumerate(shapes)}
    for batch in engine.stats.recent_batches:
        members = [shape_of[r] for r in batch.request_ids if r != "blocker"]
        assert len(set(members)) <= 1  # never mixed shapes
        assert batch.num_tokens <= 10 or batch.size == 1  # budget in model-defined cost units
    assert any(b.size == 2 for b in engine.stats.recent_batches)


@pytest.mark.parametrize("prompt, match", [
    ({"multi_modal_data": {"pixel_values": torch.zeros(2, 8, 8)}}, "pixel_values must be"),
    ({"multi_modal_data": {"pixels": torch.zeros(3, 8, 8)}}, "exactly"),
    ({"multi_modal_data": {"pixel_values": torch.zeros(3, 8, 8), "extra": torch.zeros(1)}}, "exactly"),
    ("some text", "tensor inputs"),
    ({"prompt_token_ids": [1, 2]}, "tensor inputs"),
])
async def test_bad_tensor_prompts(tensor_engine, prompt, match):
    with pytest.raises(InvalidPromptError, match=match):
        await first(tensor_engine.encode(prompt, None, "bad"))


async def test_model_failure_fails_only_its_batch(tensor_engine):
    from poolstream.engine import EngineError

    bad = {"multi_modal_data": {"pixel_values": image(8, tiny.FAILING_WIDTH, 1)}}
    good = {"multi_modal_data": {"pixel_values": image(8, 8, 2)}}
    results = await asyncio.gather(first(tensor_engine.encode(bad, None, "bad")),
                                   first(tensor_engine.encode(good, None, "good")), return_exceptions=True)
    assert isinstance(results[0], EngineError) and "model failed" in str(results[0])
    assert results[1].outputs.data.shape == (tiny.CLASSES, 8, 8)
    assert tensor_engine.stats.prompts_failed == 1 and tensor_engine.is_running


async def test_core_crash_fails_pending_requests(tensor_engine, monkeypatch):
    from poolstream.engine import EngineDeadError

    def crash() -> list:
        raise RuntimeError("scheduler bug")

    monkeypatch.setattr(tensor_engine._core.scheduler, "schedule", crash)
    with pytest.raises(EngineDeadError, match="scheduler bug"):
        await first(tensor_engine.encode({"multi_modal_data": {"pixel_values": image(8, 8, 3)}}, None, "x"))
    assert not tensor_engine.is_running
    with pytest.raises(EngineDeadError):
        await first(tensor_engine.encode({"multi_modal_data": {"pixel_values": image(8, 8, 4)}}, None, "y"))


async def test_tensor_models_run_without_the_cpu_side_lane(tmp_path, monkeypatch):
    """Two raster batches in flight would double their memory: the side lane is for text models."""
    monkeypatch.setitem(registry._MODELS, tiny.ARCH, ("tests.engine.tiny_tensor_model", "TinyConvSegmenter"))
    config = PoolstreamConfig(ModelConfig.from_dir(tiny.write_model_dir(tmp_path)), EngineConfig(num_threads=2))
    engine = await asyncio.to_thread(AsyncEngine.from_config, config)
    await engine.start()
    try:
        assert not engine._core.side_lane and engine._core.side_thread is None
        out = await first(engine.encode({"prompt_token_ids": [], "multi_modal_data": {"pixel_values": image(8, 8, 1)}},
                                        None, "t"))
        assert out.outputs.data.shape == (tiny.CLASSES, 8, 8)
    finally:
        await engine.shutdown()
