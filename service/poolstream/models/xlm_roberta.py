"""XLM-RoBERTa / RoBERTa encoders (multilingual-e5, bge-m3, bge-reranker) and their classifier head.

The encoder is BERT's, unchanged (``bert._Encoder``: fused QKV, SDPA, packed
execution, TorchScript): RoBERTa only numbers positions from
``padding_idx + 1``, which ``bert.position_offset`` applies by starting the
position table at that row. Cross-encoder rerankers
(``XLMRobertaForSequenceClassification``) put RoBERTa's head on the ``<s>``
token: dense -> tanh -> out_proj.

Known difference from Hugging Face: HF skips pad-token ids when it numbers
positions (cumsum over ``input_ids != pad``). Tokenized text never contains
the pad id; a raw token-id prompt that does gets plain consecutive positions.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from poolstream.models.bert import _Encoder
from poolstream.models.text_model import ClassifierHead, NativeTextModel, Weights


def roberta_heads(architecture: str, rest: Weights) -> tuple[ClassifierHead | None, ClassifierHead | None]:
    """RoBERTa's (and MPNet's) heads: sequence classification (dense + tanh + out_proj on the
    first token) and token classification (one linear on every token)."""
    if architecture.endswith("ForSequenceClassification") and "classifier.out_proj.weight" in rest:
        return ClassifierHead("cls", rest["classifier.out_proj.weight"], rest.get("classifier.out_proj.bias"),
                              rest["classifier.dense.weight"], rest.get("classifier.dense.bias"), "tanh"), None
    if architecture.endswith("ForTokenClassification") and "classifier.weight" in rest:
        return None, ClassifierHead("none", rest["classifier.weight"], rest.get("classifier.bias"))
    return None, None


class XLMRobertaEmbeddingModel(NativeTextModel):
    """XLMRobertaModel / RobertaModel and their ...ForSequenceClassification / ...ForTokenClassification."""

    anchor: ClassVar[str] = "embeddings.word_embeddings.weight"
    family: ClassVar[str] = "XLM-RoBERTa"

    @classmethod
    def build_body(cls, weights: dict[str, torch.Tensor], hf_config: dict[str, Any]) -> tuple[nn.Module, int]:
        if hf_config.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("only absolute position embeddings are supported")
        if hf_config.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"unsupported hidden_act {hf_config.get('hidden_act')!r}")
        encoder = _Encoder(weights, hf_config)
        return encoder, int(encoder.pos_type.shape[0])

    @classmethod
    def build_heads(cls, architecture: str, rest: Weights, body: Weights,
                    hf_config: dict[str, Any]) -> tuple[ClassifierHead | None, ClassifierHead | None]:
        return roberta_heads(architecture, rest)
