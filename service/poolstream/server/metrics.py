"""Prometheus metrics on a separate HTTP port (``--metrics-port``; 0 = off).

Each server owns its own ``CollectorRegistry`` (so several in-process servers
in one test process do not collide). Call-level metrics are recorded by the
observability interceptor, prompt-level ones by :class:`ObservedEngine` (a
thin wrapper around the engine that times every prompt), and engine gauges
(queue depth and whatever numeric counters ``engine.stats`` exposes) are
sampled at scrape time.

Names (all prefixed ``poolstream_``):

=====================================  =========  ===============================================
metric                                 type       labels / meaning
=====================================  =========  ===============================================
requests_total                         counter    method, code: finished RPCs
request_errors_total                   counter    method, code, reason (ErrorInfo reason)
request_duration_seconds               histogram  method: wall time of the RPC
requests_in_flight                     gauge      method
prompts_total                          counter    outcome (ok, error, cancelled)
prompt_tokens_total                    counter    tokens (or positions) encoded
queue_time_seconds                     histogram  prompt submitted -> scheduled (engine timing)
inference_time_seconds                 histogram  prompt scheduled -> output (engine timing)
prompt_latency_seconds                 histogram  prompt submitted -> output, as the server saw it
pre_process_time_seconds               histogram  plugin parse + pre-process per request
post_process_time_seconds              histogram  last engine output -> plugin result per request
batch_size                             histogram  prompts per engine batch (needs an engine hook)
queue_depth                            gauge      prompts waiting in the engine (sampled)
engine_<stat>                          gauge      every numeric field of engine.stats (sampled)
=====================================  =========  ===============================================
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily

from poolstream.server.observability import current_call

logger = logging.getLogger(__name__)

# No `*_created` series: they double the exposition and no dashboard here uses them.
disable_created_metrics()

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServerMetrics:
    """The metric objects of one server, on their own registry."""

    def __init__(self, engine_getter: Callable[[], Any] | None = None):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("poolstream_requests", "Finished RPCs by method and status code",
                                ["method", "code"], registry=r)
        self.errors = Counter("poolstream_request_errors", "Failed RPCs by method, code and ErrorInfo reason",
                              ["method", "code", "reason"], registry=r)
        self.duration = Histogram("poolstream_request_duration_seconds", "RPC wall time", ["method"],
                                  buckets=_LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("poolstream_requests_in_flight", "RPCs in progress", ["method"], registry=r)
        self.prompts = Counter("poolstream_prompts", "Prompts finished by the engine, by outcome",
                               ["outcome"], registry=r)
        self.tokens = Counter("poolstream_prompt_tokens", "Tokens (or model positions) encoded", registry=r)
        self.queue_time = Histogram("poolstream_queue_time_seconds", "Prompt time in the engine queue",
                                    buckets=_LATENCY_BUCKETS, registry=r)
        self.inference_time = Histogram("poolstream_inference_time_seconds",
                                        "Prompt time from scheduling to output", buckets=_LATENCY_BUCKETS,
                                        registry=r)
        self.prompt_latency = Histogram("poolstream_prompt_latency_seconds",
                                        "Prompt time from submission to output", buckets=_LATENCY_BUCKETS,
                                        registry=r)
        self.pre_process_time = Histogram("poolstream_pre_process_time_seconds",
                                          "Plugin parse_request + pre_process time per request",
                                          buckets=_LATENCY_BUCKETS, registry=r)
        self.post_process_time = Histogram("poolstream_post_process_time_seconds",
                                           "Time from the last engine output to the plugin's result",
                                           buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("poolstream_batch_size", "Prompts per engine batch",
                                    buckets=_BATCH_BUCKETS, registry=r)
        if engine_getter is not None:
            r.register(_EngineCollector(engine_getter))
        self._http = None
        self.port = 0

    # -- exposition ----------------------------------------------------------
    def start_http(self, host: str, port: int) -> int:
        """Serve ``/metrics`` on ``host:port`` (0 picks a free port); returns the bound port."""
        from prometheus_client import start_http_server

        self._http, _thread = start_http_server(port, addr=host, registry=self.registry)
        self.port = self._http.server_port
        logger.info("Prometheus metrics on http://%s:%d/metrics", host, self.port)
        return self.port

    def stop_http(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    # -- recording -----------------------------------------------------------
    def observe_call(self, method: str, code: str, duration_s: float, reason: str = "") -> None:
        self.requests.labels(method, code).inc()
        self.duration.labels(method).observe(duration_s)
        if code != "OK":
            self.errors.labels(method, code, reason or "-").inc()

    def observe_batch(self, size: int) -> None:
        """Per-batch hook for the engine (batch sizes cannot be derived from sampled totals)."""
        self.batch_size.observe(size)


class _EngineCollector:
    """Samples the engine at scrape time: queue depth and every numeric stat."""

    def __init__(self, engine_getter: Callable[[], Any]):
        self.engine_getter = engine_getter

    def describe(self):
        return []

    def collect(self):
        engine = self.engine_getter()
        if engine is None:
            return
        try:
            stats = engine_stats(engine)
        except Exception:  # never fail a scrape because of the engine
            logger.debug("engine stats unavailable", exc_info=True)
            return
        depth = GaugeMetricFamily("poolstream_queue_depth", "Prompts waiting in the engine queue")
        queued = next((stats[k] for k in ("num_waiting", "waiting", "queued", "queue_depth", "num_queued")
                       if k in stats), None)
        if queued is not None:
            depth.add_metric([], float(queued))
            yield depth
        for key, value in sorted(stats.items()):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            yield GaugeMetricFamily(f"poolstream_engine_{_metric_name(key)}", f"engine.stats {key}", value=value)


def engine_stats(engine: Any) -> dict[str, Any]:
    """``engine.stats`` (attribute or method; dataclass, dict or object) as a flat dict."""
    stats = getattr(engine, "stats", None)
    if callable(stats):
        stats = stats()
    if stats is None:
        return {}
    if dataclasses.is_dataclass(stats):
        return dataclasses.asdict(stats)
    if isinstance(stats, dict):
        return dict(stats)
    return {k: v for k, v in vars(stats).items() if not k.startswith("_")}


def _metric_name(key: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in key).strip("_").lower()


class ObservedEngine:
    """Delegates to the engine; times each prompt and notes engine progress for the current call.

    ``encode`` is a plain function (not an async generator) so that it reads
    the calling request's :class:`CallContext` at submission time; the
    returned generator then records into it as outputs arrive, whether or not
    the plugin has consumed them yet (``marks["last_output"]``), which the
    plugin timeout needs.
    """

    def __init__(self, engine: Any, metrics: ServerMetrics | None):
        self._engine = engine
        self._metrics = metrics

    @property
    def inner(self) -> Any:
        return self._engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def encode(self, prompt: Any, params: Any, request_id: str, priority: int = 0,
               deadline: float | None = None) -> AsyncIterator[Any]:
        call = current_call()
        stream = self._engine.encode(prompt, params, request_id, priority, deadline)
        return self._observe(stream, call)

    async def _observe(self, stream: AsyncIterator[Any], call) -> AsyncIterator[Any]:
        metrics = self._metrics
        submitted = time.monotonic()
        outcome = "error"
        try:
            async for out in stream:
                now = time.monotonic()
                if getattr(out, "finished", True):
                    outcome = "ok"
                    if call is not None:
                        call.marks["outputs"] = call.marks.get("outputs", 0) + 1
                        call.marks["last_output"] = now
                    if metrics is not None:
                        metrics.prompt_latency.observe(now - submitted)
                        ids = getattr(out, "prompt_token_ids", None)
                        metrics.tokens.inc(len(ids) if ids else 1)
                        _observe_engine_timing(metrics, out)
                yield out
        except BaseException as e:
            if isinstance(e, (GeneratorExit,)) or type(e).__name__ == "CancelledError":
                outcome = "cancelled"
            raise
        finally:
            if metrics is not None:
                metrics.prompts.labels(outcome).inc()
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()


def _observe_engine_timing(metrics: ServerMetrics, out: Any) -> None:
    """Queue and inference time from the output's timing fields, when the engine sets them."""
    m = getattr(out, "metrics", None)
    if m is None:
        return
    get = (m.get if isinstance(m, dict) else lambda k, d=None: getattr(m, k, d))
    arrival, scheduled, finished = get("arrival_time"), get("first_scheduled_time"), get("finished_time")
    queue_s, infer_s = get("queue_time_s"), get("inference_time_s")
    if queue_s is None and arrival is not None and scheduled is not None:
        queue_s = scheduled - arrival
    if infer_s is None and scheduled is not None and finished is not None:
        infer_s = finished - scheduled
    if queue_s is not None and queue_s >= 0:
        metrics.queue_time.observe(queue_s)
    if infer_s is not None and infer_s >= 0:
        metrics.inference_time.observe(infer_s)
