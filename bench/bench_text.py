"""Text-embedding benchmark: the same sentences through four paths, side by side.

    .venv/bin/python bench/bench_text.py            # CPU, all-MiniLM-L6-v2
    .venv/bin/python bench/bench_text.py --device cuda --dtype float16 --n 8192

- (ref) sentence-transformers ``encode(batch_size=32)`` in-process;
- (a)   our ``BertEmbeddingModel`` called directly: batches of 32 sorted by
        length (tokenize + forward + normalise), the ceiling for (b) and (c);
- (b)   ``AsyncEngine`` in-process, ``--concurrency`` concurrent single-text
        requests, in its own process (``bench/engine_worker.py``: two torch
        thread pools in one process slow each other, see engine/cpu_threads.py);
- (c)   ``poolstream serve`` in a subprocess, driven by ``bench/grpc_load.py`` in
        another process: single-text calls at ``--concurrency`` (streaming
        ``Encode`` and unary ``EncodeAll``), and 32-sentence calls at
        ``--batch-concurrency``.

(ref) and (a) run on this process's main thread, one after the other; (b) and
(c) sit idle (no CPU) while the others run.

Then single-request latency: one sentence via a direct forward, via the
engine, and via gRPC (sequential calls); the gRPC overhead is the p50
difference. A second overhead column subtracts each call's own batch time
(the direct path times its batch; the engine reports it, over gRPC in the
poolstream-inference-time-ms trailer), since the forward itself runs up to
~1 ms faster or slower in one process than in another. A health Check from
the same client, in the same blocks, gives the bare gRPC round trip
(transport and client) for scale. Where the Go latency probe is built
(clients/go, ``make client-build``), the same calls are also made from Go,
which shows the server's overhead without the Python client's own cost.

Each throughput is the median of ``--rounds`` interleaved rounds (the paths
alternate, so background load hits them alike).
Markdown goes to stdout and, with ``--save``, to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
GO_LATENCY = HERE.parent / "clients" / "go" / "bin" / "poolstream-go-latency"
sys.path.insert(0, str(HERE))
from sentences import sentences  # noqa: E402

from poolstream.config import default_model_path  # noqa: E402
from poolstream.engine.processor import load_tokenizer  # noqa: E402
from poolstream.engine.runner import resolve_device, resolve_dtype  # noqa: E402
from poolstream.models.model_dir import read_model_dir  # noqa: E402
from poolstream.models.registry import resolve_model_class  # noqa: E402


class Direct:
    """(a): the model's batched forward with no engine around it."""

    def __init__(self, path: str, device: torch.device, dtype: torch.dtype):
        mdir = read_model_dir(path)
        self.model = resolve_model_class(mdir.architecture).load(Path(path), mdir.hf_config, device, dtype)
        self.tok = load_tokenizer(mdir.tokenizer_file)
        self.tok.enable_truncation(mdir.max_model_len)
        self.device = device

    def _forward(self, ids: list[list[int]]) -> torch.Tensor:
        seq = max(map(len, ids))
        inp = torch.zeros((len(ids), seq), dtype=torch.int64)
        mask = torch.zeros((len(ids), seq), dtype=torch.int64)
        for i, row in enumerate(ids):
            inp[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        out = self.model.forward_tokens(inp.to(self.device), mask.to(self.device))
        return F.normalize(out.float(), dim=-1).cpu()

    def encode(self, texts: list[str], batch_size: int = 32) -> float:
        t0 = time.perf_counter()
        ids = [e.ids for e in self.tok.encode_batch(texts)]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        with torch.inference_mode():
            for s in range(0, len(order), batch_size):
                self._forward([ids[i] for i in order[s:s + batch_size]])
        return time.perf_counter() - t0

    def one(self, text: str) -> tuple[float, float]:
        """(seconds in all, seconds of the batch alone: collation, forward, normalisation)."""
        t0 = time.perf_counter()
        with torch.inference_mode():
            ids = [self.tok.encode(text).ids]
            t1 = time.perf_counter()
            self._forward(ids)
        t2 = time.perf_counter()
        return t2 - t0, t2 - t1


class EngineWorker:
    """(b): ``bench/engine_worker.py`` in a subprocess, driven over stdin/stdout."""

    def __init__(self, model: str, args: argparse.Namespace):
        cmd = [sys.executable, str(HERE / "engine_worker.py"), "--model", model, "--device", args.device,
               "--dtype", args.dtype, "--num-threads", str(args.server_threads or args.threads)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not ready:
            raise RuntimeError(f"engine worker exited with {self.proc.wait()}")

    def ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return json.loads(self.proc.stdout.readline())  # type: ignore[union-attr]

    def load(self, n: int, concurrency: int, tag: str) -> dict:
        return self.ask(op="load", n=n, concurrency=concurrency, seed=0, tag=tag)

    def latencies(self, n: int, seed: int, tag: str) -> list[tuple[float, float]]:
        """(seconds in all, seconds of the engine's batch) per sequential request."""
        out = self.ask(op="latency", n=n, seed=seed, tag=tag)
        return [(x / 1e3, y / 1e3) for x, y in zip(out["latencies_ms"], out["inference_ms"])]

    def close(self) -> None:
        self.proc.stdin.close()  # type: ignore[union-attr]
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Server:
    """(c): ``poolstream serve`` as a subprocess on an ephemeral port."""

    def __init__(self, model: str, args: argparse.Namespace):
        self.tmp = Path(tempfile.mkdtemp(prefix="poolstream-bench-"))
        port_file = self.tmp / "port"
        script = Path(sys.executable).parent / "poolstream"
        # `python -m poolstream` where packages were installed without scripts (pip --target).
        launcher = [str(script)] if script.exists() else [sys.executable, "-m", "poolstream"]
        cmd = [*launcher, "serve", "--model", model, "--host", "127.0.0.1",
               "--port", "0", "--port-file", str(port_file), "--device", args.device, "--dtype", args.dtype,
               "--no-access-log"]
        if (args.server_threads or args.threads) > 0:
            cmd += ["--num-threads", str(args.server_threads or args.threads)]
        self.log = open(self.tmp / "server.log", "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while not port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError((self.tmp / "server.log").read_text(errors="replace")[-2000:])
            time.sleep(0.1)
        self.address = f"127.0.0.1:{int(port_file.read_text())}"

    def load(self, n: int, concurrency: int, per_request: int, seed: int = 0, rpc: str = "Encode") -> dict:
        out = subprocess.run(
            [sys.executable, str(HERE / "grpc_load.py"), "--address", self.address, "--n", str(n),
             "--concurrency", str(concurrency), "--per-request", str(per_request), "--seed", str(seed),
             "--rpc", rpc],
            capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    def go_latencies(self, texts: list[str]) -> dict | None:
        """Sequential one-prompt calls from the Go client (clients/go, ``make client-build``),
        or None where it is not built."""
        if not GO_LATENCY.exists():
            return None
        out = subprocess.run([str(GO_LATENCY), "--addr", self.address, "--warmup", "3"],
                             input="\n".join(t.replace("\n", " ") for t in texts), capture_output=True,
                             text=True, check=True)
        return json.loads(out.stdout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model directory (default: the embedded all-MiniLM-L6-v2)")
    ap.add_argument("--n", type=int, default=512, help="sentences per throughput run")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--batch-concurrency", type=int, default=4, help="concurrent 32-sentence gRPC calls")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--latency-n", type=int, default=200, help="sequential single-sentence calls per path")
    ap.add_argument("--threads", type=int, default=0, help="torch threads everywhere (0: torch's default)")
    ap.add_argument("--server-threads", type=int, default=0,
                    help="torch threads of the engine in (b) and the server in (c) only (0: as --threads)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"])
    ap.add_argument("--no-grpc", action="store_true")
    ap.add_argument("--no-st", action="store_true")
    ap.add_argument("--save", action="store_true", help="also write bench/results/<timestamp>.md")
    args = ap.parse_args()

    model = args.model or default_model_path()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    texts = sentences(args.n)
    load_before = os.getloadavg()

    st = None
    if not args.no_st:
        from sentence_transformers import SentenceTransformer  # reference only

        st = SentenceTransformer(model, device=str(device))
        if dtype == torch.float16:
            st.half()
        elif dtype == torch.bfloat16:
            st.bfloat16()
    direct = Direct(model, device, dtype)
    engine = EngineWorker(model, args)
    server, skip_reason = None, ""
    if not args.no_grpc:
        try:
            server = Server(model, args)
        except (RuntimeError, FileNotFoundError) as e:
            skip_reason = f"server did not start: {str(e).strip().splitlines()[-1] if str(e).strip() else e}"
    else:
        skip_reason = "--no-grpc"

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    # Warm every path once.
    if st:
        st.encode(texts[:64], batch_size=32)
    direct.encode(texts[:64])
    engine.load(64, args.concurrency, "warm")
    if server:
        server.load(128, args.concurrency, 1, seed=1)

    runs: dict[str, list[dict]] = {k: [] for k in ("ref", "a", "b", "c1", "c1u", "c32")}
    for r in range(args.rounds):
        if st:
            t0 = time.perf_counter()
            st.encode(texts, batch_size=32)
            sync()
            runs["ref"].append({"throughput": args.n / (time.perf_counter() - t0)})
        dt = direct.encode(texts)
        sync()
        runs["a"].append({"throughput": args.n / dt})
        runs["b"].append(engine.load(args.n, args.concurrency, f"b{r}"))
        if server:
            runs["c1"].append(server.load(args.n, args.concurrency, 1))
            runs["c1u"].append(server.load(args.n, args.concurrency, 1, rpc="EncodeAll"))
            runs["c32"].append(server.load(args.n, args.batch_concurrency, 32))

    # Single-request latency: sequential calls, the three paths alternating in blocks
    # of 20 so that background load drifts hit them alike.
    # Each sample is (seconds in all, seconds of the batch: collation, forward and
    # post-processing, as the engine's poolstream-inference-time-ms trailer reports it).
    lat_direct: list[tuple[float, float]] = []
    lat_engine: list[tuple[float, float]] = []
    lat_grpc: dict[str, list[tuple[float, float]]] = {
        k: [] for k in ("result", "closed", "unary", "rtt", "go_result", "go_closed", "go_unary", "go_rtt")}

    def pairs(totals_ms: list[float], batches_ms: list[float]) -> list[tuple[float, float]]:
        return [(t / 1e3, b / 1e3) for t, b in zip(totals_ms, batches_ms)]

    for block in range(max(1, args.latency_n // 20)):
        one = sentences(20, seed=100 + block)
        lat_direct += [direct.one(t) for t in one]
        lat_engine += engine.latencies(20, 100 + block, f"l{block}")
        if server:
            streamed = server.load(20, 1, 1, seed=100 + block)
            lat_grpc["result"] += pairs(streamed["result_latencies_ms"], streamed["inference_ms"])
            lat_grpc["closed"] += pairs(streamed["latencies_ms"], streamed["inference_ms"])
            unary = server.load(20, 1, 1, seed=100 + block, rpc="EncodeAll")
            lat_grpc["unary"] += pairs(unary["latencies_ms"], unary["inference_ms"])
            rtt = server.load(20, 1, 1, seed=100 + block, rpc="Check")
            lat_grpc["rtt"] += pairs(rtt["latencies_ms"], rtt["inference_ms"])
            go = server.go_latencies(one)
            if go:
                lat_grpc["go_result"] += pairs(go["result_ms"], go["inference_ms"])
                lat_grpc["go_closed"] += pairs(go["closed_ms"], go["inference_ms"])
                lat_grpc["go_unary"] += pairs(go["unary_ms"], go["unary_inference_ms"])
                lat_grpc["go_rtt"] += pairs(go["rtt_ms"], [0.0] * len(go["rtt_ms"]))
    load_after = os.getloadavg()

    engine.close()
    if server:
        server.close()

    report = render(args, device, dtype, runs, lat_direct, lat_engine, lat_grpc, skip_reason,
                    load_before, load_after)
    print(report)
    if args.save:
        out = HERE / "results" / time.strftime(f"%Y%m%d-%H%M%S-{device.type}.md")
        out.parent.mkdir(exist_ok=True)
        out.write_text(report)


def render(args, device, dtype, runs, lat_direct, lat_engine, lat_grpc, skip_reason, load_before,
           load_after) -> str:
    def med(key: str, field: str = "throughput") -> float | None:
        vals = [r[field] for r in runs[key] if field in r]
        return statistics.median(vals) if vals else None

    lines = [
        f"## poolstream text benchmark ({device}, {str(dtype).removeprefix('torch.')})",
        "",
        f"- {args.n} sentences (5-40 words) per run, {args.rounds} interleaved rounds; throughput and "
        "latency are medians over rounds, ratios the median of per-round ratios; "
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, torch threads "
        f"{args.threads or torch.get_num_threads()} (engine/server: {args.server_threads or 'same'}), "
        f"Python {platform.python_version()}",
        f"- load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} "
        "(a shared machine makes every figure noisy; compare ratios within this run)",
        "",
        "| path | sentences/s | p50 ms | p99 ms | vs (a) | vs (ref) |",
        "|---|---:|---:|---:|---:|---:|",
    ]

    def ratio(key: str, base: str) -> str:
        # Median of per-round ratios: each round's paths ran back to back, so a ratio
        # within a round cancels most of the background-load drift between rounds.
        pairs = [x["throughput"] / y["throughput"] for x, y in zip(runs[key], runs[base])]
        return f"{statistics.median(pairs):.2f}" if pairs else ""

    def row(name: str, key: str) -> None:
        thr = med(key)
        if thr is None:
            return
        p50, p99 = med(key, "p50_ms"), med(key, "p99_ms")
        cells = [f"{thr:,.0f}", "" if p50 is None else f"{p50:.1f}", "" if p99 is None else f"{p99:.1f}",
                 ratio(key, "a"), ratio(key, "ref")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    row("(ref) sentence-transformers encode(batch_size=32)", "ref")
    row("(a) direct forward, batch 32 sorted by length", "a")
    row(f"(b) AsyncEngine in-process, {args.concurrency} concurrent single-text", "b")
    row(f"(c) gRPC Encode, {args.concurrency} concurrent single-text calls", "c1")
    row(f"(c) gRPC EncodeAll (unary), {args.concurrency} concurrent single-text calls", "c1u")
    row(f"(c) gRPC Encode, {args.batch_concurrency} concurrent 32-sentence calls", "c32")
    if skip_reason:
        lines.append(f"\n(c) skipped: {skip_reason}")
    b_batch = med("b", "avg_batch")
    if b_batch:
        lines.append(f"\n(b) average engine batch: {b_batch:.1f} prompts")
    def p50(samples: list[tuple[float, float]]) -> float:
        return 1e3 * statistics.median(t for t, _ in samples)

    def around(samples: list[tuple[float, float]]) -> float:
        """p50 of the time around the batch: each sample's total minus its own batch time.
        The forward's speed differs by up to ~1 ms between processes on this machine
        (memory placement), so this compares the server with the direct path without
        that noise; what is left is tokenization plus everything not model work."""
        return 1e3 * statistics.median(t - b for t, b in samples)

    d50, e50, d_around = p50(lat_direct), p50(lat_engine), around(lat_direct)
    lines += ["", "### single-request latency (sequential, one sentence)", "",
              "| path | p50 ms | overhead vs direct | overhead, each side's batch time subtracted |",
              "|---|---:|---:|---:|",
              f"| direct forward (tokenize + forward) | {d50:.2f} | | |",
              f"| AsyncEngine in-process | {e50:.2f} | {e50 - d50:+.2f} ms | "
              f"{around(lat_engine) - d_around:+.2f} ms |"]
    for client, prefix in (("Python grpc.aio client", ""), ("Go client", "go_")):
        for key, name in (("result", "gRPC Encode, result received"),
                          ("closed", "gRPC Encode, stream closed (status received)"),
                          ("unary", "gRPC EncodeAll (unary), response received")):
            if lat_grpc.get(prefix + key):
                samples = lat_grpc[prefix + key]
                g50 = p50(samples)
                lines.append(f"| {name} ({client}, another process) | {g50:.2f} | {g50 - d50:+.2f} ms | "
                             f"{around(samples) - d_around:+.2f} ms |")
        if lat_grpc.get(prefix + "rtt"):
            # The same client's bare round trip: how much of the gRPC overhead is transport and
            # client, which no server change removes (the server's own share is the rest).
            lines.append(f"| gRPC health Check ({client}: bare round trip, no model work) | "
                         f"{p50(lat_grpc[prefix + 'rtt']):.2f} | | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
