"""Fixtures for engine tests: a real all-MiniLM-L6-v2 engine, a corpus, helpers."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import torch

from poolstream.config import EngineConfig, ModelConfig, PoolstreamConfig, default_model_path
from poolstream.engine import AsyncEngine

_WORDS = ("alpha beta gamma delta engine queue token vector search query river city model batch "
          "stream latency runs keeps measures returns the a of and to in").split()
_UNICODE = ["naïve café", "Grüße aus Köln", "日本語のテキスト", "中文句子测试", "emoji 🚀🔥 test",
            "Ελληνικά γράμματα", "русский текст", "עברית", "العربية", "한국어 문장"]
_PUNCT = ["!!!", "???", "...", "--", "(a, b; c)", "'quoted'", '"double"', "#hash @at $5.00 100%"]


def make_corpus(n: int, seed: int = 1234) -> list[str]:
    """Deterministic, varied sentences: short, medium, unicode, punctuation, and one in
    16 longer than the model's 256-token limit (truncated)."""
    rng = random.Random(seed)
    out = ["", " ", "a", "Hello world."]
    while len(out) < n:
        k = len(out) % 16
        if k < 8:
            words = [rng.choice(_WORDS) for _ in range(rng.randint(3, 30))]
        elif k < 11:
            words = [rng.choice(_WORDS + _UNICODE) for _ in range(rng.randint(2, 20))]
        elif k < 14:
            words = [rng.choice(_WORDS + _PUNCT) for _ in range(rng.randint(5, 60))]
        elif k == 14:
            words = [rng.choice(_WORDS + _PUNCT) for _ in range(rng.randint(60, 120))]
        else:  # 260..360 words: always more than 256 tokens
            words = [rng.choice(_WORDS + _UNICODE) for _ in range(rng.randint(260, 360))]
        out.append(" ".join(words))
    return out[:n]


def engine_config(**engine_kwargs: Any) -> PoolstreamConfig:
    # One torch thread: on a small shared CI box two OpenMP threads can stall for
    # hundreds of ms when a core is busy elsewhere; results are identical.
    engine_kwargs.setdefault("num_threads", 1)
    return PoolstreamConfig(ModelConfig.from_dir(default_model_path()), EngineConfig(**engine_kwargs))


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """The in-process reference (sentence-transformers) also runs on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
async def make_engine() -> AsyncIterator[Callable[..., Any]]:
    """Factory: ``await make_engine(max_num_seqs=4, ...)`` -> a started AsyncEngine."""
    engines: list[AsyncEngine] = []

    async def make(**engine_kwargs: Any) -> AsyncEngine:
        engine = await asyncio.to_thread(AsyncEngine.from_config, engine_config(**engine_kwargs))
        await engine.start()
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        await engine.shutdown()


async def first(agen: Any) -> Any:
    """The single output of ``engine.encode(...)``."""
    async for out in agen:
        return out
    raise AssertionError("encode() yielded nothing")


async def wait_until(cond: Callable[[], bool], timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.001)


def long_text(words: int = 300) -> str:
    return " ".join(["token"] * words)


@contextlib.asynccontextmanager
async def loop_gaps(period: float = 0.005):
    """Seconds between the ticks of a ``period`` ticker on the event loop while the block
    runs: how long the loop was kept from running (the list fills as it goes)."""
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(period)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    try:
        yield gaps
    finally:
        stop.set()
        await task
