"""Path (b) of bench_text.py: ``AsyncEngine`` in-process, in a process of its own.

Why a separate process: torch's OpenMP runtime throttles every team once a
process holds more OpenMP threads than CPUs (engine/cpu_threads.py). The
direct forward (a) and sentence-transformers (ref) run multi-threaded torch on
the bench's main thread; an engine core thread in the same process would slow
both, and be slowed by them, so the comparison would measure the clash.

Protocol: one JSON object per stdin line, one JSON result per stdout line.
    {"op": "load", "n": 256, "concurrency": 64, "seed": 0, "tag": "r0"}
        -> {"throughput", "p50_ms", "p99_ms", "avg_batch"}
    {"op": "latency", "n": 20, "seed": 100, "tag": "l0"}  -> {"latencies_ms": [...], "inference_ms": [...]}
The first line written is {"ready": true, "threads": N} once the model is loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sentences import sentences  # noqa: E402

from poolstream.config import EngineConfig, ModelConfig, PoolstreamConfig  # noqa: E402
from poolstream.engine import AsyncEngine  # noqa: E402
from poolstream.engine.cpu_threads import confine_other_threads  # noqa: E402


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def engine_load(engine: AsyncEngine, texts: list[str], concurrency: int, tag: str) -> dict:
    """``concurrency`` clients, each sending one text at a time until all are done."""
    queue = list(reversed(range(len(texts))))
    lat: list[float] = []

    inference: list[float] = []

    async def client() -> None:
        while queue:
            i = queue.pop()
            t = time.perf_counter()
            async for out in engine.encode(texts[i], None, f"{tag}-{i}"):
                inference.append(1e3 * out.timing.inference_s)
            lat.append(time.perf_counter() - t)

    b0, p0 = engine.stats.batches_executed, engine.stats.prompts_executed
    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    dt = time.perf_counter() - t0
    st = engine.stats
    return {"throughput": len(texts) / dt, "p50_ms": 1e3 * statistics.median(lat), "p99_ms": 1e3 * pct(lat, 0.99),
            "avg_batch": (st.prompts_executed - p0) / max(1, st.batches_executed - b0),
            "latencies_ms": [1e3 * x for x in lat] if len(lat) <= 64 else [],
            "inference_ms": inference if len(lat) <= 64 else []}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--num-threads", type=int, default=0)
    args = ap.parse_args()
    cfg = PoolstreamConfig(ModelConfig.from_dir(args.model),
                           EngineConfig(device=args.device, dtype=args.dtype, num_threads=args.num_threads))
    engine = await asyncio.to_thread(AsyncEngine.from_config, cfg)
    await engine.start()
    confine_other_threads(asyncio.get_running_loop())  # as the server does
    gc.collect()
    gc.freeze()  # as the server does
    await engine_load(engine, sentences(64, seed=7), 64, "warm")
    print(json.dumps({"ready": True}), flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        cmd = json.loads(line)
        texts = sentences(cmd["n"], seed=cmd.get("seed", 0))
        if cmd["op"] == "latency":  # sequential single-text requests
            lat, inference = [], []
            for i, t in enumerate(texts):
                one = await engine_load(engine, [t], 1, f"{cmd['tag']}-{i}")
                lat += one["latencies_ms"]
                inference += one["inference_ms"]
            print(json.dumps({"latencies_ms": lat, "inference_ms": inference}), flush=True)
        else:
            print(json.dumps(await engine_load(engine, texts, cmd["concurrency"], cmd["tag"])), flush=True)
    await engine.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
