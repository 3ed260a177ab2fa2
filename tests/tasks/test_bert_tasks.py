"""Every pooling task on BERT, through the engine (tokenization and truncation included),
against transformers / sentence-transformers computing the same thing (float32, 1e-5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from poolstream.engine.errors import InvalidPromptError
from poolstream.pooling_params import PoolingParams

from .builders import build_bert, hf_batch
from .conftest import encode_all, running_engine

TOL = 1e-5
MAX_LEN = 48
QUERIES = ["what is a panda?", "how many people live in Berlin?", "Ünïcödé ✓ 你好",
           " ".join(["long query words"] * 40)]
DOCS = ["The giant panda is a bear species endemic to China.", "Berlin has about 3.8 million inhabitants.",
        "short", " ".join(["a very long document"] * 60)]
TEXTS = QUERIES + DOCS


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape, (a.shape, b.shape)
    torch.testing.assert_close(a.float(), b.float(), atol=TOL, rtol=TOL)


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory) -> Path:
    return build_bert(tmp_path_factory.mktemp("cls"), "BertForSequenceClassification", max_len=MAX_LEN,
                      num_labels=3, id2label={"0": "negative", "1": "neutral", "2": "positive"},
                      label2id={"negative": 0, "neutral": 1, "positive": 2})


@pytest.fixture(scope="module")
def reranker_dir(tmp_path_factory) -> Path:
    return build_bert(tmp_path_factory.mktemp("rerank"), "BertForSequenceClassification", max_len=MAX_LEN,
                      seed=1, num_labels=1)


async def test_classify_matches_transformers(classifier_dir):
    from transformers import AutoModelForSequenceClassification

    ref_model = AutoModelForSequenceClassification.from_pretrained(str(classifier_dir)).eval()
    with torch.no_grad():
        logits = ref_model(**hf_batch(classifier_dir, TEXTS, max_len=MAX_LEN)).logits
    async with running_engine(classifier_dir) as engine:
        info = engine.model_info
        assert info.default_task == "classify" and info.labels == ("negative", "neutral", "positive")
        assert set(info.tasks) >= {"classify", "score", "embed", "token_embed"}
        probs = await encode_all(engine, TEXTS, PoolingParams())  # default task
        raw = await encode_all(engine, TEXTS, PoolingParams(task="classify", use_activation=False))
    _close(torch.stack([o.outputs.data for o in probs]), torch.softmax(logits, -1))
    _close(torch.stack([o.outputs.data for o in raw]), logits)
    assert probs[0].outputs.labels == ("negative", "neutral", "positive")
    assert probs[3].truncated and len(probs[3].prompt_token_ids) == MAX_LEN


async def test_score_matches_cross_encoder(reranker_dir):
    from sentence_transformers import CrossEncoder

    pairs = list(zip(QUERIES, DOCS)) + [(QUERIES[0], d) for d in DOCS]
    ref = torch.as_tensor(CrossEncoder(str(reranker_dir), max_length=MAX_LEN, device="cpu").predict(pairs))
    async with running_engine(reranker_dir) as engine:
        outs = await encode_all(engine, [{"prompt": q, "text_pair": d} for q, d in pairs],
                                PoolingParams(task="score"))
        raw = await encode_all(engine, [{"prompt": q, "text_pair": d} for q, d in pairs],
                               PoolingParams(task="score", use_activation=False))
    scores = torch.stack([o.outputs.data for o in outs])
    assert scores.shape == (len(pairs), 1)
    _close(scores[:, 0], ref.float())
    _close(torch.sigmoid(torch.stack([o.outputs.data for o in raw])[:, 0]), ref.float())
    # the long pairs were cut (longest first) to the model's length, as transformers does
    assert outs[3].truncated and len(outs[3].prompt_token_ids) == MAX_LEN


async def test_score_pairs_use_token_types(reranker_dir):
    """The same two texts as a pair and as one concatenated text differ only by token types:
    a model that ignored them would score both alike."""
    async with running_engine(reranker_dir) as engine:
        pair, = await encode_all(engine, [{"prompt": "a b", "text_pair": "c d"}], PoolingParams(task="score"))
        ids = pair.prompt_token_ids
        flat, = await encode_all(engine, [{"prompt_token_ids": ids}], PoolingParams(task="score"))
        typed, = await encode_all(engine, [{"prompt_token_ids": ids, "token_type_ids": [0] * 4 + [1] * 3}],
                                  PoolingParams(task="score"))
    assert not torch.allclose(pair.outputs.data, flat.outputs.data)
    _close(typed.outputs.data, pair.outputs.data)


async def test_token_classify_matches_transformers(tmp_path):
    from transformers import AutoModelForTokenClassification

    path = build_bert(tmp_path, "BertForTokenClassification", max_len=MAX_LEN, num_labels=5)
    ref_model = AutoModelForTokenClassification.from_pretrained(str(path)).eval()
    batch = hf_batch(path, TEXTS, max_len=MAX_LEN)
    with torch.no_grad():
        logits = ref_model(**batch).logits
    async with running_engine(path) as engine:
        assert engine.model_info.default_task == "token_classify"
        outs = await encode_all(engine, TEXTS, PoolingParams(task="token_classify"))
        raw = await encode_all(engine, TEXTS, PoolingParams(task="token_classify", use_activation=False))
    for i, (o, r) in enumerate(zip(outs, raw)):
        n = int(batch["attention_mask"][i].sum())
        assert o.outputs.data.shape == (n, 5)
        _close(o.outputs.data, torch.softmax(logits[i, :n], -1))
        _close(r.outputs.data, logits[i, :n])
        assert o.outputs.labels == tuple(f"LABEL_{k}" for k in range(5))


async def test_token_embed_matches_transformers(tmp_path):
    from transformers import AutoModel

    path = build_bert(tmp_path, "BertModel", max_len=MAX_LEN)
    ref_model = AutoModel.from_pretrained(str(path)).eval()
    batch = hf_batch(path, TEXTS, max_len=MAX_LEN)
    with torch.no_grad():
        hidden = ref_model(**batch).last_hidden_state
    async with running_engine(path) as engine:
        outs = await encode_all(engine, TEXTS, PoolingParams(task="token_embed"))
        raw = await encode_all(engine, TEXTS, PoolingParams(task="token_embed", normalize=False, dimensions=16))
    for i, (o, r) in enumerate(zip(outs, raw)):
        n = int(batch["attention_mask"][i].sum())
        _close(o.outputs.data, F.normalize(hidden[i, :n], dim=-1))
        _close(r.outputs.data, hidden[i, :n, :16])


@pytest.mark.parametrize("chunk_tokens", [None, 7])
async def test_splade_matches_masked_lm_reference(tmp_path, monkeypatch, chunk_tokens):
    """SPLADE against transformers' MaskedLM; chunk_tokens=7: the MLM head runs 7 tokens at a
    time, so chunks split prompts and hold several (the engine's memory bound)."""
    from transformers import AutoModelForMaskedLM

    import poolstream.models.base as base
    if chunk_tokens:
        monkeypatch.setattr(base, "_SPLADE_CHUNK_ELEMENTS", chunk_tokens * 30522)

    path = build_bert(tmp_path, "BertForMaskedLM", max_len=MAX_LEN)
    (path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.sparse_encoder.models.MLMTransformer"},
        {"idx": 1, "name": "1", "path": "1_SpladePooling",
         "type": "sentence_transformers.sparse_encoder.models.SpladePooling"}]))
    ref_model = AutoModelForMaskedLM.from_pretrained(str(path)).eval()
    batch = hf_batch(path, TEXTS, max_len=MAX_LEN)
    with torch.no_grad():
        logits = ref_model(**batch).logits
    # SPLADE: max over real tokens of log(1 + relu(logits))
    weights = (torch.log1p(torch.relu(logits)) * batch["attention_mask"][..., None]).amax(dim=1)
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(path))
    async with running_engine(path) as engine:
        assert engine.model_info.default_task == "embed_sparse"
        outs = await encode_all(engine, TEXTS, PoolingParams())
        top = await encode_all(engine, TEXTS, PoolingParams(task="embed_sparse", sparse_top_k=5))
    for i, (o, t) in enumerate(zip(outs, top)):
        dense = torch.zeros(weights.shape[1])
        dense[o.outputs.indices] = o.outputs.data
        _close(dense, weights[i])
        assert (o.outputs.data[:-1] >= o.outputs.data[1:]).all()  # largest first
        ref_top = torch.topk(weights[i], 5)
        _close(t.outputs.data, ref_top.values)
        assert t.outputs.tokens == tok.convert_ids_to_tokens(t.outputs.indices.tolist())


async def test_tasks_rejected_before_queueing(tmp_path, classifier_dir):
    path = build_bert(tmp_path, "BertModel", max_len=MAX_LEN)
    async with running_engine(path) as engine:
        with pytest.raises(InvalidPromptError, match=r"task 'classify' is not supported by .*BertModel.*"
                                                     r"supported tasks: embed, token_embed"):
            await engine.encode_one("x", PoolingParams(task="classify"), "a")
        with pytest.raises(InvalidPromptError, match="unknown task 'rank'"):
            await engine.encode_one("x", PoolingParams(task="rank"), "b")
        with pytest.raises(InvalidPromptError, match="does not take the parameter 'use_activation'"):
            await engine.encode_one("x", PoolingParams(task="embed", use_activation=False), "c")
        assert engine.stats.prompts_admitted == 0
    async with running_engine(classifier_dir) as engine:
        with pytest.raises(InvalidPromptError, match="does not take the parameter 'dimensions'"):
            await engine.encode_one("x", PoolingParams(task="classify", dimensions=2), "d")
        with pytest.raises(InvalidPromptError, match="task 'embed_sparse' is not supported"):
            await engine.encode_one("x", PoolingParams(task="embed_sparse"), "e")


async def test_mixed_tasks_share_the_engine(classifier_dir):
    """Requests of different tasks in flight together are batched per task and all correct."""
    async with running_engine(classifier_dir) as engine:
        alone_cls = await encode_all(engine, TEXTS, PoolingParams(task="classify"))
        alone_emb = await encode_all(engine, TEXTS, PoolingParams(task="embed"))
        import asyncio
        mixed = await asyncio.gather(
            *(engine.encode_one(t, PoolingParams(task="classify"), f"c{i}") for i, t in enumerate(TEXTS)),
            *(engine.encode_one(t, PoolingParams(task="embed"), f"e{i}") for i, t in enumerate(TEXTS)))
    for a, b in zip(alone_cls + alone_emb, mixed):
        _close(a.outputs.data, b.outputs.data)


@pytest.mark.parametrize("strategy,activation,backend", [("max", "relu", "auto"), ("sum", "log1p_relu", "auto"),
                                                         ("max", "log1p_relu", "transformers")])
async def test_splade_matches_sparse_encoder(tmp_path, strategy, activation, backend):
    """A saved sentence-transformers SparseEncoder (MLMTransformer + SpladePooling) and its
    pooling settings, against SparseEncoder.encode."""
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling

    mlm = build_bert(tmp_path / "mlm", "BertForMaskedLM", max_len=MAX_LEN)
    enc = SparseEncoder(modules=[MLMTransformer(str(mlm), max_seq_length=MAX_LEN),
                                 SpladePooling(pooling_strategy=strategy, activation_function=activation)],
                        device="cpu")
    path = tmp_path / "sparse"
    enc.save(str(path))
    ref = enc.encode(TEXTS, convert_to_tensor=True).to_dense()
    async with running_engine(path, model_backend=backend) as engine:
        assert engine.model_info.default_task == "embed_sparse"
        outs = await encode_all(engine, TEXTS, PoolingParams())
    for i, o in enumerate(outs):
        dense = torch.zeros(ref.shape[1])
        dense[o.outputs.indices] = o.outputs.data
        _close(dense, ref[i])
