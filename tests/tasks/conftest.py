"""Fixtures for task tests: an engine over a model directory built in the test."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import torch

from poolstream.config import EngineConfig, ModelConfig, PoolstreamConfig
from poolstream.engine import AsyncEngine


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@contextlib.asynccontextmanager
async def running_engine(path: Path, **engine_kwargs) -> AsyncIterator[AsyncEngine]:
    engine_kwargs.setdefault("num_threads", 1)
    engine_kwargs.setdefault("device", "cpu")
    config = PoolstreamConfig(ModelConfig.from_dir(path), EngineConfig(**engine_kwargs))
    engine = await asyncio.to_thread(AsyncEngine.from_config, config)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.shutdown()


async def encode_all(engine: AsyncEngine, prompts: list, params) -> list:
    """Every prompt's PoolingRequestOutput, submitted together (so they share batches)."""
    outs = await asyncio.gather(*(engine.encode_one(p, params, f"r{i}") for i, p in enumerate(prompts)))
    return list(outs)
