"""``vllm.entrypoints.pooling.pooling.protocol`` (vLLM 0.15+): plugin request and response types."""

from poolstream.entrypoints.protocol import IOProcessorRequest, IOProcessorResponse

__all__ = ["IOProcessorRequest", "IOProcessorResponse"]
