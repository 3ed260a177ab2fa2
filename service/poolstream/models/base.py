"""The interface every model implementation follows.

The engine's runner only talks to this interface, so text encoders (BERT
family) and tensor models (the Prithvi-style segmenter) share one scheduler,
batching and streaming path. Implementations register their config.json
``architectures`` name in ``poolstream.models.registry``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    """What a loaded model produces; reported by GetServerInfo."""

    output_shape: tuple[int, ...]  # -1 for sizes that follow the input
    pooling: str  # "mean" | "cls" | "last" | "none"
    normalize: bool  # L2-normalise by default
    max_model_len: int  # 0 for models without text input
    tensor_inputs: tuple[str, ...] = ()  # e.g. ("pixel_values",); empty for text models
    extra: dict[str, Any] = field(default_factory=dict)


class PoolingModel(nn.Module):
    """Base class of model implementations.

    Text models implement ``forward_tokens``; tensor models set
    ``tensor_inputs`` and implement ``forward_tensors``. Both return one pooled
    row per batch item (before normalisation / dimension truncation, which the
    runner applies according to PoolingParams).
    """

    tensor_inputs: ClassVar[tuple[str, ...]] = ()

    @classmethod
    @abstractmethod
    def load(
        cls, model_dir: Path, hf_config: dict[str, Any], device: torch.device, dtype: torch.dtype
    ) -> "PoolingModel":
        """Build the model from a directory (config.json + model.safetensors)."""

    @abstractmethod
    def spec(self) -> ModelSpec:
        """Describe outputs and defaults."""

    def forward_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[batch, seq] int64 ids and mask -> [batch, ...] pooled outputs."""
        raise NotImplementedError(f"{type(self).__name__} takes no text input")

    def forward_tensors(self, **inputs: torch.Tensor) -> torch.Tensor:
        """Batched named tensors ([batch, ...] each) -> [batch, ...] outputs."""
        raise NotImplementedError(f"{type(self).__name__} takes no tensor input")

    # NOTE(engine): the two hooks below are poolstream additions with safe
    # defaults, so models written against the original interface keep working.

    def check_tensor_inputs(self, inputs: Mapping[str, torch.Tensor]) -> None:
        """Raise ValueError if one prompt's tensors (no batch dim) are unusable.

        Called by the engine before queueing, so a bad shape fails that prompt
        with INVALID_ARGUMENT instead of failing a whole batch. Names were
        already checked against ``spec().tensor_inputs``.
        """

    def tensor_prompt_cost(self, inputs: Mapping[str, torch.Tensor]) -> int:
        """Scheduler cost of one tensor prompt, in the units of ``max_num_batched_tokens``.

        E.g. the number of patches (H*W/patch**2) for a ViT-style model. The
        default, 1 per item, makes ``max_num_seqs`` the only bound.
        """
        return 1
