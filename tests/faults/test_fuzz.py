"""Bad input: random bytes and hostile-but-valid messages to every RPC and plugin payload.

One ``poolstream serve`` (the embedded model with the text_embedding plugin) takes
property-based input from hypothesis:

- random bytes, and valid requests with bytes flipped or cut, sent as the message of
  every PoolingService method through a generic channel (real HTTP/2 gRPC frames);
- well-formed messages with hostile contents: out-of-vocabulary token ids, tensors
  whose dtype, shape and bytes disagree, unknown enum values, extreme numbers, empty
  and huge strings, payloads of every kind (JSON, typed Any, raw) the plugin may get.

Every call must end within its timeout with OK or a documented status (never UNKNOWN,
never INTERNAL), and the server must stay SERVING. Examples are derandomized, so a
failure reproduces.
"""

from __future__ import annotations

import json
import socket

import grpc
import pytest
from google.protobuf import any_pb2, struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from poolstream.payloads.text_embedding.v1 import text_embedding_pb2 as te_pb2
from poolstream.v1 import payload_pb2, pooling_pb2, tensor_pb2
from poolstream.v1 import pooling_service_pb2 as pb
from poolstream.v1 import pooling_service_pb2_grpc as pb_grpc

from tests.conftest import launch_server
from tests.faults._common import assert_documented

CALL_TIMEOUT = 30  # a call still running after this is a hang
FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
_SERVICE = pb.DESCRIPTOR.services_by_name["PoolingService"]
# Every method of the contract (a new RPC is fuzzed without editing this file): path -> server streaming?
METHODS = {f"/{_SERVICE.full_name}/{m.name}": m.server_streaming for m in _SERVICE.methods}


@pytest.fixture(scope="module")
def server():
    s = launch_server("--max-prompts-per-request", "16", "--max-payload-bytes", str(256 * 1024),
                      "--max-receive-message-bytes", str(1024 * 1024), "--plugin-timeout", "20")
    yield s
    assert s.stop() == 0, s.log()[-3000:]


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.address) as ch:
        yield ch


def _assert_serving(channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    status = health.Check(health_pb2.HealthCheckRequest(service="poolstream.v1.PoolingService"), timeout=10)
    assert status.status == health_pb2.HealthCheckResponse.SERVING


def _call_raw(channel, path: str, data: bytes) -> list[bytes]:
    """Send ``data`` as the request message; return the response messages (bytes)."""
    if METHODS[path]:
        call = channel.unary_stream(path, request_serializer=None, response_deserializer=None)
        return list(call(data, timeout=CALL_TIMEOUT))
    call = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
    return [call(data, timeout=CALL_TIMEOUT)]


def _expect_answer(fn):
    """Run a call; OK or a documented status. A timeout (our deadline) means a hang."""
    try:
        return fn()
    except grpc.RpcError as e:
        code, reason = assert_documented(e)
        assert not (code == "DEADLINE_EXCEEDED" and reason is None), "the server did not answer in time"
        return e


# -- raw bytes --------------------------------------------------------------------------------------

_VALID = [
    pb.ProcessRequest(data=payload_pb2.PluginPayload(json=struct_pb2.Struct(
        fields={"texts": struct_pb2.Value(list_value=struct_pb2.ListValue(
            values=[struct_pb2.Value(string_value="hello")]))}))).SerializeToString(),
    pb.EncodeRequest(prompts=[pooling_pb2.Prompt(text="hello"),
                              pooling_pb2.Prompt(token_ids=pooling_pb2.TokenIds(ids=[101, 7592, 102]))],
                     params=pooling_pb2.PoolingParams(output_dtype=tensor_pb2.DTYPE_FLOAT16)).SerializeToString(),
]


@st.composite
def mutated(draw) -> bytes:
    base = bytearray(draw(st.sampled_from(_VALID)))
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(base) - 1))
        base[i] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        base = base[: draw(st.integers(0, len(base)))]
    return bytes(base)


@FUZZ
@given(path=st.sampled_from(sorted(METHODS)), data=st.binary(max_size=512) | mutated())
def test_random_bytes_to_every_method(channel, path, data):
    out = _expect_answer(lambda: _call_raw(channel, path, data))
    if isinstance(out, list) and path.endswith("/Encode"):
        # Whatever decoded: one answer per prompt, indices a permutation.
        req = pb.EncodeRequest.FromString(data)
        indices = sorted(pb.EncodeResponse.FromString(m).index for m in out)
        assert indices == list(range(len(req.prompts)))
    if isinstance(out, list) and path.endswith("/EncodeAll"):
        # The same fields (EncodeAllRequest mirrors EncodeRequest): one result per prompt, in order.
        req = pb.EncodeAllRequest.FromString(data)
        [message] = out
        assert [r.index for r in pb.EncodeAllResponse.FromString(message).results] == list(range(len(req.prompts)))


def test_server_survives_garbage_connections(server, channel):
    """Non-HTTP/2 bytes on the socket, a half-sent preface, and abrupt closes: bounded, loopback."""
    host, port = server.address.rsplit(":", 1)
    garbage = [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\xff" * 64,
               b"PRI * HTTP/2.0\r\n", bytes(range(256)) * 4]
    for data in garbage:
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(data)
            s.settimeout(2)
            try:
                s.recv(4096)
            except (TimeoutError, ConnectionError):
                pass
    _assert_serving(channel)


# -- hostile but well-formed messages ---------------------------------------------------------------

_U32 = st.integers(0, 2**32 - 1)
_texts = st.text(max_size=60) | st.sampled_from(["", " ", "\x00", "\ud7ff" * 3, "word " * 2000, "😀" * 300])
_dtypes = st.integers(0, 14)  # includes values the enum does not define
_tensor = st.builds(
    lambda dtype, shape, data, fv: tensor_pb2.Tensor(dtype=dtype, shape=shape, data=data, float_values=fv),
    _dtypes,
    st.lists(st.integers(-3, 2**40) | st.integers(0, 8), max_size=4),
    st.binary(max_size=128),
    st.lists(st.floats(width=32), max_size=8),
)
_prompt = st.one_of(
    st.builds(lambda t: pooling_pb2.Prompt(text=t), _texts),
    st.builds(lambda ids: pooling_pb2.Prompt(token_ids=pooling_pb2.TokenIds(ids=ids)),
              st.lists(_U32 | st.integers(0, 30521), max_size=600)),
    st.builds(lambda ids, mm: pooling_pb2.Prompt(multi_modal=pooling_pb2.MultiModalPrompt(
        prompt_token_ids=ids, multi_modal_data=mm)),
        st.lists(st.integers(0, 30521), max_size=8),
        st.dictionaries(st.sampled_from(["pixel_values", "x", ""]) | st.text(max_size=8), _tensor, max_size=2)),
    st.just(pooling_pb2.Prompt()),
)


def _params(normalize, dimensions, truncate, tpt, output_dtype, include):
    p = pooling_pb2.PoolingParams(output_dtype=output_dtype, include_float_values=include)
    if normalize is not None:
        p.normalize = normalize
    if dimensions is not None:
        p.dimensions = dimensions
    if truncate is not None:
        p.truncate = truncate
    if tpt is not None:
        p.truncate_prompt_tokens = tpt
    return p


_params_st = st.none() | st.builds(
    _params, st.none() | st.booleans(), st.none() | _U32 | st.integers(0, 400), st.none() | st.booleans(),
    st.none() | _U32 | st.integers(0, 600), _dtypes, st.booleans())
_priority = st.integers(-(2**31), 2**31 - 1)

_json_scalar = st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
_json = st.recursive(_json_scalar, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
_te_dict = st.fixed_dictionaries(
    {"texts": st.lists(_texts | _json_scalar, max_size=6) | _json},
    optional={"normalize": _json_scalar, "dimensions": st.integers(-5, 10**6) | _json_scalar,
              "truncate": _json_scalar, "similarity": _json_scalar,
              "output_dtype": st.sampled_from(["float32", "float16", "binary", "int8", "", "FLOAT16"]) | _json_scalar},
) | st.dictionaries(st.text(max_size=10), _json, max_size=4)


def _struct(d: dict) -> payload_pb2.PluginPayload:
    s = struct_pb2.Struct()
    s.update(d)
    return payload_pb2.PluginPayload(json=s)


def _typed(type_url: str, value: bytes) -> payload_pb2.PluginPayload:
    return payload_pb2.PluginPayload(typed=any_pb2.Any(type_url=type_url, value=value))


_te_message = st.builds(
    lambda texts, dims, dtype, sim: te_pb2.TextEmbeddingRequest(
        texts=texts, dimensions=dims, output_dtype=dtype, similarity=sim).SerializeToString(),
    st.lists(_texts, max_size=6), _U32 | st.integers(0, 400), st.integers(0, 9), st.booleans())
_TE_URL = "type.googleapis.com/poolstream.payloads.text_embedding.v1.TextEmbeddingRequest"
_payload = st.one_of(
    st.builds(_struct, _te_dict),
    st.builds(_typed, st.just(_TE_URL), _te_message | st.binary(max_size=64)),
    st.builds(_typed, st.sampled_from(["", "type.googleapis.com/", "x/google.protobuf.Empty",
                                       "type.googleapis.com/poolstream.v1.EncodeRequest"]) | st.text(max_size=40),
              st.binary(max_size=64)),
    st.builds(lambda mt, data: payload_pb2.PluginPayload(raw=payload_pb2.RawPayload(media_type=mt, data=data)),
              st.sampled_from(["application/json", "text/plain", "text/plain; charset=latin-1", "", "image/png"])
              | st.text(max_size=20),
              st.binary(max_size=256) | _te_dict.map(lambda d: json.dumps(d).encode())),
    st.just(payload_pb2.PluginPayload()),
)


@FUZZ
@given(request_id=st.text(max_size=40), prompts=st.lists(_prompt, max_size=20), params=_params_st,
       priority=_priority)
def test_hostile_encode_requests(channel, request_id, prompts, params, priority):
    req = pb.EncodeRequest(request_id=request_id, prompts=prompts, priority=priority)
    if params is not None:
        req.params.CopyFrom(params)
    stub = pb_grpc.PoolingServiceStub(channel)
    out = _expect_answer(lambda: list(stub.Encode(req, timeout=CALL_TIMEOUT)))
    if isinstance(out, list):
        assert sorted(r.index for r in out) == list(range(len(prompts)))
        for r in out:
            if r.HasField("error"):  # in-stream errors are documented statuses too
                code = {c.value[0]: c.name for c in grpc.StatusCode}[r.error.code]
                assert code not in ("INTERNAL", "UNKNOWN"), r.error
                assert r.error.details, r.error


@FUZZ
@given(data=_payload, params=_params_st, priority=_priority, stream=st.booleans(),
       detail=st.integers(0, 5))
def test_hostile_plugin_payloads(channel, data, params, priority, stream, detail):
    stub = pb_grpc.PoolingServiceStub(channel)
    if stream:
        req = pb.ProcessStreamRequest(data=data, priority=priority, detail=detail)
        if params is not None:
            req.params.CopyFrom(params)
        out = _expect_answer(lambda: list(stub.ProcessStream(req, timeout=CALL_TIMEOUT)))
        if isinstance(out, list):
            assert out and out[-1].HasField("result")
    else:
        req = pb.ProcessRequest(data=data, priority=priority)
        if params is not None:
            req.params.CopyFrom(params)
        _expect_answer(lambda: stub.Process(req, timeout=CALL_TIMEOUT))


def test_undefined_output_dtype_is_invalid_params(channel):
    stub = pb_grpc.PoolingServiceStub(channel)
    req = pb.EncodeRequest(prompts=[pooling_pb2.Prompt(text="a")], params=pooling_pb2.PoolingParams(output_dtype=13))
    with pytest.raises(grpc.RpcError) as e:
        list(stub.Encode(req, timeout=CALL_TIMEOUT))
    assert assert_documented(e.value) == ("INVALID_ARGUMENT", "INVALID_PARAMS")


def test_undecodable_typed_payload_is_invalid_payload(channel):
    stub = pb_grpc.PoolingServiceStub(channel)
    with pytest.raises(grpc.RpcError) as e:
        stub.Process(pb.ProcessRequest(data=_typed(_TE_URL, b"\xff\x01")), timeout=CALL_TIMEOUT)
    assert assert_documented(e.value) == ("INVALID_ARGUMENT", "INVALID_PAYLOAD")


def test_still_serving_after_fuzzing(channel):
    _assert_serving(channel)
    info = pb_grpc.PoolingServiceStub(channel).GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
    assert info.plugin.name == "text_embedding"
