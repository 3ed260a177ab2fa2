"""geotiff_segmentation end to end: ``poolstream serve`` on the demo model, real gRPC on 127.0.0.1.

The large-raster test measures the server process's peak RSS (VmHWM in
/proc/<pid>/status) against the bound documented in the plugin's README.
"""

from __future__ import annotations

import base64
import io
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import tifffile
from google.protobuf import json_format
from poolstream.payloads.geotiff.v1 import geotiff_segmentation_pb2 as geo
from poolstream.v1 import payload_pb2, pooling_service_pb2_grpc
from poolstream.v1 import pooling_service_pb2 as ps
from poolstream_geotiff import raster, synthetic

from tests.conftest import launch_server
from tests.geotiff import helpers
from tests.geotiff.test_plugin import bad_rasters
from tests.grpc_helpers import json_payload, typed_payload

MiB = 1 << 20
CHANNEL_OPTIONS = [("grpc.max_send_message_length", 256 * MiB), ("grpc.max_receive_message_length", 256 * MiB)]
MODEL = str(helpers.MODEL_DIR)
# Server peak RSS for a 4096 x 4096 x 6 int16 raster (192 MiB), documented in
# plugins/geotiff_segmentation/README.md ("Memory"); measured 0.84 and 1.5 GiB (2026-11-28).
LARGE_RASTER_PEAK_RSS_BOUND_MIB = {"path": 1280, "bytes": 2048}


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def server(media_dir):
    s = launch_server("--model", MODEL, "--allowed-local-media-path", str(media_dir))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def stub(server):
    channel = grpc.insecure_channel(server.address, options=CHANNEL_OPTIONS)
    yield pooling_service_pb2_grpc.PoolingServiceStub(channel)
    channel.close()


def process_typed(stub, req: geo.GeoTiffSegmentationRequest, timeout: float = 120) -> geo.GeoTiffSegmentationResponse:
    resp = stub.Process(ps.ProcessRequest(data=typed_payload(req)), timeout=timeout)
    out = geo.GeoTiffSegmentationResponse()
    assert resp.data.typed.Unpack(out), resp.data
    return out


def test_server_info_lists_the_plugin(stub):
    info = stub.GetServerInfo(ps.GetServerInfoRequest(), timeout=30)
    assert info.plugin.name == "geotiff_segmentation"
    assert "poolstream.payloads.geotiff.v1.GeoTiffSegmentationRequest" in info.plugin.input_types
    assert "image/tiff" in info.plugin.input_media_types
    assert info.model.architecture == "PrithviSegmentationModel"
    assert list(info.model.output_shape) == [3, -1, -1]
    assert list(info.model.tensor_inputs) == ["pixel_values"]


def test_utm_geotiff_in_geotiff_out_with_iou(stub):
    ious = []
    for k in range(3):
        data, scene = helpers.scene_tiff(512, 640, helpers.TEST_SEED_BASE + 100 + k, nodata_edge=k == 2)
        resp = process_typed(stub, geo.GeoTiffSegmentationRequest(geotiff=data))
        assert resp.media_type == "image/tiff; application=geotiff"
        assert resp.crs == "EPSG:32633" and (resp.width, resp.height) == (640, 512)
        mask, tags = helpers.read_tiff(resp.data)
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            in_tags = {t.code: t.value for t in tif.pages.first.tags.values()}
        assert mask.shape == (512, 640)
        for code in (raster.TAG_MODEL_PIXEL_SCALE, raster.TAG_MODEL_TIEPOINT, raster.TAG_GEO_KEY_DIRECTORY,
                     raster.TAG_GEO_ASCII_PARAMS):
            assert tags[code] == in_tags[code]
        assert tags[259] == 5 and tags[raster.TAG_GDAL_NODATA] == "255"
        valid = scene.label != synthetic.LABEL_NODATA
        assert ((mask == 255) == ~valid).all()
        ious.append(synthetic.iou(mask, scene.label, synthetic.WATER, valid))
    assert min(ious) >= 0.9, ious


def test_json_and_raw_payloads(stub):
    data, _ = helpers.scene_tiff(200, 230, helpers.TEST_SEED_BASE + 110)
    resp = stub.Process(ps.ProcessRequest(data=json_payload(
        {"geotiff": base64.b64encode(data).decode(), "output_format": "png", "tile_size": 128})), timeout=60)
    out = json_format.MessageToDict(resp.data.json)
    assert out["media_type"] == "image/png" and out["format"] == "png" and out["type"] == "b64_json"
    assert base64.b64decode(out["data"])[:8] == b"\x89PNG\r\n\x1a\n"
    assert out["width"] == 230 and out["crs"] == "EPSG:32633"
    raw = stub.Process(ps.ProcessRequest(data=payload_pb2.PluginPayload(
        raw=payload_pb2.RawPayload(media_type="image/tiff", data=data))), timeout=60)
    typed = geo.GeoTiffSegmentationResponse()
    assert raw.data.typed.Unpack(typed) and typed.tile_size == 224 and typed.tile_overlap == 32


def test_bad_rasters_are_invalid_argument_and_the_server_keeps_serving(stub, server):
    for name, (data, match) in bad_rasters().items():
        with pytest.raises(grpc.RpcError) as err:
            process_typed(stub, geo.GeoTiffSegmentationRequest(geotiff=data), timeout=60)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, err.value.details())
        import re

        assert re.search(match, err.value.details()), (name, err.value.details())
    for bad_request, match in [
        (payload_pb2.PluginPayload(raw=payload_pb2.RawPayload(media_type="image/png", data=b"x")), "media type"),
        (json_payload({"geotiff": "AAAA", "tile_size": 100}), "patch size"),
        (json_payload({"path": "../../etc/passwd"}), "outside"),
        (json_payload({"url": "http://127.0.0.1:1/x.tif"}), "URL"),
    ]:
        with pytest.raises(grpc.RpcError) as err:
            stub.Process(ps.ProcessRequest(data=bad_request), timeout=60)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and match in err.value.details()
    assert server.proc.poll() is None
    ok, _ = helpers.scene_tiff(64, 64, helpers.TEST_SEED_BASE + 111)
    assert process_typed(stub, geo.GeoTiffSegmentationRequest(geotiff=ok, tile_size=64)).width == 64


def test_process_stream_reports_tile_progress(stub):
    data, _ = helpers.scene_tiff(400, 500, helpers.TEST_SEED_BASE + 120)
    req = geo.GeoTiffSegmentationRequest(geotiff=data, tile_size=128, tile_overlap=16)
    events = list(stub.ProcessStream(ps.ProcessStreamRequest(data=typed_payload(req),
                                                             detail=ps.STREAM_DETAIL_PROGRESS), timeout=120))
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[-1] == "result" and set(kinds[:-1]) == {"progress"}
    done = [e.progress.completed for e in events[:-1]]
    total = {e.progress.total for e in events[:-1]}
    out = geo.GeoTiffSegmentationResponse()
    events[-1].result.data.typed.Unpack(out)
    assert total == {out.tile_count} == {4 * 5}
    assert done == sorted(done) and done[-1] == out.tile_count


def test_server_path_source(stub, media_dir):
    data, _ = helpers.scene_tiff(150, 150, helpers.TEST_SEED_BASE + 130)
    (media_dir / "scene.tif").write_bytes(data)
    by_path = process_typed(stub, geo.GeoTiffSegmentationRequest(path="scene.tif", tile_size=160))
    by_bytes = process_typed(stub, geo.GeoTiffSegmentationRequest(geotiff=data, tile_size=160))
    assert by_path.data == by_bytes.data


def test_concurrent_requests_with_different_options(stub):
    cases = []
    for k, opts in enumerate([{}, {"tile_size": 128, "tile_overlap": 8}, {"output_format": geo.OUTPUT_FORMAT_PNG},
                              {"threshold": 0.8, "compression": geo.COMPRESSION_NONE}]):
        data, _ = helpers.scene_tiff(180 + 40 * k, 260 - 30 * k, helpers.TEST_SEED_BASE + 140 + k)
        cases.append(geo.GeoTiffSegmentationRequest(geotiff=data, **opts))
    sequential = [process_typed(stub, c) for c in cases]
    with ThreadPoolExecutor(len(cases)) as pool:
        concurrent = list(pool.map(lambda c: process_typed(stub, c), cases))
    for s, c in zip(sequential, concurrent):
        assert s == c


def test_example_client_with_progress_bar(server, tmp_path):
    data, _ = helpers.scene_tiff(300, 300, helpers.TEST_SEED_BASE + 150)
    src, dst = tmp_path / "in.tif", tmp_path / "out.tif"
    src.write_bytes(data)
    script = helpers.ROOT / "plugins" / "geotiff_segmentation" / "examples" / "segment.py"
    run = subprocess.run([sys.executable, str(script), str(src), str(dst), "--server", server.address],
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    assert "4/4 windows" in run.stderr and "[" in run.stderr
    assert "EPSG:32633" in run.stdout and "water" in run.stdout
    assert helpers.read_tiff(dst.read_bytes())[0].shape == (300, 300)


def vm_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


@pytest.fixture(scope="module")
def large_scene(tmp_path_factory):
    """4096 x 4096 x 6 int16 (192 MiB, uncompressed) GeoTIFF on disk, and its truth."""
    n, tile_n = 4096, 1024
    scene = synthetic.make_scene(tile_n, tile_n, helpers.TEST_SEED_BASE + 200)

    def mosaic(a: np.ndarray) -> np.ndarray:
        # 4 x 4 mirrored copies of one scene (generating 4096^2 directly takes ~30 s).
        return np.concatenate([np.concatenate([a[..., ::sy, ::sx] for sx in (1, -1, 1, -1)], axis=-1)
                               for sy in (1, -1, 1, -1)], axis=-2)

    bands, label = mosaic(scene.bands), mosaic(scene.label)
    assert bands.shape == (6, n, n)
    path = tmp_path_factory.mktemp("large") / "large.tif"
    tags = raster.geotiff_georef_tags(helpers.EPSG, helpers.ORIGIN, helpers.PIXEL)
    raster.write_multiband_geotiff(str(path), bands, tags, nodata=synthetic.NODATA, compression=None)
    assert path.stat().st_size > 190 * MiB
    return path, label


@pytest.mark.slow
@pytest.mark.parametrize("source", ["path", "bytes"])
def test_large_raster_memory_bound_and_big_output(large_scene, source):
    """192 MiB raster in (server path, or bytes in the message); 16 MiB uncompressed GeoTIFF out.

    Each case gets a fresh server, so VmHWM is this request's peak.
    """
    path, label = large_scene
    req = geo.GeoTiffSegmentationRequest(compression=geo.COMPRESSION_NONE)
    if source == "path":
        req.path = path.name
    else:
        req.geotiff = path.read_bytes()
    s = launch_server("--model", MODEL, "--allowed-local-media-path", str(path.parent))
    try:
        channel = grpc.insecure_channel(s.address, options=CHANNEL_OPTIONS)
        stub = pooling_service_pb2_grpc.PoolingServiceStub(channel)
        # Warm up (first-call allocations), then measure the big request alone.
        process_typed(stub, geo.GeoTiffSegmentationRequest(geotiff=helpers.scene_tiff(64, 64, 1)[0], tile_size=64))
        rss_before = vm_kib(s.proc.pid, "VmRSS")
        t0 = time.monotonic()
        resp = process_typed(stub, req, timeout=600)
        elapsed = time.monotonic() - t0
        peak = vm_kib(s.proc.pid, "VmHWM")
        channel.close()
    finally:
        s.stop()
    n = label.shape[0]
    assert (resp.width, resp.height) == (n, n) and resp.crs == "EPSG:32633"
    assert len(resp.data) > 4 * MiB  # past gRPC's default 4 MiB message limit
    mask = helpers.read_tiff(resp.data)[0]
    iou = synthetic.iou(mask, label, synthetic.WATER)
    print(f"\nlarge raster via {source}: {path.stat().st_size / MiB:.0f} MiB in, {len(resp.data) / MiB:.1f} MiB out, "
          f"{resp.tile_count} windows, {elapsed:.1f}s, server RSS {rss_before / 1024:.0f} MiB before, "
          f"peak {peak / 1024:.0f} MiB, water IoU {iou:.4f}")
    assert iou >= 0.9
    assert peak / 1024 < LARGE_RASTER_PEAK_RSS_BOUND_MIB[source]
