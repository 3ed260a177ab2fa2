"""The ``transformers`` fallback: any architecture transformers knows, served slower.

Installed with ``pip install 'poolstream[transformers]'``. When config.json's
``architectures`` names no native implementation (models/registry.py), the
engine loads the model through transformers' Auto classes, picked by the
architecture's suffix:

- ``...ForSequenceClassification`` -> AutoModelForSequenceClassification:
  classify, score (+ embed, token_embed from its encoder);
- ``...ForTokenClassification`` -> AutoModelForTokenClassification: token_classify;
- ``...ForMaskedLM`` -> AutoModelForMaskedLM: embed_sparse (SPLADE; the
  default when modules.json lists SpladePooling);
- anything else -> AutoModel (its encoder / decoder body): embed, token_embed.

Pooling, Normalize, Dense modules, prompts and the maximum length come from
the same sentence-transformers files as for native models, so outputs are
the same; only the forward is transformers' own (eager PyTorch, padded
batches, no packing). GetServerInfo reports ``backend: "transformers"``.
``--model-backend transformers`` forces it (e.g. to compare with a native path).
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from poolstream.models.base import ModelSpec, PoolingModel, TextEncoderModel, task_spec_fields
from poolstream.models.bert import _load_dense
from poolstream.models.model_dir import read_model_dir
from poolstream.models.pooling import SUPPORTED_POOLING
from poolstream.models.registry import resolve_model_class, supported_architectures

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "native", "transformers")
# Padded tokens per SPLADE sub-batch: [tokens, vocab] float32 logits, ~250 MB for BERT's vocab.
_SPLADE_TOKENS = 2048
_INSTALL_HINT = "install the extra `pip install 'poolstream[transformers]'` to serve it through transformers"


def _auto_kind(architecture: str) -> str:
    for suffix, kind in (("ForSequenceClassification", "seq"), ("ForTokenClassification", "token"),
                         ("ForMaskedLM", "mlm")):
        if architecture.endswith(suffix):
            return kind
    return "base"


def select_model_class(architecture: str, backend: str = "auto") -> type[PoolingModel]:
    """The implementation for ``architecture``: native when there is one (``auto``/``native``),
    else (or with ``transformers``) the transformers fallback. ValueError says what to do."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown model backend {backend!r}: use {', '.join(BACKENDS)}")
    native = architecture in supported_architectures()
    if backend == "native" or (backend == "auto" and native):
        return resolve_model_class(architecture)
    try:
        import transformers  # noqa: F401 - only to know it is there
    except ImportError:
        if backend == "transformers":
            raise ValueError(f"--model-backend transformers needs transformers: {_INSTALL_HINT}") from None
        raise ValueError(
            f"Model architecture {architecture!r} has no native implementation "
            f"(native: {', '.join(supported_architectures())}); {_INSTALL_HINT}") from None
    return TransformersModel


class TransformersModel(TextEncoderModel):
    """A transformers Auto model behind the task interface (models/base.py)."""

    def __init__(self, hf_model: nn.Module, kind: str, hf_config: dict[str, Any], model_dir: Path):
        super().__init__()
        mdir = read_model_dir(model_dir)
        self.hf = hf_model
        self.kind = kind
        arch = mdir.architecture
        decoder = arch.endswith("ForCausalLM") or bool(hf_config.get("is_decoder"))
        self.pooling = mdir.pooling or ("last" if decoder else "cls")
        if self.pooling not in SUPPORTED_POOLING:
            raise ValueError(f"{model_dir}: pooling {self.pooling!r} is not supported "
                             f"(supported: {', '.join(SUPPORTED_POOLING)})")
        if not mdir.pooling_include_prompt:
            raise ValueError(f"{model_dir}: pooling with include_prompt=false is not supported")
        self.dense = [_load_dense(model_dir / p) for p in mdir.dense_paths]
        self.splade = mdir.splade
        base = hf_model.base_model if kind != "base" else hf_model
        self.body = base
        params = inspect.signature(base.forward).parameters
        type_vocab = int(hf_config.get("type_vocab_size") or 0)
        self._takes_types = "token_type_ids" in params and type_vocab > 1
        tasks = ("embed", "token_embed") + {"seq": ("classify", "score"), "token": ("token_classify",),
                                            "mlm": ("embed_sparse",), "base": ()}[kind]
        default = {"seq": "classify", "token": "token_classify", "base": "embed",
                   "mlm": "embed_sparse" if any(m.kind == "SpladePooling" for m in mdir.modules) else "embed"}[kind]
        fields = task_spec_fields(hf_config, mdir) if kind in ("seq", "token") else {}
        hidden = int(getattr(base.config, "hidden_size", 0) or getattr(base.config, "dim", 0) or 0)
        out_dim = self.dense[-1][0].shape[0] if self.dense else hidden
        n_labels = len(fields.get("labels", ()))
        shapes = {"embed": (out_dim,), "token_embed": (-1, hidden), "classify": (n_labels,), "score": (n_labels,),
                  "token_classify": (-1, n_labels), "embed_sparse": (-1,)}
        max_pos = int(hf_config.get("max_position_embeddings") or 0)
        vocab = int(hf_config.get("vocab_size") or 0)
        self._spec = ModelSpec(output_shape=shapes[default], pooling=self.pooling, normalize=mdir.normalize,
                               max_model_len=mdir.max_model_len or max_pos or 512,
                               extra={"vocab_size": vocab, "type_vocab_size": max(type_vocab, 1)},
                               tasks=tasks, default_task=default, token_type_ids=self._takes_types,
                               backend="transformers", task_shapes={t: shapes[t] for t in tasks}, **fields)

    @classmethod
    def load(cls, model_dir: Path, hf_config: dict[str, Any], device: torch.device,
             dtype: torch.dtype) -> "TransformersModel":
        import transformers

        arch = read_model_dir(model_dir).architecture
        kind = _auto_kind(arch)
        auto = {"seq": transformers.AutoModelForSequenceClassification,
                "token": transformers.AutoModelForTokenClassification,
                "mlm": transformers.AutoModelForMaskedLM, "base": transformers.AutoModel}[kind]
        logger.info("%s has no native implementation here: loading it with transformers.%s (slower)",
                    arch, auto.__name__)
        hf_model = auto.from_pretrained(str(model_dir), dtype=dtype)
        model = cls(hf_model.to(device).eval(), kind, hf_config, Path(model_dir))
        model.dense = [(w.to(device, torch.float32), None if b is None else b.to(device, torch.float32), a)
                       for w, b, a in model.dense]
        return model.eval().requires_grad_(False)

    def spec(self) -> ModelSpec:
        return self._spec

    def _kwargs(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor],
                token_type_ids: Optional[torch.Tensor]) -> dict[str, torch.Tensor]:
        kw = {"input_ids": input_ids,
              "attention_mask": attention_mask if attention_mask is not None else torch.ones_like(input_ids)}
        if token_type_ids is not None and self._takes_types:
            kw["token_type_ids"] = token_type_ids
        return kw

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor],
                      token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.body(**self._kwargs(input_ids, attention_mask, token_type_ids)).last_hidden_state

    def _logits(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor],
                token_type_ids: Optional[torch.Tensor]) -> torch.Tensor:
        return self.hf(**self._kwargs(input_ids, attention_mask, token_type_ids)).logits.float()

    def forward_task(self, task: str, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        if task in ("classify", "score", "token_classify"):
            return self._logits(input_ids, attention_mask, token_type_ids)
        if task == "embed_sparse":
            return self._splade_batched(input_ids, attention_mask, token_type_ids)
        return super().forward_task(task, input_ids, attention_mask, token_type_ids)

    def _splade_batched(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        token_type_ids: Optional[torch.Tensor]) -> torch.Tensor:
        """SPLADE over sub-batches of at most ``_SPLADE_TOKENS`` padded tokens: the MLM logits
        of a whole batch ([b, s, vocab]) would be gigabytes, one prompt at a time is slow."""
        strategy, act = self.splade or ("max", "relu")
        lens = attention_mask.sum(dim=1)
        rows = max(1, _SPLADE_TOKENS // max(1, input_ids.shape[1]))
        out = []
        for start in range(0, input_ids.shape[0], rows):
            end = start + rows
            seq = int(lens[start:end].max())
            types = None if token_type_ids is None else token_type_ids[start:end, :seq]
            mask = attention_mask[start:end, :seq]
            x = torch.log1p(torch.relu(self._logits(input_ids[start:end, :seq], mask, types)))
            if act == "log1p_relu":
                x = torch.log1p(x)
            x = x * mask[..., None].to(x.dtype)  # padding never contributes (all values are >= 0)
            out.append(x.amax(dim=1) if strategy == "max" else x.sum(dim=1))
        return torch.cat(out)
