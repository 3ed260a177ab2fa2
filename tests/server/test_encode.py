"""Encode: raw pooling without a plugin, streamed per prompt in completion order."""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest

from poolstream.v1 import pooling_pb2, tensor_pb2
from poolstream.v1 import pooling_service_pb2 as pb
from poolstream.v1 import pooling_service_pb2_grpc as pb_grpc
from tests.grpc_helpers import error_details

@pytest.fixture
def default_server(layout_server):
    """Every test here runs against each process layout (tests/conftest.py, LAYOUTS)."""
    return layout_server



def text(t: str) -> pooling_pb2.Prompt:
    return pooling_pb2.Prompt(text=t)


def vec(output: pooling_pb2.PoolingRequestOutput) -> np.ndarray:
    t = output.outputs.data
    assert t.dtype == tensor_pb2.DTYPE_FLOAT32
    return np.frombuffer(t.data, "<f4").reshape(list(t.shape))


@pytest.fixture
async def stub(default_server):
    async with grpc.aio.insecure_channel(default_server.address) as ch:
        yield pb_grpc.PoolingServiceStub(ch)


async def test_encode_streams_one_result_per_prompt_with_index(stub):
    prompts = [text(f"sentence {i}") for i in range(10)]
    results = [r async for r in stub.Encode(pb.EncodeRequest(request_id="enc", prompts=prompts))]
    assert sorted(r.index for r in results) == list(range(10))
    for r in results:
        out = r.output
        assert out.request_id == f"enc-{r.index}" and out.finished
        assert vec(out).shape == (384,)
        assert out.prompt_token_ids[0] == 101 and out.prompt_token_ids[-1] == 102  # [CLS] ... [SEP]


async def test_token_ids_prompt_equals_text_prompt(stub):
    [by_text] = [r async for r in stub.Encode(pb.EncodeRequest(prompts=[text("hello world")]))]
    ids = list(by_text.output.prompt_token_ids)
    [by_ids] = [r async for r in stub.Encode(pb.EncodeRequest(
        prompts=[pooling_pb2.Prompt(token_ids=pooling_pb2.TokenIds(ids=ids))]))]
    np.testing.assert_allclose(vec(by_ids.output), vec(by_text.output), atol=1e-6)


async def test_bad_prompt_is_reported_in_stream_and_does_not_end_it(stub):
    prompts = [
        text("fine"),
        pooling_pb2.Prompt(),  # nothing set
        pooling_pb2.Prompt(token_ids=pooling_pb2.TokenIds(ids=[101, 10**7, 102])),  # id out of vocabulary
        text("word " * 2000),
        text("also fine"),
    ]
    params = pooling_pb2.PoolingParams(truncate=False)
    results = {r.index: r async for r in stub.Encode(pb.EncodeRequest(prompts=prompts, params=params))}
    assert set(results) == {0, 1, 2, 3, 4}
    assert results[0].HasField("output") and results[4].HasField("output")
    for i in (1, 2, 3):
        err = results[i].error
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT.value[0], (i, err)
        assert err.message


async def test_params_dimensions_dtype_and_float_values(stub):
    params = pooling_pb2.PoolingParams(dimensions=32, output_dtype=tensor_pb2.DTYPE_FLOAT16,
                                       include_float_values=True)
    [r] = [r async for r in stub.Encode(pb.EncodeRequest(prompts=[text("grpcurl friendly")], params=params))]
    t = r.output.outputs.data
    assert t.dtype == tensor_pb2.DTYPE_FLOAT16 and list(t.shape) == [32]
    half = np.frombuffer(t.data, "<f2").astype(np.float32)
    np.testing.assert_allclose(half, np.array(t.float_values), atol=1e-3)
    assert abs(np.linalg.norm(half) - 1) < 1e-2


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (pb.EncodeRequest(), "INVALID_PROMPT"),
        (pb.EncodeRequest(prompts=[text("x")], params=pooling_pb2.PoolingParams(
            output_dtype=tensor_pb2.DTYPE_INT64)), "INVALID_PARAMS"),
        (pb.EncodeRequest(prompts=[text("x")], params=pooling_pb2.PoolingParams(dimensions=0)), "INVALID_PARAMS"),
    ],
)
async def test_whole_request_errors(stub, request_, reason):
    with pytest.raises(grpc.aio.AioRpcError) as e:
        _ = [r async for r in stub.Encode(request_)]
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(e.value)["reason"] == reason


async def test_encode_all_answers_once_in_prompt_order_with_encode_s_outputs(stub):
    texts = [f"sentence number {i} " + "word " * (i * 7) for i in range(6)]
    prompts = [text(t) for t in texts]
    streamed = {r.index: vec(r.output) async for r in stub.Encode(pb.EncodeRequest(prompts=prompts))}
    response = await stub.EncodeAll(pb.EncodeAllRequest(request_id="all", prompts=prompts))
    assert [r.index for r in response.results] == list(range(6))
    for r in response.results:
        assert r.output.request_id == f"all-{r.index}"
        np.testing.assert_allclose(vec(r.output), streamed[r.index], atol=1e-5)


async def test_encode_all_reports_a_bad_prompt_in_its_result(stub):
    prompts = [text("fine"), pooling_pb2.Prompt(), text("also fine")]
    response = await stub.EncodeAll(pb.EncodeAllRequest(prompts=prompts))
    assert [r.WhichOneof("result") for r in response.results] == ["output", "error", "output"]
    assert response.results[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]


async def test_encode_all_whole_request_errors(stub):
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.EncodeAll(pb.EncodeAllRequest())
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(e.value)["reason"] == "INVALID_PROMPT"


def timing_trailers(metadata) -> dict[str, float]:
    return {k: float(v) for k, v in (metadata or ()) if k.startswith("poolstream-") and k.endswith("-time-ms")}


async def test_engine_timing_in_trailing_metadata(stub):
    """Encode and EncodeAll report queue and inference time (TEI's x-queue-time /
    x-inference-time); a failed call and a call without prompts report none."""
    t0 = time.perf_counter()
    call = stub.Encode(pb.EncodeRequest(prompts=[text("timing, one prompt")]))
    [_] = [r async for r in call]
    elapsed_ms = 1e3 * (time.perf_counter() - t0)
    one = timing_trailers(await call.trailing_metadata())
    assert set(one) == {"poolstream-queue-time-ms", "poolstream-inference-time-ms"}
    assert one["poolstream-inference-time-ms"] > 0 and one["poolstream-queue-time-ms"] >= 0
    # Both are spans inside the call, measured by the server's clock.
    assert one["poolstream-queue-time-ms"] + one["poolstream-inference-time-ms"] < elapsed_ms

    call = stub.EncodeAll(pb.EncodeAllRequest(prompts=[text(f"timing {i} " * (1 + i % 7)) for i in range(24)]))
    await call
    many = timing_trailers(await call.trailing_metadata())
    assert many["poolstream-inference-time-ms"] > 0

    info = stub.GetServerInfo(pb.GetServerInfoRequest())
    await info
    assert timing_trailers(await info.trailing_metadata()) == {}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.EncodeAll(pb.EncodeAllRequest())
    assert timing_trailers(err.value.trailing_metadata()) == {}
