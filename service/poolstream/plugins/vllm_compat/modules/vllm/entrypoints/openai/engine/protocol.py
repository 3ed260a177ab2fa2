"""``vllm.entrypoints.openai.engine.protocol`` (2026): ``UsageInfo``."""

from poolstream.plugins.io_processors.compat_types import UsageInfo

__all__ = ["UsageInfo"]
