"""Tiny, randomly initialised BERT model directories built with transformers from the real
all-MiniLM-L6-v2 config (shrunk to 2 layers), with its real tokenizer files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from poolstream.config import default_model_path

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def real_bert_config(**changes: Any) -> dict[str, Any]:
    """MiniLM's config.json, shrunk so tests run in seconds; weights spread wider than the
    default 0.02 so that outputs differ meaningfully between tokens and labels."""
    cfg = json.loads((Path(default_model_path()) / "config.json").read_text())
    cfg.update(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
               initializer_range=0.2)
    cfg.update(changes)
    return cfg


def build_bert(tmp: Path, architecture: str, max_len: int = 48, seed: int = 0, **changes: Any) -> Path:
    """Save a random ``architecture`` (transformers class name) with the real tokenizer in ``tmp``."""
    import transformers

    cfg_dict = real_bert_config(architectures=[architecture], **changes)
    cfg_dict.pop("transformers_version", None)
    config = transformers.BertConfig(**{k: v for k, v in cfg_dict.items() if k != "architectures"})
    config.architectures = [architecture]
    torch.manual_seed(seed)
    model = getattr(transformers, architecture)(config).eval()
    # Non-zero biases everywhere (HF initialises them to 0, which would hide a missing bias).
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.2)
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    src = Path(default_model_path())
    for name in _TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy(src / name, tmp / name)
    tok_cfg = json.loads((tmp / "tokenizer_config.json").read_text())
    tok_cfg["model_max_length"] = max_len
    (tmp / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    return tmp


def hf_batch(path: Path, texts: list[str], pairs: list[str] | None = None, max_len: int = 48) -> dict:
    """transformers' own tokenization (the reference path), right-padded, truncated."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    if pairs is None:
        return tok(texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
    return tok(texts, pairs, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
