"""Prometheus metrics on a separate HTTP port (``--metrics-port``; 0 = off).

Each server owns its own ``CollectorRegistry`` (so several in-process servers
in one test process do not collide). Call-level metrics are recorded by the
observability interceptor, prompt-level ones by the serving core from each
call's prompt groups (``serving.core.TrackedGroup``), and the engine's own
counters and gauges are sampled at scrape time
(:mod:`poolstream.server.metrics_collectors`). Queue and inference time come
exactly from each output's ``timing`` (the engine's clock); batch sizes come
from the engine's ``stats.recent_batches``, sampled every ``BATCH_SAMPLE_S``
and at every scrape.

Conventions (Prometheus naming, and the labels of the gRPC ecosystem's
``grpc_server_*`` metrics): cumulative counts are counters, exposed with
``_total``; base units (seconds, bytes) named in the metric; no precomputed
rates or averages (PromQL derives them); a call is labelled ``grpc_service``
(``poolstream.v1.PoolingService``), ``grpc_method`` (``Process``) and, once
finished, ``grpc_code`` (``OK``, ``INVALID_ARGUMENT``...). The registry also has
the client library's default ``process_*``, ``python_info`` and
``python_gc_*`` collectors, and ``poolstream_build_info``.

Names (all prefixed ``poolstream_``):

=====================================  =========  ===============================================
metric                                 type       labels / meaning
=====================================  =========  ===============================================
requests_total                         counter    grpc_service, grpc_method, grpc_code: finished RPCs
request_errors_total                   counter    ... + reason (ErrorInfo reason; ``-`` without one)
request_duration_seconds               histogram  grpc_service, grpc_method: wall time of the RPC
requests_in_flight                     gauge      grpc_service, grpc_method
prompts_total                          counter    outcome (ok, error, cancelled)
prompt_tokens_total                    counter    tokens (or positions) encoded
queue_time_seconds                     histogram  prompt admitted -> its batch started
inference_time_seconds                 histogram  its batch's execution time, per prompt
prompt_latency_seconds                 histogram  prompt submitted -> output, as the server saw it
pre_process_time_seconds               histogram  plugin parse + pre-process per request
post_process_time_seconds              histogram  last engine output -> plugin result per request
batch_size                             histogram  prompts per engine batch
engine_queued_prompts                  gauge      prompts waiting in the engine (sampled; the HPA metric)
engine_running_prompts                 gauge      prompts in the executing batch (sampled)
engine_*_total                         counter    the engine's cumulative counters (sampled)
build_info                             gauge      version, python, torch, cuda, grpcio, device, dtype
=====================================  =========  ===============================================
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from poolstream.server.metrics_collectors import BuildInfoCollector, EngineCollector, engine_stats
from poolstream.server.observability import split_method

logger = logging.getLogger(__name__)

# No `*_created` series: they double the exposition and no dashboard here uses them.
disable_created_metrics()

__all__ = ["ServerMetrics", "engine_stats", "BATCH_SAMPLE_S"]

BATCH_SAMPLE_S = 0.5
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_CALL = ["grpc_service", "grpc_method"]


class ServerMetrics:
    """The metric objects of one server, on their own registry."""

    def __init__(self, engine_getter: Callable[[], Any] | None = None):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._engine_getter = engine_getter
        # The client library's defaults (its global registry has them; ours is per server).
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        if GC_COLLECTOR is not None:  # None where the interpreter has no gc callbacks
            GCCollector(registry=r)
        r.register(BuildInfoCollector(engine_getter))
        if engine_getter is not None:
            # Before the histograms below, so that each scrape samples the engine's recent
            # batches before they are collected.
            r.register(EngineCollector(engine_getter, self.sample_batches))
        self.requests = Counter("poolstream_requests", "Finished RPCs by service, method and status code",
                                [*_CALL, "grpc_code"], registry=r)
        self.errors = Counter("poolstream_request_errors",
                              "Failed RPCs by service, method, status code and ErrorInfo reason",
                              [*_CALL, "grpc_code", "reason"], registry=r)
        self.duration = Histogram("poolstream_request_duration_seconds", "RPC wall time", _CALL,
                                  buckets=_LATENCY_BUCKETS, registry=r)
        # livesum: with --api-server-count N one scrape sums the live front ends.
        self.in_flight = Gauge("poolstream_requests_in_flight", "RPCs in progress", _CALL, registry=r,
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
    # ``method`` is the gRPC path, ``/package.Service/Method``.
    def in_flight_of(self, method: str) -> Gauge:
        child = self._in_flight_children.get(method)
        if child is None:
            child = self._in_flight_children[method] = self.in_flight.labels(*split_method(method))
        return child

    def prompts_of(self, outcome: str) -> Counter:
        child = self._prompt_children.get(outcome)
        if child is None:
            child = self._prompt_children[outcome] = self.prompts.labels(outcome)
        return child

    def observe_call(self, method: str, code: str, duration_s: float, reason: str = "") -> None:
        children = self._call_children.get((method, code))
        if children is None:
            service, name = split_method(method)
            children = self._call_children[(method, code)] = (
                self.requests.labels(service, name, code), self.duration.labels(service, name))
        children[0].inc()
        children[1].observe(duration_s)
        if code != "OK":
            self.errors.labels(*split_method(method), code, reason or "-").inc()

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
