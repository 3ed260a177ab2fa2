"""models/model_dir.py on real and synthetic model directories (tmp_path)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from poolstream.config import default_model_path
from poolstream.models.model_dir import parse_pooling_config, read_model_dir


def write(path: Path, name: str, obj) -> None:
    (path / name).parent.mkdir(parents=True, exist_ok=True)
    (path / name).write_text(json.dumps(obj))


BERT_CONFIG = {"architectures": ["BertModel"], "model_type": "bert", "max_position_embeddings": 512}
MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
]


def test_embedded_minilm_dir():
    d = read_model_dir(default_model_path())
    assert d.architecture == "BertModel"
    assert d.pooling == "mean" and d.normalize is True and d.has_normalize is True
    assert d.max_seq_length == 256 and d.max_position_embeddings == 512 and d.max_model_len == 256
    assert d.embedding_dimension == 384 and d.tokenizer_file is not None and d.tokenizer_file.is_file()
    assert [m.kind for m in d.modules] == ["Transformer", "Pooling", "Normalize"]
    assert d.dense_paths == () and d.io_processor_plugin is None


@pytest.mark.parametrize("cfg, modes", [
    ({"word_embedding_dimension": 8, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}, ("cls",)),
    ({"word_embedding_dimension": 8, "pooling_mode_mean_tokens": True}, ("mean",)),
    ({"word_embedding_dimension": 8, "pooling_mode_lasttoken": True}, ("last",)),
    ({"embedding_dimension": 8, "pooling_mode": "mean"}, ("mean",)),
    ({"embedding_dimension": 8, "pooling_mode": "cls", "include_prompt": False}, ("cls",)),
    ({"embedding_dimension": 8, "pooling_mode": "lasttoken"}, ("last",)),
    ({"embedding_dimension": 8, "pooling_mode": ["mean", "max"]}, ("mean", "max")),
])
def test_both_pooling_schemas(cfg, modes):
    got, include_prompt, dim = parse_pooling_config(cfg)
    assert got == modes and dim == 8
    assert include_prompt == cfg.get("include_prompt", True)


def test_unknown_compact_pooling_mode():
    with pytest.raises(ValueError, match="pooling_mode"):
        parse_pooling_config({"pooling_mode": "median"})


def test_compact_schema_dir_without_normalize(tmp_path):
    write(tmp_path, "config.json", BERT_CONFIG)
    write(tmp_path, "modules.json", MODULES[:2])
    write(tmp_path, "1_Pooling/config.json", {"embedding_dimension": 16, "pooling_mode": "cls"})
    d = read_model_dir(tmp_path)
    assert d.pooling == "cls" and d.has_normalize is False and d.normalize is False
    assert d.max_seq_length is None and d.max_model_len == 512  # falls back to config.json
    assert d.tokenizer_file is None


def test_pooling_path_follows_modules_json(tmp_path):
    write(tmp_path, "config.json", BERT_CONFIG)
    mods = [dict(MODULES[0]), dict(MODULES[1], path="pool"), dict(MODULES[2])]
    write(tmp_path, "modules.json", mods)
    write(tmp_path, "pool/config.json", {"pooling_mode_lasttoken": True})
    write(tmp_path, "sentence_bert_config.json", {"max_seq_length": 1024})
    assert read_model_dir(tmp_path).pooling == "last"
    assert read_model_dir(tmp_path).max_model_len == 512  # capped by the position table


def test_max_len_from_tokenizer_config(tmp_path):
    """sentence-transformers >= 6 saves the limit as tokenizer_config.json's model_max_length."""
    write(tmp_path, "config.json", BERT_CONFIG)
    write(tmp_path, "tokenizer_config.json", {"model_max_length": 256})
    write(tmp_path, "sentence_bert_config.json", {"transformer_task": "feature-extraction"})
    assert read_model_dir(tmp_path).max_model_len == 256
    write(tmp_path, "tokenizer_config.json", {"model_max_length": int(1e30)})  # HF's "unbounded"
    assert read_model_dir(tmp_path).max_model_len == 512
    write(tmp_path, "sentence_bert_config.json", {"max_seq_length": 128})
    assert read_model_dir(tmp_path).max_model_len == 128


def test_config_json_only(tmp_path):
    """Segmentation checkpoints: config.json + weights, no sentence-transformers files."""
    write(tmp_path, "config.json", {"architectures": ["PrithviSegmentationModel"], "io_processor_plugin": "x"})
    d = read_model_dir(tmp_path)
    assert d.architecture == "PrithviSegmentationModel" and d.io_processor_plugin == "x"
    assert d.pooling is None and d.modules == () and d.has_normalize is None
    assert d.normalize is True and d.max_model_len == 0


def test_dense_prompts_and_errors(tmp_path):
    write(tmp_path, "config.json", {"model_type": "bert"})
    write(tmp_path, "modules.json", MODULES[:2] + [
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}])
    write(tmp_path, "1_Pooling/config.json", {"pooling_mode": ["mean", "cls"]})
    write(tmp_path, "config_sentence_transformers.json", {"prompts": {"query": "query: "},
                                                          "default_prompt_name": "query"})
    d = read_model_dir(tmp_path)
    assert d.architecture == "bert"  # no architectures: model_type
    assert d.dense_paths == ("2_Dense",)
    assert d.prompts == {"query": "query: "} and d.default_prompt_name == "query"
    with pytest.raises(ValueError, match="combined pooling"):
        _ = d.pooling
    with pytest.raises(FileNotFoundError):
        read_model_dir(tmp_path / "missing")
