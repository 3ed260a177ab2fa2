"""poolstream's stand-in for vLLM (see ``poolstream.plugins.vllm_compat``): the modules
IO Processor plugins import, backed by poolstream's own classes. Never installed as a
top-level package, and never used where vLLM itself is installed."""

import os

from poolstream.plugins.vllm_compat import DEFAULT_VERSION

__version__ = os.environ.get("POOLSTREAM_VLLM_VERSION", DEFAULT_VERSION)
__version_tuple__ = tuple(int(p) if p.isdigit() else p for p in __version__.split("."))
__poolstream_compat__ = True

from vllm.inputs import PromptType, TextPrompt, TokensPrompt  # noqa: E402
from vllm.outputs import PoolingOutput, PoolingRequestOutput  # noqa: E402
from vllm.pooling_params import PoolingParams  # noqa: E402
from vllm.sampling_params import SamplingParams  # noqa: E402


def __getattr__(name: str):
    if name == "LLM":  # imported lazily: it pulls in the engine
        from poolstream.entrypoints.llm import LLM

        return LLM
    raise AttributeError(f"module 'vllm' (poolstream stand-in) has no attribute {name!r}")


__all__ = [
    "LLM", "PoolingOutput", "PoolingParams", "PoolingRequestOutput", "PromptType", "SamplingParams",
    "TextPrompt", "TokensPrompt", "__version__",
]
