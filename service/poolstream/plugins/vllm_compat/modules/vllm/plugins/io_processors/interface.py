"""``vllm.plugins.io_processors.interface``: the ``IOProcessor`` base class (poolstream's,
which carries all three API eras' methods)."""

from poolstream.plugins.io_processors.interface import IOProcessor, IOProcessorInput, IOProcessorOutput

__all__ = ["IOProcessor", "IOProcessorInput", "IOProcessorOutput"]
