"""A small real tensor-input model for engine tests: a 1x1 convolution segmenter.

Its weights are written to a model directory (config.json + model.safetensors)
by ``write_model_dir`` and loaded through the registry like any model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from poolstream.models.base import ModelSpec, PoolingModel

ARCH = "TinyConvSegmenterForTests"
CHANNELS, CLASSES = 3, 2
FAILING_WIDTH = 13  # forward raises for such inputs: a model failure mid-batch


class TinyConvSegmenter(PoolingModel):
    tensor_inputs = ("pixel_values",)

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.conv = torch.nn.Conv2d(CHANNELS, CLASSES, kernel_size=1)
        with torch.no_grad():
            self.conv.weight.copy_(weight)
            self.conv.bias.copy_(bias)
        self.batch_sizes: list[int] = []  # what forward_tensors saw

    @classmethod
    def load(cls, model_dir: Path, hf_config: dict[str, Any], device: torch.device,
             dtype: torch.dtype) -> "TinyConvSegmenter":
        w = load_file(str(model_dir / "model.safetensors"))
        return cls(w["conv.weight"], w["conv.bias"]).to(device=device, dtype=dtype).eval()

    def spec(self) -> ModelSpec:
        return ModelSpec(output_shape=(CLASSES, -1, -1), pooling="none", normalize=False, max_model_len=0,
                         tensor_inputs=self.tensor_inputs)

    def check_tensor_inputs(self, inputs: Mapping[str, torch.Tensor]) -> None:
        x = inputs["pixel_values"]
        if x.dim() != 3 or x.shape[0] != CHANNELS:
            raise ValueError(f"pixel_values must be ({CHANNELS}, H, W), got {tuple(x.shape)}")

    def tensor_prompt_cost(self, inputs: Mapping[str, torch.Tensor]) -> int:
        _, h, w = inputs["pixel_values"].shape
        return (h * w) // 16  # "patches" of 4x4

    def forward_tensors(self, **inputs: torch.Tensor) -> torch.Tensor:
        x = inputs["pixel_values"]
        self.batch_sizes.append(x.shape[0])
        if x.shape[-1] == FAILING_WIDTH:
            raise RuntimeError("this test model fails on purpose for width 13")
        return self.conv(x)


def write_model_dir(path: Path) -> Path:
    g = torch.Generator().manual_seed(0)
    save_file({"conv.weight": torch.randn(CLASSES, CHANNELS, 1, 1, generator=g),
               "conv.bias": torch.randn(CLASSES, generator=g)}, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps({"architectures": [ARCH], "model_type": "tiny-test"}))
    return path
