"""A test plugin that streams: it consumes outputs as they arrive and reports how.

Payload (JSON): ``{"texts": [...], "fail": "parse"|"pre"|"post"|"pre_internal", "hang_s": 0}``.
Fault-suite fields: ``"hang_post_s"`` sleeps once (async) after every output
was consumed, a hung post-process; ``"hang_pre_s"`` sleeps (sync, in the
worker thread) in pre_process, a hung pre-process.
Result: ``{"request_id", "arrival_order", "norms", "tag"}``. ``tag`` is copied
from the payload to the result, to prove that concurrent requests don't share
state.

``ON_FIRST_CHUNK`` lets an in-process test observe the engine at the moment
post-processing receives its first chunk.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from poolstream.entrypoints.protocol import IOProcessorRequest, IOProcessorResponse
from poolstream.outputs import PoolingRequestOutput
from poolstream.plugins.io_processors.interface import IOProcessor

ON_FIRST_CHUNK: Callable[[str | None, int], None] | None = None
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EchoInput:
    texts: tuple[str, ...]
    fail: str | None
    hang_s: float
    tag: Any
    hang_post_s: float = 0.0
    hang_pre_s: float = 0.0


class EchoProcessor(IOProcessor[EchoInput, dict]):
    # No per-request state on self: hooks of different requests may overlap.
    concurrent_hooks = True

    def parse_request(self, request: Any) -> EchoInput:
        data = request.data if isinstance(request, IOProcessorRequest) else request
        if isinstance(data, dict) and isinstance(data.get("data"), dict):
            data = data["data"]  # offline: the whole prompt dict {"data": {...}}
        if not isinstance(data, dict) or not isinstance(data.get("texts"), list):
            raise ValueError("Unable to parse the request data")
        if data.get("fail") == "parse":
            raise ValueError("asked to fail in parse_request")
        return EchoInput(tuple(data["texts"]), data.get("fail"), float(data.get("hang_s", 0)), data.get("tag"),
                         float(data.get("hang_post_s", 0)), float(data.get("hang_pre_s", 0)))

    def pre_process(self, prompt: EchoInput, request_id: str | None = None, **kwargs: Any):
        # Runs in a worker thread: the fault suite checks the call's log context reaches it.
        logger.debug("echo pre_process %s", request_id)
        if prompt.fail == "pre":
            raise TypeError("asked to fail in pre_process")
        if prompt.fail == "pre_internal":
            raise RuntimeError("asked to crash in pre_process")
        if prompt.hang_pre_s:
            time.sleep(prompt.hang_pre_s)
        if len(prompt.texts) == 1:
            return prompt.texts[0]  # a single prompt, not a list: must be wrapped
        return list(prompt.texts)

    async def post_process_async(self, model_output, request_id: str | None = None, **kwargs: Any) -> dict:
        request: EchoInput = kwargs["parsed_request"]
        arrival, norms = [], {}
        async for index, output in model_output:
            if not arrival and ON_FIRST_CHUNK is not None:
                ON_FIRST_CHUNK(request_id, index)
            arrival.append(index)
            norms[index] = float(output.outputs.data.norm())
            if request.hang_s:
                await asyncio.sleep(request.hang_s)
        if request.hang_post_s:
            await asyncio.sleep(request.hang_post_s)
        if request.fail == "post":
            raise RuntimeError("asked to fail in post_process")
        return {
            "request_id": request_id,
            "arrival_order": arrival,
            "norms": [norms[i] for i in sorted(norms)],
            "tag": request.tag,
        }

    def post_process(self, model_output: Sequence[PoolingRequestOutput], request_id=None, **kwargs) -> dict:
        return {"request_id": request_id, "norms": [float(o.outputs.data.norm()) for o in model_output]}

    def output_to_response(self, plugin_output: dict) -> IOProcessorResponse:
        return IOProcessorResponse(data=plugin_output)
