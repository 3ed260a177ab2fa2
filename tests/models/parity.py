"""Run poolstream and the references (sentence-transformers, transformers) on one model directory."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import torch

from poolstream.config import EngineConfig, ModelConfig, PoolstreamConfig
from poolstream.engine import AsyncEngine
from poolstream.engine.processor import load_tokenizer
from poolstream.models.model_dir import read_model_dir
from poolstream.models.registry import resolve_model_class
from poolstream.pooling_params import PoolingParams

TOL = 1e-5


async def engine_outputs(path: Path, prompts: list[Any], params: PoolingParams | None = None,
                         **engine_kwargs: Any) -> tuple[torch.Tensor, list[Any]]:
    """Every prompt as its own concurrent request through a real engine (batched, padded, packed)."""
    engine_kwargs.setdefault("num_threads", 1)
    config = PoolstreamConfig(ModelConfig.from_dir(path), EngineConfig(**engine_kwargs))
    engine = await asyncio.to_thread(AsyncEngine.from_config, config)
    await engine.start()
    try:
        async def one(i: int, prompt: Any) -> Any:
            outs = [out async for out in engine.encode(prompt, params, f"r{i}")]
            return outs[-1]
        outs = await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
    finally:
        await engine.shutdown()
    rows = [o.outputs.data for o in outs]
    same = all(r.shape == rows[0].shape for r in rows)
    return (torch.stack(rows) if same else torch.empty(0)), outs


def load_native(path: Path) -> Any:
    d = read_model_dir(path)
    cls = resolve_model_class(d.architecture)
    return cls.load(path, d.hf_config, torch.device("cpu"), torch.float32)


def encode_pairs(path: Path, pairs: list[tuple[str, str]], max_len: int,
                 pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and mask of sentence pairs with the directory's tokenizer.json template,
    truncated longest-first like Hugging Face tokenizers."""
    d = read_model_dir(path)
    tok = load_tokenizer(d.tokenizer_file)
    assert tok is not None
    tok.enable_truncation(max_len, strategy="longest_first")
    encs = tok.encode_batch(list(pairs))
    seq = max(len(e.ids) for e in encs)
    ids = torch.full((len(encs), seq), pad_id, dtype=torch.long)
    mask = torch.zeros(len(encs), seq, dtype=torch.long)
    for i, e in enumerate(encs):
        ids[i, : len(e.ids)] = torch.tensor(e.ids)
        mask[i, : len(e.ids)] = 1
    return ids, mask


def st_embed(path: Path, texts: list[str], **kwargs: Any) -> torch.Tensor:
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(path), device="cpu")
    return st.encode(texts, convert_to_tensor=True, batch_size=4, **kwargs).float()


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()
