"""IO Processor plugin selection, with vLLM's priority and error texts.

The plugin name comes from the ``--io-processor-plugin`` argument (or the
in-process API's ``io_processor_plugin``) when set, else from the model's
``config.json`` key ``io_processor_plugin``; neither means no plugin, which is
not an error. Plugins are entry points of the group
``poolstream.io_processor_plugins``: the entry-point name is the plugin name,
and the loaded object is a zero-argument callable returning the plugin class's
fully qualified name (or None to opt out).
"""

from __future__ import annotations

import enum
import importlib
import logging
from dataclasses import dataclass, field

from poolstream.config import PoolstreamConfig
from poolstream.plugins import load_plugins_by_group
from poolstream.plugins.io_processors.interface import IOProcessor

logger = logging.getLogger(__name__)

IO_PROCESSOR_PLUGINS_GROUP = "poolstream.io_processor_plugins"


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
    vllm_config: PoolstreamConfig, plugin_from_init: str | None = None
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
    cls = resolve_obj_by_qualname(loadable[model_plugin])
    logger.info("Using IO Processor plugin %r (%s, from %s)", model_plugin, loadable[model_plugin], source.value)
    return IOProcessorSelection(cls(vllm_config), model_plugin, source, list(loadable.keys()))


def get_io_processor(vllm_config: PoolstreamConfig, plugin_from_init: str | None = None) -> IOProcessor | None:
    """vLLM's entry point: the selected plugin instance, or None."""
    return select_io_processor(vllm_config, plugin_from_init).processor


def _loadable_plugins() -> dict[str, str]:
    """Call every entry point; keep the names whose callable returned a class name."""
    loadable: dict[str, str] = {}
    for name, func in load_plugins_by_group(IO_PROCESSOR_PLUGINS_GROUP).items():
        try:
            qualname = func()
            if qualname is not None:
                loadable[name] = qualname
        except Exception:
            logger.warning("Failed to load plugin %s.", name, exc_info=True)
    return loadable


def _loadable_names() -> list[str]:
    try:
        return list(_loadable_plugins().keys())
    except Exception:  # listing is informative only
        return []
