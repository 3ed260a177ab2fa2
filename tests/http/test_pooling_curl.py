"""vLLM's /pooling (IO Processor plugins) and the NDJSON stream, driven by ``curl``.

Text: the text_embedding plugin's answer over HTTP equals gRPC ``Process``'s.
Image: a GeoTIFF made by the plugin's example script goes in as base64 JSON
(and in vLLM's Prithvi form); the mask comes back with the raster's size and
every tile's progress on /pooling/stream.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import json_format
from poolstream.v1 import pooling_service_pb2 as pb
from poolstream.v1 import pooling_service_pb2_grpc as pb_grpc

from tests.grpc_helpers import json_payload
from tests.http.conftest import HttpServer


def curl(url: str, body: Any = None, *, headers: dict[str, str] | None = None, body_file: Path | None = None,
         timeout: float = 120) -> tuple[int, bytes]:
    """POST (or GET without a body) with the curl binary; (status, body)."""
    exe = shutil.which("curl")
    if exe is None:
        pytest.fail("curl is not installed")
    cmd = [exe, "-sS", "--max-time", str(timeout), "-o", "-", "-w", "\n%{http_code}", url]
    for k, v in (headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    if body is not None or body_file is not None:
        cmd += ["-H", "Content-Type: application/json", "--data-binary",
                f"@{body_file}" if body_file else json.dumps(body)]
    out = subprocess.run(cmd, capture_output=True, check=True, timeout=timeout + 10).stdout
    payload, _, status = out.rpartition(b"\n")
    return int(status), payload


def test_pooling_text_embedding_plugin_matches_grpc_process(http_server: HttpServer):
    data = {"texts": ["a cat", "a kitten", "a car"], "similarity": True}
    status, raw = curl(f"{http_server.base_url}/pooling", {"model": "all-MiniLM-L6-v2", "data": data})
    assert status == 200, raw
    body = json.loads(raw)
    assert set(body) == {"request_id", "created_at", "data"}
    assert body["request_id"].startswith("pool-") and isinstance(body["created_at"], int)

    async def via_grpc():
        async with grpc.aio.insecure_channel(http_server.grpc_address) as ch:
            return await pb_grpc.PoolingServiceStub(ch).Process(pb.ProcessRequest(data=json_payload(data)), timeout=60)

    import asyncio

    grpc_data = json_format.MessageToDict(asyncio.run(via_grpc()).data.json)
    sim = np.array(body["data"]["similarity"])
    assert sim.shape == (3, 3)
    np.testing.assert_allclose(sim, np.array(grpc_data["similarity"]), atol=1e-6)
    assert sim[0, 1] > sim[0, 2]  # a cat is nearer a kitten than a car


def test_pooling_errors_are_vllm_error_responses(http_server: HttpServer):
    status, raw = curl(f"{http_server.base_url}/pooling", {"data": {"no_texts": 1}})
    assert status == 400
    err = json.loads(raw)["error"]
    assert (err["type"], err["code"], err["reason"]) == ("BadRequestError", 400, "INVALID_PAYLOAD")
    assert err["param"] == "data"
    status, raw = curl(f"{http_server.base_url}/pooling", {"model": "other", "data": {"texts": ["a"]}})
    assert status == 404 and json.loads(raw)["error"]["type"] == "NotFoundError"


def test_pooling_raw_input_and_stream(http_server: HttpServer):
    status, raw = curl(f"{http_server.base_url}/pooling", {"input": ["hello", "world"]})
    assert status == 200, raw
    body = json.loads(raw)
    assert [d["index"] for d in body["data"]] == [0, 1] and len(body["data"][0]["data"]) == 384
    status, raw = curl(f"{http_server.base_url}/pooling/stream", {"data": {"texts": ["a", "b", "c"]}})
    assert status == 200, raw
    events = [json.loads(line) for line in raw.decode().splitlines()]
    assert events[0] == {"event": "progress", "completed": 0, "total": 3}
    assert sorted(e["completed"] for e in events[1:-1]) == [1, 2, 3]
    assert events[-1]["event"] == "result" and len(events[-1]["data"]["embeddings"]) == 3


def test_pooling_geotiff_plugin(geotiff_http_server: HttpServer, scene_tif: Path, tmp_path: Path):
    tiff = scene_tif.read_bytes()
    body_file = tmp_path / "body.json"
    body_file.write_text(json.dumps({"data": {"geotiff": base64.b64encode(tiff).decode(), "output_format": "png",
                                              "tile_size": 128}}))
    status, raw = curl(f"{geotiff_http_server.base_url}/pooling", body_file=body_file)
    assert status == 200, raw[:500]
    data = json.loads(raw)["data"]
    assert (data["width"], data["height"], data["media_type"]) == (256, 256, "image/png")
    png = base64.b64decode(data["data"])
    assert png.startswith(b"\x89PNG")
    names = {c["name"]: c["fraction"] for c in data["classes"]}
    assert set(names) == {"land", "water", "cloud"} and sum(names.values()) == pytest.approx(1.0, abs=1e-6)
    assert names["land"] > 0.05  # the synthetic scene has land and water

    # vLLM's Prithvi form, streamed: one progress line per tile, then the GeoTIFF mask.
    body_file.write_text(json.dumps({"data": {"data_format": "b64_json", "data": base64.b64encode(tiff).decode(),
                                              "image_format": "tiff", "out_data_format": "b64_json"}}))
    status, raw = curl(f"{geotiff_http_server.base_url}/pooling/stream", body_file=body_file)
    assert status == 200, raw[:500]
    events = [json.loads(line) for line in raw.decode().splitlines()]
    total = events[0]["total"]
    assert total == events[-1]["data"]["tile_count"] >= 1
    assert [e["completed"] for e in events[1:-1]] == list(range(1, total + 1))
    result = events[-1]["data"]
    assert (result["type"], result["format"]) == ("b64_json", "tiff")
    assert base64.b64decode(result["data"])[:4] in (b"II*\x00", b"MM\x00*")


def test_pooling_geotiff_bad_raster_is_400(geotiff_http_server: HttpServer):
    status, raw = curl(f"{geotiff_http_server.base_url}/pooling",
                       {"data": {"geotiff": base64.b64encode(b"not a tiff").decode()}})
    assert status == 400, raw
    assert json.loads(raw)["error"]["reason"] == "INVALID_PAYLOAD"
