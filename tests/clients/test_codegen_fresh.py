"""Issue 6: the committed generated code (every language) is what `make gen` makes now.

`buf generate -o TMP` regenerates everything from protos/ with buf.gen.yaml
into a temporary directory; the test fails when a committed generated file
differs, is missing, or is left over from a proto that no longer exists.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.clients.helpers import BIN, ROOT, run

# Output directories that also hold hand-written files: only these names count
# as generated there. Every other `out:` directory of buf.gen.yaml is wholly
# generated.
MIXED_OUT_DIRS = {
    "service": re.compile(r".*(_pb2\.pyi?|_pb2_grpc\.py)$"),
    "service/poolstream/tei/gen": re.compile(r".*(_pb2\.pyi?|_pb2_grpc\.py)$"),
}
# `make gen` runs every template: ours, then the vendored TEI proto's (Python only).
TEMPLATES = ("buf.gen.yaml", "buf.gen.tei.yaml")
IGNORED_PARTS = {"__pycache__", ".DS_Store"}


def out_dirs() -> list[str]:
    text = "\n".join((ROOT / t).read_text() for t in TEMPLATES)
    return sorted({m.group(1) for m in re.finditer(r"^\s*out:\s*(\S+)\s*$", text, re.MULTILINE)})


def generated_files(root: Path, out: str) -> dict[str, Path]:
    base = root / out
    if not base.is_dir():
        return {}
    pattern = MIXED_OUT_DIRS.get(out)
    files = {}
    for path in base.rglob("*"):
        rel = path.relative_to(base)
        if not path.is_file() or IGNORED_PARTS & set(rel.parts) or rel.parts[0].endswith(".egg-info"):
            continue
        if pattern and not pattern.fullmatch(rel.as_posix()):
            continue
        files[f"{out}/{rel.as_posix()}"] = path
    return files


def compare(fresh_root: Path, repo_root: Path, outs: list[str]) -> list[str]:
    """Differences between freshly generated code and the repository's."""
    problems = []
    for out in outs:
        fresh, committed = generated_files(fresh_root, out), generated_files(repo_root, out)
        for name in sorted(fresh.keys() - committed.keys()):
            problems.append(f"missing (not committed): {name}")
        for name in sorted(committed.keys() - fresh.keys()):
            problems.append(f"stale (no longer generated): {name}")
        for name in sorted(fresh.keys() & committed.keys()):
            if fresh[name].read_bytes() != committed[name].read_bytes():
                problems.append(f"differs: {name}")
    return problems


def require_plugins() -> None:
    missing = [p for p in ("protoc-gen-go", "protoc-gen-go-grpc") if not shutil.which(p)]
    for p in (
        BIN / "protoc-gen-python_betterproto2",
        BIN / "ruff",
        BIN / "buf",
        ROOT / "clients/node/node_modules/.bin/protoc-gen-ts_proto",
    ):
        if not p.exists():
            missing.append(str(p))
    if missing:
        pytest.fail(f"code generation plugins missing: {missing}; run `make client-setup` (and `make setup`)")


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Path:
    require_plugins()
    out = tmp_path_factory.mktemp("gen")
    for template in TEMPLATES:
        run([str(BIN / "buf"), "generate", "--template", template, "-o", str(out)], timeout=300)
    return out


def test_buf_gen_covers_every_language():
    outs = out_dirs()
    assert {
        "service",
        "clients/python/src/poolstream_client/_proto",
        "clients/go/gen",
        "clients/node/src/gen",
    } <= set(outs), outs
    text = (ROOT / "buf.gen.yaml").read_text()
    # Only local plugins: nothing is fetched at generation time.
    assert not re.search(r"^\s*-?\s*remote:", text, re.MULTILINE)


def test_committed_generated_code_is_fresh(fresh):
    problems = compare(fresh, ROOT, out_dirs())
    assert not problems, "generated code is stale; run `make gen` and commit:\n  " + "\n  ".join(problems)


def test_every_proto_is_generated_for_every_language(fresh):
    protos = sorted(p.relative_to(ROOT / "protos") for p in (ROOT / "protos").rglob("*.proto"))
    assert protos
    for proto in protos:
        stem, parent = proto.with_suffix(""), proto.parent
        expected = [
            f"service/{stem}_pb2.py",
            f"service/{stem}_pb2.pyi",
            f"clients/python/src/poolstream_client/_proto/{parent}/__init__.py",
            f"clients/go/gen/{stem}.pb.go",
            f"clients/node/src/gen/{stem}.ts",
        ]
        for rel in expected:
            assert (fresh / rel).is_file(), f"{proto}: {rel} was not generated"
    # The service stubs exist in every language too.
    for rel in (
        "clients/go/gen/poolstream/v1/pooling_service_grpc.pb.go",
        "service/poolstream/v1/pooling_service_pb2_grpc.py",
    ):
        assert (fresh / rel).is_file()
    assert (
        "export const PoolingServiceClient = makeGenericClientConstructor"
        in (fresh / "clients/node/src/gen/poolstream/v1/pooling_service.ts").read_text()
    )


def test_freshness_check_fails_on_stale_code(fresh, tmp_path):
    """The comparison itself catches an edited, a missing and a leftover file."""
    outs = out_dirs()
    repo = tmp_path / "repo"
    for out in outs:
        for name, path in generated_files(fresh, out).items():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, repo / name)
    # Hand-written files beside the generated ones in `service` are ignored.
    (repo / "service/poolstream/server").mkdir(parents=True, exist_ok=True)
    (repo / "service/poolstream/server/app.py").write_text("# hand-written\n")
    assert compare(fresh, repo, outs) == []

    go = repo / "clients/go/gen/poolstream/v1/tensor.pb.go"
    go.write_text(go.read_text() + "\n// edited\n")
    (repo / "clients/node/src/gen/poolstream/v1/payload.ts").unlink()
    (repo / "clients/python/src/poolstream_client/_proto/poolstream/old").mkdir()
    (repo / "clients/python/src/poolstream_client/_proto/poolstream/old/__init__.py").write_text("")
    (repo / "service/poolstream/v1/removed_pb2.py").write_text("")
    problems = compare(fresh, repo, outs)
    assert sorted(problems) == [
        "differs: clients/go/gen/poolstream/v1/tensor.pb.go",
        "missing (not committed): clients/node/src/gen/poolstream/v1/payload.ts",
        "stale (no longer generated): clients/python/src/poolstream_client/_proto/poolstream/old/__init__.py",
        "stale (no longer generated): service/poolstream/v1/removed_pb2.py",
    ], problems


def test_generated_python_client_messages_import():
    """Every generated betterproto2 module imports and registers its types."""
    from poolstream_client import message_class

    for name in (
        "poolstream.v1.ProcessRequest",
        "poolstream.payloads.text_embedding.v1.TextEmbeddingRequest",
        "google.rpc.Status",
        "google.protobuf.Struct",
    ):
        assert message_class(name).__name__ == name.rsplit(".", 1)[-1]
