"""The engine's embeddings equal sentence-transformers' (the reference) within 1e-5."""

from __future__ import annotations

import asyncio

import pytest
import torch

from poolstream.config import default_model_path
from poolstream.pooling_params import PoolingParams
from tests.engine.conftest import first, make_corpus

TOL = 1e-5


@pytest.fixture(scope="module")
def st_model():
    from sentence_transformers import SentenceTransformer  # test-only reference

    return SentenceTransformer(default_model_path(), device="cpu")


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return make_corpus(256)


async def encode_all(engine, texts, params=None, tag="r"):
    """Every text as its own concurrent request, like many clients would send them."""
    outs = await asyncio.gather(*(first(engine.encode(t, params, f"{tag}-{i}")) for i, t in enumerate(texts)))
    return outs, torch.stack([o.outputs.data for o in outs])


async def test_default_embeddings_match_st(make_engine, st_model, corpus):
    engine = await make_engine()
    outs, ours = await encode_all(engine, corpus)
    ref = st_model.encode(corpus, batch_size=16, convert_to_tensor=True)
    assert ours.dtype == torch.float32 and ours.shape == ref.shape == (len(corpus), 384)
    assert (ours - ref).abs().max().item() < TOL
    # The corpus must really exercise truncation at the model's 256 tokens.
    truncated = [o for o in outs if o.truncated]
    assert len(truncated) >= 10
    assert all(len(o.prompt_token_ids) == 256 for o in truncated)
    assert all(len(o.prompt_token_ids) <= 256 and o.finished for o in outs)
    assert engine.stats.batches_executed < len(corpus)  # batched, not one by one


async def test_dimensions_and_normalize_variants_match_st(make_engine, st_model, corpus):
    from sentence_transformers import SentenceTransformer

    texts = corpus[:32]  # 2 of them truncated
    engine = await make_engine()
    # ST sorts by length; batch 8 keeps its few 256-token texts from padding everything.
    # Matryoshka: truncate then re-normalise == ST truncate_dim + normalize_embeddings.
    _, ours = await encode_all(engine, texts, PoolingParams(dimensions=128, normalize=True), "dim")
    ref = st_model.encode(texts, batch_size=8, convert_to_tensor=True, truncate_dim=128,
                          normalize_embeddings=True)
    assert ours.shape == (32, 128)
    assert (ours - ref).abs().max().item() < TOL

    # normalize=False == the same ST pipeline without its Normalize module.
    st_raw = SentenceTransformer(modules=[st_model[0], st_model[1]], device="cpu")
    _, ours = await encode_all(engine, texts, PoolingParams(normalize=False), "raw")
    ref = st_raw.encode(texts, batch_size=8, convert_to_tensor=True)
    assert ours.norm(dim=-1).sub(1).abs().max() > 0.1  # really unnormalised
    assert (ours - ref).abs().max().item() < TOL

    # dimensions without normalisation: plain truncation.
    _, ours = await encode_all(engine, texts, PoolingParams(normalize=False, dimensions=64), "raw64")
    ref = st_raw.encode(texts, batch_size=8, convert_to_tensor=True, truncate_dim=64)
    assert (ours - ref).abs().max().item() < TOL


async def test_mixed_params_in_one_batch(make_engine, st_model, corpus):
    """Requests with different params share batches and each gets its own post-processing."""
    texts = corpus[4:28]
    engine = await make_engine()
    params = [PoolingParams(dimensions=32 if i % 2 else None) for i in range(len(texts))]
    outs = await asyncio.gather(*(first(engine.encode(t, p, f"m-{i}"))
                                  for i, (t, p) in enumerate(zip(texts, params))))
    full = st_model.encode(texts, convert_to_tensor=True)
    # What ST's truncate_dim=32 + normalize_embeddings=True computes from the same rows.
    short = torch.nn.functional.normalize(full[:, :32], dim=-1)
    for i, o in enumerate(outs):
        ref = short[i] if i % 2 else full[i]
        assert o.outputs.data.shape == ref.shape
        assert (o.outputs.data - ref).abs().max().item() < TOL
    assert any(b.size > 1 for b in engine.stats.recent_batches)


async def test_token_prompt_equals_text_prompt(make_engine):
    engine = await make_engine()
    text = await first(engine.encode("The same sentence, twice.", None, "text"))
    toks = await first(engine.encode({"prompt_token_ids": text.prompt_token_ids}, None, "toks"))
    assert toks.prompt_token_ids == text.prompt_token_ids
    assert torch.equal(toks.outputs.data, text.outputs.data) or \
        (toks.outputs.data - text.outputs.data).abs().max() < TOL
