#!/usr/bin/env python3
"""Segment a GeoTIFF with a poolstream server running the geotiff_segmentation plugin.

    poolstream serve --model models/prithvi-water-demo --port 50051 &
    python plugins/geotiff_segmentation/examples/make_scene.py scene.tif --size 2048
    python plugins/geotiff_segmentation/examples/segment.py scene.tif classes.tif

Streams progress with ProcessStream (STREAM_DETAIL_PROGRESS: one event per
finished window) and draws a progress bar on stderr, then writes the class
map (GeoTIFF with the input's georeferencing, or PNG with --png) and prints
a summary.

Needs only grpcio, protobuf and the generated poolstream stubs (installed
with poolstream).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import grpc
from poolstream.payloads.geotiff.v1 import geotiff_segmentation_pb2 as geo
from poolstream.v1 import payload_pb2, pooling_service_pb2, pooling_service_pb2_grpc

MiB = 1 << 20


def progress_bar(done: int, total: int, started: float, width: int = 32) -> str:
    frac = done / total if total else 0.0
    filled = round(frac * width)
    elapsed = time.monotonic() - started
    eta = f" eta {elapsed / frac - elapsed:5.1f}s" if 0 < frac < 1 else ""
    return f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} windows {elapsed:5.1f}s{eta}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", help="input GeoTIFF (or, with --server-path, a path on the server)")
    ap.add_argument("output", help="where to write the class map")
    ap.add_argument("--server", default="127.0.0.1:50051", help="host:port (default %(default)s)")
    ap.add_argument("--server-path", action="store_true",
                    help="send INPUT as a server-side path (needs --allowed-local-media-path on the server)")
    ap.add_argument("--png", action="store_true", help="PNG quick look instead of GeoTIFF")
    ap.add_argument("--bands", help="comma-separated 0-based band indices (Blue,Green,Red,NIR,SWIR1,SWIR2)")
    ap.add_argument("--tile-size", type=int, default=0, help="window size in px (default: the model's)")
    ap.add_argument("--overlap", type=int, default=None, help="window overlap in px (default 32)")
    ap.add_argument("--threshold", type=float, default=None, help="water probability threshold (0..1)")
    ap.add_argument("--compression", choices=["lzw", "deflate", "none"], default="lzw")
    ap.add_argument("--timeout", type=float, default=600.0, help="deadline in seconds")
    ap.add_argument("--max-message-mib", type=int, default=256,
                    help="client message size limit; gRPC's default of 4 MiB is too small for rasters")
    args = ap.parse_args()

    req = geo.GeoTiffSegmentationRequest(
        tile_size=args.tile_size,
        output_format=geo.OUTPUT_FORMAT_PNG if args.png else geo.OUTPUT_FORMAT_GEOTIFF,
        compression={"lzw": geo.COMPRESSION_LZW, "deflate": geo.COMPRESSION_DEFLATE,
                     "none": geo.COMPRESSION_NONE}[args.compression],
    )
    if args.server_path:
        req.path = args.input
    else:
        req.geotiff = Path(args.input).read_bytes()
    if args.bands:
        req.bands.extend(int(b) for b in args.bands.split(","))
    if args.overlap is not None:
        req.tile_overlap = args.overlap
    if args.threshold is not None:
        req.threshold = args.threshold
    payload = payload_pb2.PluginPayload()
    payload.typed.Pack(req)

    limit = args.max_message_mib * MiB
    options = [("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]
    started = time.monotonic()
    result = None
    with grpc.insecure_channel(args.server, options=options) as channel:
        stub = pooling_service_pb2_grpc.PoolingServiceStub(channel)
        stream = stub.ProcessStream(
            pooling_service_pb2.ProcessStreamRequest(data=payload, detail=pooling_service_pb2.STREAM_DETAIL_PROGRESS),
            timeout=args.timeout,
        )
        try:
            for event in stream:
                kind = event.WhichOneof("event")
                if kind == "progress":
                    sys.stderr.write(progress_bar(event.progress.completed, event.progress.total, started))
                elif kind == "chunk":  # only with STREAM_DETAIL_CHUNKS
                    sys.stderr.write(progress_bar(event.chunk.completed, event.chunk.total, started))
                elif kind == "result":
                    result = event.result
                sys.stderr.flush()
        except grpc.RpcError as e:
            sys.stderr.write(f"\nerror: {e.code().name}: {e.details()}\n")
            return 1
    sys.stderr.write("\n")
    if result is None:
        sys.stderr.write("error: the stream ended without a result\n")
        return 1
    resp = geo.GeoTiffSegmentationResponse()
    if not result.data.typed.Unpack(resp):
        sys.stderr.write(f"error: unexpected response type {result.data.typed.type_url}\n")
        return 1
    Path(args.output).write_bytes(resp.data)
    print(f"wrote {args.output}: {resp.media_type}, {resp.width} x {resp.height} px, "
          f"{len(resp.data) / MiB:.2f} MiB, CRS {resp.crs or '(none)'}, {resp.tile_count} windows of "
          f"{resp.tile_size} px (overlap {resp.tile_overlap}), {time.monotonic() - started:.1f}s")
    for c in resp.classes:
        print(f"  {c.value} {c.name:<6} {c.pixel_count:>12} px  {100 * c.fraction:6.2f} %")
    if resp.nodata_pixel_count:
        print(f"  {resp.nodata_value} nodata {resp.nodata_pixel_count:>12} px")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
