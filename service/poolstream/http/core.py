"""The front doors' one way into the serving core (HTTP/JSON and TEI's gRPC API).

Every door admits, encodes and runs plugin requests through this module, with
the same rules as the poolstream gRPC handlers (``server/servicer.py``):
readiness and draining (UNAVAILABLE), the concurrent-call cap
(RESOURCE_EXHAUSTED with a retry delay), deadline-aware admission
(DEADLINE_EXCEEDED ``DEADLINE_TOO_SHORT``), ``--max-prompts-per-request``,
engine deadlines and aborts, the plugin watchdog, and one error table
(``serving/errors.py``): a door only turns ``ServiceError`` into its own error
body. This module adapts the doors' calls onto the transport-neutral serving core
(``poolstream.serving``, ``ServerState`` is its ``ServingCore``): metrics, the
watchdog and the timing headers read the same per-call ``CallRecord`` as on gRPC.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from poolstream.outputs import PoolingRequestOutput
from poolstream.plugins.io_processors.pipeline import OutputObserver, PipelineResult, monotonic_deadline
from poolstream.pooling_params import PoolingParams
from poolstream.server.errors import ServiceError, invalid_argument, to_service_error, with_field
from poolstream.server.metrics import ServerMetrics
from poolstream.server.observability import current_call
from poolstream.server.state import ServerState
from poolstream.serving import CallContext

NO_PLUGIN = (
    "No IOProcessor plugin is active, so /pooling with `data` is unavailable. Start the server with "
    "--io-processor-plugin NAME, or set \"io_processor_plugin\" in the model's config.json."
)


def unsupported_task(task: str, model: str, hint: str = "") -> ServiceError:
    """A task the served model cannot run (rerank on an embedding model, ...)."""
    return ServiceError(
        grpc.StatusCode.UNIMPLEMENTED,
        "TASK_NOT_SUPPORTED",
        f"the model {model!r} does not support the {task!r} task" + (f": {hint}" if hint else ""),
        metadata={"task": task},
    )


@dataclass(frozen=True)
class ModelFacts:
    """What the doors report about the served model (OpenAI /v1/models, TEI /info)."""

    name: str
    path: str
    architecture: str
    max_model_len: int
    output_shape: tuple[int, ...]
    tensor_inputs: tuple[str, ...]
    compute_dtype: str
    device: str
    tasks: tuple[str, ...] = ("embed",)  # the pooling tasks the model serves (PoolingParams.task)
    default_task: str = "embed"
    labels: tuple[str, ...] = ()  # classifier label names, index order

    @property
    def is_text(self) -> bool:
        return not self.tensor_inputs

    def serves(self, task: str) -> bool:
        """A text model with this task ("embed", "classify", "score", "token_embed", ...)."""
        return self.is_text and task in self.tasks

    @property
    def kind(self) -> str:
        """TEI's model type, from the default task: "embedding", "classifier" or "reranker"
        (a one-label classifier that scores pairs, as TEI classes cross-encoders)."""
        if self.default_task == "score" or (self.default_task == "classify" and len(self.labels) == 1
                                            and "score" in self.tasks):
            return "reranker"
        return "classifier" if self.default_task == "classify" else "embedding"

    @property
    def is_embedding(self) -> bool:
        """One vector per text: what /v1/embeddings, /embed and tei.v1.Embed serve."""
        return self.serves("embed")


class ServingCore:
    """Admission, encoding and plugin runs for the non-gRPC-native doors."""

    def __init__(self, state: ServerState, metrics: ServerMetrics | None = None):
        self.state = state
        self.metrics = metrics
        self._tokenizer: Any = None

    # -- what is served ------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.state.config.model_config.name

    @property
    def limits(self):
        return self.state.config.limits

    def facts(self) -> ModelFacts:
        engine = self.engine()
        mi = engine.model_info
        return ModelFacts(
            name=self.model_name,
            path=self.state.config.model_config.model,
            architecture=self.state.config.model_config.architecture,
            max_model_len=int(mi.max_model_len),
            output_shape=tuple(int(s) for s in mi.output_shape),
            tensor_inputs=tuple(mi.tensor_inputs),
            compute_dtype=str(mi.compute_dtype).removeprefix("torch."),
            device=str(mi.device),
            tasks=tuple(getattr(mi, "tasks", ("embed",))),
            default_task=str(getattr(mi, "default_task", "embed")),
            labels=tuple(getattr(mi, "labels", ())),
        )

    @property
    def ready(self) -> bool:
        return self.state.engine is not None and not self.state.draining

    @property
    def has_plugin(self) -> bool:
        return self.state.selection.processor is not None

    def tokenizer(self) -> Any:
        """The model's tokenizer (its own copy: the engine's mutates truncation on its thread)."""
        if self._tokenizer is None:
            from poolstream.engine.processor import load_tokenizer

            path = Path(self.state.config.model_config.model) / "tokenizer.json"
            tok = load_tokenizer(path if path.is_file() else None)
            if tok is None:
                raise unsupported_task("tokenize", self.model_name, "the model has no tokenizer.json")
            tok.no_truncation()
            tok.no_padding()
            self._tokenizer = tok
        return self._tokenizer

    def with_prompt(self, text: str, prompt_name: str | None, field_path: str = "prompt_name") -> str:
        """``text`` after the model's sentence-transformers prompt ``prompt_name`` (TEI's Tokenize)."""
        if not prompt_name:
            return text
        prompts = dict(getattr(self.engine().model_info, "prompts", None) or {})
        if prompt_name not in prompts:
            raise invalid_argument("INVALID_PARAMS", f"unknown prompt_name {prompt_name!r}; this model's prompts: "
                                   f"{', '.join(sorted(prompts)) or 'none'}", field_path)
        return prompts[prompt_name] + text

    # -- admission -------------------------------------------------------------
    def engine(self) -> Any:
        return self.state.ready_engine()

    @contextlib.contextmanager
    def admitted(self, time_remaining: float | None) -> Iterator[None]:
        """One call in flight, with the gRPC handlers' admission rules; raises ServiceError."""
        self.state.begin(CallContext(deadline=monotonic_deadline(time_remaining)))
        try:
            yield
        finally:
            self.state.end()

    def check_prompt_count(self, count: int, field_path: str) -> None:
        if count == 0:
            raise invalid_argument("INVALID_PROMPT", "at least one input is required", field_path)
        limit = self.limits.max_prompts_per_request
        if count > limit:
            raise invalid_argument(
                "TOO_MANY_PROMPTS", f"{count} inputs; at most {limit} per request (--max-prompts-per-request)",
                field_path,
            )

    @staticmethod
    def _context(request_id: str, time_remaining: float | None, priority: int) -> CallContext:
        """The core's context; the door's call (logs, timing headers) shares its record."""
        ctx = CallContext(request_id=request_id, deadline=monotonic_deadline(time_remaining), priority=priority)
        call = current_call()
        if call is not None:
            call.record = ctx.record
        return ctx

    # -- raw pooling -----------------------------------------------------------
    async def encode(
        self,
        prompts: Sequence[Any],
        params: PoolingParams,
        request_id: str,
        time_remaining: float | None,
        priority: int = 0,
        field_of: Callable[[int], str] = lambda i: f"input[{i}]",
    ) -> list[PoolingRequestOutput]:
        """Every prompt's output in prompt order; the first failing prompt fails the call
        (its error names the field) and aborts the others."""
        ctx = self._context(request_id, time_remaining, priority)
        results: list[PoolingRequestOutput | None] = [None] * len(prompts)
        stream = self.state.run_encode(prompts, params, ctx)
        try:
            async for r in stream:
                if r.error is not None:
                    cause = r.error.__cause__ if r.error.__cause__ is not None else r.error
                    raise with_field(to_service_error(cause), field_of(r.index)) from cause
                results[r.index] = r.output
        finally:
            await stream.aclose()  # an early end (error, cancel) aborts the rest now
        return [r for r in results if r is not None]

    # -- plugin requests -------------------------------------------------------
    async def process(
        self,
        data: Any,
        params: PoolingParams | None,
        request_id: str,
        time_remaining: float | None,
        priority: int = 0,
        observer: OutputObserver | None = None,
        on_prompt_count: Callable[[int], None] | None = None,
    ) -> PipelineResult:
        """vLLM's /pooling with ``data``: the plugin pipeline under the plugin watchdog."""
        self.engine()
        if self.state.pipeline is None:
            raise ServiceError(grpc.StatusCode.FAILED_PRECONDITION, "NO_PLUGIN", NO_PLUGIN)
        if data is None:
            raise invalid_argument("INVALID_PAYLOAD", "the request has no data payload", "data")
        ctx = self._context(request_id, time_remaining, priority)
        return await self.state.run_process(data, params, ctx, observer, on_prompt_count)
