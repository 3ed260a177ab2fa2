"""IO Processor plugin selection, with vLLM's priority and error texts.

The plugin name comes from the ``--io-processor-plugin`` argument (or the
in-process API's ``io_processor_plugin``) when set, else from the model's
``config.json`` key ``io_processor_plugin``; neither means no plugin, which is
not an error. Plugins are entry points of the group
``poolstream.io_processor_plugins`` or of vLLM's own group
``vllm.io_processor_plugins`` (so a plugin published for vLLM is found as it is
installed): the entry-point name is the plugin name, and the loaded object is a
zero-argument callable returning the plugin class's fully qualified name (or None
to opt out). Before loading, poolstream's stand-in ``vllm`` package is made
importable where vLLM itself is not installed (``poolstream.plugins.vllm_compat``).
"""

from __future__ import annotations

import enum
import importlib
import inspect
import logging
from dataclasses import dataclass, field
from typing import Any

from poolstream.config import PoolstreamConfig
from poolstream.plugins import load_plugins_by_group, vllm_compat
from poolstream.plugins.io_processors.interface import IOProcessor
from poolstream.plugins.io_processors.renderer import BaseRenderer

logger = logging.getLogger(__name__)

IO_PROCESSOR_PLUGINS_GROUP = "poolstream.io_processor_plugins"
VLLM_IO_PROCESSOR_PLUGINS_GROUP = "vllm.io_processor_plugins"
# Searched in this order; on a name clash the first group's plugin wins (logged).
PLUGIN_GROUPS = (IO_PROCESSOR_PLUGINS_GROUP, VLLM_IO_PROCESSOR_PLUGINS_GROUP)


class PluginSource(enum.Enum):
    """Where the plugin name came from (reported by GetServerInfo)."""

    NONE = "none"
    ARGUMENT = "argument"
    CONFIG_JSON = "config.json"


@dataclass
class IOProcessorSelection:
    """The outcome of plugin selection at startup."""

    processor: IOProcessor | None
    name: str | None
    source: PluginSource
    available: list[str] = field(default_factory=list)
    group: str | None = None  # the entry-point group the plugin came from


def resolve_obj_by_qualname(qualname: str) -> type:
    """Import ``package.module.Class`` and return the class."""
    module_name, _, obj_name = qualname.rpartition(".")
    if not module_name:
        raise ValueError(f"{qualname!r} is not a fully qualified name")
    return getattr(importlib.import_module(module_name), obj_name)


def requested_plugin_name(
    vllm_config: PoolstreamConfig, plugin_from_init: str | None = None
) -> tuple[str | None, PluginSource]:
    """The plugin name and its source; an empty string counts as unset."""
    if plugin_from_init:
        return plugin_from_init, PluginSource.ARGUMENT
    if vllm_config.model_config.io_processor_plugin:
        return vllm_config.model_config.io_processor_plugin, PluginSource.ARGUMENT
    from_config = vllm_config.model_config.hf_config.get("io_processor_plugin")
    if from_config:
        return str(from_config), PluginSource.CONFIG_JSON
    return None, PluginSource.NONE


def select_io_processor(
    vllm_config: PoolstreamConfig, plugin_from_init: str | None = None, renderer: Any = None
) -> IOProcessorSelection:
    """Select and instantiate the plugin; raise ValueError (vLLM's texts) when it can't."""
    model_plugin, source = requested_plugin_name(vllm_config, plugin_from_init)
    if model_plugin is None:
        logger.debug("No IOProcessor plugins requested by the model")
        return IOProcessorSelection(None, None, source, _loadable_names())

    loadable = _loadable_plugins()
    if not loadable:
        raise ValueError(f"No IOProcessor plugins installed but one is required ({model_plugin}).")
    if model_plugin not in loadable:
        raise ValueError(
            f"The model requires the '{model_plugin}' IO Processor plugin but it is not installed. "
            f"Available plugins: {list(loadable.keys())}"
        )
    qualname, group = loadable[model_plugin]
    logger.info("Using IO Processor plugin %r (%s, %s, from %s)", model_plugin, qualname, group, source.value)
    try:
        cls = resolve_obj_by_qualname(qualname)
        processor = instantiate(cls, vllm_config, renderer)
    except Exception as e:
        # vLLM crashes with the traceback; poolstream logs it and stops with one clear line.
        logger.exception("The IO Processor plugin %r (%s) failed to start", model_plugin, qualname)
        raise ValueError(
            f"The IO Processor plugin '{model_plugin}' ({qualname}) failed to start: {type(e).__name__}: {e}"
        ) from e
    return IOProcessorSelection(processor, model_plugin, source, list(loadable.keys()), group)


def instantiate(cls: type, vllm_config: PoolstreamConfig, renderer: Any = None) -> IOProcessor:
    """``cls(vllm_config)`` (E1/E2) or ``cls(vllm_config, renderer)`` (E3: the constructor
    takes a second argument), as the plugin's constructor asks."""
    if _takes_renderer(cls):
        return cls(vllm_config, renderer if renderer is not None else BaseRenderer(vllm_config))
    return cls(vllm_config)


def _takes_renderer(cls: type) -> bool:
    """Whether the plugin's own constructor takes E3's renderer (the base class's optional
    ``renderer`` does not count: a plugin without a constructor is E1/E2)."""
    owner = next((c for c in cls.__mro__ if "__init__" in vars(c)), object)
    if owner is IOProcessor or owner is object:
        return False
    try:
        params = list(inspect.signature(cls).parameters.values())  # the constructor's, without self
    except (TypeError, ValueError):
        return False
    if any(p.name == "renderer" for p in params):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2


def get_io_processor(
    vllm_config: PoolstreamConfig, plugin_from_init: str | None = None, renderer: Any = None
) -> IOProcessor | None:
    """vLLM's entry point: the selected plugin instance, or None (``renderer``: E3's argument)."""
    return select_io_processor(vllm_config, plugin_from_init, renderer).processor


def has_io_processor(vllm_config: PoolstreamConfig, plugin_from_init: str | None = None) -> bool:
    """vLLM 0.18's check: whether a plugin is requested (argument, then config.json)."""
    return requested_plugin_name(vllm_config, plugin_from_init)[0] is not None


def _loadable_plugins() -> dict[str, tuple[str, str]]:
    """Call every entry point of both groups; keep ``{name: (class name, group)}`` for those
    whose callable returned a class name."""
    vllm_compat.activate()
    loadable: dict[str, tuple[str, str]] = {}
    for group in PLUGIN_GROUPS:
        for name, func in load_plugins_by_group(group).items():
            try:
                qualname = func()
            except Exception:
                logger.warning("Failed to load plugin %s.", name, exc_info=True)
                continue
            if qualname is None:
                continue
            if name in loadable:
                logger.warning(
                    "Plugin name %r is declared in %s and %s; using the one from %s (%s).",
                    name, loadable[name][1], group, loadable[name][1], loadable[name][0],
                )
                continue
            loadable[name] = (str(qualname), group)
    return loadable


def _loadable_names() -> list[str]:
    try:
        return list(_loadable_plugins().keys())
    except Exception:  # listing is informative only
        return []
