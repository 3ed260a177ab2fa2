"""A model's parsed ``config.json`` that also behaves like a transformers ``PretrainedConfig``.

vLLM hands plugins ``model_config.hf_config`` as a ``transformers.PretrainedConfig``;
published plugins call ``hf_config.to_dict()`` and read keys as attributes
(``hf_config.num_labels``). poolstream keeps ``config.json`` as a dict (its own
code reads it with ``.get``) and adds that surface, so such plugins run unchanged
without transformers on the serving path.
"""

from __future__ import annotations

import copy
import json
from typing import Any


class HFConfig(dict[str, Any]):
    """``config.json`` as a dict with ``PretrainedConfig``'s attribute access and ``to_dict()``.

    Nested objects stay plain dicts, as ``PretrainedConfig.to_dict()`` returns them.
    A missing attribute raises ``AttributeError`` (so ``getattr(cfg, "x", None)`` and
    ``hasattr`` behave as they do on a ``PretrainedConfig``).
    """

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to_dict(self) -> dict[str, Any]:
        """A deep copy as a plain dict (callers may mutate it, as with ``PretrainedConfig``)."""
        return copy.deepcopy(dict(self))

    def to_diff_dict(self) -> dict[str, Any]:
        return self.to_dict()

    def to_json_string(self, use_diff: bool = True) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @property
    def architectures(self) -> list[str] | None:  # PretrainedConfig's default is None
        value = self.get("architectures")
        return list(value) if value is not None else None

    @property
    def model_type(self) -> str:
        return str(self.get("model_type", ""))

    @property
    def num_labels(self) -> int:
        labels = self.get("id2label")
        if isinstance(labels, dict) and labels:
            return len(labels)
        return int(self.get("num_labels", 2))

    def __deepcopy__(self, memo: dict[int, Any]) -> "HFConfig":
        return HFConfig(copy.deepcopy(dict(self), memo))

    def __reduce__(self) -> tuple[Any, ...]:
        return (HFConfig, (dict(self),))
