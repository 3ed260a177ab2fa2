"""Fixtures for the CUDA tests: skipped where torch sees no CUDA device.

The model directory defaults to the embedded all-MiniLM-L6-v2; set
``POOLSTREAM_TEST_MODEL_DIR`` to use another copy, e.g. one made by
bench/half_weights.py where the weights must be shipped to a GPU machine.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from poolstream.config import default_model_path

ROOT = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items):
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "tests/gpu/" in item.nodeid.replace(os.sep, "/"):
            item.add_marker(pytest.mark.gpu)
            if not torch.cuda.is_available():
                item.add_marker(skip)


@pytest.fixture(scope="session")
def model_dir() -> str:
    return os.environ.get("POOLSTREAM_TEST_MODEL_DIR") or default_model_path()


@pytest.fixture(scope="session")
def st_fp32(model_dir):
    """sentence-transformers on CUDA in float32: the reference."""
    from sentence_transformers import SentenceTransformer  # test-only reference

    return SentenceTransformer(model_dir, device="cuda", model_kwargs={"dtype": torch.float32})
