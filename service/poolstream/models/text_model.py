"""What every native text model shares: encoder body -> token states -> the task heads.

An architecture module only provides the body, an ``nn.Module`` with
``forward(input_ids [b, s], key_mask [b, s] | None, pack: bool) -> [b, s, hidden]``
(padding rows zero when packed; ``key_mask`` None when nothing is padded), says
which checkpoint tensor anchors its weight names, and builds its
``...ForSequenceClassification`` / ``...ForTokenClassification`` heads.
Loading, TorchScript, the ``TextEncoderModel`` task interface (models/base.py:
embed, token_embed, classify, score, token_classify), sentence-transformers
pooling and Dense modules and the ModelSpec are the same for all of them and
live here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import nn

from poolstream.models.base import DenseModule, ModelSpec, TextEncoderModel, task_spec_fields
from poolstream.models.bert import _load_dense, load_safetensors
from poolstream.models.layers import activation, script
from poolstream.models.model_dir import ModelDirConfig, read_model_dir
from poolstream.models.pooling import SUPPORTED_POOLING, pool

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
    """A classification head: [pool] -> [dense -> activation -> norm] -> out.

    Covers the families served here: RoBERTa / XLM-R / MPNet sequence heads
    (dense + tanh + out_proj on <s>), ModernBERT (cls or mean, dense + GELU +
    LayerNorm, classifier), decoder scorers (last token, one linear) and the
    per-token heads (``pooling`` "none": applied to every token state).
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
        return ClassifierHead(self.pooling, self.out_w.to(device, torch.float32), mv(self.out_b),
                              mv(self.dense_w), mv(self.dense_b), self.act, mv(self.norm_w), mv(self.norm_b),
                              self.norm_eps)

    @property
    def num_labels(self) -> int:
        return int(self.out_w.shape[0])

    def __call__(self, hidden: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        x = hidden.float() if self.pooling == "none" else pool(hidden.float(), mask, self.pooling)
        if self.dense_w is not None:
            x = F.linear(x, self.dense_w, self.dense_b)
            x = torch.tanh(x) if self.act == "tanh" else activation(self.act, x)
        if self.norm_w is not None:
            x = F.layer_norm(x, [x.shape[-1]], self.norm_w, self.norm_b, self.norm_eps)
        return F.linear(x, self.out_w, self.out_b)


class NativeTextModel(TextEncoderModel):
    """Encoder body + the TextEncoderModel tasks (embed, token_embed, and classify / score /
    token_classify where the checkpoint has the head).

    Subclasses set ``anchor`` (a body tensor name, to find the checkpoint's
    prefix) and ``family``, and implement ``build_body`` / ``build_head``.
    """

    anchor: ClassVar[str]
    family: ClassVar[str]  # for messages and logs
    default_pooling: ClassVar[str] = "cls"  # TEI / vLLM default when no pooling config

    def __init__(self, body: nn.Module, hf_config: dict[str, Any], mdir: ModelDirConfig, max_positions: int,
                 vocab_size: int, dense: list[DenseModule] | None = None, seq_head: ClassifierHead | None = None,
                 token_head: ClassifierHead | None = None):
        super().__init__()
        self.body = body
        self._scripted: torch.jit.ScriptModule | None = None  # set by load()
        self.seq_head = seq_head
        self.token_head = token_head
        self.dense = dense or []
        self.pooling = mdir.pooling or self.default_pooling
        if self.pooling not in SUPPORTED_POOLING:
            raise ValueError(f"{mdir.path}: pooling {self.pooling!r} is not supported "
                             f"(supported: {', '.join(SUPPORTED_POOLING)})")
        if not mdir.pooling_include_prompt:
            raise ValueError(f"{mdir.path}: pooling with include_prompt=false is not supported")
        hidden = int(body.hidden)  # every body states its width (configs name it differently)
        limits = [n for n in (mdir.max_model_len, max_positions) if n]  # never past the position table
        fields = task_spec_fields(hf_config, mdir)
        n_labels = len(fields["labels"])
        shapes = {"embed": (self.dense[-1][0].shape[0] if self.dense else hidden,),
                  "token_embed": (-1, hidden), "classify": (n_labels,), "score": (n_labels,),
                  "token_classify": (-1, n_labels)}
        tasks: tuple[str, ...] = ("embed", "token_embed")
        default = "embed"
        if seq_head is not None:
            tasks, default = tasks + ("classify", "score"), "classify"
        elif token_head is not None:
            tasks, default = tasks + ("token_classify",), "token_classify"
        head = seq_head or token_head
        if head is not None and head.num_labels != n_labels:
            raise ValueError(f"{mdir.path}: the head has {head.num_labels} outputs but config.json "
                             f"names {n_labels} labels")
        self._spec = ModelSpec(
            output_shape=shapes[default], pooling=seq_head.pooling if seq_head else self.pooling,
            normalize=mdir.normalize, max_model_len=min(limits) if limits else 0,
            extra={"vocab_size": vocab_size, "hidden_size": hidden, "type_vocab_size": self.type_vocab_size(body)},
            tasks=tasks, default_task=default,
            token_type_ids=self.type_vocab_size(body) > 1, task_shapes={t: shapes[t] for t in tasks}, **fields)

    @staticmethod
    def type_vocab_size(body: nn.Module) -> int:
        """Rows of the body's token-type table (``type_delta``); 1 when it has none.

        With more than one, pair prompts (cross-encoder scores) get token types."""
        delta = getattr(body, "type_delta", None)
        return 1 if delta is None else int(delta.shape[0])

    # ---- what an architecture provides -------------------------------------

    @classmethod
    def build_body(cls, weights: Weights, hf_config: dict[str, Any]) -> tuple[nn.Module, int]:
        """(body module, longest sequence its positions allow; 0 for unbounded)."""
        raise NotImplementedError

    @classmethod
    def build_heads(cls, architecture: str, rest: Weights, body: Weights,
                    hf_config: dict[str, Any]) -> tuple[ClassifierHead | None, ClassifierHead | None]:
        """(sequence head, token head) of a ``...ForSequenceClassification`` /
        ``...ForTokenClassification`` checkpoint; (None, None) for others."""
        return None, None

    # ---- shared ---------------------------------------------------------------

    @classmethod
    def load(cls, model_dir: Path, hf_config: dict[str, Any], device: torch.device,
             dtype: torch.dtype) -> "NativeTextModel":
        model_dir = Path(model_dir)
        mdir = read_model_dir(model_dir)
        body_w, rest = split_prefix(load_safetensors(model_dir), cls.anchor)
        body, max_positions = cls.build_body(body_w, hf_config)
        arch = mdir.architecture
        seq_head, token_head = cls.build_heads(arch, rest, body_w, hf_config)
        if arch.endswith(("ForSequenceClassification", "ForTokenClassification")) and not (seq_head or token_head):
            raise ValueError(f"{model_dir}: {arch} but no classification head found in model.safetensors")
        dense = [_load_dense(model_dir / p) for p in mdir.dense_paths]
        vocab = int(body_w[cls.anchor].shape[0])
        model = cls(body, hf_config, mdir, max_positions, vocab, dense, seq_head, token_head)
        model.eval().requires_grad_(False)
        model = model.to(device=device, dtype=dtype)
        model.dense = [(w.to(device, torch.float32), None if b is None else b.to(device, torch.float32), act)
                       for w, b, act in model.dense]
        model.seq_head = seq_head.to(device) if seq_head else None
        model.token_head = token_head.to(device) if token_head else None
        model._scripted = script(model.body, cls.family)
        return model

    def spec(self) -> ModelSpec:
        return self._spec

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor],
                      token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """[b, s, h] token states; padding rows are zeros on CPU (packed execution), garbage on CUDA.

        Packing reads the mask's contents (nonzero), which would force a GPU
        sync: CUDA batches run padded.
        """
        on_cpu = input_ids.device.type == "cpu"
        if self._scripted is not None:
            # Unoptimized TorchScript: op-by-op in C++ without the GIL, no re-specialisation per shape.
            with torch.jit.optimized_execution(False):
                return self._scripted(input_ids, attention_mask, on_cpu, token_type_ids)
        return self.body(input_ids, attention_mask, on_cpu, token_type_ids)

    def sequence_logits(self, hidden: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
        if self.seq_head is None:
            return super().sequence_logits(hidden, attention_mask)
        return self.seq_head(hidden, attention_mask)

    def token_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.token_head is None:
            return super().token_logits(hidden)
        return self.token_head(hidden, None)
