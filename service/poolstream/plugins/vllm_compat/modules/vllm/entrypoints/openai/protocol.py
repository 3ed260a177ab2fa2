"""``vllm.entrypoints.openai.protocol`` (vLLM 0.10.2-0.14): plugin request and response types."""

from poolstream.entrypoints.protocol import IOProcessorRequest, IOProcessorResponse
from poolstream.plugins.io_processors.compat_types import UsageInfo

# Names from the pre-release API (the plugin the design doc links still imports them).
IOProcessorPluginRequest = IOProcessorRequest
IOProcessorPluginResponse = IOProcessorResponse

__all__ = [
    "IOProcessorPluginRequest", "IOProcessorPluginResponse", "IOProcessorRequest", "IOProcessorResponse",
    "UsageInfo",
]
