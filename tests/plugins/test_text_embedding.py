"""The built-in text_embedding plugin over gRPC: payload forms, options, per-request state."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest

from poolstream.payloads.text_embedding.v1 import text_embedding_pb2 as te
from poolstream.v1 import payload_pb2
from poolstream.v1 import pooling_service_pb2 as pb
from poolstream.v1 import pooling_service_pb2_grpc as pb_grpc
from tests.grpc_helpers import error_details, json_payload, typed_payload

TEXTS = ["The cat sits on the mat.", "A feline rests on a rug.", "Stock markets fell sharply today."]

@pytest.fixture
def default_server(layout_server):
    """Every test here runs against each process layout (tests/conftest.py, LAYOUTS)."""
    return layout_server



def tensor(t) -> np.ndarray:
    dtypes = {1: "<f4", 2: "<f2"}
    return np.frombuffer(t.data, dtype=dtypes[t.dtype]).reshape(list(t.shape))


@pytest.fixture
async def stub(default_server):
    async with grpc.aio.insecure_channel(default_server.address) as ch:
        yield pb_grpc.PoolingServiceStub(ch)


async def process(stub, payload) -> pb.ProcessResponse:
    return await stub.Process(pb.ProcessRequest(data=payload))


async def test_json_and_typed_payloads_agree(stub):
    as_json = await process(stub, json_payload({"texts": TEXTS, "similarity": True}))
    typed = await process(stub, typed_payload(te.TextEmbeddingRequest(texts=TEXTS, similarity=True)))

    body = as_json.data.json
    emb_json = np.array(body["embeddings"], dtype=np.float32)
    assert emb_json.shape == (3, 384) and body["dimensions"] == 384

    response = te.TextEmbeddingResponse()
    assert typed.data.typed.Unpack(response)
    emb_typed = tensor(response.embeddings)
    np.testing.assert_allclose(emb_typed, emb_json, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(emb_typed, axis=1), 1.0, atol=1e-5)  # model normalises
    sim = tensor(response.similarity)
    np.testing.assert_allclose(sim, emb_typed @ emb_typed.T, atol=1e-5)
    assert sim[0, 1] > sim[0, 2] + 0.3  # paraphrases are closer than an unrelated sentence
    assert list(response.token_counts) == [int(c) for c in body["token_counts"]]
    assert typed.usage.prompt_count == 3 and typed.usage.prompt_tokens == sum(response.token_counts)


async def test_raw_payloads(stub):
    plain = await process(stub, payload_pb2.PluginPayload(
        raw=payload_pb2.RawPayload(media_type="text/plain", data="\n".join(TEXTS).encode())))
    assert len(plain.data.json["embeddings"]) == 3
    as_json = await process(stub, payload_pb2.PluginPayload(
        raw=payload_pb2.RawPayload(media_type="application/json", data=b'{"texts": ["x", "y"]}')))
    assert len(as_json.data.json["embeddings"]) == 2


async def test_options_dimensions_dtype_binary_truncation(stub):
    full = np.array((await process(stub, json_payload({"texts": TEXTS}))).data.json["embeddings"])
    d64 = await process(stub, typed_payload(te.TextEmbeddingRequest(texts=TEXTS, dimensions=64)))
    r = te.TextEmbeddingResponse()
    d64.data.typed.Unpack(r)
    e64 = tensor(r.embeddings)
    assert e64.shape == (3, 64)
    expected = full[:, :64] / np.linalg.norm(full[:, :64], axis=1, keepdims=True)  # Matryoshka + re-normalise
    np.testing.assert_allclose(e64, expected, atol=1e-5)

    half = await process(stub, typed_payload(te.TextEmbeddingRequest(
        texts=TEXTS, output_dtype=te.EMBEDDING_DTYPE_FLOAT16)))
    half.data.typed.Unpack(r := te.TextEmbeddingResponse())
    assert r.embeddings.dtype == 2 and len(r.embeddings.data) == 3 * 384 * 2
    np.testing.assert_allclose(tensor(r.embeddings).astype(np.float32), full, atol=2e-3)

    binary = await process(stub, typed_payload(te.TextEmbeddingRequest(
        texts=TEXTS, output_dtype=te.EMBEDDING_DTYPE_BINARY)))
    binary.data.typed.Unpack(r := te.TextEmbeddingResponse())
    bits = np.unpackbits(np.frombuffer(r.embeddings.data, np.uint8))[: 3 * 384].reshape(3, 384)
    np.testing.assert_array_equal(bits, (full > 0).astype(np.uint8))

    long_text = "word " * 1000
    cut = (await process(stub, json_payload({"texts": [long_text, "short"]}))).data.json
    assert cut["truncated"] == [True, False] and cut["token_counts"][0] == 256
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await process(stub, json_payload({"texts": [long_text], "truncate": False}))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(e.value)["reason"] == "INVALID_PROMPT"


@pytest.mark.parametrize(
    "payload",
    [
        {"texts": []},
        {"texts": ["ok", 3]},
        {"texts": ["ok"], "output_dtype": "int4"},
        {"texts": ["ok"], "dimensions": 0},
        {"texts": ["ok"], "dimensions": 1.5},
        {"texts": ["ok"], "bogus": True},
        {"nothing": 1},
    ],
)
async def test_bad_payloads_are_invalid_argument(stub, payload):
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await process(stub, json_payload(payload))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error_details(e.value)
    assert details["reason"] == "INVALID_PAYLOAD" and details["violations"][0][0] == "data"


async def test_wrong_typed_message_and_unknown_type(stub):
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await process(stub, typed_payload(te.TextEmbeddingResponse()))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    unknown = payload_pb2.PluginPayload()
    unknown.typed.type_url = "type.googleapis.com/no.such.Message"
    unknown.typed.value = b"\x08\x01"
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await process(stub, unknown)
    assert error_details(e.value)["reason"] == "UNKNOWN_PAYLOAD_TYPE"


async def test_concurrent_requests_with_different_options_do_not_interfere(stub):
    base = np.array((await process(stub, json_payload({"texts": TEXTS}))).data.json["embeddings"])

    async def one(i: int):
        dims = 16 * (1 + i % 8)
        req = te.TextEmbeddingRequest(texts=TEXTS[: 1 + i % 3], dimensions=dims, similarity=bool(i % 2))
        resp = await process(stub, typed_payload(req))
        out = te.TextEmbeddingResponse()
        resp.data.typed.Unpack(out)
        return i, dims, out

    for i, dims, out in await asyncio.gather(*(one(i) for i in range(40))):
        n = 1 + i % 3
        emb = tensor(out.embeddings)
        assert emb.shape == (n, dims)
        expected = base[:n, :dims] / np.linalg.norm(base[:n, :dims], axis=1, keepdims=True)
        np.testing.assert_allclose(emb, expected, atol=1e-5)
        assert out.HasField("similarity") == bool(i % 2)


async def test_plugin_calls_report_engine_timing(stub):
    """Process carries the same timing trailers as Encode (server/timing.py)."""
    call = stub.Process(pb.ProcessRequest(data=json_payload({"texts": TEXTS})))
    await call
    trailers = dict(await call.trailing_metadata())
    assert float(trailers["poolstream-inference-time-ms"]) > 0
    assert float(trailers["poolstream-queue-time-ms"]) >= 0
