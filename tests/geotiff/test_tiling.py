"""Window grid and streaming blending (no model)."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch
from poolstream_geotiff.tiling import StreamingBlender, TileGrid, ramp, window_starts


@pytest.mark.parametrize("size,tile,overlap", [(224, 224, 32), (225, 224, 32), (1000, 224, 32), (4096, 224, 0),
                                               (100, 224, 32), (513, 64, 31)])
def test_windows_cover_and_stay_inside(size, tile, overlap):
    starts = window_starts(max(size, tile), tile, overlap)
    assert starts[0] == 0 and starts[-1] == max(size, tile) - tile
    assert all(b - a <= tile - overlap for a, b in itertools.pairwise(starts))  # overlap at least `overlap`
    assert len(set(starts)) == len(starts)


def reference_blend(grid: TileGrid, logits: list[torch.Tensor], threshold=None, positive=1):
    """Naive full-size accumulation, for comparison."""
    k = logits[0].shape[0]
    acc = torch.zeros(k, grid.padded_height, grid.padded_width, dtype=torch.float64)
    wsum = torch.zeros(grid.padded_height, grid.padded_width, dtype=torch.float64)
    w = torch.from_numpy(ramp(grid.tile, grid.overlap)).double()
    w2 = w[:, None] * w[None, :]
    for i, lg in enumerate(logits):
        y0, x0 = grid.window(i)
        acc[:, y0:y0 + grid.tile, x0:x0 + grid.tile] += torch.softmax(lg.double(), 0) * w2
        wsum[y0:y0 + grid.tile, x0:x0 + grid.tile] += w2
    p = (acc / wsum)[:, :grid.height, :grid.width]
    if threshold is None:
        return p.argmax(0).numpy().astype(np.uint8), p
    others = p.clone()
    others[positive] = -1
    return torch.where(p[positive] >= threshold, positive, others.argmax(0)).numpy().astype(np.uint8), p


@pytest.mark.parametrize("threshold", [None, 0.3])
@pytest.mark.parametrize("h,w,tile,overlap", [(300, 500, 64, 16), (64, 64, 64, 0), (50, 70, 64, 8), (257, 130, 96, 40)])
def test_streaming_blend_matches_reference_in_any_order(h, w, tile, overlap, threshold):
    grid = TileGrid(h, w, tile, overlap)
    gen = torch.Generator().manual_seed(h * w + tile)
    # Smooth-ish logits so that blending matters but ties are rare.
    logits = [torch.randn(3, tile, tile, generator=gen) * 3 for _ in range(grid.count)]
    expected, probs = reference_blend(grid, logits, threshold)
    for order_seed in range(3):
        order = list(range(grid.count))
        random.Random(order_seed).shuffle(order)
        b = StreamingBlender(grid, 3, threshold)
        for i in order:
            b.add(i, logits[i])
        got = b.finish()
        # Float32 vs float64 may flip exact near-ties only.
        diff = got != expected
        if diff.any():
            top2 = probs.sort(0, descending=True).values
            assert (top2[0] - top2[1]).numpy()[diff].max() < 1e-5 or threshold is not None
        assert diff.mean() < 1e-4


def test_streaming_blend_memory_is_a_few_strips_in_fifo_order():
    grid = TileGrid(4096, 4096, 224, 32)
    b = StreamingBlender(grid, 3)
    logit = torch.zeros(3, 224, 224)
    for i in range(grid.count):
        b.add(i, logit)
    b.finish()
    full = 3 * 4 * grid.padded_height * grid.padded_width
    # Live accumulators span about two window rows, not the raster.
    assert b.peak_accumulator_bytes <= 3 * 4 * 2 * 224 * grid.padded_width
    assert b.peak_accumulator_bytes < full / 8


def test_blender_rejects_bad_outputs():
    grid = TileGrid(100, 100, 64, 8)
    b = StreamingBlender(grid, 3)
    with pytest.raises(ValueError, match="shape"):
        b.add(0, torch.zeros(2, 64, 64))
    with pytest.raises(ValueError, match="out of range"):
        b.add(grid.count, torch.zeros(3, 64, 64))
    b.add(0, torch.zeros(3, 64, 64))
    with pytest.raises(ValueError, match="twice"):
        b.add(0, torch.zeros(3, 64, 64))
    with pytest.raises(ValueError, match="no model output"):
        b.finish()
