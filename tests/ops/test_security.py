"""TLS, mutual TLS and bearer-token auth (issue 7): flags, end to end, with certs made at test time."""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from poolstream.cli import main as cli_main
from poolstream.server.security import (
    AUTH_TOKEN_ENV,
    TLSConfig,
    TokenAuthenticator,
    load_tokens,
    tls_from_flags,
)
from poolstream.server.transport import TransportConfig
from poolstream.v1 import pooling_pb2
from poolstream.v1 import pooling_service_pb2 as pb
from poolstream.v1 import pooling_service_pb2_grpc as pb_grpc

from tests.grpc_helpers import error_details, json_payload
from tests.ops._util import free_port, inproc, make_certs

TOKEN = "tok-9f2c1d7e"


def _process_request(tag="x"):
    return pb.ProcessRequest(data=json_payload({"texts": ["hello", "world"], "tag": tag}))


async def _reflection_services(channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    async for resp in call:
        return {s.name for s in resp.list_services_response.service}
    return set()


# -- unit: token loading and comparison -------------------------------------------------------------


def test_token_sources(tmp_path):
    f = tmp_path / "tokens"
    f.write_text("# rotated tokens\nold-token\n\n  new-token  \n")
    assert load_tokens(str(f), env={}) == ["old-token", "new-token"]
    assert load_tokens(None, env={AUTH_TOKEN_ENV: " env-token\n"}) == ["env-token"]
    assert load_tokens(None, env={}) == []  # auth off
    f.write_text("# nothing\n\n")
    with pytest.raises(ValueError):
        load_tokens(str(f), env={})


def test_authenticator_accepts_only_bearer_with_a_known_token():
    auth = TokenAuthenticator(["a-token", "b-token"])
    assert auth.check("Bearer a-token") and auth.check("bearer b-token") and auth.check("Bearer  b-token ")
    for bad in (None, "", "a-token", "Basic a-token", "Bearer", "Bearer a-toke", "Bearer a-token2",
                "Bearer \udcff"):
        assert not auth.check(bad), bad


def test_tls_flag_combinations(tmp_path):
    certs = make_certs(tmp_path)
    assert tls_from_flags(None, None, None) is None
    cfg = tls_from_flags(str(certs.server_cert), str(certs.server_key), str(certs.ca))
    assert isinstance(cfg, TLSConfig) and cfg.mutual
    with pytest.raises(ValueError):
        tls_from_flags(str(certs.server_cert), None, None)
    with pytest.raises(ValueError):
        tls_from_flags(None, None, str(certs.ca))
    with pytest.raises(FileNotFoundError):
        tls_from_flags(str(tmp_path / "missing.pem"), str(certs.server_key), None)


@pytest.mark.parametrize("argv", [
    ["--tls-cert", "/nonexistent.pem"],
    ["--tls-client-ca", "/nonexistent.pem"],
    ["--auth-token-file", "/nonexistent-token-file"],
    ["--max-connection-age", "-1"],
])
def test_bad_security_flags_exit_1_before_loading(argv, capsys):
    assert cli_main(["serve", "--port", "0", *argv]) == 1
    assert "poolstream: error:" in capsys.readouterr().err


# -- end to end: the real command line with mutual TLS, a token file, health and metrics ports -------


async def test_mutual_tls_and_token_end_to_end(start_server_process, tmp_path):
    certs = make_certs(tmp_path / "certs")
    token_file = tmp_path / "tokens"
    token_file.write_text(f"{TOKEN}\n")
    health_port = free_port()
    server = start_server_process(
        "--io-processor-plugin", "dummy_echo",
        "--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key),
        "--tls-client-ca", str(certs.ca), "--auth-token-file", str(token_file),
        "--health-port", str(health_port),
    )
    good = grpc.ssl_channel_credentials(certs.read("ca"), certs.read("client_key"), certs.read("client_cert"))
    auth = [("authorization", f"Bearer {TOKEN}")]

    # The right client certificate and token: served.
    async with grpc.aio.secure_channel(server.address, good) as channel:
        stub = pb_grpc.PoolingServiceStub(channel)
        resp = await stub.Process(_process_request("mtls"), metadata=auth, timeout=60)
        assert resp.data.json["tag"] == "mtls"
        # Without the token: UNAUTHENTICATED with ErrorInfo; health and reflection stay open.
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.Process(_process_request(), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error_details(e.value)["reason"] == "UNAUTHENTICATED"
        assert error_details(e.value)["domain"] == "poolstream.dev"
        health = health_pb2_grpc.HealthStub(channel)
        assert (await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)).status == 1
        assert "poolstream.v1.PoolingService" in await _reflection_services(channel)

    # No client certificate, a certificate of another CA, or plaintext: the handshake fails.
    no_cert = grpc.ssl_channel_credentials(certs.read("ca"))
    rogue = grpc.ssl_channel_credentials(certs.read("ca"), certs.read("rogue_client_key"),
                                         certs.read("rogue_client_cert"))
    for creds in (no_cert, rogue, None):
        channel = (grpc.aio.secure_channel(server.address, creds) if creds is not None
                   else grpc.aio.insecure_channel(server.address))
        async with channel:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await pb_grpc.PoolingServiceStub(channel).GetServerInfo(
                    pb.GetServerInfoRequest(), metadata=auth, timeout=5)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE

    # The plaintext health-only port for kubelet probes: health, and nothing else.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{health_port}") as channel:
        check = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="poolstream.v1.PoolingService"), timeout=10)
        assert check.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await pb_grpc.PoolingServiceStub(channel).GetServerInfo(pb.GetServerInfoRequest(), metadata=auth)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
        # No reflection there either (docs/operations.md says so): grpcurl needs -proto for it.
        # Read before writing: the server refuses the method as the call opens, and a request
        # written while that refusal arrives fails in the client's own core (INTERNAL) instead.
        call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo()
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await call.read()
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED

    assert server.stop() == 0


# -- in process: server-only TLS, and token auth on every PoolingService method ------------------------


async def test_server_tls_without_client_certs(tmp_path):
    certs = make_certs(tmp_path)
    transport = TransportConfig(tls=TLSConfig(str(certs.server_cert), str(certs.server_key)))
    async with inproc(transport=transport) as server:
        creds = grpc.ssl_channel_credentials(certs.read("ca"))
        async with grpc.aio.secure_channel(server.address, creds) as channel:
            info = await pb_grpc.PoolingServiceStub(channel).GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
            assert info.plugin.name == "dummy_echo"
        async with grpc.aio.insecure_channel(server.address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await pb_grpc.PoolingServiceStub(channel).GetServerInfo(pb.GetServerInfoRequest(), timeout=5)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_token_required_on_every_pooling_method_only(monkeypatch):
    transport = TransportConfig(auth_tokens=(TOKEN, "second-token"))
    async with inproc(transport=transport) as server:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = pb_grpc.PoolingServiceStub(channel)
            calls = {
                "GetServerInfo": lambda md: stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=md),
                "Process": lambda md: stub.Process(_process_request(), metadata=md),
                "ProcessStream": lambda md: _drain(stub.ProcessStream(
                    pb.ProcessStreamRequest(data=json_payload({"texts": ["a"]})), metadata=md)),
                "Encode": lambda md: _drain(stub.Encode(
                    pb.EncodeRequest(prompts=[pooling_pb2.Prompt(text="a")]), metadata=md)),
            }
            for name, call in calls.items():
                for md in (None, [("authorization", "Bearer wrong")], [("authorization", TOKEN)]):
                    with pytest.raises(grpc.aio.AioRpcError) as e:
                        await call(md)
                    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, name
                    details = error_details(e.value)
                    assert (details["reason"], details["domain"]) == ("UNAUTHENTICATED", "poolstream.dev")
                for tok in (TOKEN, "second-token"):
                    await call([("authorization", f"Bearer {tok}")])
            # Health and reflection need no token.
            health = health_pb2_grpc.HealthStub(channel)
            assert (await health.Check(health_pb2.HealthCheckRequest(service=""))).status == 1
            assert "grpc.health.v1.Health" in await _reflection_services(channel)
        rejected = server.metrics.requests.labels("poolstream.v1.PoolingService", "Process", "UNAUTHENTICATED")
        assert rejected._value.get() == 3


async def _drain(call):
    return [r async for r in call]


async def test_health_port_answers_while_the_event_loop_is_blocked():
    """The health-only port runs on threads of its own: a probe is answered while the
    server's event loop is stuck (here: a blocking sleep on it), which a check on the
    main port could not be."""
    health_port = free_port()
    async with inproc(transport=TransportConfig(health_port=health_port)):
        answered: dict[str, float] = {}

        def probe() -> None:
            with grpc.insecure_channel(f"127.0.0.1:{health_port}") as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
                answered["status"] = reply.status
                answered["at"] = time.monotonic()

        warm = threading.Thread(target=probe)
        warm.start()
        await asyncio.to_thread(warm.join)
        assert answered["status"] == health_pb2.HealthCheckResponse.SERVING

        answered.clear()
        thread = threading.Thread(target=probe)
        thread.start()
        time.sleep(2.0)  # blocks this event loop, which is also the server's
        unblocked = time.monotonic()
        await asyncio.to_thread(thread.join)
        assert answered["status"] == health_pb2.HealthCheckResponse.SERVING
        assert answered["at"] < unblocked  # answered during the block
