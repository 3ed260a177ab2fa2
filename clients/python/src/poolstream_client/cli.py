"""poolstream-client: command-line client for poolstream.

  poolstream-client [--addr HOST:PORT] info
  poolstream-client [--addr HOST:PORT] encode "text" ["text" ...] [--out emb.npy]
  poolstream-client [--addr HOST:PORT] encode --file texts.txt --out emb.npy
  poolstream-client [--addr HOST:PORT] process --plugin-input FILE [--out FILE]

`encode` embeds any number of texts (arguments, or one per line of --file),
split into requests under the server's limits, with a progress bar on a
terminal; it writes a (N, D) array to --out NAME.npy, or one JSON line per
text in input order ({"index", "text", "request_id", "dtype", "shape",
"embedding"}) to --out NAME.jsonl or stdout.

`process` reads the plugin input (JSON: sent as JSON, or typed when it has an
"@type" key or --type is given; with --media-type, raw bytes), runs
ProcessStream (a progress bar on a terminal) or Process with --unary, and
writes the result to --out (default stdout): as JSON, or, for a result that
is bytes (a raw payload, or a result with `data` and `media_type`, e.g. a
GeoTIFF) and an --out not ending in .json, the bytes themselves; a summary
line goes to stdout.

Refused calls (QUEUE_FULL, TOO_MANY_CALLS, UNAVAILABLE) are retried after the
server's RetryInfo delay (--retries).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from typing import Any, TextIO

import grpc
import numpy as np

from . import __version__, payloads, tensors
from ._messages import v1
from .client import Client, ProcessResult, RetryPolicy, pooling_params
from .errors import PoolstreamError
from .progress import progress_bar

DEFAULT_ADDR = "127.0.0.1:50051"


def _dump(obj: Any, out: TextIO, *, indent: int | None = None) -> None:
    json.dump(obj, out, indent=indent, ensure_ascii=False)
    out.write("\n")
    out.flush()


def cmd_info(client: Client, args: argparse.Namespace) -> int:
    info = client.server_info()
    _dump(payloads.to_jsonable(info), sys.stdout, indent=None if args.compact else 2)
    return 0


def _read_texts(args: argparse.Namespace) -> list[str]:
    if args.file is None:
        if not args.texts:
            raise SystemExit("poolstream-client encode: give TEXT arguments or --file")
        return list(args.texts)
    if args.texts:
        raise SystemExit("poolstream-client encode: give TEXT arguments or --file, not both")
    if args.file == "-":
        content = sys.stdin.read()
    else:
        with open(args.file, encoding="utf-8") as f:
            content = f.read()
    texts = content.splitlines()
    empty = [i + 1 for i, t in enumerate(texts) if not t.strip()]
    if empty:
        # Row i of the output is line i+1 of the file: skipping blank lines would shift rows.
        raise SystemExit(f"poolstream-client encode: {args.file}: blank line(s) {empty[:10]}; one text per line")
    return texts


def _write_atomic(path: str, write: Any, mode: str = "w") -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as f:
        write(f)
    os.replace(tmp, path)


def cmd_encode(client: Client, args: argparse.Namespace) -> int:
    texts = _read_texts(args)
    results = client.encode_all(
        texts,
        request_id=args.request_id,
        normalize=args.normalize,
        dimensions=args.dimensions,
        truncate=args.truncate,
        output_dtype=args.dtype,
        chunk_size=args.chunk_size,
        progress=args.progress,
    )
    failed = [r for r in results if r.error is not None]
    out = args.out if args.out and args.out != "-" else None
    if out is not None and out.endswith(".npy"):
        for r in failed:
            err = PoolstreamError.from_status(r.error, r.index)
            print(f"poolstream-client: {err}", file=sys.stderr)
        if failed:
            return 1
        array = np.stack([tensors.to_numpy(r.output.outputs.data) for r in results])
        _write_atomic(out, lambda f: np.save(f, array), "wb")
        _dump({"out": out, "count": len(texts), "shape": list(array.shape), "dtype": str(array.dtype)}, sys.stdout)
        return 0

    def write(stream: TextIO) -> None:
        for r in results:
            if r.error is not None:
                err = PoolstreamError.from_status(r.error, r.index)
                record = {"index": r.index, "text": texts[r.index],
                          "error": {"code": err.code.name, "reason": err.reason, "message": err.details}}
            else:
                t = r.output.outputs.data
                record = {"index": r.index, "text": texts[r.index], "request_id": r.output.request_id,
                          "dtype": tensors.dtype_name(t.dtype), "shape": list(t.shape),
                          "truncated": r.output.truncated, "embedding": tensors.to_numpy(t).tolist()}
            _dump(record, stream)

    if out is None:
        write(sys.stdout)
    else:
        _write_atomic(out, write)
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


def _result_bytes(result: ProcessResult) -> tuple[bytes, str] | None:
    """(bytes, media type) of a result that is a file: a raw payload, or a JSON or typed
    result with `data` (bytes, or base64 in JSON) and `media_type`."""
    value = result.value
    if isinstance(value, v1.RawPayload):
        return value.data, value.media_type
    if isinstance(value, dict):
        data, media = value.get("data"), value.get("media_type")
        if isinstance(data, str) and isinstance(media, str):
            try:
                return base64.b64decode(data, validate=True), media
            except ValueError:
                return None
        return None
    data, media = getattr(value, "data", None), getattr(value, "media_type", None)
    if isinstance(data, bytes) and isinstance(media, str):
        return data, media
    return None


def cmd_process(client: Client, args: argparse.Namespace) -> int:
    payload = _read_payload(args)
    params = pooling_params(include_float_values=True if args.include_float_values else None)
    if args.unary:
        result = client.process(payload, params=params, request_id=args.request_id)
    else:
        detail = {"chunks": v1.StreamDetail.CHUNKS, "progress": v1.StreamDetail.PROGRESS}[args.detail]
        bar = None
        result = None
        try:
            for event in client.process_stream(payload, detail=detail, params=params, request_id=args.request_id):
                step = event.chunk or event.progress
                if step is not None and step.total:
                    if bar is None:
                        bar = progress_bar(step.total, args.progress)
                    if bar is not None:
                        bar.update(step.completed - bar.n)
                elif event.result is not None:
                    result = ProcessResult(event.result)
        finally:
            if bar is not None:
                bar.close()
        if result is None:
            raise PoolstreamError(grpc.StatusCode.INTERNAL, "ProcessStream ended without a result")
    out = args.out if args.out and args.out != "-" else None
    file_bytes = _result_bytes(result) if out is not None and args.out_format != "json" else None
    if args.out_format == "raw" and file_bytes is None:
        raise SystemExit("poolstream-client: --out-format raw: the result carries no bytes (data + media_type)")
    if file_bytes is not None and (args.out_format == "raw" or not out.lower().endswith((".json", ".jsonl"))):
        data, media_type = file_bytes
        _write_atomic(out, lambda f: f.write(data), "wb")
        written = {"out": out, "media_type": media_type, "bytes": len(data)}
    elif out is not None:
        document = payloads.to_jsonable(result.response.data, decode_tensors=args.decode_tensors)
        _write_atomic(out, lambda f: _dump(document, f, indent=2))
        written = {"out": out}
    else:
        _dump(payloads.to_jsonable(result.response.data, decode_tensors=args.decode_tensors), sys.stdout, indent=2)
        return 0
    _dump(
        {
            "request_id": result.request_id,
            "kind": result.kind,
            "type": result.response.data.typed.type_url if result.kind == "typed" else None,
            "prompt_count": result.usage.prompt_count,
            "prompt_tokens": result.usage.prompt_tokens,
            **written,
        },
        sys.stdout,
    )
    return 0


def _progress_flag(sub: argparse.ArgumentParser) -> None:
    # SUPPRESS: when absent here, the top-level --progress (or its default) stands.
    sub.add_argument("--progress", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                     help="progress bar on stderr (default: only when stderr is a terminal)")


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
    p.add_argument("--retries", type=int, default=5,
                   help="retries of a refused call or prompt, after the server's RetryInfo delay (default 5)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: only when stderr is a terminal)")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="print GetServerInfo as JSON")
    info.add_argument("--compact", action="store_true", help="one line instead of indented JSON")
    info.set_defaults(func=cmd_info)

    enc = sub.add_parser("encode", help="embed texts with Encode; prints one JSON line per text")
    enc.add_argument("texts", nargs="*", metavar="TEXT")
    enc.add_argument("--file", metavar="FILE", help="read the texts from FILE, one per line ('-': stdin)")
    enc.add_argument("--out", metavar="FILE",
                     help="NAME.npy: a (N, D) array in input order; otherwise JSON lines (default: stdout)")
    _progress_flag(enc)
    enc.add_argument("--chunk-size", type=int, default=None,
                     help="prompts per request (default and maximum: what the server allows)")
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
    proc.add_argument("--out", metavar="FILE",
                      help="write the result here (default: stdout): its bytes when it is a file (a GeoTIFF, "
                      "an image) unless FILE ends in .json, else JSON")
    proc.add_argument("--out-format", choices=["auto", "json", "raw"], default="auto",
                      help="auto: bytes for a file result and a non-.json --out; json; raw: the bytes or fail")
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
    _progress_flag(proc)
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
        retry = RetryPolicy(max_attempts=1 + max(0, args.retries))
        with Client(args.addr, timeout=args.timeout, token=args.token, retry=retry) as client:
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
