"""models/registry.py: lazy, per-architecture imports with clear errors."""

from __future__ import annotations

import pytest

from poolstream.models import registry
from poolstream.models.bert import BertEmbeddingModel


def test_bert_resolves():
    assert registry.resolve_model_class("BertModel") is BertEmbeddingModel
    assert "BertModel" in registry.supported_architectures()
    assert "PrithviSegmentationModel" in registry.supported_architectures()


def test_unknown_architecture_lists_supported():
    with pytest.raises(ValueError, match="not supported.*BertModel"):
        registry.resolve_model_class("GPT2LMHeadModel")


def test_missing_module_fails_only_its_architecture(monkeypatch):
    monkeypatch.setitem(registry._MODELS, "BrokenModel", ("poolstream.models.does_not_exist", "X"))
    with pytest.raises(ValueError, match="BrokenModel.*cannot be loaded"):
        registry.resolve_model_class("BrokenModel")
    assert registry.resolve_model_class("BertModel") is BertEmbeddingModel


def test_non_model_class_rejected(monkeypatch):
    monkeypatch.setitem(registry._MODELS, "NotAModel", ("poolstream.models.model_dir", "ModelDirConfig"))
    with pytest.raises(ValueError, match="not a PoolingModel"):
        registry.resolve_model_class("NotAModel")
