"""``POST /pooling/stream``: a plugin request with its progress streamed, as gRPC ``ProcessStream``.

The body is /pooling's (``data`` for the plugin). The answer is NDJSON, one
JSON object per line, as the serving core produces them:

- ``{"event": "progress", "completed": 0, "total": N}`` once the plugin has made
  its N prompts, then one per finished prompt (completion order);
- ``{"event": "result", "request_id", "created_at", "data"}`` last, the same
  IOProcessorResponse as /pooling;
- or ``{"event": "error", "status", "error": {...}}`` (vLLM's ErrorResponse) if
  the request fails after the stream began. A request refused before its
  first event (admission, a payload the plugin rejects) gets a plain HTTP error.

A client that closes the connection cancels the request and its engine work.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from poolstream.http.common import check_model, core_of, guarded, note_error, request_id_of
from poolstream.http.errors import ErrorStyle, error_body, http_status
from poolstream.http.middleware import deadline_of
from poolstream.http.schemas import PoolingRequest
from poolstream.http.vllm_routes import plugin_data_json
from poolstream.server.errors import to_service_error

router = APIRouter(tags=["poolstream"])

_DONE = object()


def _line(obj: dict[str, Any]) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS) + b"\n"


@router.post("/pooling/stream", summary="Plugin request with progress, streamed as NDJSON (ProcessStream)",
             response_class=StreamingResponse)
async def pooling_stream(request: Request, body: PoolingRequest) -> Response:
    async def work() -> Response:
        core = core_of(request)
        check_model(core, body.model)
        request_id = body.request_id or request_id_of()
        remaining = deadline_of(request.scope)
        stack = contextlib.ExitStack()
        stack.enter_context(core.admitted(remaining))
        events: asyncio.Queue[Any] = asyncio.Queue()

        def on_count(total: int) -> None:
            events.put_nowait({"event": "progress", "completed": 0, "total": total})

        def observer(index: int, out: Any, completed: int, total: int) -> None:
            events.put_nowait({"event": "progress", "completed": completed, "total": total, "index": index})

        task = asyncio.ensure_future(core.process(body.data, None, request_id, remaining, body.priority,
                                                  observer, on_count))
        task.add_done_callback(lambda _: events.put_nowait(_DONE))
        try:
            first = await events.get()
        except BaseException:
            task.cancel()
            stack.close()
            raise
        if first is _DONE:  # over before any progress: a plain HTTP answer
            stack.close()
            result = task.result()  # raises the error: guarded() writes it
            return StreamingResponse(_result_only(result, request_id), media_type="application/x-ndjson")
        return StreamingResponse(_events(first, events, task, stack, request_id),
                                 media_type="application/x-ndjson")

    return await guarded(ErrorStyle.VLLM, work)


async def _result_only(result: Any, request_id: str) -> AsyncIterator[bytes]:
    yield _line(_result_event(result, request_id))


def _result_event(result: Any, request_id: str) -> dict[str, Any]:
    response = result.response
    return {"event": "result", "request_id": response.request_id or request_id,
            "created_at": int(response.created_at or time.time()), "data": plugin_data_json(response.data)}


async def _events(first: Any, events: asyncio.Queue[Any], task: asyncio.Future, stack: contextlib.ExitStack,
                  request_id: str) -> AsyncIterator[bytes]:
    try:
        yield _line(first)
        while (event := await events.get()) is not _DONE:
            yield _line(event)
        try:
            yield _line(_result_event(task.result(), request_id))
        except asyncio.CancelledError:
            raise
        except Exception as e:
            error = note_error(to_service_error(e))
            yield _line({"event": "error", "status": http_status(error),
                         "error": error_body(error, ErrorStyle.VLLM)["error"]})
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        stack.close()

