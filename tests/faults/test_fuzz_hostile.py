"""Fuzzing the hostile-input classes of issue 17, with a canary caller running throughout.

One ``poolstream serve`` (embedded MiniLM + text_embedding) with small cost caps, so that
"the largest the limits allow" and "just over" are cheap to send. hypothesis generates:

- non-finite numbers (NaN, +/-Infinity) anywhere in a JSON (Struct) payload, in raw
  ``application/json`` bytes, and in tensors;
- deep nesting: Struct payloads near the protobuf recursion limit, raw JSON up to 20,000 deep;
- tensor shapes whose int64 product overflows, or is merely huge;
- huge single prompts of every kind (text, token ids, tensors): at, just over and far over
  the per-prompt caps, alone or repeated up to and over the per-request caps;
- long strings in every field that can be echoed: request_id, x-request-id, type URLs,
  JSON keys, tensor names, media types, text values;
- duplicate request ids (field and header) across concurrent calls.

Every answer must be OK or a documented (code, reason) with poolstream details, never
INTERNAL or UNKNOWN; the server stays SERVING; and a canary thread that sends small
Encode calls the whole time gets every answer right (its own embedding, to 1e-5: batch
composition moves the last bits).
"""

from __future__ import annotations

import json
import math
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from google.protobuf import any_pb2, struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from poolstream.v1 import payload_pb2, pooling_pb2, tensor_pb2
from poolstream.v1 import pooling_service_pb2 as pb
from poolstream.v1 import pooling_service_pb2_grpc as pb_grpc

from tests.conftest import launch_server
from tests.faults._common import assert_documented, status_of

TIMEOUT = 60
CAPS = {"prompt_chars": 50_000, "request_chars": 120_000, "prompt_ids": 2048, "request_ids": 6000,
        "prompt_tensor": 256 * 1024, "request_tensor": 1024 * 1024}
RECEIVE = 8 * 1024 * 1024
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])
_CODES = {c.value[0]: c.name for c in grpc.StatusCode}


@pytest.fixture(scope="module")
def server():
    s = launch_server(
        "--max-prompt-chars", str(CAPS["prompt_chars"]), "--max-request-chars", str(CAPS["request_chars"]),
        "--max-prompt-token-ids", str(CAPS["prompt_ids"]), "--max-request-token-ids", str(CAPS["request_ids"]),
        "--max-prompt-tensor-bytes", str(CAPS["prompt_tensor"]),
        "--max-request-tensor-bytes", str(CAPS["request_tensor"]),
        "--max-receive-message-bytes", str(RECEIVE), "--max-prompts-per-request", "64")
    yield s
    assert s.stop() == 0, s.log()[-3000:]


@pytest.fixture(scope="module")
def channel(server):
    opts = [("grpc.max_send_message_length", 4 * RECEIVE), ("grpc.max_receive_message_length", 64 << 20)]
    with grpc.insecure_channel(server.address, options=opts) as ch:
        yield ch


class Canary:
    """Small Encode calls in a loop; each answer must be OK and equal its reference."""

    TEXTS = ["the canary sings", "a quiet morning", "cats and dogs"]

    def __init__(self, channel):
        self.stub = pb_grpc.PoolingServiceStub(channel)
        self.reference = {t: self._encode(t) for t in self.TEXTS}
        self.stop = threading.Event()
        self.calls = 0
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _encode(self, text: str) -> bytes:
        # No deadline: under the fuzzer's load the queue's wait estimate can exceed any fixed
        # deadline (DEADLINE_TOO_SHORT is admission working, not harm); a hang still fails the
        # module (the thread is joined with a timeout and must have made progress).
        [r] = list(self.stub.Encode(pb.EncodeRequest(prompts=[pooling_pb2.Prompt(text=text)])))
        assert r.HasField("output"), r
        return r.output.outputs.data.data

    def _run(self) -> None:
        i = 0
        while not self.stop.is_set():
            text = self.TEXTS[i % len(self.TEXTS)]
            i += 1
            try:
                got = np.frombuffer(self._encode(text), "<f4")
                if not np.allclose(got, np.frombuffer(self.reference[text], "<f4"), atol=1e-5):
                    self.errors.append(f"wrong embedding for {text!r}")
            except Exception as e:  # noqa: BLE001 - recorded, asserted at the end
                self.errors.append(f"{type(e).__name__}: {e}")
            self.calls += 1
            self.stop.wait(0.05)


@pytest.fixture(scope="module")
def canary(channel):
    c = Canary(channel)
    c.thread.start()
    yield c
    c.stop.set()
    c.thread.join(120)
    assert not c.thread.is_alive(), "the canary's call hung"
    assert not c.errors, c.errors[:5]
    assert c.calls > 10


def _serving(channel) -> None:
    status = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="poolstream.v1.PoolingService"), timeout=10)
    assert status.status == health_pb2.HealthCheckResponse.SERVING


def _check_error(err: grpc.RpcError) -> tuple[str, str | None]:
    code, reason = assert_documented(err)
    # Only gRPC's own receive-limit check and client-side deadlines come without details.
    assert reason is not None or code == "RESOURCE_EXHAUSTED", f"{code} without details: {err.details()}"
    assert len(err.details() or "") <= 1024
    return code, reason


def _check_in_stream(responses) -> None:
    for r in responses:
        if r.HasField("error"):
            assert _CODES[r.error.code] not in ("INTERNAL", "UNKNOWN"), r.error
            assert r.error.details and len(r.error.message) <= 1024, r.error


def _call(fn):
    try:
        return fn()
    except grpc.RpcError as e:
        _check_error(e)
        return e


# -- strategies -----------------------------------------------------------------------------------------

_non_finite = st.sampled_from([math.nan, math.inf, -math.inf])
_long = st.integers(0, 6).map(lambda k: "x" * (10 ** k)) | st.text(max_size=30)


def _value(depth: int, bad: bool, rng: np.random.Generator) -> struct_pb2.Value:
    v = struct_pb2.Value()
    node = v
    for _ in range(depth):
        node = node.list_value.values.add() if rng.random() < 0.5 else \
            node.struct_value.fields[f"k{int(rng.integers(0, 3))}"]
    node.number_value = math.nan if bad else 1.0
    return v


@st.composite
def struct_payloads(draw) -> payload_pb2.PluginPayload:
    s = struct_pb2.Struct()
    texts = draw(st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=4))
    s.update({"texts": texts})
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if draw(st.booleans()):  # a non-finite number somewhere, at some depth (each level is 2-3
        # protobuf messages: upb refuses more than 100, on either side)
        key = draw(st.sampled_from(["texts", "dimensions", "normalize", "extra", draw(_long)]))
        s.fields[key].CopyFrom(_value(draw(st.integers(0, 30)), True, rng))
    if draw(st.booleans()):
        s.fields["dimensions"].number_value = draw(_non_finite | st.floats(allow_nan=False))
    return payload_pb2.PluginPayload(json=s)


@st.composite
def raw_json(draw) -> payload_pb2.PluginPayload:
    depth = draw(st.sampled_from([1, 50, 999, 1001, 5000, 20000]))
    core = draw(st.sampled_from(['"a"', "NaN", "Infinity", "-Infinity", "1e999", "1", "[]"]))
    body = "[" * depth + core + "]" * depth
    form = draw(st.sampled_from(["bare", "texts", "dims"]))
    if form == "texts":
        body = '{"texts": ' + body + "}"
    elif form == "dims":
        body = '{"texts": ["a"], "dimensions": ' + core + "}"
    media = draw(st.sampled_from(["application/json", "", "application/json; charset=utf-8", draw(_long)]))
    return payload_pb2.PluginPayload(raw=payload_pb2.RawPayload(media_type=media, data=body.encode()))


def _tensor(shape, values=None, dtype=tensor_pb2.DTYPE_FLOAT32, raw: bytes | None = None) -> tensor_pb2.Tensor:
    t = tensor_pb2.Tensor(dtype=dtype, shape=shape)
    if raw is not None:
        t.data = raw
    elif values is not None:
        t.float_values.extend(values)
    return t


@st.composite
def tensor_prompts(draw) -> pooling_pb2.Prompt:
    kind = draw(st.sampled_from(["overflow", "huge", "non_finite", "cap"]))
    if kind == "overflow":  # int64 products that wrap around (to small numbers, zero or negatives)
        a = draw(st.sampled_from([3, 6, 2**32, 2**33 + 1, 6148914691236517206, 2**62, 2**63 - 1]))
        b = draw(st.sampled_from([2, 3, 4, 2**31, 2**32, 3074457345618258603, 6148914691236517206]))
        shape = draw(st.permutations([a, b, draw(st.sampled_from([1, 2, 6]))]))
        t = _tensor(list(shape), values=[1.0] * draw(st.integers(0, 4)))
    elif kind == "huge":
        t = _tensor([draw(st.integers(1, 2**40)) for _ in range(draw(st.integers(1, 8)))])
    elif kind == "non_finite":
        n = draw(st.integers(1, 64))
        x = np.zeros(n, "<f4")
        x[draw(st.integers(0, n - 1))] = draw(_non_finite)
        t = _tensor([n], raw=x.tobytes()) if draw(st.booleans()) else _tensor([n], values=x.tolist())
    else:  # around the per-prompt bytes cap
        n = CAPS["prompt_tensor"] // 4 + draw(st.sampled_from([-1, 0, 1, 1000]))
        t = _tensor([n], raw=bytes(4 * n))
    name = draw(st.sampled_from(["pixel_values", "x"]) | _long)
    return pooling_pb2.Prompt(multi_modal=pooling_pb2.MultiModalPrompt(multi_modal_data={name: t}))


@st.composite
def huge_prompts(draw) -> list[pooling_pb2.Prompt]:
    kind = draw(st.sampled_from(["text", "ids"]))
    cap = CAPS["prompt_chars"] if kind == "text" else CAPS["prompt_ids"]
    n = cap + draw(st.sampled_from([-1, 0, 1, cap]))
    if kind == "text":
        style = draw(st.sampled_from(["words", "no_space", "spaces", "cjk"]))
        unit = {"words": "lorem ipsum ", "no_space": "ab,", "spaces": " ", "cjk": "\u4e2d\u6587"}[style]
        text = (unit * (n // len(unit) + 1))[:n]
        prompt = pooling_pb2.Prompt(text=text)
    else:
        prompt = pooling_pb2.Prompt(token_ids=pooling_pb2.TokenIds(ids=[1000 + i % 20000 for i in range(n)]))
    return [prompt] * draw(st.integers(1, 4))


# -- tests ------------------------------------------------------------------------------------------------


@FUZZ
@given(data=struct_payloads() | raw_json(), stream=st.booleans())
def test_fuzz_json_non_finite_and_nesting(channel, canary, data, stream):
    stub = pb_grpc.PoolingServiceStub(channel)
    if stream:
        out = _call(lambda: list(stub.ProcessStream(pb.ProcessStreamRequest(data=data), timeout=TIMEOUT)))
    else:
        out = _call(lambda: stub.Process(pb.ProcessRequest(data=data), timeout=TIMEOUT))
    if isinstance(out, grpc.RpcError):
        assert status_of(out)[0] == "INVALID_ARGUMENT", out.details()
    _serving(channel)


@FUZZ
@given(prompts=st.lists(tensor_prompts(), min_size=1, max_size=3))
def test_fuzz_tensors_non_finite_overflowing_and_huge(channel, canary, prompts):
    stub = pb_grpc.PoolingServiceStub(channel)
    out = _call(lambda: list(stub.Encode(pb.EncodeRequest(prompts=prompts), timeout=TIMEOUT)))
    if isinstance(out, list):
        assert sorted(r.index for r in out) == list(range(len(prompts)))
        _check_in_stream(out)
        assert all(r.HasField("error") for r in out)  # the text model takes no tensors
    _serving(channel)


@FUZZ
@given(prompts=huge_prompts(), unary=st.booleans())
def test_fuzz_huge_single_prompts(channel, canary, prompts, unary):
    stub = pb_grpc.PoolingServiceStub(channel)
    if unary:
        out = _call(lambda: list(stub.EncodeAll(pb.EncodeAllRequest(prompts=prompts), timeout=TIMEOUT).results))
    else:
        out = _call(lambda: list(stub.Encode(pb.EncodeRequest(prompts=prompts), timeout=TIMEOUT)))
    if isinstance(out, list):
        _check_in_stream(out)
        for r in out:
            if r.HasField("output"):
                assert 0 < len(r.output.prompt_token_ids) <= 256
    else:
        assert status_of(out) in {("INVALID_ARGUMENT", "REQUEST_TOO_LARGE"), ("RESOURCE_EXHAUSTED", None)}
    _serving(channel)


@FUZZ
@given(request_id=_long, header=_long, type_url=_long, key=_long, media=_long, value=_long,
       which=st.sampled_from(["typed", "json_key", "raw", "encode", "text"]))
def test_fuzz_long_strings_in_echoed_fields(channel, canary, request_id, header, type_url, key, media, value,
                                            which):
    stub = pb_grpc.PoolingServiceStub(channel)
    md = (("x-request-id", header[:4000]),) if header.isascii() and header.isprintable() else ()
    if which == "typed":
        data = payload_pb2.PluginPayload(typed=any_pb2.Any(type_url=type_url, value=b"\x0a\x01a"))
    elif which == "json_key":
        s = struct_pb2.Struct()
        s.update({"texts": ["a"], key: value})
        data = payload_pb2.PluginPayload(json=s)
    elif which == "raw":
        data = payload_pb2.PluginPayload(raw=payload_pb2.RawPayload(media_type=media, data=value.encode()))
    elif which == "text":
        s = struct_pb2.Struct()
        s.update({"texts": [value or "a"], "output_dtype": value})
        data = payload_pb2.PluginPayload(json=s)
    if which == "encode":
        t = _tensor([1], raw=b"\0\0")
        req = pb.EncodeRequest(request_id=request_id, prompts=[pooling_pb2.Prompt(
            multi_modal=pooling_pb2.MultiModalPrompt(multi_modal_data={key: t}))])
        out = _call(lambda: list(stub.Encode(req, metadata=md, timeout=TIMEOUT)))
        if isinstance(out, list):
            _check_in_stream(out)
    else:
        out = _call(lambda: stub.Process(pb.ProcessRequest(request_id=request_id, data=data), metadata=md,
                                         timeout=TIMEOUT))
    if len(request_id) > 256 or (not request_id and md and len(header[:4000]) + 5 > 256):
        assert isinstance(out, grpc.RpcError) and status_of(out) == ("INVALID_ARGUMENT", "INVALID_REQUEST_ID")
    _serving(channel)


@settings(max_examples=12, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ids=st.lists(st.sampled_from(["same", "", "same~2", "other"]), min_size=2, max_size=8),
       header=st.booleans())
def test_fuzz_duplicate_ids_across_concurrent_calls(channel, canary, ids, header):
    """Concurrent calls sharing ids (field or header): every call gets all of its own results."""
    stub = pb_grpc.PoolingServiceStub(channel)
    reference = canary.reference

    def run(i: int, rid: str):
        texts = Canary.TEXTS * 8
        md = (("x-request-id", rid),) if header and rid else ()
        req = pb.ProcessStreamRequest(data=payload_pb2.PluginPayload(raw=payload_pb2.RawPayload(
            media_type="application/json", data=json.dumps({"texts": texts}).encode())),
            request_id="" if header else rid)
        out = list(stub.ProcessStream(req, metadata=md))  # no deadline: see test_hostile's test_2
        result = out[-1].result
        got = result.data.json["embeddings"]
        assert len(got) == len(texts)
        for text, emb in zip(texts, got):
            want = np.frombuffer(reference[text], "<f4")
            assert np.allclose(np.asarray(list(emb), "<f4"), want, atol=1e-5)
        return result.request_id

    with ThreadPoolExecutor(len(ids)) as pool:
        echoed = list(pool.map(run, range(len(ids)), ids))
    named = [e for e, rid in zip(echoed, ids) if rid]
    assert len(set(named)) == len(named), echoed  # never two calls under one id
    _serving(channel)
