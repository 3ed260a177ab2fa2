"""The ``vllm`` modules that IO Processor plugins import, for machines without vLLM.

A plugin written for vLLM imports ``vllm.config``, ``vllm.plugins.io_processors.interface``,
``vllm.entrypoints.pooling.pooling.protocol`` and a few more. poolstream serves such a
plugin unchanged by answering those imports with its own classes (the same objects the
server passes to the plugin, so ``isinstance`` checks in plugins hold).

How, and why it cannot shadow a real vLLM:

- the stand-in package lives at ``modules/vllm`` inside this package, never as a
  top-level ``vllm`` in site-packages, so installing it cannot clash with vLLM's files;
- ``activate()`` appends a finder at the *end* of ``sys.meta_path``: Python asks it
  for ``vllm`` only after every normal finder failed, i.e. only where vLLM is not
  installed. Where vLLM is installed, plugins import vLLM's own classes (the pipeline
  converts them at the boundary, see ``compat_types``);
- submodules are then found through the stand-in package's ``__path__``; where the real
  vLLM was imported, the finder never answers for any ``vllm.*`` name.

poolstream calls ``activate()`` before it loads plugins (server and ``LLM``); other code
(a plugin's own tests) may call it too. ``POOLSTREAM_VLLM_COMPAT=0`` turns it off.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Sequence

MODULES_ROOT = str(Path(__file__).resolve().parent / "modules")
ENV_SWITCH = "POOLSTREAM_VLLM_COMPAT"
# The vLLM version the stand-in reports (``vllm.__version__``). Plugins branch on it: 0.16.0
# is the newest E1 release, so a plugin that supports several eras picks the E1 interface
# and vLLM 0.15+'s nested multimodal layout, both of which poolstream serves.
DEFAULT_VERSION = "0.16.0"


class _VllmStandInFinder(importlib.abc.MetaPathFinder):
    """Answers ``import vllm`` with the stand-in package, as the last finder asked."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "vllm":
            return None  # submodules come from the package's __path__ (ours or vLLM's)
        return importlib.machinery.PathFinder.find_spec(fullname, [MODULES_ROOT])


_FINDER = _VllmStandInFinder()


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def activate() -> None:
    """Make ``import vllm`` work where vLLM is not installed (idempotent; never shadows vLLM)."""
    if enabled() and _FINDER not in sys.meta_path:
        sys.meta_path.append(_FINDER)


def deactivate() -> None:
    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)


def is_stand_in(module: ModuleType | None) -> bool:
    return bool(module is not None and getattr(module, "__poolstream_compat__", False))


def real_vllm_installed() -> bool:
    """True when a real vLLM is importable (whether or not it was imported yet)."""
    loaded = sys.modules.get("vllm")
    if loaded is not None:
        return not is_stand_in(loaded)
    for finder in sys.meta_path:
        if finder is _FINDER:
            continue
        find_spec = getattr(finder, "find_spec", None)
        if find_spec is not None and find_spec("vllm", None) is not None:
            return True
    return False
