"""Read a Hugging Face-style model directory into one frozen ``ModelDirConfig``.

Only ``config.json`` is required. The sentence-transformers files are all
optional (segmentation checkpoints ship config.json + model.safetensors):

- ``modules.json``: ordered module list; a ``...Normalize`` entry means the
  model L2-normalises by default, ``...Dense`` entries are recorded by path;
- ``1_Pooling/config.json`` (or whatever path modules.json names): both the
  verbose schema (``pooling_mode_mean_tokens: true`` ...) and the compact one
  (``pooling_mode: "mean"``, sentence-transformers >= 5.4);
- ``sentence_bert_config.json``: ``max_seq_length``; else (sentence-transformers
  >= 6 keeps it there) ``tokenizer_config.json``'s ``model_max_length``; both
  capped by config.json's ``max_position_embeddings``;
- ``config_sentence_transformers.json``: ``prompts`` and ``default_prompt_name``, which the
  engine prepends to text prompts (``PoolingParams.prompt_name``, engine/processor.py);
- ``tokenizer.json``.

Precedence for pooling: caller override > pooling config > architecture default.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Verbose (legacy) boolean keys -> poolstream pooling names.
_VERBOSE_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "last",
}
# Compact-schema names (sentence-transformers' Pooling.POOLING_MODES) -> ours.
_COMPACT_POOLING_NAMES = {
    "cls": "cls",
    "mean": "mean",
    "max": "max",
    "mean_sqrt_len_tokens": "mean_sqrt_len",
    "weightedmean": "weightedmean",
    "lasttoken": "last",
    "last": "last",
}
_POOLING_TYPE = "sentence_transformers.models.Pooling"


@dataclass(frozen=True)
class STModule:
    """One ``modules.json`` entry."""

    idx: int
    name: str
    path: str
    type: str

    @property
    def kind(self) -> str:
        """Last dotted component of the type: "Transformer", "Pooling", "Normalize", "Dense"..."""
        return self.type.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class ModelDirConfig:
    """Everything poolstream reads from a model directory."""

    path: Path
    hf_config: dict[str, Any]
    architecture: str
    modules: tuple[STModule, ...] = ()
    # Pooling modes from the pooling config, in poolstream names; () when absent.
    pooling_modes: tuple[str, ...] = ()
    pooling_include_prompt: bool = True
    embedding_dimension: int | None = None
    # True when modules.json lists a Normalize module; None without modules.json.
    has_normalize: bool | None = None
    dense_paths: tuple[str, ...] = ()
    max_seq_length: int | None = None  # sentence_bert_config.json
    tokenizer_max_length: int | None = None  # tokenizer_config.json model_max_length
    max_position_embeddings: int | None = None  # config.json
    do_lower_case: bool = False
    tokenizer_file: Path | None = None
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    io_processor_plugin: str | None = None
    # sentence-transformers SpladePooling module (a SparseEncoder): (pooling_strategy,
    # activation_function), e.g. ("max", "relu"); None without one.
    splade: tuple[str, str] | None = None

    @property
    def pooling(self) -> str | None:
        """The single pooling mode, or None when the directory does not say."""
        if not self.pooling_modes:
            return None
        if len(self.pooling_modes) > 1:
            raise ValueError(
                f"{self.path}: combined pooling modes {self.pooling_modes} are not supported"
            )
        return self.pooling_modes[0]

    @property
    def normalize(self) -> bool:
        """Default for PoolingParams.normalize.

        With modules.json: whether it lists a Normalize module. Without it:
        True, vLLM's default for embedding models.
        """
        return True if self.has_normalize is None else self.has_normalize

    @property
    def max_model_len(self) -> int:
        """Longest prompt in tokens, as sentence-transformers decides it: max_seq_length,
        else the tokenizer's model_max_length; never beyond the position table."""
        wanted = self.max_seq_length or self.tokenizer_max_length
        limits = [n for n in (wanted, self.max_position_embeddings) if n]
        return min(limits) if limits else 0


def _read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _read_optional_json(path: Path) -> Any:
    return _read_json(path) if path.is_file() else None


def parse_pooling_config(cfg: dict[str, Any]) -> tuple[tuple[str, ...], bool, int | None]:
    """(modes, include_prompt, embedding_dimension) from either pooling schema."""
    include_prompt = bool(cfg.get("include_prompt", cfg.get("pooling_mode_include_prompt", True)))
    dim = cfg.get("embedding_dimension", cfg.get("word_embedding_dimension"))
    if "pooling_mode" in cfg:  # compact schema: a name or a list of names
        raw = cfg["pooling_mode"]
        names = [raw] if isinstance(raw, str) else list(raw)
        compact: list[str] = []
        for name in names:
            if name not in _COMPACT_POOLING_NAMES:
                raise ValueError(f"unknown pooling_mode {name!r}")
            compact.append(_COMPACT_POOLING_NAMES[name])
        return tuple(compact), include_prompt, dim
    modes = tuple(ours for key, ours in _VERBOSE_POOLING_KEYS.items() if cfg.get(key))
    return modes, include_prompt, dim


def _parse_modules(raw: Any, path: Path) -> tuple[STModule, ...]:
    if not isinstance(raw, list):
        raise ValueError(f"{path}/modules.json must hold a list")
    mods = [
        STModule(idx=int(m.get("idx", i)), name=str(m.get("name", i)), path=str(m.get("path", "")),
                 type=str(m.get("type", "")))
        for i, m in enumerate(raw)
    ]
    return tuple(sorted(mods, key=lambda m: m.idx))


def read_model_dir(model: str | os.PathLike[str]) -> ModelDirConfig:
    """Parse a model directory; raise FileNotFoundError / ValueError with the path on problems."""
    path = Path(model)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} not found: a model directory needs config.json")
    hf_config = _read_json(config_file)
    if not isinstance(hf_config, dict):
        raise ValueError(f"{config_file} must hold a JSON object")
    archs = hf_config.get("architectures") or []
    architecture = str(archs[0]) if archs else str(hf_config.get("model_type", ""))

    modules: tuple[STModule, ...] = ()
    has_normalize: bool | None = None
    pooling_path = path / "1_Pooling"
    dense_paths: tuple[str, ...] = ()
    raw_modules = _read_optional_json(path / "modules.json")
    if raw_modules is not None:
        modules = _parse_modules(raw_modules, path)
        has_normalize = any(m.kind == "Normalize" for m in modules)
        dense_paths = tuple(m.path for m in modules if m.kind == "Dense")
        pool_mod = next((m for m in modules if m.type == _POOLING_TYPE or m.kind == "Pooling"), None)
        if pool_mod is not None:
            pooling_path = path / pool_mod.path

    splade: tuple[str, str] | None = None
    splade_mod = next((m for m in modules if m.kind == "SpladePooling"), None)
    if splade_mod is not None:
        cfg = _read_optional_json(path / splade_mod.path / "config.json") or {}
        splade = (str(cfg.get("pooling_strategy", "max")), str(cfg.get("activation_function", "relu")))
        if splade[0] not in ("max", "sum") or splade[1] not in ("relu", "log1p_relu"):
            raise ValueError(f"{path}: SpladePooling {splade} is not supported "
                             "(pooling_strategy max|sum, activation_function relu|log1p_relu)")

    modes: tuple[str, ...] = ()
    include_prompt, dim = True, None
    pool_cfg = _read_optional_json(pooling_path / "config.json")
    if pool_cfg is not None:
        modes, include_prompt, dim = parse_pooling_config(pool_cfg)

    sbert = _read_optional_json(path / "sentence_bert_config.json") or {}
    st_cfg = _read_optional_json(path / "config_sentence_transformers.json") or {}
    tok_cfg = _read_optional_json(path / "tokenizer_config.json") or {}
    tok_max = tok_cfg.get("model_max_length")
    if not isinstance(tok_max, int) or tok_max > 1_000_000:  # HF writes 1e30 for "unbounded"
        tok_max = None
    tokenizer_file = path / "tokenizer.json"
    max_pos = hf_config.get("max_position_embeddings")
    if max_pos is not None and hf_config.get("model_type") in ("roberta", "xlm-roberta"):
        max_pos -= 2  # RoBERTa offsets positions by padding_idx + 1

    return ModelDirConfig(
        path=path,
        hf_config=hf_config,
        architecture=architecture,
        modules=modules,
        pooling_modes=modes,
        pooling_include_prompt=include_prompt,
        embedding_dimension=int(dim) if dim else None,
        has_normalize=has_normalize,
        dense_paths=dense_paths,
        max_seq_length=int(sbert["max_seq_length"]) if sbert.get("max_seq_length") else None,
        tokenizer_max_length=tok_max,
        max_position_embeddings=int(max_pos) if max_pos else None,
        do_lower_case=bool(sbert.get("do_lower_case", False)),
        tokenizer_file=tokenizer_file if tokenizer_file.is_file() else None,
        prompts=dict(st_cfg.get("prompts") or {}),
        default_prompt_name=st_cfg.get("default_prompt_name") or None,
        io_processor_plugin=hf_config.get("io_processor_plugin") or None,
        splade=splade,
    )
