"""Issue 2: independent clients (grpcurl, buf curl) see the services, messages and health."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import BIN, grpcurl

@pytest.fixture
def default_server(layout_server):
    """Every test here runs against each process layout (tests/conftest.py, LAYOUTS)."""
    return layout_server



def run(*cmd: str, timeout: float = 60) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


EXPECTED_SERVICES = {
    "poolstream.v1.PoolingService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
}


def test_grpcurl_lists_services_v1alpha(default_server):
    listed = set(run(grpcurl(), "-plaintext", default_server.address, "list").split())
    assert EXPECTED_SERVICES <= listed


@pytest.mark.parametrize("protocol", ["grpc-v1", "grpc-v1alpha"])
def test_buf_curl_lists_services_over_each_reflection_version(default_server, protocol):
    out = run(
        str(BIN / "buf"), "curl", "--protocol", "grpc", "--http2-prior-knowledge",
        "--reflect-protocol", protocol, "--list-services", f"http://{default_server.address}",
    )
    assert EXPECTED_SERVICES <= set(out.split())


def test_grpcurl_lists_and_describes_methods_and_messages(default_server):
    methods = run(grpcurl(), "-plaintext", default_server.address, "list", "poolstream.v1.PoolingService")
    for m in ("Process", "ProcessStream", "Encode", "GetServerInfo"):
        assert f"poolstream.v1.PoolingService.{m}" in methods
    tensor = run(grpcurl(), "-plaintext", default_server.address, "describe", "poolstream.v1.Tensor")
    assert "repeated int64 shape" in tensor and "bytes data" in tensor and ".poolstream.v1.DType dtype" in tensor
    # Typed plugin payloads are resolvable, so grpcurl can build an Any with @type.
    payload = run(grpcurl(), "-plaintext", default_server.address, "describe",
                  "poolstream.payloads.text_embedding.v1.TextEmbeddingRequest")
    assert "repeated string texts" in payload
    # The v1 reflection service has a descriptor too.
    v1 = run(grpcurl(), "-plaintext", default_server.address, "describe", "grpc.reflection.v1.ServerReflection")
    assert "ServerReflectionInfo" in v1


@pytest.mark.parametrize("service", ["", "poolstream.v1.PoolingService"])
def test_health_serving(default_server, service):
    out = run(grpcurl(), "-plaintext", "-d", json.dumps({"service": service}), default_server.address,
              "grpc.health.v1.Health/Check")
    assert json.loads(out)["status"] == "SERVING"


def test_health_unknown_service_is_not_found(default_server):
    done = subprocess.run(
        [grpcurl(), "-plaintext", "-d", '{"service": "no.such.Service"}', default_server.address,
         "grpc.health.v1.Health/Check"],
        capture_output=True, text=True, timeout=30,
    )
    assert done.returncode != 0 and "NotFound" in (done.stdout + done.stderr)
