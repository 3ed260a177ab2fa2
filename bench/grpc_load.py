"""gRPC load client for bench_text.py, run as its own process so its CPU use is visible.

    python bench/grpc_load.py --address 127.0.0.1:PORT --concurrency 64 --per-request 1 --n 512

Each of ``concurrency`` workers sends Encode (or, with ``--rpc EncodeAll``,
EncodeAll) calls of ``per-request`` sentences
back to back until ``n`` sentences were sent. ``--rpc Check`` sends ``n`` health
checks instead: the bare round trip of this client, with no model work. Prints one JSON line:
{"sentences", "elapsed_s", "throughput", "p50_ms", "p99_ms", "errors"}, and for runs of
up to 2000 calls the per-call "latencies_ms", "result_latencies_ms" and "inference_ms"
(the server's engine time from its poolstream-inference-time-ms trailer).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sentences import sentences  # noqa: E402

from poolstream.v1 import pooling_pb2, pooling_service_pb2, pooling_service_pb2_grpc  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def run(address: str, concurrency: int, per_request: int, n: int, warmup: int, seed: int,
              rpc: str = "Encode") -> dict:
    texts = sentences(n, seed=seed)
    message = pooling_service_pb2.EncodeAllRequest if rpc == "EncodeAll" else pooling_service_pb2.EncodeRequest
    requests = [
        message(prompts=[pooling_pb2.Prompt(text=t) for t in texts[i:i + per_request]])
        if rpc != "Check" else health_pb2.HealthCheckRequest()
        for i in range(0, n, per_request)
    ]
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pooling_service_pb2_grpc.PoolingServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)

        async def call(req) -> tuple[int, float, float, float]:
            """(failed prompts, time.perf_counter() when the last result arrived, when the
            call completed, the server's poolstream-inference-time-ms trailer or nan)."""
            if rpc == "Check":  # unary, answered by the health servicer: no engine work
                await health.Check(req)
                now = time.perf_counter()
                return 0, now, now, float("nan")
            if rpc == "EncodeAll":  # unary: one response with every result
                c = stub.EncodeAll(req)
                results = (await c).results
                now = time.perf_counter()
                return sum(r.HasField("error") for r in results), now, now, inference_ms(await c.trailing_metadata())
            errors, last = 0, 0.0
            c = stub.Encode(req)
            async for resp in c:
                errors += resp.HasField("error")
                last = time.perf_counter()
            # The stream has closed (status received) by now.
            return errors, last, time.perf_counter(), inference_ms(await c.trailing_metadata())

        for req in requests[:warmup]:
            await call(req)
        queue = list(reversed(requests))
        latencies: list[float] = []  # call start -> call complete (status received)
        result_latencies: list[float] = []  # call start -> last result received
        inference: list[float] = []  # the server's engine time for the call (ms)
        errors = 0

        async def worker() -> None:
            nonlocal errors
            while queue:
                req = queue.pop()
                t = time.perf_counter()
                failed, last, done, engine_ms = await call(req)
                errors += failed
                latencies.append(done - t)
                result_latencies.append(last - t)
                inference.append(engine_ms)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return {
        "sentences": n,
        "elapsed_s": elapsed,
        "throughput": n / elapsed,
        "p50_ms": 1e3 * statistics.median(latencies),
        "p99_ms": 1e3 * percentile(latencies, 0.99),
        "errors": errors,
        "latencies_ms": [1e3 * x for x in latencies] if len(latencies) <= 2000 else [],
        "result_latencies_ms": [1e3 * x for x in result_latencies] if len(latencies) <= 2000 else [],
        "inference_ms": inference if len(latencies) <= 2000 else [],
    }


def inference_ms(trailers) -> float:
    """The server's engine time for the call (server/timing.py), nan when absent."""
    for key, value in trailers or ():
        if key == "poolstream-inference-time-ms":
            return float(value)
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--address", required=True)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--per-request", type=int, default=1)
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rpc", choices=["Encode", "EncodeAll", "Check"], default="Encode",
                    help="server-streaming Encode, unary EncodeAll, or health Check (bare round trip)")
    a = ap.parse_args()
    print(json.dumps(asyncio.run(run(a.address, a.concurrency, a.per_request, a.n, a.warmup, a.seed, a.rpc))))


if __name__ == "__main__":
    main()
