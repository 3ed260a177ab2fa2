"""GeoTIFF reading (validated, streaming) and class-map writing (GeoTIFF, PNG).

Reading uses tifffile (pure Python + numpy; imagecodecs for LZW and other
codecs). The header is parsed and checked before any pixel is decoded: size
against the pixel limit, band count, sample type, and that every strip or
tile lies inside the file (a truncated file is refused up front). Pixels are
then decoded one strip / tile at a time and written, normalised, straight
into the float16 model-input buffer, so the native-type raster is never held
in memory as a whole.

Georeferencing is kept as the raw GeoTIFF tags (ModelPixelScale,
ModelTiepoint, ModelTransformation, GeoKeyDirectory, GeoDoubleParams,
GeoAsciiParams), which are copied verbatim to the output: the output has
exactly the input's CRS and transform, whatever the CRS is. The CRS string
and GDAL geotransform reported in the response are derived from them.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tifffile
import torch

from poolstream_geotiff.crs import crs_from_geokeys

# TIFF tag codes.
TAG_MODEL_PIXEL_SCALE = 33550
TAG_MODEL_TIEPOINT = 33922
TAG_MODEL_TRANSFORMATION = 34264
TAG_GEO_KEY_DIRECTORY = 34735
TAG_GEO_DOUBLE_PARAMS = 34736
TAG_GEO_ASCII_PARAMS = 34737
TAG_GDAL_METADATA = 42112
TAG_GDAL_NODATA = 42113
MAX_GDAL_METADATA_CHARS = 1 << 20
GEO_TAGS = (
    TAG_MODEL_PIXEL_SCALE,
    TAG_MODEL_TIEPOINT,
    TAG_MODEL_TRANSFORMATION,
    TAG_GEO_KEY_DIRECTORY,
    TAG_GEO_DOUBLE_PARAMS,
    TAG_GEO_ASCII_PARAMS,
)
# TIFF field types used when writing tags back.
_TIFF_TYPE = {
    TAG_MODEL_PIXEL_SCALE: 12,  # DOUBLE
    TAG_MODEL_TIEPOINT: 12,
    TAG_MODEL_TRANSFORMATION: 12,
    TAG_GEO_KEY_DIRECTORY: 3,  # SHORT
    TAG_GEO_DOUBLE_PARAMS: 12,
    TAG_GEO_ASCII_PARAMS: 2,  # ASCII
}
# GeoKey ids.
GT_MODEL_TYPE = 1024
GT_RASTER_TYPE = 1025
GT_CITATION = 1026
GEOGRAPHIC_TYPE = 2048
GEOG_CITATION = 2049
PROJECTED_CS_TYPE = 3072
PCS_CITATION = 3073
USER_DEFINED = 32767
RASTER_PIXEL_IS_POINT = 2

SEGMENT_BUFFER_BYTES = 8 << 20
DECODE_WORKERS = 1  # tifffile codec threads: 1 = decode on the calling thread (see window_stream)
SAMPLE_SEGMENTS = 24  # strips/tiles decoded for units detection
SAMPLE_PIXELS = 1 << 18
MAX_SEGMENT_BYTES = 512 << 20
MAX_BANDS = 256
F16_MAX = 65504.0
SUPPORTED_DTYPES = {np.dtype(t) for t in ("u1", "i1", "u2", "i2", "u4", "i4", "f4", "f8")}


@dataclass
class GeoInfo:
    """Georeferencing of a raster, as raw tags plus derived CRS and transform."""

    tags: dict[int, Any] = field(default_factory=dict)  # tag code -> value (tuple or str)
    crs: str = ""
    geotransform: tuple[float, ...] = ()


@dataclass
class RasterHeader:
    """What the TIFF header says, checked before decoding."""

    width: int
    height: int
    bands: int
    dtype: np.dtype
    planar_separate: bool
    geo: GeoInfo
    nodata: float | None  # GDAL_NODATA tag
    # From GDAL_METADATA (what GDAL writes for band descriptions and scale/offset); per band.
    band_names: list[str] = field(default_factory=list)  # "" where a band has no description
    scales: list[float] | None = None
    offsets: list[float] | None = None


class RasterError(ValueError):
    """A raster the plugin cannot use; the message says why."""


def open_tiff(source: bytes | str) -> tuple[tifffile.TiffFile, int]:
    """Open a TIFF from bytes or a path; returns it with the file size. Parses headers only."""
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            size = len(source)
            if size < 8:
                raise RasterError(f"not a TIFF: {size} bytes is too short for a TIFF header")
            fh: Any = io.BytesIO(source)
        else:
            size = os.stat(source).st_size
            fh = source
        tif = tifffile.TiffFile(fh)
    except RasterError:
        raise
    except OSError as e:
        raise RasterError(f"cannot read the file: {e.strerror or type(e).__name__}") from None
    except (tifffile.TiffFileError, ValueError, struct.error, EOFError) as e:
        # Not the parser's message: it quotes the file's first bytes, and the file may be any
        # server file under --allowed-local-media-path.
        raise RasterError(f"not a readable TIFF (no valid TIFF header or structure: {type(e).__name__})") from None
    # Closing a TiffFile leaves a BytesIO it did not open alone, and tifffile's objects form
    # reference cycles: without an explicit close the request's bytes would live until the
    # next cyclic garbage collection (see close_tiff).
    tif._poolstream_buffer = fh if isinstance(fh, io.BytesIO) else None  # type: ignore[attr-defined]
    if not len(tif.pages):
        close_tiff(tif)
        raise RasterError("the TIFF has no image")
    return tif, size


def close_tiff(tif: tifffile.TiffFile) -> None:
    """Close ``tif`` and release the bytes it was reading (now, not at the next GC cycle)."""
    tif.close()
    buffer = getattr(tif, "_poolstream_buffer", None)
    if buffer is not None:
        buffer.close()
        tif._poolstream_buffer = None  # type: ignore[attr-defined]


def read_header(tif: tifffile.TiffFile, file_size: int, max_pixels: int) -> RasterHeader:
    """Validate the first image's header; raise RasterError with the reason."""
    try:
        page = tif.pages.first
    except Exception as e:  # noqa: BLE001 - tifffile raises many types for broken IFDs
        raise RasterError(f"cannot read the first TIFF image: {e}") from None
    if not isinstance(page, tifffile.TiffPage):
        raise RasterError("the first TIFF image is not a regular image")
    width, height = int(page.imagewidth), int(page.imagelength)
    bands = int(page.samplesperpixel)
    if width < 1 or height < 1:
        raise RasterError(f"the raster is empty ({width} x {height} px)")
    if bands < 1:
        raise RasterError("the raster has zero bands")
    if bands > MAX_BANDS:
        raise RasterError(f"the raster has {bands} bands; at most {MAX_BANDS} are supported")
    if page.imagedepth > 1:
        raise RasterError("volumetric TIFFs are not supported")
    if width * height > max_pixels:
        raise RasterError(
            f"the raster is {width} x {height} = {width * height} px, over this server's limit of "
            f"{max_pixels} px; split it or send a smaller extent"
        )
    dtype = page.dtype
    if dtype is None or np.dtype(dtype) not in SUPPORTED_DTYPES:
        raise RasterError(
            f"unsupported sample type ({page.bitspersample}-bit, sampleformat {int(page.sampleformat)}); "
            "use 8/16/32-bit integers or 32/64-bit floats"
        )
    if page.compression != 1 and page.compression not in tifffile.TIFF.DECOMPRESSORS:
        raise RasterError(f"unsupported TIFF compression {page.compression!r}")
    segment_bytes = int(np.prod(page.chunks)) * np.dtype(dtype).itemsize
    if segment_bytes > MAX_SEGMENT_BYTES:
        raise RasterError(
            f"the TIFF's strips/tiles are {segment_bytes >> 20} MiB each when decoded, over the "
            f"{MAX_SEGMENT_BYTES >> 20} MiB this server decodes at once; rewrite it tiled or with smaller strips"
        )
    offsets, counts = page.dataoffsets, page.databytecounts
    if len(offsets) != len(counts) or not len(offsets):
        raise RasterError("the TIFF has no (or inconsistent) strip/tile offsets")
    end = max((o + c for o, c in zip(offsets, counts) if c), default=0)
    if end > file_size:
        raise RasterError(
            f"the TIFF is truncated: its pixel data ends at byte {end}, the file has {file_size} bytes"
        )
    if any(c == 0 for c in counts) and page.compression != 1:
        raise RasterError("the TIFF has empty compressed strips/tiles")
    return RasterHeader(
        width=width,
        height=height,
        bands=bands,
        dtype=np.dtype(dtype),
        planar_separate=bands > 1 and int(page.planarconfig) == 2,
        geo=read_geo(page),
        nodata=_nodata_tag(page),
        **_gdal_band_metadata(page, bands),
    )


def _gdal_band_metadata(page: tifffile.TiffPage, bands: int) -> dict[str, Any]:
    """Band descriptions and scale/offset from the GDAL_METADATA tag's XML.

    GDAL writes ``<Item name="DESCRIPTION" sample="0" role="description">B02</Item>``,
    ``role="scale"`` and ``role="offset"`` items (sample: zero-based band).
    Anything malformed is ignored: this metadata is a hint, never required.
    """
    tag = page.tags.get(TAG_GDAL_METADATA)
    if tag is None:
        return {}
    text = tag.value.decode("utf-8", "replace") if isinstance(tag.value, bytes) else str(tag.value)
    if len(text) > MAX_GDAL_METADATA_CHARS or "<!DOCTYPE" in text or "<!ENTITY" in text:
        return {}  # no entity expansion, no huge documents
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(text.strip().strip("\x00"))
    except ET.ParseError:
        return {}
    names = [""] * bands
    scales: list[float | None] = [None] * bands
    offsets: list[float | None] = [None] * bands
    for item in root.iter("Item"):
        role = (item.get("role") or "").lower()
        sample = item.get("sample")
        if sample is None or not sample.isdigit() or int(sample) >= bands:
            continue
        b, value = int(sample), (item.text or "").strip()
        try:
            if role == "description":
                names[b] = value[:256]
            elif role == "scale":
                scales[b] = float(value)
            elif role == "offset":
                offsets[b] = float(value)
        except ValueError:
            continue
    out: dict[str, Any] = {}
    if any(names):
        out["band_names"] = names
    if any(v is not None for v in scales) or any(v is not None for v in offsets):
        out["scales"] = [1.0 if v is None else v for v in scales]
        out["offsets"] = [0.0 if v is None else v for v in offsets]
    return out


def _nodata_tag(page: tifffile.TiffPage) -> float | None:
    tag = page.tags.get(TAG_GDAL_NODATA)
    if tag is None:
        return None
    text = tag.value.decode("ascii", "replace") if isinstance(tag.value, bytes) else str(tag.value)
    try:
        return float(text.strip().strip("\x00"))
    except ValueError:
        return None


def read_geo(page: tifffile.TiffPage) -> GeoInfo:
    tags: dict[int, Any] = {}
    for code in GEO_TAGS:
        tag = page.tags.get(code)
        if tag is None:
            continue
        value = tag.value
        if code == TAG_GEO_ASCII_PARAMS:
            value = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
        else:
            value = tuple(np.asarray(value).ravel().tolist())
        tags[code] = value
    geo = GeoInfo(tags=tags)
    keys = _geo_keys(tags)
    geo.crs = _crs_string(keys)
    geo.geotransform = _geotransform(tags, keys)
    return geo


def _geo_keys(tags: dict[int, Any]) -> dict[int, Any]:
    """Decode GeoKeyDirectory entries into {key id: value}."""
    d = tags.get(TAG_GEO_KEY_DIRECTORY)
    if not d or len(d) < 4:
        return {}
    keys: dict[int, Any] = {}
    doubles = tags.get(TAG_GEO_DOUBLE_PARAMS, ())
    ascii_params = tags.get(TAG_GEO_ASCII_PARAMS, "")
    for i in range(int(d[3])):
        entry = d[4 + 4 * i: 8 + 4 * i]
        if len(entry) < 4:
            break
        key, loc, count, value = (int(v) for v in entry)
        if loc == 0:
            keys[key] = value
        elif loc == TAG_GEO_ASCII_PARAMS:
            keys[key] = ascii_params[value: value + count].rstrip("|\x00")
        elif loc == TAG_GEO_DOUBLE_PARAMS:
            keys[key] = tuple(doubles[value: value + count])
    return keys


def _crs_string(keys: dict[int, Any]) -> str:
    citation = ""
    for key in (PCS_CITATION, GT_CITATION, GEOG_CITATION):
        cit = keys.get(key)
        if isinstance(cit, str) and cit:
            citation = cit
            break
    return crs_from_geokeys(keys, citation)


def _geotransform(tags: dict[int, Any], keys: dict[int, Any]) -> tuple[float, ...]:
    """GDAL geotransform from ModelTransformation or tiepoint + pixel scale (GDAL's rules)."""
    matrix = tags.get(TAG_MODEL_TRANSFORMATION)
    if matrix and len(matrix) >= 16:
        m = [float(v) for v in matrix]
        gt = [m[3], m[0], m[1], m[7], m[4], m[5]]
    else:
        tie, scale = tags.get(TAG_MODEL_TIEPOINT), tags.get(TAG_MODEL_PIXEL_SCALE)
        if not tie or not scale or len(tie) < 6 or len(scale) < 2:
            return ()
        i, j, _, x, y, _ = (float(v) for v in tie[:6])
        sx, sy = float(scale[0]), float(scale[1])
        gt = [x - i * sx, sx, 0.0, y + j * sy, 0.0, -sy]
    if keys.get(GT_RASTER_TYPE) == RASTER_PIXEL_IS_POINT:
        # GDAL reports the corner of the first pixel: shift by half a pixel.
        gt[0] -= 0.5 * gt[1] + 0.5 * gt[2]
        gt[3] -= 0.5 * gt[4] + 0.5 * gt[5]
    return tuple(gt)


def _bad_pixels(plane: np.ndarray, nodata: float | None, is_float: bool) -> np.ndarray | None:
    bad = None
    if nodata is not None:
        bad = plane == nodata
    if is_float:
        nonfinite = ~np.isfinite(plane)
        bad = nonfinite if bad is None else (bad | nonfinite)
    return bad


def sample_values(tif: tifffile.TiffFile, header: RasterHeader, bands: list[int], nodata: float | None,
                  budget: int = SAMPLE_PIXELS) -> np.ndarray:
    """Valid values of the selected bands from segments spread over the raster: float64 [len(bands), n].

    Decodes at most ``SAMPLE_SEGMENTS`` strips/tiles (evenly spaced through the
    file) and keeps at most ``budget`` pixels (a pixel is valid when no selected
    band is nodata or non-finite). What units detection looks at (units.py).
    """
    page = tif.pages.first
    n_seg = len(page.dataoffsets)
    per_band_segments = n_seg // header.bands if header.planar_separate else n_seg
    picks = np.unique(np.linspace(0, per_band_segments - 1, min(SAMPLE_SEGMENTS, per_band_segments)).astype(int))
    decode = page.decode
    fh = tif.filehandle
    is_float = header.dtype.kind == "f"
    chunks: list[np.ndarray] = []
    try:
        for i in picks:
            planes: dict[int, np.ndarray] = {}
            for b in sorted(set(bands)):
                # Planar-separate files keep each band's segments in their own run.
                seg_index = int(i) + (b * per_band_segments if header.planar_separate else 0)
                if header.planar_separate or not planes:
                    offset, count = page.dataoffsets[seg_index], page.databytecounts[seg_index]
                    fh.seek(offset)
                    data = fh.read(count) if count else None
                    seg, index, _ = decode(data, seg_index, jpegtables=page.jpegtables)
                    if seg is None:
                        break
                    y0, x0 = int(index[2]), int(index[3])
                    seg = seg[0][: max(0, header.height - y0), : max(0, header.width - x0)]
                    if header.planar_separate:
                        planes[b] = seg[..., 0]
                    else:
                        planes = {bb: seg[..., bb] for bb in set(bands)}
            if len(planes) < len(set(bands)) or not next(iter(planes.values())).size:
                continue
            stack = np.stack([planes[b].ravel() for b in bands]).astype(np.float64)
            ok = np.ones(stack.shape[1], bool)
            for row in stack:
                bad = _bad_pixels(row, nodata, is_float)
                if bad is not None:
                    ok &= ~bad
            chunks.append(stack[:, ok])
    except RasterError:
        raise
    except Exception as e:  # noqa: BLE001 - codec errors come in many types
        raise RasterError(f"cannot decode the raster's pixels: {e}") from None
    if not chunks:
        return np.zeros((len(bands), 0))
    out = np.concatenate(chunks, axis=1)
    if out.shape[1] > budget:
        out = out[:, np.linspace(0, out.shape[1] - 1, budget).astype(np.int64)]
    return out


def decode_normalised(
    tif: tifffile.TiffFile,
    header: RasterHeader,
    bands: list[int],
    gain: np.ndarray,
    bias: np.ndarray,
    nodata: float | None,
    out_height: int,
    out_width: int,
    progress: Callable[[int], None] | None = None,
    buf: torch.Tensor | None = None,
) -> tuple[torch.Tensor, np.ndarray | None]:
    """Decode the selected bands into a zero-padded float16 [len(bands), out_height, out_width] buffer.

    Channel ``c`` is ``x * gain[c] + bias[c]`` (the units conversion and
    ``(x - mean) / std`` folded into one affine by the caller); missing pixels
    (``nodata`` in any selected band, or non-finite) are set to 0 (the band
    mean) and returned as a bool [height, width] mask (None when there are
    none). ``progress(rows)`` is called, from this thread, whenever the first
    ``rows`` rows are final in the buffer (so windows above can be used while
    the rest decodes); ``buf`` may be passed in pre-allocated.
    """
    page = tif.pages.first
    h, w = header.height, header.width
    if buf is None:
        buf = torch.zeros((len(bands), out_height, out_width), dtype=torch.float16)
    view = buf.numpy()
    # Input band -> output channels it feeds (a band may be selected twice).
    feeds: dict[int, list[int]] = {}
    for c, b in enumerate(bands):
        feeds.setdefault(b, []).append(c)
    missing: np.ndarray | None = None
    is_float = header.dtype.kind == "f"
    gain32 = np.asarray(gain, np.float32)
    bias32 = np.asarray(bias, np.float32)
    # Rows are final when every segment covering them is done: count segments per row start.
    per_row: dict[int, int] = {}
    for y0 in _segment_row_starts(page, header):
        per_row[y0] = per_row.get(y0, 0) + 1
    row_starts = sorted(per_row)
    next_row = 0  # index into row_starts of the first incomplete segment row
    done: dict[int, int] = {}
    try:
        # Bounded reads: tifffile would otherwise read up to 256 MiB of file at once. Codecs
        # run on tifffile's worker threads (they release the GIL).
        for segment, index, _shape in page.segments(buffersize=SEGMENT_BUFFER_BYTES, maxworkers=DECODE_WORKERS):
            # index: (separate sample, depth, y, x, contig sample); segment [1, rows, cols, samples]
            y0, x0 = int(index[2]), int(index[3])
            done[y0] = done.get(y0, 0) + 1
            if y0 < h and x0 < w and segment is not None:  # None: an empty segment (zeros)
                seg = segment[0]
                rows, cols = min(seg.shape[0], h - y0), min(seg.shape[1], w - x0)
                seg = seg[:rows, :cols]
                first_sample = int(index[0]) if header.planar_separate else 0
                seg_bad: np.ndarray | None = None
                for s in range(seg.shape[-1]):
                    outs = feeds.get(first_sample + s)
                    if not outs:
                        continue
                    plane = seg[..., s]
                    bad = _bad_pixels(plane, nodata, is_float)
                    if bad is not None and bad.any():
                        seg_bad = bad if seg_bad is None else (seg_bad | bad)
                    x = plane.astype(np.float32)
                    for c in outs:
                        z = x * gain32[c]
                        z += bias32[c]
                        # Values far outside the band statistics would overflow float16.
                        np.clip(z, -F16_MAX, F16_MAX, out=z)
                        view[c, y0:y0 + rows, x0:x0 + cols] = z
                if seg_bad is not None:
                    if missing is None:
                        missing = np.zeros((h, w), bool)
                    missing[y0:y0 + rows, x0:x0 + cols] |= seg_bad
                    # Missing pixels -> the band mean (0), in every channel (NaN inputs became NaN).
                    view[:, y0:y0 + rows, x0:x0 + cols][:, missing[y0:y0 + rows, x0:x0 + cols]] = 0.0
            if progress is not None and not header.planar_separate:
                advanced = False
                while next_row < len(row_starts) and done.get(row_starts[next_row], 0) >= per_row[row_starts[next_row]]:
                    next_row += 1
                    advanced = True
                if advanced:
                    progress(row_starts[next_row] if next_row < len(row_starts) else out_height)
    except RasterError:
        raise
    except Exception as e:  # noqa: BLE001 - codec errors come in many types
        raise RasterError(f"cannot decode the raster's pixels: {e}") from None
    if missing is not None and header.planar_separate:
        # A band decoded later may have marked pixels missing after others were written.
        for c in range(len(bands)):
            view[c, :h, :w][missing] = 0.0
    if progress is not None:
        progress(out_height)
    return buf, missing


def _segment_row_starts(page: tifffile.TiffPage, header: RasterHeader) -> list[int]:
    """The first image row of every segment, in file order (strips or tiles)."""
    n = len(page.dataoffsets)
    if page.is_tiled:
        tile_h, tile_w = int(page.tilelength), int(page.tilewidth)
        across = -(-header.width // tile_w)
        down = -(-header.height // tile_h)
        per_band = across * down
        return [((i % per_band) // across) * tile_h for i in range(n)]
    rps = int(page.rowsperstrip) if page.rowsperstrip else header.height
    per_band = max(1, -(-header.height // rps))
    return [(i % per_band) * rps for i in range(n)]


# -- writing ---------------------------------------------------------------

def encode_geotiff(mask: np.ndarray, geo: GeoInfo, compression: str | None, nodata_value: int) -> bytes:
    """uint8 class map -> GeoTIFF bytes carrying ``geo``'s tags and a GDAL_NODATA tag.

    ``compression``: "lzw", "deflate" or None.
    """
    extratags: list[tuple[int, int, int, Any, bool]] = []
    for code, value in sorted(geo.tags.items()):
        typ = _TIFF_TYPE[code]
        if typ == 2:
            extratags.append((code, 2, 0, value, True))
        else:
            extratags.append((code, typ, len(value), value, True))
    extratags.append((TAG_GDAL_NODATA, 2, 0, str(int(nodata_value)), True))
    h, w = mask.shape
    out = io.BytesIO()
    tifffile.imwrite(
        out,
        mask,
        photometric="minisblack",
        compression={"lzw": "lzw", "deflate": "zlib", None: None}[compression],
        rowsperstrip=max(1, min(h, (64 * 1024) // max(1, w))),
        extratags=extratags,
        metadata=None,
        software="poolstream geotiff_segmentation",
        bigtiff=mask.nbytes > 3_900_000_000,
    )
    data = out.getvalue()
    out.close()  # tifffile's writer objects reference `out` in cycles: free its buffer now
    return data


def encode_png(mask: np.ndarray, palette: list[tuple[int, int, int]], transparent: int | None = None) -> bytes:
    """uint8 class map -> 8-bit palette PNG (value v drawn in palette[v])."""
    h, w = mask.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    pal = list(palette) + [(0, 0, 0)] * (256 - len(palette))
    raw = np.zeros((h, w + 1), np.uint8)  # filter byte 0 (None) per row
    raw[:, 1:] = mask
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0))
    png += chunk(b"PLTE", bytes(v for rgb in pal for v in rgb))
    if transparent is not None:
        alpha = bytearray([255] * 256)
        alpha[transparent] = 0
        png += chunk(b"tRNS", bytes(alpha))
    png += chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + chunk(b"IEND", b"")
    return png


def geotiff_georef_tags(epsg: int, origin: tuple[float, float], pixel_size: float,
                        citation: str = "") -> dict[int, Any]:
    """GeoTIFF tags for a north-up raster in a projected EPSG CRS (for examples and tests)."""
    x0, y0 = origin
    ascii_params = (citation + "|") if citation else ""
    keys = [1, 1, 0, 0]
    entries = [(GT_MODEL_TYPE, 0, 1, 1), (GT_RASTER_TYPE, 0, 1, 1)]
    if citation:
        entries.append((GT_CITATION, TAG_GEO_ASCII_PARAMS, len(ascii_params), 0))
    entries += [(PROJECTED_CS_TYPE, 0, 1, epsg), (3076, 0, 1, 9001)]  # ProjLinearUnits: metre
    keys[3] = len(entries)
    for e in entries:
        keys.extend(e)
    tags: dict[int, Any] = {
        TAG_MODEL_PIXEL_SCALE: (pixel_size, pixel_size, 0.0),
        TAG_MODEL_TIEPOINT: (0.0, 0.0, 0.0, x0, y0, 0.0),
        TAG_GEO_KEY_DIRECTORY: tuple(keys),
    }
    if ascii_params:
        tags[TAG_GEO_ASCII_PARAMS] = ascii_params
    return tags


def write_multiband_geotiff(path_or_buf: Any, bands: np.ndarray, tags: dict[int, Any],
                            nodata: float | None = None, compression: str | None = "zlib",
                            tile: tuple[int, int] | None = None) -> None:
    """Write [C, H, W] bands as a GeoTIFF (band-interleaved pixels, like GDAL's default)."""
    extratags: list[tuple[int, int, int, Any, bool]] = []
    for code, value in sorted(tags.items()):
        typ = _TIFF_TYPE[code]
        extratags.append((code, typ, 0 if typ == 2 else len(value), value, True))
    if nodata is not None:
        extratags.append((TAG_GDAL_NODATA, 2, 0, repr(nodata) if isinstance(nodata, float) and not
                          float(nodata).is_integer() else str(int(nodata)), True))
    c, h, w = bands.shape
    tifffile.imwrite(
        path_or_buf,
        np.moveaxis(bands, 0, -1) if c > 1 else bands[0],
        photometric="minisblack",
        planarconfig="contig" if c > 1 else None,
        compression=compression,
        tile=tile,
        rowsperstrip=None if tile else max(1, min(h, (256 * 1024) // max(1, w * c * bands.itemsize))),
        extratags=extratags,
        metadata=None,
        bigtiff=bands.nbytes > 3_900_000_000,
    )
