"""vLLM plugins (written against ``vllm.*`` only, found in vLLM's entry-point group) run
unchanged over real gRPC and in process.

The online/offline checks re-express vLLM's tests/plugins_tests/test_io_processor_plugins.py
(``test_prithvi_mae_plugin_online`` / ``_offline``, read at vllm-project/vllm commits
0328802bed2bb6ca346ea10acb61221a0c607768 and 6d74678a4d143553495a387661bde5885ec25b87): the
response parses as ``IOProcessorResponse`` with truthy ``type``/``format``/``data``/
``request_id``, ``data`` is valid base64; offline ``llm.encode(prompt, pooling_task="plugin")``
returns an output with those attributes. poolstream additionally checks the mask itself.
"""

from __future__ import annotations

import asyncio
import base64
import io

import grpc
import numpy as np
import pytest
import rasterio
from poolstream_geotiff import raster, synthetic

from poolstream.entrypoints.llm import AsyncLLM
from poolstream.entrypoints.protocol import IOProcessorResponse
from poolstream.v1 import pooling_service_pb2 as pb
from poolstream.v1 import pooling_service_pb2_grpc as pb_grpc
from tests.conftest import ROOT, inproc_server
from tests.grpc_helpers import error_details, json_payload

PRITHVI = str(ROOT / "models" / "prithvi-water-demo")


def scene_b64(height: int, width: int, seed: int) -> tuple[str, np.ndarray]:
    scene = synthetic.make_scene(height, width, seed)
    buf = io.BytesIO()
    tags = raster.geotiff_georef_tags(32633, (399960.0, 5900040.0), 30.0, citation="WGS 84 / UTM zone 33N")
    raster.write_multiband_geotiff(buf, scene.bands, tags, nodata=synthetic.NODATA)
    return base64.b64encode(buf.getvalue()).decode(), scene.label


def mask_of(b64: str) -> tuple[np.ndarray, dict]:
    with rasterio.MemoryFile(base64.b64decode(b64)) as mem, mem.open() as src:
        return src.read(1), {"crs": src.crs, "transform": src.transform}


async def process(address: str, data: dict, **kw) -> pb.ProcessResponse:
    async with grpc.aio.insecure_channel(address) as ch:
        return await pb_grpc.PoolingServiceStub(ch).Process(pb.ProcessRequest(data=json_payload(data), **kw))


async def test_e1_geotiff_plugin_online_over_grpc():
    b64, label = scene_b64(300, 260, 7_100_001)
    async with inproc_server(model=PRITHVI, plugin="geotiff_tiles_e1") as server:
        resp = await process(server.address, {"data": b64, "data_format": "b64_json", "image_format": "tiff",
                                               "out_data_format": "b64_json"}, request_id="vllm-1")
    body = resp.data.json
    # Serialised as vLLM's server would (pydantic model_dump in JSON mode) and parses back.
    parsed = IOProcessorResponse(data=dict(body), request_id=resp.request_id)
    assert all(parsed.data.get(k) for k in ("type", "format", "data", "request_id"))
    assert parsed.data["request_id"] == resp.request_id
    mask, geo = mask_of(parsed.data["data"])
    assert mask.shape == label.shape and geo["crs"].to_epsg() == 32633
    assert (mask == label).mean() > 0.9  # the model's real segmentation, stitched back


async def test_e1_geotiff_plugin_streams_tiles_over_process_stream():
    b64, label = scene_b64(224, 448, 7_100_003)
    async with inproc_server(model=PRITHVI, plugin="geotiff_tiles_e1") as server:
        async with grpc.aio.insecure_channel(server.address) as ch:
            events = [e async for e in pb_grpc.PoolingServiceStub(ch).ProcessStream(pb.ProcessStreamRequest(
                data=json_payload({"data": b64, "data_format": "b64_json", "out_data_format": "b64_json"})))]
    chunks = [e.chunk for e in events if e.HasField("chunk")]
    assert sorted(c.index for c in chunks) == [0, 1] and list(chunks[0].output.outputs.data.shape) == [3, 224, 224]
    mask, _ = mask_of(events[-1].result.data.json["data"])
    assert (mask == label).mean() > 0.9


async def test_e1_geotiff_plugin_offline_gets_the_whole_prompt_dict():
    b64, label = scene_b64(224, 224, 7_100_002)
    llm = await AsyncLLM.create(PRITHVI, io_processor_plugin="geotiff_tiles_e1")
    try:
        # vLLM's offline call: the whole dict (its "data" is the image) goes to parse_request.
        [out] = await llm.encode(dict(data=b64, data_format="b64_json", image_format="tiff",
                                      out_data_format="b64_json"), pooling_task="plugin", use_tqdm=False)
    finally:
        await llm.close()
    assert all(hasattr(out.outputs, a) for a in ("type", "format", "data", "request_id"))
    mask, _ = mask_of(out.outputs.data)
    assert (mask == label).mean() > 0.9


async def test_stash_between_pre_process_and_params_holds_under_48_concurrent_requests():
    """Each request asks for a different output size; the plugin stashes it on self in
    pre_process and pops it in validate_or_generate_params(). All must get their own."""
    sizes = list(range(8, 8 + 48))
    async with inproc_server(plugin="stash_params_e1") as server:
        async with grpc.aio.insecure_channel(server.address) as ch:
            stub = pb_grpc.PoolingServiceStub(ch)
            resps = await asyncio.gather(*(
                stub.Process(pb.ProcessRequest(data=json_payload({"text": f"request {d} text", "dimensions": d})))
                for d in sizes
            ))
    got = [int(r.data.json["sizes"][0]) for r in resps]
    assert got == sizes


async def test_e2_plugin_parse_data_merge_pooling_params_and_pydantic_output():
    async with inproc_server(plugin="texts_e2") as server:
        resp = await process(server.address, {"texts": ["a cat", "a kitten on a mat"]})
    body = resp.data.json
    assert body["task"] == "embed" and [int(i["index"]) for i in body["items"]] == [0, 1]
    assert all(abs(i["norm"] - 1.0) < 1e-4 and i["tokens"] > 2 for i in body["items"])


async def test_e3_plugin_gets_renderer_and_raw_request_keyword():
    async with inproc_server(plugin="token_weights_e3") as server:
        resp = await process(server.address, {"input": ["hello world"]})
    body = resp.data.json
    tokens = [t["token"] for t in body["data"][0]]
    assert tokens == ["[CLS]", "hello", "world", "[SEP]"]
    assert body["usage"]["prompt_tokens"] == 4 and body["model"] == "all-MiniLM-L6-v2"


@pytest.mark.parametrize(
    ("mode", "code", "reason"),
    [
        ("parse_keyerror", grpc.StatusCode.INTERNAL, "PARSE_REQUEST_FAILED"),
        ("bad_prompt", grpc.StatusCode.INTERNAL, "PRE_PROCESS_FAILED"),
        ("bad_params", grpc.StatusCode.INTERNAL, "PARAMS_FAILED"),
        ("post_runtime", grpc.StatusCode.INTERNAL, "POST_PROCESS_FAILED"),
        ("system_exit", grpc.StatusCode.INTERNAL, "PRE_PROCESS_FAILED"),
        ("post_interrupt", grpc.StatusCode.INTERNAL, "POST_PROCESS_FAILED"),
        ("opaque", grpc.StatusCode.INTERNAL, "OUTPUT_TO_RESPONSE_FAILED"),
    ],
)
async def test_plugin_failures_map_to_documented_statuses(mode, code, reason):
    async with inproc_server(plugin="bad_response_e1") as server:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await process(server.address, {"mode": mode})
        assert e.value.code() == code, e.value.details()
        assert error_details(e.value)["reason"] == reason
        # The server keeps serving.
        ok = await process(server.address, {"mode": "fine"})
        assert ok.data.json["mode"] == "fine"


async def test_sets_and_binary_bytes_are_encoded_like_fastapi_would():
    async with inproc_server(plugin="bad_response_e1") as server:
        resp = await process(server.address, {"mode": "set_and_bytes"})
    assert list(resp.data.json["s"]) == [3] and resp.data.json["b"] == base64.b64encode(b"\xff\x00").decode()


async def test_bad_payload_is_invalid_argument_with_details():
    async with inproc_server(plugin="stash_params_e1") as server:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await process(server.address, {"text": "no dimensions"})
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error_details(e.value)
    assert details["reason"] == "INVALID_PAYLOAD" and details["violations"][0][0] == "data"


async def test_the_task_a_plugin_sets_selects_the_pooler():
    texts = ["a short one", "a somewhat longer sentence here"]
    async with inproc_server(plugin="token_task_e1") as server:
        per_token = (await process(server.address, {"texts": texts, "task": "token_embed"})).data.json
        pooled = (await process(server.address, {"texts": texts, "task": "embed"})).data.json
        default = (await process(server.address, {"texts": texts})).data.json  # "plugin": the model's default
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await process(server.address, {"texts": texts, "task": "classify"})  # no classifier head
    assert [s for s in per_token["shapes"]] == [[t, 384] for t in per_token["tokens"]]
    assert pooled["shapes"] == [[384], [384]] and default["shapes"] == pooled["shapes"]
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "classify" in e.value.details()


async def test_pydantic_output_matching_a_declared_message_is_sent_typed():
    from poolstream.payloads.text_embedding.v1 import text_embedding_pb2

    async with inproc_server(plugin="typed_counts_e2") as server:
        typed = await process(server.address, {"texts": ["one", "two words"]})
        # A field the message does not have (note set): sent as JSON, nothing lost.
        loose = await process(server.address, {"texts": ["one"], "note": "kept"})
    assert typed.data.WhichOneof("kind") == "typed"
    message = text_embedding_pb2.TextEmbeddingResponse()
    assert typed.data.typed.Unpack(message) and list(message.token_counts) == [3, 4]
    assert loose.data.WhichOneof("kind") == "json" and loose.data.json["note"] == "kept"
