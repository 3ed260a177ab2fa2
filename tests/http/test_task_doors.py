"""Classification, reranking, sparse and token embeddings through every door.

Small BERT models built in the test from the real all-MiniLM-L6-v2 config
(tests/tasks/builders.py): a 3-label sequence classifier, a 1-label
cross-encoder and a masked LM (SPLADE). HTTP (vLLM /classify, /v1/score,
/rerank; TEI /predict, /rerank) and TEI's gRPC API (Predict, PredictPair,
Rerank, RerankStream, EmbedSparse, EmbedAll) must give transformers' numbers,
and health/info must report each model's capability as TEI does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from poolstream.tei.gen.tei import tei_pb2 as tei
from poolstream.tei.gen.tei import tei_pb2_grpc as tei_grpc

from tests.tasks.builders import build_bert, hf_batch

MAX_LEN = 48
LABELS = {"0": "negative", "1": "neutral", "2": "positive"}
TEXTS = ["I love this film.", "It was fine, I suppose.", "Terrible, a waste of time."]
QUERY = "What is the capital of France?"
DOCS = ["Paris is the capital of France.", "Berlin is in Germany.", "Cats sleep a lot."]


@contextlib.asynccontextmanager
async def serve(path: Path):
    from poolstream.config import EngineConfig, ModelConfig, PoolstreamConfig
    from poolstream.server.app import ListenConfig, PoolstreamServer

    config = PoolstreamConfig(ModelConfig.from_dir(path), EngineConfig(device="cpu", num_threads=1))
    server = PoolstreamServer(config, ListenConfig(host="127.0.0.1", port=0, grace_period_s=2, http_port=0))
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def post(server, path: str, body: Any) -> tuple[int, Any]:
    req = urllib.request.Request(f"http://127.0.0.1:{server.http_port}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


async def http(server, path: str, body: Any) -> tuple[int, Any]:
    return await asyncio.to_thread(post, server, path, body)


def hf_logits(path: Path, texts: list[str], pairs: list[str] | None = None) -> torch.Tensor:
    import transformers

    model = transformers.BertForSequenceClassification.from_pretrained(str(path)).eval()
    with torch.no_grad():
        return model(**hf_batch(path, texts, pairs, MAX_LEN)).logits


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory) -> Path:
    return build_bert(tmp_path_factory.mktemp("cls"), "BertForSequenceClassification", max_len=MAX_LEN,
                      num_labels=3, id2label=LABELS, label2id={v: int(k) for k, v in LABELS.items()})


@pytest.fixture(scope="module")
def reranker_dir(tmp_path_factory) -> Path:
    return build_bert(tmp_path_factory.mktemp("rerank"), "BertForSequenceClassification", max_len=MAX_LEN,
                      seed=1, num_labels=1)


async def test_classifier_on_every_door(classifier_dir):
    expected = torch.softmax(hf_logits(classifier_dir, TEXTS), -1)
    async with serve(classifier_dir) as server:
        status, body = await http(server, "/classify", {"input": TEXTS})
        assert status == 200, body
        got = torch.tensor([d["probs"] for d in body["data"]])
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
        assert [d["label"] for d in body["data"]] == [LABELS[str(int(i))] for i in expected.argmax(-1)]
        status, preds = await http(server, "/predict", {"inputs": TEXTS[0]})
        assert status == 200 and preds[0]["score"] == pytest.approx(float(expected[0].max()), abs=1e-4)
        assert {p["label"] for p in preds} == set(LABELS.values())
        status, raw = await http(server, "/predict", {"inputs": [TEXTS[0]], "raw_scores": True})
        logits = hf_logits(classifier_dir, TEXTS[:1])[0]
        assert raw[0][0]["score"] == pytest.approx(float(logits.max()), abs=1e-4)
        status, info = await http_get(server, "/info")
        assert set(info["model_type"]) == {"classifier"}
        async with grpc.aio.insecure_channel(server.address) as ch:
            stub = tei_grpc.PredictStub(ch)
            r = await stub.Predict(tei.PredictRequest(inputs=TEXTS[2]), timeout=30)
            assert r.predictions[0].label == LABELS[str(int(expected[2].argmax()))]
            assert r.predictions[0].score == pytest.approx(float(expected[2].max()), abs=1e-4)

            async def requests():
                for t in TEXTS:
                    yield tei.PredictRequest(inputs=t)

            streamed = [x async for x in stub.PredictStream(requests(), timeout=30)]
            assert [x.predictions[0].score for x in streamed] == pytest.approx(
                expected.max(-1).values.tolist(), abs=1e-4)
            info = await tei_grpc.InfoStub(ch).Info(tei.InfoRequest(), timeout=10)
            assert info.model_type == tei.MODEL_TYPE_CLASSIFIER
            assert await health_of(ch) == {"tei.v1.Embed": 2, "tei.v1.Predict": 1, "tei.v1.Rerank": 2}


async def test_cross_encoder_on_every_door(reranker_dir):
    expected = torch.sigmoid(hf_logits(reranker_dir, [QUERY] * len(DOCS), DOCS)[:, 0])
    order = sorted(range(len(DOCS)), key=lambda i: -float(expected[i]))
    async with serve(reranker_dir) as server:
        status, body = await http(server, "/v1/score", {"text_1": QUERY, "text_2": DOCS})
        assert status == 200, body
        assert [d["score"] for d in body["data"]] == pytest.approx(expected.tolist(), abs=1e-4)
        status, body = await http(server, "/rerank", {"query": QUERY, "documents": DOCS})
        assert [r["index"] for r in body["results"]] == order
        status, ranks = await http(server, "/rerank", {"query": QUERY, "texts": DOCS, "return_text": True})
        assert status == 200, ranks
        assert [r["index"] for r in ranks] == order and ranks[0]["text"] == DOCS[order[0]]
        async with grpc.aio.insecure_channel(server.address) as ch:
            stub = tei_grpc.RerankStub(ch)
            r = await stub.Rerank(tei.RerankRequest(query=QUERY, texts=DOCS, return_text=True), timeout=30)
            assert [x.index for x in r.ranks] == order
            assert [x.score for x in r.ranks] == pytest.approx([float(expected[i]) for i in order], abs=1e-4)

            async def requests():
                for d in DOCS:
                    yield tei.RerankStreamRequest(query=QUERY, text=d, raw_scores=True)

            r = await stub.RerankStream(requests(), timeout=30)
            raw = hf_logits(reranker_dir, [QUERY] * len(DOCS), DOCS)[:, 0]
            assert sorted(x.score for x in r.ranks) == pytest.approx(sorted(raw.tolist()), abs=1e-4)
            pair = await tei_grpc.PredictStub(ch).PredictPair(tei.PredictPairRequest(inputs=[QUERY, DOCS[0]]),
                                                               timeout=30)
            assert pair.predictions[0].score == pytest.approx(float(expected[0]), abs=1e-4)
            assert (await health_of(ch))["tei.v1.Rerank"] == 1


async def test_sparse_and_token_embeddings(tmp_path):
    path = build_bert(tmp_path / "mlm", "BertForMaskedLM", max_len=MAX_LEN)
    async with serve(path) as server:
        async with grpc.aio.insecure_channel(server.address) as ch:
            stub = tei_grpc.EmbedStub(ch)
            sparse = await stub.EmbedSparse(tei.EmbedSparseRequest(inputs="hello world"), timeout=30)
            assert sparse.sparse_embeddings and all(v.value > 0 for v in sparse.sparse_embeddings)
            assert len({v.index for v in sparse.sparse_embeddings}) == len(sparse.sparse_embeddings)
            facts = server.core.facts()
            if facts.serves("token_embed"):
                every = await stub.EmbedAll(tei.EmbedAllRequest(inputs="hello world"), timeout=30)
                assert len(every.token_embeddings) == 4  # [CLS] hello world [SEP]
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await tei_grpc.PredictStub(ch).Predict(tei.PredictRequest(inputs="x"), timeout=10)
            assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED


def get(server, path: str) -> tuple[int, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}{path}", timeout=30) as resp:
        return resp.status, json.loads(resp.read())


async def http_get(server, path: str) -> tuple[int, Any]:
    return await asyncio.to_thread(get, server, path)


async def health_of(channel) -> dict[str, int]:
    stub = health_pb2_grpc.HealthStub(channel)
    out = {}
    for name in ("tei.v1.Embed", "tei.v1.Predict", "tei.v1.Rerank"):
        out[name] = (await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)).status
    return out
