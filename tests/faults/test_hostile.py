"""Regression tests for issue 17's numbered findings (hostile and careless input).

Each test names its item. They run against ``poolstream serve`` processes (the embedded
MiniLM with the text_embedding plugin; the Prithvi demo model for tensors) over real
gRPC on loopback. Timing is never asserted, only order and outcome.
"""

from __future__ import annotations

import re
import signal
import threading
import time

import grpc
import pytest
from google.protobuf import any_pb2, struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from poolstream.v1 import payload_pb2, pooling_pb2, tensor_pb2
from poolstream.v1 import pooling_service_pb2 as pb
from poolstream.v1 import pooling_service_pb2_grpc as pb_grpc

from tests.conftest import ROOT, launch_server, subprocess_env
from tests.faults._common import assert_documented, status_of
from tests.grpc_helpers import error_details, json_payload

TIMEOUT = 60
SEND_LIMIT = 256 * 1024
PRITHVI = str(ROOT / "models" / "prithvi-water-demo")


@pytest.fixture(scope="module")
def server():
    s = launch_server("--max-send-message-bytes", str(SEND_LIMIT), "--max-prompt-chars", "300000",
                      "--max-request-chars", "1000000", "--max-prompt-token-ids", "4096",
                      "--max-request-token-ids", "20000")
    yield s
    assert s.stop() == 0, s.log()[-3000:]


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.address) as ch:
        yield pb_grpc.PoolingServiceStub(ch)


@pytest.fixture(scope="module")
def prithvi():
    s = launch_server("--model", PRITHVI)
    yield s
    assert s.stop() == 0, s.log()[-3000:]


def _fail(fn) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        fn()
    assert_documented(e.value)
    return e.value


def _encode_error(stub, prompt: pooling_pb2.Prompt) -> tuple[str, str]:
    """Encode one prompt; its in-stream error as (code name, ErrorInfo reason)."""
    [r] = list(stub.Encode(pb.EncodeRequest(prompts=[prompt]), timeout=TIMEOUT))
    assert r.HasField("error"), r
    code = grpc.StatusCode(next(c.value for c in grpc.StatusCode if c.value[0] == r.error.code)).name
    from google.rpc import error_details_pb2

    for d in r.error.details:
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            d.Unpack(info)
            return code, info.reason
    raise AssertionError(f"no ErrorInfo: {r.error}")


# -- 1. cost bounded before work starts ------------------------------------------------------------


def test_1_per_prompt_and_per_request_caps_refuse_at_admission(stub):
    big = "word " * 70_000  # 350,000 characters > --max-prompt-chars 300000
    assert _encode_error(stub, pooling_pb2.Prompt(text=big)) == ("INVALID_ARGUMENT", "PROMPT_TOO_LARGE")
    ids = pooling_pb2.TokenIds(ids=[100] * 5000)  # > --max-prompt-token-ids 4096
    assert _encode_error(stub, pooling_pb2.Prompt(token_ids=ids)) == ("INVALID_ARGUMENT", "PROMPT_TOO_LARGE")
    # Per request: 5 prompts of 250,000 characters each (under the per-prompt cap) > 1,000,000.
    req = pb.EncodeAllRequest(prompts=[pooling_pb2.Prompt(text="w" * 250_000)] * 5)
    e = _fail(lambda: stub.EncodeAll(req, timeout=TIMEOUT))
    assert status_of(e) == ("INVALID_ARGUMENT", "REQUEST_TOO_LARGE")
    assert error_details(e)["violations"][0][0] == "prompts"
    # The same caps hold for the prompts a plugin makes (Process).
    e = _fail(lambda: stub.Process(pb.ProcessRequest(data=json_payload({"texts": ["w" * 250_000] * 5})),
                                   timeout=TIMEOUT))
    assert status_of(e) == ("INVALID_ARGUMENT", "REQUEST_TOO_LARGE")


def test_1_caps_and_the_text_cut_are_reported(stub):
    info = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=TIMEOUT)
    lim = info.limits
    assert (lim.max_prompt_chars, lim.max_request_chars) == (300_000, 1_000_000)
    assert (lim.max_prompt_token_ids, lim.max_request_token_ids) == (4096, 20_000)
    assert lim.max_prompt_tensor_bytes > 0 and lim.max_request_tensor_bytes > 0
    assert not lim.allow_non_finite_inputs
    # MiniLM: 256 tokens x (18 characters of "telecommunications" + 1).
    assert info.model.text_cut_chars == info.model.max_model_len * 19


def test_1_a_huge_text_is_answered_exactly(stub):
    """Truncated from the cut prefix, the embedding is the one of the whole text."""
    text = "the cat sat on the mat " * 12_000  # 276,000 characters
    head = " ".join(text.split()[:400])  # more than 256 tokens: the same first 256
    [a] = stub.EncodeAll(pb.EncodeAllRequest(prompts=[pooling_pb2.Prompt(text=text)]), timeout=TIMEOUT).results
    [b] = stub.EncodeAll(pb.EncodeAllRequest(prompts=[pooling_pb2.Prompt(text=head)]), timeout=TIMEOUT).results
    assert a.output.prompt_token_ids == b.output.prompt_token_ids and a.output.truncated
    assert a.output.outputs.data.data == b.output.outputs.data.data


# -- 2. request ids unique per call -----------------------------------------------------------------


def test_2_a_reused_request_id_never_touches_the_other_call(stub):
    texts = [f"sentence number {i} about cats" for i in range(200)]
    results: dict[str, object] = {}

    def run(name, **kw):
        try:
            out = list(stub.ProcessStream(pb.ProcessStreamRequest(
                data=json_payload({"texts": texts, "output_dtype": "binary"}), request_id="dup-id", **kw)))
            # (no deadline: no DEADLINE_TOO_SHORT from a queue estimate left low by the tests before)
            results[name] = out[-1].result
        except grpc.RpcError as e:  # pragma: no cover - the failure this test is about
            results[name] = e

    threads = [threading.Thread(target=run, args=(f"call{i}",)) for i in range(3)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join(TIMEOUT * 3)
    ids = set()
    for name, res in results.items():
        assert isinstance(res, pb.ProcessResponse), f"{name}: {res}"
        assert len(res.data.json["embeddings"]) == 200
        ids.add(res.request_id)
    assert len(ids) == 3 and "dup-id" in ids and all(i.startswith("dup-id") for i in ids)


def test_2_x_request_id_collisions_are_made_unique_and_echoed(stub):
    md = (("x-request-id", "hedged"),)
    barrier = threading.Barrier(2)
    trailers: list[dict] = []

    def run():
        barrier.wait()
        resp, call = stub.EncodeAll.with_call(pb.EncodeAllRequest(
            prompts=[pooling_pb2.Prompt(text=f"t{i}") for i in range(64)]), metadata=md, timeout=TIMEOUT)
        assert len(resp.results) == 64 and all(r.HasField("output") for r in resp.results)
        trailers.append(dict(call.trailing_metadata()))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    echoed = [t["x-request-id"] for t in trailers]
    assert all(e.startswith("pool-hedged") for e in echoed), echoed


# -- 3. nothing a client sends answers INTERNAL -------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_3_non_finite_json_numbers(stub, value):
    s = struct_pb2.Struct()
    s.update({"texts": ["a"], "dimensions": 8})
    s.fields["nested"].struct_value.fields["x"].list_value.values.add().number_value = value
    e = _fail(lambda: stub.Process(pb.ProcessRequest(data=payload_pb2.PluginPayload(json=s)), timeout=TIMEOUT))
    assert status_of(e) == ("INVALID_ARGUMENT", "NON_FINITE_INPUT")
    assert error_details(e)["violations"][0][0] == "data.json.nested.x[0]"


@pytest.mark.parametrize("body", [b'{"texts": ["a"], "dimensions": Infinity}', b'{"texts": [NaN]}',
                                  b"[" * 5000 + b"]" * 5000, b'{"texts": ' + b"[" * 5000 + b"]" * 5000 + b"}"])
def test_3_raw_json_with_infinity_or_deep_nesting(stub, body):
    data = payload_pb2.PluginPayload(raw=payload_pb2.RawPayload(media_type="application/json", data=body))
    e = _fail(lambda: stub.Process(pb.ProcessRequest(data=data), timeout=TIMEOUT))
    assert status_of(e)[0] == "INVALID_ARGUMENT"


# 3 x 6148914691236517206 = 2**64 + 2: an int64 product wraps around to 2, matching two floats.
_OVERFLOW_SHAPE = [3, 6148914691236517206]


def test_3_overflowing_tensor_shape_text_model(stub):
    t = tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_FLOAT32, shape=_OVERFLOW_SHAPE, float_values=[1.0, 2.0])
    prompt = pooling_pb2.Prompt(multi_modal=pooling_pb2.MultiModalPrompt(multi_modal_data={"pixel_values": t}))
    assert _encode_error(stub, prompt) == ("INVALID_ARGUMENT", "INVALID_TENSOR")


def test_3_overflowing_tensor_shape_prithvi(prithvi):
    with grpc.insecure_channel(prithvi.address) as ch:
        stub = pb_grpc.PoolingServiceStub(ch)
        for shape in (_OVERFLOW_SHAPE, [6, 2**62, 4], [6, 3074457345618258603, 6]):
            t = tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_FLOAT32, shape=shape, float_values=[1.0, 2.0])
            prompt = pooling_pb2.Prompt(multi_modal=pooling_pb2.MultiModalPrompt(
                multi_modal_data={"pixel_values": t}))
            assert _encode_error(stub, prompt) == ("INVALID_ARGUMENT", "INVALID_TENSOR")


# -- 4. echoed client strings are bounded -----------------------------------------------------------


def test_4_long_type_url_json_key_and_tensor_name(stub):
    url = "type.googleapis.com/" + "x" * 200_000
    e = _fail(lambda: stub.Process(pb.ProcessRequest(data=payload_pb2.PluginPayload(
        typed=any_pb2.Any(type_url=url))), timeout=TIMEOUT))
    assert status_of(e) == ("INVALID_ARGUMENT", "UNKNOWN_PAYLOAD_TYPE") and len(e.details()) <= 1024
    e = _fail(lambda: stub.Process(pb.ProcessRequest(data=json_payload({"texts": ["a"], "k" * 200_000: 1})),
                                   timeout=TIMEOUT))
    assert status_of(e) == ("INVALID_ARGUMENT", "INVALID_PAYLOAD") and len(e.details()) <= 1024
    t = tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_FLOAT32, shape=[1], data=b"\0" * 3)
    prompt = pooling_pb2.Prompt(multi_modal=pooling_pb2.MultiModalPrompt(multi_modal_data={"n" * 100_000: t}))
    [r] = list(stub.Encode(pb.EncodeRequest(prompts=[prompt]), timeout=TIMEOUT))
    assert r.HasField("error") and len(r.error.message) <= 1024 and r.error.ByteSize() < 4096


# -- 5. shutdown is not held by health Watch streams -------------------------------------------------


def test_5_idle_watch_stream_does_not_hold_shutdown():
    s = launch_server("--grace-period", "120")
    try:
        with grpc.insecure_channel(s.address) as ch:
            watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service=""), timeout=300)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            s.proc.send_signal(signal.SIGTERM)
            assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
            try:
                assert list(watch) == []  # the stream ends after NOT_SERVING
            except grpc.RpcError as e:  # or the server, already gone, closed the connection first
                assert e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED), e
            assert s.proc.wait(timeout=100) == 0  # well before the 120 s grace period
    finally:
        s.stop(signal.SIGKILL)


# -- 6. oversize responses and client receive limits -------------------------------------------------


def test_6_response_over_the_send_limit_is_refused_with_details(server, stub):
    req = pb.EncodeAllRequest(prompts=[pooling_pb2.Prompt(text=f"t{i}") for i in range(200)],
                              params=pooling_pb2.PoolingParams(include_float_values=True))
    e = _fail(lambda: stub.EncodeAll(req, timeout=TIMEOUT, metadata=(("x-request-id", "too-big"),)))
    assert status_of(e) == ("RESOURCE_EXHAUSTED", "RESPONSE_TOO_LARGE")
    time.sleep(0.5)
    assert re.search(r"\[pool-too-big .*EncodeAll RESOURCE_EXHAUSTED \(RESPONSE_TOO_LARGE\)", server.log())


def test_6_client_receive_limit_counts_cancelled_without_traceback():
    """A streamed answer over the client's 4 MiB receive limit (a 1024 x 1024 similarity
    matrix, ~10 MB: over the transport's window, so the server is still writing when the
    client resets the stream): the server records CANCELLED, without an ERROR or a
    traceback. It was UNKNOWN, with grpc's ERROR traceback."""
    server = launch_server()
    rid = "small-receiver"
    try:
        with grpc.insecure_channel(server.address) as ch:
            stub = pb_grpc.PoolingServiceStub(ch)
            call = stub.ProcessStream(pb.ProcessStreamRequest(
                data=json_payload({"texts": ["a b"] * 1024, "similarity": True}),
                detail=pb.STREAM_DETAIL_PROGRESS), timeout=300, metadata=(("x-request-id", rid),))
            with pytest.raises(grpc.RpcError) as e:
                list(call)
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # the client's own check
        time.sleep(1.5)
    finally:
        assert server.stop() == 0
    lines = [ln for ln in server.log().splitlines() if rid in ln]
    assert any("ProcessStream CANCELLED" in ln for ln in lines), lines
    assert not any(" ERROR " in ln or "UNKNOWN" in ln for ln in lines), lines
    served = server.log().split(" SERVING ", 1)[1]  # (test plugins log tracebacks at startup)
    assert "Traceback" not in served and "ExecuteBatchError" not in served


# -- 7. log fields escaped ---------------------------------------------------------------------------


def test_7_newline_in_request_id_cannot_forge_log_lines(server, stub):
    forged = "ok\n2026-01-01 00:00:00,000 ERROR poolstream FORGED-LINE"
    stub.EncodeAll(pb.EncodeAllRequest(request_id=forged, prompts=[pooling_pb2.Prompt(text="a")]),
                   timeout=TIMEOUT)
    time.sleep(0.5)
    log = server.log()
    assert "FORGED-LINE" in log
    assert not any(ln.startswith("2026-01-01") for ln in log.splitlines())


# -- 8. auth configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize("token", ["", "   ", "t\u00f6ken", "two words"])
def test_8_unusable_auth_token_stops_startup(token):
    s = launch_server(env=subprocess_env(POOLSTREAM_AUTH_TOKEN=token), wait=False)
    assert s.proc.wait(timeout=60) == 1
    assert "POOLSTREAM_AUTH_TOKEN" in s.log()


def test_8_startup_log_says_which_security_is_on(server):
    assert "security: plaintext (no TLS); no authentication" in server.log()
    s = launch_server(env=subprocess_env(POOLSTREAM_AUTH_TOKEN="tok-123"))
    try:
        assert "bearer tokens required on PoolingService (1 from $POOLSTREAM_AUTH_TOKEN)" in s.log()
    finally:
        assert s.stop() == 0


# -- 9. TLS files --------------------------------------------------------------------------------------


def test_9_tls_key_not_matching_its_certificate_names_both_files(tmp_path):
    from tests.ops._util import make_certs

    certs = make_certs(tmp_path)
    s = launch_server("--tls-cert", str(certs.server_cert), "--tls-key", str(certs.client_key), wait=False)
    assert s.proc.wait(timeout=60) == 1
    log = s.log()
    assert str(certs.server_cert) in log and str(certs.client_key) in log
    assert "does not match" in log and "Traceback" not in log


# -- 10. NaN/Inf tensors ---------------------------------------------------------------------------------


def _pixels(value: float) -> tensor_pb2.Tensor:
    import numpy as np

    x = np.zeros((6, 64, 64), "<f4")
    x[2, 5, 7] = value
    return tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_FLOAT32, shape=list(x.shape), data=x.tobytes())


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_10_non_finite_tensor_inputs_are_refused(prithvi, value):
    with grpc.insecure_channel(prithvi.address) as ch:
        stub = pb_grpc.PoolingServiceStub(ch)
        prompt = pooling_pb2.Prompt(multi_modal=pooling_pb2.MultiModalPrompt(
            multi_modal_data={"pixel_values": _pixels(value)}))
        assert _encode_error(stub, prompt) == ("INVALID_ARGUMENT", "NON_FINITE_INPUT")
        ok = pooling_pb2.Prompt(multi_modal=pooling_pb2.MultiModalPrompt(
            multi_modal_data={"pixel_values": _pixels(0.5)}))
        [r] = list(stub.Encode(pb.EncodeRequest(prompts=[ok]), timeout=TIMEOUT))
        assert r.HasField("output")


def test_10_tensor_caps_on_the_tensor_model(prithvi):
    """Over the per-prompt model cost (1216 x 1216 px: 23104 > 16384 units), under the bytes cap."""
    import numpy as np

    with grpc.insecure_channel(prithvi.address) as ch:
        stub = pb_grpc.PoolingServiceStub(ch)
        for hw in (1216,):
            x = np.zeros((6, hw, hw), "<f4")
            t = tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_FLOAT32, shape=list(x.shape), data=x.tobytes())
            prompt = pooling_pb2.Prompt(multi_modal=pooling_pb2.MultiModalPrompt(
                multi_modal_data={"pixel_values": t}))
            assert _encode_error(stub, prompt) == ("INVALID_ARGUMENT", "PROMPT_TOO_LARGE")


# -- 11. geotiff errors never echo file bytes --------------------------------------------------------------


def test_11_geotiff_error_does_not_echo_file_bytes(tmp_path):
    from poolstream_geotiff.raster import RasterError, open_tiff

    secret = tmp_path / "notes.tif"
    secret.write_bytes(b"PASSWORD=hunter2\n" * 10)
    for source in (str(secret), secret.read_bytes()):
        with pytest.raises(RasterError) as e:
            open_tiff(source)
        # tifffile's own message quoted the first bytes: "not a TIFF file: header=b'PASS'".
        assert "PASS" not in str(e.value) and "hunter" not in str(e.value), str(e.value)
