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
from poolstream.models.text_model import ClassifierHead, NativeTextModel


def roberta_head(rest: dict[str, torch.Tensor]) -> ClassifierHead | None:
    """RoBERTa's (and MPNet's) sequence-classification head, on the first token."""
    if "classifier.out_proj.weight" not in rest:
        return None
    return ClassifierHead("cls", rest["classifier.out_proj.weight"], rest.get("classifier.out_proj.bias"),
                          rest["classifier.dense.weight"], rest.get("classifier.dense.bias"), "tanh")


class XLMRobertaEmbeddingModel(NativeTextModel):
    """XLMRobertaModel / RobertaModel and their ...ForSequenceClassification."""

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
    def build_head(cls, rest: dict[str, torch.Tensor], body: dict[str, torch.Tensor],
                   hf_config: dict[str, Any]) -> ClassifierHead | None:
        return roberta_head(rest)
