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


def load_plugins_by_group(group: str) -> dict[str, Callable[[], Any]]:
    """Load every entry point of ``group`` that ``POOLSTREAM_PLUGINS`` allows.

    Returns ``{entry-point name: loaded object}``. An entry point that fails to
    load is logged and skipped, so one broken distribution cannot stop the server.
    """
    discovered = entry_points(group=group)
    if not discovered:
        logger.debug("No plugins for group %s found.", group)
        return {}
    logger.info("Available plugins for group %s:", group)
    for ep in discovered:
        logger.info("- %s -> %s", ep.name, ep.value)

    allowed = os.environ.get(PLUGINS_ENV)
    allowed_names = None if allowed is None else {n.strip() for n in allowed.split(",") if n.strip()}
    if allowed_names is not None:
        logger.info("%s=%r: loading only these plugins.", PLUGINS_ENV, allowed)

    plugins: dict[str, Callable[[], Any]] = {}
    for ep in discovered:
        if allowed_names is not None and ep.name not in allowed_names:
            continue
        try:
            plugins[ep.name] = ep.load()
            logger.info("Loaded plugin %s", ep.name)
        except Exception:
            logger.exception("Failed to load plugin %s", ep.name)
    return plugins
