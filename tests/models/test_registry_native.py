"""Every registered architecture name resolves to an importable implementation."""

from __future__ import annotations

import pytest

from poolstream.models import registry
from poolstream.models.base import TextEncoderModel

NATIVE_TEXT = [
    "XLMRobertaModel", "XLMRobertaForSequenceClassification", "RobertaModel", "MPNetModel", "MPNetForMaskedLM",
    "ModernBertModel", "ModernBertForSequenceClassification", "NomicBertModel", "NewModel", "GteModel",
    "Qwen2Model", "Qwen2ForCausalLM", "Qwen3Model", "Qwen3ForCausalLM", "Qwen3ForSequenceClassification",
]


@pytest.mark.parametrize("name", registry.supported_architectures())
def test_every_registered_name_resolves(name):
    assert registry.resolve_model_class(name)


@pytest.mark.parametrize("name", NATIVE_TEXT)
def test_native_text_architectures_are_registered(name):
    assert issubclass(registry.resolve_model_class(name), TextEncoderModel)
