"""poolstream: a gRPC server for pooling models with vLLM-style IO Processor plugins.

Package map (data flows top to bottom):

- ``poolstream.v1``, ``poolstream.payloads``: code generated from ``protos/`` (never edit).
- ``poolstream.server``: gRPC handlers, health, reflection, errors, conversions.
- ``poolstream.plugins``: the IO Processor interface and entry-point discovery.
- ``poolstream.engine``: request queue, scheduler, batching, model runner.
- ``poolstream.models``: model directories, the registry and implementations.
- ``poolstream.entrypoints``: the in-process API (``LLM``) and request/response types.
"""

__version__ = "0.1.0"
