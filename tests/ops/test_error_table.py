"""The error table in pooling_service.proto and docs/operations.md matches the code's (code, reason) pairs."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "service" / "poolstream" / "server"
PIPELINE = ROOT / "service" / "poolstream" / "plugins" / "io_processors" / "pipeline.py"
PROTO = ROOT / "protos" / "poolstream" / "v1" / "pooling_service.proto"
DOC = ROOT / "docs" / "operations.md"
CODES = {"INVALID_ARGUMENT", "FAILED_PRECONDITION", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "CANCELLED",
         "UNAUTHENTICATED", "UNAVAILABLE", "INTERNAL", "UNIMPLEMENTED", "UNKNOWN", "NOT_FOUND"}


def code_pairs() -> set[tuple[str, str]]:
    """Every (status code, ErrorInfo reason) the server can produce, read from its source."""
    pairs = set()
    for path in SERVER.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            args = list(node.args)
            if name == "invalid_argument" and args and isinstance(args[0], ast.Constant):
                pairs.add(("INVALID_ARGUMENT", args[0].value))
            elif name == "ServiceError" and len(args) >= 2 and isinstance(args[1], ast.Constant):
                code = args[0]
                assert isinstance(code, ast.Attribute), ast.dump(code)
                pairs.add((code.attr, args[1].value))
    # PluginFailedError(stage) -> INTERNAL "<STAGE>_FAILED" (errors.to_service_error), raised directly or
    # through the pipeline's hook wrappers, which take the stage as their first argument.
    raisers = {"PluginFailedError", "_stage", "_plugin_call"}
    for node in ast.walk(ast.parse(PIPELINE.read_text())):
        if (isinstance(node, ast.Call) and getattr(node.func, "id", "") in raisers
                and node.args and isinstance(node.args[0], ast.Constant)):
            pairs.add(("INTERNAL", f"{node.args[0].value.upper()}_FAILED"))
    return pairs


def table_pairs(lines: list[str]) -> set[tuple[str, str]]:
    """(code, reason) pairs of a markdown table whose first two columns are code and reason(s)."""
    pairs, code = set(), None
    for line in lines:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or (cells[0] and set(cells[0]) <= set("-: ")):
            continue
        if cells[0]:
            head = cells[0].strip("`")
            if head not in CODES:
                continue
            code = head
        if code is None:
            continue
        for reason in re.findall(r"[A-Z][A-Z_]+", cells[1]):
            pairs.add((code, reason))
    return pairs


def proto_table() -> set[tuple[str, str]]:
    lines = [ln.strip()[2:].strip() for ln in PROTO.read_text().splitlines() if ln.strip().startswith("// |")]
    assert lines, "no error table in pooling_service.proto"
    return table_pairs(lines)


def doc_table() -> set[tuple[str, str]]:
    text = DOC.read_text()
    section = text.split("## Status codes", 1)[1].split("\n## ", 1)[0]
    return table_pairs(section.splitlines())


def test_every_error_the_code_raises_is_in_the_proto_table():
    missing = code_pairs() - proto_table()
    assert not missing, f"add to the table in {PROTO.name}: {sorted(missing)}"


def test_every_error_the_code_raises_is_in_the_docs():
    missing = code_pairs() - doc_table()
    assert not missing, f"add to docs/operations.md: {sorted(missing)}"


def test_tables_list_nothing_stale():
    produced = code_pairs()
    # Reasons the code builds dynamically or that come from the engine's error classes.
    engine = {("RESOURCE_EXHAUSTED", "QUEUE_FULL"), ("INVALID_ARGUMENT", "INVALID_PROMPT"),
              ("DEADLINE_EXCEEDED", "DEADLINE_EXCEEDED"), ("UNAVAILABLE", "ENGINE_DEAD"),
              ("INTERNAL", "INTERNAL")}
    assert engine <= produced
    assert proto_table() <= produced, sorted(proto_table() - produced)
    assert doc_table() <= produced, sorted(doc_table() - produced)
