"""What the handlers share: config, plugin selection, and (once loaded) the engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from poolstream.config import PoolstreamConfig
from poolstream.plugins.io_processors import IOProcessorSelection
from poolstream.plugins.io_processors.pipeline import PluginPipeline

if TYPE_CHECKING:
    from poolstream.engine import AsyncEngine


@dataclass
class ServerState:
    config: PoolstreamConfig
    selection: IOProcessorSelection
    engine: "AsyncEngine | None" = None  # None while the model loads
    pipeline: PluginPipeline | None = None  # None when no plugin is active
    draining: bool = False
    active_calls: int = 0
    counters: dict[str, int] = field(default_factory=dict)

    def attach_engine(self, engine: "AsyncEngine") -> None:
        self.engine = engine
        if self.selection.processor is not None:
            self.pipeline = PluginPipeline(
                self.selection.processor, engine, self.config.limits.max_prompts_per_request,
                self.config.limits,
            )
