"""``vllm.plugins``: entry-point loading (``VLLM_PLUGINS`` filters every group, as in vLLM)."""

from poolstream.plugins import load_plugins_by_group

__all__ = ["load_plugins_by_group"]
