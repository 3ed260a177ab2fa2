"""A small Prithvi-style segmentation model in native torch.

Architecture (``"architectures": ["PrithviSegmentationModel"]`` in config.json):

1. Patch embedding: a ``patch_size`` x ``patch_size`` convolution with that
   stride turns ``[B, C, H, W]`` multispectral pixels into ``[B, N, D]`` tokens
   (N = H/p * W/p), like Prithvi's ViT encoder (without its time axis).
2. Fixed 2-D sine-cosine position embeddings (as in Prithvi / MAE), computed
   for the actual token grid, so any tile size that is a multiple of the patch
   size works.
3. ``depth`` pre-norm transformer blocks (multi-head self-attention + GELU MLP).
4. Segmentation head: the token grid is upsampled by transposed convolutions
   (a 2x step per stage, down to full resolution), fused with a shallow
   full-resolution convolution over the input bands (so class boundaries are
   sharp at pixel level), and projected to ``num_classes`` logits per pixel.

Inputs are normalised bands (``(x - mean) / std`` with the config's
``mean``/``std``); the IO processor plugin does that, as terratorch's data
module does for Prithvi. Outputs are logits ``[B, num_classes, H, W]``.

The shipped demo weights (``models/prithvi-water-demo``) are trained by
``plugins/geotiff_segmentation/training/train.py`` on synthetic scenes; see
that plugin's README.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from poolstream.models.base import ModelSpec, PoolingModel

# Defaults of every architecture key config.json may set.
DEFAULT_CONFIG: dict[str, Any] = {
    "num_bands": 6,
    "num_classes": 3,
    "patch_size": 16,
    "tile_size": 224,
    "embed_dim": 96,
    "depth": 4,
    "num_heads": 4,
    "mlp_ratio": 4.0,
    "decoder_channels": [64, 32, 16, 8],
    "stem_channels": 8,
    "fuse_channels": 16,
}


def sincos_pos_embed_2d(dim: int, grid_h: int, grid_w: int) -> torch.Tensor:
    """[grid_h * grid_w, dim] fixed 2-D sine-cosine embedding (MAE / Prithvi style).

    Half of the channels encode the row, half the column; each half is
    ``[sin(pos * w_k), cos(pos * w_k)]`` with ``w_k = 1 / 10000^(k / (dim/4))``.
    """
    if dim % 4:
        raise ValueError(f"embed_dim must be a multiple of 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / (10000.0 ** (torch.arange(quarter, dtype=torch.float64) / quarter))
    ys, xs = torch.meshgrid(
        torch.arange(grid_h, dtype=torch.float64), torch.arange(grid_w, dtype=torch.float64), indexing="ij"
    )
    out_y = ys.reshape(-1, 1) * omega  # [N, dim/4]
    out_x = xs.reshape(-1, 1) * omega
    emb = torch.cat([out_y.sin(), out_y.cos(), out_x.sin(), out_x.cos()], dim=1)
    return emb.float()


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape  # [B, N, D]
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, heads, N, D/heads]
        attn = F.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(attn.transpose(1, 2).reshape(b, n, d))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class PrithviSegmentationModel(PoolingModel):
    """ViT encoder over multispectral patches + upsampling segmentation head."""

    tensor_inputs: ClassVar[tuple[str, ...]] = ("pixel_values",)

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        cfg = {**DEFAULT_CONFIG, **{k: v for k, v in config.items() if k in DEFAULT_CONFIG}}
        self.config = dict(config)
        self.num_bands = int(cfg["num_bands"])
        self.num_classes = int(cfg["num_classes"])
        self.patch_size = int(cfg["patch_size"])
        self.tile_size = int(cfg["tile_size"])
        self.embed_dim = int(cfg["embed_dim"])
        decoder_channels = [int(c) for c in cfg["decoder_channels"]]
        if 2 ** len(decoder_channels) != self.patch_size:
            raise ValueError(
                f"decoder_channels needs log2(patch_size) = {math.log2(self.patch_size):g} stages, "
                f"got {len(decoder_channels)}"
            )
        stem = int(cfg["stem_channels"])
        fuse = int(cfg["fuse_channels"])
        d = self.embed_dim

        self.patch_embed = nn.Conv2d(self.num_bands, d, kernel_size=self.patch_size, stride=self.patch_size)
        self.blocks = nn.ModuleList(
            Block(d, int(cfg["num_heads"]), float(cfg["mlp_ratio"])) for _ in range(int(cfg["depth"]))
        )
        self.norm = nn.LayerNorm(d)
        ups: list[nn.Module] = []
        prev = d
        for ch in decoder_channels:
            ups.append(nn.ConvTranspose2d(prev, ch, kernel_size=2, stride=2))
            ups.append(nn.GELU())
            prev = ch
        self.decoder = nn.Sequential(*ups)
        self.stem = nn.Sequential(nn.Conv2d(self.num_bands, stem, 3, padding=1), nn.GELU())
        self.fuse = nn.Sequential(nn.Conv2d(prev + stem, fuse, 3, padding=1), nn.GELU())
        self.classifier = nn.Conv2d(fuse, self.num_classes, 1)
        self._pos_cache: dict[tuple[int, int, torch.device, torch.dtype], torch.Tensor] = {}

    # -- PoolingModel -----------------------------------------------------

    @classmethod
    def load(
        cls, model_dir: Path, hf_config: dict[str, Any], device: torch.device, dtype: torch.dtype
    ) -> PrithviSegmentationModel:
        from safetensors.torch import load_file

        model = cls(hf_config)
        weights = Path(model_dir) / "model.safetensors"
        if not weights.is_file():
            raise FileNotFoundError(f"{weights} not found")
        state = load_file(str(weights))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{weights} does not match config.json: missing {sorted(missing)}, unexpected {sorted(unexpected)}"
            )
        return model.to(device=device, dtype=dtype).eval()

    def spec(self) -> ModelSpec:
        return ModelSpec(
            output_shape=(self.num_classes, -1, -1),
            pooling="none",
            normalize=False,
            max_model_len=0,
            tensor_inputs=self.tensor_inputs,
            extra={
                "num_bands": self.num_bands,
                "patch_size": self.patch_size,
                "tile_size": self.tile_size,
                "class_names": list(self.config.get("class_names", [])),
            },
        )

    # Pixels per forward chunk: the head runs at full resolution (~200 bytes of
    # activations per pixel in float32), so big engine batches are split to
    # keep activation memory near 100 MiB whatever the batch size.
    max_chunk_pixels: ClassVar[int] = 1 << 19

    def forward_tensors(self, **inputs: torch.Tensor) -> torch.Tensor:
        if set(inputs) != {"pixel_values"}:
            raise ValueError(f"{type(self).__name__} takes exactly 'pixel_values', got {sorted(inputs)}")
        x = inputs["pixel_values"]
        per_item = int(x.shape[-1] * x.shape[-2]) if x.dim() == 4 else 1
        step = max(1, self.max_chunk_pixels // max(1, per_item))
        if x.dim() != 4 or x.shape[0] <= step:
            return self(x)
        return torch.cat([self(x[i:i + step]) for i in range(0, x.shape[0], step)])

    def check_tensor_inputs(self, inputs: Mapping[str, torch.Tensor]) -> None:
        """One prompt: ``pixel_values`` [num_bands, H, W], H and W positive multiples of the patch size."""
        if set(inputs) != {"pixel_values"}:
            raise ValueError(f"{type(self).__name__} takes exactly 'pixel_values', got {sorted(inputs)}")
        x = inputs["pixel_values"]
        p = self.patch_size
        if x.dim() != 3 or x.shape[0] != self.num_bands:
            raise ValueError(f"pixel_values must be [{self.num_bands}, H, W], got {list(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"pixel_values must be floating point (normalised bands), got {x.dtype}")
        h, w = x.shape[1:]
        if h == 0 or w == 0 or h % p or w % p:
            raise ValueError(f"pixel_values height and width must be positive multiples of {p}, got {h}x{w}")

    def tensor_prompt_cost(self, inputs: Mapping[str, torch.Tensor]) -> int:
        """One unit per 8x8 pixel block (784 for a 224 px tile).

        The segmentation head keeps ~200 bytes per pixel, so 64 pixels cost
        about what one token of a small BERT does; with the default budget of
        16384 that is ~20 tiles of 224 px per engine batch.
        """
        x = inputs["pixel_values"]
        return max(1, -(-int(x.shape[-2]) * int(x.shape[-1]) // 64))

    # -- torch ------------------------------------------------------------

    def _pos_embed(self, gh: int, gw: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        key = (gh, gw, device, dtype)
        pos = self._pos_cache.get(key)
        if pos is None:
            pos = sincos_pos_embed_2d(self.embed_dim, gh, gw).to(device=device, dtype=dtype)
            if len(self._pos_cache) < 16:
                self._pos_cache[key] = pos
        return pos

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] normalised bands -> [B, num_classes, H, W] logits."""
        if pixel_values.dim() != 4 or pixel_values.shape[1] != self.num_bands:
            raise ValueError(
                f"pixel_values must be [batch, {self.num_bands}, H, W], got {list(pixel_values.shape)}"
            )
        b, _, h, w = pixel_values.shape
        p = self.patch_size
        if h % p or w % p or h == 0 or w == 0:
            raise ValueError(f"height and width must be positive multiples of {p}, got {h}x{w}")
        param = self.classifier.weight
        x_in = pixel_values.to(device=param.device, dtype=param.dtype)

        tokens = self.patch_embed(x_in)  # [B, D, h/p, w/p]
        gh, gw = tokens.shape[-2:]
        x = tokens.flatten(2).transpose(1, 2)  # [B, N, D]
        x = x + self._pos_embed(gh, gw, x.device, x.dtype)
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        feat = x.transpose(1, 2).reshape(b, self.embed_dim, gh, gw)
        up = self.decoder(feat)  # [B, decoder_channels[-1], H, W]
        fused = self.fuse(torch.cat([up, self.stem(x_in)], dim=1))
        return self.classifier(fused)
