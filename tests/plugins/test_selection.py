"""Issue 3: plugin discovery and selection, mirroring vLLM's plugin tests.

The test plugins are real distributions (tests/plugin_dists) with entry points:
dummy_echo, opt_out (returns None), broken_callable (raises), broken_import
(module missing), and dummy_upper in a second distribution.
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import grpc
import pytest

from poolstream.config import ModelConfig, PoolstreamConfig, default_model_path
from poolstream.plugins.io_processors import PluginSource, get_io_processor, select_io_processor
from poolstream.v1 import pooling_service_pb2 as pb
from poolstream.v1 import pooling_service_pb2_grpc as pb_grpc
from tests.conftest import BIN, subprocess_env


def config(hf: dict | None = None, arg: str | None = None) -> PoolstreamConfig:
    return PoolstreamConfig(ModelConfig(model="/models/x", hf_config=hf or {}, io_processor_plugin=arg))


@pytest.fixture(autouse=True)
def all_plugins(monkeypatch):
    monkeypatch.delenv("POOLSTREAM_PLUGINS", raising=False)


def test_loading_missing_plugin():
    with pytest.raises(ValueError) as e:
        get_io_processor(config(), "wrong_plugin")
    msg = str(e.value)
    assert msg.startswith(
        "The model requires the 'wrong_plugin' IO Processor plugin but it is not installed. Available plugins: ["
    )
    available = eval(msg.split("Available plugins: ")[1])  # a Python list literal, as in vLLM
    assert {"dummy_echo", "dummy_upper", "text_embedding"} <= set(available)
    assert not {"opt_out", "broken_callable", "broken_import"} & set(available)


def test_no_plugin_loadable_but_one_required(monkeypatch):
    monkeypatch.setenv("POOLSTREAM_PLUGINS", "")
    with pytest.raises(ValueError, match=r"^No IOProcessor plugins installed but one is required \(dummy_echo\)\.$"):
        get_io_processor(config(), "dummy_echo")
    # Only opt-outs and failures left: nothing loadable either.
    monkeypatch.setenv("POOLSTREAM_PLUGINS", "opt_out,broken_callable,broken_import")
    with pytest.raises(ValueError, match=r"^No IOProcessor plugins installed but one is required \(x\)\.$"):
        get_io_processor(config(), "x")


def test_loading_plugin_from_model_config():
    sel = select_io_processor(config({"io_processor_plugin": "dummy_echo"}))
    assert type(sel.processor).__name__ == "EchoProcessor"
    assert (sel.name, sel.source) == ("dummy_echo", PluginSource.CONFIG_JSON)
    assert sel.processor.vllm_config.model_config.model == "/models/x"


def test_loading_missing_plugin_from_model_config():
    with pytest.raises(ValueError, match="The model requires the 'wrong_plugin' IO Processor plugin"):
        get_io_processor(config({"io_processor_plugin": "wrong_plugin"}))


@pytest.mark.parametrize("via", ["init", "config_arg"])
def test_argument_overrides_config_json(via):
    hf = {"io_processor_plugin": "dummy_echo"}
    sel = (select_io_processor(config(hf), "dummy_upper") if via == "init"
           else select_io_processor(config(hf, arg="dummy_upper")))
    assert type(sel.processor).__name__ == "UpperProcessor"
    assert (sel.name, sel.source) == ("dummy_upper", PluginSource.ARGUMENT)


def test_empty_argument_counts_as_unset():
    sel = select_io_processor(config({"io_processor_plugin": "dummy_echo"}), "")
    assert sel.source is PluginSource.CONFIG_JSON


def test_no_plugin_requested_is_not_an_error():
    sel = select_io_processor(config())
    assert sel.processor is None and sel.source is PluginSource.NONE
    assert get_io_processor(config()) is None


def test_several_plugins_installed_is_fine():
    a = get_io_processor(config(), "dummy_echo")
    b = get_io_processor(config(), "dummy_upper")
    assert type(a).__name__ == "EchoProcessor" and type(b).__name__ == "UpperProcessor"


def test_env_filter_applies_before_loading(monkeypatch, caplog):
    monkeypatch.setenv("POOLSTREAM_PLUGINS", "dummy_upper")
    with caplog.at_level(logging.INFO):
        with pytest.raises(ValueError) as e:
            get_io_processor(config(), "dummy_echo")
    assert str(e.value).endswith("Available plugins: ['dummy_upper']")
    # Filtered-out entries are never imported, so the broken one logs nothing.
    assert "Failed to load plugin broken_import" not in caplog.text


def test_failing_entries_are_logged_and_skipped(caplog):
    with caplog.at_level(logging.INFO):
        sel = select_io_processor(config(), "dummy_echo")
    assert sel.processor is not None
    assert "Failed to load plugin broken_import" in caplog.text
    assert "Failed to load plugin broken_callable." in caplog.text


# -- the same rules through the CLI and GetServerInfo ----------------------------

def model_dir_with_plugin(tmp_path: Path, plugin: str | None) -> Path:
    """A copy of the embedded model whose config.json names ``plugin``."""
    src = Path(default_model_path())
    for item in src.iterdir():
        if item.name != "config.json":
            (tmp_path / item.name).symlink_to(item)
    hf = json.loads((src / "config.json").read_text())
    if plugin is not None:
        hf["io_processor_plugin"] = plugin
    (tmp_path / "config.json").write_text(json.dumps(hf))
    return tmp_path


@pytest.mark.parametrize(
    ("arg", "config_plugin", "env", "message"),
    [
        ("wrong_plugin", None, None,
         "The model requires the 'wrong_plugin' IO Processor plugin but it is not installed. Available plugins: ["),
        (None, "wrong_plugin", None,
         "The model requires the 'wrong_plugin' IO Processor plugin but it is not installed."),
        ("dummy_echo", None, "", "No IOProcessor plugins installed but one is required (dummy_echo)."),
    ],
)
def test_cli_exits_nonzero_with_vllm_message(tmp_path, arg, config_plugin, env, message):
    model = model_dir_with_plugin(tmp_path, config_plugin)
    cmd = [str(BIN / "poolstream"), "serve", "--model", str(model), "--port", "0"]
    if arg:
        cmd += ["--io-processor-plugin", arg]
    extra = {} if env is None else {"POOLSTREAM_PLUGINS": env}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=subprocess_env(**extra))
    assert done.returncode == 1
    assert message in done.stderr


async def test_server_info_reports_plugin_and_source(tmp_path, start_server_process, default_server):
    async with grpc.aio.insecure_channel(default_server.address) as ch:
        info = await pb_grpc.PoolingServiceStub(ch).GetServerInfo(pb.GetServerInfoRequest())
    assert (info.plugin.name, info.plugin.source) == ("text_embedding", pb.PLUGIN_SOURCE_CONFIG_JSON)
    assert info.plugin.class_name == "poolstream_text_embedding.processor.TextEmbeddingProcessor"
    assert "poolstream.payloads.text_embedding.v1.TextEmbeddingRequest" in info.plugin.input_types

    model = model_dir_with_plugin(tmp_path, "dummy_echo")
    server = start_server_process("--model", str(model), "--io-processor-plugin", "dummy_upper")
    async with grpc.aio.insecure_channel(server.address) as ch:
        info = await pb_grpc.PoolingServiceStub(ch).GetServerInfo(pb.GetServerInfoRequest())
    assert (info.plugin.name, info.plugin.source) == ("dummy_upper", pb.PLUGIN_SOURCE_ARGUMENT)
    assert {"dummy_echo", "dummy_upper", "text_embedding"} <= set(info.plugin.available)
    assert info.model.architecture == "BertModel" and info.model.max_model_len == 256
