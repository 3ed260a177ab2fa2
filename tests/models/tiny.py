"""Tiny, randomly initialised model directories built from real configs (test-only).

Each architecture's real config.json (values as published for the named
checkpoint) is shrunk in width, depth and vocabulary, instantiated with
``transformers`` under a fixed seed, and saved as the directory users serve:
config.json, model.safetensors, tokenizer.json (+ tokenizer_config.json) and
the sentence-transformers files (modules.json, 1_Pooling, Normalize,
sentence_bert_config.json). The tokenizer is trained here with ``tokenizers``
in the family's style (WordPiece / Unigram / byte-level BPE) so it has the
real special tokens and templates, including sentence pairs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Le renard brun rapide saute par-dessus le chien paresseux.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "El rápido zorro marrón salta sobre el perro perezoso.",
    "敏捷的棕色狐狸跳过了懒狗。 你好，世界！",
    "Быстрая коричневая лиса прыгает через ленивую собаку.",
    "Embeddings map sentences to vectors; rerankers score query and document pairs.",
    "What is the capital of France? Paris is the capital and largest city of France.",
    "def add(a, b):\n    return a + b  # numbers 0123456789",
    "Ünïcödé ✓ emoji 🙂 and punctuation: (brackets) [square] {curly} <angle> \"quotes\" 'single'",
]

# Texts the parity tests embed: short, multilingual, and long enough to be truncated.
TEXTS = [
    "Hello world.",
    "What is the capital of France?",
    "Paris is the capital and largest city of France.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "敏捷的棕色狐狸 ✓ 🙂",
    "a",
    " ".join(["The quick brown fox jumps over the lazy dog."] * 12),
]

PAIRS = [
    ("What is the capital of France?", "Paris is the capital and largest city of France."),
    ("What is the capital of France?", "The quick brown fox jumps over the lazy dog."),
    ("how to add numbers", "def add(a, b): return a + b"),
    ("long", " ".join(["Embeddings map sentences to vectors."] * 20)),
]


def train_tokenizer(style: str, specials: list[str], vocab_size: int = 400) -> Any:
    """A real fast tokenizer of the family's kind, trained on CORPUS (deterministic)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    if style == "wordpiece":  # BERT / MPNet
        tok = Tokenizer(models.WordPiece(unk_token=specials[3] if len(specials) > 3 else "[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials)
    elif style == "unigram":  # XLM-R (SentencePiece)
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token="<unk>")
    elif style == "bytelevel":  # GPT-2 style BPE (ModernBERT, Qwen)
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    else:
        raise ValueError(style)
    tok.train_from_iterator(CORPUS * 3, trainer)
    return tok


def template(tok: Any, single: str, pair: str, specials: list[str]) -> None:
    from tokenizers import processors

    tok.post_processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=[(s, tok.token_to_id(s)) for s in specials])


def save_model_dir(path: Path, model: Any, tok: Any, *, architecture: str | None = None,
                   pooling: str | None = "mean", normalize: bool = True, max_seq_length: int = 32,
                   tokenizer_kwargs: dict[str, Any] | None = None, prompts: dict[str, str] | None = None) -> Path:
    """Save an HF model + fast tokenizer + sentence-transformers files as one model directory.

    ``pooling`` None: a bare Hugging Face directory (cross-encoders); ``architecture``
    overrides config.json's (real checkpoints often name the pre-training class, e.g.
    MPNetForMaskedLM or Qwen3ForCausalLM, over encoder-only weights).
    """
    from transformers import PreTrainedTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path), safe_serialization=True)
    kwargs = dict(tokenizer_kwargs or {})
    kwargs.setdefault("model_max_length", max_seq_length)
    PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs).save_pretrained(str(path))
    if architecture is not None:
        cfg = json.loads((path / "config.json").read_text())
        cfg["architectures"] = [architecture]
        (path / "config.json").write_text(json.dumps(cfg, indent=2))
    if pooling is None:
        return path
    hidden = model.config.hidden_size
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (path / "2_Normalize").mkdir(exist_ok=True)
    (path / "modules.json").write_text(json.dumps(modules, indent=2))
    (path / "1_Pooling").mkdir(exist_ok=True)
    key = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token", "last": "pooling_mode_lasttoken"}
    (path / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": hidden, key[pooling]: True}))
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length,
                                                                "do_lower_case": False}))
    (path / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": prompts or {}, "default_prompt_name": None, "similarity_fn_name": "cosine"}))
    return path


def init_weights(model: Any, seed: int = 0) -> Any:
    """Random weights with real-model spread (HF init draws LayerNorm weights as 1 and biases
    as 0; perturb every tensor so a missed bias or norm weight shows in the outputs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()
