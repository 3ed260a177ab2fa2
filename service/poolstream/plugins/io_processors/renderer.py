"""The renderer handed to E3 plugins (``IOProcessor(vllm_config, renderer)``, vLLM 0.18+).

vLLM's renderer turns prompts into engine inputs and owns the tokenizer; the part
plugins use is ``get_tokenizer()`` (to map token ids back to text) and the model
config. poolstream's engine tokenizes, so this renderer only exposes the model's
tokenizer, loaded on first use from ``tokenizer.json``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any


class BaseRenderer:
    """``vllm.renderers.BaseRenderer``: the model config and its tokenizer."""

    def __init__(self, vllm_config: Any):
        self.vllm_config = vllm_config
        self.model_config = getattr(vllm_config, "model_config", None)
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    @property
    def tokenizer(self) -> Any:
        return self.get_tokenizer()

    def get_tokenizer(self) -> Any:
        """The model's ``tokenizers.Tokenizer``; ValueError when the model has none."""
        with self._lock:
            if self._tokenizer is None:
                model_dir = Path(getattr(self.model_config, "model", "") or ".")
                path = model_dir / "tokenizer.json"
                if not path.is_file():
                    raise ValueError(f"the model at {model_dir} has no tokenizer.json")
                from tokenizers import Tokenizer

                self._tokenizer = Tokenizer.from_file(str(path))
            return self._tokenizer
