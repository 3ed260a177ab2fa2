"""MPNet encoder (all-mpnet-base-v2 and its fine-tunes) and its classifier head.

MPNet is a post-LayerNorm BERT block with other weight names, RoBERTa-style
positions (from ``padding_idx + 1``) and one addition: a learned relative
position bias, T5-style buckets of (key - query) distance, shared by all
layers and added to the attention scores. Here the block is BERT's own
(``bert._Layer``: fused QKV, SDPA, packed execution), the bias rides in
SDPA's additive mask together with the key padding.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import nn

from poolstream.models.bert import _Layer
from poolstream.models.layers import frozen, packed_index, scatter_rows
from poolstream.models.text_model import ClassifierHead, NativeTextModel, Weights
from poolstream.models.xlm_roberta import roberta_heads

# MPNet name -> BERT name, inside ``encoder.layer.N.``
_RENAMES = {
    "attention.attn.q.": "attention.self.query.",
    "attention.attn.k.": "attention.self.key.",
    "attention.attn.v.": "attention.self.value.",
    "attention.attn.o.": "attention.output.dense.",
    "attention.LayerNorm.": "attention.output.LayerNorm.",
}


def _bert_names(w: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in w.items():
        for old, new in _RENAMES.items():
            if old in key:
                key = key.replace(old, new)
                break
        out[key] = value
    return out


def relative_buckets(s: int, num_buckets: int, max_distance: int, device: torch.device) -> torch.Tensor:
    """[s, s] bucket of each (query, key) pair: half the buckets per direction, exact up to
    a quarter of them, then logarithmic up to ``max_distance``. Same float ops as MPNet's
    reference, so every boundary lands in the same bucket."""
    pos = torch.arange(s, dtype=torch.long, device=device)
    n = pos[:, None] - pos[None, :]  # query - key = -(key - query)
    half = num_buckets // 2
    ret = (n < 0).to(torch.long) * half
    n = n.abs()
    exact = half // 2
    large = exact + (torch.log(n.float() / exact) / math.log(max_distance / exact) * (half - exact)).to(torch.long)
    large = torch.min(large, torch.full_like(large, half - 1))
    return ret + torch.where(n < exact, n, large)


class _MPNetEncoder(nn.Module):
    """ids [b, s] -> hidden states [b, s, h]; see ``bert._Encoder`` for the packed layout."""

    def __init__(self, w: dict[str, torch.Tensor], cfg: dict[str, Any]):
        super().__init__()
        self.hidden = int(cfg["hidden_size"])
        self.eps = float(cfg.get("layer_norm_eps", 1e-5))
        heads = int(cfg["num_attention_heads"])
        offset = int(cfg.get("pad_token_id", 1)) + 1
        self.word_emb = frozen(w["embeddings.word_embeddings.weight"])
        self.pos = frozen(w["embeddings.position_embeddings.weight"][offset:])
        self.ln_w = frozen(w["embeddings.LayerNorm.weight"])
        self.ln_b = frozen(w["embeddings.LayerNorm.bias"])
        bert_w = _bert_names(w)
        self.layers = nn.ModuleList([_Layer(bert_w, f"encoder.layer.{i}.", heads, self.eps)
                                     for i in range(int(cfg["num_hidden_layers"]))])
        self.rel_bias = frozen(w["encoder.relative_attention_bias.weight"])  # [buckets, heads]
        self.num_buckets = int(cfg.get("relative_attention_num_buckets", 32))
        self.max_distance = 128  # fixed in MPNet (not a config key)

    def forward(self, input_ids: torch.Tensor, key_mask: Optional[torch.Tensor], pack: bool,
                token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """ids [b, s] -> [b, s, h]; no token-type table, so ``token_type_ids`` is never passed."""
        b, s, h = input_ids.shape[0], input_ids.shape[1], self.hidden
        x = (F.embedding(input_ids, self.word_emb) + self.pos[:s]).view(b * s, h)
        buckets = relative_buckets(s, self.num_buckets, self.max_distance, input_ids.device)
        mask = F.embedding(buckets, self.rel_bias).permute(2, 0, 1).unsqueeze(0)  # [1, heads, s, s]
        packed: Optional[torch.Tensor] = None
        if key_mask is not None:
            pad = ~key_mask.to(torch.bool)[:, None, None, :]
            mask = mask.masked_fill(pad, float("-inf"))  # [b, heads, s, s]
            if pack:
                packed = packed_index(key_mask)
                x = x.index_select(0, packed)
        x = F.layer_norm(x, [h], self.ln_w, self.ln_b, self.eps)
        for layer in self.layers:
            x = layer(x, b, s, mask, packed)
        return scatter_rows(x, packed, b * s).view(b, s, h)


class MPNetEmbeddingModel(NativeTextModel):
    """MPNetModel / MPNetForSequenceClassification / MPNetForTokenClassification."""

    anchor: ClassVar[str] = "embeddings.word_embeddings.weight"
    family: ClassVar[str] = "MPNet"

    @classmethod
    def build_body(cls, weights: dict[str, torch.Tensor], hf_config: dict[str, Any]) -> tuple[nn.Module, int]:
        if hf_config.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"unsupported hidden_act {hf_config.get('hidden_act')!r}")
        encoder = _MPNetEncoder(weights, hf_config)
        return encoder, int(encoder.pos.shape[0])

    @classmethod
    def build_heads(cls, architecture: str, rest: Weights, body: Weights,
                    hf_config: dict[str, Any]) -> tuple[ClassifierHead | None, ClassifierHead | None]:
        return roberta_heads(architecture, rest)
