"""Request and response bodies of the HTTP door (pydantic: validation and the OpenAPI docs).

Field names and defaults follow the API each route imitates: OpenAI's
embeddings, vLLM's pooling/score/rerank/classify, and TEI's embed/rerank/
predict/info. Unknown fields are ignored, as OpenAI's and vLLM's clients send
extras (``user``, vendor keys) that the server need not act on.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# -- OpenAI ------------------------------------------------------------------------------


class EmbeddingRequest(BaseModel):
    """OpenAI ``POST /v1/embeddings`` (plus vLLM's extras ``truncate_prompt_tokens``, ``priority``)."""

    model_config = ConfigDict(extra="ignore")

    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="A text, a list of texts, a list of token ids, or a list of token-id lists")
    model: str | None = Field(None, description="The served model's name (GET /v1/models); omitted: the served one")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="float: JSON numbers; base64: little-endian float32 bytes, base64-encoded")
    dimensions: int | None = Field(None, ge=1, description="Keep the first N dimensions (Matryoshka), renormalised")
    user: str | None = Field(None, description="End-user id (logged nowhere; accepted for compatibility)")
    truncate_prompt_tokens: int | None = Field(None, ge=1, description="vLLM: cut each input to N tokens")
    priority: int = Field(0, ge=-(2**31), le=2**31 - 1, description="vLLM: scheduling priority (lower runs first)")


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | str
    index: int


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    id: str
    object: Literal["list"] = "list"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    data: list[EmbeddingData]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "poolstream"
    root: str | None = None
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# -- vLLM --------------------------------------------------------------------------------


class PoolingRequest(BaseModel):
    """vLLM ``POST /pooling``: ``data`` for the IO Processor plugin (IOProcessorRequest), or
    ``input`` for raw pooling of texts / token ids (one tensor per input)."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    priority: int = Field(0, ge=-(2**31), le=2**31 - 1)  # gRPC's int32
    data: Any = Field(None, description="The plugin's request payload (IOProcessorRequest.data)")
    input: str | list[str] | list[int] | list[list[int]] | None = Field(
        None, description="Raw pooling instead of a plugin request")
    request_id: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    truncate_prompt_tokens: int | None = Field(None, ge=1)
    dimensions: int | None = Field(None, ge=1)
    normalize: bool | None = None


class IOProcessorResponse(BaseModel):
    """vLLM's plugin response: ``output_to_response``'s data as JSON."""

    request_id: str | None = None
    created_at: int = Field(default_factory=lambda: int(time.time()))
    data: Any


class PoolingData(BaseModel):
    index: int
    object: Literal["pooling"] = "pooling"
    data: Any


class PoolingResponse(BaseModel):
    id: str
    object: Literal["list"] = "list"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    data: list[PoolingData]
    usage: Usage


class ScoreRequest(BaseModel):
    """vLLM ``POST /v1/score``: ``text_1`` against each of ``text_2``."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    text_1: str | list[str]
    text_2: str | list[str]
    truncate_prompt_tokens: int | None = Field(None, ge=1)
    priority: int = Field(0, ge=-(2**31), le=2**31 - 1)  # gRPC's int32


class ScoreData(BaseModel):
    index: int
    object: Literal["score"] = "score"
    score: float


class ScoreResponse(BaseModel):
    id: str
    object: Literal["list"] = "list"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    data: list[ScoreData]
    usage: Usage


class RerankRequest(BaseModel):
    """vLLM / Jina / Cohere ``POST /rerank`` (``documents``); TEI's form uses ``texts``."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    query: str
    documents: list[str]
    top_n: int | None = Field(None, ge=0)
    return_documents: bool = True
    truncate_prompt_tokens: int | None = Field(None, ge=1)
    priority: int = Field(0, ge=-(2**31), le=2**31 - 1)  # gRPC's int32


class RerankDocument(BaseModel):
    text: str


class RerankResult(BaseModel):
    index: int
    document: RerankDocument | None = None
    relevance_score: float


class RerankResponse(BaseModel):
    id: str
    model: str
    usage: dict[str, int]
    results: list[RerankResult]


class ClassifyRequest(BaseModel):
    """vLLM ``POST /classify``."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    input: str | list[str]
    priority: int = Field(0, ge=-(2**31), le=2**31 - 1)  # gRPC's int32


# -- TEI ---------------------------------------------------------------------------------


class TEIEmbedRequest(BaseModel):
    """TEI ``POST /embed``."""

    model_config = ConfigDict(extra="ignore")

    inputs: str | list[str] | list[int] | list[list[int]]
    normalize: bool = True
    truncate: bool | None = None
    truncation_direction: Literal["Left", "Right", "left", "right"] = "Right"
    prompt_name: str | None = None
    dimensions: int | None = Field(None, ge=1)


class TEIRerankRequest(BaseModel):
    """TEI ``POST /rerank`` (cross-encoder models)."""

    model_config = ConfigDict(extra="ignore")

    query: str
    texts: list[str]
    truncate: bool | None = None
    raw_scores: bool = False
    return_text: bool = False
    truncation_direction: Literal["Left", "Right", "left", "right"] = "Right"


class TEIPredictRequest(BaseModel):
    """TEI ``POST /predict`` (classifier models)."""

    model_config = ConfigDict(extra="ignore")

    inputs: str | list[str] | list[list[str]]
    truncate: bool | None = None
    raw_scores: bool = False
    truncation_direction: Literal["Left", "Right", "left", "right"] = "Right"


class TEITokenizeRequest(BaseModel):
    """TEI ``POST /tokenize``."""

    model_config = ConfigDict(extra="ignore")

    inputs: str | list[str]
    add_special_tokens: bool = True
    prompt_name: str | None = None


class TEIInfo(BaseModel):
    """TEI ``GET /info``."""

    model_id: str
    model_sha: str | None = None
    model_dtype: str
    model_type: dict[str, Any]
    max_concurrent_requests: int
    max_input_length: int
    max_batch_tokens: int
    max_batch_requests: int | None = None
    max_client_batch_size: int
    auto_truncate: bool = True
    tokenization_workers: int = 1
    version: str
    sha: str | None = None
    docker_label: str | None = None
