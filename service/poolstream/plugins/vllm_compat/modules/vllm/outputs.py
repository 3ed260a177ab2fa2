"""``vllm.outputs``: the engine's per-prompt results (poolstream's classes) and vLLM's typed views."""

from dataclasses import dataclass
from typing import Any

from poolstream.outputs import PoolingOutput, PoolingRequestOutput


@dataclass
class EmbeddingOutput:
    embedding: list[float]

    @staticmethod
    def from_base(pooling_output: PoolingOutput) -> "EmbeddingOutput":
        data = pooling_output.data
        if data.ndim != 1:
            raise ValueError("pooled_data should be a 1-D embedding vector")
        return EmbeddingOutput(data.tolist())

    @property
    def hidden_size(self) -> int:
        return len(self.embedding)


@dataclass
class ClassificationOutput:
    probs: list[float]

    @staticmethod
    def from_base(pooling_output: PoolingOutput) -> "ClassificationOutput":
        data = pooling_output.data
        if data.ndim != 1:
            raise ValueError("pooled_data should be a 1-D probability vector")
        return ClassificationOutput(data.tolist())

    @property
    def num_classes(self) -> int:
        return len(self.probs)


@dataclass
class ScoringOutput:
    score: float

    @staticmethod
    def from_base(pooling_output: PoolingOutput) -> "ScoringOutput":
        data = pooling_output.data.squeeze()
        if data.ndim != 0:
            raise ValueError("pooled_data should be a scalar score")
        return ScoringOutput(float(data.item()))


def _typed(view: Any) -> Any:
    def from_base(request_output: PoolingRequestOutput) -> PoolingRequestOutput:
        return PoolingRequestOutput(
            request_id=request_output.request_id,
            outputs=view.from_base(request_output.outputs),
            prompt_token_ids=request_output.prompt_token_ids,
            num_cached_tokens=request_output.num_cached_tokens,
            finished=request_output.finished,
        )

    return staticmethod(from_base)


class EmbeddingRequestOutput(PoolingRequestOutput):
    from_base = _typed(EmbeddingOutput)


class ClassificationRequestOutput(PoolingRequestOutput):
    from_base = _typed(ClassificationOutput)


class ScoringRequestOutput(PoolingRequestOutput):
    from_base = _typed(ScoringOutput)


__all__ = [
    "ClassificationOutput", "ClassificationRequestOutput", "EmbeddingOutput", "EmbeddingRequestOutput",
    "PoolingOutput", "PoolingRequestOutput", "ScoringOutput", "ScoringRequestOutput",
]
