"""The plugin example in docs/plugins.md is the real, installed test plugin, byte for byte."""

from __future__ import annotations

import re

from tests.conftest import ROOT

EXTRA = ROOT / "tests" / "plugin_dists" / "test_plugins_extra"


def code_blocks(lang: str) -> list[str]:
    text = (ROOT / "docs" / "plugins.md").read_text()
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def test_pyproject_in_docs_is_the_installed_one():
    installed = (EXTRA / "pyproject.toml").read_text()
    without_comments = "".join(line for line in installed.splitlines(True) if not line.startswith("#"))
    assert code_blocks("toml")[0] == without_comments


def test_module_in_docs_is_the_installed_one():
    module = (EXTRA / "poolstream_test_plugins_extra" / "__init__.py").read_text()
    assert module in code_blocks("python")
