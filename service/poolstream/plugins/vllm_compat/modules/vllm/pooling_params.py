"""``vllm.pooling_params``: ``PoolingParams`` that takes vLLM's keywords and is poolstream's.

The class is a subclass of ``poolstream.pooling_params.PoolingParams``, so what a plugin
returns from its params hook goes to the engine as it is (``task`` included).
"""

from poolstream.plugins.io_processors.compat_types import VllmPoolingParams as PoolingParams

__all__ = ["PoolingParams"]
