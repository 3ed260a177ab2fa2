"""Engine errors; the server maps each to one gRPC status (see each docstring)."""

from __future__ import annotations

import random

# RetryInfo delays are spread over [delay, delay * (1 + RETRY_JITTER)): clients refused
# together and honouring the delay exactly would otherwise come back together, and be
# refused together again.
RETRY_JITTER = 0.5


def jittered_retry_delay(delay_s: float, rng: random.Random | None = None) -> float:
    """``delay_s`` stretched by a random factor in [1, 1 + RETRY_JITTER)."""
    return delay_s * (1.0 + RETRY_JITTER * (rng or random).random())


class EngineError(Exception):
    """Base class of engine errors (an unexpected model failure -> INTERNAL)."""


class EngineOverloadedError(EngineError):
    """The queue holds ``max_queued_prompts`` prompts -> RESOURCE_EXHAUSTED + RetryInfo."""

    def __init__(self, message: str, retry_after_s: float):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class InvalidPromptError(EngineError, ValueError):
    """A prompt the model cannot take (too long with truncate=False, bad token ids,
    wrong tensor names or shapes, ...) -> INVALID_ARGUMENT."""


class DeadlineExceededError(EngineError):
    """The request's deadline passed before it was batched; it was dropped -> DEADLINE_EXCEEDED."""


class RequestAbortedError(EngineError):
    """``abort()`` was called for a request whose ``encode()`` is still being awaited -> CANCELLED."""


class EngineDeadError(EngineError):
    """The engine thread stopped (shut down or crashed); no request can complete -> UNAVAILABLE."""


class PromptTooLargeError(InvalidPromptError):
    """A prompt over a per-prompt cost cap (--max-prompt-chars, --max-prompt-token-ids,
    --max-prompt-tensor-bytes, or a tensor cost above one batch) -> INVALID_ARGUMENT PROMPT_TOO_LARGE."""


class NonFiniteInputError(InvalidPromptError):
    """NaN or +/-Infinity in an input tensor (unless --allow-non-finite-inputs)
    -> INVALID_ARGUMENT NON_FINITE_INPUT."""
