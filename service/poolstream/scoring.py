"""Rerank and pair scoring over the engine, transport-neutral.

The gRPC ``Rerank`` RPC and the HTTP front ends (TEI ``/rerank``, vLLM
``/score`` and ``/rerank``) all call these functions; they speak Python
types only and raise the engine's errors (``InvalidPromptError`` ->
INVALID_ARGUMENT, ...).

Two ways to score a (query, document) pair, chosen by what the model serves:

- ``cross_encoder``: the model has the ``score`` task: the pair is encoded
  together (token types, longest-first truncation) and the classifier's
  logit goes through sigmoid (``raw_scores`` keeps the logit), exactly as
  sentence-transformers' ``CrossEncoder.predict``;
- ``embedding_cosine``: an embedding model: cosine similarity of the query's
  and the document's embeddings (vLLM's score for embedding models).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from poolstream.engine.errors import InvalidPromptError
from poolstream.outputs import PoolingRequestOutput
from poolstream.pooling_params import PoolingParams


class _Engine(Protocol):
    """What scoring needs of an engine (AsyncEngine and the server's wrappers)."""

    model_info: Any

    async def encode_one(self, prompt: Any, params: PoolingParams | None, request_id: str,
                         priority: int = 0, deadline: float | None = None) -> PoolingRequestOutput: ...


@dataclass(frozen=True)
class PairScore:
    """One pair's score."""

    score: float
    prompt_tokens: int
    truncated: bool


@dataclass(frozen=True)
class RankedDocument:
    """One document of a rerank result."""

    index: int
    score: float
    text: str | None
    truncated: bool


@dataclass(frozen=True)
class RerankResult:
    results: list[RankedDocument]  # best first
    prompt_tokens: int
    method: str  # "cross_encoder" | "embedding_cosine"


def scoring_method(model_info: Any) -> str:
    """How this model scores pairs; InvalidPromptError when it cannot."""
    tasks = tuple(getattr(model_info, "tasks", ("embed",)))
    if "score" in tasks:
        labels = tuple(getattr(model_info, "labels", ()))
        if len(labels) != 1:
            raise InvalidPromptError(
                f"rerank and score need a cross-encoder with one output label; this model has "
                f"{len(labels)} labels ({', '.join(labels)}): use the classify task instead")
        return "cross_encoder"
    if "embed" in tasks:
        return "embedding_cosine"
    raise InvalidPromptError(
        f"this model cannot score text pairs: its tasks are {', '.join(tasks)} (needs score or embed)")


@dataclass(frozen=True)
class PairScores:
    """Scores of several pairs, in pair order."""

    scores: list[PairScore]
    method: str  # "cross_encoder" | "embedding_cosine"
    prompt_tokens: int  # tokens the model encoded (each distinct text once for embeddings)


async def score_pairs(engine: _Engine, pairs: Sequence[tuple[str, str]], *, request_id: str,
                      priority: int = 0, deadline: float | None = None, raw_scores: bool = False,
                      truncate: bool | None = None) -> PairScores:
    """Score each (text, text_pair) with the model's scoring method (``scoring_method``)."""
    method = scoring_method(engine.model_info)
    if method == "cross_encoder":
        params = PoolingParams(task="score", use_activation=not raw_scores, truncate=truncate)
        outs = await _gather([engine.encode_one({"prompt": a, "text_pair": b}, params, f"{request_id}-{i}",
                                                priority, deadline) for i, (a, b) in enumerate(pairs)])
        scores = [PairScore(float(o.outputs.data.reshape(-1)[0]), len(o.prompt_token_ids), o.truncated)
                  for o in outs]
        return PairScores(scores, method, sum(s.prompt_tokens for s in scores))
    # Bi-encoder: embed each distinct text once, then cosine similarity of the unit vectors.
    texts = list(dict.fromkeys(t for pair in pairs for t in pair))
    params = PoolingParams(task="embed", normalize=True, truncate=truncate)
    outs = await _gather([engine.encode_one(t, params, f"{request_id}-{i}", priority, deadline)
                          for i, t in enumerate(texts)])
    by_text = dict(zip(texts, outs))
    scores = []
    for a, b in pairs:
        oa, ob = by_text[a], by_text[b]
        cos = float(torch.dot(oa.outputs.data.float(), ob.outputs.data.float()))
        scores.append(PairScore(cos, len(oa.prompt_token_ids) + len(ob.prompt_token_ids),
                                oa.truncated or ob.truncated))
    return PairScores(scores, method, sum(len(o.prompt_token_ids) for o in outs))


async def rerank(engine: _Engine, query: str, documents: Sequence[str], *, request_id: str,
                 priority: int = 0, deadline: float | None = None, raw_scores: bool = False,
                 return_text: bool = False, truncate: bool | None = None,
                 top_n: int | None = None) -> RerankResult:
    """Rank ``documents`` by relevance to ``query`` (TEI's rerank): highest score first,
    ties in document order; ``top_n`` keeps the best N."""
    if not documents:
        raise InvalidPromptError("rerank needs at least one document")
    if top_n is not None and top_n < 1:
        raise InvalidPromptError(f"top_n must be >= 1, got {top_n}")
    scored = await score_pairs(engine, [(query, d) for d in documents], request_id=request_id,
                               priority=priority, deadline=deadline, raw_scores=raw_scores, truncate=truncate)
    scores = scored.scores
    order = sorted(range(len(documents)), key=lambda i: -scores[i].score)  # stable: ties keep order
    if top_n is not None:
        order = order[:top_n]
    results = [RankedDocument(i, scores[i].score, documents[i] if return_text else None, scores[i].truncated)
               for i in order]
    return RerankResult(results, scored.prompt_tokens, scored.method)


async def _gather(calls: list[Awaitable[PoolingRequestOutput]]) -> list[PoolingRequestOutput]:
    """All outputs, or the first error with every other call cancelled (their prompts aborted)."""
    tasks = [asyncio.ensure_future(c) for c in calls]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
