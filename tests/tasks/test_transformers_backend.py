"""Architectures with no native implementation serve through the transformers fallback, with
the same pooling config, and match transformers / sentence-transformers / CrossEncoder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch

from poolstream.config import default_model_path
from poolstream.models.transformers_backend import TransformersModel, select_model_class
from poolstream.pooling_params import PoolingParams
from poolstream.v1 import pooling_service_pb2 as pb
from poolstream.v1 import pooling_service_pb2_grpc as pb_grpc
from tests.conftest import inproc_server

from .builders import build_bert, hf_batch
from .conftest import encode_all, running_engine
from .test_bert_tasks import DOCS, MAX_LEN, QUERIES, TEXTS

TOL = 1e-5

# distilbert-base-uncased's config.json, shrunk (dim, hidden_dim, heads, layers) for test speed.
DISTILBERT = {"activation": "gelu", "attention_dropout": 0.1, "dim": 768, "dropout": 0.1, "hidden_dim": 3072,
              "initializer_range": 0.02, "max_position_embeddings": 512, "model_type": "distilbert",
              "n_heads": 12, "n_layers": 6, "pad_token_id": 0, "qa_dropout": 0.1, "seq_classif_dropout": 0.2,
              "sinusoidal_pos_embds": False, "tie_weights_": True, "vocab_size": 30522}
# cross-encoder/ms-marco-electra-base's config.json, shrunk likewise.
ELECTRA = {"attention_probs_dropout_prob": 0.1, "embedding_size": 768, "hidden_act": "gelu",
           "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072,
           "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "electra",
           "num_attention_heads": 12, "num_hidden_layers": 12, "num_labels": 1, "pad_token_id": 0,
           "position_embedding_type": "absolute", "summary_activation": "gelu", "summary_last_dropout": 0.1,
           "summary_type": "first", "summary_use_proj": True, "type_vocab_size": 2, "vocab_size": 30522}


def _build(tmp: Path, architecture: str, cfg: dict[str, Any], **changes: Any) -> Path:
    import transformers

    config = transformers.AutoConfig.for_model(**{**cfg, **changes})
    config.architectures = [architecture]
    torch.manual_seed(0)
    model = getattr(transformers, architecture)(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.2)
    model.save_pretrained(str(tmp), safe_serialization=True)
    src = Path(default_model_path())
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(src / name, tmp / name)
    tok_cfg = json.loads((tmp / "tokenizer_config.json").read_text())
    tok_cfg["model_max_length"] = MAX_LEN
    (tmp / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    return tmp


def _small_distilbert() -> dict[str, Any]:
    return {**DISTILBERT, "dim": 32, "hidden_dim": 64, "n_heads": 4, "n_layers": 2, "initializer_range": 0.2}


def _small_electra() -> dict[str, Any]:
    return {**ELECTRA, "embedding_size": 16, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4,
            "num_hidden_layers": 2, "initializer_range": 0.2}


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a.float(), b.float(), atol=TOL, rtol=TOL)


async def test_distilbert_embeddings_match_sentence_transformers(tmp_path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    raw = _build(tmp_path / "raw", "DistilBertModel", _small_distilbert())
    st = SentenceTransformer(modules=[Transformer(str(raw), max_seq_length=MAX_LEN),
                                      Pooling(32, pooling_mode="mean"), Normalize()], device="cpu")
    path = tmp_path / "st"
    st.save(str(path))
    ref = st.encode(TEXTS, convert_to_tensor=True)
    async with running_engine(path) as engine:
        info = engine.model_info
        assert info.backend == "transformers" and info.pooling == "mean" and info.default_task == "embed"
        outs = await encode_all(engine, TEXTS, PoolingParams())
    _close(torch.stack([o.outputs.data for o in outs]), ref)
    assert outs[3].truncated and len(outs[3].prompt_token_ids) == MAX_LEN


async def test_distilbert_classifier_matches_transformers(tmp_path):
    from transformers import AutoModelForSequenceClassification

    path = _build(tmp_path, "DistilBertForSequenceClassification", _small_distilbert(), num_labels=4)
    ref_model = AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
    batch = hf_batch(path, TEXTS, max_len=MAX_LEN)
    with torch.no_grad():
        logits = ref_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    async with running_engine(path) as engine:
        assert engine.model_info.tasks == ("embed", "token_embed", "classify", "score")
        outs = await encode_all(engine, TEXTS, PoolingParams(task="classify"))
    _close(torch.stack([o.outputs.data for o in outs]), torch.softmax(logits, -1))
    assert outs[0].outputs.labels == ("LABEL_0", "LABEL_1", "LABEL_2", "LABEL_3")


async def test_electra_cross_encoder_reranks_over_grpc(tmp_path):
    from sentence_transformers import CrossEncoder

    path = _build(tmp_path, "ElectraForSequenceClassification", _small_electra())
    query, docs = QUERIES[1], DOCS + QUERIES
    ref = CrossEncoder(str(path), max_length=MAX_LEN, device="cpu").rank(query, docs)
    async with inproc_server(str(path), num_threads=1) as server:
        async with grpc.aio.insecure_channel(server.address) as ch:
            stub = pb_grpc.PoolingServiceStub(ch)
            info = (await stub.GetServerInfo(pb.GetServerInfoRequest())).model
            resp = await stub.Rerank(pb.RerankRequest(query=query, documents=docs))
    assert info.backend == "transformers" and info.architecture == "ElectraForSequenceClassification"
    assert [r.index for r in resp.results] == [r["corpus_id"] for r in ref]
    _close(torch.tensor([r.score for r in resp.results]), torch.tensor([float(r["score"]) for r in ref]))


@pytest.mark.parametrize("task", ["classify", "score", "token_embed", "embed"])
async def test_forced_transformers_backend_equals_native_bert(tmp_path, task):
    path = build_bert(tmp_path, "BertForSequenceClassification", max_len=MAX_LEN, num_labels=1)
    prompts = [{"prompt": q, "text_pair": d} for q, d in zip(QUERIES, DOCS)] if task == "score" else TEXTS
    async with running_engine(path) as native:
        want = await encode_all(native, prompts, PoolingParams(task=task))
    async with running_engine(path, model_backend="transformers") as fallback:
        assert fallback.model_info.backend == "transformers"
        got = await encode_all(fallback, prompts, PoolingParams(task=task))
    for a, b in zip(want, got):
        _close(b.outputs.data, a.outputs.data)


def test_backend_selection():
    assert select_model_class("DistilBertModel") is TransformersModel
    assert select_model_class("BertModel", "transformers") is TransformersModel
    assert select_model_class("BertModel") is not TransformersModel
    with pytest.raises(ValueError, match="'DistilBertModel' is not supported"):
        select_model_class("DistilBertModel", "native")
    with pytest.raises(ValueError, match="unknown model backend"):
        select_model_class("BertModel", "onnx")
