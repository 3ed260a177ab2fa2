"""Fixtures of the HTTP front-door tests: ``poolstream serve --http-port 0`` subprocesses."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, launch_server

ROOT = Path(__file__).resolve().parents[2]
DEMO_MODEL = ROOT / "models" / "prithvi-water-demo"


@dataclass
class HttpServer:
    process: ServerProcess
    http_port: int

    @property
    def grpc_address(self) -> str:
        return self.process.address

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


def launch_http_server(*args: str, **kwargs) -> HttpServer:
    port_file = Path(tempfile.mkdtemp(prefix="poolstream-http-")) / "http-port"
    process = launch_server("--http-port", "0", "--http-port-file", str(port_file), *args, **kwargs)
    return HttpServer(process, int(port_file.read_text()))


@pytest.fixture(scope="session")
def http_server() -> Iterator[HttpServer]:
    """The embedded all-MiniLM-L6-v2 with the text_embedding plugin, gRPC and HTTP."""
    server = launch_http_server()
    yield server
    server.process.stop()


@pytest.fixture(scope="session")
def geotiff_http_server() -> Iterator[HttpServer]:
    """models/prithvi-water-demo (geotiff_segmentation plugin), gRPC and HTTP."""
    server = launch_http_server("--model", str(DEMO_MODEL))
    yield server
    server.process.stop()


@pytest.fixture(scope="session")
def scene_tif(tmp_path_factory) -> Path:
    """A 256x256 synthetic 6-band scene made by the plugin's own example script."""
    import subprocess
    import sys

    path = tmp_path_factory.mktemp("scene") / "scene.tif"
    subprocess.run([sys.executable, str(ROOT / "plugins/geotiff_segmentation/examples/make_scene.py"), str(path),
                    "--size", "256"], check=True, capture_output=True, timeout=120)
    return path
