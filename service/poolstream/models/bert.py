"""Native torch BERT encoder for sentence embeddings (all-MiniLM, BGE, E5 ...).

No transformers / sentence-transformers at runtime: the weights come straight
from ``model.safetensors`` and the forward pass is a handful of fused ops.

Why it is fast on CPU:
- Q, K and V are one ``[3*hidden, hidden]`` linear (one GEMM instead of three);
- attention is ``scaled_dot_product_attention`` (fused kernel), with no mask
  at all when the batch has no padding;
- padded batches run "packed": every linear layer sees only the real tokens,
  so a batch of mixed lengths costs about what its tokens cost;
- position + token-type-0 embeddings are pre-added into one table;
- the engine runs it under ``torch.inference_mode()``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
import warnings
from typing import Any, Optional

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

from poolstream.models.base import DenseModule, ModelSpec, TextEncoderModel, task_spec_fields
from poolstream.models.model_dir import ModelDirConfig, read_model_dir
from poolstream.models.pooling import SUPPORTED_POOLING

logger = logging.getLogger(__name__)

_EMB_KEY = "embeddings.word_embeddings.weight"
# Checkpoint parts a pure encoder never uses (pooler head, MLM/NSP heads).
_UNUSED_PREFIXES = ("pooler.", "cls.", "lm_head.", "embeddings.position_ids")
_ROBERTA_TYPES = ("roberta", "xlm-roberta", "camembert")
_DENSE_ACTIVATIONS = ("Tanh", "Identity", "ReLU", "Sigmoid")


def load_safetensors(model_dir: Path) -> dict[str, torch.Tensor]:
    """All tensors of ``model.safetensors`` (or its sharded index) on CPU."""
    single = model_dir / "model.safetensors"
    index = model_dir / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        with open(index, encoding="utf-8") as f:
            files = [model_dir / name for name in sorted(set(json.load(f)["weight_map"].values()))]
    else:
        raise FileNotFoundError(f"{model_dir}: no model.safetensors (other weight formats are not read)")
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            for key in f.keys():
                tensors[key] = f.get_tensor(key)
    return tensors


def strip_prefix(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a leading ``bert.`` / ``model.`` (whatever precedes the embeddings) and unused heads."""
    emb = next((k for k in tensors if k.endswith(_EMB_KEY)), None)
    if emb is None:
        raise ValueError(f"not a BERT checkpoint: no tensor named '*{_EMB_KEY}'")
    prefix = emb[: -len(_EMB_KEY)]
    out = {}
    for key, value in tensors.items():
        if not key.startswith(prefix):
            continue  # e.g. a task head beside the encoder
        key = key[len(prefix):]
        if not key.startswith(_UNUSED_PREFIXES):
            out[key] = value
    return out


def position_offset(hf_config: dict[str, Any]) -> int:
    """First row of the position table that real tokens use.

    RoBERTa-family models (XLM-R, multilingual-e5, bge-m3, CamemBERT) number
    positions from ``padding_idx + 1`` (rows up to padding_idx are never read
    for right-padded text), so their table is used from that row on and the
    encoder is otherwise exactly BERT's.
    """
    if hf_config.get("model_type") in _ROBERTA_TYPES:
        return int(hf_config.get("pad_token_id", 1)) + 1
    return 0


class _Layer(nn.Module):
    """One transformer block, post-LayerNorm as in BERT."""

    def __init__(self, w: dict[str, torch.Tensor], p: str, num_heads: int, eps: float):
        super().__init__()
        att = p + "attention."
        self.qkv_w = nn.Parameter(torch.cat([w[att + f"self.{n}.weight"] for n in ("query", "key", "value")]),
                                  requires_grad=False)
        self.qkv_b = nn.Parameter(torch.cat([w[att + f"self.{n}.bias"] for n in ("query", "key", "value")]),
                                  requires_grad=False)
        names = {
            "o_w": att + "output.dense.weight", "o_b": att + "output.dense.bias",
            "ln1_w": att + "output.LayerNorm.weight", "ln1_b": att + "output.LayerNorm.bias",
            "i_w": p + "intermediate.dense.weight", "i_b": p + "intermediate.dense.bias",
            "out_w": p + "output.dense.weight", "out_b": p + "output.dense.bias",
            "ln2_w": p + "output.LayerNorm.weight", "ln2_b": p + "output.LayerNorm.bias",
        }
        for attr, key in names.items():
            setattr(self, attr, nn.Parameter(w[key], requires_grad=False))
        self.num_heads = num_heads
        self.eps = eps

    def forward(self, x: torch.Tensor, b: int, s: int, mask: Optional[torch.Tensor],
                packed: Optional[torch.Tensor]) -> torch.Tensor:
        """x: [tokens, h] hidden states, 2-D so every linear runs on real tokens only.

        Dense batches (no padding) have tokens == b * s and ``packed`` None. Packed
        batches hold only the real tokens; ``packed`` gives their positions in the
        flattened [b * s] grid, and only attention sees the padded layout.
        """
        h = x.shape[1]
        qkv = F.linear(x, self.qkv_w, self.qkv_b)  # [tokens, 3h]
        if packed is not None:
            qkv = qkv.new_zeros(b * s, 3 * h).index_copy_(0, packed, qkv)
        # [b, s, 3h] -> [3, b, heads, s, head_dim]
        qkv = qkv.view(b, s, 3, self.num_heads, h // self.num_heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=mask)  # [b, heads, s, head_dim]
        a = a.transpose(1, 2).reshape(b * s, h)
        if packed is not None:
            a = a.index_select(0, packed)
        x = F.layer_norm(x + F.linear(a, self.o_w, self.o_b), [h], self.ln1_w, self.ln1_b, self.eps)
        y = F.linear(F.gelu(F.linear(x, self.i_w, self.i_b)), self.out_w, self.out_b)
        return F.layer_norm(x + y, [h], self.ln2_w, self.ln2_b, self.eps)


class _Encoder(nn.Module):
    """Embeddings + transformer blocks: ids [b, s] -> hidden states [b, s, h].

    Kept TorchScript-compatible: run scripted, the whole encoder executes in
    C++ without the GIL, so the engine thread neither waits for nor blocks the
    asyncio thread between its ~100 ops (measured: a busy Python thread made
    the eager forward ~40% slower, the scripted one not measurably).
    """

    def __init__(self, weights: dict[str, torch.Tensor], hf_config: dict[str, Any]):
        super().__init__()
        self.hidden = int(hf_config["hidden_size"])
        self.eps = float(hf_config.get("layer_norm_eps", 1e-12))
        heads = int(hf_config["num_attention_heads"])
        self.word_emb = nn.Parameter(weights["embeddings.word_embeddings.weight"], requires_grad=False)
        # Position + token type 0 in one table: single-sentence prompts never use other types.
        pos_type = weights["embeddings.position_embeddings.weight"][position_offset(hf_config):]
        if "embeddings.token_type_embeddings.weight" in weights:
            pos_type = pos_type + weights["embeddings.token_type_embeddings.weight"][0]
        self.pos_type = nn.Parameter(pos_type, requires_grad=False)
        # Pair prompts (cross-encoders) add type_emb[t] - type_emb[0] on top of the table above.
        types = weights.get("embeddings.token_type_embeddings.weight")
        self.type_delta = nn.Parameter(
            types - types[0] if types is not None else torch.zeros(1, self.hidden), requires_grad=False)
        self.emb_ln_w = nn.Parameter(weights["embeddings.LayerNorm.weight"], requires_grad=False)
        self.emb_ln_b = nn.Parameter(weights["embeddings.LayerNorm.bias"], requires_grad=False)
        n_layers = int(hf_config["num_hidden_layers"])
        self.layers = nn.ModuleList([_Layer(weights, f"encoder.layer.{i}.", heads, self.eps)
                                     for i in range(n_layers)])

    def forward(self, input_ids: torch.Tensor, key_mask: Optional[torch.Tensor], pack: bool,
                token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """ids [b, s] (+ 0/1 key mask, None when nothing is padded) -> hidden states [b, s, h].

        ``token_type_ids`` [b, s]: only for pair prompts (None: all type 0).

        ``pack``: run embeddings, projections and the FFN on the real tokens
        only (padding rows come back as zeros). Padding costs nothing then but
        attention, which is a small part of an encoder at these lengths:
        mixed-length batches of 32 sentences pad ~40%, and packing made them
        ~1.6x faster on CPU. It needs the real-token positions, which the
        caller only asks for where computing them costs no device sync.
        """
        b, s = input_ids.shape[0], input_ids.shape[1]
        h = self.hidden
        x = F.embedding(input_ids, self.word_emb) + self.pos_type[:s]
        if token_type_ids is not None:
            x = x + F.embedding(token_type_ids, self.type_delta)
        x = x.view(b * s, h)
        packed: Optional[torch.Tensor] = None
        # Boolean key mask [b, 1, 1, s], broadcast over heads and queries.
        attn: Optional[torch.Tensor] = None
        if key_mask is not None:
            attn = key_mask.to(torch.bool)[:, None, None, :]
            if pack:
                packed = key_mask.reshape(-1).nonzero().squeeze(1)
                x = x.index_select(0, packed)
        x = F.layer_norm(x, [h], self.emb_ln_w, self.emb_ln_b, self.eps)
        for layer in self.layers:
            x = layer(x, b, s, attn, packed)
        if packed is not None:
            x = x.new_zeros(b * s, h).index_copy_(0, packed, x)
        return x.view(b, s, h)


# Architectures served by BertEmbeddingModel -> (default task, tasks beyond embed/token_embed).
_HEADS = {
    "BertModel": ("embed", ()),
    "BertForSequenceClassification": ("classify", ("classify", "score")),
    "BertForTokenClassification": ("token_classify", ("token_classify",)),
    "BertForMaskedLM": ("embed_sparse", ("embed_sparse",)),
}
_SPLADE_POOLING = "SpladePooling"


class BertEmbeddingModel(TextEncoderModel):
    """BERT encoder + sentence-transformers pooling (+ optional Dense modules), and the task heads
    of BertForSequenceClassification / BertForTokenClassification / BertForMaskedLM (SPLADE)."""

    def __init__(self, weights: dict[str, torch.Tensor], hf_config: dict[str, Any], mdir: ModelDirConfig,
                 dense: list[DenseModule] | None = None, heads: dict[str, torch.Tensor] | None = None):
        super().__init__()
        if hf_config.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("only absolute position embeddings are supported")
        if hf_config.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"unsupported hidden_act {hf_config.get('hidden_act')!r}")
        self.encoder = _Encoder(weights, hf_config)
        self._scripted: torch.jit.ScriptModule | None = None  # set by load()
        self.pooling = mdir.pooling or "cls"  # TEI / vLLM fall back to CLS for BERT
        if self.pooling not in SUPPORTED_POOLING:
            raise ValueError(f"{mdir.path}: pooling {self.pooling!r} is not supported "
                             f"(supported: {', '.join(SUPPORTED_POOLING)})")
        if not mdir.pooling_include_prompt:
            raise ValueError(f"{mdir.path}: pooling with include_prompt=false is not supported")
        # Dense heads stay a plain list (not parameters) so they stay fp32 when the encoder is fp16.
        self.dense = dense or []
        self.heads = nn.ParameterDict({k.replace(".", "_"): nn.Parameter(v, requires_grad=False)
                                       for k, v in (heads or {}).items()})
        self.splade = mdir.splade  # SpladePooling settings (base.TextEncoderModel._splade)
        default, head_tasks = _HEADS.get(mdir.architecture, _HEADS["BertModel"])
        if default == "embed_sparse" and not any(m.kind == _SPLADE_POOLING for m in mdir.modules):
            default = "embed"  # a plain masked LM (bert-base-uncased): embeddings unless it says SPLADE
        tasks = ("embed", "token_embed") + head_tasks
        out_dim = self.dense[-1][0].shape[0] if self.dense else self.encoder.hidden
        fields = task_spec_fields(hf_config, mdir)
        vocab = int(self.encoder.word_emb.shape[0])
        n_labels = len(fields["labels"])
        shapes = {"embed": (out_dim,), "token_embed": (-1, self.encoder.hidden), "classify": (n_labels,),
                  "score": (n_labels,), "token_classify": (-1, n_labels), "embed_sparse": (-1,)}
        type_vocab = int(hf_config.get("type_vocab_size", 2))
        self._spec = ModelSpec(output_shape=shapes[default], pooling=self.pooling, normalize=mdir.normalize,
                               max_model_len=mdir.max_model_len or self.encoder.pos_type.shape[0],
                               extra={"vocab_size": vocab, "type_vocab_size": type_vocab}, tasks=tasks,
                               default_task=default, token_type_ids=type_vocab > 1,
                               task_shapes={t: shapes[t] for t in tasks}, **fields)

    @classmethod
    def load(cls, model_dir: Path, hf_config: dict[str, Any], device: torch.device,
             dtype: torch.dtype) -> "BertEmbeddingModel":
        mdir = read_model_dir(model_dir)
        raw = load_safetensors(Path(model_dir))
        weights = strip_prefix(raw)
        heads = _head_weights(raw, mdir.architecture, hf_config)
        dense = [_load_dense(Path(model_dir) / p) for p in mdir.dense_paths]
        model = cls(weights, hf_config, mdir, dense, heads)
        model.eval().requires_grad_(False)
        model = model.to(device=device, dtype=dtype)
        model.dense = [(w.to(device, torch.float32), None if b is None else b.to(device, torch.float32), act)
                       for w, b, act in model.dense]
        model._scripted = _script(model.encoder)
        return model

    def spec(self) -> ModelSpec:
        return self._spec

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor],
                      token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        # Packing (see _Encoder.forward) needs the mask's contents (nonzero), so it is a
        # CPU-path optimisation; CUDA batches run padded, without a sync.
        on_cpu = input_ids.device.type == "cpu"
        if self._scripted is not None:
            # Unoptimized TorchScript: plain op-by-op in C++, no profiling/re-specialisation
            # per new (batch, seq) shape; the gain is running without the GIL.
            with torch.jit.optimized_execution(False):
                return self._scripted(input_ids, attention_mask, on_cpu, token_type_ids)
        return self.encoder(input_ids, attention_mask, on_cpu, token_type_ids)

    def _head(self, name: str) -> torch.Tensor:
        return self.heads[name.replace(".", "_")]

    def sequence_logits(self, hidden: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
        # BertForSequenceClassification: tanh pooler on [CLS], then the classifier (dropout is off).
        pooled = torch.tanh(F.linear(hidden[:, 0], self._head("pooler.dense.weight"),
                                     self._head("pooler.dense.bias")))
        return F.linear(pooled, self._head("classifier.weight"), self._head("classifier.bias"))

    def token_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self._head("classifier.weight"), self._head("classifier.bias"))

    def mlm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        # BertOnlyMLMHead: dense -> gelu -> LayerNorm -> decoder tied to the word embeddings.
        x = F.gelu(F.linear(hidden, self._head("transform.dense.weight"), self._head("transform.dense.bias")))
        x = F.layer_norm(x, [x.shape[-1]], self._head("transform.LayerNorm.weight"),
                         self._head("transform.LayerNorm.bias"), self.encoder.eps)
        return F.linear(x, self._head("decoder.weight"), self._head("decoder.bias"))


def _head_weights(raw: dict[str, torch.Tensor], architecture: str,
                  hf_config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The task head tensors of ``architecture``, under short names (see the heads' users)."""
    def need(*keys: str) -> torch.Tensor:
        for key in keys:
            if key in raw:
                return raw[key]
        raise ValueError(f"{architecture} checkpoint lacks {keys[0]!r}")

    if architecture == "BertForSequenceClassification":
        return {"pooler.dense.weight": need("bert.pooler.dense.weight", "pooler.dense.weight"),
                "pooler.dense.bias": need("bert.pooler.dense.bias", "pooler.dense.bias"),
                "classifier.weight": need("classifier.weight"), "classifier.bias": need("classifier.bias")}
    if architecture == "BertForTokenClassification":
        return {"classifier.weight": need("classifier.weight"), "classifier.bias": need("classifier.bias")}
    if architecture == "BertForMaskedLM":
        p = "cls.predictions."
        heads = {f"transform.{n}": need(p + f"transform.{n}")
                 for n in ("dense.weight", "dense.bias", "LayerNorm.weight", "LayerNorm.bias")}
        # The decoder is tied to the word embeddings: checkpoints usually store only those.
        heads["decoder.weight"] = need(p + "decoder.weight", "bert.embeddings.word_embeddings.weight",
                                       "embeddings.word_embeddings.weight")
        heads["decoder.bias"] = need(p + "bias", p + "decoder.bias")
        return heads
    return {}


def _script(encoder: _Encoder) -> torch.jit.ScriptModule | None:
    """TorchScript the encoder, or None (eager fallback) where TorchScript is unavailable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # deprecated in 2.x, still shipped
            return torch.jit.script(encoder)
    except Exception as e:  # noqa: BLE001 - any failure just means eager mode
        logger.warning("TorchScript unavailable (%s); running the BERT encoder eagerly", e)
        return None


def _load_dense(path: Path) -> DenseModule:
    """A sentence-transformers Dense module: (weight, bias, activation name)."""
    with open(path / "config.json", encoding="utf-8") as f:
        cfg = json.load(f)
    act = str(cfg.get("activation_function", "torch.nn.modules.linear.Identity")).rsplit(".", 1)[-1]
    if act not in _DENSE_ACTIVATIONS:
        raise ValueError(f"{path}: unsupported Dense activation {act!r}")
    weights = load_safetensors(path)
    w = weights.get("linear.weight")
    if w is None:
        raise ValueError(f"{path}: Dense module without linear.weight")
    return w, weights.get("linear.bias"), act
