"""Where the engine's time goes under load: per-iteration stage times of the core
thread, and CPU time per prompt of each thread.

    .venv/bin/python bench/engine_stages.py                        # CPU, embedded model
    python3 bench/engine_stages.py --device cuda --model DIR --n 8192 --profile 25

``--concurrency`` clients each send one text at a time (path (b) of
bench_text.py). The core thread's methods are wrapped with timers (the engine
code is unchanged); ``--switch-interval`` runs the load once per value of
``sys.setswitchinterval`` (how long a thread may hold the GIL while another
waits for it), side by side in one process; ``--profile N`` prints the core
thread's N costliest functions (cProfile) for the first value; ``--rounds``
repeats the load on the same engine (warm-up effects show as a drift);
``--torch-profile`` records the core thread with torch.profiler (its ops,
and CUDA kernels on a GPU) for a Chrome trace and an op table.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_worker import engine_load  # noqa: E402
from sentences import sentences  # noqa: E402

from poolstream.config import EngineConfig, ModelConfig, PoolstreamConfig, default_model_path  # noqa: E402
from poolstream.engine import AsyncEngine  # noqa: E402

STAGES = ("_ingest", "_schedule", "_execute", "_complete", "deliver")


def instrument(core, times: dict[str, list[float]], shapes: list[tuple[float, int, int]]) -> None:
    """Wrap the core's stage methods (instance attributes shadow the class's); ``shapes``
    gets (execute seconds, batch size, longest prompt) per batch."""
    for name in STAGES:
        fn = getattr(core, name)

        def timed(*a, _fn=fn, _name=name, **kw):
            t0 = time.perf_counter()
            try:
                return _fn(*a, **kw)
            finally:
                dt = time.perf_counter() - t0
                times[_name].append(dt)
                if _name == "_execute":
                    batch = a[0]
                    shapes.append((dt, len(batch), max(r.cost for r in batch)))

        setattr(core, name, timed)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def torch_profiled(run, trace: str, out: list) -> callable:
    """``run`` (the core thread's loop) under torch.profiler, which records the ops of
    the thread that starts it (and CUDA kernels where there is a GPU); the Chrome
    trace goes to ``trace`` and the profile into ``out`` when the loop ends."""
    def wrapped():
        activities = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=activities) as prof:
            run()
        prof.export_chrome_trace(trace)
        out.append(prof)
    return wrapped


def thread_cpu_s() -> dict[str, float]:
    """CPU seconds of each thread of this process, by name (OS threads by id)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = defaultdict(float)
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        name = names.get(int(tid), "other (tokenizer, OpenMP, CUDA)")
        out[name] += (int(fields[11]) + int(fields[12])) / tick
    return out


async def run(args, switch: float, first: bool) -> None:
    sys.setswitchinterval(switch)
    cfg = PoolstreamConfig(ModelConfig.from_dir(args.model or default_model_path()),
                           EngineConfig(device=args.device, dtype=args.dtype, num_threads=args.num_threads))
    engine = await asyncio.to_thread(AsyncEngine.from_config, cfg)
    core = engine._core
    if args.no_script:
        core.runner.model._scripted = None  # eager encoder
    prof = cProfile.Profile() if args.profile and first else None
    if prof:
        inner = core._run

        def profiled_run():
            prof.enable()
            try:
                inner()
            finally:
                prof.disable()

        core._run = profiled_run
    tprof: list = []
    if args.torch_profile and first:
        core._run = torch_profiled(core._run, args.torch_profile, tprof)
    await engine.start()
    texts = sentences(args.n, seed=3)
    await engine_load(engine, texts[:256], args.concurrency, "warm")
    times: dict[str, list[float]] = defaultdict(list)
    shapes: list[tuple[float, int, int]] = []
    instrument(core, times, shapes)
    variant = f"switch interval {switch * 1e3:g} ms" + (", eager encoder" if args.no_script else "")
    for r in range(args.rounds):
        if prof:
            prof.clear()
        times.clear()
        shapes.clear()
        cpu0 = thread_cpu_s()
        result = await engine_load(engine, texts, args.concurrency, f"load{r}")
        cpu1 = thread_cpu_s()
        n = args.n
        print(f"\n### {variant}, round {r + 1}: {result['throughput']:,.0f} prompts/s, "
              f"avg batch {result['avg_batch']:.1f}, p50 {result['p50_ms']:.1f} ms, "
              f"{len(times['deliver'])} iterations\n")
        print("| core stage | p50 ms | p90 ms | p99 ms | max ms | total s |")
        print("|---|---:|---:|---:|---:|---:|")
        for name in STAGES:
            v = times[name]
            if v:
                print(f"| {name.strip('_')} | {1e3 * pct(v, 0.5):.3f} | {1e3 * pct(v, 0.9):.3f} | "
                      f"{1e3 * pct(v, 0.99):.3f} | {1e3 * max(v):.3f} | {sum(v):.2f} |")
        slow = sorted(shapes, reverse=True)[:5]
        print("\nslowest executes (ms, batch, longest prompt): "
              + ", ".join(f"({1e3 * t:.1f}, {b}, {s})" for t, b, s in slow))
        print("\n| thread | CPU us per prompt |\n|---|---:|")
        for name in sorted(cpu1, key=lambda k: -(cpu1[k] - cpu0.get(k, 0))):
            d = cpu1[name] - cpu0.get(name, 0)
            if d > 0:
                print(f"| {name} | {1e6 * d / n:.1f} |")
        if prof and r == args.rounds - 1:
            s = io.StringIO()
            pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(args.profile)
            print("\n```\n" + "\n".join(s.getvalue().splitlines()[:args.profile + 12]) + "\n```")
    await engine.shutdown()
    if tprof:
        print(f"\ntorch.profiler over the core thread, warm-up and every round (trace: {args.torch_profile}):"
              "\n```\n" + tprof[0].key_averages().table(sort_by="self_cpu_time_total", row_limit=25) + "\n```")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--num-threads", type=int, default=0)
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--switch-interval", type=float, nargs="+", default=[0.005], help="seconds")
    ap.add_argument("--profile", type=int, default=0, metavar="N")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--torch-profile", default=None, metavar="TRACE.json",
                    help="torch.profiler over the core thread (first variant): op table, Chrome trace to this file")
    ap.add_argument("--no-script", action="store_true", help="run the BERT encoder eagerly (no TorchScript)")
    args = ap.parse_args()
    for i, switch in enumerate(args.switch_interval):
        asyncio.run(run(args, switch, first=i == 0))


if __name__ == "__main__":
    main()
