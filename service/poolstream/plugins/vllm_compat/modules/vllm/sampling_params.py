"""``vllm.sampling_params``: imported by E2 plugins' ``merge_sampling_params``; poolstream
serves pooling models only, so it is never used to generate."""

from poolstream.plugins.io_processors.compat_types import SamplingParams

__all__ = ["SamplingParams"]
