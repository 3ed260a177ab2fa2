"""Rotary post-LayerNorm encoders: NomicBERT (nomic-embed-text) and the new GTE (gte-*-v1.5).

Both are BERT blocks (post-LayerNorm, bidirectional) with rotary positions
instead of a position table and a gated MLP: ``down(act(gate(x)) * up(x))``,
SwiGLU (silu) for Nomic, GeGLU (gelu) for GTE. Nomic has no biases; GTE has
q/k/v/o and down-projection biases and (gte-base-en-v1.5) no token types.

Two checkpoint layouts load: transformers' own (``layers.N.self_attn.q_proj``,
``mlp.gate_proj`` ...) and the original remote-code ones the published
checkpoints ship (Nomic: ``encoder.layers.N.attn.Wqkv``, ``mlp.fc11/fc12/fc2``,
``norm1/norm2``, ``emb_ln``; GTE ``NewModel``: ``encoder.layer.N.attention.qkv_proj``,
``mlp.up_gate_proj``, ``attn_ln/mlp_ln``), with either config vocabulary
(``n_embd``/``rotary_emb_base`` or ``hidden_size``/``rope_theta``).

Speed: q/k/v as one GEMM and gate/up as another (fused at load when stored
apart), packed execution on CPU, SDPA (see ``layers``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import nn

from poolstream.models.layers import (
    SUPPORTED_ACTIVATIONS, Rotary, activation, apply_rotary, attention, frozen, key_padding_mask, layer_norm,
    packed_index, rope_theta, scatter_rows, token_positions,
)
from poolstream.models.text_model import ClassifierHead, NativeTextModel, Weights

# Original-layout activation names -> the gate's activation.
_GATED = {"swiglu": "silu", "geglu": "gelu", "silu": "silu", "gelu": "gelu"}


def _cfg(cfg: dict[str, Any], *keys: str, default: Any = None) -> Any:
    """The first of ``keys`` present (transformers' name first, then the remote-code name)."""
    for key in keys:
        if cfg.get(key) is not None:
            return cfg[key]
    if default is None:
        raise ValueError(f"config.json lacks {keys[0]!r}")
    return default


def _layer_weights(w: Weights, i: int) -> dict[str, Optional[torch.Tensor]]:
    """One block's tensors in one vocabulary, q/k/v and gate/up fused, whatever the layout."""
    native, nomic, gte = f"layers.{i}.", f"encoder.layers.{i}.", f"encoder.layer.{i}."
    if native + "self_attn.q_proj.weight" in w:
        a, m = native + "self_attn.", native + "mlp."
        qkv_b = [w.get(a + f"{n}_proj.bias") for n in "qkv"]
        up_b, gate_b = w.get(m + "up_proj.bias"), w.get(m + "gate_proj.bias")
        return {
            "qkv_w": torch.cat([w[a + f"{n}_proj.weight"] for n in "qkv"]),
            "qkv_b": torch.cat(qkv_b) if all(b is not None for b in qkv_b) else None,  # type: ignore[misc]
            "o_w": w[a + "o_proj.weight"], "o_b": w.get(a + "o_proj.bias"),
            "ln1_w": w[native + "post_attention_layernorm.weight"],
            "ln1_b": w.get(native + "post_attention_layernorm.bias"),
            "gate_up_w": torch.cat([w[m + "gate_proj.weight"], w[m + "up_proj.weight"]]),
            "gate_up_b": torch.cat([gate_b, up_b]) if gate_b is not None and up_b is not None else None,
            "down_w": w[m + "down_proj.weight"], "down_b": w.get(m + "down_proj.bias"),
            "ln2_w": w[native + "post_mlp_layernorm.weight"], "ln2_b": w.get(native + "post_mlp_layernorm.bias"),
        }
    if nomic + "attn.Wqkv.weight" in w:
        p = nomic
        up_b, gate_b = w.get(p + "mlp.fc11.bias"), w.get(p + "mlp.fc12.bias")  # fc11: up, fc12: gate
        return {
            "qkv_w": w[p + "attn.Wqkv.weight"], "qkv_b": w.get(p + "attn.Wqkv.bias"),
            "o_w": w[p + "attn.out_proj.weight"], "o_b": w.get(p + "attn.out_proj.bias"),
            "ln1_w": w[p + "norm1.weight"], "ln1_b": w.get(p + "norm1.bias"),
            "gate_up_w": torch.cat([w[p + "mlp.fc12.weight"], w[p + "mlp.fc11.weight"]]),
            "gate_up_b": torch.cat([gate_b, up_b]) if gate_b is not None and up_b is not None else None,
            "down_w": w[p + "mlp.fc2.weight"], "down_b": w.get(p + "mlp.fc2.bias"),
            "ln2_w": w[p + "norm2.weight"], "ln2_b": w.get(p + "norm2.bias"),
        }
    if gte + "attention.qkv_proj.weight" in w:
        p = gte
        up, gate = w[p + "mlp.up_gate_proj.weight"].chunk(2)  # stored [up; gate]
        return {
            "qkv_w": w[p + "attention.qkv_proj.weight"], "qkv_b": w.get(p + "attention.qkv_proj.bias"),
            "o_w": w[p + "attention.o_proj.weight"], "o_b": w.get(p + "attention.o_proj.bias"),
            "ln1_w": w[p + "attn_ln.weight"], "ln1_b": w.get(p + "attn_ln.bias"),
            "gate_up_w": torch.cat([gate, up]), "gate_up_b": None,
            "down_w": w[p + "mlp.down_proj.weight"], "down_b": w.get(p + "mlp.down_proj.bias"),
            "ln2_w": w[p + "mlp_ln.weight"], "ln2_b": w.get(p + "mlp_ln.bias"),
        }
    raise ValueError(f"no weights for encoder block {i} in any known layout")


def _num_layers(w: Weights) -> int:
    n = 0
    while any(k.startswith((f"layers.{n}.", f"encoder.layers.{n}.", f"encoder.layer.{n}.")) for k in w):
        n += 1
    return n


def _opt(t: Optional[torch.Tensor]) -> Optional[nn.Parameter]:
    return None if t is None else frozen(t)


class _Layer(nn.Module):
    def __init__(self, t: dict[str, Optional[torch.Tensor]], heads: int, eps: float, act: str):
        super().__init__()
        self.qkv_w = frozen(t["qkv_w"])  # type: ignore[arg-type]
        self.qkv_b = _opt(t["qkv_b"])
        self.o_w = frozen(t["o_w"])  # type: ignore[arg-type]
        self.o_b = _opt(t["o_b"])
        self.ln1_w = frozen(t["ln1_w"])  # type: ignore[arg-type]
        self.ln1_b = _opt(t["ln1_b"])
        self.gate_up_w = frozen(t["gate_up_w"])  # type: ignore[arg-type]
        self.gate_up_b = _opt(t["gate_up_b"])
        self.down_w = frozen(t["down_w"])  # type: ignore[arg-type]
        self.down_b = _opt(t["down_b"])
        self.ln2_w = frozen(t["ln2_w"])  # type: ignore[arg-type]
        self.ln2_b = _opt(t["ln2_b"])
        self.heads, self.eps, self.act = heads, eps, act

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, b: int, s: int,
                mask: Optional[torch.Tensor], packed: Optional[torch.Tensor]) -> torch.Tensor:
        t, h = x.shape[0], x.shape[1]
        q, k, v = F.linear(x, self.qkv_w, self.qkv_b).view(t, 3, self.heads, h // self.heads).unbind(1)
        a = attention(apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v, b, s, mask, packed, False)
        x = layer_norm(x + F.linear(a, self.o_w, self.o_b), self.ln1_w, self.ln1_b, self.eps)
        gate, up = F.linear(x, self.gate_up_w, self.gate_up_b).chunk(2, dim=1)
        y = F.linear(activation(self.act, gate) * up, self.down_w, self.down_b)
        return layer_norm(x + y, self.ln2_w, self.ln2_b, self.eps)


class _RotaryEncoder(nn.Module):
    def __init__(self, w: Weights, cfg: dict[str, Any], default_base: float):
        super().__init__()
        self.hidden = int(_cfg(cfg, "hidden_size", "n_embd"))
        heads = int(_cfg(cfg, "num_attention_heads", "n_head"))
        self.eps = float(_cfg(cfg, "layer_norm_eps", "layer_norm_epsilon", default=1e-12))
        act_name = str(_cfg(cfg, "hidden_act", "activation_function", default="gelu"))
        act = _GATED.get(act_name, act_name)
        if act not in SUPPORTED_ACTIVATIONS:
            raise ValueError(f"unsupported activation {act_name!r}")
        if cfg.get("rotary_emb_interleaved"):
            raise ValueError("interleaved rotary embeddings (rotary_emb_interleaved) are not supported")
        for key in ("prenorm", "parallel_block", "use_rms_norm", "causal"):  # Nomic's variants beside the encoder
            if cfg.get(key):
                raise ValueError(f"NomicBERT with {key}=true is not supported")
        if cfg.get("logn_attention_scale") or cfg.get("rotary_emb_scale_base") or cfg.get("rotary_scaling_factor"):
            raise ValueError("scaled rotary attention (logn_attention_scale / rotary_emb_scale_base / "
                             "rotary_scaling_factor) is not supported")
        self.word_emb = frozen(w["embeddings.word_embeddings.weight"])
        types = w.get("embeddings.token_type_embeddings.weight")
        if types is None:  # gte-base-en-v1.5: no token types at all
            types = torch.zeros(1, self.hidden)
        # Type 0 is added to every token; pair prompts add type_emb[t] - type_emb[0] (as BERT).
        self.type0 = frozen(types[0])
        self.type_delta = frozen(types - types[0])
        ln = "embeddings.LayerNorm." if "embeddings.LayerNorm.weight" in w else "emb_ln."
        self.emb_ln_w = frozen(w[ln + "weight"])
        self.emb_ln_b = _opt(w.get(ln + "bias"))
        self.layers = nn.ModuleList([_Layer(_layer_weights(w, i), heads, self.eps, act)
                                     for i in range(_num_layers(w))])
        head_dim = self.hidden // heads
        fraction = float(cfg.get("rotary_emb_fraction") or 1.0)
        base = float(cfg["rotary_emb_base"]) if cfg.get("rotary_emb_base") else rope_theta(cfg, default_base)
        self.rotary = Rotary(head_dim, base, int(head_dim * fraction))

    def forward(self, input_ids: torch.Tensor, key_mask: Optional[torch.Tensor], pack: bool,
                token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, s, h = input_ids.shape[0], input_ids.shape[1], self.hidden
        positions = token_positions(key_mask, b, s, input_ids.device).reshape(-1)
        x = F.embedding(input_ids.reshape(-1), self.word_emb)
        if token_type_ids is not None:
            x = x + F.embedding(token_type_ids.reshape(-1), self.type_delta)
        packed: Optional[torch.Tensor] = None
        if key_mask is not None and pack:
            packed = packed_index(key_mask)
            x = x.index_select(0, packed)
            positions = positions.index_select(0, packed)
        x = layer_norm(x + self.type0, self.emb_ln_w, self.emb_ln_b, self.eps)
        cos, sin = self.rotary.cos_sin(positions, x.dtype)
        mask = key_padding_mask(key_mask)
        for layer in self.layers:
            x = layer(x, cos, sin, b, s, mask, packed)
        return scatter_rows(x, packed, b * s).view(b, s, h)


def _bert_heads(architecture: str, rest: Weights, body: Weights) -> tuple[ClassifierHead | None,
                                                                          ClassifierHead | None]:
    """BERT-style heads: tanh pooler on the first token + classifier; or a classifier per token."""
    if "classifier.weight" not in rest:
        return None, None
    if architecture.endswith("ForTokenClassification"):
        return None, ClassifierHead("none", rest["classifier.weight"], rest.get("classifier.bias"))
    if "pooler.dense.weight" not in body:
        raise ValueError(f"{architecture} checkpoint lacks pooler.dense.weight")
    return ClassifierHead("cls", rest["classifier.weight"], rest.get("classifier.bias"),
                          body["pooler.dense.weight"], body.get("pooler.dense.bias"), "tanh"), None


class NomicBertEmbeddingModel(NativeTextModel):
    """NomicBertModel (nomic-embed-text v1 / v1.5) and its heads."""

    anchor: ClassVar[str] = "embeddings.word_embeddings.weight"
    family: ClassVar[str] = "NomicBERT"
    default_base: ClassVar[float] = 1000.0  # transformers' NomicBertConfig default

    @classmethod
    def build_body(cls, weights: Weights, hf_config: dict[str, Any]) -> tuple[nn.Module, int]:
        limit = int(_cfg(hf_config, "max_position_embeddings", "n_positions", default=0) or 0)
        return _RotaryEncoder(weights, hf_config, cls.default_base), limit

    @classmethod
    def build_heads(cls, architecture: str, rest: Weights, body: Weights,
                    hf_config: dict[str, Any]) -> tuple[ClassifierHead | None, ClassifierHead | None]:
        return _bert_heads(architecture, rest, body)


class GteEmbeddingModel(NomicBertEmbeddingModel):
    """GteModel / NewModel (gte-base/large-en-v1.5, gte-multilingual-base) and their heads."""

    family: ClassVar[str] = "GTE"
    default_base: ClassVar[float] = 160000.0  # transformers' GteConfig default
