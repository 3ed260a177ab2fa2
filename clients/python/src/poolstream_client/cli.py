"""poolstream-client: command-line client for poolstream.

  poolstream-client [--addr HOST:PORT] info
  poolstream-client [--addr HOST:PORT] encode "text" ["text" ...]
  poolstream-client [--addr HOST:PORT] process --plugin-input FILE [--out FILE]

`encode` prints one JSON line per prompt (in completion order):
{"index", "text", "request_id", "dtype", "shape", "embedding"}.
`process` reads the plugin input (JSON: sent as JSON, or typed when it has an
"@type" key or --type is given; with --media-type, raw bytes), runs
ProcessStream with a progress bar on stderr (or Process with --unary), writes
the result as JSON to --out (default stdout) and prints a summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, TextIO

import grpc

from . import __version__, payloads, tensors
from ._messages import v1
from .client import Client, PoolstreamError, ProcessResult, pooling_params

DEFAULT_ADDR = "127.0.0.1:50051"


class ProgressBar:
    """A one-line progress bar on a text stream (stderr)."""

    def __init__(self, stream: TextIO, enabled: bool = True, width: int = 30):
        self.stream, self.enabled, self.width = stream, enabled, width
        self.start = time.monotonic()
        self.shown = False

    def update(self, completed: int, total: int) -> None:
        if not self.enabled:
            return
        frac = completed / total if total else 1.0
        filled = round(frac * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        elapsed = time.monotonic() - self.start
        self.stream.write(f"\r[{bar}] {completed}/{total} prompts {frac:6.1%} {elapsed:5.1f}s")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


def _dump(obj: Any, out: TextIO, *, indent: int | None = None) -> None:
    json.dump(obj, out, indent=indent, ensure_ascii=False)
    out.write("\n")
    out.flush()


def cmd_info(client: Client, args: argparse.Namespace) -> int:
    info = client.server_info()
    _dump(payloads.to_jsonable(info), sys.stdout, indent=None if args.compact else 2)
    return 0


def cmd_encode(client: Client, args: argparse.Namespace) -> int:
    params = pooling_params(
        normalize=args.normalize,
        dimensions=args.dimensions,
        truncate=args.truncate,
        output_dtype=args.dtype,
        include_float_values=None,
    )
    failed = 0
    for r in client.encode(args.texts, params=params, request_id=args.request_id):
        if r.error is not None:
            failed += 1
            err = PoolstreamError.from_status(r.error, r.index)
            _dump(
                {
                    "index": r.index,
                    "text": args.texts[r.index],
                    "error": {"code": err.code.name, "reason": err.reason, "message": err.details},
                },
                sys.stdout,
            )
            continue
        t = r.output.outputs.data
        _dump(
            {
                "index": r.index,
                "text": args.texts[r.index],
                "request_id": r.output.request_id,
                "dtype": tensors.dtype_name(t.dtype),
                "shape": list(t.shape),
                "truncated": r.output.truncated,
                "embedding": tensors.to_numpy(t).tolist(),
            },
            sys.stdout,
        )
    return 1 if failed else 0


def _read_payload(args: argparse.Namespace) -> v1.PluginPayload:
    if args.plugin_input == "-":
        data = sys.stdin.buffer.read()
    else:
        with open(args.plugin_input, "rb") as f:
            data = f.read()
    if args.media_type:
        return payloads.raw(data, args.media_type)
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SystemExit(
            f"poolstream-client: {args.plugin_input} is not JSON ({e}); "
            "pass --media-type to send it as raw bytes"
        ) from e
    if not isinstance(document, dict):
        raise SystemExit("poolstream-client: the plugin input must be a JSON object")
    return payloads.from_document(document, args.type)


def cmd_process(client: Client, args: argparse.Namespace) -> int:
    payload = _read_payload(args)
    params = pooling_params(include_float_values=True if args.include_float_values else None)
    if args.unary:
        result = client.process(payload, params=params, request_id=args.request_id)
    else:
        detail = {"chunks": v1.StreamDetail.CHUNKS, "progress": v1.StreamDetail.PROGRESS}[args.detail]
        bar = ProgressBar(sys.stderr, enabled=not args.no_progress)
        result = None
        try:
            for event in client.process_stream(
                payload, detail=detail, params=params, request_id=args.request_id
            ):
                if event.chunk is not None:
                    bar.update(event.chunk.completed, event.chunk.total)
                elif event.progress is not None:
                    bar.update(event.progress.completed, event.progress.total)
                elif event.result is not None:
                    result = ProcessResult(event.result)
        finally:
            bar.close()
        if result is None:
            raise PoolstreamError(grpc.StatusCode.INTERNAL, "ProcessStream ended without a result")
    document = payloads.to_jsonable(result.response.data, decode_tensors=args.decode_tensors)
    if args.out and args.out != "-":
        tmp = f"{args.out}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            _dump(document, f, indent=2)
        os.replace(tmp, args.out)
        _dump(
            {
                "request_id": result.request_id,
                "kind": result.kind,
                "type": result.response.data.typed.type_url if result.kind == "typed" else None,
                "prompt_count": result.usage.prompt_count,
                "prompt_tokens": result.usage.prompt_tokens,
                "out": args.out,
            },
            sys.stdout,
        )
    else:
        _dump(document, sys.stdout, indent=2)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="poolstream-client", description="Command-line client for poolstream.")
    p.add_argument(
        "--addr",
        default=os.environ.get("POOLSTREAM_ADDR", DEFAULT_ADDR),
        help=f"server address host:port (env POOLSTREAM_ADDR; default {DEFAULT_ADDR})",
    )
    p.add_argument(
        "--timeout", type=float, default=120.0, help="deadline of each call in seconds (default 120)"
    )
    p.add_argument(
        "--token", default=os.environ.get("POOLSTREAM_TOKEN"), help="bearer token (env POOLSTREAM_TOKEN)"
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="print GetServerInfo as JSON")
    info.add_argument("--compact", action="store_true", help="one line instead of indented JSON")
    info.set_defaults(func=cmd_info)

    enc = sub.add_parser("encode", help="embed texts with Encode; prints one JSON line per text")
    enc.add_argument("texts", nargs="+", metavar="TEXT")
    enc.add_argument(
        "--normalize",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="L2-normalise (default: the model's default)",
    )
    enc.add_argument(
        "--truncate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="cut over-long texts (default: yes)",
    )
    enc.add_argument("--dimensions", type=int, default=None, help="keep the first N dimensions (Matryoshka)")
    enc.add_argument(
        "--dtype",
        choices=["float32", "float16", "bfloat16", "binary"],
        default=None,
        help="element type on the wire (default float32)",
    )
    enc.add_argument("--request-id", default="")
    enc.set_defaults(func=cmd_encode)

    proc = sub.add_parser("process", help="run the server's IO Processor plugin on a payload file")
    proc.add_argument(
        "--plugin-input",
        required=True,
        metavar="FILE",
        help="payload file ('-' for stdin): JSON, protobuf JSON of a typed message, or raw bytes",
    )
    proc.add_argument("--out", metavar="FILE", help="write the result here as JSON (default: stdout)")
    proc.add_argument(
        "--type",
        metavar="MESSAGE",
        help="send the JSON as this typed message, e.g. "
        "poolstream.payloads.text_embedding.v1.TextEmbeddingRequest",
    )
    proc.add_argument("--media-type", metavar="TYPE", help="send the file as raw bytes of this media type")
    proc.add_argument(
        "--detail",
        choices=["chunks", "progress"],
        default="progress",
        help="what ProcessStream streams before the result (default: progress)",
    )
    proc.add_argument(
        "--unary", action="store_true", help="use Process instead of ProcessStream (no progress)"
    )
    proc.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    proc.add_argument(
        "--decode-tensors",
        action="store_true",
        help="write tensors in a typed result as {dtype, shape, values} instead of base64",
    )
    proc.add_argument(
        "--include-float-values",
        action="store_true",
        help="ask the server for PoolingParams.include_float_values",
    )
    proc.add_argument("--request-id", default="")
    proc.set_defaults(func=cmd_process)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with Client(args.addr, timeout=args.timeout, token=args.token) as client:
            return args.func(client, args)
    except PoolstreamError as e:
        print(f"poolstream-client: {e}", file=sys.stderr)
        return 1
    except KeyError as e:  # unknown --type
        print(f"poolstream-client: {e.args[0]}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
