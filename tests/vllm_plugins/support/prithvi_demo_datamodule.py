"""The datamodule a terratorch model's config names (``pretrained_cfg.data``), written for
models/prithvi-water-demo: terratorch's segmentation plugin calls
``datamodule.test_transform(image=<H, W, C array>)`` then ``datamodule.aug(<that dict>)``
on every window, and sends ``aug(...)["image"][0]`` to the model.

The plugin scales reflectance to 0-1 (divides by 10000); the demo model was trained on
``(reflectance - mean) / std``, which ``aug`` applies (terratorch's own datamodules do
the same with kornia's Normalize)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class ToTensorCHW:
    """``image`` from an H x W x C array to a C x H x W float tensor (albumentations' ToTensorV2)."""

    def __call__(self, **data: Any) -> dict[str, Any]:
        image = np.ascontiguousarray(np.asarray(data["image"], dtype=np.float32).transpose(2, 0, 1))
        return {**data, "image": torch.from_numpy(image)}


class _Compose:
    def __init__(self, transforms: list[Any]):
        self.transforms = transforms

    def __call__(self, **data: Any) -> dict[str, Any]:
        for transform in self.transforms:
            data = transform(**data)
        return data


class _Normalize:
    def __init__(self, mean: list[float], std: list[float], scale: float):
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]
        self.scale = scale

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        image = data["image"].float() * self.scale
        return {**data, "image": ((image - self.mean) / self.std).unsqueeze(0)}


class PrithviDemoDataModule:
    def __init__(self, means: list[float], stds: list[float], constant_scale: float = 10000.0,
                 test_transform: list[Any] | None = None, **_: Any):
        self.test_transform = _Compose(list(test_transform or [ToTensorCHW()]))
        self.aug = _Normalize(means, stds, constant_scale)
