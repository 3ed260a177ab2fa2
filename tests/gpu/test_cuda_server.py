"""``poolstream serve --device auto`` on a CUDA machine, over real gRPC on 127.0.0.1:
the text model (Encode, EncodeAll, the text_embedding plugin, cancellation, health
under load) and the geotiff segmentation model (raster in, raster out)."""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from poolstream.payloads.text_embedding.v1 import text_embedding_pb2 as te
from poolstream.v1 import pooling_pb2, tensor_pb2
from poolstream.v1 import pooling_service_pb2 as pb
from poolstream.v1 import pooling_service_pb2_grpc as pb_grpc
from tests.conftest import launch_server
from tests.engine.conftest import make_corpus
from tests.grpc_helpers import typed_payload

MiB = 1 << 20


def vec(t: tensor_pb2.Tensor) -> np.ndarray:
    assert t.dtype == tensor_pb2.DTYPE_FLOAT32
    return np.frombuffer(t.data, "<f4").reshape(list(t.shape))


@pytest.fixture(scope="module")
def text_server(model_dir):
    s = launch_server("--model", model_dir, "--device", "auto", "--io-processor-plugin", "text_embedding")
    yield s
    s.stop()


async def test_text_model_serves_on_cuda(text_server, st_fp32):
    corpus = make_corpus(256)
    async with grpc.aio.insecure_channel(text_server.address) as ch:
        stub = pb_grpc.PoolingServiceStub(ch)
        info = await stub.GetServerInfo(pb.GetServerInfoRequest())
        assert info.model.device.startswith("cuda") and info.model.compute_dtype == tensor_pb2.DTYPE_FLOAT16

        async def encode_one(text: str) -> np.ndarray:
            [r] = [r async for r in stub.Encode(pb.EncodeRequest(prompts=[pooling_pb2.Prompt(text=text)]))]
            return vec(r.output.outputs.data)

        one_by_one = np.stack(await asyncio.gather(*(encode_one(t) for t in corpus)))
        whole = await stub.EncodeAll(pb.EncodeAllRequest(prompts=[pooling_pb2.Prompt(text=t) for t in corpus]))
        assert [r.index for r in whole.results] == list(range(len(corpus)))
        together = np.stack([vec(r.output.outputs.data) for r in whole.results])
        ref = st_fp32.encode(corpus, batch_size=16, convert_to_numpy=True)
        cos = (one_by_one * ref).sum(-1) / np.linalg.norm(one_by_one, axis=-1) / np.linalg.norm(ref, axis=-1)
        print(f"\ngRPC on {info.model.device} float16: min cosine to ST float32 {cos.min():.6f}, "
              f"max abs {np.abs(one_by_one - ref).max():.2e}; Encode vs EncodeAll max abs "
              f"{np.abs(one_by_one - together).max():.2e}")
        assert cos.min() > 0.999
        # Batch composition changes float16 rounding a little, never the answer.
        assert np.abs(one_by_one - together).max() < 5e-3

        # The text_embedding plugin's post_process on CUDA outputs.
        texts = ["The cat sits on the mat.", "A feline rests on a rug.", "Stock markets fell sharply today."]
        resp = await stub.Process(pb.ProcessRequest(data=typed_payload(te.TextEmbeddingRequest(
            texts=texts, similarity=True))))
        out = te.TextEmbeddingResponse()
        assert resp.data.typed.Unpack(out)
        sim = np.frombuffer(out.similarity.data, "<f4").reshape(3, 3)
        assert sim[0, 1] > sim[0, 2] + 0.3


async def test_cancel_and_health_under_load_on_cuda(text_server):
    corpus = make_corpus(512)
    async with grpc.aio.insecure_channel(text_server.address) as ch:
        stub = pb_grpc.PoolingServiceStub(ch)
        health = health_pb2_grpc.HealthStub(ch)
        stop = asyncio.Event()
        checks: list[float] = []

        async def probe() -> None:
            while not stop.is_set():
                t0 = time.perf_counter()
                r = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
                checks.append(time.perf_counter() - t0)
                assert r.status == health_pb2.HealthCheckResponse.SERVING
                await asyncio.sleep(0.01)

        async def load(k: int) -> int:
            req = pb.EncodeAllRequest(prompts=[pooling_pb2.Prompt(text=t) for t in corpus], request_id=f"l{k}")
            return len((await stub.EncodeAll(req, timeout=120)).results)

        prober = asyncio.create_task(probe())
        # Cancel big calls mid-way while others run: the server keeps serving the rest.
        cancelled = [stub.EncodeAll(pb.EncodeAllRequest(prompts=[pooling_pb2.Prompt(text=t) for t in corpus * 2]))
                     for _ in range(4)]
        done = asyncio.gather(*(load(k) for k in range(16)))
        await asyncio.sleep(0.05)
        for call in cancelled:
            call.cancel()
        assert await done == [len(corpus)] * 16
        n_cancelled = 0
        for call in cancelled:
            try:
                await call
            except asyncio.CancelledError:
                n_cancelled += 1
        assert n_cancelled > 0
        stop.set()
        await prober
        checks.sort()
        print(f"\nhealth Check on a saturated CUDA server: {len(checks)} probes, p50 "
              f"{1e3 * checks[len(checks) // 2]:.1f} ms, max {1e3 * checks[-1]:.1f} ms")
        after = [r async for r in stub.Encode(pb.EncodeRequest(prompts=[pooling_pb2.Prompt(text="still here")]))]
        assert len(after) == 1


def test_geotiff_segmentation_on_cuda():
    from poolstream.payloads.geotiff.v1 import geotiff_segmentation_pb2 as geo
    from poolstream_geotiff import synthetic

    from tests.geotiff import helpers

    data, scene = helpers.scene_tiff(512, 640, helpers.TEST_SEED_BASE + 100)
    req = geo.GeoTiffSegmentationRequest(geotiff=data, compression=geo.COMPRESSION_DEFLATE)
    masks = {}
    for device in ("cuda", "cpu"):
        server = launch_server("--model", str(helpers.MODEL_DIR), "--device", device)
        try:
            channel = grpc.insecure_channel(server.address, options=[
                ("grpc.max_send_message_length", 64 * MiB), ("grpc.max_receive_message_length", 64 * MiB)])
            stub = pb_grpc.PoolingServiceStub(channel)
            info = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=30)
            assert info.model.device.startswith(device)
            resp = stub.Process(pb.ProcessRequest(data=typed_payload(req)), timeout=120)
            out = geo.GeoTiffSegmentationResponse()
            assert resp.data.typed.Unpack(out)
            masks[device], _ = helpers.read_tiff(out.data)
            channel.close()
        finally:
            server.stop()
    valid = scene.label != synthetic.LABEL_NODATA
    iou = synthetic.iou(masks["cuda"], scene.label, synthetic.WATER, valid)
    agree = float((masks["cuda"] == masks["cpu"]).mean())
    print(f"\ngeotiff on cuda (float16): IoU {iou:.3f}, {100 * agree:.2f}% of pixels equal to the CPU (float32) mask")
    assert masks["cuda"].shape == (512, 640) and iou >= 0.9 and agree > 0.99

