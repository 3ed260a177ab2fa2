"""Memory across requests: repeated large requests with client deadlines hold a flat RSS.

Before the fix, each finished window stayed referenced from the scheduler's
deadline heap (with a view of the request's whole normalised raster) until
the client's deadline passed: a 1024 x 1024 request repeated 14 times took a
fresh server from 253 to 1,057 MiB. Real server process, real gRPC, a 600 s
deadline on every call (what the example client sets).
"""

from __future__ import annotations

import gc

import grpc
import pytest
from poolstream.payloads.geotiff.v1 import geotiff_segmentation_pb2 as geo
from poolstream.v1 import pooling_service_pb2_grpc
from poolstream.v1 import pooling_service_pb2 as ps
from poolstream_geotiff import synthetic

from tests.conftest import launch_server
from tests.geotiff import helpers
from tests.geotiff.test_grpc import CHANNEL_OPTIONS, MODEL, vm_kib
from tests.grpc_helpers import typed_payload

ROUNDS = 10
SIZE = 1024


@pytest.mark.slow
def test_repeated_large_requests_with_deadlines_hold_a_flat_rss():
    data, scene = helpers.scene_tiff(SIZE, SIZE, helpers.TEST_SEED_BASE + 300)
    req = ps.ProcessRequest(data=typed_payload(geo.GeoTiffSegmentationRequest(geotiff=data)))
    s = launch_server("--model", MODEL)
    rss: list[int] = []
    try:
        channel = grpc.insecure_channel(s.address, options=CHANNEL_OPTIONS)
        stub = pooling_service_pb2_grpc.PoolingServiceStub(channel)
        for i in range(ROUNDS):
            resp = stub.Process(req, timeout=600)  # a far-off deadline, as segment.py sets
            out = geo.GeoTiffSegmentationResponse()
            resp.data.typed.Unpack(out)
            if i == 0:
                mask = helpers.read_tiff(out.data)[0]
                assert synthetic.iou(mask, scene.label, synthetic.WATER) >= 0.9
            rss.append(vm_kib(s.proc.pid, "VmRSS"))
            del resp, out
            gc.collect()
        channel.close()
    finally:
        s.stop()
    print("\nserver RSS after each request (MiB):", [r // 1024 for r in rss])
    # One request's raster alone is 1024*1024*6*2 bytes of float16 (12 MiB) plus windows' logits:
    # a leak of one request per round would add >= 12 MiB each, 100+ MiB over the run.
    # Early against late: the highest of the first three rounds against the lowest of the last
    # three. A single sample swings by 20-45 MiB with glibc's arenas and the order batches
    # happened to run in (seen: 318, 336, ..., 341, 367, 376 and 317, ..., 383, 365, 358, 342 MiB
    # with no leak), while a leak of one request per round lifts even the lowest late sample by
    # 5 rounds x 12+ MiB = 60+ MiB (18 %).
    early, late = max(rss[:3]), min(rss[-3:])
    assert late <= early * 1.10, f"RSS grew from {early // 1024} to {late // 1024} MiB (first vs last 3 rounds)"
