"""The same limits, auth, deadlines, cancellation and errors on every door, parametrized.

One in-process server (the dummy_echo test plugin on the embedded model) with
small limits and a bearer token, serving gRPC (poolstream.v1 and tei.v1) and
HTTP. Each case runs against gRPC and against HTTP and must end with the same
gRPC code and ErrorInfo reason (HTTP: the status google.rpc.Code maps it to,
and the reason in the body).
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from typing import Any

import grpc
import pytest
import pytest_asyncio
from poolstream.config import LimitsConfig
from poolstream.tei.gen.tei import tei_pb2 as tei
from poolstream.tei.gen.tei import tei_pb2_grpc as tei_grpc
from poolstream.v1 import pooling_pb2
from poolstream.v1 import pooling_service_pb2 as pb
from poolstream.v1 import pooling_service_pb2_grpc as pb_grpc

from tests.faults._common import retry_delay_s, status_of
from tests.grpc_helpers import json_payload

pytestmark = pytest.mark.asyncio(loop_scope="module")
TOKEN = "parity-token"
AUTH = [("authorization", f"Bearer {TOKEN}")]
MAX_PROMPTS, MAX_CALLS, MAX_BODY = 8, 3, 64 * 1024
HTTP_STATUS = {"INVALID_ARGUMENT": 400, "UNAUTHENTICATED": 401, "RESOURCE_EXHAUSTED": 429,
               "DEADLINE_EXCEEDED": 504, "UNAVAILABLE": 503, "UNIMPLEMENTED": 501, "NOT_FOUND": 404, "INTERNAL": 500}
DOORS = ["grpc", "http"]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server():
    from dataclasses import replace

    from poolstream.config import EngineConfig
    from poolstream.entrypoints.llm import build_config
    from poolstream.server.app import ListenConfig, PoolstreamServer
    from poolstream.server.transport import TransportConfig

    limits = LimitsConfig(max_prompts_per_request=MAX_PROMPTS, max_concurrent_calls=MAX_CALLS,
                          max_receive_message_bytes=MAX_BODY)
    config = build_config(None, "dummy_echo", replace(EngineConfig()), limits)
    listen = ListenConfig(host="127.0.0.1", port=0, grace_period_s=5, http_port=0,
                          transport=TransportConfig(auth_tokens=(TOKEN,)))
    s = PoolstreamServer(config, listen, "dummy_echo")
    await s.start()
    try:
        yield s
    finally:
        await s.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def channel(server):
    async with grpc.aio.insecure_channel(server.address) as ch:
        yield ch


def http(server, path: str, body: Any = None, headers: dict[str, str] | None = None,
         token: str | None = TOKEN) -> tuple[int, dict[str, str], Any]:
    """One request with urllib (blocking: run it in a thread); (status, headers, JSON body)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{server.http_port}{path}", data=data,
                                 method="POST" if data is not None else "GET")
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            raw, status, hdrs = resp.read(), resp.status, dict(resp.headers)
    except urllib.error.HTTPError as e:
        raw, status, hdrs = e.read(), e.code, dict(e.headers)
    return status, {k.lower(): v for k, v in hdrs.items()}, json.loads(raw) if raw.strip() else None


def reason_of(body: Any) -> str | None:
    err = body.get("error") if isinstance(body, dict) else None
    return err.get("reason") if isinstance(err, dict) else body.get("reason") if isinstance(body, dict) else None


async def outcome(door: str, channel, server, grpc_call, http_path: str, http_body: Any,
                  headers: dict[str, str] | None = None, token: str | None = TOKEN) -> tuple[str, str | None]:
    """(gRPC code name, reason) of one call through either door."""
    if door == "grpc":
        try:
            await grpc_call(channel)
        except grpc.aio.AioRpcError as e:
            return status_of(e)
        return "OK", None
    status, _, body = await asyncio.to_thread(http, server, http_path, http_body, headers, token)
    if status == 200:
        return "OK", None
    code = next(c for c, s in HTTP_STATUS.items() if s == status)
    return code, reason_of(body)


def encode_request(texts: list[str], **params) -> pb.EncodeAllRequest:
    req = pb.EncodeAllRequest(prompts=[pooling_pb2.Prompt(text=t) for t in texts])
    if params:
        req.params.CopyFrom(pooling_pb2.PoolingParams(**params))
    return req


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("credentials", ["none", "wrong", "right"])
async def test_bearer_token(server, channel, door, credentials):
    token = {"none": None, "wrong": "nope", "right": TOKEN}[credentials]
    md = [("authorization", f"Bearer {token}")] if token else None
    got = await outcome(door, channel, server,
                        lambda ch: pb_grpc.PoolingServiceStub(ch).EncodeAll(encode_request(["a"]), metadata=md),
                        "/v1/embeddings", {"input": "a"}, token=token)
    assert got == (("OK", None) if credentials == "right" else ("UNAUTHENTICATED", "UNAUTHENTICATED"))
    tei_got = await outcome(door, channel, server,
                            lambda ch: tei_grpc.EmbedStub(ch).Embed(tei.EmbedRequest(inputs="a"), metadata=md),
                            "/embed", {"inputs": "a"}, token=token)
    assert tei_got == got


async def test_open_routes_need_no_token(server):
    for path in ("/health", "/metrics", "/", "/openapi.json", "/static/app.js"):
        status, _, _ = await asyncio.to_thread(_get_text, server, path)
        assert status == 200, path
    status, headers, body = await asyncio.to_thread(http, server, "/v1/models", None, None, None)
    assert status == 401 and headers["www-authenticate"] == "Bearer" and body["error"]["code"] == "UNAUTHENTICATED"


def _get_text(server, path: str) -> tuple[int, None, None]:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}{path}", timeout=30) as resp:
        return resp.status, None, None


@pytest.mark.parametrize("door", DOORS)
async def test_too_many_prompts(server, channel, door):
    texts = [f"t{i}" for i in range(MAX_PROMPTS + 1)]
    got = await outcome(door, channel, server,
                        lambda ch: pb_grpc.PoolingServiceStub(ch).EncodeAll(encode_request(texts), metadata=AUTH),
                        "/v1/embeddings", {"input": texts})
    assert got == ("INVALID_ARGUMENT", "TOO_MANY_PROMPTS")
    plugin = await outcome(door, channel, server,
                           lambda ch: pb_grpc.PoolingServiceStub(ch).Process(
                               pb.ProcessRequest(data=json_payload({"texts": texts})), metadata=AUTH),
                           "/pooling", {"data": {"texts": texts}})
    assert plugin == ("INVALID_ARGUMENT", "TOO_MANY_PROMPTS")


@pytest.mark.parametrize("door", DOORS)
async def test_bad_input_same_reason(server, channel, door):
    got = await outcome(door, channel, server,
                        lambda ch: pb_grpc.PoolingServiceStub(ch).Process(
                            pb.ProcessRequest(data=json_payload({"no": "texts"})), metadata=AUTH),
                        "/pooling", {"data": {"no": "texts"}})
    assert got == ("INVALID_ARGUMENT", "INVALID_PAYLOAD")
    got = await outcome(door, channel, server,
                        lambda ch: pb_grpc.PoolingServiceStub(ch).Process(
                            pb.ProcessRequest(data=json_payload({"texts": ["a"], "fail": "post"})), metadata=AUTH),
                        "/pooling", {"data": {"texts": ["a"], "fail": "post"}})
    assert got == ("INTERNAL", "POST_PROCESS_FAILED")


@pytest.mark.parametrize("door", DOORS)
async def test_deadline_too_short_for_the_queue(server, channel, door):
    stub = pb_grpc.PoolingServiceStub(channel)
    texts = [f"a long enough sentence number {i} to keep the engine busy for a while" for i in range(MAX_PROMPTS)]
    # Fill the queue with a few calls' worth of work, so the engine's wait estimate exceeds 1 ms.
    busy = [asyncio.ensure_future(stub.Process(pb.ProcessRequest(data=json_payload({"texts": texts})),
                                               metadata=AUTH, timeout=60)) for _ in range(MAX_CALLS - 1)]
    while server.state.engine.estimate_wait_s() <= 0.01 and not all(b.done() for b in busy):
        await asyncio.sleep(0.001)
    got = await outcome(door, channel, server,
                        lambda ch: pb_grpc.PoolingServiceStub(ch).EncodeAll(encode_request(["x"]), metadata=AUTH,
                                                                            timeout=0.002),
                        "/v1/embeddings", {"input": "x"}, headers={"X-Request-Timeout": "0.002"})
    await asyncio.gather(*busy)
    assert got[0] == "DEADLINE_EXCEEDED"
    assert got[1] in ("DEADLINE_TOO_SHORT", "DEADLINE_EXCEEDED", None)  # None: the gRPC client's own deadline


@pytest.mark.parametrize("door", DOORS)
async def test_too_many_calls_with_retry_delay(server, channel, door):
    stub = pb_grpc.PoolingServiceStub(channel)
    holders = [asyncio.ensure_future(stub.Process(pb.ProcessRequest(
        data=json_payload({"texts": ["hold"], "hang_post_s": 1.0})), metadata=AUTH, timeout=60))
        for _ in range(MAX_CALLS)]
    while server.state.active_calls < MAX_CALLS:
        await asyncio.sleep(0.005)
    if door == "grpc":
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.Process(pb.ProcessRequest(data=json_payload({"texts": ["one more"]})), metadata=AUTH)
        assert status_of(e.value) == ("RESOURCE_EXHAUSTED", "TOO_MANY_CALLS")
        assert retry_delay_s(e.value) >= 0.05
    else:
        status, headers, body = await asyncio.to_thread(http, server, "/pooling", {"data": {"texts": ["one more"]}})
        assert status == 429 and body["error"]["reason"] == "TOO_MANY_CALLS"
        assert int(headers["retry-after"]) >= 1 and body["error"]["retry_after_s"] >= 0.05
    await asyncio.gather(*holders)
    assert server.state.active_calls == 0


@pytest.mark.parametrize("door", DOORS)
async def test_oversized_request_refused(server, channel, door):
    if door == "grpc":
        big = encode_request(["x" * (MAX_BODY + 10)])
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await pb_grpc.PoolingServiceStub(channel).EncodeAll(big, metadata=AUTH)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        return
    # A Content-Length of 1 GB: refused with 413 from the headers, the body never sent.
    reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
    writer.write(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Length: 1000000000\r\n\r\n{\"input\":")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 413"), head
    # The answer came while ~1 GB of the body was still unsent: it was never waited for.
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    body = json.loads(await reader.readexactly(length))
    assert body["error"]["reason"] == "BODY_TOO_LARGE"
    writer.close()
    # A chunked body is counted as it arrives and refused once past the limit.
    status, _, body = await asyncio.to_thread(http, server, "/v1/embeddings", {"input": "x" * (MAX_BODY + 10)})
    assert status == 413 and body["error"]["reason"] == "BODY_TOO_LARGE"


async def test_http_disconnect_cancels_the_engine_work(server):
    """A client that goes away mid-request: its task is cancelled and its prompts leave the engine."""
    # Left alone, this call takes 4 x 5 s in the plugin; hung up, it must end with CANCELLED.
    body = json.dumps({"data": {"texts": ["slow"] * 4, "hang_s": 5.0}}).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
    writer.write(b"POST /pooling HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer "
                 + TOKEN.encode() + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    await writer.drain()
    deadline = time.monotonic() + 20
    while server.state.active_calls == 0:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    writer.close()  # hang up while the plugin still waits
    while server.state.active_calls:
        assert time.monotonic() < deadline, "the call outlived its client"
        await asyncio.sleep(0.01)
    assert time.monotonic() < deadline
    await asyncio.sleep(0.2)
    code_counts = {s.labels.get("grpc_code"): s.value for m in server.metrics.registry.collect()
                   if m.name == "poolstream_requests" for s in m.samples
                   if s.labels.get("grpc_method") == "POST /pooling" and s.name.endswith("_total")}
    assert code_counts.get("CANCELLED", 0) >= 1 and "OK" not in code_counts, code_counts
