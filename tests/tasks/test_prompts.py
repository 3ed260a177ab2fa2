"""sentence-transformers prompts (config_sentence_transformers.json) applied like ST does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from poolstream.config import default_model_path
from poolstream.engine.errors import InvalidPromptError
from poolstream.pooling_params import PoolingParams

from .conftest import encode_all, running_engine

TEXTS = ["what is a panda?", "Berlin has about 3.8 million inhabitants.", " ".join(["many words"] * 200)]
PROMPTS = {"query": "query: ", "passage": "passage: ", "empty": ""}


def _prompted_dir(tmp: Path, default: str | None) -> Path:
    src = Path(default_model_path())
    for item in src.iterdir():
        if item.name == "config_sentence_transformers.json":
            continue
        (tmp / item.name).symlink_to(item)
    st_cfg = json.loads((src / "config_sentence_transformers.json").read_text()) \
        if (src / "config_sentence_transformers.json").is_file() else {}
    st_cfg.update(prompts=PROMPTS, default_prompt_name=default)
    (tmp / "config_sentence_transformers.json").write_text(json.dumps(st_cfg))
    return tmp


@pytest.mark.parametrize("default", [None, "query"])
async def test_prompts_match_sentence_transformers(tmp_path, default):
    from sentence_transformers import SentenceTransformer

    path = _prompted_dir(tmp_path, default)
    st = SentenceTransformer(str(path), device="cpu")
    async with running_engine(path) as engine:
        assert engine.model_info.prompts == PROMPTS and engine.model_info.default_prompt_name == default
        for name in (None, "query", "passage", "empty"):
            ref = st.encode(TEXTS, prompt_name=name, convert_to_tensor=True)
            outs = await encode_all(engine, TEXTS, PoolingParams(prompt_name=name))
            torch.testing.assert_close(torch.stack([o.outputs.data for o in outs]), ref, atol=1e-5, rtol=1e-5)
        # the prompt's tokens count toward the length limit, as in ST (truncated after prepending)
        out, = await encode_all(engine, ["hello"], PoolingParams(prompt_name="query"))
        plain, = await encode_all(engine, ["hello"], PoolingParams(prompt_name="empty"))
        assert len(out.prompt_token_ids) == len(plain.prompt_token_ids) + 2  # "query", ":"


async def test_unknown_prompt_name_is_invalid(tmp_path):
    path = _prompted_dir(tmp_path, None)
    async with running_engine(path) as engine:
        with pytest.raises(InvalidPromptError, match=r"unknown prompt_name 'doc'.*'query', 'passage', 'empty'"):
            await engine.encode_one("x", PoolingParams(prompt_name="doc"), "a")
        with pytest.raises(InvalidPromptError, match="prompt_name applies to text prompts only"):
            await engine.encode_one({"prompt_token_ids": [101, 102]}, PoolingParams(prompt_name="query"), "b")
