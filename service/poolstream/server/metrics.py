"""Prometheus metrics on a separate HTTP port (``--metrics-port``; 0 = off).

Each server owns its own ``CollectorRegistry`` (so several in-process servers
in one test process do not collide). Call-level metrics are recorded by the
observability interceptor, prompt-level ones by the serving core from each
call's record (``serving.core.TrackedGroup``), and engine gauges
(queue depth and whatever numeric counters ``engine.stats`` exposes) are
sampled at scrape time. Queue and inference time come exactly from each
output's ``timing`` (the engine's clock); batch sizes come from the engine's
``stats.recent_batches``, sampled every ``BATCH_SAMPLE_S`` and at every
scrape.

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
queue_time_seconds                     histogram  prompt admitted -> its batch started
inference_time_seconds                 histogram  its batch's execution time, per prompt
prompt_latency_seconds                 histogram  prompt submitted -> output, as the server saw it
pre_process_time_seconds               histogram  plugin parse + pre-process per request
post_process_time_seconds              histogram  last engine output -> plugin result per request
batch_size                             histogram  prompts per engine batch
queue_depth                            gauge      prompts waiting in the engine (sampled)
engine_<stat>                          gauge      every numeric field of engine.stats (sampled)
=====================================  =========  ===============================================
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily


logger = logging.getLogger(__name__)

# No `*_created` series: they double the exposition and no dashboard here uses them.
disable_created_metrics()

BATCH_SAMPLE_S = 0.5
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServerMetrics:
    """The metric objects of one server, on their own registry."""

    def __init__(self, engine_getter: Callable[[], Any] | None = None):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._engine_getter = engine_getter
        if engine_getter is not None:
            # First, so that each scrape samples the engine's recent batches before the
            # histograms below are collected.
            r.register(_EngineCollector(engine_getter, self.sample_batches))
        self.requests = Counter("poolstream_requests", "Finished RPCs by method and status code",
                                ["method", "code"], registry=r)
        self.errors = Counter("poolstream_request_errors", "Failed RPCs by method, code and ErrorInfo reason",
                              ["method", "code", "reason"], registry=r)
        self.duration = Histogram("poolstream_request_duration_seconds", "RPC wall time", ["method"],
                                  buckets=_LATENCY_BUCKETS, registry=r)
        # livesum: with --api-server-count N the scrape sums the live front ends.
        self.in_flight = Gauge("poolstream_requests_in_flight", "RPCs in progress", ["method"], registry=r,
                               multiprocess_mode="livesum")
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
        self._in_flight_children: dict[str, Gauge] = {}
        self._call_children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
        self._prompt_children: dict[str, Counter] = {}
        self._http: Any = None
        self.port = 0
        self._last_batch = 0  # index of the last engine batch recorded
        self._batch_lock = threading.Lock()

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
    # Labelled children are looked up once per label set: ``labels()`` validates and locks on
    # every call, a measurable part of a ~10 ms request. Methods and codes are few (an
    # unknown method never reaches the interceptor), so the caches stay small.
    def in_flight_of(self, method: str) -> Gauge:
        child = self._in_flight_children.get(method)
        if child is None:
            child = self._in_flight_children[method] = self.in_flight.labels(method)
        return child

    def prompts_of(self, outcome: str) -> Counter:
        child = self._prompt_children.get(outcome)
        if child is None:
            child = self._prompt_children[outcome] = self.prompts.labels(outcome)
        return child

    def observe_call(self, method: str, code: str, duration_s: float, reason: str = "") -> None:
        children = self._call_children.get((method, code))
        if children is None:
            children = self._call_children[(method, code)] = (
                self.requests.labels(method, code), self.duration.labels(method))
        children[0].inc()
        children[1].observe(duration_s)
        if code != "OK":
            self.errors.labels(method, code, reason or "-").inc()

    def observe_timing(self, timing: Any) -> None:
        """A finished prompt's engine timing (``PoolingRequestOutput.timing``)."""
        if timing is not None:
            self.queue_time.observe(timing.queue_s)
            self.inference_time.observe(timing.inference_s)

    def sample_batches(self, stats: dict[str, Any] | None = None) -> None:
        """Record the sizes of the engine batches executed since the last call.

        The engine keeps its most recent batches (``stats.recent_batches``, 256); the server
        samples them every ``BATCH_SAMPLE_S`` and at every scrape, so batch sizes are missed
        only beyond 256 batches per interval (queue and inference time are exact, per prompt).
        """
        if stats is None:
            engine = self._engine_getter() if self._engine_getter else None
            if engine is None:
                return
            stats = engine_stats(engine)
        batches = stats.get("recent_batches") or ()
        with self._batch_lock:
            for b in batches:
                if b.index <= self._last_batch:
                    continue
                self._last_batch = b.index
                self.batch_size.observe(len(b.request_ids))

    async def run_batch_sampler(self) -> None:
        """Background task: sample engine batches periodically (cancel to stop)."""
        while True:
            await asyncio.sleep(BATCH_SAMPLE_S)
            try:
                self.sample_batches()
            except Exception:
                logger.debug("batch sampling failed", exc_info=True)


class _EngineCollector:
    """Samples the engine at scrape time: queue depth and every numeric stat."""

    def __init__(self, engine_getter: Callable[[], Any], on_stats: Callable[[dict[str, Any]], None]):
        self.engine_getter = engine_getter
        self.on_stats = on_stats

    def describe(self):
        return []

    def collect(self):
        engine = self.engine_getter()
        if engine is None:
            return
        try:
            stats = engine_stats(engine)
            self.on_stats(stats)
        except Exception:
            logger.debug("engine stats unavailable", exc_info=True)
            return
        depth = GaugeMetricFamily("poolstream_queue_depth", "Prompts waiting in the engine queue")
        queued = next((stats[k] for k in ("queued_prompts", "num_waiting", "queue_depth") if k in stats), None)
        if queued is not None:
            depth.add_metric([], float(queued))
            yield depth
        for key, value in sorted(stats.items()):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            yield GaugeMetricFamily(f"poolstream_engine_{_metric_name(key)}", f"engine.stats {key}", value=value)


class EngineStatsFileCollector(_EngineCollector):
    """The engine gauges of an engine in another process (``--api-server-count N``): read at
    scrape time from the stats file the engine process rewrites every 0.5 s."""

    def __init__(self, path: str):
        super().__init__(self._read, lambda stats: None)
        self.path = path

    def _read(self) -> Any:
        import json
        import types

        try:
            with open(self.path, encoding="utf-8") as f:
                return types.SimpleNamespace(stats=json.load(f))
        except (OSError, ValueError):
            return None


def engine_stats(engine: Any) -> dict[str, Any]:
    """``engine.stats`` (attribute or method; dataclass, dict or object) as a flat dict."""
    stats = getattr(engine, "stats", None)
    if callable(stats):
        stats = stats()
    if stats is None:
        return {}
    if dataclasses.is_dataclass(stats):
        return {f.name: getattr(stats, f.name) for f in dataclasses.fields(stats)}
    if isinstance(stats, dict):
        return dict(stats)
    return {k: v for k, v in vars(stats).items() if not k.startswith("_")}


def _metric_name(key: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in key).strip("_").lower()
