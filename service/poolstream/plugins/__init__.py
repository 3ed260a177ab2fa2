"""Entry-point plugin discovery, shaped like ``vllm.plugins``."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

logger = logging.getLogger(__name__)

# Comma list of plugin names to load; unset = all, empty string = none (vLLM's VLLM_PLUGINS).
PLUGINS_ENV = "POOLSTREAM_PLUGINS"
# vLLM's own switch, applied to vLLM's entry-point groups as vLLM applies it.
VLLM_PLUGINS_ENV = "VLLM_PLUGINS"


def _allowed(env: str) -> set[str] | None:
    value = os.environ.get(env)
    return None if value is None else {n.strip() for n in value.split(",") if n.strip()}


def load_plugins_by_group(group: str) -> dict[str, Callable[[], Any]]:
    """Load every entry point of ``group`` that the plugin filters allow.

    ``POOLSTREAM_PLUGINS`` filters every group; for vLLM's groups (``vllm.*``),
    ``VLLM_PLUGINS`` filters too, as vLLM does. Returns ``{entry-point name: loaded
    object}``. An entry point that fails to load is logged and skipped, so one broken
    distribution cannot stop the server.
    """
    discovered = entry_points(group=group)
    if not discovered:
        logger.debug("No plugins for group %s found.", group)
        return {}
    logger.info("Available plugins for group %s:", group)
    for ep in discovered:
        logger.info("- %s -> %s", ep.name, ep.value)

    filters = [(PLUGINS_ENV, _allowed(PLUGINS_ENV))]
    if group.startswith("vllm."):
        filters.append((VLLM_PLUGINS_ENV, _allowed(VLLM_PLUGINS_ENV)))
    for env, names in filters:
        if names is not None:
            logger.info("%s=%r: loading only these plugins.", env, os.environ.get(env))

    plugins: dict[str, Callable[[], Any]] = {}
    for ep in discovered:
        if any(names is not None and ep.name not in names for _, names in filters):
            continue
        try:
            plugins[ep.name] = ep.load()
            logger.info("Loaded plugin %s", ep.name)
        except Exception:
            logger.exception("Failed to load plugin %s", ep.name)
    return plugins
