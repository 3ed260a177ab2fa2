"""Issue 3: the Process / ProcessStream pipeline over real gRPC, with the in-process
server so the tests can also read the engine's counters."""

from __future__ import annotations

import asyncio

import grpc
import pytest

import poolstream_test_plugins.echo as echo
from poolstream.config import LimitsConfig, default_model_path
from poolstream.v1 import pooling_service_pb2 as pb
from poolstream.v1 import pooling_service_pb2_grpc as pb_grpc
from tests.conftest import inproc_server
from tests.grpc_helpers import error_details, json_payload


def texts(n: int, tag: str = "") -> list[str]:
    return [f"{tag} sentence {i} with a few more words to embed" for i in range(n)]


async def wait_idle(engine, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while engine.stats.queued_prompts or engine.stats.running_prompts:
        assert asyncio.get_running_loop().time() < deadline, "engine never went idle"
        await asyncio.sleep(0.02)


async def test_post_process_gets_first_chunk_before_last_prompt_is_encoded():
    async with inproc_server(plugin="dummy_echo", max_num_seqs=2) as server:
        engine = server.state.engine
        seen: list[tuple[int, int]] = []
        echo.ON_FIRST_CHUNK = lambda rid, index: seen.append((index, engine.stats.prompts_executed))
        try:
            async with grpc.aio.insecure_channel(server.address) as ch:
                resp = await pb_grpc.PoolingServiceStub(ch).Process(
                    pb.ProcessRequest(data=json_payload({"texts": texts(40)}))
                )
        finally:
            echo.ON_FIRST_CHUNK = None
        [(first_index, executed_at_first_chunk)] = seen
        # When post-processing saw its first output, most prompts were not encoded yet.
        assert executed_at_first_chunk < 40
        body = resp.data.json
        assert len(body["norms"]) == 40 and sorted(int(i) for i in body["arrival_order"]) == list(range(40))


async def test_cancel_aborts_every_sub_request():
    async with inproc_server(plugin="dummy_echo", max_num_seqs=2) as server:
        engine = server.state.engine
        async with grpc.aio.insecure_channel(server.address) as ch:
            call = pb_grpc.PoolingServiceStub(ch).ProcessStream(
                pb.ProcessStreamRequest(data=json_payload({"texts": texts(300)}))
            )
            async for event in call:
                if event.HasField("chunk"):
                    break
            call.cancel()
        await wait_idle(engine)
        executed = engine.stats.prompts_executed
        await asyncio.sleep(0.3)
        assert engine.stats.prompts_executed == executed < 300
        assert engine.stats.prompts_aborted > 0


async def test_deadline_aborts_sub_requests():
    async with inproc_server(plugin="dummy_echo", max_num_seqs=2) as server:
        engine = server.state.engine
        async with grpc.aio.insecure_channel(server.address) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await pb_grpc.PoolingServiceStub(ch).Process(
                    pb.ProcessRequest(data=json_payload({"texts": texts(400)})), timeout=0.5
                )
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await wait_idle(engine)
        executed = engine.stats.prompts_executed
        await asyncio.sleep(0.3)
        assert engine.stats.prompts_executed == executed < 400


@pytest.mark.parametrize(
    ("fail", "code", "reason"),
    [
        ("parse", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAYLOAD"),
        ("pre", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAYLOAD"),
        ("pre_internal", grpc.StatusCode.INTERNAL, "PRE_PROCESS_FAILED"),
        ("post", grpc.StatusCode.INTERNAL, "POST_PROCESS_FAILED"),
    ],
)
async def test_plugin_errors_map_to_status_with_details(fail, code, reason):
    async with inproc_server(plugin="dummy_echo") as server:
        async with grpc.aio.insecure_channel(server.address) as ch:
            stub = pb_grpc.PoolingServiceStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await stub.Process(pb.ProcessRequest(data=json_payload({"texts": texts(3), "fail": fail})))
            assert e.value.code() == code
            details = error_details(e.value)
            assert (details["reason"], details["domain"]) == (reason, "poolstream.dev")
            assert "asked to" in e.value.details()
            # The server keeps serving.
            ok = await stub.Process(pb.ProcessRequest(data=json_payload({"texts": texts(2)})))
            assert len(ok.data.json["norms"]) == 2


async def test_no_plugin_is_failed_precondition():
    async with inproc_server(model=default_model_path()) as server:  # its config.json names no plugin
        async with grpc.aio.insecure_channel(server.address) as ch:
            stub = pb_grpc.PoolingServiceStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await stub.Process(pb.ProcessRequest(data=json_payload({"texts": ["a"]})))
            assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "--io-processor-plugin" in e.value.details()
            assert error_details(e.value)["reason"] == "NO_PLUGIN"
            info = await stub.GetServerInfo(pb.GetServerInfoRequest())
            assert info.plugin.source == pb.PLUGIN_SOURCE_NONE


async def test_prompt_cap_is_invalid_argument():
    async with inproc_server(plugin="dummy_echo", limits=LimitsConfig(max_prompts_per_request=5)) as server:
        engine = server.state.engine
        async with grpc.aio.insecure_channel(server.address) as ch:
            stub = pb_grpc.PoolingServiceStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await stub.Process(pb.ProcessRequest(data=json_payload({"texts": texts(6)})))
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert error_details(e.value)["reason"] == "TOO_MANY_PROMPTS"
            assert engine.stats.prompts_executed == 0  # rejected before any engine work
            ok = await stub.Process(pb.ProcessRequest(data=json_payload({"texts": texts(5)})))
            assert len(ok.data.json["norms"]) == 5


async def test_request_ids_single_prompt_wrapping_and_stream_order():
    async with inproc_server(plugin="dummy_echo", max_num_seqs=3) as server:
        async with grpc.aio.insecure_channel(server.address) as ch:
            stub = pb_grpc.PoolingServiceStub(ch)
            # pre_process returns a bare str for one text: it must be wrapped, not iterated.
            one = await stub.Process(pb.ProcessRequest(request_id="mine", data=json_payload({"texts": ["hello"]})))
            assert one.request_id == "mine" and len(one.data.json["norms"]) == 1
            generated = await stub.Process(pb.ProcessRequest(data=json_payload({"texts": ["a", "b"]})))
            assert generated.request_id.startswith("pool-") and len(generated.request_id) == 5 + 32

            events = [e async for e in stub.ProcessStream(
                pb.ProcessStreamRequest(request_id="s1", data=json_payload({"texts": texts(7)})))]
            kinds = [e.WhichOneof("event") for e in events]
            assert kinds[0] == "progress" and events[0].progress.total == 7
            assert kinds[1:-1] == ["chunk"] * 7 and kinds[-1] == "result"
            chunks = [e.chunk for e in events[1:-1]]
            assert [c.completed for c in chunks] == list(range(1, 8))
            assert sorted(c.index for c in chunks) == list(range(7))
            assert all(c.output.request_id == f"s1-{c.index}" for c in chunks)
            assert events[-1].result.request_id == "s1"

            progress = [e async for e in stub.ProcessStream(pb.ProcessStreamRequest(
                data=json_payload({"texts": texts(4)}), detail=pb.STREAM_DETAIL_PROGRESS))]
            assert [e.progress.completed for e in progress[:-1]] == [0, 1, 2, 3, 4]
            assert progress[-1].HasField("result")


async def test_concurrent_requests_keep_their_own_state():
    async with inproc_server(plugin="dummy_echo", max_num_seqs=8) as server:
        async with grpc.aio.insecure_channel(server.address) as ch:
            stub = pb_grpc.PoolingServiceStub(ch)

            async def one(i: int):
                n = 1 + i % 5
                resp = await stub.Process(pb.ProcessRequest(
                    request_id=f"r{i}", data=json_payload({"texts": texts(n, tag=f"t{i}"), "tag": f"tag-{i}"})))
                return i, n, resp

            for i, n, resp in await asyncio.gather(*(one(i) for i in range(48))):
                body = resp.data.json
                assert body["tag"] == f"tag-{i}" and body["request_id"] == f"r{i}"
                assert len(body["norms"]) == n
