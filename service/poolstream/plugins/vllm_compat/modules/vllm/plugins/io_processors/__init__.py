"""``vllm.plugins.io_processors``: plugin selection with vLLM's rules and error texts."""

from poolstream.plugins.io_processors import VLLM_IO_PROCESSOR_PLUGINS_GROUP as IO_PROCESSOR_PLUGINS_GROUP
from poolstream.plugins.io_processors import get_io_processor, has_io_processor

__all__ = ["IO_PROCESSOR_PLUGINS_GROUP", "get_io_processor", "has_io_processor"]
