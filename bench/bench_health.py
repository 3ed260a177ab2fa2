"""Health-check latency while the engine is saturated (the event loop must never block).

    .venv/bin/python bench/bench_health.py [--concurrency 64] [--n 3072]

Starts ``poolstream serve`` (embedded model) in a subprocess, measures
``grpc.health.v1.Health/Check`` latency idle, then again while
``bench/grpc_load.py`` (another process) keeps 64 single-text Encode calls in
flight. Prints a markdown table: p50 / p99 / max in ms, and how many checks
were answered SERVING.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def start_server(extra: list[str]) -> tuple[subprocess.Popen, str]:
    port_file = Path(tempfile.mkdtemp()) / "port"
    proc = subprocess.Popen(
        [str(BIN / "poolstream"), "serve", "--port", "0", "--port-file", str(port_file), "--log-level", "WARNING",
         *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.05)
    return proc, f"127.0.0.1:{int(port_file.read_text())}"


async def probe(address: str, until: asyncio.Event | None, count: int, interval: float) -> list[float | None]:
    """Check latencies in ms (None: not SERVING or failed)."""
    out: list[float | None] = []
    async with grpc.aio.insecure_channel(address) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        await stub.Check(health_pb2.HealthCheckRequest())  # connect
        while (until is None and len(out) < count) or (until is not None and not until.is_set()):
            t0 = time.perf_counter()
            try:
                resp = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                ok = resp.status == health_pb2.HealthCheckResponse.SERVING
            except grpc.aio.AioRpcError:
                ok = False
            out.append((time.perf_counter() - t0) * 1000 if ok else None)
            await asyncio.sleep(interval)
    return out


def summary(name: str, lat: list[float | None]) -> str:
    good = sorted(x for x in lat if x is not None)
    p = lambda q: good[min(len(good) - 1, int(q * len(good)))]  # noqa: E731
    return (f"| {name} | {len(good)}/{len(lat)} | {statistics.median(good):.2f} | {p(0.99):.2f} | "
            f"{good[-1]:.2f} |")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--n", type=int, default=3072)
    args = ap.parse_args()
    proc, address = start_server([])
    try:
        idle = await probe(address, None, 200, 0.005)
        done = asyncio.Event()
        load = await asyncio.create_subprocess_exec(
            sys.executable, str(HERE / "grpc_load.py"), "--address", address,
            "--concurrency", str(args.concurrency), "--n", str(args.n),
            stdout=subprocess.PIPE,
        )
        await asyncio.sleep(1.0)  # let the queue fill
        prober = asyncio.create_task(probe(address, done, 0, 0.01))
        out, _ = await load.communicate()
        done.set()
        busy = await prober
        print(f"## health Check latency, idle vs engine saturated ({os.cpu_count()} CPUs)\n")
        print("| server state | SERVING answers | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|")
        print(summary("idle", idle))
        print(summary(f"{args.concurrency} concurrent Encode calls in flight", busy))
        print(f"\nload during the saturated phase: {out.decode().strip()}")
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    asyncio.run(main())
