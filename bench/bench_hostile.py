"""One sender's largest allowed request vs everyone else: small-call latency and server RSS.

    .venv/bin/python bench/bench_hostile.py [--seconds 20] [--save] [--code-dir DIR]

Starts ``poolstream serve`` twice in subprocesses (the embedded MiniLM; the Prithvi demo
model for tensors), with the default limits. For each, a probe sends one small call at a
time (one short text; one 64x64 tile) and records its latency:

- idle;
- while one sender, on its own connection, sends the largest requests the limits allow,
  back to back: EncodeAll with as many texts of ``--max-prompt-chars`` (1,000,000) as
  ``--max-request-chars`` (16,000,000) allows (16), as prose, and again without any
  whitespace (the text cut cannot prove a prefix, so each text is read whole, on the
  tokenizer's second thread); then tiles at ``--max-prompt-tensor-cost`` (1024x1024x6
  float32, 24 MiB each), 4 per request (96 MiB).

Reports p50 / p90 / max latency, the ratio of p50 and p90 to idle, the server's peak RSS
(sampled every 50 ms) and the sender's throughput. ``--code-dir`` runs the servers from
another checkout's ``service/`` (e.g. main before this change) for a side-by-side run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import grpc
import numpy as np

from poolstream.v1 import pooling_pb2, tensor_pb2
from poolstream.v1 import pooling_service_pb2 as pb
from poolstream.v1 import pooling_service_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
OPTS = [("grpc.max_send_message_length", 512 << 20), ("grpc.max_receive_message_length", 512 << 20)]


def start_server(extra: list[str], code_dir: str | None) -> tuple[subprocess.Popen, str]:
    port_file = Path(tempfile.mkdtemp()) / "port"
    env = dict(os.environ)
    if code_dir:
        env["PYTHONPATH"] = os.pathsep.join([f"{code_dir}/service", f"{code_dir}/plugins/text_embedding",
                                             f"{code_dir}/plugins/geotiff_segmentation/src"])
    proc = subprocess.Popen(
        [str(BIN / "poolstream"), "serve", "--port", "0", "--port-file", str(port_file), "--log-level", "WARNING",
         *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
    deadline = time.monotonic() + 180
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.05)
    return proc, f"127.0.0.1:{int(port_file.read_text())}"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Sampler(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, rss_mib(self.pid))
            except OSError:
                return
            self.stop.wait(0.05)


def probe(stub, request, seconds: float, stop: threading.Event | None = None) -> list[float]:
    lat: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end and not (stop and stop.is_set()):
        t0 = time.perf_counter()
        list(stub.Encode(request, timeout=600))
        lat.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.02)
    return lat


def sender(address: str, request, stop: threading.Event, counts: dict) -> None:
    with grpc.insecure_channel(address, options=OPTS) as ch:
        stub = pb_grpc.PoolingServiceStub(ch)
        while not stop.is_set():
            try:
                resp = stub.EncodeAll(request, timeout=600)
                counts["ok"] = counts.get("ok", 0) + sum(r.HasField("output") for r in resp.results)
                counts["refused"] = counts.get("refused", 0) + sum(r.HasField("error") for r in resp.results)
            except grpc.RpcError as e:
                counts[e.code().name] = counts.get(e.code().name, 0) + 1
                time.sleep(0.5)
            counts["requests"] = counts.get("requests", 0) + 1


def phase(name: str, address: str, pid: int, small, big, seconds: float, rows: list) -> list[float]:
    with grpc.insecure_channel(address, options=OPTS) as ch:
        stub = pb_grpc.PoolingServiceStub(ch)
        probe(stub, small, 1.0)  # warm
        sampler = Sampler(pid)
        sampler.start()
        stop, counts = threading.Event(), {}
        t0 = time.monotonic()
        th = None
        if big is not None:
            th = threading.Thread(target=sender, args=(address, big, stop, counts), daemon=True)
            th.start()
            time.sleep(1.0)  # the first big request is in flight
        lat = probe(stub, small, seconds)
        stop.set()
        if th is not None:
            th.join(600)
        elapsed = time.monotonic() - t0
        sampler.stop.set()
        sampler.join()
    # Fewer than two probe calls finished: a call waited the whole phase (p90 = max).
    p90 = statistics.quantiles(lat, n=10)[8] if len(lat) >= 2 else max(lat)
    rows.append((name, len(lat), statistics.median(lat), p90, max(lat), sampler.peak, counts, elapsed))
    print(f"{name}: n={len(lat)} p50={statistics.median(lat):.1f} p90={p90:.1f} max={max(lat):.1f} ms "
          f"peak RSS {sampler.peak:.0f} MiB sender={counts}", flush=True)
    return lat


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--save", action="store_true")
    ap.add_argument("--code-dir", default=None, help="serve from this checkout's service/ (side-by-side runs)")
    ap.add_argument("--skip-tensor", action="store_true")
    args = ap.parse_args()
    rows: list = []

    proc, address = start_server([], args.code_dir)
    try:
        small = pb.EncodeRequest(prompts=[pooling_pb2.Prompt(text="a small call")])
        prose = ("the quick brown fox jumps over the lazy dog " * 25_000)[:1_000_000]
        nospace = ("ab," * 400_000)[:1_000_000]
        phase("text: idle", address, proc.pid, small, None, args.seconds, rows)
        phase("text: 16 x 1,000,000-char prose texts per request", address, proc.pid, small,
              pb.EncodeAllRequest(prompts=[pooling_pb2.Prompt(text=prose)] * 16), args.seconds, rows)
        phase("text: 16 x 1,000,000-char texts without whitespace", address, proc.pid, small,
              pb.EncodeAllRequest(prompts=[pooling_pb2.Prompt(text=nospace)] * 16), args.seconds, rows)
    finally:
        proc.terminate()
        proc.wait(60)

    if not args.skip_tensor:
        proc, address = start_server(["--model", str(ROOT / "models" / "prithvi-water-demo")], args.code_dir)
        try:
            def tile(hw: int) -> pooling_pb2.Prompt:
                x = np.random.default_rng(0).standard_normal((6, hw, hw)).astype("<f4")
                t = tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_FLOAT32, shape=list(x.shape), data=x.tobytes())
                return pooling_pb2.Prompt(multi_modal=pooling_pb2.MultiModalPrompt(
                    multi_modal_data={"pixel_values": t}))

            small_tile = pb.EncodeRequest(prompts=[tile(64)])
            phase("tensor: idle (64x64 tile)", address, proc.pid, small_tile, None, args.seconds, rows)
            phase("tensor: 4 x 1024x1024x6 float32 tiles per request", address, proc.pid, small_tile,
                  pb.EncodeAllRequest(prompts=[tile(1024)] * 4), args.seconds, rows)
        finally:
            proc.terminate()
            proc.wait(60)

    lines = ["| phase | probe calls | p50 ms | p90 ms | max ms | p50 / idle | p90 / idle | server peak RSS MiB "
             "| sender |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    idle = None
    for name, n, p50, p90, mx, peak, counts, _ in rows:
        if name.endswith("idle") or "idle (" in name:
            idle = (p50, p90)
        r50 = f"{p50 / idle[0]:.2f}" if idle else ""
        r90 = f"{p90 / idle[1]:.2f}" if idle else ""
        lines.append(f"| {name} | {n} | {p50:.1f} | {p90:.1f} | {mx:.1f} | {r50} | {r90} | {peak:.0f} | {counts} |")
    table = "\n".join(lines)
    print(table)
    if args.save:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        out = ROOT / "bench" / "results" / f"{stamp}-hostile-cpu.md"
        code = args.code_dir or "this checkout"
        out.write_text(
            f"# Largest allowed requests vs a small caller ({stamp} UTC, code: {code})\n\n"
            f"`.venv/bin/python bench/bench_hostile.py --seconds {args.seconds:g}"
            f"{' --code-dir ' + args.code_dir if args.code_dir else ''} --save`; torch CPU, 2 cores, "
            "**machine shared with 7 other helpers' builds and tests** (noisy: compare ratios within a run).\n\n"
            + table + "\n")
        print(f"saved {out}")


if __name__ == "__main__":
    main()
