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
- ``EmbedSparse``, ``EmbedAll``, ``Predict``, ``Rerank``: the model's task
  decides, as in TEI; an embedding model answers UNIMPLEMENTED
  ``TASK_NOT_SUPPORTED`` (and health reports those services NOT_SERVING).
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


def _embed_params(request: Any) -> PoolingParams:
    if request.truncation_direction == pb.TRUNCATION_DIRECTION_LEFT:
        raise invalid_argument("INVALID_PARAMS", "truncation_direction LEFT is not supported: inputs are cut on "
                               "the right", "truncation_direction")
    if request.HasField("prompt_name") and request.prompt_name:
        raise invalid_argument("INVALID_PARAMS", f"prompt_name {request.prompt_name!r}: the model defines no prompts",
                               "prompt_name")
    params = PoolingParams(
        task="embed",
        normalize=request.normalize if request.HasField("normalize") else True,  # TEI's default
        dimensions=request.dimensions if request.HasField("dimensions") else None,
        # TEI's truncate=false rejects long inputs; true cuts them.
        truncate=bool(request.truncate),
    )
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
        """TEI's rule: Info and Tokenize SERVING; of Embed/Predict/Rerank only the model's task
        (every one NOT_SERVING while the model loads)."""
        if not loaded:
            for name in SERVICE_NAMES:
                await health.servicer.set(name, NOT_SERVING)
                health.threaded_servicer.set(name, NOT_SERVING)
            return
        facts = self.core.facts()
        statuses = {
            "tei.v1.Info": SERVING,
            "tei.v1.Tokenize": SERVING if facts.is_text else NOT_SERVING,
            "tei.v1.Embed": SERVING if facts.is_embedding else NOT_SERVING,
            "tei.v1.Predict": NOT_SERVING,
            "tei.v1.Rerank": NOT_SERVING,
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
            model_type=pb.MODEL_TYPE_EMBEDDING,
            max_concurrent_requests=config.limits.max_concurrent_calls,
            max_input_length=facts.max_model_len,
            max_batch_tokens=config.engine_config.max_num_batched_tokens,
            max_batch_requests=config.engine_config.max_num_seqs,
            max_client_batch_size=config.limits.max_prompts_per_request,
            tokenization_workers=1,
        )


class _Embed(pb_grpc.EmbedServicer):
    def __init__(self, core: ServingCore):
        self.core = core

    async def _embed(self, request: pb.EmbedRequest, request_id: str, remaining: float | None) -> pb.EmbedResponse:
        t0 = time.monotonic()
        core = self.core
        if not core.facts().is_embedding:
            raise unsupported_task("embed", core.model_name, "use poolstream.v1.PoolingService/Process")
        if not request.inputs:
            raise invalid_argument("INVALID_PROMPT", "inputs is empty", "inputs")
        [out] = await core.encode([request.inputs], _embed_params(request), request_id, remaining,
                                  field_of=lambda i: "inputs")
        data = out.outputs.data.detach().to("cpu").float().reshape(-1)
        return pb.EmbedResponse(embeddings=data.tolist(), metadata=_metadata(out, request.inputs, t0))

    async def Embed(self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext) -> pb.EmbedResponse:
        try:
            with self.core.admitted(context.time_remaining()):
                return await self._embed(request, _request_id(), context.time_remaining())
        except asyncio.CancelledError:
            raise
        except Exception as e:
            await abort(context, e)
            raise  # pragma: no cover  (abort raises)

    async def EmbedStream(self, request_iterator: AsyncIterator[pb.EmbedRequest],
                          context: grpc.aio.ServicerContext) -> AsyncIterator[pb.EmbedResponse]:
        base = _request_id()
        pending: asyncio.Queue[asyncio.Future | None] = asyncio.Queue(maxsize=_STREAM_WINDOW)
        try:
            with self.core.admitted(context.time_remaining()):
                async def read() -> None:
                    i = 0
                    async for request in request_iterator:
                        await pending.put(asyncio.ensure_future(
                            self._embed(request, f"{base}-{i}", context.time_remaining())))
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

    async def EmbedSparse(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await abort(context, unsupported_task("embed_sparse", self.core.model_name, "it has no sparse (SPLADE) head"))

    async def EmbedSparseStream(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        await abort(context, unsupported_task("embed_sparse", self.core.model_name, "it has no sparse (SPLADE) head"))

    async def EmbedAll(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await abort(context, unsupported_task("token_embed", self.core.model_name,
                                              "per-token embeddings are not served yet"))

    async def EmbedAllStream(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        await abort(context, unsupported_task("token_embed", self.core.model_name,
                                              "per-token embeddings are not served yet"))


class _Predict(pb_grpc.PredictServicer):
    def __init__(self, core: ServingCore):
        self.core = core

    async def _refuse(self, context: grpc.aio.ServicerContext) -> Any:
        await abort(context, unsupported_task("classify", self.core.model_name,
                                              "it is not a sequence-classification model"))

    async def Predict(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._refuse(context)

    async def PredictPair(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._refuse(context)

    async def PredictStream(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._refuse(context)

    async def PredictPairStream(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._refuse(context)


class _Rerank(pb_grpc.RerankServicer):
    def __init__(self, core: ServingCore):
        self.core = core

    async def _refuse(self, context: grpc.aio.ServicerContext) -> Any:
        await abort(context, unsupported_task("rerank", self.core.model_name,
                                              "TEI's Rerank needs a re-ranker (cross-encoder) model"))

    async def Rerank(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._refuse(context)

    async def RerankStream(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._refuse(context)


class _Tokenize(pb_grpc.TokenizeServicer):
    def __init__(self, core: ServingCore):
        self.core = core

    def _tokenize(self, request: pb.EncodeRequest) -> pb.EncodeResponse:
        if request.HasField("prompt_name") and request.prompt_name:
            raise invalid_argument("INVALID_PARAMS", f"prompt_name {request.prompt_name!r}: the model defines no "
                                   "prompts", "prompt_name")
        limit = self.core.limits.max_payload_bytes
        if len(request.inputs) > limit:
            raise invalid_argument("PAYLOAD_TOO_LARGE", f"inputs has {len(request.inputs)} characters; at most "
                                   f"{limit}", "inputs")
        text = request.inputs
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
