"""The generated betterproto2 messages, and lookups by protobuf name."""

from __future__ import annotations

import importlib
import pkgutil

import betterproto2

from . import _proto
from ._proto.google import protobuf as wkt
from ._proto.google import rpc
from ._proto.message_pool import default_message_pool
from ._proto.poolstream import v1
from ._proto.poolstream.payloads.text_embedding import v1 as text_embedding_v1

TYPE_URL_PREFIX = "type.googleapis.com/"

__all__ = [
    "TYPE_URL_PREFIX",
    "default_message_pool",
    "import_all",
    "message_class",
    "rpc",
    "text_embedding_v1",
    "v1",
    "wkt",
]

_imported = False


def import_all() -> None:
    """Import every generated module, so that every message type (including
    plugin payloads added later, e.g. geotiff) is in the message pool and
    `Any.unpack()` / `Any.from_dict()` resolve it."""
    global _imported
    if _imported:
        return
    for info in pkgutil.walk_packages(_proto.__path__, prefix=_proto.__name__ + "."):
        importlib.import_module(info.name)
    _imported = True


def message_class(name: str) -> type[betterproto2.Message]:
    """The message class for a fully qualified protobuf name or type URL,
    e.g. `poolstream.payloads.text_embedding.v1.TextEmbeddingRequest`."""
    import_all()
    url = name if "/" in name else TYPE_URL_PREFIX + name
    try:
        return default_message_pool.url_to_type[url]
    except KeyError:
        known = sorted(u.rsplit("/", 1)[-1] for u in default_message_pool.url_to_type)
        raise KeyError(f"unknown message type {name!r}; known: {', '.join(known)}") from None
