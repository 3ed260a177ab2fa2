"""config.json ``architectures[0]`` -> model implementation, imported lazily.

Modules are imported only when their architecture is asked for, so a missing
or broken implementation fails that architecture alone, and the server does
not pay for importing every model at startup.
"""

from __future__ import annotations

import importlib

from poolstream.models.base import PoolingModel

# architecture name -> (module, class name)
_MODELS: dict[str, tuple[str, str]] = {
    # Text encoders (all-MiniLM, BGE, E5 ...): native torch BERT.
    "BertModel": ("poolstream.models.bert", "BertEmbeddingModel"),
    # BERT task heads (models/base.py's tasks): cross-encoders / classifiers, NER, SPLADE.
    "BertForSequenceClassification": ("poolstream.models.bert", "BertEmbeddingModel"),
    "BertForTokenClassification": ("poolstream.models.bert", "BertEmbeddingModel"),
    "BertForMaskedLM": ("poolstream.models.bert", "BertEmbeddingModel"),
    # ---- Geospatial / segmentation models (owned by the geospatial engineer) ----
    "PrithviSegmentationModel": ("poolstream.models.prithvi", "PrithviSegmentationModel"),
    # ---- end geospatial ----
}


def _family(module: str, cls: str, prefixes: tuple[str, ...],
            suffixes: tuple[str, ...]) -> dict[str, tuple[str, str]]:
    return {p + s: (module, cls) for p in prefixes for s in suffixes}


# Native encoders / decoders of other families (see each module's docstring). Checkpoints
# often name their pre-training class over encoder weights (MPNetForMaskedLM for
# all-mpnet-base-v2, Qwen3ForCausalLM for Qwen3-Embedding): those names serve the same way,
# as embedders (their LM heads are not read).
_HEADS = ("Model", "ForSequenceClassification", "ForTokenClassification")
_MODELS.update({
    **_family("poolstream.models.xlm_roberta", "XLMRobertaEmbeddingModel", ("XLMRoberta", "Roberta"),
              _HEADS + ("ForMaskedLM",)),
    **_family("poolstream.models.mpnet", "MPNetEmbeddingModel", ("MPNet",), _HEADS + ("ForMaskedLM",)),
    **_family("poolstream.models.modernbert", "ModernBertEmbeddingModel", ("ModernBert",),
              _HEADS + ("ForMaskedLM",)),
    **_family("poolstream.models.rotary_bert", "NomicBertEmbeddingModel", ("NomicBert",), _HEADS + ("ForMaskedLM",)),
    **_family("poolstream.models.rotary_bert", "GteEmbeddingModel", ("Gte", "New"), _HEADS + ("ForMaskedLM",)),
    **_family("poolstream.models.qwen", "QwenEmbeddingModel", ("Qwen2", "Qwen3"), _HEADS + ("ForCausalLM",)),
})


def supported_architectures() -> list[str]:
    return sorted(_MODELS)


def resolve_model_class(architecture: str) -> type[PoolingModel]:
    """Import and return the implementation of ``architecture``.

    Raises ValueError for unknown names (listing the supported ones) and for
    implementations that cannot be imported.
    """
    try:
        module_name, class_name = _MODELS[architecture]
    except KeyError:
        raise ValueError(
            f"Model architecture {architecture!r} is not supported. "
            f"Supported architectures: {', '.join(supported_architectures())}"
        ) from None
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, class_name)
    except (ImportError, AttributeError) as e:
        raise ValueError(
            f"Model architecture {architecture!r} is registered as {module_name}.{class_name}, "
            f"which cannot be loaded: {e}"
        ) from e
    if not (isinstance(cls, type) and issubclass(cls, PoolingModel)):
        raise ValueError(f"{module_name}.{class_name} is not a PoolingModel subclass")
    return cls
