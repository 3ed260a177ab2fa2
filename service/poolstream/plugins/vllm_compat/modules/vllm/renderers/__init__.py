"""``vllm.renderers``: the renderer an E3 plugin's constructor receives."""

from poolstream.plugins.io_processors.renderer import BaseRenderer

__all__ = ["BaseRenderer"]
