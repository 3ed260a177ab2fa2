"""TEI-compatible HTTP routes, vLLM score/rerank, /metrics, /docs, headers (with curl)."""

from __future__ import annotations

import json

import grpc
import numpy as np
from poolstream.v1 import pooling_service_pb2 as pb
from poolstream.v1 import pooling_service_pb2_grpc as pb_grpc

from tests.http.conftest import HttpServer
from tests.http.test_pooling_curl import curl


def test_embed_info_health_tokenize(http_server: HttpServer):
    url = http_server.base_url
    status, raw = curl(f"{url}/embed", {"inputs": "What is Deep Learning?"})
    assert status == 200
    [vec] = json.loads(raw)
    assert len(vec) == 384 and abs(np.linalg.norm(vec) - 1) < 1e-5
    status, raw = curl(f"{url}/embed", {"inputs": ["a", "b"], "normalize": False})
    vecs = np.array(json.loads(raw))
    assert vecs.shape == (2, 384) and abs(np.linalg.norm(vecs[0]) - 1) > 1e-3  # raw mean pooling
    status, raw = curl(f"{url}/info")
    info = json.loads(raw)
    assert info["model_id"] == "all-MiniLM-L6-v2" and info["model_type"] == {"embedding": {"pooling": "mean"}}
    assert info["max_input_length"] == 256
    assert curl(f"{url}/health")[0] == 200
    status, raw = curl(f"{url}/tokenize", {"inputs": ["hello world"]})
    assert [t["id"] for t in json.loads(raw)[0]] == [101, 7592, 2088, 102]


def test_tei_errors(http_server: HttpServer):
    url = http_server.base_url
    status, raw = curl(f"{url}/embed", {"inputs": ""})
    assert status == 400
    body = json.loads(raw)
    assert body["error_type"] == "Validation" and body["reason"] == "INVALID_PROMPT" and body["error"]
    status, raw = curl(f"{url}/embed", {"inputs": "x", "dimensions": 1000})
    assert status == 400 and json.loads(raw)["error_type"] == "Validation"
    status, raw = curl(f"{url}/rerank", {"query": "q", "texts": ["a", "b"]})
    assert status == 501 and json.loads(raw)["reason"] == "TASK_NOT_SUPPORTED"
    status, raw = curl(f"{url}/predict", {"inputs": "a"})
    assert status == 501 and "does not support" in json.loads(raw)["error"]
    status, raw = curl(f"{url}/embed", {"wrong": 1})
    assert status == 400 and json.loads(raw)["field_violations"][0]["field"] == "inputs"


def test_vllm_score_and_rerank_with_embeddings(http_server: HttpServer):
    url = http_server.base_url
    status, raw = curl(f"{url}/v1/score", {"text_1": "a cat", "text_2": ["a kitten", "a stock market"]})
    assert status == 200, raw
    scores = [d["score"] for d in json.loads(raw)["data"]]
    assert scores[0] > scores[1]
    for path in ("/rerank", "/v1/rerank"):
        status, raw = curl(f"{url}{path}", {"query": "a cat", "documents": ["a stock market", "a kitten"],
                                            "top_n": 1})
        assert status == 200, raw
        [best] = json.loads(raw)["results"]
        assert best["index"] == 1 and best["document"] == {"text": "a kitten"}
        assert best["relevance_score"] == scores[0]
    status, raw = curl(f"{url}/classify", {"input": "a cat"})
    body = json.loads(raw)
    assert status == 501 and body["error"]["type"] == "NotImplementedError" and body["error"]["code"] == 501


async def test_metrics_are_the_grpc_registry(http_server: HttpServer):
    async with grpc.aio.insecure_channel(http_server.grpc_address) as ch:
        await pb_grpc.PoolingServiceStub(ch).GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
    curl(f"{http_server.base_url}/embed", {"inputs": "count me"})
    status, raw = curl(f"{http_server.base_url}/metrics")
    text = raw.decode()
    assert status == 200
    assert 'grpc_method="GetServerInfo"' in text  # a gRPC call, on the HTTP door's /metrics
    assert 'poolstream_requests_total{grpc_code="OK",grpc_method="POST /embed",grpc_service="http"}' in text


def test_docs_headers_and_unknown_routes(http_server: HttpServer):
    url = http_server.base_url
    status, raw = curl(f"{url}/openapi.json")
    paths = json.loads(raw)["paths"]
    assert {"/v1/embeddings", "/v1/models", "/pooling", "/embed", "/rerank", "/info"} <= set(paths)
    assert b"swagger" in curl(f"{url}/docs")[1].lower()
    assert b"<canvas" in curl(f"{url}/")[1]
    status, raw = curl(f"{url}/nope")
    assert status == 404 and json.loads(raw)["reason"] == "NOT_FOUND"
    import subprocess

    out = subprocess.run(["curl", "-sS", "-D", "-", "-o", "/dev/null", "-H", "Content-Type: application/json",
                          "-H", "X-Request-Id: abc123", "--data-binary", '{"input": "x"}', f"{url}/v1/embeddings"],
                         capture_output=True, text=True, check=True, timeout=60).stdout.lower()
    assert "x-request-id: pool-abc123" in out
    assert "x-inference-time:" in out and "poolstream-queue-time-ms:" in out
    status, raw = curl(f"{url}/v1/embeddings", None)  # a GET on a POST route
    assert status == 405
    form = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", "-d", "input=x", f"{url}/v1/embeddings"],
                          capture_output=True, text=True, check=True, timeout=60).stdout
    assert form.rsplit("\n", 1)[1] == "415" and "Content-Type: application/json" in form


def test_hostile_bodies(http_server: HttpServer, tmp_path):
    url = f"{http_server.base_url}/v1/embeddings"
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    status, raw = curl(url, body_file=deep)
    assert status == 400 and json.loads(raw)["error"]["code"] == "INVALID_JSON"
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{"input": "\xff\xfe"}')
    status, raw = curl(url, body_file=bad)
    assert status == 400 and json.loads(raw)["error"]["code"] == "INVALID_JSON"
    for body, field in (({"input": "x", "priority": 10**20}, "priority"), ({"input": [[10**30]]}, "input"),
                        ({"input": [[-5, 3]]}, "input[0]"), ({"input": "x", "dimensions": 0}, "dimensions")):
        status, raw = curl(url, body)
        assert status == 400, (body, raw)
        assert json.loads(raw)["error"]["param"].startswith(field), (body, raw)
    status, raw = curl(f"{http_server.base_url}/tokenize", {"inputs": "a", "prompt_name": "nope"})
    assert status == 400 and "prompt_name" in json.loads(raw)["error"]
    # The server is still fine.
    assert curl(url, {"input": "still serving"})[0] == 200
