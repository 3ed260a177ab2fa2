"""Tasks over real gRPC: Encode/EncodeAll with PoolingParams.task, Rerank, GetServerInfo,
against transformers / sentence-transformers computed in the test."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
import torch

from poolstream.config import default_model_path
from poolstream.v1 import pooling_pb2 as ppb
from poolstream.v1 import pooling_service_pb2 as pb
from poolstream.v1 import pooling_service_pb2_grpc as pb_grpc
from tests.conftest import inproc_server
from tests.grpc_helpers import error_details

from .builders import build_bert, hf_batch
from .test_bert_tasks import DOCS, MAX_LEN, QUERIES, TEXTS

TOL = 1e-5


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory) -> Path:
    return build_bert(tmp_path_factory.mktemp("cls"), "BertForSequenceClassification", max_len=MAX_LEN,
                      num_labels=3, id2label={"0": "negative", "1": "neutral", "2": "positive"},
                      label2id={"negative": 0, "neutral": 1, "positive": 2})


@pytest.fixture(scope="module")
def reranker_dir(tmp_path_factory) -> Path:
    return build_bert(tmp_path_factory.mktemp("rerank"), "BertForSequenceClassification", max_len=MAX_LEN,
                      seed=1, num_labels=1)


def _floats(t) -> torch.Tensor:
    from poolstream.tensors import tensor_from_proto

    return tensor_from_proto(t, "data").float()


async def test_classify_over_grpc(classifier_dir):
    from transformers import AutoModelForSequenceClassification

    ref = AutoModelForSequenceClassification.from_pretrained(str(classifier_dir)).eval()
    with torch.no_grad():
        logits = ref(**hf_batch(classifier_dir, TEXTS, max_len=MAX_LEN)).logits
    async with inproc_server(str(classifier_dir), num_threads=1) as server:
        async with grpc.aio.insecure_channel(server.address) as ch:
            stub = pb_grpc.PoolingServiceStub(ch)
            info = (await stub.GetServerInfo(pb.GetServerInfoRequest())).model
            assert info.default_task == ppb.POOLING_TASK_CLASSIFY
            assert ppb.POOLING_TASK_SCORE in info.tasks and ppb.POOLING_TASK_EMBED in info.tasks
            assert list(info.labels) == ["negative", "neutral", "positive"] and info.backend == "native"
            prompts = [ppb.Prompt(text=t) for t in TEXTS]
            probs = await stub.EncodeAll(pb.EncodeAllRequest(prompts=prompts))  # the default task
            raw = await stub.EncodeAll(pb.EncodeAllRequest(prompts=prompts, params=ppb.PoolingParams(
                task=ppb.POOLING_TASK_CLASSIFY, use_activation=False)))
            bad = await stub.EncodeAll(pb.EncodeAllRequest(prompts=prompts[:1], params=ppb.PoolingParams(
                task=ppb.POOLING_TASK_EMBED_SPARSE)))
    got = torch.stack([_floats(r.output.outputs.data) for r in probs.results])
    torch.testing.assert_close(got, torch.softmax(logits, -1), atol=TOL, rtol=TOL)
    got_raw = torch.stack([_floats(r.output.outputs.data) for r in raw.results])
    torch.testing.assert_close(got_raw, logits, atol=TOL, rtol=TOL)
    assert list(probs.results[0].output.outputs.labels) == ["negative", "neutral", "positive"]
    err = bad.results[0].error
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "task 'embed_sparse' is not supported" in err.message and "supported tasks: embed" in err.message


async def test_rerank_over_grpc_matches_cross_encoder(reranker_dir):
    from sentence_transformers import CrossEncoder

    query, docs = QUERIES[0], DOCS + QUERIES[1:]
    ce = CrossEncoder(str(reranker_dir), max_length=MAX_LEN, device="cpu")
    ref = ce.rank(query, docs, return_documents=True)
    ref_raw = torch.as_tensor(ce.predict([(query, d) for d in docs], activation_fn=torch.nn.Identity()))
    async with inproc_server(str(reranker_dir), num_threads=1) as server:
        async with grpc.aio.insecure_channel(server.address) as ch:
            stub = pb_grpc.PoolingServiceStub(ch)
            resp = await stub.Rerank(pb.RerankRequest(query=query, documents=docs, return_text=True))
            raw = await stub.Rerank(pb.RerankRequest(query=query, documents=docs, raw_scores=True, top_n=2))
            pair = await stub.EncodeAll(pb.EncodeAllRequest(
                prompts=[ppb.Prompt(text_pair=ppb.TextPair(text=query, text_pair=docs[0]))],
                params=ppb.PoolingParams(task=ppb.POOLING_TASK_SCORE)))
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await stub.Rerank(pb.RerankRequest(query=query, documents=docs, truncate=False))
            with pytest.raises(grpc.aio.AioRpcError) as empty:
                await stub.Rerank(pb.RerankRequest(query=query))
    assert resp.method == "cross_encoder"
    assert [r.index for r in resp.results] == [r["corpus_id"] for r in ref]
    torch.testing.assert_close(torch.tensor([r.score for r in resp.results]),
                               torch.tensor([float(r["score"]) for r in ref]), atol=TOL, rtol=TOL)
    assert [r.text for r in resp.results] == [r["text"] for r in ref]
    long_doc = docs.index(DOCS[3])
    assert {r.index: r.truncated for r in resp.results}[long_doc]
    assert resp.usage.prompt_count == len(docs) and resp.usage.prompt_tokens > 0
    assert len(raw.results) == 2 and not raw.results[0].HasField("text")
    for r in raw.results:
        assert abs(r.score - float(ref_raw[r.index])) < TOL
    assert abs(_floats(pair.results[0].output.outputs.data)[0] - float(ce.predict([(query, docs[0])])[0])) < TOL
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "truncate is false" in e.value.details()
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(empty.value)["reason"] == "INVALID_PROMPT"


async def test_rerank_with_an_embedding_model_uses_cosine():
    from sentence_transformers import SentenceTransformer

    query, docs = QUERIES[0], DOCS
    st = SentenceTransformer(default_model_path(), device="cpu")
    emb = st.encode([query] + docs, convert_to_tensor=True, normalize_embeddings=True)
    ref = (emb[1:] @ emb[0]).tolist()
    async with inproc_server(num_threads=1) as server:
        async with grpc.aio.insecure_channel(server.address) as ch:
            resp = await pb_grpc.PoolingServiceStub(ch).Rerank(pb.RerankRequest(query=query, documents=docs))
    assert resp.method == "embedding_cosine"
    assert [r.index for r in resp.results] == sorted(range(len(docs)), key=lambda i: -ref[i])
    for r in resp.results:
        assert abs(r.score - ref[r.index]) < TOL


async def test_sparse_and_token_outputs_over_grpc(tmp_path):
    path = build_bert(tmp_path, "BertForMaskedLM", max_len=MAX_LEN)
    (path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.sparse_encoder.models.MLMTransformer"},
        {"idx": 1, "name": "1", "path": "1_SpladePooling",
         "type": "sentence_transformers.sparse_encoder.models.SpladePooling"}]))
    async with inproc_server(str(path), num_threads=1) as server:
        async with grpc.aio.insecure_channel(server.address) as ch:
            stub = pb_grpc.PoolingServiceStub(ch)
            info = (await stub.GetServerInfo(pb.GetServerInfoRequest())).model
            sparse = await stub.EncodeAll(pb.EncodeAllRequest(
                prompts=[ppb.Prompt(text="hello world")], params=ppb.PoolingParams(sparse_top_k=7)))
            tokens = await stub.EncodeAll(pb.EncodeAllRequest(
                prompts=[ppb.Prompt(text="hello world")], params=ppb.PoolingParams(task=ppb.POOLING_TASK_TOKEN_EMBED)))
    assert info.default_task == ppb.POOLING_TASK_EMBED_SPARSE
    out = sparse.results[0].output.outputs
    values = _floats(out.data)
    assert values.shape == (7,) and len(out.indices) == 7 and len(out.tokens) == 7
    assert (values[:-1] >= values[1:]).all() and all(out.tokens)
    assert list(tokens.results[0].output.outputs.data.shape) == [4, 32]  # [CLS] hello world [SEP]
