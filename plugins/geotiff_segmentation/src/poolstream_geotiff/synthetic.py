"""Synthetic 6-band multispectral scenes with land / water / cloud ground truth.

The demo model is trained on these scenes, and the tests check it on scenes
made with other seeds. Bands follow Prithvi / HLS: Blue, Green, Red, NIR
(narrow), SWIR1, SWIR2, as surface reflectance x 10000 in int16 (HLS's
scaling), with -9999 for missing pixels.

What a scene contains (all sizes in pixels, every choice drawn from the seed):

- Water: lakes (a thresholded fractal field, 0-45 % cover) and 0-2 meandering
  rivers 3-25 px wide; shore pixels are linear mixtures of water and land
  (sub-pixel abundance), and the label is "water" where the abundance >= 0.5.
  Water spectra mix clear and turbid water (a turbidity field).
- Land: a smooth mixture of dense vegetation, sparse vegetation, bare soil,
  urban and dark wet soil / wetland spectra, multiplicative texture and
  hill shading from an elevation field.
- Atmosphere: per-scene gain, per-band jitter and a wavelength-dependent haze
  offset.
- Clouds (half the scenes): bright, spectrally flat (lower in SWIR), with
  soft, thin edges; label "cloud" where cloud opacity >= 0.5. Cloud shadows
  (the cloud field shifted) darken the surface underneath but keep its
  label, so dark shadowed land must not be taken for water.
- Sensor noise: Gaussian, 0.004 reflectance.
- Missing data (optional): a swath edge of -9999 along one side.

What makes water separable is physical: water absorbs NIR and SWIR strongly,
so NDWI = (G - NIR) / (G + NIR) and MNDWI = (G - SWIR1) / (G + SWIR1) are
positive over water and negative over land, shadowed or not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

BAND_NAMES = ("BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2")
CLASS_NAMES = ("land", "water", "cloud")
LAND, WATER, CLOUD = 0, 1, 2
LABEL_NODATA = 255
NODATA = -9999
SCALE = 10000.0

# Surface reflectance (0..1) per band: Blue, Green, Red, NIR, SWIR1, SWIR2.
WATER_CLEAR = np.array([0.070, 0.060, 0.040, 0.015, 0.008, 0.005], np.float32)
WATER_TURBID = np.array([0.090, 0.110, 0.100, 0.045, 0.018, 0.010], np.float32)
LAND_SPECTRA = np.array(
    [
        [0.030, 0.070, 0.040, 0.400, 0.200, 0.100],  # dense vegetation
        [0.050, 0.090, 0.080, 0.300, 0.260, 0.150],  # sparse vegetation / grass
        [0.100, 0.140, 0.180, 0.240, 0.320, 0.270],  # bare soil
        [0.110, 0.120, 0.130, 0.170, 0.200, 0.180],  # urban
        [0.040, 0.060, 0.060, 0.150, 0.120, 0.070],  # dark wet soil / wetland
    ],
    np.float32,
)
CLOUD_SPECTRUM = np.array([0.55, 0.55, 0.56, 0.58, 0.42, 0.30], np.float32)
HAZE_SHAPE = np.array([1.0, 0.8, 0.6, 0.3, 0.1, 0.05], np.float32)


@dataclass
class Scene:
    """A synthetic scene."""

    bands: np.ndarray  # [6, H, W] int16, reflectance x 10000, NODATA where missing
    label: np.ndarray  # [H, W] uint8: LAND, WATER, CLOUD, LABEL_NODATA where missing


def fbm(h: int, w: int, rng: np.random.Generator, feature_px: float, octaves: int = 5,
        persistence: float = 0.5) -> np.ndarray:
    """Fractal (multi-octave value) noise, zero mean and unit std, float32 [h, w].

    ``feature_px`` is the size of the coarsest features in pixels.
    """
    out = torch.zeros(1, 1, h, w)
    amp = 1.0
    for o in range(octaves):
        cell = feature_px / (2**o)
        if cell < 1.5:
            break
        gh, gw = int(np.ceil(h / cell)) + 2, int(np.ceil(w / cell)) + 2
        grid = torch.from_numpy(rng.standard_normal((gh, gw), dtype=np.float32))[None, None]
        # Upsample the random grid by `cell`, with a random sub-cell offset.
        up = F.interpolate(grid, scale_factor=cell, mode="bilinear", align_corners=False)
        oy, ox = (int(v) for v in rng.integers(0, max(1, int(cell)), size=2))
        out += amp * up[..., oy:oy + h, ox:ox + w]
        amp *= persistence
    arr = out[0, 0].numpy()
    arr -= arr.mean()
    arr /= arr.std() + 1e-6
    return arr


def _soft_threshold(field: np.ndarray, quantile: float, px: float = 1.0) -> np.ndarray:
    """Abundance in [0, 1] that is 0.5 on the ``quantile`` iso-line, ~``px`` pixels wide."""
    thr = np.quantile(field[:: max(1, field.shape[0] // 256), :: max(1, field.shape[1] // 256)], quantile)
    gy, gx = np.gradient(field)
    slope = np.sqrt(gy * gy + gx * gx) + 1e-6  # field units per pixel
    return np.clip(0.5 + (field - thr) / (slope * px), 0.0, 1.0).astype(np.float32)


def _shift(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``a`` moved by (dy, dx) pixels, zero-filled (no wrap-around)."""
    out = np.zeros_like(a)
    h, w = a.shape
    dst = (slice(max(dy, 0), h + min(dy, 0)), slice(max(dx, 0), w + min(dx, 0)))
    src = (slice(max(-dy, 0), h - max(dy, 0)), slice(max(-dx, 0), w - max(dx, 0)))
    out[dst] = a[src]
    return out


def _smooth(x: np.ndarray, k: int) -> np.ndarray:
    return np.convolve(np.pad(x, k, mode="edge"), np.ones(2 * k + 1) / (2 * k + 1), mode="same")[k:-k]


def _rivers(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    ab = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(0, 3))):
        width = rng.uniform(3, 25)
        vertical = rng.random() < 0.5
        n, m = (h, w) if vertical else (w, h)  # n along the river, m across
        t = np.arange(n, dtype=np.float32)
        wavelength = rng.uniform(0.3, 1.5) * n
        centre = (rng.uniform(0.15, 0.85) * m + rng.uniform(0.05, 0.2) * m * np.sin(
            2 * np.pi * t / wavelength + rng.uniform(0, 2 * np.pi))
            + 0.05 * m * _smooth(np.cumsum(rng.standard_normal(n)) / np.sqrt(n), 15))
        across = np.arange(m, dtype=np.float32)
        dist = np.abs(across[None, :] - centre[:, None])  # [n, m]
        river = np.clip(width / 2 - dist + 0.5, 0, 1)
        ab = np.maximum(ab, river if vertical else river.T)
    return ab


def make_scene(height: int, width: int, seed: int, *, clouds: bool | None = None,
               nodata_edge: bool = False) -> Scene:
    """Generate one scene; the same arguments always give the same scene."""
    rng = np.random.default_rng(seed)
    h, w = height, width
    feat = rng.uniform(96, 320)

    # 1. Water abundance: lakes + rivers.
    water_cover = rng.choice([0.0, rng.uniform(0.05, 0.45)], p=[0.1, 0.9])
    lakes = _soft_threshold(fbm(h, w, rng, feat), 1 - water_cover) if water_cover > 0 else np.zeros((h, w), np.float32)
    water_ab = np.maximum(lakes, _rivers(h, w, rng))

    # 2. Land: mixture of land-cover spectra, texture, hill shading.
    u, v = fbm(h, w, rng, feat * 0.7), fbm(h, w, rng, feat * 0.5)
    protos = rng.uniform(-1.5, 1.5, size=(len(LAND_SPECTRA), 2)).astype(np.float32)
    d2 = (u[None] - protos[:, 0, None, None]) ** 2 + (v[None] - protos[:, 1, None, None]) ** 2
    d2 -= d2.min(0, keepdims=True)  # softmax without underflow
    wts = np.exp(-d2 / np.float32(rng.uniform(0.05, 0.3)))
    del d2
    wts /= wts.sum(0, keepdims=True)  # [5, H, W]
    land = np.einsum("khw,kb->bhw", wts, LAND_SPECTRA)
    del wts
    land *= 1 + 0.08 * fbm(h, w, rng, 8, octaves=3)[None]
    elev = fbm(h, w, rng, feat * 2)
    gy, gx = np.gradient(elev * rng.uniform(5, 40) / feat)
    az = rng.uniform(0, 2 * np.pi)
    shade = np.clip(1 + 0.8 * (gx * np.cos(az) + gy * np.sin(az)), 0.6, 1.3).astype(np.float32)
    land *= shade[None]

    # 3. Water spectra (clear/turbid mixture) and linear mixing at the shores.
    turb = np.clip(0.5 + 0.35 * fbm(h, w, rng, feat), 0, 1)[None].astype(np.float32)
    water = (1 - turb) * WATER_CLEAR[:, None, None] + turb * WATER_TURBID[:, None, None]
    water = water * (1 + 0.03 * fbm(h, w, rng, 6, octaves=2)[None])
    surface = water_ab[None] * water + (1 - water_ab[None]) * land

    # 4. Atmosphere: gain, per-band jitter, haze.
    surface *= (rng.uniform(0.85, 1.15) * rng.normal(1, 0.04, size=6)).astype(np.float32)[:, None, None]
    surface += np.float32(rng.uniform(0, 0.03)) * HAZE_SHAPE[:, None, None]

    # 5. Clouds and their shadows.
    if clouds is None:
        clouds = bool(rng.random() < 0.5)
    alpha = np.zeros((h, w), np.float32)
    if clouds:
        cfield = fbm(h, w, rng, feat * 1.5)
        alpha = _soft_threshold(cfield, 1 - rng.uniform(0.02, 0.3), px=rng.uniform(2, 8))
        dy, dx = (int(s) for s in rng.integers(-40, 41, size=2))
        shadow = _shift(alpha, dy, dx)
        surface *= 1 - np.float32(rng.uniform(0.4, 0.7)) * shadow[None]
        cloud = CLOUD_SPECTRUM[:, None, None] * (0.85 + 0.15 * np.clip(cfield, -2, 2)[None] / 2)
        surface = (1 - alpha[None]) * surface + alpha[None] * cloud

    # 6. Sensor noise, scaling, labels.
    surface += 0.004 * rng.standard_normal(surface.shape, dtype=np.float32)
    bands = np.clip(np.rint(surface * SCALE), 1, 16000).astype(np.int16)
    label = np.where(alpha >= 0.5, CLOUD, np.where(water_ab >= 0.5, WATER, LAND)).astype(np.uint8)

    if nodata_edge:
        # A slanted swath edge along the left side.
        x0 = rng.uniform(0.03, 0.12) * w
        slope = rng.uniform(-0.1, 0.1)
        cols = np.arange(w)[None, :]
        missing = cols < (x0 + slope * np.arange(h)[:, None])
        bands[:, missing] = NODATA
        label[missing] = LABEL_NODATA
    return Scene(bands=bands, label=label)


def iou(pred: np.ndarray, truth: np.ndarray, cls: int, valid: np.ndarray | None = None) -> float:
    """Intersection over union of class ``cls`` (1.0 when absent from both)."""
    p, t = pred == cls, truth == cls
    if valid is not None:
        p, t = p & valid, t & valid
    union = np.count_nonzero(p | t)
    return 1.0 if union == 0 else np.count_nonzero(p & t) / union
