"""The encode engine: client (``AsyncEngine``) -> core thread -> scheduler -> runner.

Modelled on vLLM v1 (one type per hop, model work off the event loop) and
TEI's queue (token-budget batching, dropped entries skipped). Modules:

- ``async_engine``: ``AsyncEngine``, admission, futures, abort (event loop side);
- ``core``: the engine thread loop (ingest, schedule, execute, deliver) and
  the CPU side lane;
- ``cpu_threads``: which threads run multi-threaded torch, and why;
- ``processor``: prompt checks (loop) and batched tokenization (thread);
- ``scheduler``: priority / token-budget / length-aware batch selection;
- ``runner``: device, dtype, collation, forward, normalisation, host copies;
- ``request``, ``stats``, ``errors``: the shared types.
"""

from poolstream.engine.async_engine import AsyncEngine, ModelInfo
from poolstream.engine.errors import (
    DeadlineExceededError,
    EngineDeadError,
    EngineError,
    EngineOverloadedError,
    InvalidPromptError,
    RequestAbortedError,
)
from poolstream.engine.stats import BatchRecord, EngineStats

__all__ = [
    "AsyncEngine",
    "BatchRecord",
    "DeadlineExceededError",
    "EngineDeadError",
    "EngineError",
    "EngineOverloadedError",
    "EngineStats",
    "InvalidPromptError",
    "ModelInfo",
    "RequestAbortedError",
]
