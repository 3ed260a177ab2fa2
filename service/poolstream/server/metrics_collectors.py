"""Scrape-time collectors: the engine's own counters, and the build-info gauge.

Naming follows Prometheus' conventions: cumulative counts are counters whose
exposed name ends in ``_total``; durations are in seconds (``_seconds``);
nothing precomputed that PromQL can derive (a throughput is
``rate(poolstream_engine_prompts_executed_total[1m])``, an average batch size
``rate(..._prompts_executed_total) / rate(..._batches_executed_total)``).
Everything sampled from the engine is named ``poolstream_engine_*``.

The engine's stats are mapped field by field (``ENGINE_COUNTERS``,
``ENGINE_GAUGES``); fields that are derived figures are listed in
``ENGINE_DERIVED`` and not exported. A numeric field in none of the three is
skipped (a test fails until it is given a place), so a new engine stat never
turns into a gauge by accident.
"""

from __future__ import annotations

import dataclasses
import logging
import platform
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

logger = logging.getLogger(__name__)

# engine.stats field -> (metric name without ``_total``, help). Cumulative since start.
ENGINE_COUNTERS: dict[str, tuple[str, str]] = {
    "prompts_admitted": ("poolstream_engine_prompts_admitted", "Prompts admitted to the engine queue"),
    "prompts_executed": ("poolstream_engine_prompts_executed", "Prompts executed in a batch"),
    "prompts_aborted": ("poolstream_engine_prompts_aborted",
                        "Prompts aborted before execution (cancelled calls; their work was never done)"),
    "prompts_expired": ("poolstream_engine_prompts_expired", "Prompts whose deadline passed while queued"),
    "prompts_failed": ("poolstream_engine_prompts_failed", "Prompts rejected by the processor or failed by the model"),
    "prompts_rejected": ("poolstream_engine_prompts_rejected", "Prompts refused at admission (queue full)"),
    "batches_executed": ("poolstream_engine_batches_executed", "Engine batches executed"),
    "total_tokens": ("poolstream_engine_tokens", "Tokens (or tensor cost units) executed"),
    "total_padded_tokens": ("poolstream_engine_padded_tokens", "Tokens executed including padding"),
    "busy_s": ("poolstream_engine_busy_seconds", "Time the engine spent executing batches"),
}
# engine.stats field -> (metric name, help). Current values.
ENGINE_GAUGES: dict[str, tuple[str, str]] = {
    "queued_prompts": ("poolstream_engine_queued_prompts", "Prompts waiting in the engine queue (the HPA metric)"),
    "running_prompts": ("poolstream_engine_running_prompts", "Prompts in the batch executing now"),
}
# Derived figures the engine keeps for its own use (admission estimates, debugging): PromQL
# computes them from the counters above, so they are not exported.
ENGINE_DERIVED = frozenset({"last_batch_size", "avg_batch_size", "throughput_prompts_per_s"})


def engine_stats(engine: Any) -> dict[str, Any]:
    """``engine.stats`` (attribute or method; dataclass, dict or object) as a flat dict."""
    stats = getattr(engine, "stats", None)
    if callable(stats):
        stats = stats()
    if stats is None:
        return {}
    if dataclasses.is_dataclass(stats) and not isinstance(stats, type):
        return {f.name: getattr(stats, f.name) for f in dataclasses.fields(stats)}
    if isinstance(stats, dict):
        return dict(stats)
    return {k: v for k, v in vars(stats).items() if not k.startswith("_")}


def engine_families(stats: dict[str, Any]) -> Iterator[Metric]:
    """The metric families of one engine stats snapshot."""
    for key, (name, doc) in ENGINE_GAUGES.items():
        value = stats.get(key)
        if _is_number(value):
            yield GaugeMetricFamily(name, doc, value=float(value))
    for key, (name, doc) in ENGINE_COUNTERS.items():
        value = stats.get(key)
        if _is_number(value):
            yield CounterMetricFamily(name, doc, value=float(value))


def unmapped_engine_fields(stats: dict[str, Any]) -> list[str]:
    """Numeric stats fields with no place in the tables above."""
    known = ENGINE_COUNTERS.keys() | ENGINE_GAUGES.keys() | ENGINE_DERIVED
    return sorted(k for k, v in stats.items() if _is_number(v) and k not in known)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class EngineCollector:
    """Samples the engine at scrape time (``on_stats`` sees each snapshot first)."""

    def __init__(self, engine_getter: Callable[[], Any], on_stats: Callable[[dict[str, Any]], None]):
        self.engine_getter = engine_getter
        self.on_stats = on_stats

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        engine = self.engine_getter()
        if engine is None:
            return
        try:
            stats = engine_stats(engine)
            self.on_stats(stats)
        except Exception:
            logger.debug("engine stats unavailable", exc_info=True)
            return
        yield from engine_families(stats)


def _versions() -> dict[str, str]:
    import grpc
    import poolstream

    try:
        import torch

        torch_version, cuda = torch.__version__, torch.version.cuda or ""
    except ImportError:  # pragma: no cover - the server always has torch
        torch_version, cuda = "", ""
    return {"version": poolstream.__version__, "python": platform.python_version(), "torch": torch_version,
            "cuda": cuda, "grpcio": grpc.__version__}


class BuildInfoCollector:
    """``poolstream_build_info`` = 1, with the versions and the engine's device as labels.

    The usual Prometheus ``*_build_info`` pattern: join on it to break any
    series down by version (``* on(instance) group_left(version) poolstream_build_info``).
    ``device`` and ``dtype`` are empty until the model has loaded.
    """

    LABELS = ("version", "python", "torch", "cuda", "grpcio", "device", "dtype")

    def __init__(self, engine_getter: Callable[[], Any] | None):
        self.engine_getter = engine_getter
        self.static = _versions()

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        device = dtype = ""
        engine = self.engine_getter() if self.engine_getter is not None else None
        info = getattr(engine, "model_info", None) if engine is not None else None
        if info is not None:
            device = str(getattr(info, "device", "") or "")
            dtype = str(getattr(info, "compute_dtype", "") or "").removeprefix("torch.")
        family = GaugeMetricFamily("poolstream_build_info", "Versions and device of this server (always 1)",
                                   labels=self.LABELS)
        family.add_metric([*(self.static[k] for k in self.LABELS[:5]), device, dtype], 1.0)
        yield family
