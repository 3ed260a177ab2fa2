"""Parsing and validating requests into a per-request ``SegmentationJob``.

A job carries everything one request needs from parsing to the response:
the options, where the raster comes from, and (filled by ``pre_process``)
the raster's geometry, georeferencing and nodata mask. The plugin instance
keeps no per-request state; the server hands the job back to every hook as
``parsed_request=``.
"""

from __future__ import annotations

import base64
import binascii
import math
import os
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from google.protobuf import json_format
from google.protobuf.message import Message
from poolstream.entrypoints.protocol import IOProcessorRequest, RawPayload
from poolstream.payloads.geotiff.v1 import geotiff_segmentation_pb2 as pb

from poolstream_geotiff.raster import GeoInfo
from poolstream_geotiff.tiling import TileGrid

TIFF_MEDIA_TYPES = ("image/tiff", "image/tiff; application=geotiff", "image/geotiff")
MAX_TILE = 512
DEFAULT_OVERLAP = 32

ReplyAs = Literal["typed", "json"]
_FORMATS = {pb.OUTPUT_FORMAT_UNSPECIFIED: "geotiff", pb.OUTPUT_FORMAT_GEOTIFF: "geotiff", pb.OUTPUT_FORMAT_PNG: "png"}
_COMPRESSIONS = {
    pb.COMPRESSION_UNSPECIFIED: "lzw",
    pb.COMPRESSION_LZW: "lzw",
    pb.COMPRESSION_DEFLATE: "deflate",
    pb.COMPRESSION_NONE: None,
}
_JSON_KEYS = {f.name for f in pb.GeoTiffSegmentationRequest.DESCRIPTOR.fields} | {
    f.json_name for f in pb.GeoTiffSegmentationRequest.DESCRIPTOR.fields
}
# vLLM's Prithvi plugin request ({"data_format", "data", "image_format", "out_data_format"}).
_VLLM_KEYS = {"data_format", "data", "image_format", "out_data_format"}


@dataclass
class RasterState:
    """What pre-processing learned about the raster (needed by post-processing)."""

    width: int
    height: int
    geo: GeoInfo
    grid: TileGrid
    nodata_mask: np.ndarray | None  # bool [height, width], True where the input had no data (set once decoded)
    bands_used: list[int] = field(default_factory=list)  # raster band per model band
    input_conversion: str = ""  # what was done to the values ("" when nothing)


@dataclass
class SegmentationJob:
    """One request: options, source, and (after pre_process) the raster state."""

    geotiff: bytes | None = None
    path: str | None = None
    url: str | None = None
    bands: list[int] = field(default_factory=list)
    band_names: list[str] = field(default_factory=list)
    scale: list[float] = field(default_factory=list)
    offset: list[float] = field(default_factory=list)
    tile_size: int = 0  # 0: the model's default
    tile_overlap: int | None = None
    output_format: Literal["geotiff", "png"] = "geotiff"
    threshold: float | None = None
    compression: Literal["lzw", "deflate"] | None = "lzw"
    input_nodata: float | None = None
    reply_as: ReplyAs = "typed"
    request_id: str | None = None
    raster: RasterState | None = None

    @property
    def source_name(self) -> str:
        return "path" if self.path is not None else "url" if self.url is not None else "geotiff"


def parse(request: Any) -> SegmentationJob:
    """Turn whatever the server (or an offline caller) passes into a job; raise ValueError."""
    request_id = None
    data = request
    if isinstance(request, IOProcessorRequest):
        data, request_id = request.data, request.request_id
    elif isinstance(request, dict) and set(request) <= {"data", "model", "priority", "request_id"} and isinstance(
        request.get("data"), (dict, Message, RawPayload)
    ):
        data = request["data"]  # a whole vLLM-style body {"data": ...}
    if isinstance(data, pb.GeoTiffSegmentationRequest):
        job = _from_proto(data, "typed")
    elif isinstance(data, Message):
        raise TypeError(
            f"geotiff_segmentation takes {pb.GeoTiffSegmentationRequest.DESCRIPTOR.full_name}, "
            f"got {data.DESCRIPTOR.full_name}"
        )
    elif isinstance(data, RawPayload):
        media = data.media_type.split(";")[0].strip().lower()
        if media not in {m.split(";")[0] for m in TIFF_MEDIA_TYPES}:
            raise ValueError(
                f"raw payload media type {data.media_type!r} is not supported; send image/tiff (a GeoTIFF)"
            )
        job = SegmentationJob(geotiff=bytes(data.data))
    elif isinstance(data, (bytes, bytearray, memoryview)):
        job = SegmentationJob(geotiff=bytes(data))
    elif isinstance(data, dict):
        job = _from_dict(data)
    else:
        raise TypeError(
            "Unable to parse request: expected a GeoTiffSegmentationRequest, a JSON object or an image/tiff "
            f"raw payload, got {type(data).__name__}"
        )
    job.request_id = request_id
    if job.geotiff is not None and not job.geotiff:
        raise ValueError("geotiff is empty")
    return job


def _from_proto(msg: pb.GeoTiffSegmentationRequest, reply_as: ReplyAs) -> SegmentationJob:
    source = msg.WhichOneof("source")
    if source is None:
        raise ValueError("set one of geotiff (the file's bytes), path or url")
    threshold = msg.threshold if msg.HasField("threshold") else None
    if threshold is not None and not (0.0 < threshold < 1.0):  # also rejects NaN
        raise ValueError(f"threshold must be between 0 and 1 (exclusive), got {threshold}")
    nodata = msg.input_nodata if msg.HasField("input_nodata") else None
    if nodata is not None and math.isnan(nodata):
        nodata = None  # NaN pixels are treated as missing anyway
    if msg.output_format not in _FORMATS:
        raise ValueError(f"unknown output_format {msg.output_format}")
    if msg.compression not in _COMPRESSIONS:
        raise ValueError(f"unknown compression {msg.compression}")
    return SegmentationJob(
        geotiff=msg.geotiff if source == "geotiff" else None,
        path=msg.path if source == "path" else None,
        url=msg.url if source == "url" else None,
        bands=list(msg.bands),
        band_names=[str(n) for n in msg.band_names],
        scale=_finite_list(msg.scale, "scale", nonzero=True),
        offset=_finite_list(msg.offset, "offset"),
        tile_size=int(msg.tile_size),
        tile_overlap=int(msg.tile_overlap) if msg.HasField("tile_overlap") else None,
        output_format=_FORMATS[msg.output_format],  # type: ignore[arg-type]
        threshold=threshold,
        compression=_COMPRESSIONS[msg.compression],  # type: ignore[arg-type]
        input_nodata=nodata,
        reply_as=reply_as,
    )


def _finite_list(values: Any, name: str, nonzero: bool = False) -> list[float]:
    out = [float(v) for v in values]
    if any(not math.isfinite(v) for v in out):
        raise ValueError(f"{name} must hold finite numbers")
    if nonzero and any(v == 0 for v in out):
        raise ValueError(f"{name} must not be 0")
    if len(out) > 256:
        raise ValueError(f"{name} has {len(out)} values; at most 256 (one per band)")
    return out


def _enum_value(value: Any, prefix: str, field_name: str) -> Any:
    """Accept "png" / "PNG" / "OUTPUT_FORMAT_PNG" / 2 for enum fields."""
    if isinstance(value, str):
        v = value.strip().upper().replace("-", "_")
        return v if v.startswith(prefix) else f"{prefix}{v}"
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError(f"{field_name} must be a string or an integer, got {value!r}")


def _from_dict(data: dict[str, Any]) -> SegmentationJob:
    data = dict(data)
    raw_bytes: bytes | None = None
    if "data_format" in data or ("data" in data and not (set(data) & {"geotiff", "path", "url"})):
        data, raw_bytes = _from_vllm_dict(data)
    unknown = sorted(set(data) - _JSON_KEYS)
    if unknown:
        accepted = sorted(f.name for f in pb.GeoTiffSegmentationRequest.DESCRIPTOR.fields)
        raise ValueError(f"unknown field(s) {unknown}; accepted: {accepted}")
    geotiff = data.pop("geotiff", None)
    if isinstance(geotiff, (bytes, bytearray, memoryview)):
        raw_bytes = bytes(geotiff)
    elif isinstance(geotiff, str):
        try:
            raw_bytes = base64.b64decode(geotiff, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("geotiff must be base64-encoded GeoTIFF bytes") from None
    elif geotiff is not None:
        raise ValueError(f"geotiff must be a base64 string, got {type(geotiff).__name__}")
    for key, prefix in (("output_format", "OUTPUT_FORMAT_"), ("outputFormat", "OUTPUT_FORMAT_"),
                        ("compression", "COMPRESSION_")):
        if key in data and data[key] is not None:
            data[key] = _enum_value(data[key], prefix, key)
    for key in ("tile_size", "tileSize", "tile_overlap", "tileOverlap"):
        v = data.get(key)
        if isinstance(v, float) and v.is_integer():
            data[key] = int(v)
    if isinstance(data.get("bands"), list):
        data["bands"] = [int(b) if isinstance(b, float) and b.is_integer() else b for b in data["bands"]]
    data = {k: v for k, v in data.items() if v is not None}
    msg = pb.GeoTiffSegmentationRequest()
    try:
        json_format.ParseDict(data, msg)
    except json_format.ParseError as e:
        raise ValueError(f"invalid request: {e}") from None
    if raw_bytes is not None:
        if msg.WhichOneof("source") is not None:
            raise ValueError("set only one of geotiff, path and url")
        msg.geotiff = raw_bytes
    return _from_proto(msg, "json")


def _from_vllm_dict(data: dict[str, Any]) -> tuple[dict[str, Any], bytes | None]:
    """Map vLLM's Prithvi ImagePrompt to this plugin's fields."""
    unknown = sorted(set(data) - _VLLM_KEYS)
    if unknown:
        raise ValueError(f"unknown field(s) {unknown} in a vLLM-style request ({sorted(_VLLM_KEYS)})")
    fmt = data.get("data_format", "b64_json")
    payload = data.get("data")
    image_format = str(data.get("image_format", "tiff")).lower()
    if image_format not in ("tiff", "tif", "geotiff"):
        raise ValueError(f"image_format {image_format!r} is not supported (tiff only)")
    out_fmt = data.get("out_data_format", "b64_json")
    if out_fmt != "b64_json":
        raise ValueError(f"out_data_format {out_fmt!r} is not supported (b64_json only)")
    if fmt == "b64_json":
        return {"geotiff": payload}, None
    if fmt == "bytes":
        if not isinstance(payload, (bytes, bytearray)):
            raise ValueError("data_format 'bytes' needs bytes in data")
        return {}, bytes(payload)
    if fmt in ("path", "url"):
        if not isinstance(payload, str):
            raise ValueError(f"data_format {fmt!r} needs a string in data")
        return {fmt: payload}, None
    raise ValueError(f"unknown data_format {fmt!r} (b64_json, bytes, path or url)")


def resolve_tiling(job: SegmentationJob, patch: int, default_tile: int) -> tuple[int, int]:
    """Validated (tile_size, overlap) for a job."""
    tile = job.tile_size or default_tile
    if tile % patch or not (4 * patch <= tile <= MAX_TILE):
        raise ValueError(
            f"tile_size must be a multiple of the model's patch size {patch} between {4 * patch} and {MAX_TILE}, "
            f"got {tile}"
        )
    overlap = job.tile_overlap if job.tile_overlap is not None else min(DEFAULT_OVERLAP, tile // 4)
    if not 0 <= overlap < tile // 2:
        raise ValueError(f"tile_overlap must be >= 0 and less than half of tile_size ({tile}), got {overlap}")
    return tile, overlap


def check_local_path(path: str, allowed_root: str | None) -> str:
    """The real path of ``path`` if it is a regular file under ``allowed_root``; else ValueError."""
    if not allowed_root:
        raise ValueError(
            "path inputs are disabled: the server was started without an allowed local media path "
            "(send the GeoTIFF's bytes instead)"
        )
    root = os.path.realpath(allowed_root)
    real = os.path.realpath(os.path.join(root, path) if not os.path.isabs(path) else path)
    if os.path.commonpath([root, real]) != root:
        raise ValueError(f"path {path!r} is outside the server's allowed media directory")
    if not os.path.isfile(real):
        raise ValueError(f"path {path!r} is not a file under the server's allowed media directory")
    return real
