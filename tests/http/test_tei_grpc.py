"""TEI's gRPC API (tei.v1) on poolstream's gRPC port, driven by stubs generated from TEI's own proto.

A TEI client (here: the Python stubs of the vendored, unmodified tei.proto)
works unchanged: Info, Embed, EmbedStream, Tokenize, Decode; health per TEI
(the service matching the model SERVING, the others NOT_SERVING); reflection
lists the services. Embeddings equal the HTTP /embed route's and gRPC
EncodeAll's.
"""

from __future__ import annotations

import json
import subprocess

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from poolstream.tei.gen.tei import tei_pb2 as tei
from poolstream.tei.gen.tei import tei_pb2_grpc as tei_grpc

from tests.conftest import grpcurl
from tests.http.conftest import HttpServer
from tests.http.test_openai import grpc_vectors
from tests.http.test_pooling_curl import curl

TEXTS = ["What is Deep Learning?", "Deep learning is a subset of machine learning.", "Paris is in France."]


async def test_info_embed_and_stream(http_server: HttpServer):
    async with grpc.aio.insecure_channel(http_server.grpc_address) as channel:
        info = await tei_grpc.InfoStub(channel).Info(tei.InfoRequest(), timeout=10)
        assert info.model_id == "all-MiniLM-L6-v2" and info.model_type == tei.MODEL_TYPE_EMBEDDING
        assert info.max_input_length == 256 and info.max_client_batch_size > 0
        embed = tei_grpc.EmbedStub(channel)
        one = await embed.Embed(tei.EmbedRequest(inputs=TEXTS[0]), timeout=30)
        assert len(one.embeddings) == 384
        assert one.metadata.compute_tokens > 3 and one.metadata.compute_chars == len(TEXTS[0])
        assert one.metadata.total_time_ns >= one.metadata.inference_time_ns > 0

        async def requests():
            for t in TEXTS:
                yield tei.EmbedRequest(inputs=t, truncate=True)

        streamed = [r async for r in embed.EmbedStream(requests(), timeout=60)]
        assert len(streamed) == len(TEXTS)
        vectors = np.array([r.embeddings for r in streamed], np.float32)
        # In request order, the same vectors as poolstream's own EncodeAll and TEI's HTTP /embed.
        np.testing.assert_allclose(vectors, await grpc_vectors(http_server.grpc_address, TEXTS), atol=1e-6)
        status, raw = curl(f"{http_server.base_url}/embed", {"inputs": TEXTS})
        assert status == 200
        np.testing.assert_allclose(np.array(json.loads(raw), np.float32), vectors, atol=1e-6)
        # Matryoshka and normalize=false.
        small = await embed.Embed(tei.EmbedRequest(inputs=TEXTS[0], dimensions=32), timeout=30)
        assert len(small.embeddings) == 32
        assert np.linalg.norm(small.embeddings) == pytest.approx(1.0, abs=1e-5)


async def test_tokenize_and_decode(http_server: HttpServer):
    async with grpc.aio.insecure_channel(http_server.grpc_address) as channel:
        stub = tei_grpc.TokenizeStub(channel)
        enc = await stub.Tokenize(tei.EncodeRequest(inputs="hello world", add_special_tokens=True), timeout=10)
        assert [t.id for t in enc.tokens] == [101, 7592, 2088, 102]
        assert [(t.text, t.special) for t in enc.tokens][1] == ("hello", False)
        assert (enc.tokens[2].start, enc.tokens[2].stop) == (6, 11)
        dec = await stub.Decode(tei.DecodeRequest(ids=[7592, 2088], skip_special_tokens=True), timeout=10)
        assert dec.text == "hello world"
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.Decode(tei.DecodeRequest(ids=[10**8]), timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_errors_and_unsupported_tasks(http_server: HttpServer):
    async with grpc.aio.insecure_channel(http_server.grpc_address) as channel:
        embed = tei_grpc.EmbedStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await embed.Embed(tei.EmbedRequest(inputs=""), timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await embed.Embed(tei.EmbedRequest(inputs="x", truncation_direction=tei.TRUNCATION_DIRECTION_LEFT),
                              timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "LEFT" in e.value.details().upper()
        # TEI's truncate=false refuses an input longer than the model takes.
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await embed.Embed(tei.EmbedRequest(inputs="word " * 600, truncate=False), timeout=30)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert len((await embed.Embed(tei.EmbedRequest(inputs="word " * 600, truncate=True), timeout=30))
                   .embeddings) == 384
        # A bad item ends the stream (TEI's behaviour), with its status.

        async def requests():
            yield tei.EmbedRequest(inputs="fine")
            yield tei.EmbedRequest(inputs="")

        with pytest.raises(grpc.aio.AioRpcError) as e:
            [r async for r in embed.EmbedStream(requests(), timeout=30)]
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        for call in (tei_grpc.RerankStub(channel).Rerank(tei.RerankRequest(query="q", texts=["a"]), timeout=10),
                     tei_grpc.PredictStub(channel).Predict(tei.PredictRequest(inputs="a"), timeout=10),
                     embed.EmbedSparse(tei.EmbedSparseRequest(inputs="a"), timeout=10)):
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await call
            assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert "does not support" in e.value.details()


async def test_health_per_tei_and_reflection(http_server: HttpServer):
    async with grpc.aio.insecure_channel(http_server.grpc_address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        statuses = {}
        for name in ("tei.v1.Info", "tei.v1.Tokenize", "tei.v1.Embed", "tei.v1.Predict", "tei.v1.Rerank"):
            statuses[name] = (await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)).status
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    assert statuses == {"tei.v1.Info": serving, "tei.v1.Tokenize": serving, "tei.v1.Embed": serving,
                        "tei.v1.Predict": not_serving, "tei.v1.Rerank": not_serving}
    listed = subprocess.run([grpcurl(), "-plaintext", http_server.grpc_address, "list"], capture_output=True,
                            text=True, check=True, timeout=30).stdout.split()
    assert {"tei.v1.Info", "tei.v1.Embed", "tei.v1.Predict", "tei.v1.Rerank", "tei.v1.Tokenize"} <= set(listed)
    # grpcurl builds the request from reflection alone, as TEI's README shows.
    out = subprocess.run([grpcurl(), "-plaintext", "-d", '{"inputs": "What is Deep Learning?"}',
                          http_server.grpc_address, "tei.v1.Embed/Embed"], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    assert len(json.loads(out)["embeddings"]) == 384


async def test_geotiff_model_serves_no_tei_embed(geotiff_http_server: HttpServer):
    async with grpc.aio.insecure_channel(geotiff_http_server.grpc_address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        check = await health.Check(health_pb2.HealthCheckRequest(service="tei.v1.Embed"), timeout=5)
        assert check.status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await tei_grpc.EmbedStub(channel).Embed(tei.EmbedRequest(inputs="x"), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
