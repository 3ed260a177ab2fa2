"""The native BERT encoder against sentence-transformers (the reference, test-only)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from poolstream.config import default_model_path
from poolstream.engine.processor import load_tokenizer
from poolstream.models.bert import BertEmbeddingModel
from poolstream.models.model_dir import read_model_dir

TOL = 1e-5
TEXTS = ["Hello world.", "A somewhat longer sentence, with punctuation; and more words!", "Ünïcödé ✓ 你好",
         "short", " ".join(["many words"] * 150)]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def clone_dir(tmp: Path, pooling: dict | None = None, modules: list | None = None) -> Path:
    """Symlink the embedded model's files into tmp, overriding some configs."""
    src = Path(default_model_path())
    for item in src.iterdir():
        if item.is_file():
            (tmp / item.name).symlink_to(item)
    (tmp / "1_Pooling").mkdir()
    pool = json.loads((src / "1_Pooling" / "config.json").read_text())
    (tmp / "1_Pooling" / "config.json").write_text(json.dumps(pooling or pool))
    if modules is not None:
        (tmp / "modules.json").unlink()
        (tmp / "modules.json").write_text(json.dumps(modules))
    return tmp


def load(path: Path, dtype: torch.dtype = torch.float32) -> BertEmbeddingModel:
    d = read_model_dir(path)
    return BertEmbeddingModel.load(path, d.hf_config, torch.device("cpu"), dtype)


def padded_batch(path: Path, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded token ids and 0/1 mask for ``texts``, truncated to the model's limit."""
    d = read_model_dir(path)
    tok = load_tokenizer(d.tokenizer_file)
    tok.enable_truncation(d.max_model_len)
    ids = [e.ids for e in tok.encode_batch(texts)]
    seq = max(map(len, ids))
    inp = torch.zeros(len(ids), seq, dtype=torch.long)
    mask = torch.zeros(len(ids), seq, dtype=torch.long)
    for i, row in enumerate(ids):
        inp[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return inp, mask


def embed(model: BertEmbeddingModel, path: Path, texts: list[str], normalize: bool) -> torch.Tensor:
    inp, mask = padded_batch(path, texts)
    with torch.inference_mode():
        out = model.forward_tokens(inp, mask).float()
    return F.normalize(out, dim=-1) if normalize else out


def st_encode(path: Path, texts: list[str]) -> torch.Tensor:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device="cpu").encode(texts, convert_to_tensor=True)


def test_mean_pooling_matches_st():
    path = Path(default_model_path())
    model = load(path)
    spec = model.spec()
    assert spec.output_shape == (384,) and spec.pooling == "mean" and spec.normalize
    assert spec.max_model_len == 256 and spec.tensor_inputs == ()
    ours = embed(model, path, TEXTS, normalize=True)
    assert (ours - st_encode(path, TEXTS)).abs().max() < TOL
    # One prompt alone takes the no-mask fast path and must agree too.
    assert (embed(model, path, TEXTS[1:2], True)[0] - ours[1]).abs().max() < TOL


@pytest.mark.parametrize("mode, key", [("cls", "pooling_mode_cls_token"), ("last", "pooling_mode_lasttoken")])
def test_cls_and_last_pooling_match_st(tmp_path, mode, key):
    path = clone_dir(tmp_path, pooling={"word_embedding_dimension": 384, key: True})
    model = load(path)
    assert model.spec().pooling == mode
    assert (embed(model, path, TEXTS, True) - st_encode(path, TEXTS)).abs().max() < TOL


def test_prefixed_checkpoint_with_pooler(tmp_path):
    """`bert.`-prefixed keys plus an unused pooler head load to the same model."""
    path = clone_dir(tmp_path)
    weights = load_file(str(Path(default_model_path()) / "model.safetensors"))
    prefixed = {f"bert.{k}": v for k, v in weights.items()}
    prefixed["bert.pooler.dense.weight"] = torch.zeros(384, 384)
    prefixed["bert.pooler.dense.bias"] = torch.zeros(384)
    prefixed["cls.predictions.bias"] = torch.zeros(10)
    (path / "model.safetensors").unlink()
    save_file(prefixed, str(path / "model.safetensors"))
    ref = embed(load(Path(default_model_path())), Path(default_model_path()), TEXTS, True)
    assert torch.equal(embed(load(path), path, TEXTS, True), ref)


def test_dense_module_matches_st(tmp_path):
    from sentence_transformers import SentenceTransformer, models

    st = SentenceTransformer(default_model_path(), device="cpu")
    torch.manual_seed(0)
    dense = models.Dense(384, 64, activation_function=torch.nn.Tanh())
    with_dense = SentenceTransformer(modules=[st[0], st[1], dense, st[2]], device="cpu")
    with_dense.save(str(tmp_path))
    model = load(tmp_path)
    assert model.spec().output_shape == (64,)
    ref = with_dense.encode(TEXTS, convert_to_tensor=True)
    assert (embed(model, tmp_path, TEXTS, True) - ref).abs().max() < TOL


def test_bfloat16_close_to_float32():
    path = Path(default_model_path())
    ours = embed(load(path, torch.bfloat16), path, TEXTS, True)
    ref = embed(load(path), path, TEXTS, True)
    assert ours.dtype == torch.float32
    assert F.cosine_similarity(ours, ref).min() > 0.99


def test_unsupported_configs_are_rejected(tmp_path):
    path = clone_dir(tmp_path, pooling={"embedding_dimension": 384, "pooling_mode": "max"})
    with pytest.raises(ValueError, match="pooling 'max' is not supported"):
        load(path)
    d = read_model_dir(Path(default_model_path()))
    with pytest.raises(ValueError, match="position"):
        BertEmbeddingModel.load(Path(default_model_path()), {**d.hf_config, "position_embedding_type": "rotary"},
                                torch.device("cpu"), torch.float32)


def test_no_transformers_at_runtime():
    code = (
        "import sys, torch\n"
        "from poolstream.config import ModelConfig, PoolstreamConfig, default_model_path\n"
        "from poolstream.engine import AsyncEngine\n"
        "AsyncEngine.from_config(PoolstreamConfig(ModelConfig.from_dir(default_model_path())))\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('transformers', 'sentence_transformers')]\n"
        "assert not bad, bad\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


def test_scripted_encoder_is_used_and_equals_eager():
    """The encoder runs as TorchScript (no GIL during the forward) with eager's exact results."""
    path = Path(default_model_path())
    model = load(path)
    assert model._scripted is not None
    scripted = embed(model, path, TEXTS, False)
    model._scripted = None
    assert torch.equal(embed(model, path, TEXTS, False), scripted)


def test_packed_execution_equals_padded():
    """Mixed-length batches run packed (linears on real tokens only) with the padded layout's results."""
    path = Path(default_model_path())
    model = load(path)
    inp, mask = padded_batch(path, TEXTS)
    real = mask.bool()
    assert not bool(real.all())  # the batch really is padded
    with torch.inference_mode():
        for encoder in (model._scripted, model.encoder):
            packed = encoder(inp, mask, True)
            padded = encoder(inp, mask, False)
            assert (packed[real] - padded[real]).abs().max().item() <= TOL
            assert not packed[~real].any()  # padding positions come back as zeros
