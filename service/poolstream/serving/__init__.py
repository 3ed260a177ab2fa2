"""The transport-neutral serving core: what every door (gRPC, HTTP, in-process) calls.

A door decodes its request, builds a :class:`CallContext`, calls the core, and encodes the
core's events and :class:`ServingError` s in its own form. Everything else (admission,
request ids, the Encode fan-out, the plugin run under the watchdog, metrics and timing)
happens here, the same for every door.

One ``ServingCore`` per process (the gRPC server's is ``PoolstreamServer.core``)::

    from poolstream.serving import CallContext, ServingCore, ServingError, PromptResult

    ctx = CallContext(request_id="req-1",            # "" -> the core makes "pool-<uuid4 hex>"
                      deadline=time.monotonic() + 5,  # absolute time.monotonic(); None = none
                      priority=0,                     # lower runs first (vLLM's convention)
                      principal="alice")              # who the door authenticated (informative)

    # Encode: prompts are str, {"prompt_token_ids": [...]}, or tensor dicts (poolstream.inputs).
    try:
        async for r in core.encode(prompts, PoolingParams(), ctx):   # completion order
            r.index, r.completed, r.total
            r.output   # PoolingRequestOutput (r.output.outputs.data: a torch tensor), or None
            r.error    # ServingError for that prompt alone (field "prompts[i]"), or None
    except ServingError as e:   # the whole call: NOT_READY, DRAINING, TOO_MANY_CALLS,
        ...                     # DEADLINE_TOO_SHORT, INVALID_PROMPT (no prompts), TOO_MANY_PROMPTS

    # Process (the IO Processor plugin): data is the decoded payload (dict, str, bytes, ...).
    result = await core.process(data, params_or_None, ctx)     # PipelineResult
    result.response.data, result.response.request_id, result.prompt_count, result.prompt_tokens

    # ProcessStream: PromptsReady(total), then PromptResult per output as the plugin takes
    # it, then CallResult(result); a failure raises ServingError.
    async for event in core.process_stream(data, params_or_None, ctx): ...

    core.info()   # dict: model, plugin, limits, ready, layout (the process layout)

``encode``/``process``/``process_stream`` admit the call themselves (``core.begin(ctx)`` /
``core.end()``). A door that must decode between admission and the run (the gRPC one:
a draining server answers UNAVAILABLE before it looks at the payload) calls ``begin``,
then ``run_encode``/``run_process``/``run_process_stream``, then ``end`` in a ``finally``.
Helpers for such doors: ``check_prompt_count(n)``, ``check_payload_size(bytes)``,
``ready_pipeline()``.

Cancellation: cancel the task that awaits the core, close the iterator, or call
``ctx.cancel()`` from elsewhere (an HTTP door whose client went away): every prompt of the
call still queued is aborted in the engine, also across a process boundary.

Errors: :class:`ServingError` carries ``code`` (:class:`Code`: ``.name`` is the gRPC name,
``.grpc`` its number, ``.http_status`` the HTTP status), ``reason`` (ErrorInfo reason,
domain ``poolstream.dev``), ``message``, ``field_violations`` [(field, description)],
``retry_after_s`` and ``metadata``; ``as_dict()`` gives a JSON body.
:func:`to_serving_error` maps any exception by the one table (pooling_service.proto).

Progress: each call's :class:`CallRecord` (``ctx.record``) is filled as its prompts are
submitted and finish; the plugin watchdog, the metrics and the timing trailers read it.

The engine below the core is anything with ``submit_group`` (``poolstream.engine.group``):
the in-process ``AsyncEngine`` or the client of an engine in its own process.
"""

from poolstream.serving.context import (
    CallContext,
    CallRecord,
    CallResult,
    ProcessEvent,
    PromptResult,
    PromptsReady,
    new_request_id,
)
from poolstream.serving.core import ServingCore, TrackedGroup
from poolstream.serving.errors import DOMAIN, Code, ServingError, invalid_argument, to_serving_error, with_field

__all__ = [
    "DOMAIN",
    "CallContext",
    "CallRecord",
    "CallResult",
    "Code",
    "ProcessEvent",
    "PromptResult",
    "PromptsReady",
    "ServingCore",
    "ServingError",
    "TrackedGroup",
    "invalid_argument",
    "new_request_id",
    "to_serving_error",
    "with_field",
]
