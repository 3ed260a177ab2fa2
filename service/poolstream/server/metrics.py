"""Prometheus metrics on a separate HTTP port (``--metrics-port``; 0 = off).

Each server owns its own ``CollectorRegistry`` (so several in-process servers
in one test process do not collide). Call-level metrics are recorded by the
observability interceptor, prompt-level ones by :class:`ObservedEngine` (a
thin wrapper around the engine that times every prompt), and the engine's own
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
import dataclasses
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
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
from poolstream.server.observability import current_call, split_method
from poolstream.server.timing import note_output

logger = logging.getLogger(__name__)

# No `*_created` series: they double the exposition and no dashboard here uses them.
disable_created_metrics()

__all__ = ["ServerMetrics", "ObservedEngine", "Submitted", "engine_stats", "BATCH_SAMPLE_S"]

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
        self.in_flight = Gauge("poolstream_requests_in_flight", "RPCs in progress", _CALL, registry=r)
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


@dataclasses.dataclass(slots=True)
class Submitted:
    """A prompt admitted by ``ObservedEngine.submit``: the engine request (its ``future``),
    when it was submitted and the marks of the call it belongs to."""

    req: Any
    submitted: float
    marks: dict[str, Any]


class ObservedEngine:
    """Delegates to the engine; times each prompt and notes engine progress for the current call.

    ``encode`` is a plain function (not an async generator) so that it reads
    the calling request's :class:`CallContext` at submission time; the
    returned generator then records into it as outputs arrive, whether or not
    the plugin has consumed them yet (``marks["produced"]``, ``marks["waiting"]``),
    which the plugin timeout needs (server/watchdog.py).
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
        return self._observe(stream, call, request_id)

    async def encode_one(self, prompt: Any, params: Any, request_id: str, priority: int = 0,
                         deadline: float | None = None) -> Any:
        """``encode`` awaited for its one output (the server's single-prompt path): the
        same marks and metrics as ``_observe``, without an async generator on each side."""
        inner = self._engine.encode_one
        call = current_call()
        metrics = self._metrics
        marks = call.marks if call is not None else {}
        submitted = time.monotonic()
        # While this await is pending the engine works for the call (queued or batched).
        marks["waiting"] = marks.get("waiting", 0) + 1
        marks["activity"] = submitted
        try:
            out = await inner(prompt, params, request_id, priority, deadline)
        except BaseException as e:
            marks["waiting"] -= 1
            marks["activity"] = time.monotonic()
            if metrics is not None:
                metrics.prompts_of("cancelled" if isinstance(e, asyncio.CancelledError) else "error").inc()
            raise
        marks["waiting"] -= 1
        marks["activity"] = now = time.monotonic()
        outcome = "error"
        if getattr(out, "finished", True):
            outcome = "ok"
            self._finished(marks, out, now, submitted)
        if metrics is not None:
            metrics.prompts_of(outcome).inc()
        return out

    def submit(self, prompt: Any, params: Any, request_id: str, priority: int = 0,
               deadline: float | None = None) -> "Submitted":
        """``engine.submit`` (admitted now, not awaited) with ``encode_one``'s marks and
        metrics; hand the result to ``collect`` once its future is done, or to ``drop``."""
        call = current_call()
        marks = call.marks if call is not None else {}
        try:
            req = self._engine.submit(prompt, params, request_id, priority, deadline)
        except BaseException:
            if self._metrics is not None:
                self._metrics.prompts_of("error").inc()
            raise
        marks["waiting"] = marks.get("waiting", 0) + 1
        marks["activity"] = submitted = time.monotonic()
        return Submitted(req, submitted, marks)

    def collect(self, sub: "Submitted") -> Any:
        """The output of a submitted prompt whose future is done (its error is raised)."""
        sub.marks["waiting"] -= 1
        sub.marks["activity"] = now = time.monotonic()
        self._engine.release(sub.req)
        fut = sub.req.future
        metrics = self._metrics
        if fut.cancelled() or fut.exception() is not None:
            if metrics is not None:
                metrics.prompts_of("cancelled" if fut.cancelled() else "error").inc()
            return fut.result()  # raises the prompt's error (CancelledError if cancelled)
        out = fut.result()
        outcome = "error"
        if getattr(out, "finished", True):
            outcome = "ok"
            self._finished(sub.marks, out, now, sub.submitted)
        if metrics is not None:
            metrics.prompts_of(outcome).inc()
        return out

    def drop(self, sub: "Submitted") -> None:
        """A submitted prompt nobody will collect (its call ended): aborted, counted cancelled."""
        sub.marks["waiting"] -= 1
        sub.marks["activity"] = time.monotonic()
        self._engine.release(sub.req)
        if self._metrics is not None:
            self._metrics.prompts_of("cancelled").inc()

    def _finished(self, marks: dict[str, Any], out: Any, now: float, submitted: float) -> None:
        """A prompt's final output arrived: the call's marks (watchdog, timing trailers) and
        the prompt-level metrics."""
        marks.setdefault("produced", []).append(now)
        marks["last_output"] = now
        note_output(marks, out)
        metrics = self._metrics
        if metrics is not None:
            metrics.prompt_latency.observe(now - submitted)
            metrics.observe_timing(getattr(out, "timing", None))
            ids = getattr(out, "prompt_token_ids", None)
            metrics.tokens.inc(len(ids) if ids else 1)

    async def _observe(self, stream: AsyncIterator[Any], call, request_id: str) -> AsyncIterator[Any]:
        metrics = self._metrics
        marks = call.marks if call is not None else {}
        submitted = time.monotonic()
        outcome = "error"
        iterator = stream.__aiter__()
        try:
            while True:
                # While this await is pending the engine works for the call (queued or batched).
                marks["waiting"] = marks.get("waiting", 0) + 1
                marks["activity"] = time.monotonic()
                try:
                    out = await iterator.__anext__()
                except StopAsyncIteration:
                    break
                finally:
                    marks["waiting"] -= 1
                    marks["activity"] = time.monotonic()
                now = time.monotonic()
                if getattr(out, "finished", True):
                    outcome = "ok"
                    self._finished(marks, out, now, submitted)
                yield out
        except (GeneratorExit, asyncio.CancelledError):
            if outcome != "ok":
                outcome = "cancelled"
            raise
        finally:
            if metrics is not None:
                metrics.prompts_of(outcome).inc()
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
