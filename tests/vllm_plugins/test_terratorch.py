"""terratorch's ``terratorch_segmentation`` plugin (PyPI ``terratorch==1.2.13``, installed
unchanged by ``make setup``; tests/vllm_plugins/stubs/README.md lists exactly what stands
in for dependencies that cannot install on Python 3.11) on models/prithvi-water-demo,
over gRPC and in process, with vLLM's request shapes.

The model directory is the demo model's weights with a config.json that adds what a
terratorch model's config carries (``pretrained_cfg``: datamodule, tiling, inputs) and
names the plugin. terratorch picks vLLM 0.15+'s nested multimodal layout from the
stand-in's version (0.16.0), so this also covers the nested layout end to end.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import rasterio
from poolstream_geotiff import raster, synthetic

from poolstream.v1 import pooling_service_pb2 as pb
from poolstream.v1 import pooling_service_pb2_grpc as pb_grpc
from tests.conftest import ROOT, subprocess_env
from tests.grpc_helpers import error_details, json_payload
from tests.http.conftest import launch_http_server

HERE = Path(__file__).resolve().parent
DEMO = ROOT / "models" / "prithvi-water-demo"
PLUGINS_DIR = ROOT / ".venv" / "vllm-plugins"

pytestmark = pytest.mark.skipif(
    not (PLUGINS_DIR / "terratorch").is_dir(), reason="terratorch not installed: run `make setup`"
)


def terratorch_env() -> dict[str, str]:
    env = subprocess_env()
    paths = [str(HERE / "stubs"), str(HERE / "support"), str(PLUGINS_DIR), env["PYTHONPATH"]]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def terratorch_model(tmp: Path) -> Path:
    cfg = json.loads((DEMO / "config.json").read_text())
    cfg["io_processor_plugin"] = "terratorch_segmentation"
    cfg["pretrained_cfg"] = {
        "data": {
            "class_path": "prithvi_demo_datamodule.PrithviDemoDataModule",
            "init_args": {
                "means": cfg["mean"], "stds": cfg["std"], "constant_scale": 10000.0,
                "test_transform": [{"class_path": "prithvi_demo_datamodule.ToTensorCHW"}],
            },
        },
        "model": {"init_args": {"tiled_inference_parameters": {"crop": cfg["tile_size"]}}},
        "input": {"data": {"pixel_values": {"type": "torch.Tensor", "shape": [6, 224, 224]}}},
    }
    model = tmp / "prithvi-terratorch"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(cfg))
    (model / "model.safetensors").symlink_to(DEMO / "model.safetensors")
    return model


def scene_file(tmp: Path, height: int, width: int, seed: int) -> tuple[Path, np.ndarray]:
    scene = synthetic.make_scene(height, width, seed, clouds=False)
    path = tmp / f"HLS.S30.T33UUU.2024123T101010.v2.0.{seed}.tif"
    tags = raster.geotiff_georef_tags(32633, (399960.0, 5900040.0), 30.0, citation="WGS 84 / UTM zone 33N")
    raster.write_multiband_geotiff(str(path), scene.bands, tags, nodata=synthetic.NODATA)
    return path, scene.label


def check_mask(b64: str, label: np.ndarray) -> None:
    with rasterio.MemoryFile(base64.b64decode(b64)) as mem, mem.open() as src:
        mask, crs = src.read(1), src.crs
    assert mask.shape == label.shape and crs.to_epsg() == 32633
    # terratorch writes class * 255 as uint8: water (class 1) is 255.
    assert ((mask == 255) == (label == 1)).mean() > 0.9


def test_terratorch_plugin_over_grpc_and_http(tmp_path):
    model = terratorch_model(tmp_path)
    scene, label = scene_file(tmp_path, 300, 250, 7_200_001)
    http = launch_http_server("--model", str(model), env=terratorch_env())
    try:
        _check_server(http, scene, label)
    finally:
        http.process.stop()


def _check_server(http, scene: Path, label: np.ndarray) -> None:
    server = http.process

    async def call(data: dict) -> pb.ProcessResponse:
        async with grpc.aio.insecure_channel(server.address) as ch:
            return await pb_grpc.PoolingServiceStub(ch).Process(pb.ProcessRequest(data=json_payload(data)))

    import asyncio

    resp = asyncio.run(call({"data": str(scene), "data_format": "path", "out_data_format": "b64_json"}))
    body = resp.data.json
    assert body["data_format"] == "b64_json" and body["request_id"] == resp.request_id
    check_mask(body["data"], label)
    # Its own validation errors (pydantic) are the payload's: INVALID_ARGUMENT with details.
    with pytest.raises(grpc.RpcError) as e:
        asyncio.run(call({"data": str(scene), "data_format": "gopher", "out_data_format": "b64_json"}))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(e.value)["reason"] == "INVALID_PAYLOAD"
    assert "terratorch_segmentation" in server.log()

    # vLLM's own online test body, POSTed to /pooling as vLLM's test does.
    body = {"data": {"data": str(scene), "data_format": "path", "out_data_format": "b64_json"},
            "priority": 0, "model": "prithvi-terratorch", "softmax": False}
    req = urllib.request.Request(f"{http.base_url}/pooling", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        answer = json.loads(r.read())
    assert set(answer) >= {"request_id", "created_at", "data"}
    assert all(answer["data"].get(k) for k in ("data_format", "data", "request_id"))
    check_mask(answer["data"]["data"], label)


def test_terratorch_plugin_in_process(tmp_path):
    model = terratorch_model(tmp_path)
    scene, label = scene_file(tmp_path, 224, 400, 7_200_002)
    out = subprocess.run([sys.executable, str(HERE / "terratorch_offline.py"), str(model), str(scene)],
                         env=terratorch_env(), capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-4000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["type"] == "terratorch.vllm.plugins.segmentation.types.RequestOutput"
    check_mask(result["output"]["data"], label)
