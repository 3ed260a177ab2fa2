"""OpenAI-compatible /v1/embeddings and /v1/models, driven by the official ``openai`` SDK.

The vectors must be the ones gRPC ``EncodeAll`` returns for the same texts
(same engine, same model), in float and in base64.
"""

from __future__ import annotations

import base64

import grpc
import numpy as np
import openai
import pytest
from poolstream.v1 import pooling_pb2
from poolstream.v1 import pooling_service_pb2 as pb
from poolstream.v1 import pooling_service_pb2_grpc as pb_grpc

from tests.http.conftest import HttpServer

TEXTS = ["A cat sits on the mat.", "A kitten rests on a rug.", "Stocks fell sharply today."]
MODEL = "all-MiniLM-L6-v2"


@pytest.fixture
def client(http_server: HttpServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{http_server.base_url}/v1", api_key="unused", max_retries=0, timeout=60)


async def grpc_vectors(address: str, texts: list[str], **params) -> np.ndarray:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.PoolingServiceStub(channel)
        request = pb.EncodeAllRequest(prompts=[pooling_pb2.Prompt(text=t) for t in texts])
        if params:
            request.params.CopyFrom(pooling_pb2.PoolingParams(**params))
        response = await stub.EncodeAll(request, timeout=60)
    out = []
    for r in response.results:
        assert r.HasField("output"), r
        t = r.output.outputs.data
        out.append(np.frombuffer(t.data, "<f4").reshape(tuple(t.shape)))
    return np.stack(out)


async def test_float_embeddings_match_grpc(client, http_server):
    result = client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
    assert result.model == MODEL and result.object == "list"
    assert [d.index for d in result.data] == [0, 1, 2]
    http = np.array([d.embedding for d in result.data], dtype=np.float32)
    assert http.shape == (3, 384)
    np.testing.assert_allclose(http, await grpc_vectors(http_server.grpc_address, TEXTS), atol=1e-6)
    assert result.usage.prompt_tokens == result.usage.total_tokens > len(TEXTS) * 3


async def test_base64_embeddings_match_grpc(client, http_server):
    # The SDK asks for base64 by default when numpy is installed and decodes it itself;
    # ask explicitly and decode by hand too.
    result = client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="base64")
    raw = [d.embedding for d in result.data]
    assert all(isinstance(e, str) for e in raw)
    http = np.stack([np.frombuffer(base64.b64decode(e), "<f4") for e in raw])
    np.testing.assert_array_equal(http, await grpc_vectors(http_server.grpc_address, TEXTS))
    default = client.embeddings.create(model=MODEL, input=TEXTS)  # the SDK's own decoding
    np.testing.assert_allclose(np.array([d.embedding for d in default.data], np.float32), http, atol=1e-7)


async def test_single_text_token_ids_and_dimensions(client, http_server):
    one = client.embeddings.create(model=MODEL, input=TEXTS[0], encoding_format="float")
    assert len(one.data) == 1
    # Token ids of "[CLS] hello world [SEP]" as a list of ids and as a list of lists.
    ids = [101, 7592, 2088, 102]
    by_ids = client.embeddings.create(model=MODEL, input=ids, encoding_format="float")
    by_lists = client.embeddings.create(model=MODEL, input=[ids, ids], encoding_format="float")
    by_text = client.embeddings.create(model=MODEL, input="hello world", encoding_format="float")
    np.testing.assert_allclose(by_ids.data[0].embedding, by_text.data[0].embedding, atol=1e-5)
    assert len(by_lists.data) == 2
    small = client.embeddings.create(model=MODEL, input=TEXTS, dimensions=64, encoding_format="float")
    vecs = np.array([d.embedding for d in small.data])
    assert vecs.shape == (3, 64)
    np.testing.assert_allclose(vecs, await grpc_vectors(http_server.grpc_address, TEXTS, dimensions=64), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)  # renormalised


def test_models_list(client):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]


def test_errors_are_openai_errors(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.embeddings.create(model="no-such-model", input="x")
    assert e.value.status_code == 404 and e.value.code == "MODEL_NOT_FOUND"
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=MODEL, input=[])
    assert e.value.code == "INVALID_PROMPT" and e.value.param == "input"
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=MODEL, input=["fine", ""])
    assert e.value.param == "input[1]"
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=MODEL, input="x", dimensions=4096)
    assert e.value.code == "INVALID_PROMPT" and "dimensions" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=MODEL, input=[[10**9]])
    assert e.value.param == "input[0]"
