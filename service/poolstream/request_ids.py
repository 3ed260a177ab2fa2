"""Request ids unique per call.

A client may choose its request id (the ``request_id`` field or the
``x-request-id`` header); retries and hedged calls reuse ids by design. The
engine addresses work by id (``<request id>-<prompt index>``), so two calls in
flight under one id would abort each other's prompts. A colliding id is
therefore made unique: ``<id>~<n>``; the call answers with that id (in its
outputs and the ``x-request-id`` trailer) and never touches the other call.
Sub-request ids stay unique too: the prompt index after the last ``-`` is a
number and ``~<n>`` contains no ``-``.
"""

from __future__ import annotations

import itertools

# Longer client ids are refused (INVALID_ARGUMENT INVALID_REQUEST_ID): the id is logged
# on every line of the call and echoed in every output.
MAX_REQUEST_ID_CHARS = 256


class RequestIds:
    """The ids of calls in flight (one event loop: no lock)."""

    def __init__(self) -> None:
        self._live: set[str] = set()
        self._seq = itertools.count(2)

    def claim(self, wanted: str) -> str:
        """``wanted`` if no call in flight has it, else a fresh ``wanted~<n>``; held until release()."""
        rid = wanted
        while rid in self._live:
            rid = f"{wanted}~{next(self._seq)}"
        self._live.add(rid)
        return rid

    def release(self, rid: str) -> None:
        self._live.discard(rid)

    def __len__(self) -> int:
        return len(self._live)
