"""What every native text model shares: encoder body -> pooling (+ Dense) or a classification head.

An architecture module only provides the body, an ``nn.Module`` with
``forward(input_ids [b, s], key_mask [b, s] | None, pack: bool) -> [b, s, hidden]``
(padding rows zero when packed; ``key_mask`` None when nothing is padded), and
says which checkpoint tensor anchors its weight names. Loading, TorchScript,
sentence-transformers pooling and Dense modules, ``...ForSequenceClassification``
heads and the ModelSpec are the same for all of them and live here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import nn

from poolstream.models.base import ModelSpec, PoolingModel
from poolstream.models.bert import _load_dense, load_safetensors
from poolstream.models.layers import activation, script
from poolstream.models.model_dir import ModelDirConfig, read_model_dir
from poolstream.models.pooling import SUPPORTED_POOLING, pool


_DENSE_ACTIVATIONS = {"Tanh": torch.tanh, "Identity": lambda x: x, "ReLU": F.relu, "Sigmoid": torch.sigmoid}


Weights = dict[str, torch.Tensor]


def split_prefix(tensors: Weights, anchor: str) -> tuple[Weights, Weights]:
    """(body, rest): the tensors under the anchor's prefix (``roberta.``, ``model.``, none ...)
    with the prefix removed, and every other tensor (task heads) under its full name."""
    found = next((k for k in tensors if k == anchor or k.endswith("." + anchor)), None)
    if found is None:
        raise ValueError(f"checkpoint has no tensor named '*{anchor}'")
    prefix = found[: -len(anchor)]
    body = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    rest = {k: v for k, v in tensors.items() if not k.startswith(prefix)} if prefix else {}
    return body, rest


@dataclass
class ClassifierHead:
    """A ``...ForSequenceClassification`` head: pool, then [dense -> activation -> norm] -> out.

    Covers the families served here: BERT (pooler dense + tanh, classifier),
    RoBERTa / XLM-R / MPNet (dense + tanh + out_proj on <s>), ModernBERT
    (cls or mean, dense + GELU + LayerNorm, classifier) and decoder scorers
    (last token, one linear).
    """

    pooling: str
    out_w: torch.Tensor
    out_b: Optional[torch.Tensor] = None
    dense_w: Optional[torch.Tensor] = None
    dense_b: Optional[torch.Tensor] = None
    act: str = "tanh"
    norm_w: Optional[torch.Tensor] = None
    norm_b: Optional[torch.Tensor] = None
    norm_eps: float = 1e-5

    def to(self, device: torch.device) -> "ClassifierHead":
        """Heads stay float32 (like Dense modules): they are tiny, and fp16 logits lose ranking bits."""
        def mv(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
            return None if t is None else t.to(device, torch.float32)
        return ClassifierHead(self.pooling, mv(self.out_w), mv(self.out_b), mv(self.dense_w),  # type: ignore[arg-type]
                              mv(self.dense_b), self.act, mv(self.norm_w), mv(self.norm_b), self.norm_eps)

    @property
    def num_labels(self) -> int:
        return int(self.out_w.shape[0])

    def __call__(self, hidden: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        x = pool(hidden, mask, self.pooling)
        if self.dense_w is not None:
            x = F.linear(x, self.dense_w, self.dense_b)
            x = torch.tanh(x) if self.act == "tanh" else activation(self.act, x)
        if self.norm_w is not None:
            x = F.layer_norm(x, [x.shape[-1]], self.norm_w, self.norm_b, self.norm_eps)
        return F.linear(x, self.out_w, self.out_b)


def id2label(hf_config: dict[str, Any], num_labels: int) -> dict[int, str]:
    raw = hf_config.get("id2label") or {}
    labels = {int(k): str(v) for k, v in raw.items()}
    return {i: labels.get(i, f"LABEL_{i}") for i in range(num_labels)}


class NativeTextModel(PoolingModel):
    """Encoder body + pooling/Dense (embedding models) or + classifier head.

    Subclasses set ``anchor`` (a body tensor name, to find the checkpoint's
    prefix) and implement ``build_body`` / ``build_head``.
    """

    anchor: ClassVar[str]
    family: ClassVar[str]  # for messages and logs
    default_pooling: ClassVar[str] = "cls"  # TEI / vLLM default when no pooling config

    def __init__(self, body: nn.Module, hf_config: dict[str, Any], mdir: ModelDirConfig, max_positions: int,
                 vocab_size: int, dense: list[tuple[torch.Tensor, torch.Tensor | None, str]] | None = None,
                 head: ClassifierHead | None = None):
        super().__init__()
        self.body = body
        self._scripted: torch.jit.ScriptModule | None = None  # set by load()
        self.head = head
        self._dense = dense or []
        self.pooling = mdir.pooling or self.default_pooling
        if self.pooling not in SUPPORTED_POOLING:
            raise ValueError(f"{mdir.path}: pooling {self.pooling!r} is not supported "
                             f"(supported: {', '.join(SUPPORTED_POOLING)})")
        if not mdir.pooling_include_prompt:
            raise ValueError(f"{mdir.path}: pooling with include_prompt=false is not supported")
        hidden = int(hf_config["hidden_size"])
        limits = [n for n in (mdir.max_model_len, max_positions) if n]  # never past the position table
        max_len = min(limits) if limits else 0
        extra: dict[str, Any] = {"vocab_size": vocab_size, "hidden_size": hidden}
        if head is not None:
            extra["num_labels"] = head.num_labels
            extra["id2label"] = id2label(hf_config, head.num_labels)
            self._spec = ModelSpec(output_shape=(head.num_labels,), pooling=head.pooling, normalize=False,
                                   max_model_len=max_len, extra=extra)
        else:
            out_dim = self._dense[-1][0].shape[0] if self._dense else hidden
            self._spec = ModelSpec(output_shape=(out_dim,), pooling=self.pooling, normalize=mdir.normalize,
                                   max_model_len=max_len, extra=extra)

    # ---- what an architecture provides -------------------------------------

    @classmethod
    def build_body(cls, weights: dict[str, torch.Tensor], hf_config: dict[str, Any]) -> tuple[nn.Module, int]:
        """(body module, longest sequence its positions allow; 0 for unbounded)."""
        raise NotImplementedError

    @classmethod
    def build_head(cls, rest: dict[str, torch.Tensor], body: dict[str, torch.Tensor],
                   hf_config: dict[str, Any]) -> ClassifierHead | None:
        """The classification head of a ``...ForSequenceClassification`` checkpoint, else None."""
        return None

    # ---- shared ---------------------------------------------------------------

    @classmethod
    def load(cls, model_dir: Path, hf_config: dict[str, Any], device: torch.device,
             dtype: torch.dtype) -> "NativeTextModel":
        model_dir = Path(model_dir)
        mdir = read_model_dir(model_dir)
        body_w, rest = split_prefix(load_safetensors(model_dir), cls.anchor)
        body, max_positions = cls.build_body(body_w, hf_config)
        head = None
        if any(a.endswith("ForSequenceClassification") for a in hf_config.get("architectures") or []):
            head = cls.build_head(rest, body_w, hf_config)
            if head is None:
                raise ValueError(f"{model_dir}: no classification head found in model.safetensors")
        dense = [_load_dense(model_dir / p) for p in mdir.dense_paths]
        vocab = int(body_w[cls.anchor].shape[0])
        model = cls(body, hf_config, mdir, max_positions, vocab, dense, head)
        model.eval().requires_grad_(False)
        model = model.to(device=device, dtype=dtype)
        model._dense = [(w.to(device, torch.float32), None if b is None else b.to(device, torch.float32), act)
                        for w, b, act in model._dense]
        if model.head is not None:
            model.head = model.head.to(device)
        model._scripted = script(model.body, cls.family)
        return model

    def spec(self) -> ModelSpec:
        return self._spec

    def token_states(self, input_ids: torch.Tensor,
                     attention_mask: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(hidden states [b, s, hidden] in float32, key mask or None when unpadded).

        Padding rows are zeros on CPU (packed execution) and garbage on CUDA;
        poolers must use the mask.
        """
        # The all-ones check and packing read the mask's contents, which would force a
        # GPU sync: only CPU batches take the maskless and packed fast paths (as BERT).
        mask: Optional[torch.Tensor] = attention_mask
        on_cpu = attention_mask.device.type == "cpu"
        if on_cpu and bool(attention_mask.all()):
            mask = None
        if self._scripted is not None:
            with torch.jit.optimized_execution(False):
                x = self._scripted(input_ids, mask, on_cpu)
        else:
            x = self.body(input_ids, mask, on_cpu)
        if x.dtype != torch.float32:  # pool in fp32: fp16 sums over long prompts lose bits
            x = x.float()
        return x, mask

    def forward_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x, mask = self.token_states(input_ids, attention_mask)
        if self.head is not None:
            return self.head(x, mask)
        out = pool(x, mask, self.pooling)
        for w, bias, act in self._dense:
            out = _DENSE_ACTIVATIONS[act](F.linear(out, w, bias))
        return out
