"""Shared helpers for the client tests (tests/clients)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
GO_CLIENT = ROOT / "clients" / "go" / "bin" / "poolstream-go-client"
GO_LATENCY = ROOT / "clients" / "go" / "bin" / "poolstream-go-latency"
NODE_CLIENT = ROOT / "clients" / "node" / "dist" / "main.js"
# The address the README's commands use (`make serve`); tests substitute the live one.
README_ADDR = "127.0.0.1:50051"


def tool_env(**extra: str) -> dict[str, str]:
    """The environment for client tools: the venv's bin first on PATH (python,
    buf, grpcurl, ruff, poolstream-client); no inherited make flags."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "/usr/local/bin:/usr/bin:/bin")])
    env.update(extra)
    return env


def run(
    cmd: list[str] | str, *, timeout: float = 120, check: bool = True, **kwargs: Any
) -> subprocess.CompletedProcess:
    done = subprocess.run(
        cmd,
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=kwargs.pop("cwd", ROOT),
        env=kwargs.pop("env", tool_env()),
        shell=isinstance(cmd, str),
        **kwargs,
    )
    if check and done.returncode != 0:
        pytest.fail(
            f"{cmd!r} exited with {done.returncode}\n--- stdout\n{done.stdout[-4000:]}\n"
            f"--- stderr\n{done.stderr[-4000:]}"
        )
    return done


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def json_documents(text: str) -> list[Any]:
    """Every JSON value in `text` (grpcurl prints one indented object per message)."""
    decoder, docs, i = json.JSONDecoder(), [], 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return docs
        doc, i = decoder.raw_decode(text, i)
        docs.append(doc)


def build_client_programs() -> None:
    """`make client-build`: (re)builds the Go and Node programs when their
    sources changed (quick when up to date)."""
    run(["make", "--no-print-directory", "-s", "client-build"], timeout=600)
    for path in (GO_CLIENT, GO_LATENCY, NODE_CLIENT):
        assert path.exists(), f"{path} missing after make client-build"
