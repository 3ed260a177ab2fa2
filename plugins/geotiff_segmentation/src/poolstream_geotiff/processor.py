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
from poolstream_geotiff.units import BandPlan, UnitsError, band_specs_from_config, match_names, per_band, plan_units
from poolstream_geotiff.window_stream import WindowStream

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


TRIM_AFTER_PIXELS = 0
# How values are brought to the model's units (GetServerInfo plugin.details; README "Bands and units").
UNITS_RULES = [
    "band order: `bands` (raster indices) > `band_names` > the GeoTIFF's GDAL band descriptions > the raster's order",
    "units stated (request scale/offset, else the GeoTIFF's GDAL scale/offset): converted exactly",
    "nothing stated, float raster with every value in [-0.5, 1.5] and a model expecting scaled values: "
    "read as reflectance 0..1 and converted",
    "nothing stated and the darkest 0.1 % of every band >= 0.1 reflectance (e.g. Sentinel-2's +1000 offset): refused",
    "more than 1 % of a band's values outside the model's valid range after conversion: refused",
    "no order stated or described and the band means fit the model far better in another order: refused",
]


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


M_ARENA_MAX = -8  # glibc mallopt parameter
MALLOC_ARENAS = 2


def limit_malloc_arenas() -> None:
    """Cap glibc's malloc arenas for the process (unless the operator set MALLOC_ARENA_MAX).

    A request allocates tens to hundreds of MiB of short-lived buffers (decoded
    strips, window logits, strip accumulators) on several threads: the event
    loop's workers, the decode and blend threads, the engine. With glibc's
    default of up to 8 arenas per core, each thread that touches a large
    buffer can get its own arena, and memory freed there stays mapped: a
    server's RSS grew by ~20 % over its first requests and did not come back
    (measured on 1024 x 1024 requests; flat with 2 arenas). Arenas created
    before this call are kept; the plugin is built before any request.
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return
    try:
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, MALLOC_ARENAS)
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
    bands_used: list[int] = field(default_factory=list)
    input_conversion: str = ""

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
            bands_used=self.bands_used,
            input_conversion=self.input_conversion,
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
            "bands_used": list(self.bands_used),
            "input_conversion": self.input_conversion,
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
        self.band_specs = band_specs_from_config(dict(cfg), self.num_bands)
        self.band_names = [b.name for b in self.band_specs]
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
        limit_malloc_arenas()
        # Everything else is immutable after construction: the instance is shared by
        # concurrent requests.

    # -- parsing ------------------------------------------------------------

    def parse_request(self, request: Any) -> SegmentationJob:
        job = parse(request)
        if job.url is not None:
            # Whatever the server's URL settings: this plugin never fetches, so no flag would help.
            raise ValueError(
                "geotiff_segmentation does not fetch URLs: download the file and send its bytes in `geotiff`"
                + (" (or put it under the server's allowed media directory and send `path`)"
                   if self.vllm_config.allowed_local_media_path else "")
            )
        if job.path is not None:
            job.path = check_local_path(job.path, self.vllm_config.allowed_local_media_path)
        if job.bands and job.band_names:
            raise ValueError("set bands (raster indices in the model's order) or band_names, not both")
        if job.band_names and len(job.band_names) < self.num_bands:
            raise ValueError(
                f"band_names names {len(job.band_names)} bands; give one name per raster band (the model needs "
                f"{self.num_bands}: {', '.join(self.band_names)})"
            )
        if job.bands and len(job.bands) != self.num_bands:
            raise ValueError(
                f"bands selects {len(job.bands)} bands; the model needs {self.num_bands} "
                f"({', '.join(self.band_names)})"
            )
        resolve_tiling(job, self.patch_size, self.default_tile)
        return job

    # -- pre-processing -------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """What GetServerInfo shows under plugin.details: the bands and units the model expects."""
        return {
            "input_bands": [b.to_dict() for b in self.band_specs],
            "classes": self.class_names,
            "tile_size": self.default_tile,
            "patch_size": self.patch_size,
            "conversion_rules": UNITS_RULES,
        }

    def pre_process(
        self, prompt: SegmentationJob, request_id: str | None = None, **kwargs: Any
    ) -> Sequence[PromptType]:
        """Decode the whole raster, then one prompt per window (offline and fallback path)."""
        stream = self._open(prompt, request_id)
        try:
            stream.decode()
        finally:
            stream.close()
        return stream.prompts()

    async def pre_process_async(
        self, prompt: SegmentationJob, request_id: str | None = None, **kwargs: Any
    ) -> WindowStream:
        """Header, band plan and units checked here (errors before any prompt); the windows stream
        out while the rest decodes, a window row at a time, so the model starts on the first rows."""
        stream = await asyncio.to_thread(self._open, prompt, request_id)
        stream.start()
        return stream

    def _open(self, prompt: SegmentationJob, request_id: str | None) -> WindowStream:
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
            grid = TileGrid(header.height, header.width, tile, overlap)
            if grid.count > self.max_prompts:
                raise ValueError(
                    f"a {header.width} x {header.height} px raster needs {grid.count} windows of {tile} px, "
                    f"over this server's {self.max_prompts} prompts per request; use a larger tile_size "
                    f"(up to 512) or a smaller raster"
                )
            nodata = job.input_nodata if job.input_nodata is not None else header.nodata
            plan = self._plan(job, header, tif, nodata)
        except BaseException:
            raster.close_tiff(tif)
            raise
        job.raster = RasterState(
            width=header.width, height=header.height, geo=header.geo, grid=grid, nodata_mask=None,
            bands_used=plan.bands, input_conversion=plan.conversion,
        )
        job.geotiff = None  # the plugin holds the bytes through `tif` until decoded, then drops them
        # One affine per channel: units conversion then (x - mean) / std.
        a = plan.gain / self.std.astype(np.float64)
        b = (plan.bias - self.mean.astype(np.float64)) / self.std.astype(np.float64)
        logger.debug("request %s: %dx%d px, %d windows of %d px, bands %s%s", request_id, header.width,
                     header.height, grid.count, tile, plan.bands,
                     f", {plan.conversion}" if plan.conversion else "")
        return WindowStream(tif, header, grid, plan.bands, a, b, nodata, job.raster)

    def _plan(self, job: SegmentationJob, header: raster.RasterHeader, tif: Any, nodata: float | None) -> BandPlan:
        specs = self.band_specs
        if job.bands:
            bad = [b for b in job.bands if b >= header.bands]
            if bad:
                raise ValueError(f"bands {bad} do not exist: the raster has {header.bands} band(s) (0-based)")
            bands, order = list(job.bands), "bands"
        elif job.band_names:
            if len(job.band_names) != header.bands:
                raise ValueError(f"band_names names {len(job.band_names)} bands; the raster has {header.bands}")
            picked = match_names(job.band_names, specs, "band_names")
            if picked is None:
                raise UnitsError(
                    f"band_names ({', '.join(job.band_names)}) name none of the model's bands "
                    f"({', '.join(self.band_names)} or their aliases; see GetServerInfo plugin.details)",
                    "MISSING_BANDS", {"expected": ", ".join(self.band_names),
                                      "raster_band_names": ", ".join(job.band_names)})
            bands, order = picked, "band_names"
        else:
            picked = match_names(header.band_names, specs, "the raster's band descriptions") \
                if header.band_names else None
            if picked is not None:
                bands, order = picked, "descriptions"
            elif header.bands != self.num_bands:
                raise ValueError(
                    f"the raster has {header.bands} band(s); the model needs {self.num_bands} "
                    f"({', '.join(self.band_names)}): pass `band_names` (or `bands`) to select them"
                )
            else:
                bands, order = list(range(self.num_bands)), "positional"
        scale = per_band(job.scale, header.bands, "scale")
        offset = per_band(job.offset, header.bands, "offset")
        if scale is None and offset is None and header.scales is not None:
            scale, offset = header.scales, header.offsets
        sample = raster.sample_values(tif, header, bands, nodata)
        return plan_units(specs, bands, scale, offset, sample, header.dtype.kind == "f", order,
                          self.mean.astype(np.float64), self.std.astype(np.float64))

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
            bands_used=list(r.bands_used),
            input_conversion=r.input_conversion,
        )

    def output_to_response(self, plugin_output: SegmentationResult) -> IOProcessorResponse:
        data: Any = plugin_output.to_json() if plugin_output.reply_as == "json" else plugin_output.to_proto()
        return IOProcessorResponse(data=data, request_id=plugin_output.request_id)
