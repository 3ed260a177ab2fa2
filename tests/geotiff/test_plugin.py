"""geotiff_segmentation in process: the plugin's hooks with the real demo model.

The end-to-end gRPC tests are in test_grpc.py; these cover parsing,
validation, raster handling, blending and concurrency without a server.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import io
import os
import struct
import zlib
from importlib.metadata import entry_points

import numpy as np
import pytest
import tifffile
import torch
from poolstream.entrypoints.protocol import IOProcessorRequest, RawPayload
from poolstream.payloads.geotiff.v1 import geotiff_segmentation_pb2 as pb
from poolstream.v1 import tensor_pb2
from poolstream_geotiff import raster, synthetic

from tests.geotiff import helpers

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def decode_png(data: bytes) -> np.ndarray:
    """Minimal decoder for the plugin's 8-bit palette PNGs (filter type 0 only)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w, h = 8, b"", 0, 0
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, color = struct.unpack(">IIBB", body[:10])
            assert (depth, color) == (8, 3)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, w + 1)
    assert (raw[:, 0] == 0).all()
    return raw[:, 1:]


# -- packaging and model ------------------------------------------------------

def test_entry_point_registers_the_processor_class():
    eps = {ep.name: ep for ep in entry_points(group="poolstream.io_processor_plugins")}
    qualname = eps["geotiff_segmentation"].load()()
    module, _, name = qualname.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    assert cls.input_types == ("poolstream.payloads.geotiff.v1.GeoTiffSegmentationRequest",)
    assert cls.output_types == ("poolstream.payloads.geotiff.v1.GeoTiffSegmentationResponse",)
    assert "image/tiff" in cls.input_media_types


def test_model_spec_shapes_and_checks(model):
    spec = model.spec()
    assert spec.output_shape == (3, -1, -1) and spec.pooling == "none" and spec.max_model_len == 0
    assert spec.tensor_inputs == ("pixel_values",) and spec.normalize is False
    x = torch.randn(3, 6, 224, 224)
    with torch.inference_mode():
        full = model.forward_tensors(pixel_values=x)
        old = model.max_chunk_pixels
        model.max_chunk_pixels = 224 * 224  # one tile per chunk
        try:
            chunked = model.forward_tensors(pixel_values=x)
        finally:
            model.max_chunk_pixels = old
        assert full.shape == (3, 3, 224, 224)
        torch.testing.assert_close(full, chunked, rtol=1e-4, atol=1e-4)
        # Any multiple of the patch size (sin-cos position embeddings).
        assert model.forward_tensors(pixel_values=torch.randn(1, 6, 64, 96)).shape == (1, 3, 64, 96)
    model.check_tensor_inputs({"pixel_values": torch.zeros(6, 224, 224, dtype=torch.float16)})
    for bad in (torch.zeros(5, 224, 224), torch.zeros(6, 100, 224), torch.zeros(6, 224, 224, dtype=torch.int16)):
        with pytest.raises(ValueError):
            model.check_tensor_inputs({"pixel_values": bad})
    assert model.tensor_prompt_cost({"pixel_values": torch.zeros(6, 224, 224)}) == 784


# -- accuracy and georeferencing -------------------------------------------------

def test_fresh_scenes_iou_and_georeferencing(processor, model):
    ious = []
    for k in range(3):
        data, scene = helpers.scene_tiff(448, 576, helpers.TEST_SEED_BASE + k, nodata_edge=(k == 1))
        resp = asyncio.run(helpers.run_inprocess(processor, model, pb.GeoTiffSegmentationRequest(geotiff=data)))
        assert isinstance(resp, pb.GeoTiffSegmentationResponse)
        assert (resp.width, resp.height) == (576, 448)
        assert resp.crs == "EPSG:32633"
        assert list(resp.geotransform) == [helpers.ORIGIN[0], 30.0, 0.0, helpers.ORIGIN[1], 0.0, -30.0]
        mask, tags = helpers.read_tiff(resp.data)
        assert mask.shape == (448, 576) and mask.dtype == np.uint8
        in_tags = {t.code: t.value for t in tifffile.TiffFile(io.BytesIO(data)).pages.first.tags.values()}
        for code in raster.GEO_TAGS:
            if code in in_tags:
                assert tags[code] == in_tags[code], code
        assert tags[259] == 5  # LZW
        assert tags[raster.TAG_GDAL_NODATA] == "255"
        valid = scene.label != synthetic.LABEL_NODATA
        assert ((mask == 255) == ~valid).all()
        assert resp.nodata_pixel_count == np.count_nonzero(~valid)
        counts = {c.name: c.pixel_count for c in resp.classes}
        assert counts == {n: int(np.count_nonzero(mask == v)) for v, n in enumerate(synthetic.CLASS_NAMES)}
        assert abs(sum(c.fraction for c in resp.classes) - 1) < 1e-9
        ious.append(synthetic.iou(mask, scene.label, synthetic.WATER, valid))
    assert min(ious) >= 0.9, ious


def test_completion_order_does_not_change_the_result(processor, model):
    data, _ = helpers.scene_tiff(300, 420, helpers.TEST_SEED_BASE + 10)
    req = {"geotiff": b64(data), "tile_size": 128, "tile_overlap": 24}
    outs = [asyncio.run(helpers.run_inprocess(processor, model, req, order=o, seed=s))["data"]
            for o, s in (("in_order", 0), ("reversed", 0), ("shuffled", 1), ("shuffled", 2))]
    masks = [helpers.read_tiff(base64.b64decode(o))[0] for o in outs]
    for m in masks[1:]:
        assert (m == masks[0]).all()


def test_sync_post_process_matches_async(processor, model):
    data, _ = helpers.scene_tiff(256, 300, helpers.TEST_SEED_BASE + 11)
    job = processor.parse_request(IOProcessorRequest(data=pb.GeoTiffSegmentationRequest(geotiff=data)))
    prompts = processor.pre_process(job, "r", parsed_request=job)
    x = torch.stack([p["multi_modal_data"]["pixel_values"] for p in prompts])
    with torch.inference_mode():
        logits = model.forward_tensors(pixel_values=x)
    from poolstream.outputs import PoolingOutput, PoolingRequestOutput

    outs = [PoolingRequestOutput(request_id=f"r-{i}", outputs=PoolingOutput(t)) for i, t in enumerate(logits)]
    sync = processor.post_process(outs, "r", parsed_request=job)

    async def agen():
        for i in reversed(range(len(outs))):
            yield i, outs[i]

    asy = asyncio.run(processor.post_process_async(agen(), "r", parsed_request=job))
    assert sync.data == asy.data
    with pytest.raises(ValueError, match="parsed_request="):
        processor.post_process(outs, "r")


def test_prompts_are_views_of_one_buffer(processor):
    data, _ = helpers.scene_tiff(500, 700, helpers.TEST_SEED_BASE + 12)
    job = processor.parse_request(IOProcessorRequest(data={"geotiff": b64(data)}))
    prompts = processor.pre_process(job, "r", parsed_request=job)
    tensors = [p["multi_modal_data"]["pixel_values"] for p in prompts]
    assert all(p["prompt_token_ids"] == [1] for p in prompts)
    assert all(t.shape == (6, 224, 224) and t.dtype == torch.float16 for t in tensors)
    base = tensors[0].untyped_storage().data_ptr()
    assert all(t.untyped_storage().data_ptr() == base for t in tensors)
    assert job.raster is not None and job.raster.grid.count == len(prompts) == 3 * 4


# -- options ------------------------------------------------------------------------

def test_png_output_matches_geotiff_classes(processor, model):
    data, _ = helpers.scene_tiff(200, 260, helpers.TEST_SEED_BASE + 13, nodata_edge=True)
    tif = asyncio.run(helpers.run_inprocess(processor, model, {"geotiff": b64(data)}))
    png = asyncio.run(helpers.run_inprocess(processor, model, {"geotiff": b64(data), "output_format": "png"}))
    assert png["media_type"] == "image/png" and png["format"] == "png"
    assert tif["media_type"] == "image/tiff; application=geotiff" and tif["format"] == "tiff"
    assert (decode_png(base64.b64decode(png["data"])) == helpers.read_tiff(base64.b64decode(tif["data"]))[0]).all()


def test_threshold_moves_the_water_boundary(processor, model):
    data, _ = helpers.scene_tiff(256, 256, helpers.TEST_SEED_BASE + 14)
    water = {}
    for thr in (0.02, 0.5, 0.98):
        resp = asyncio.run(helpers.run_inprocess(processor, model, {"geotiff": b64(data), "threshold": thr}))
        water[thr] = next(c["pixel_count"] for c in resp["classes"] if c["name"] == "water")
    assert water[0.02] >= water[0.5] >= water[0.98]
    plain = asyncio.run(helpers.run_inprocess(processor, model, {"geotiff": b64(data)}))
    assert abs(next(c["pixel_count"] for c in plain["classes"] if c["name"] == "water") - water[0.5]) < 0.01 * 256**2


@pytest.mark.parametrize("compression,code", [("lzw", 5), ("deflate", 8), ("none", 1)])
def test_output_compression(processor, model, compression, code):
    data, _ = helpers.scene_tiff(128, 128, helpers.TEST_SEED_BASE + 15)
    resp = asyncio.run(helpers.run_inprocess(processor, model, {"geotiff": b64(data), "compression": compression,
                                                                "tile_size": 128}))
    mask, tags = helpers.read_tiff(base64.b64decode(resp["data"]))
    assert tags[259] == code and mask.shape == (128, 128)


def test_band_selection_and_input_layouts(processor, model):
    data, scene = helpers.scene_tiff(240, 250, helpers.TEST_SEED_BASE + 16)
    ref = asyncio.run(helpers.run_inprocess(processor, model, pb.GeoTiffSegmentationRequest(geotiff=data)))
    ref_mask = helpers.read_tiff(ref.data)[0]
    tags = raster.geotiff_georef_tags(helpers.EPSG, helpers.ORIGIN, helpers.PIXEL)
    # 8 bands in a shuffled order, planar, tiled, LZW: select the model's 6 back.
    order = [7, 3, 0, 5, 1, 6, 2, 4]  # file band i holds scene band order[i] (6, 7 are extra)
    extra = np.stack([scene.bands[0] // 2, scene.bands[1] + 7])
    src = np.concatenate([scene.bands, extra])
    file_bands = src[order]
    buf = io.BytesIO()
    tifffile.imwrite(buf, file_bands, photometric="minisblack", planarconfig="separate", tile=(64, 64),
                     compression="lzw", metadata=None,
                     extratags=[(c, raster._TIFF_TYPE[c], len(v), v, True) for c, v in tags.items()]
                     + [(raster.TAG_GDAL_NODATA, 2, 0, "-9999", True)])
    select = [order.index(b) for b in range(6)]
    resp = asyncio.run(helpers.run_inprocess(processor, model, pb.GeoTiffSegmentationRequest(
        geotiff=buf.getvalue(), bands=select)))
    assert (helpers.read_tiff(resp.data)[0] == ref_mask).all()
    # Without a selection an 8-band raster is refused with the reason.
    with pytest.raises(ValueError, match="8 band.*needs 6"):
        asyncio.run(helpers.run_inprocess(processor, model, pb.GeoTiffSegmentationRequest(geotiff=buf.getvalue())))


def test_float_reflectance_with_nan_as_nodata(processor, model):
    _, scene = helpers.scene_tiff(130, 150, helpers.TEST_SEED_BASE + 17)
    bands = scene.bands.astype(np.float32)
    bands[:, :10, :] = np.nan
    buf = io.BytesIO()
    raster.write_multiband_geotiff(buf, bands, raster.geotiff_georef_tags(4326, (10.0, 50.0), 0.0003))
    resp = asyncio.run(helpers.run_inprocess(processor, model, {"geotiff": b64(buf.getvalue()), "tile_size": 64}))
    mask = helpers.read_tiff(base64.b64decode(resp["data"]))[0]
    assert (mask[:10] == 255).all() and (mask[10:] != 255).all()
    assert resp["nodata_pixel_count"] == 10 * 150


def test_small_raster_is_padded(processor, model):
    data, _ = helpers.scene_tiff(40, 90, helpers.TEST_SEED_BASE + 18)
    resp = asyncio.run(helpers.run_inprocess(processor, model, RawPayload("image/tiff", data)))
    assert isinstance(resp, pb.GeoTiffSegmentationResponse) and resp.tile_count == 1
    assert helpers.read_tiff(resp.data)[0].shape == (40, 90)


def test_vllm_prithvi_style_request(processor, model):
    data, _ = helpers.scene_tiff(100, 100, helpers.TEST_SEED_BASE + 19)
    resp = asyncio.run(helpers.run_inprocess(
        processor, model, {"data_format": "b64_json", "data": b64(data), "image_format": "tiff",
                           "out_data_format": "b64_json"}))
    assert resp["type"] == "b64_json" and resp["format"] == "tiff"
    assert helpers.read_tiff(base64.b64decode(resp["data"]))[0].shape == (100, 100)


def test_path_source_is_confined_to_the_allowed_directory(tmp_path, model):
    media = tmp_path / "media"
    media.mkdir()
    data, _ = helpers.scene_tiff(100, 120, helpers.TEST_SEED_BASE + 20)
    (media / "scene.tif").write_bytes(data)
    (tmp_path / "secret.tif").write_bytes(data)
    os.symlink(tmp_path / "secret.tif", media / "link.tif")
    proc = helpers.make_processor(allowed_local_media_path=str(media))
    for path in ("scene.tif", str(media / "scene.tif")):
        resp = asyncio.run(helpers.run_inprocess(proc, model, {"path": path}))
        assert resp["width"] == 120
    for path in ("../secret.tif", str(tmp_path / "secret.tif"), "link.tif"):
        with pytest.raises(ValueError, match="outside"):
            proc.parse_request(IOProcessorRequest(data={"path": path}))
    with pytest.raises(ValueError, match="not a file"):
        proc.parse_request(IOProcessorRequest(data={"path": "missing.tif"}))
    default = helpers.make_processor()
    with pytest.raises(ValueError, match="path inputs are disabled"):
        default.parse_request(IOProcessorRequest(data={"path": "scene.tif"}))


# -- validation -------------------------------------------------------------------

@pytest.mark.parametrize("data,match", [
    ({}, "set one of geotiff"),
    ({"geotiff": "not base64!"}, "base64"),
    ({"geotiff": ""}, "empty"),
    ({"geotiff": "AAAA", "colour": 1}, r"unknown field\(s\) \['colour'\]"),
    ({"geotiff": "AAAA", "path": "x.tif"}, "only one"),
    ({"geotiff": "AAAA", "threshold": 1.5}, "threshold"),
    ({"geotiff": "AAAA", "threshold": 0}, "threshold"),
    ({"geotiff": "AAAA", "tile_size": 100}, "multiple of the model's patch size 16"),
    ({"geotiff": "AAAA", "tile_size": 1024}, "between 64 and 512"),
    ({"geotiff": "AAAA", "tile_size": 128, "tile_overlap": 64}, "less than half"),
    ({"geotiff": "AAAA", "tile_size": 224.5}, "tile_size"),
    ({"geotiff": "AAAA", "bands": [0, 1, 2]}, "selects 3 bands; the model needs 6"),
    ({"geotiff": "AAAA", "output_format": "jpeg"}, "output_format"),
    ({"url": "https://example.com/a.tif"}, "does not fetch URLs: download the file"),
    ({"path": "/etc/passwd"}, "path inputs are disabled"),
    (RawPayload("image/png", b"\x89PNG"), "media type"),
    (tensor_pb2.Tensor(), "takes poolstream.payloads.geotiff.v1.GeoTiffSegmentationRequest"),
    ([1, 2], "Unable to parse request"),
])
def test_invalid_requests_are_rejected_with_a_reason(processor, data, match):
    # TypeError for a payload of the wrong type; both become INVALID_ARGUMENT.
    with pytest.raises((ValueError, TypeError), match=match):
        processor.parse_request(IOProcessorRequest(data=data))


def test_url_refused_even_when_fetching_is_allowed():
    proc = helpers.make_processor(allow_url_fetch=True)
    with pytest.raises(ValueError, match="does not fetch URLs") as e:
        proc.parse_request(IOProcessorRequest(data={"url": "https://example.com/a.tif"}))
    # No message suggests a setting that would make the plugin fetch: none would.
    for p in (proc, helpers.make_processor()):
        with pytest.raises(ValueError) as e:
            p.parse_request(IOProcessorRequest(data={"url": "https://example.com/a.tif"}))
        assert "allow" not in str(e.value).replace("allowed media directory", "")


def huge_tiff_header(width: int, height: int, samples: int = 6) -> bytes:
    """A valid little-endian TIFF header declaring a huge image, with 16 bytes of pixel data."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 16), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8), (277, 3, 1, samples), (278, 4, 1, height), (279, 4, 1, 16), (284, 3, 1, 1)]
    ifd_offset = 8 + 16
    out = b"II*\x00" + struct.pack("<I", ifd_offset) + b"\x00" * 16
    out += struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        out += struct.pack("<HHII", tag, typ, count, value) if typ == 4 else struct.pack("<HHIHH", tag, typ,
                                                                                            count, value, 0)
    return out + b"\x00\x00\x00\x00"


def bad_rasters() -> dict[str, tuple[bytes, str]]:
    good, _ = helpers.scene_tiff(96, 96, helpers.TEST_SEED_BASE + 21)
    four = io.BytesIO()
    raster.write_multiband_geotiff(four, np.ones((4, 32, 32), np.int16), {})
    uncompressed, _ = helpers.scene_tiff(96, 96, helpers.TEST_SEED_BASE + 21, compression=None)
    return {
        "not_a_tiff": (b"GIF89a" + b"\x00" * 100, "not a readable TIFF"),
        "too_short": (b"II*", "too short"),
        "truncated_header": (good[:40], "TIFF"),
        "truncated_pixels": (uncompressed[: len(uncompressed) // 2], "truncated"),
        "corrupt_compressed": (good[:2000] + bytes(len(good) - 2000), "decode|TIFF"),
        "wrong_band_count": (four.getvalue(), "4 band.*needs 6"),
        "huge_declared_size": (huge_tiff_header(200_000, 200_000), "over this server's limit"),
        "huge_single_strip": (huge_tiff_header(8000, 8000), "strips/tiles are 732 MiB"),
        "zero_bands": (huge_tiff_header(16, 16, samples=0), "TIFF|zero bands"),
    }


@pytest.mark.parametrize("name", list(bad_rasters()))
def test_bad_rasters_raise_value_error_with_reason(processor, name):
    data, match = bad_rasters()[name]
    job = processor.parse_request(IOProcessorRequest(data=pb.GeoTiffSegmentationRequest(geotiff=data)))
    with pytest.raises(ValueError, match=match):
        processor.pre_process(job, "r", parsed_request=job)


def test_too_many_windows_is_refused_before_decoding(model):
    proc = helpers.make_processor()
    object.__setattr__(proc, "max_prompts", 10)
    data = huge_tiff_header(2000, 2000)
    job = proc.parse_request(IOProcessorRequest(data={"geotiff": b64(data)}))
    with pytest.raises(ValueError, match="needs 121 windows.*10 prompts per request"):
        proc.pre_process(job, "r", parsed_request=job)


# -- concurrency ---------------------------------------------------------------------

def test_concurrent_requests_with_different_options_do_not_interfere(processor, model):
    reqs = []
    for k, opts in enumerate([
        {},
        {"tile_size": 128, "tile_overlap": 16},
        {"output_format": "png"},
        {"threshold": 0.9},
        {"tile_size": 96, "tile_overlap": 0, "compression": "none"},
        {"tile_size": 160, "threshold": 0.2, "output_format": "png"},
    ]):
        data, _ = helpers.scene_tiff(150 + 37 * k, 170 + 23 * k, helpers.TEST_SEED_BASE + 30 + k,
                                     nodata_edge=k % 2 == 1)
        reqs.append({"geotiff": b64(data), **opts})

    async def alone():
        return [await helpers.run_inprocess(processor, model, r, request_id=f"a{i}") for i, r in enumerate(reqs)]

    async def together():
        return await asyncio.gather(*(helpers.run_inprocess(processor, model, r, request_id=f"t{i}", seed=i)
                                      for i, r in enumerate(reqs)))

    expected = asyncio.run(alone())
    got = asyncio.run(together())
    for e, g in zip(expected, got):
        assert g == e
    assert not {k for k in vars(processor) if "job" in k or "cache" in k}  # no per-request state on self
