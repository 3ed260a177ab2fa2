"""The ``geotiff_segmentation`` IO Processor plugin.

Flow of one request (all per-request data lives in its ``SegmentationJob``):

1. ``parse_request``: typed message, JSON dict or raw image/tiff -> job,
   options validated.
2. ``pre_process``: open the GeoTIFF (bytes or an allowed server path), check
   the header (size limit, bands, truncation) before decoding, decode the
   selected bands strip by strip into one normalised float16 buffer, and
   return one prompt per window; each prompt's ``pixel_values`` is a view
   into that buffer (no per-window copies).
3. ``post_process_async``: blend window predictions in completion order into
   a class map (``tiling.StreamingBlender``), then encode a GeoTIFF with the
   input's georeferencing (or a PNG).
4. ``output_to_response``: typed response for typed and raw requests, a JSON
   object for JSON requests.
"""

from __future__ import annotations

import asyncio
import base64
import ctypes
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from poolstream.config import PoolstreamConfig
from poolstream.entrypoints.protocol import IOProcessorResponse
from poolstream.inputs import PromptType
from poolstream.outputs import PoolingRequestOutput
from poolstream.payloads.geotiff.v1 import geotiff_segmentation_pb2 as pb
from poolstream.plugins.io_processors.interface import IOProcessor

from poolstream_geotiff import raster
from poolstream_geotiff.request import (
    TIFF_MEDIA_TYPES,
    RasterState,
    SegmentationJob,
    check_local_path,
    parse,
    resolve_tiling,
)
from poolstream_geotiff.tiling import StreamingBlender, TileGrid

logger = logging.getLogger(__name__)

NODATA_VALUE = 255
DEFAULT_MAX_PIXELS = 8192 * 8192
MAX_PIXELS_ENV = "POOLSTREAM_GEOTIFF_MAX_PIXELS"
GEOTIFF_MEDIA_TYPE = "image/tiff; application=geotiff"
PNG_MEDIA_TYPE = "image/png"
PALETTE = {  # quick-look colours by class name
    "land": (46, 139, 87),
    "water": (30, 110, 230),
    "cloud": (235, 235, 235),
}


TRIM_AFTER_PIXELS = 16 << 20


def class_counts(mask: np.ndarray, rows: int = 512) -> np.ndarray:
    """Pixel count per value (256 bins), in row blocks: bincount makes an int64 copy of its input."""
    counts = np.zeros(256, np.int64)
    for y in range(0, mask.shape[0], rows):
        counts += np.bincount(mask[y:y + rows].ravel(), minlength=256)
    return counts


def release_free_memory() -> None:
    """Give memory freed by a large request back to the OS (glibc keeps it in its arenas)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


@dataclass
class SegmentationResult:
    """The plugin's output for one request."""

    data: bytes = field(repr=False)
    media_type: str
    width: int
    height: int
    crs: str
    geotransform: tuple[float, ...]
    nodata_pixel_count: int
    class_counts: list[tuple[int, str, int, float]]  # (value, name, count, fraction)
    tile_count: int
    tile_size: int
    tile_overlap: int
    reply_as: str = "typed"
    request_id: str | None = None
    nodata_value: int = NODATA_VALUE

    def to_proto(self) -> pb.GeoTiffSegmentationResponse:
        return pb.GeoTiffSegmentationResponse(
            data=self.data,
            media_type=self.media_type,
            width=self.width,
            height=self.height,
            crs=self.crs,
            geotransform=list(self.geotransform),
            nodata_value=self.nodata_value,
            nodata_pixel_count=self.nodata_pixel_count,
            classes=[
                pb.ClassSummary(value=v, name=n, pixel_count=c, fraction=f) for v, n, c, f in self.class_counts
            ],
            tile_count=self.tile_count,
            tile_size=self.tile_size,
            tile_overlap=self.tile_overlap,
        )

    def to_json(self) -> dict[str, Any]:
        # "type"/"format"/"data" also make it a valid vLLM Prithvi ImageRequestOutput.
        return {
            "type": "b64_json",
            "format": "png" if self.media_type == PNG_MEDIA_TYPE else "tiff",
            "data": base64.b64encode(self.data).decode("ascii"),
            "media_type": self.media_type,
            "width": self.width,
            "height": self.height,
            "crs": self.crs,
            "geotransform": list(self.geotransform),
            "nodata_value": self.nodata_value,
            "nodata_pixel_count": self.nodata_pixel_count,
            "classes": [
                {"value": v, "name": n, "pixel_count": c, "fraction": f} for v, n, c, f in self.class_counts
            ],
            "tile_count": self.tile_count,
            "tile_size": self.tile_size,
            "tile_overlap": self.tile_overlap,
        }


class GeoTiffSegmentationProcessor(IOProcessor[SegmentationJob, SegmentationResult]):
    """Land / water / cloud segmentation of multispectral GeoTIFFs with a Prithvi-style model."""

    input_types = (pb.GeoTiffSegmentationRequest.DESCRIPTOR.full_name,)
    # Per-request state lives in the SegmentationJob, never on self: hooks may overlap.
    concurrent_hooks = True
    output_types = (pb.GeoTiffSegmentationResponse.DESCRIPTOR.full_name,)
    input_media_types = TIFF_MEDIA_TYPES

    def __init__(self, vllm_config: PoolstreamConfig):
        super().__init__(vllm_config)
        cfg = vllm_config.model_config.hf_config
        missing = [k for k in ("num_bands", "patch_size", "mean", "std", "num_classes") if k not in cfg]
        if missing:
            raise ValueError(
                f"geotiff_segmentation needs a segmentation model whose config.json has {missing} "
                f"(model: {vllm_config.model_config.model})"
            )
        self.num_bands = int(cfg["num_bands"])
        self.patch_size = int(cfg["patch_size"])
        self.default_tile = int(cfg.get("tile_size", 224))
        self.num_classes = int(cfg["num_classes"])
        self.mean = np.asarray(cfg["mean"], np.float32)
        self.std = np.asarray(cfg["std"], np.float32)
        if self.mean.shape != (self.num_bands,) or self.std.shape != (self.num_bands,) or (self.std <= 0).any():
            raise ValueError("config.json mean/std must have one value per band (std > 0)")
        self.class_names = list(cfg.get("class_names") or [f"class_{i}" for i in range(self.num_classes)])
        self.band_names = list(cfg.get("band_names") or [f"band_{i}" for i in range(self.num_bands)])
        self.positive_class = int(cfg.get("positive_class", 1))
        env = os.environ.get(MAX_PIXELS_ENV)
        self.max_pixels = int(env) if env else int(cfg.get("max_raster_pixels", DEFAULT_MAX_PIXELS))
        self.max_prompts = int(vllm_config.limits.max_prompts_per_request)
        # Blending of every request runs on this one thread (~1 ms per 224 px window, far
        # below the model's cost, so it is never the bottleneck). One thread means one
        # glibc malloc arena for the strip accumulators: hopping between asyncio's
        # worker threads spread them over several arenas and inflated RSS by >1 GiB
        # on a 4096 x 4096 raster. Not per-request state: it holds no request data.
        self._blend_thread = ThreadPoolExecutor(1, thread_name_prefix="geotiff-blend")
        # Everything else is immutable after construction: the instance is shared by
        # concurrent requests.

    # -- parsing ------------------------------------------------------------

    def parse_request(self, request: Any) -> SegmentationJob:
        job = parse(request)
        if job.url is not None:
            if not self.vllm_config.allow_url_fetch:
                raise ValueError("URL inputs are disabled on this server (allow_url_fetch is off); send the bytes")
            raise ValueError("geotiff_segmentation does not fetch URLs; download the file and send its bytes")
        if job.path is not None:
            job.path = check_local_path(job.path, self.vllm_config.allowed_local_media_path)
        if job.bands and len(job.bands) != self.num_bands:
            raise ValueError(
                f"bands selects {len(job.bands)} bands; the model needs {self.num_bands} "
                f"({', '.join(self.band_names)})"
            )
        resolve_tiling(job, self.patch_size, self.default_tile)
        return job

    # -- pre-processing -------------------------------------------------------

    def pre_process(
        self, prompt: SegmentationJob, request_id: str | None = None, **kwargs: Any
    ) -> Sequence[PromptType]:
        job = prompt
        if not isinstance(job, SegmentationJob):
            job = self.parse_request(job)
        tile, overlap = resolve_tiling(job, self.patch_size, self.default_tile)
        source: bytes | str = job.path if job.path is not None else job.geotiff  # type: ignore[assignment]
        if source is None:
            raise ValueError("the request has no raster")
        tif, size = raster.open_tiff(source)
        try:
            header = raster.read_header(tif, size, self.max_pixels)
            bands = self._select_bands(job, header)
            grid = TileGrid(header.height, header.width, tile, overlap)
            if grid.count > self.max_prompts:
                raise ValueError(
                    f"a {header.width} x {header.height} px raster needs {grid.count} windows of {tile} px, "
                    f"over this server's {self.max_prompts} prompts per request; use a larger tile_size "
                    f"(up to 512) or a smaller raster"
                )
            nodata = job.input_nodata if job.input_nodata is not None else header.nodata
            buf, missing = raster.decode_normalised(
                tif, header, bands, self.mean, self.std, nodata, grid.padded_height, grid.padded_width
            )
        finally:
            tif.close()
        job.raster = RasterState(
            width=header.width, height=header.height, geo=header.geo, grid=grid, nodata_mask=missing
        )
        job.geotiff = None  # the bytes are no longer needed by the plugin
        # One prompt per window; each tensor is a view of `buf` (no copies).
        prompts: list[PromptType] = []
        for i in range(grid.count):
            y0, x0 = grid.window(i)
            prompts.append({
                "prompt_token_ids": [1],
                "multi_modal_data": {"pixel_values": buf[:, y0:y0 + tile, x0:x0 + tile]},
            })
        logger.debug("request %s: %dx%d px, %d windows of %d px", request_id, header.width, header.height,
                     grid.count, tile)
        return prompts

    async def pre_process_async(
        self, prompt: SegmentationJob, request_id: str | None = None, **kwargs: Any
    ) -> Sequence[PromptType]:
        # Decoding is CPU work (numpy and codecs release the GIL): keep it off the event loop.
        return await asyncio.to_thread(self.pre_process, prompt, request_id, **kwargs)

    def _select_bands(self, job: SegmentationJob, header: raster.RasterHeader) -> list[int]:
        if job.bands:
            bad = [b for b in job.bands if b >= header.bands]
            if bad:
                raise ValueError(f"bands {bad} do not exist: the raster has {header.bands} band(s) (0-based)")
            return list(job.bands)
        if header.bands != self.num_bands:
            raise ValueError(
                f"the raster has {header.bands} band(s); the model needs {self.num_bands} "
                f"({', '.join(self.band_names)}): pass `bands` to select them"
            )
        return list(range(self.num_bands))

    # -- post-processing ------------------------------------------------------

    def _job(self, kwargs: dict[str, Any]) -> SegmentationJob:
        job = kwargs.get("parsed_request")
        if not isinstance(job, SegmentationJob) or job.raster is None:
            raise ValueError(
                "geotiff_segmentation post-processing needs parsed_request=<the SegmentationJob that pre_process "
                "filled>"
            )
        return job

    def _blender(self, job: SegmentationJob) -> StreamingBlender:
        assert job.raster is not None
        return StreamingBlender(job.raster.grid, self.num_classes, job.threshold, self.positive_class)

    @staticmethod
    def _logits(output: PoolingRequestOutput) -> torch.Tensor:
        data = output.outputs.data if hasattr(output.outputs, "data") else output.outputs
        if not isinstance(data, torch.Tensor):
            raise TypeError(f"expected a tensor model output, got {type(data).__name__}")
        return data

    def post_process(
        self, model_output: Sequence[PoolingRequestOutput], request_id: str | None = None, **kwargs: Any
    ) -> SegmentationResult:
        job = self._job(kwargs)
        blender = self._blender(job)
        for i, out in enumerate(model_output):
            blender.add(i, self._logits(out))
        return self._finish(job, blender, request_id)

    async def post_process_async(
        self,
        model_output: AsyncGenerator[tuple[int, PoolingRequestOutput], None]
        | AsyncIterator[tuple[int, PoolingRequestOutput]],
        request_id: str | None = None,
        **kwargs: Any,
    ) -> SegmentationResult:
        job = self._job(kwargs)
        blender = self._blender(job)
        loop = asyncio.get_running_loop()
        # Completion order: each window is folded in as it arrives and dropped.
        async for index, out in model_output:
            await loop.run_in_executor(self._blend_thread, blender.add, index, self._logits(out))
        return await loop.run_in_executor(self._blend_thread, self._finish, job, blender, request_id)

    def _finish(self, job: SegmentationJob, blender: StreamingBlender, request_id: str | None) -> SegmentationResult:
        assert job.raster is not None
        r = job.raster
        mask = blender.finish()
        nodata_count = 0
        if r.nodata_mask is not None:
            mask[r.nodata_mask] = NODATA_VALUE
            nodata_count = int(np.count_nonzero(r.nodata_mask))
        counts = class_counts(mask)
        valid = mask.size - nodata_count
        classes = [
            (v, self.class_names[v] if v < len(self.class_names) else f"class_{v}", int(counts[v]),
             float(counts[v]) / valid if valid else 0.0)
            for v in range(self.num_classes)
        ]
        if job.output_format == "png":
            palette = [PALETTE.get(n, (128, 128, 128)) for n in self.class_names]
            data, media = raster.encode_png(mask, palette, transparent=NODATA_VALUE), PNG_MEDIA_TYPE
        else:
            data, media = raster.encode_geotiff(mask, r.geo, job.compression, NODATA_VALUE), GEOTIFF_MEDIA_TYPE
        logger.debug("request %s: accumulator peak %.1f MiB", request_id, blender.peak_accumulator_bytes / 2**20)
        if mask.size >= TRIM_AFTER_PIXELS:
            release_free_memory()
        return SegmentationResult(
            data=data,
            media_type=media,
            width=r.width,
            height=r.height,
            crs=r.geo.crs,
            geotransform=r.geo.geotransform,
            nodata_pixel_count=nodata_count,
            class_counts=classes,
            tile_count=r.grid.count,
            tile_size=r.grid.tile,
            tile_overlap=r.grid.overlap,
            reply_as=job.reply_as,
            request_id=request_id or job.request_id,
        )

    def output_to_response(self, plugin_output: SegmentationResult) -> IOProcessorResponse:
        data: Any = plugin_output.to_json() if plugin_output.reply_as == "json" else plugin_output.to_proto()
        return IOProcessorResponse(data=data, request_id=plugin_output.request_id)
