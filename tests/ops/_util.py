"""Helpers for the operations and fault tests: in-process servers with transport options, certs, RSS."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def inproc(plugin: str | None = "dummy_echo", limits=None, transport=None, grace_period_s: float = 5,
                 drain_delay_s: float = 0, **engine_overrides):
    """A PoolstreamServer in this loop on 127.0.0.1:0, with limits and transport options."""
    from poolstream.config import EngineConfig, LimitsConfig
    from poolstream.entrypoints.llm import build_config
    from poolstream.server.app import ListenConfig, PoolstreamServer
    from poolstream.server.transport import TransportConfig

    config = build_config(None, plugin, replace(EngineConfig(), **engine_overrides), limits or LimitsConfig())
    listen = ListenConfig(host="127.0.0.1", port=0, grace_period_s=grace_period_s, drain_delay_s=drain_delay_s,
                          transport=transport or TransportConfig())
    server = PoolstreamServer(config, listen, plugin)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc (KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_client_cert: Path  # signed by another CA
    rogue_client_key: Path

    def read(self, name: str) -> bytes:
        return getattr(self, name).read_bytes()


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _ca(d: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}", cwd=d)


def _leaf(d: Path, name: str, ca: str, ext: str) -> None:
    (d / f"{name}.ext").write_text(ext)
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)


def make_certs(d: Path) -> Certs:
    """A CA, a server cert for 127.0.0.1/localhost, a client cert, and a client cert of another CA."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command line tool is needed to make test certificates")
    d.mkdir(parents=True, exist_ok=True)
    _ca(d, "ca")
    _ca(d, "rogue-ca")
    _leaf(d, "server", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
          "extendedKeyUsage=serverAuth\n")
    _leaf(d, "client", "ca", "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
    _leaf(d, "rogue", "rogue-ca", "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
    return Certs(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key",
                 d / "rogue.pem", d / "rogue.key")
