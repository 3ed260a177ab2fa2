"""Overlapping windows over a raster, and streaming blending of their predictions.

Windows form a product grid: row starts x column starts, every window
``tile`` x ``tile`` px, neighbours sharing at least ``overlap`` px, the last
window of a row or column flush with the raster edge (so no window hangs
over; a raster smaller than one tile is zero-padded up to it).

Each window's class probabilities are weighted by ``w(y) * w(x)``, a ramp
that falls from 1 to ~1/(overlap+1) over the outer ``overlap`` px, so seams
get the average of both neighbours, biased towards the window whose centre
is closer. Because the grid is a product and the weight separable, the sum
of weights at a pixel is ``Wy(y) * Wx(x)`` (two 1-D sums): no full-size
weight map is needed.

``StreamingBlender`` takes windows in any order (completion order) and keeps
an accumulator only for horizontal strips that still miss a window: a strip
(rows between consecutive window edges) is finalised into the uint8 class
map, and its accumulator freed, as soon as its last window arrives. With
the engine's roughly-FIFO completion, live accumulators span a few window
rows, so memory is the class map (1 byte/px) plus
``num_classes * 4 bytes * width * (a few tiles)``; the worst case
(adversarial order) is a full ``num_classes x H x W`` float32 buffer.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import torch


def window_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Starts of windows of ``tile`` px covering ``size`` (>= tile) px."""
    if size <= tile:
        return [0]
    stride = tile - overlap
    n = -(-(size - tile) // stride) + 1  # ceil
    return [min(i * stride, size - tile) for i in range(n)]


def ramp(tile: int, overlap: int) -> np.ndarray:
    """1-D window weight: 1 in the middle, falling linearly over ``overlap`` px at each end."""
    if overlap <= 0:
        return np.ones(tile, np.float32)
    i = np.arange(tile, dtype=np.float32)
    return np.minimum(1.0, np.minimum(i + 1, tile - i) / (overlap + 1)).astype(np.float32)


@dataclass(frozen=True)
class TileGrid:
    """Window geometry of one request (computed from the raster header only)."""

    height: int  # raster size
    width: int
    tile: int
    overlap: int
    row_starts: tuple[int, ...] = field(init=False)
    col_starts: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "row_starts", tuple(window_starts(self.padded_height, self.tile, self.overlap)))
        object.__setattr__(self, "col_starts", tuple(window_starts(self.padded_width, self.tile, self.overlap)))

    @property
    def padded_height(self) -> int:
        return max(self.height, self.tile)

    @property
    def padded_width(self) -> int:
        return max(self.width, self.tile)

    @property
    def count(self) -> int:
        return len(self.row_starts) * len(self.col_starts)

    def window(self, index: int) -> tuple[int, int]:
        """(y0, x0) of window ``index`` (row-major)."""
        r, c = divmod(index, len(self.col_starts))
        return self.row_starts[r], self.col_starts[c]

    def weight_sums(self) -> tuple[np.ndarray, np.ndarray]:
        """Sum of 1-D window weights at each row and each column of the padded raster."""
        w = ramp(self.tile, self.overlap)
        wy = np.zeros(self.padded_height, np.float32)
        wx = np.zeros(self.padded_width, np.float32)
        for s in self.row_starts:
            wy[s:s + self.tile] += w
        for s in self.col_starts:
            wx[s:s + self.tile] += w
        return wy, wx


class StreamingBlender:
    """Blends window predictions, arriving in any order, into a class map.

    ``add(index, logits)`` with ``logits`` [num_classes, tile, tile]; then
    ``finish()`` returns the uint8 class map [height, width]. Not thread-safe:
    one blender per request, fed sequentially.

    NOTE: the arithmetic is numpy, plane by plane. torch's CPU kernels run
    on an OpenMP team; on a host whose cores are busy with the model, their
    barriers made these small elementwise ops ~10x slower, and torch's
    reductions over a short leading dimension ([K, H, W] softmax/argmax over
    K) are strided and slow as well.
    """

    def __init__(self, grid: TileGrid, num_classes: int, threshold: float | None = None,
                 positive_class: int = 1):
        self.grid = grid
        self.num_classes = num_classes
        self.threshold = threshold
        self.positive_class = positive_class
        t = grid.tile
        w = ramp(t, grid.overlap)
        self._w2d = w[:, None] * w[None, :]  # [tile, tile]
        self._wsum_y, self._wsum_x = grid.weight_sums()
        # Strips: rows between consecutive window edges.
        edges = sorted({0, grid.padded_height, *grid.row_starts, *(s + t for s in grid.row_starts)})
        self._strips = list(itertools.pairwise(edges))
        ncols = len(grid.col_starts)
        self._expected = [
            ncols * sum(1 for s in grid.row_starts if s <= a and b <= s + t) for a, b in self._strips
        ]
        self._received = [0] * len(self._strips)
        # Strips each window row touches.
        self._row_strips = [
            [k for k, (a, b) in enumerate(self._strips) if s <= a and b <= s + t] for s in grid.row_starts
        ]
        self._acc: dict[int, np.ndarray] = {}
        self._live_bytes = 0
        self._seen = np.zeros(grid.count, dtype=bool)
        self.mask = np.zeros((grid.height, grid.width), np.uint8)
        self.peak_accumulator_bytes = 0

    @property
    def complete(self) -> bool:
        return bool(self._seen.all())

    def add(self, index: int, logits: torch.Tensor | np.ndarray) -> None:
        g = self.grid
        if not 0 <= index < g.count:
            raise ValueError(f"window index {index} out of range (the request has {g.count} windows)")
        if self._seen[index]:
            raise ValueError(f"window {index} delivered twice")
        expected = (self.num_classes, g.tile, g.tile)
        if tuple(logits.shape) != expected:
            raise ValueError(f"window {index}: model output shape {tuple(logits.shape)}, expected {expected}")
        if isinstance(logits, torch.Tensor):
            logits = logits.detach().to("cpu", torch.float32).numpy()
        self._seen[index] = True
        row, _ = divmod(index, len(g.col_starts))
        y0, x0 = g.window(index)
        probs = _softmax0(np.asarray(logits, np.float32))
        probs *= self._w2d  # [K, t, t]
        for k in self._row_strips[row]:
            a, b = self._strips[k]
            acc = self._acc.get(k)
            if acc is None:
                acc = self._acc[k] = np.zeros((self.num_classes, b - a, g.padded_width), np.float32)
                self._live_bytes += acc.nbytes
                self.peak_accumulator_bytes = max(self.peak_accumulator_bytes, self._live_bytes)
            acc[:, :, x0:x0 + g.tile] += probs[:, a - y0:b - y0, :]
            self._received[k] += 1
            if self._received[k] == self._expected[k]:
                self._finalise(k)

    def _finalise(self, k: int) -> None:
        a, b = self._strips[k]
        acc = self._acc.pop(k)
        self._live_bytes -= acc.nbytes
        rows_end = min(b, self.grid.height)
        if a >= rows_end:
            return  # padding rows only
        acc = acc[:, : rows_end - a, : self.grid.width]
        if self.threshold is None:
            labels = _argmax0(acc, list(range(self.num_classes)))
        else:
            norm = self._wsum_y[a:rows_end, None] * self._wsum_x[None, : self.grid.width]
            is_pos = acc[self.positive_class] >= self.threshold * norm
            labels = _argmax0(acc, [k for k in range(self.num_classes) if k != self.positive_class])
            labels[is_pos] = self.positive_class
        self.mask[a:rows_end] = labels

    def finish(self) -> np.ndarray:
        if not self.complete:
            missing = np.flatnonzero(~self._seen)
            raise ValueError(
                f"{len(missing)} of {self.grid.count} windows have no model output (first: {missing[:5].tolist()})"
            )
        assert not self._acc, "every strip is finalised once all windows arrived"
        return self.mask


def _softmax0(x: np.ndarray) -> np.ndarray:
    """Softmax over axis 0 of [K, ...], plane by plane; returns a new array."""
    m = x[0].copy()
    for k in range(1, x.shape[0]):
        np.maximum(m, x[k], out=m)
    e = np.exp(x - m)
    total = e[0].copy()
    for k in range(1, x.shape[0]):
        total += e[k]
    e /= total
    return e


def _argmax0(x: np.ndarray, classes: list[int]) -> np.ndarray:
    """uint8 index of the largest ``x[k]`` for k in ``classes`` (the first one wins ties)."""
    best = x[classes[0]].copy()
    labels = np.full(best.shape, classes[0], np.uint8)
    for k in classes[1:]:
        better = x[k] > best
        labels[better] = k
        np.maximum(best, x[k], out=best)
    return labels
