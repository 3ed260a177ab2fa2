"""HTTP front door overhead: OpenAI ``/v1/embeddings`` against gRPC ``EncodeAll``, same server, same run.

    .venv/bin/python bench/bench_http.py [--save] [--rounds 5] [--single 150] [--batch 25]

One ``poolstream serve --http-port 0`` (the embedded all-MiniLM-L6-v2) in a
subprocess; this process is the client, making sequential calls (one in
flight) so that each latency is one call's own:

- gRPC ``EncodeAll`` (grpcio's blocking stub, one channel);
- HTTP ``POST /v1/embeddings`` with ``encoding_format`` float and base64
  (``http.client``, one keep-alive connection: the transport without a
  client library's own cost);
- the same through the ``openai`` SDK (``client.embeddings.create``, base64:
  what the SDK asks for by default), what users of the SDK get.

For single-text calls and 32-text calls. The paths alternate in ``--rounds``
interleaved rounds (background load hits them alike); the table gives the
median over all calls and the overhead against gRPC EncodeAll. A second
column subtracts each call's own engine time (the server's
``poolstream-inference-time-ms`` trailer / header), since batch time varies
between calls more than the transport does. The last column is the server
process's CPU time per call (``/proc/<pid>/stat``, user + system, over each
block of calls): on a machine shared with other work, wall-clock latency
mostly measures the others, CPU time much less so.
"""

from __future__ import annotations

import argparse
import http.client
import os
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from sentences import sentences  # noqa: E402

from poolstream.v1 import pooling_pb2  # noqa: E402
from poolstream.v1 import pooling_service_pb2 as pb  # noqa: E402
from poolstream.v1 import pooling_service_pb2_grpc as pb_grpc  # noqa: E402

INFERENCE = "poolstream-inference-time-ms"


def start_server(model: str | None) -> tuple[subprocess.Popen, int, int, Path]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-http-"))
    exe = Path(sys.executable).parent / "poolstream"
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "poolstream"]
    proc = subprocess.Popen([*command, "serve", "--port", "0", "--port-file", str(tmp / "port"), "--http-port", "0",
                             "--http-port-file", str(tmp / "http"), "--no-access-log",
                             *(["--model", model] if model else [])],
                            stdout=open(tmp / "log", "wb"), stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + 180
    while not (tmp / "port").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError((tmp / "log").read_text())
        time.sleep(0.1)
    return proc, int((tmp / "port").read_text()), int((tmp / "http").read_text()), tmp


class GrpcPath:
    name = "gRPC `EncodeAll`"

    def __init__(self, port: int):
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = pb_grpc.PoolingServiceStub(self.channel)

    def call(self, texts: list[str]) -> tuple[float, float]:
        req = pb.EncodeAllRequest(prompts=[pooling_pb2.Prompt(text=t) for t in texts])
        t0 = time.perf_counter()
        resp, call = self.stub.EncodeAll.with_call(req, timeout=60)
        dt = time.perf_counter() - t0
        assert len(resp.results) == len(texts) and resp.results[0].HasField("output")
        trailers = dict(call.trailing_metadata() or ())
        return dt * 1e3, float(trailers.get(INFERENCE, "nan"))


class HttpPath:
    def __init__(self, port: int, encoding: str):
        self.name = f"HTTP `/v1/embeddings` {encoding} (http.client)"
        self.conn = http.client.HTTPConnection("127.0.0.1", port)
        self.encoding = encoding

    def call(self, texts: list[str]) -> tuple[float, float]:
        # Bytes, so that http.client sends headers and body in one write (a str body goes in a
        # second one, and Nagle + delayed ACK would add ~40 ms on the client's side).
        body = json.dumps({"input": texts, "model": "all-MiniLM-L6-v2", "encoding_format": self.encoding}).encode()
        t0 = time.perf_counter()
        try:
            self.conn.request("POST", "/v1/embeddings", body, {"Content-Type": "application/json"})
            resp = self.conn.getresponse()
        except (ConnectionError, http.client.RemoteDisconnected):  # an idle connection the server closed
            self.conn.close()
            t0 = time.perf_counter()
            self.conn.request("POST", "/v1/embeddings", body, {"Content-Type": "application/json"})
            resp = self.conn.getresponse()
        data = json.loads(resp.read())
        dt = time.perf_counter() - t0
        assert resp.status == 200 and len(data["data"]) == len(texts), data
        return dt * 1e3, float(resp.getheader(INFERENCE) or "nan")


class OpenAIPath:
    name = "HTTP `/v1/embeddings` via the `openai` SDK (base64)"

    def __init__(self, port: int):
        import openai

        self.client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="-", max_retries=0)

    def call(self, texts: list[str]) -> tuple[float, float]:
        t0 = time.perf_counter()
        raw = self.client.embeddings.with_raw_response.create(model="all-MiniLM-L6-v2", input=texts)
        result = raw.parse()
        dt = time.perf_counter() - t0
        assert len(result.data) == len(texts)
        return dt * 1e3, float(raw.headers.get(INFERENCE) or "nan")


def server_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (and its reaped children), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def p90(xs: list[float]) -> float:
    return sorted(xs)[int(0.9 * (len(xs) - 1))] if xs else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--single", type=int, default=150, help="single-text calls per path per round")
    ap.add_argument("--batch", type=int, default=25, help="32-text calls per path per round")
    ap.add_argument("--save", action="store_true", help="also write bench/results/<time>-http-cpu.md")
    ap.add_argument("--model", help="model directory (default: the embedded all-MiniLM-L6-v2)")
    ap.add_argument("--machine", default="", help="what the run was on, for the results file")
    args = ap.parse_args()

    texts = sentences(4096, seed=7)
    proc, grpc_port, http_port, tmp = start_server(args.model)
    try:
        paths = [GrpcPath(grpc_port), HttpPath(http_port, "float"), HttpPath(http_port, "base64"),
                 OpenAIPath(http_port)]
        for p in paths:  # warm-up: connections, first batches
            for i in range(10):
                p.call([texts[i]])
            p.call(texts[:32])
        results = {(p.name, kind): ([], []) for p in paths for kind in ("single", "batch")}
        cpu = {(p.name, kind): [0.0, 0] for p in paths for kind in ("single", "batch")}
        cursor = 0
        for _ in range(args.rounds):
            for kind, calls, size in (("single", args.single, 1), ("batch", args.batch, 32)):
                for p in paths:
                    c0 = server_cpu_s(proc.pid)
                    for _ in range(calls):
                        batch = [texts[(cursor + k) % len(texts)] for k in range(size)]
                        cursor += size
                        lat, inf = p.call(batch)
                        results[(p.name, kind)][0].append(lat)
                        results[(p.name, kind)][1].append(lat - inf)
                    cpu[(p.name, kind)][0] += server_cpu_s(proc.pid) - c0
                    cpu[(p.name, kind)][1] += calls
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    uptime = Path("/proc/loadavg").read_text().split()[:3]

    lines = [
        f"# HTTP front door vs gRPC ({time.strftime('%Y-%m-%d %H:%M:%S')}, {platform.node()})",
        "",
        f"`bench/bench_http.py --rounds {args.rounds} --single {args.single} --batch {args.batch}"
        f"{' --model ' + args.model if args.model else ''}`: {args.model or 'all-MiniLM-L6-v2'} on CPU "
        "(torch threads as `poolstream serve` picks), one server, one client process, sequential calls, "
        f"paths interleaved per round. Machine: {args.machine or platform.platform()}, "
        f"{len(os.sched_getaffinity(0))} CPUs, load average {' '.join(uptime)} at the end "
        "(on a shared machine, compare within this table only).",
        "",
    ]
    grpc_name = paths[0].name
    for kind, label in (("single", "1 text per call"), ("batch", "32 texts per call")):
        base_lat, base_net = results[(grpc_name, kind)]
        base_cpu = cpu[(grpc_name, kind)][0] / cpu[(grpc_name, kind)][1] * 1e3
        lines += [f"## {label}", "",
                  "| path | p50 ms | p90 ms | vs gRPC p50 | p50 without engine time | vs gRPC | "
                  "server CPU ms/call | vs gRPC |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for p in paths:
            lat, net = results[(p.name, kind)]
            per_call = cpu[(p.name, kind)][0] / cpu[(p.name, kind)][1] * 1e3
            lines.append(
                f"| {p.name} | {median(lat):.2f} | {p90(lat):.2f} | {median(lat) - median(base_lat):+.2f} ms | "
                f"{median(net):.2f} | {median(net) - median(base_net):+.2f} ms | {per_call:.2f} | "
                f"{per_call - base_cpu:+.2f} ms |")
        lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.save:
        out = HERE / "results" / f"{time.strftime('%Y%m%d-%H%M%S')}-http-cpu.md"
        out.write_text(text)
        print(f"saved {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
