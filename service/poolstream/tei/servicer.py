"""TEI's gRPC API (``tei.v1``) on poolstream's gRPC server, over the same serving core.

Existing text-embeddings-inference gRPC clients work unchanged: the services,
messages and method names are TEI's published proto
(``third_party/protos/tei/tei.proto``, vendored). What differs from TEI is what
poolstream adds everywhere: the bearer token (as on ``poolstream.v1``),
deadline-aware admission, the concurrent-call cap with RetryInfo, and
``google.rpc.Status`` details on errors (TEI clients still see the code and the
message).

- ``Info``: the model and the limits (``max_client_batch_size`` is
  ``--max-prompts-per-request``).
- ``Embed`` / ``EmbedStream``: one text per message (TEI's shape); the stream's
  answers keep the order of its requests, and a bad item ends the stream (as TEI).
- ``Tokenize`` / ``Decode`` (+ streams): the model's tokenizer.
- ``EmbedSparse`` (``embed_sparse``), ``EmbedAll`` (``token_embed``),
  ``Predict`` (``classify``), ``Rerank`` (a cross-encoder's ``score``): the
  model's tasks decide, as in TEI; a model without the task answers
  UNIMPLEMENTED ``TASK_NOT_SUPPORTED`` (and health reports the service
  NOT_SERVING).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

import poolstream
from poolstream.http.core import ServingCore, unsupported_task
from poolstream.pooling_params import PoolingParams
from poolstream.server.errors import abort, invalid_argument
from poolstream.server.health import NOT_SERVING, SERVING, ServerHealth
from poolstream.server.observability import current_call, new_request_id
from poolstream.tei.gen.tei import tei_pb2 as pb
from poolstream.tei.gen.tei import tei_pb2_grpc as pb_grpc

SERVICE_NAMES = tuple(s.full_name for s in pb.DESCRIPTOR.services_by_name.values())
# Requests of one EmbedStream in flight at once (answers still in request order).
_STREAM_WINDOW = 64


def _request_id() -> str:
    call = current_call()
    return call.request_id if call is not None and call.request_id else new_request_id()


def _params(request: Any, task: str) -> PoolingParams:
    if request.truncation_direction == pb.TRUNCATION_DIRECTION_LEFT:
        raise invalid_argument("INVALID_PARAMS", "truncation_direction LEFT is not supported: inputs are cut on "
                               "the right", "truncation_direction")
    has = request.DESCRIPTOR.fields_by_name
    params = PoolingParams(
        task=task,
        # TEI's truncate=false rejects long inputs; true cuts them.
        truncate=bool(request.truncate),
        prompt_name=(request.prompt_name or None) if "prompt_name" in has and request.HasField("prompt_name")
        else None,
    )
    if task == "embed":
        params.normalize = request.normalize if request.HasField("normalize") else True  # TEI's default
        params.dimensions = request.dimensions if request.HasField("dimensions") else None
    if task in ("classify", "score"):
        params.use_activation = not request.raw_scores
    try:
        params.verify()
    except ValueError as e:
        raise invalid_argument("INVALID_PARAMS", str(e), "dimensions") from e
    return params


def _metadata(out: Any, text: str, t0: float) -> pb.Metadata:
    timing = getattr(out, "timing", None)
    queue = timing.queue_s if timing is not None else 0.0
    inference = timing.inference_s if timing is not None else 0.0
    return pb.Metadata(
        compute_chars=len(text),
        compute_tokens=len(out.prompt_token_ids or ()),
        total_time_ns=int((time.monotonic() - t0) * 1e9),
        tokenization_time_ns=0,
        queue_time_ns=int(queue * 1e9),
        inference_time_ns=int(inference * 1e9),
    )


class TEIServicers:
    """The five ``tei.v1`` services, added to a grpc.aio server."""

    def __init__(self, core: ServingCore):
        self.core = core

    def add_to_server(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_InfoServicer_to_server(_Info(self.core), server)
        pb_grpc.add_EmbedServicer_to_server(_Embed(self.core), server)
        pb_grpc.add_PredictServicer_to_server(_Predict(self.core), server)
        pb_grpc.add_RerankServicer_to_server(_Rerank(self.core), server)
        pb_grpc.add_TokenizeServicer_to_server(_Tokenize(self.core), server)

    async def set_health(self, health: ServerHealth, loaded: bool = True) -> None:
        """TEI's rule: Info and Tokenize SERVING; of Embed/Predict/Rerank only the one of the
        model's type (every one NOT_SERVING while the model loads). The RPCs themselves run
        whatever task the model serves (a classifier's Embed gives its pooled embeddings)."""
        if not loaded:
            for name in SERVICE_NAMES:
                await health.servicer.set(name, NOT_SERVING)
                health.threaded_servicer.set(name, NOT_SERVING)
            return
        facts = self.core.facts()
        statuses = {
            "tei.v1.Info": SERVING,
            "tei.v1.Tokenize": SERVING if facts.is_text else NOT_SERVING,
            "tei.v1.Embed": SERVING if facts.is_text and facts.kind == "embedding" else NOT_SERVING,
            "tei.v1.Predict": SERVING if facts.is_text and facts.kind == "classifier" else NOT_SERVING,
            "tei.v1.Rerank": SERVING if facts.is_text and facts.kind == "reranker" else NOT_SERVING,
        }
        for name, status in statuses.items():
            await health.servicer.set(name, status)
            health.threaded_servicer.set(name, status)


class _Info(pb_grpc.InfoServicer):
    def __init__(self, core: ServingCore):
        self.core = core

    async def Info(self, request: pb.InfoRequest, context: grpc.aio.ServicerContext) -> pb.InfoResponse:
        try:
            facts = self.core.facts()
        except Exception as e:
            await abort(context, e)
        config = self.core.state.config
        return pb.InfoResponse(
            version=f"poolstream-{poolstream.__version__}",
            model_id=facts.name,
            model_dtype=facts.compute_dtype,
            model_type={"reranker": pb.MODEL_TYPE_RERANKER, "classifier": pb.MODEL_TYPE_CLASSIFIER}.get(
                facts.kind, pb.MODEL_TYPE_EMBEDDING),
            max_concurrent_requests=config.limits.max_concurrent_calls,
            max_input_length=facts.max_model_len,
            max_batch_tokens=config.engine_config.max_num_batched_tokens,
            max_batch_requests=config.engine_config.max_num_seqs,
            max_client_batch_size=config.limits.max_prompts_per_request,
            tokenization_workers=1,
        )


async def _run(core: ServingCore, prompt: Any, params: PoolingParams, request_id: str, remaining: float | None,
               api: str) -> Any:
    """One prompt through the engine (the model must serve ``params.task``)."""
    task = params.task or "embed"
    if not core.facts().serves(task):
        raise unsupported_task(api, core.model_name, f"it serves {', '.join(core.facts().tasks) or 'no text task'}")
    text = prompt if isinstance(prompt, str) else prompt["prompt"]
    if not text:
        raise invalid_argument("INVALID_PROMPT", "inputs is empty", "inputs")
    [out] = await core.encode([prompt], params, request_id, remaining, field_of=lambda i: "inputs")
    return out


def _row(out: Any) -> Any:
    return out.outputs.data.detach().to("cpu").float()


class _Unary:
    """Admission and errors of one unary TEI call; streams admit once and answer in order."""

    def __init__(self, core: ServingCore):
        self.core = core

    async def unary(self, context: grpc.aio.ServicerContext, answer: Any) -> Any:
        try:
            with self.core.admitted(context.time_remaining()):
                return await answer(_request_id(), context.time_remaining())
        except asyncio.CancelledError:
            raise
        except Exception as e:
            await abort(context, e)
            raise  # pragma: no cover  (abort raises)

    async def stream(self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext,
                     answer: Any) -> AsyncIterator[Any]:
        """Up to _STREAM_WINDOW requests in flight, answers in request order; a failure ends the stream."""
        base = _request_id()
        pending: asyncio.Queue[asyncio.Future | None] = asyncio.Queue(maxsize=_STREAM_WINDOW)
        try:
            with self.core.admitted(context.time_remaining()):
                async def read() -> None:
                    i = 0
                    async for request in request_iterator:
                        await pending.put(asyncio.ensure_future(
                            answer(request, f"{base}-{i}", context.time_remaining())))
                        i += 1
                    await pending.put(None)

                reader = asyncio.ensure_future(read())
                try:
                    while True:
                        getter = asyncio.ensure_future(pending.get())
                        await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                        if not getter.done():  # the reader failed (the client's stream broke)
                            getter.cancel()
                            reader.result()
                            continue
                        fut = getter.result()
                        if fut is None:
                            break
                        yield await fut
                finally:
                    reader.cancel()
                    while not pending.empty():
                        fut = pending.get_nowait()
                        if fut is not None:
                            fut.cancel()
                    with contextlib.suppress(BaseException):
                        await reader
        except asyncio.CancelledError:
            raise
        except Exception as e:
            await abort(context, e)


class _Embed(pb_grpc.EmbedServicer, _Unary):
    async def _embed(self, request: pb.EmbedRequest, request_id: str, remaining: float | None) -> pb.EmbedResponse:
        t0 = time.monotonic()
        out = await _run(self.core, request.inputs, _params(request, "embed"), request_id, remaining, "embed")
        return pb.EmbedResponse(embeddings=_row(out).reshape(-1).tolist(), metadata=_metadata(out, request.inputs, t0))

    async def _sparse(self, request: Any, request_id: str, remaining: float | None) -> Any:
        t0 = time.monotonic()
        out = await _run(self.core, request.inputs, _params(request, "embed_sparse"), request_id, remaining,
                         "embed_sparse")
        values, indices = _row(out).reshape(-1).tolist(), out.outputs.indices
        if indices is None:
            raise unsupported_task("embed_sparse", self.core.model_name, "the model returned no sparse terms")
        return pb.EmbedSparseResponse(
            sparse_embeddings=[pb.SparseValue(index=int(i), value=v) for i, v in zip(indices.tolist(), values)],
            metadata=_metadata(out, request.inputs, t0))

    async def _all(self, request: Any, request_id: str, remaining: float | None) -> Any:
        t0 = time.monotonic()
        out = await _run(self.core, request.inputs, _params(request, "token_embed"), request_id, remaining,
                         "token_embed")
        rows = _row(out)
        return pb.EmbedAllResponse(token_embeddings=[pb.TokenEmbedding(embeddings=r.tolist()) for r in rows],
                                   metadata=_metadata(out, request.inputs, t0))

    async def Embed(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self.unary(context, lambda rid, rem: self._embed(request, rid, rem))

    async def EmbedStream(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async for response in self.stream(request_iterator, context, self._embed):
            yield response

    async def EmbedSparse(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self.unary(context, lambda rid, rem: self._sparse(request, rid, rem))

    async def EmbedSparseStream(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async for response in self.stream(request_iterator, context, self._sparse):
            yield response

    async def EmbedAll(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self.unary(context, lambda rid, rem: self._all(request, rid, rem))

    async def EmbedAllStream(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async for response in self.stream(request_iterator, context, self._all):
            yield response


def _predictions(core: ServingCore, out: Any) -> list[Any]:
    labels = getattr(out.outputs, "labels", None) or core.facts().labels
    row = _row(out).reshape(-1).tolist()
    names = list(labels) if labels else [f"LABEL_{i}" for i in range(len(row))]
    return sorted((pb.Prediction(score=v, label=names[i]) for i, v in enumerate(row)), key=lambda p: -p.score)


class _Predict(pb_grpc.PredictServicer, _Unary):
    async def _predict(self, request: Any, request_id: str, remaining: float | None) -> Any:
        t0 = time.monotonic()
        if isinstance(request, pb.PredictPairRequest):
            if len(request.inputs) != 2:
                raise invalid_argument("INVALID_PROMPT", f"a pair has 2 inputs, got {len(request.inputs)}",
                                       "inputs")
            prompt: Any = {"prompt": request.inputs[0], "text_pair": request.inputs[1]}
            text = request.inputs[0] + request.inputs[1]
        else:
            prompt = text = request.inputs
        out = await _run(self.core, prompt, _params(request, "classify"), request_id, remaining, "predict")
        return pb.PredictResponse(predictions=_predictions(self.core, out), metadata=_metadata(out, text, t0))

    async def Predict(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self.unary(context, lambda rid, rem: self._predict(request, rid, rem))

    async def PredictPair(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self.unary(context, lambda rid, rem: self._predict(request, rid, rem))

    async def PredictStream(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async for response in self.stream(request_iterator, context, self._predict):
            yield response

    async def PredictPairStream(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async for response in self.stream(request_iterator, context, self._predict):
            yield response


class _Rerank(pb_grpc.RerankServicer, _Unary):
    async def _rerank(self, query: str, texts: list[str], raw_scores: bool, return_text: bool, truncate: bool,
                      request_id: str, remaining: float | None) -> Any:
        t0 = time.monotonic()
        core = self.core
        if not core.facts().serves("score"):
            raise unsupported_task("rerank", core.model_name, "TEI's Rerank needs a re-ranker (cross-encoder) model")
        if not texts:
            raise invalid_argument("INVALID_PROMPT", "texts is empty", "texts")
        core.check_prompt_count(len(texts), "texts")
        params = PoolingParams(task="score", use_activation=not raw_scores, truncate=truncate)
        outs = await core.encode([{"prompt": query, "text_pair": t} for t in texts], params, request_id, remaining,
                                 field_of=lambda i: f"texts[{i}]")
        ranks = [pb.Rank(index=i, score=float(_row(o).reshape(-1)[0]), text=texts[i] if return_text else None)
                 for i, o in enumerate(outs)]
        ranks.sort(key=lambda r: -r.score)
        tokens = sum(len(o.prompt_token_ids or ()) for o in outs)
        queue = max((o.timing.queue_s for o in outs if o.timing is not None), default=0.0)
        inference = sum(o.timing.inference_s for o in outs if o.timing is not None)
        meta = pb.Metadata(compute_chars=len(query) * len(texts) + sum(map(len, texts)), compute_tokens=tokens,
                           total_time_ns=int((time.monotonic() - t0) * 1e9), queue_time_ns=int(queue * 1e9),
                           inference_time_ns=int(inference * 1e9))
        return pb.RerankResponse(ranks=ranks, metadata=meta)

    async def Rerank(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if request.truncation_direction == pb.TRUNCATION_DIRECTION_LEFT:
            await abort(context, invalid_argument("INVALID_PARAMS", "truncation_direction LEFT is not supported",
                                                  "truncation_direction"))
        return await self.unary(context, lambda rid, rem: self._rerank(
            request.query, list(request.texts), request.raw_scores, request.return_text, request.truncate, rid, rem))

    async def RerankStream(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        """TEI's client stream: one (query, text) per message, one answer (the first message's
        raw_scores and return_text apply)."""
        items = []
        try:
            async for r in request_iterator:
                items.append(r)
                if len(items) > self.core.limits.max_prompts_per_request:
                    self.core.check_prompt_count(len(items), "texts")
        except Exception as e:
            await abort(context, e)
        if not items:
            await abort(context, invalid_argument("INVALID_PROMPT", "the stream held no request", "texts"))
        first = items[0]
        return await self.unary(context, lambda rid, rem: self._rerank(
            first.query, [r.text for r in items], first.raw_scores, first.return_text, first.truncate, rid, rem))


class _Tokenize(pb_grpc.TokenizeServicer):
    def __init__(self, core: ServingCore):
        self.core = core

    def _tokenize(self, request: pb.EncodeRequest) -> pb.EncodeResponse:
        text = self.core.with_prompt(request.inputs, request.prompt_name if request.HasField("prompt_name") else None)
        limit = self.core.limits.max_payload_bytes
        if len(request.inputs) > limit:
            raise invalid_argument("PAYLOAD_TOO_LARGE", f"inputs has {len(request.inputs)} characters; at most "
                                   f"{limit}", "inputs")
        enc = self.core.tokenizer().encode(text, add_special_tokens=request.add_special_tokens)
        tokens = []
        for tid, tok, (start, stop), special in zip(enc.ids, enc.tokens, enc.offsets, enc.special_tokens_mask):
            if special:
                tokens.append(pb.SimpleToken(id=tid, text=tok, special=True))
            else:
                tokens.append(pb.SimpleToken(id=tid, text=text[start:stop], special=False, start=start, stop=stop))
        return pb.EncodeResponse(tokens=tokens)

    def _decode(self, request: pb.DecodeRequest) -> pb.DecodeResponse:
        tok = self.core.tokenizer()
        vocab = tok.get_vocab_size()
        bad = next((i for i in request.ids if i >= vocab), None)
        if bad is not None:
            raise invalid_argument("INVALID_PROMPT", f"token id {bad} is outside the vocabulary (size {vocab})", "ids")
        return pb.DecodeResponse(text=tok.decode(list(request.ids), skip_special_tokens=request.skip_special_tokens))

    async def Tokenize(self, request: pb.EncodeRequest, context: grpc.aio.ServicerContext) -> pb.EncodeResponse:
        try:
            self.core.engine()
            return await asyncio.to_thread(self._tokenize, request)
        except Exception as e:
            await abort(context, e)
            raise  # pragma: no cover

    async def Decode(self, request: pb.DecodeRequest, context: grpc.aio.ServicerContext) -> pb.DecodeResponse:
        try:
            self.core.engine()
            return self._decode(request)
        except Exception as e:
            await abort(context, e)
            raise  # pragma: no cover

    async def TokenizeStream(self, request_iterator: AsyncIterator[pb.EncodeRequest],
                             context: grpc.aio.ServicerContext) -> AsyncIterator[pb.EncodeResponse]:
        try:
            self.core.engine()
            async for request in request_iterator:
                yield await asyncio.to_thread(self._tokenize, request)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            await abort(context, e)

    async def DecodeStream(self, request_iterator: AsyncIterator[pb.DecodeRequest],
                           context: grpc.aio.ServicerContext) -> AsyncIterator[pb.DecodeResponse]:
        try:
            self.core.engine()
            async for request in request_iterator:
                yield self._decode(request)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            await abort(context, e)
