"""Issue 6: the Python client library (poolstream_client): tensors, payloads,
and the sync and asyncio clients against a live server."""

from __future__ import annotations

import numpy as np
import pytest
from poolstream_client import (
    AsyncClient,
    PoolstreamError,
    from_numpy,
    payloads,
    tensors,
    text_embedding_v1,
    to_numpy,
    v1,
)
from poolstream_client._messages import wkt

TEXTS = ["A cat sits on the mat.", "A dog lies on the rug.", "Quarterly revenue grew by 8%."]
TEXT_EMBEDDING_REQUEST = "poolstream.payloads.text_embedding.v1.TextEmbeddingRequest"
TEXT_EMBEDDING_RESPONSE = "poolstream.payloads.text_embedding.v1.TextEmbeddingResponse"


# --- tensors (no server) ---------------------------------------------------


@pytest.mark.parametrize(
    ("array", "dtype"),
    [
        (np.arange(12, dtype=np.float32).reshape(3, 4) / 7, v1.DType.FLOAT32),
        (np.arange(6, dtype=np.float16).reshape(2, 3), v1.DType.FLOAT16),
        (np.linspace(-1, 1, 5), v1.DType.FLOAT64),
        (np.array([-128, 0, 127], dtype=np.int8), v1.DType.INT8),
        (np.array([0, 255], dtype=np.uint8), v1.DType.UINT8),
        (np.array([[-2, 3]], dtype=np.int16), v1.DType.INT16),
        (np.array([-(2**31), 2**31 - 1], dtype=np.int32), v1.DType.INT32),
        (np.array([-(2**62), 2**62], dtype=np.int64), v1.DType.INT64),
        (np.array([True, False, True]), v1.DType.BOOL),
        (np.float32(3.5), v1.DType.FLOAT32),
    ],
)
def test_tensor_numpy_round_trip(array, dtype):
    t = from_numpy(array)
    assert t.dtype == dtype and list(t.shape) == list(np.shape(array))
    back = to_numpy(v1.Tensor.parse(bytes(t)))  # through the wire format
    assert back.dtype == np.asarray(array).dtype and back.shape == np.shape(array)
    np.testing.assert_array_equal(back, array)


def test_tensor_bytes_are_little_endian_row_major():
    t = from_numpy(np.array([[1, 2], [3, 4]], dtype=">i4"))  # big-endian input
    assert t.dtype == v1.DType.INT32
    assert t.data == b"".join(int(i).to_bytes(4, "little") for i in (1, 2, 3, 4))
    t = from_numpy(np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)))
    np.testing.assert_array_equal(np.frombuffer(t.data, "<f4"), np.arange(6, dtype=np.float32))


def test_tensor_binary_packbits():
    values = np.array([0.5, -1, 0, 2, 3, -4, 5, 6, 7, -0.1])  # 10 elements -> 2 bytes
    t = from_numpy(values, v1.DType.BINARY)
    assert t.data == bytes([0b10011011, 0b10000000]) and list(t.shape) == [10]
    np.testing.assert_array_equal(to_numpy(t), (values > 0).astype(np.uint8))
    with pytest.raises(ValueError, match="needs 2 bytes"):
        to_numpy(v1.Tensor(dtype=v1.DType.BINARY, shape=[10], data=b"\x00"))


def test_tensor_bfloat16_numpy_and_torch():
    values = np.array([1.0, -2.5, 3.140625, 1e-3, 65504.0], dtype=np.float32)
    t = from_numpy(values, v1.DType.BFLOAT16)
    assert t.dtype == v1.DType.BFLOAT16 and len(t.data) == 2 * len(values)
    back = to_numpy(t)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, values, rtol=2**-8)
    torch = pytest.importorskip("torch")
    x = tensors.to_torch(t)
    assert x.dtype == torch.bfloat16
    np.testing.assert_array_equal(x.float().numpy(), back)
    # torch's own bfloat16 rounding gives the same bytes, and from_torch keeps them.
    y = torch.tensor(values).to(torch.bfloat16)
    assert tensors.from_torch(y).data == t.data
    z = tensors.from_torch(torch.arange(4, dtype=torch.float16))
    assert z.dtype == v1.DType.FLOAT16
    np.testing.assert_array_equal(tensors.to_torch(z).numpy(), np.arange(4, dtype=np.float16))


def test_tensor_float_values_fallback_and_errors():
    t = v1.Tensor(shape=[2], float_values=[0.5, 1.5])
    np.testing.assert_array_equal(to_numpy(t), np.array([0.5, 1.5], dtype=np.float32))
    with pytest.raises(ValueError, match="needs 8 bytes"):
        to_numpy(v1.Tensor(dtype=v1.DType.FLOAT32, shape=[2], data=b"\x00" * 4))
    with pytest.raises(ValueError, match="no poolstream DType"):
        from_numpy(np.array(["a"]))


# --- payloads (no server) --------------------------------------------------


def test_payload_helpers():
    j = payloads.as_payload({"texts": ["a"], "similarity": True})
    assert payloads.kind(j) == "json" and payloads.value(j) == {"texts": ["a"], "similarity": True}

    msg = text_embedding_v1.TextEmbeddingRequest(texts=["a", "b"], similarity=True)
    t = payloads.as_payload(msg)
    assert payloads.kind(t) == "typed"
    assert t.typed.type_url == f"type.googleapis.com/{TEXT_EMBEDDING_REQUEST}"
    assert payloads.value(v1.PluginPayload.parse(bytes(t))) == msg

    r = payloads.as_payload(b"II*\x00", media_type="image/tiff")
    assert payloads.kind(r) == "raw" and r.raw.media_type == "image/tiff" and r.raw.data == b"II*\x00"

    doc = {"@type": f"type.googleapis.com/{TEXT_EMBEDDING_REQUEST}", "texts": ["x"]}
    assert payloads.value(payloads.from_document(doc)) == text_embedding_v1.TextEmbeddingRequest(texts=["x"])
    assert payloads.value(payloads.from_document({"texts": ["x"]}, TEXT_EMBEDDING_REQUEST)).texts == ["x"]
    assert payloads.kind(payloads.from_document({"texts": ["x"]})) == "json"
    assert payloads.to_jsonable(t) == {
        "@type": f"type.googleapis.com/{TEXT_EMBEDDING_REQUEST}",
        "texts": ["a", "b"],
        "similarity": True,
    }
    with pytest.raises(TypeError):
        payloads.as_payload(3.5)


def test_payload_interoperates_with_grpcio_messages():
    """betterproto2 bytes == the server's protobuf (_pb2) bytes."""
    from google.protobuf import json_format
    from poolstream.payloads.text_embedding.v1 import text_embedding_pb2
    from poolstream.v1 import payload_pb2

    p = payloads.as_payload(text_embedding_v1.TextEmbeddingRequest(texts=["a"], similarity=True))
    pb = payload_pb2.PluginPayload.FromString(bytes(p))
    req = text_embedding_pb2.TextEmbeddingRequest()
    assert pb.typed.Unpack(req) and list(req.texts) == ["a"] and req.similarity
    j = payloads.json({"texts": ["a"], "n": 2})
    assert json_format.MessageToDict(payload_pb2.PluginPayload.FromString(bytes(j)).json) == {
        "texts": ["a"],
        "n": 2,
    }
    assert isinstance(j.json, wkt.Struct)


# --- live server -----------------------------------------------------------


def test_sync_client_server_info(py_client):
    info = py_client.server_info()
    assert info.plugin.name == "text_embedding"
    assert TEXT_EMBEDDING_REQUEST in info.plugin.input_types
    assert list(info.model.output_shape) == [384]


def test_sync_client_embed_and_encode(py_client):
    emb = py_client.embed(TEXTS)
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # Semantics: the two animal sentences are closer to each other than to finance.
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2] and sim[0, 1] > sim[1, 2]
    # Other dtypes come back consistently.
    half = py_client.embed(TEXTS, output_dtype="float16")
    assert half.dtype == np.float16
    np.testing.assert_allclose(half.astype(np.float32), emb, atol=2e-3)
    bits = py_client.embed(TEXTS, output_dtype=v1.DType.BINARY)
    np.testing.assert_array_equal(bits, (emb > 0).astype(np.uint8))
    # Streamed results carry their index.
    streamed = {r.index: to_numpy(r.output.outputs.data) for r in py_client.encode(TEXTS, request_id="py-test")}
    assert sorted(streamed) == [0, 1, 2]
    # EncodeAll (what embed() uses): one answer, prompt order, the same outputs.
    answered = py_client.encode_all(TEXTS, request_id="py-all")
    assert [r.index for r in answered] == [0, 1, 2]
    for r in answered:
        assert r.output.request_id == f"py-all-{r.index}"
        np.testing.assert_allclose(to_numpy(r.output.outputs.data), streamed[r.index], atol=1e-6)


def test_sync_client_process_typed_and_json(py_client):
    emb = py_client.embed(TEXTS)
    typed = py_client.process(text_embedding_v1.TextEmbeddingRequest(texts=TEXTS, similarity=True))
    assert typed.kind == "typed"
    assert typed.response.data.typed.type_url.endswith(TEXT_EMBEDDING_RESPONSE)
    resp = typed.value
    assert isinstance(resp, text_embedding_v1.TextEmbeddingResponse)
    np.testing.assert_allclose(to_numpy(resp.embeddings), emb, atol=1e-6)
    np.testing.assert_allclose(to_numpy(resp.similarity), emb @ emb.T, atol=1e-5)
    assert typed.usage.prompt_count == 3

    as_json = py_client.process({"texts": TEXTS, "similarity": True})
    assert as_json.kind == "json" and isinstance(as_json.value, dict)
    assert "embeddings" in as_json.value


def test_sync_client_process_stream(py_client):
    events = list(py_client.process_stream({"texts": TEXTS}, detail=v1.StreamDetail.PROGRESS))
    assert events[-1].result is not None
    progress = [e.progress for e in events[:-1]]
    assert progress and all(p is not None and p.total == 3 for p in progress)
    assert progress[-1].completed == 3


def test_client_errors_carry_code_and_reason(py_client):
    import grpc

    with pytest.raises(PoolstreamError) as e:
        py_client.process({"no_texts_here": 1})
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.reason  # from google.rpc.ErrorInfo
    assert e.value.domain == "poolstream.dev"


async def test_async_client(address):
    async with AsyncClient(address, timeout=120) as client:
        info = await client.server_info()
        assert info.plugin.name == "text_embedding"
        emb = await client.embed(TEXTS)
        assert emb.shape == (3, 384)
        indices = sorted([r.index async for r in client.encode(TEXTS[:2])])
        assert indices == [0, 1]
        assert [r.index for r in await client.encode_all(TEXTS[:2])] == [0, 1]
        result = await client.process(text_embedding_v1.TextEmbeddingRequest(texts=TEXTS[:1]))
        np.testing.assert_allclose(to_numpy(result.value.embeddings)[0], emb[0], atol=1e-6)
        events = [e async for e in client.process_stream(text_embedding_v1.TextEmbeddingRequest(texts=TEXTS))]
        assert events[-1].result is not None
        assert [e.chunk.index for e in events[:-1] if e.chunk is not None]
