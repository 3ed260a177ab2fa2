"""The windows of one request, handed out while the raster is still decoding.

Why: decoding and normalising a 2048 x 2048 x 6 raster took ~1.2 s before the
first window reached the model. A ``WindowStream`` decodes on a worker
thread into the request's float16 buffer and, each time a row of windows is
complete (every strip/tile under it decoded), makes those windows available
to ``async for``: the server submits them to the engine at once, so the
model works on the top of the raster while the bottom decodes. A window row
(e.g. 11 windows of a 2048 px raster) is the unit, so the engine gets
batches, not single windows.

``len()`` is known up front (the grid comes from the header), so the server
can check its prompt limit and report progress totals before the first
window. Each prompt's ``pixel_values`` is a view of the buffer (no copies).
Errors while decoding (a corrupt strip) end the iteration with that error.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import tifffile
import torch

from poolstream_geotiff import raster
from poolstream_geotiff.tiling import TileGrid

# Decoding of every request runs on these threads (bounded: a burst of requests queues here
# rather than starting a decode thread each).
_DECODE_POOL = ThreadPoolExecutor(1, thread_name_prefix="geotiff-decode")


class _Stopped(Exception):
    """The consumer went away: stop decoding."""


class WindowStream:
    """Prompts for the windows of one raster, available row by row as it decodes."""

    def __init__(self, tif: tifffile.TiffFile, header: raster.RasterHeader, grid: TileGrid, bands: list[int],
                 gain: np.ndarray, bias: np.ndarray, nodata: float | None, state: Any):
        self._tif: tifffile.TiffFile | None = tif
        self._header = header
        self.grid = grid
        self._bands = bands
        self._gain, self._bias, self._nodata = gain, bias, nodata
        self._state = state  # RasterState: gets the nodata mask when decoding ends
        self.buffer = torch.zeros((len(bands), grid.padded_height, grid.padded_width), dtype=torch.float16)
        self._rows_ready = 0
        self._stop = False
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._future: asyncio.Future[None] | None = None
        # Windows in row-major order: row r is ready once rows [0, row_starts[r] + tile) are.
        self._row_bottoms = [min(s + grid.tile, grid.padded_height) for s in grid.row_starts]

    def __len__(self) -> int:
        return self.grid.count

    # -- decoding ----------------------------------------------------------------

    def decode(self) -> None:
        """Decode everything on this thread (the synchronous path)."""
        self._run(None)

    def start(self) -> None:
        """Start decoding on the decode pool; call from the event loop."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._future = self._loop.run_in_executor(_DECODE_POOL, self._run, self._loop)
        self._future.add_done_callback(lambda _f: self._wake.set())  # type: ignore[union-attr]

    def _run(self, loop: asyncio.AbstractEventLoop | None) -> None:
        tif = self._tif
        assert tif is not None, "decoded twice"
        final = self.grid.padded_height

        def progress(rows: int) -> None:
            if self._stop:
                raise _Stopped()
            if rows < final:  # the final signal waits for the nodata mask (below)
                self._publish(rows, loop)

        try:
            _, missing = raster.decode_normalised(
                tif, self._header, self._bands, self._gain, self._bias, self._nodata,
                self.grid.padded_height, self.grid.padded_width, progress=progress, buf=self.buffer)
        finally:
            self.close()
        self._state.nodata_mask = missing
        self._publish(final, loop)

    def _publish(self, rows: int, loop: asyncio.AbstractEventLoop | None) -> None:
        with self._lock:
            self._rows_ready = max(self._rows_ready, rows)
        if loop is not None and self._wake is not None:
            try:
                loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:  # the loop closed: nobody is waiting
                pass

    def close(self) -> None:
        """Release the file (and the request's bytes it reads from)."""
        tif, self._tif = self._tif, None
        if tif is not None:
            raster.close_tiff(tif)

    # -- windows -----------------------------------------------------------------

    def _ready_count(self) -> int:
        with self._lock:
            rows = self._rows_ready
        ncols = len(self.grid.col_starts)
        ready_rows = sum(1 for b in self._row_bottoms if b <= rows)
        return ready_rows * ncols

    def prompt(self, index: int) -> dict[str, Any]:
        y0, x0 = self.grid.window(index)
        t = self.grid.tile
        return {"prompt_token_ids": [1], "multi_modal_data": {"pixel_values": self.buffer[:, y0:y0 + t, x0:x0 + t]}}

    def prompts(self) -> list[dict[str, Any]]:
        """Every window's prompt; only after ``decode()``."""
        assert self._ready_count() == self.grid.count, "not decoded yet"
        return [self.prompt(i) for i in range(self.grid.count)]

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[dict[str, Any]]:
        if self._future is None:
            self.start()
        assert self._wake is not None and self._future is not None
        i, total = 0, self.grid.count
        try:
            while i < total:
                ready = self._ready_count()
                while i < ready:
                    yield self.prompt(i)
                    i += 1
                if i >= total:
                    break
                if self._future.done():
                    self._future.result()  # raises the decoding error
                    if self._ready_count() <= i:
                        raise RuntimeError("decoding ended before every window was ready")
                    continue
                self._wake.clear()
                if self._ready_count() > i or self._future.done():
                    continue
                await self._wake.wait()
        finally:
            if i < total:
                await self.stop()

    async def stop(self) -> None:
        """Stop decoding (the request ended early) and wait for the decode thread to let go."""
        self._stop = True
        if self._future is not None:
            try:
                await asyncio.shield(self._future)
            except (_Stopped, raster.RasterError, asyncio.CancelledError):
                pass
            except Exception:  # noqa: BLE001 - the consumer already has its own error
                pass
