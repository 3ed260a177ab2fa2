"""``vllm.config``: the configuration a plugin's constructor receives."""

from dataclasses import dataclass
from typing import Any

from poolstream.config import ModelConfig, PoolstreamConfig, VllmConfig


@dataclass
class PoolerConfig:
    """vLLM's pooler settings; poolstream reads pooling from the model directory instead."""

    pooling_type: str | None = None
    normalize: bool | None = None
    dimensions: int | None = None
    use_activation: bool | None = None
    extra: dict[str, Any] | None = None


__all__ = ["ModelConfig", "PoolerConfig", "PoolstreamConfig", "VllmConfig"]
