"""poolstream_client: typed Python client for poolstream.

Messages are betterproto2 dataclasses generated from protos/ (`make gen`):
`poolstream_client.v1` (poolstream.v1) and `poolstream_client.text_embedding_v1`
(the text_embedding plugin's payload); any other generated message is found
with `message_class("full.name")`.
"""

from . import payloads, tensors
from ._messages import message_class, text_embedding_v1, v1
from .client import AsyncClient, Client, ProcessResult, RetryPolicy, ServerLimits, pooling_params
from .errors import FieldViolation, PoolstreamError
from .tensors import from_numpy, from_torch, to_numpy, to_torch

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "Client",
    "FieldViolation",
    "PoolstreamError",
    "ProcessResult",
    "RetryPolicy",
    "ServerLimits",
    "from_numpy",
    "from_torch",
    "message_class",
    "payloads",
    "pooling_params",
    "tensors",
    "text_embedding_v1",
    "to_numpy",
    "to_torch",
    "v1",
]
