"""GeoTIFF segmentation: the server's tiles/s against the bare forward on the same windows.

One 2048 x 2048 x 6 int16 scene (deflate GeoTIFF, the demo model's units),
cut into 224 px windows with 32 px overlap (121 windows), measured side by
side in one run, rounds interleaved, medians:

- (a) bare forward: the demo model called directly on the plugin's own
  normalised windows (float16 views stacked and cast as the engine's runner
  does), in batches of the engine's batch size (its token budget divided by
  a window's cost), torch on every CPU of this process;
- (c) server: ``poolstream serve`` in another process, the GeoTIFF's bytes
  sent in one ``Process`` call by this process, timed from send to the
  class map GeoTIFF received (transfer, decode, normalisation, windowing,
  engine, blending and encoding all inside).

``python bench/bench_geotiff.py [--rounds 3] [--size 2048] [--save]``;
``--save`` writes bench/results/<time>-geotiff.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from poolstream.config import EngineConfig, ModelConfig, PoolstreamConfig  # noqa: E402
from poolstream.entrypoints.protocol import IOProcessorRequest  # noqa: E402
from poolstream.models.prithvi import PrithviSegmentationModel  # noqa: E402
from poolstream.payloads.geotiff.v1 import geotiff_segmentation_pb2 as geo  # noqa: E402
from poolstream.v1 import pooling_service_pb2 as ps  # noqa: E402
from poolstream.v1 import pooling_service_pb2_grpc  # noqa: E402
from poolstream_geotiff import raster, synthetic  # noqa: E402
from poolstream_geotiff.processor import GeoTiffSegmentationProcessor  # noqa: E402

MODEL_DIR = ROOT / "models" / "prithvi-water-demo"
MiB = 1 << 20


def make_scene(size: int) -> tuple[bytes, np.ndarray]:
    """A size x size scene: mirrored copies of a 1024 px synthetic scene (fast to make)."""
    base = synthetic.make_scene(1024, 1024, 9_100_000)
    reps = -(-size // 1024)

    def mosaic(a: np.ndarray) -> np.ndarray:
        rows = [np.concatenate([a[..., ::sy, ::sx] for sx in [1, -1] * reps][:reps], axis=-1)
                for sy in ([1, -1] * reps)[:reps]]
        return np.concatenate(rows, axis=-2)[..., :size, :size]

    bands, label = mosaic(base.bands), mosaic(base.label)
    buf = io.BytesIO()
    tags = raster.geotiff_georef_tags(32633, (399960.0, 5900040.0), 30.0)
    raster.write_multiband_geotiff(buf, np.ascontiguousarray(bands), tags, nodata=synthetic.NODATA,
                                   compression="zlib")
    return buf.getvalue(), label


def windows(data: bytes) -> tuple[list[torch.Tensor], int]:
    """The plugin's own windows (normalised float16 views) and the engine's batch size for them."""
    config = PoolstreamConfig(ModelConfig.from_dir(MODEL_DIR))
    proc = GeoTiffSegmentationProcessor(config)
    job = proc.parse_request(IOProcessorRequest(data=geo.GeoTiffSegmentationRequest(geotiff=data)))
    prompts = proc.pre_process(job, "bench", parsed_request=job)
    tiles = [p["multi_modal_data"]["pixel_values"] for p in prompts]
    cost = -(-tiles[0].shape[-1] * tiles[0].shape[-2] // 64)  # PrithviSegmentationModel.tensor_prompt_cost
    engine = EngineConfig()
    batch = max(1, min(engine.max_num_seqs, engine.max_num_batched_tokens // cost))
    return tiles, batch


def bare_forward(model: PrithviSegmentationModel, tiles: list[torch.Tensor], batch: int) -> float:
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(tiles), batch):
            x = torch.stack(tiles[i:i + batch]).to(torch.float32)
            model.forward_tensors(pixel_values=x)
    return len(tiles) / (time.perf_counter() - t0)


def start_server() -> tuple[subprocess.Popen, str]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-geotiff-"))
    port_file = tmp / "port"
    proc = subprocess.Popen(
        [sys.executable, "-m", "poolstream", "serve", "--model", str(MODEL_DIR), "--host", "127.0.0.1",
         "--port", "0", "--port-file", str(port_file)],
        stdout=open(tmp / "log", "wb"), stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + 180
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError((tmp / "log").read_text())
        time.sleep(0.1)
    return proc, f"127.0.0.1:{int(port_file.read_text())}"


def server_call(stub: pooling_service_pb2_grpc.PoolingServiceStub,
                data: bytes) -> tuple[float, geo.GeoTiffSegmentationResponse]:
    req = ps.ProcessRequest()
    req.data.typed.Pack(geo.GeoTiffSegmentationRequest(geotiff=data))
    t0 = time.perf_counter()
    resp = stub.Process(req, timeout=600)
    elapsed = time.perf_counter() - t0
    out = geo.GeoTiffSegmentationResponse()
    resp.data.typed.Unpack(out)
    return elapsed, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--save", action="store_true")
    args = ap.parse_args()

    data, label = make_scene(args.size)
    tiles, batch = windows(data)
    hf = json.loads((MODEL_DIR / "config.json").read_text())
    model = PrithviSegmentationModel.load(MODEL_DIR, hf, torch.device("cpu"), torch.float32)
    torch.set_num_threads(os.cpu_count() or 1)
    server, address = start_server()
    opts = [("grpc.max_send_message_length", 256 * MiB), ("grpc.max_receive_message_length", 256 * MiB)]
    channel = grpc.insecure_channel(address, options=opts)
    stub = pooling_service_pb2_grpc.PoolingServiceStub(channel)
    try:
        # Warm-up: one of each (first-call allocations, thread pools).
        bare_forward(model, tiles[:batch], batch)
        _, out = server_call(stub, data)
        mask = raster_mask(out.data)
        iou = synthetic.iou(mask, label, synthetic.WATER)
        bare, served, served_s = [], [], []
        for r in range(args.rounds):
            bare.append(bare_forward(model, tiles, batch))
            s, out = server_call(stub, data)
            served_s.append(s)
            served.append(len(tiles) / s)
            print(f"round {r}: bare {bare[-1]:.1f} tiles/s, server {served[-1]:.1f} tiles/s ({s:.2f} s)",
                  flush=True)
    finally:
        channel.close()
        server.terminate()
        server.wait(30)
    a, c = statistics.median(bare), statistics.median(served)
    lines = [
        f"# GeoTIFF segmentation: server vs bare forward ({args.size} x {args.size} x 6)",
        "",
        f"`python bench/bench_geotiff.py --rounds {args.rounds} --size {args.size}`; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}); the machine was shared "
        "with 7 other helpers' builds and tests during the run (ratios are what to compare).",
        "",
        f"{len(tiles)} windows of {tiles[0].shape[-1]} px, engine batch {batch}; "
        f"{len(data) / MiB:.1f} MiB deflate GeoTIFF in; water IoU of the served map {iou:.3f}.",
        "",
        "| path | tiles/s (median) | rounds | vs bare forward |",
        "|---|---:|---|---:|",
        f"| (a) bare forward on the plugin's windows | {a:.1f} | {', '.join(f'{v:.1f}' for v in bare)} | 1.00 |",
        f"| **(c) gRPC `Process`, bytes in, GeoTIFF out** | {c:.1f} | {', '.join(f'{v:.1f}' for v in served)} "
        f"| **{c / a:.2f}** |",
        "",
        f"Server wall time per call: {', '.join(f'{v:.2f} s' for v in served_s)}.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.save:
        out_dir = ROOT / "bench" / "results"
        out_dir.mkdir(exist_ok=True)
        path = out_dir / f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-geotiff.md"
        path.write_text(text)
        print(f"saved {path.relative_to(ROOT)}")


def raster_mask(data: bytes) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        return tif.pages.first.asarray()


if __name__ == "__main__":
    main()
