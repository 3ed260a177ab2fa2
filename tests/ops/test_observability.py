"""Metrics on --metrics-port, request ids and W3C trace context in logs, OpenTelemetry spans (issue 7)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import urllib.request

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st
from poolstream.server import observability
from poolstream.server.observability import (
    CURRENT_CALL,
    CallContext,
    JsonFormatter,
    RequestContextFilter,
    TraceContext,
    parse_traceparent,
)
from poolstream.server.transport import TransportConfig
from poolstream.v1 import pooling_pb2
from poolstream.v1 import pooling_service_pb2 as pb
from poolstream.v1 import pooling_service_pb2_grpc as pb_grpc

from tests.grpc_helpers import json_payload
from tests.ops._util import free_port, inproc

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{SPAN_ID}-01"


# -- traceparent parsing (no OpenTelemetry needed) --------------------------------------------------


def test_parse_traceparent_valid():
    tc = parse_traceparent(TRACEPARENT)
    assert tc == TraceContext(TRACE_ID, SPAN_ID, 1, 0) and tc.sampled
    assert parse_traceparent(f"00-{TRACE_ID}-{SPAN_ID}-00").sampled is False
    assert parse_traceparent(TRACEPARENT.encode()) == tc
    # A future version may append fields; they are ignored.
    assert parse_traceparent(f"01-{TRACE_ID}-{SPAN_ID}-01-extra").trace_id == TRACE_ID


@pytest.mark.parametrize("value", [
    None, "", "garbage", f"00-{TRACE_ID}-{SPAN_ID}", f"00-{TRACE_ID.upper()}-{SPAN_ID}-01",
    f"ff-{TRACE_ID}-{SPAN_ID}-01", f"00-{'0' * 32}-{SPAN_ID}-01", f"00-{TRACE_ID}-{'0' * 16}-01",
    f"00-{TRACE_ID}-{SPAN_ID}-01-extra", f"00-{TRACE_ID[:-1]}-{SPAN_ID}-01", b"\xff\xfe",
])
def test_parse_traceparent_invalid(value):
    assert parse_traceparent(value) is None


@given(st.text(max_size=80) | st.binary(max_size=80))
def test_parse_traceparent_never_raises(value):
    tc = parse_traceparent(value)
    assert tc is None or (len(tc.trace_id) == 32 and len(tc.span_id) == 16)


def test_log_filter_and_json_formatter():
    record = logging.LogRecord("poolstream.x", logging.INFO, __file__, 1, "hello %s", ("there",), None)
    RequestContextFilter().filter(record)
    assert (record.request_id, record.trace_id) == ("", "")
    call = CallContext(method="/m", request_id="rid-1", trace=parse_traceparent(TRACEPARENT))
    token = CURRENT_CALL.set(call)
    try:
        RequestContextFilter().filter(record)
    finally:
        CURRENT_CALL.reset(token)
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "hello there" and line["request_id"] == "rid-1"
    assert line["trace_id"] == TRACE_ID and line["span_id"] == SPAN_ID and line["rpc"] == "/m"


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__()
        self.addFilter(RequestContextFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def captured_logs():
    handler = _Capture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    echo = logging.getLogger("poolstream_test_plugins.echo")
    echo.setLevel(logging.DEBUG)
    yield handler.records
    echo.setLevel(logging.NOTSET)
    root.removeHandler(handler)
    root.setLevel(old_level)


async def test_request_id_and_trace_in_logs_without_otel(monkeypatch, captured_logs):
    """The pure-Python path: traceparent -> log context, also in the plugin's worker thread."""
    monkeypatch.setattr(observability, "HAVE_OTEL", False)
    async with inproc() as server, grpc.aio.insecure_channel(server.address) as channel:
        stub = pb_grpc.PoolingServiceStub(channel)
        md = [("traceparent", TRACEPARENT)]
        ok = await stub.Process(pb.ProcessRequest(request_id="req-ok", data=json_payload({"texts": ["a"]})),
                                metadata=md)
        assert ok.request_id == "req-ok"
        with pytest.raises(grpc.aio.AioRpcError):  # logged by the server with its context
            await stub.Process(pb.ProcessRequest(data=json_payload({"texts": ["a"], "fail": "post"})),
                               metadata=[*md, ("x-request-id", "from-header")])
        # No client id: the generated id is the one in the response and in the log.
        gen = await stub.Process(pb.ProcessRequest(data=json_payload({"texts": ["a"]})))
    access = [r for r in captured_logs if r.name == "poolstream.access"]
    by_id = {r.request_id: r for r in access}
    assert by_id["req-ok"].trace_id == TRACE_ID and by_id["req-ok"].span_id == SPAN_ID
    assert by_id["req-ok"].code == "OK"
    assert by_id["req-ok"].peer.startswith("ipv4:127.0.0.1:")  # read while the call was live
    failed = by_id["pool-from-header"]
    assert (failed.code, failed.reason, failed.trace_id) == ("INTERNAL", "POST_PROCESS_FAILED", TRACE_ID)
    # The plugin error itself is logged inside the call, with the call's ids.
    plugin_errors = [r for r in captured_logs if "Plugin hook failed" in r.getMessage()]
    assert plugin_errors and plugin_errors[0].request_id == "pool-from-header"
    assert plugin_errors[0].trace_id == TRACE_ID
    assert gen.request_id.startswith("pool-") and by_id[gen.request_id].trace_id == ""
    # The plugin's pre_process runs in a worker thread; its log line carries the call's context.
    [pre] = [r for r in captured_logs if r.getMessage() == "echo pre_process req-ok"]
    assert pre.threadName != "MainThread"
    assert (pre.request_id, pre.trace_id) == ("req-ok", TRACE_ID)


@pytest.fixture(scope="module")
def span_exporter():
    """An in-memory exporter on the global tracer provider (settable once per process)."""
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # once per process; later calls are ignored with a warning
    if trace.get_tracer_provider() is not provider:
        pytest.skip("another test already installed a global tracer provider")
    assert observability.HAVE_OTEL
    return exporter


async def test_otel_span_parented_on_traceparent(captured_logs, span_exporter):
    from opentelemetry import trace

    span_exporter.clear()
    async with inproc() as server, grpc.aio.insecure_channel(server.address) as channel:
        await pb_grpc.PoolingServiceStub(channel).Process(
            pb.ProcessRequest(request_id="traced", data=json_payload({"texts": ["a"]})),
            metadata=[("traceparent", TRACEPARENT)])
    [span] = [s for s in span_exporter.get_finished_spans() if s.name.endswith("/Process")]
    assert f"{span.context.trace_id:032x}" == TRACE_ID
    assert f"{span.parent.span_id:016x}" == SPAN_ID
    assert span.kind == trace.SpanKind.SERVER
    # Logs carry the caller's trace id and this server span's id.
    [access] = [r for r in captured_logs if r.name == "poolstream.access" and r.request_id == "traced"]
    assert access.trace_id == TRACE_ID and access.span_id == f"{span.context.span_id:016x}"


async def test_otel_spans_follow_rpc_semantic_conventions(span_exporter):
    """Span name ``package.Service/Method``; rpc.system/service/method and rpc.grpc.status_code;
    the span status is Error only for server-side failures (INTERNAL), never for a client's
    error (INVALID_ARGUMENT)."""
    from opentelemetry import trace
    from opentelemetry.trace import StatusCode

    span_exporter.clear()
    async with inproc() as server, grpc.aio.insecure_channel(server.address) as channel:
        stub = pb_grpc.PoolingServiceStub(channel)
        await stub.Process(pb.ProcessRequest(data=json_payload({"texts": ["a"]})))
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stub.Process(pb.ProcessRequest(data=json_payload({"texts": ["a"], "fail": "parse"})))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as broken:
            await stub.Process(pb.ProcessRequest(data=json_payload({"texts": ["a"], "fail": "post"})))
        assert broken.value.code() == grpc.StatusCode.INTERNAL
        [r async for r in stub.Encode(pb.EncodeRequest(prompts=[pooling_pb2.Prompt(text="x")]))]
    spans = span_exporter.get_finished_spans()
    process = [s for s in spans if s.name == "poolstream.v1.PoolingService/Process"]
    [encode] = [s for s in spans if s.name == "poolstream.v1.PoolingService/Encode"]
    assert len(process) == 3
    for span in [*process, encode]:
        assert span.kind == trace.SpanKind.SERVER
        assert span.attributes["rpc.system"] == "grpc"
        assert span.attributes["rpc.service"] == "poolstream.v1.PoolingService"
        assert span.attributes["rpc.method"] == span.name.rsplit("/", 1)[1]
    ok, invalid, internal = process
    assert ok.attributes["rpc.grpc.status_code"] == 0 and ok.status.status_code == StatusCode.UNSET
    assert encode.attributes["rpc.grpc.status_code"] == 0 and encode.status.status_code == StatusCode.UNSET
    assert invalid.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert invalid.attributes["poolstream.error_reason"] == "INVALID_PAYLOAD"
    assert invalid.status.status_code == StatusCode.UNSET and "error.type" not in invalid.attributes
    assert internal.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INTERNAL.value[0]
    assert internal.status.status_code == StatusCode.ERROR
    assert internal.attributes["error.type"] == "INTERNAL"
    assert internal.attributes["poolstream.error_reason"] == "POST_PROCESS_FAILED"


@pytest.mark.parametrize("code", [c.name for c in grpc.StatusCode])
def test_span_error_status_only_for_server_errors(code, span_exporter):
    """The semantic conventions' table for gRPC SERVER spans, code by code."""
    from opentelemetry.trace import StatusCode

    span_exporter.clear()
    span, token = observability.start_server_span("/poolstream.v1.PoolingService/Encode", [])
    observability.end_span(span, code, "")
    observability.finish_server_span(span, token)
    [done] = span_exporter.get_finished_spans()
    server_error = code in {"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"}
    assert (done.status.status_code == StatusCode.ERROR) == server_error
    assert done.attributes["rpc.grpc.status_code"] == grpc.StatusCode[code].value[0]


# -- Prometheus ------------------------------------------------------------------------------------


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return resp.read().decode()


def _value(text: str, name: str, **labels) -> float:
    """The sample ``name{labels}`` (labels matched as a subset)."""
    total = None
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        m = re.match(r"^([^{ ]+)(?:\{(.*)\})? (\S+)$", line)
        if m is None or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total = (total or 0.0) + float(m.group(3))
    if total is None:
        raise AssertionError(f"{name}{labels} not in the exposition")
    return total


async def test_metrics_endpoint(tmp_path):
    port = free_port()
    async with inproc(transport=TransportConfig(metrics_port=port), max_num_seqs=2) as server:
        assert server.metrics.port == port
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = pb_grpc.PoolingServiceStub(channel)
            texts = [f"text number {i}" for i in range(6)]
            await asyncio.gather(*(stub.Process(pb.ProcessRequest(data=json_payload({"texts": texts})))
                                   for _ in range(3)))
            out = [r async for r in stub.Encode(pb.EncodeRequest(prompts=[pooling_pb2.Prompt(text="x")]))]
            assert out[0].HasField("output")
            # A multi-prompt call (admitted in one pass): two prompts ok, one refused by the engine.
            many = await stub.EncodeAll(pb.EncodeAllRequest(prompts=[
                pooling_pb2.Prompt(text="y"), pooling_pb2.Prompt(token_ids=pooling_pb2.TokenIds(ids=[101, 10**7, 102])),
                pooling_pb2.Prompt(text="z")]))
            assert [r.HasField("output") for r in many.results] == [True, False, True]
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Process(pb.ProcessRequest(data=json_payload({"texts": ["a"], "fail": "parse"})))
        text = await asyncio.to_thread(_scrape, port)
    svc = {"grpc_service": "poolstream.v1.PoolingService"}
    assert _value(text, "poolstream_requests_total", **svc, grpc_method="Process", grpc_code="OK") == 3
    assert _value(text, "poolstream_requests_total", **svc, grpc_method="Encode", grpc_code="OK") == 1
    assert _value(text, "poolstream_request_errors_total", **svc, grpc_method="Process",
                  grpc_code="INVALID_ARGUMENT", reason="INVALID_PAYLOAD") == 1
    assert _value(text, "poolstream_request_duration_seconds_count", **svc, grpc_method="Process") == 4
    assert _value(text, "poolstream_requests_in_flight", **svc, grpc_method="Process") == 0
    assert _value(text, "poolstream_prompts_total", outcome="ok") == 21
    assert _value(text, "poolstream_prompts_total", outcome="error") == 1
    assert _value(text, "poolstream_prompt_tokens_total") >= 21
    assert _value(text, "poolstream_prompt_latency_seconds_count") == 21
    assert _value(text, "poolstream_pre_process_time_seconds_count") == 3  # the parse failure has none
    assert _value(text, "poolstream_post_process_time_seconds_count") == 3
    assert _value(text, "poolstream_engine_queued_prompts") == 0
    assert _value(text, "poolstream_engine_running_prompts") == 0
    # Batch sizes sampled from the engine's recent batches at scrape time; queue and
    # inference time per prompt from its output's timing.
    assert _value(text, "poolstream_batch_size_count") >= 1
    assert _value(text, "poolstream_batch_size_sum") == 21
    assert _value(text, "poolstream_inference_time_seconds_count") == 21
    assert _value(text, "poolstream_queue_time_seconds_count") == 21
    assert _value(text, "poolstream_engine_prompts_executed_total") == 21
    assert _value(text, "poolstream_engine_batches_executed_total") >= 11  # at most 2 prompts per batch
    assert _value(text, "poolstream_engine_busy_seconds_total") > 0
    assert "_created" not in text
    _check_conventions(text)


def _check_conventions(text: str) -> None:
    """The exposition follows Prometheus' naming rules and ours (server/metrics.py)."""
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(text)}
    types = {name: f.type for name, f in families.items()}
    # Cumulative counts are counters, exposed with _total (the parser strips it from the family name).
    for name in ("poolstream_requests", "poolstream_request_errors", "poolstream_prompts", "poolstream_prompt_tokens",
                 "poolstream_engine_prompts_admitted", "poolstream_engine_prompts_executed",
                 "poolstream_engine_prompts_aborted", "poolstream_engine_prompts_expired",
                 "poolstream_engine_prompts_failed", "poolstream_engine_prompts_rejected",
                 "poolstream_engine_batches_executed", "poolstream_engine_tokens",
                 "poolstream_engine_padded_tokens", "poolstream_engine_busy_seconds",
                 "process_cpu_seconds"):
        assert types.get(name) == "counter", (name, types.get(name))
        assert all(s.name == f"{name}_total" for s in families[name].samples), name
    for name in ("poolstream_engine_queued_prompts", "poolstream_engine_running_prompts",
                 "poolstream_requests_in_flight", "poolstream_build_info", "process_resident_memory_bytes",
                 "process_open_fds"):
        assert types.get(name) == "gauge", (name, types.get(name))
    for name, kind in types.items():
        if not name.startswith("poolstream_"):
            continue
        # No non-base units, no precomputed rates or averages, no cumulative gauges.
        assert not re.search(r"_(s|ms|us|per_s|kb|mb|kib|mib)(_|$)", name), name
        assert not re.search(r"(throughput|avg|average|last_batch)", name), name
        if kind == "gauge":
            assert not re.search(r"(_total|_executed|_admitted|_aborted|_expired|_failed|_rejected)$", name), name
        for sample in families[name].samples:
            assert "method" not in sample.labels, sample  # split into grpc_service / grpc_method
            if "grpc_method" in sample.labels:
                assert "/" not in sample.labels["grpc_method"] and "/" not in sample.labels["grpc_service"]
    [info] = families["poolstream_build_info"].samples
    assert info.value == 1
    import torch
    import poolstream

    assert info.labels["version"] == poolstream.__version__ and info.labels["torch"] == torch.__version__
    assert info.labels["device"] == "cpu" and info.labels["python"] and info.labels["grpcio"]
    assert "python_info" in types  # the default platform collector


def test_every_engine_stat_has_a_metric_or_is_derived():
    """A new numeric field in EngineStats needs a decision: counter, gauge, or derived (not exported)."""
    from poolstream.engine.stats import EngineStats
    from poolstream.server.metrics_collectors import ENGINE_COUNTERS, ENGINE_DERIVED, ENGINE_GAUGES, engine_stats

    class Holder:
        stats = EngineStats()

    stats = engine_stats(Holder())
    from poolstream.server.metrics_collectors import unmapped_engine_fields

    assert unmapped_engine_fields(stats) == []
    assert not (ENGINE_COUNTERS.keys() & ENGINE_GAUGES.keys()) and not (ENGINE_DERIVED & ENGINE_COUNTERS.keys())
    assert all(name.startswith("poolstream_engine_") and not name.endswith("_total")
               for name, _ in [*ENGINE_COUNTERS.values(), *ENGINE_GAUGES.values()])


def test_span_finished_from_another_context_logs_no_error(caplog):
    """A streaming call's generator closed from another task (a cancelled call) leaves
    its span there: no "Failed to detach context" ERROR from OpenTelemetry."""
    import contextvars

    pytest.importorskip("opentelemetry")
    span, token = observability.start_server_span("/poolstream.v1.PoolingService/Encode", [])
    assert token is not None
    with caplog.at_level(logging.ERROR):
        contextvars.copy_context().run(observability.finish_server_span, span, token)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
