"""The stand-in ``vllm`` package and plugin selection as vLLM's own tests exercise them.

Re-expresses, against poolstream, the unit tests of vLLM's
tests/plugins_tests/test_io_processor_plugins.py (read at vllm-project/vllm commits
0328802bed2bb6ca346ea10acb61221a0c607768 and 6d74678a4d143553495a387661bde5885ec25b87):
``test_loading_missing_plugin`` with ``VllmConfig()``, loading by argument and by
config.json, and a missing plugin named by config.json.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from poolstream.config import ModelConfig, PoolstreamConfig
from poolstream.plugins import vllm_compat
from poolstream.plugins.io_processors import get_io_processor, has_io_processor, select_io_processor
from tests.conftest import subprocess_env

vllm_compat.activate()

import vllm  # noqa: E402  (the stand-in: vLLM is not installed here)
from vllm.config import VllmConfig  # noqa: E402
from vllm.plugins.io_processors import get_io_processor as vllm_get_io_processor  # noqa: E402


@pytest.fixture(autouse=True)
def all_plugins(monkeypatch):
    monkeypatch.delenv("POOLSTREAM_PLUGINS", raising=False)
    monkeypatch.delenv("VLLM_PLUGINS", raising=False)


def config(hf: dict | None = None, arg: str | None = None) -> PoolstreamConfig:
    return PoolstreamConfig(ModelConfig(model="/models/x", hf_config=hf or {}, io_processor_plugin=arg))


def test_stand_in_is_used_only_without_vllm():
    assert vllm_compat.is_stand_in(vllm) and not vllm_compat.real_vllm_installed()
    assert vllm.__version__ == "0.16.0"


def test_loading_missing_plugin_with_empty_vllm_config():
    with pytest.raises(ValueError, match="The model requires the 'wrong_plugin' IO Processor plugin"):
        vllm_get_io_processor(VllmConfig(), "wrong_plugin")


def test_loading_plugin_from_vllm_group_by_argument_and_by_config_json():
    by_arg = select_io_processor(config(), "texts_e2")
    assert type(by_arg.processor).__name__ == "TextsProcessor" and by_arg.group == "vllm.io_processor_plugins"
    by_config = get_io_processor(config({"io_processor_plugin": "geotiff_tiles_e1", "tile_size": 224,
                                         "mean": [0.0] * 6, "std": [1.0] * 6}))
    assert type(by_config).__name__ == "GeoTiffTilesProcessor"
    assert has_io_processor(config({"io_processor_plugin": "x"})) and not has_io_processor(config())


def test_missing_plugin_from_model_config():
    with pytest.raises(ValueError, match="'wrong_plugin' IO Processor plugin but it is not installed"):
        get_io_processor(config({"io_processor_plugin": "wrong_plugin"}))


def test_vllm_plugins_filters_vllm_group_and_poolstream_plugins_filters_both(monkeypatch):
    monkeypatch.setenv("VLLM_PLUGINS", "texts_e2")
    available = select_io_processor(config(), "texts_e2").available
    assert "texts_e2" in available and "vllm_filtered_out" not in available
    assert "dummy_echo" in available  # VLLM_PLUGINS does not filter poolstream's group
    monkeypatch.setenv("POOLSTREAM_PLUGINS", "dummy_echo")
    with pytest.raises(ValueError, match="Available plugins: \\['dummy_echo'\\]"):
        select_io_processor(config(), "texts_e2")


def test_e3_constructor_gets_a_renderer_and_eras_are_detected():
    from poolstream.plugins.io_processors.hooks import PluginHooks

    e3 = get_io_processor(config(), "token_weights_e3")
    assert isinstance(e3.renderer, vllm.renderers.BaseRenderer)
    assert PluginHooks.of(e3, takes_renderer=True).era == "E3"
    e2_plugin = get_io_processor(config(), "texts_e2")
    assert getattr(e2_plugin, "renderer", None) is None  # no constructor of its own: not E3
    e2 = PluginHooks.of(e2_plugin)
    assert (e2.era, e2.parse_name, e2.params_name) == ("E2", "parse_data", "merge_pooling_params")
    e1 = PluginHooks.of(get_io_processor(config(), "stash_params_e1"))
    assert (e1.era, e1.parse_name, e1.params_name) == ("E1", "parse_request", "validate_or_generate_params")
    assert e1.kwargs["validate_or_generate_params"] == frozenset()  # no request= for a hook without it


def test_hf_config_behaves_like_pretrained_config():
    cfg = config({"pretrained_cfg": {"data": {"a": 1}}, "num_labels": 3, "max_position_embeddings": 512})
    hf = cfg.model_config.hf_config
    assert hf.to_dict()["pretrained_cfg"] == {"data": {"a": 1}} and hf.num_labels == 3
    assert getattr(hf, "missing", "default") == "default" and not hasattr(hf, "missing")
    hf.to_dict()["pretrained_cfg"]["data"]["a"] = 2  # to_dict() is a copy, as in transformers
    assert hf["pretrained_cfg"]["data"]["a"] == 1
    assert cfg.model_config.max_model_len == 512


def test_every_import_published_plugins_use():
    from vllm.entrypoints.openai.protocol import IOProcessorRequest as OldReq
    from vllm.entrypoints.pooling.pooling.protocol import IOProcessorRequest, IOProcessorResponse
    from vllm.inputs import PromptType  # noqa: F401
    from vllm.inputs.data import DataPrompt, TokensPrompt  # noqa: F401
    from vllm.logger import init_logger
    from vllm.multimodal import MultiModalDataDict  # noqa: F401
    from vllm.outputs import EmbeddingRequestOutput, PoolingOutput, PoolingRequestOutput
    from vllm.plugins.io_processors.interface import IOProcessor, IOProcessorInput  # noqa: F401
    from vllm.pooling_params import PoolingParams

    from poolstream.pooling_params import PoolingParams as OurParams

    assert OldReq is IOProcessorRequest and IOProcessorResponse(data=1).data == 1
    assert init_logger("x").name == "x"
    params = PoolingParams(task="token_embed", softmax=False)
    assert isinstance(params, OurParams) and params.use_activation is False
    import torch

    out = PoolingRequestOutput("r", PoolingOutput(torch.ones(3)), [1, 2], 0, True)
    assert EmbeddingRequestOutput.from_base(out).outputs.embedding == [1.0, 1.0, 1.0]


def test_a_real_vllm_is_never_shadowed(tmp_path):
    """With a package named vllm importable the normal way (here: a directory on the path
    standing for an installed vLLM, which cannot install here), activation changes nothing,
    and plugins get requests of vLLM's own class."""
    fake = tmp_path / "vllm"
    (fake / "entrypoints" / "pooling" / "pooling").mkdir(parents=True)
    (fake / "__init__.py").write_text("__version__ = 'real'\n")
    for pkg in ("entrypoints", "entrypoints/pooling", "entrypoints/pooling/pooling"):
        (fake / pkg / "__init__.py").write_text("")
    (fake / "entrypoints" / "pooling" / "pooling" / "protocol.py").write_text(textwrap.dedent("""
        from typing import Any
        from pydantic import BaseModel
        class IOProcessorRequest(BaseModel):
            model: str | None = None
            priority: int = 0
            request_id: str | None = None
            data: Any
    """))
    code = textwrap.dedent("""
        from poolstream.plugins import vllm_compat
        vllm_compat.activate()
        import vllm
        assert vllm.__version__ == "real" and vllm_compat.real_vllm_installed()
        # Plugins check isinstance against vLLM's own request class: they get one.
        from poolstream.entrypoints.protocol import IOProcessorRequest as Ours
        from poolstream.plugins.io_processors.compat_types import native_request
        from vllm.entrypoints.pooling.pooling.protocol import IOProcessorRequest as Theirs
        raw = native_request(Ours(data={"a": 1}, model="m", priority=2, request_id="pool-1"))
        assert isinstance(raw, Theirs) and raw.data == {"a": 1} and raw.request_id == "pool-1"
        try:
            import vllm.config  # not in the "real" package: must not come from the stand-in
        except ImportError:
            print("ok")
    """)
    env = subprocess_env()
    env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr


def test_a_plugin_whose_constructor_fails_stops_startup_with_one_clear_error():
    # geotiff_tiles_e1 reads tile_size/mean/std from config.json; this config has none.
    with pytest.raises(ValueError, match=r"plugin 'geotiff_tiles_e1' \(.*GeoTiffTilesProcessor\) failed to start"):
        select_io_processor(config({"io_processor_plugin": "geotiff_tiles_e1"}))
