"""``vllm.logger``: ``init_logger(name)`` gives a standard ``logging`` logger."""

import logging


def init_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


logger = init_logger("vllm")

__all__ = ["init_logger", "logger"]
