"""Every pooling task of every native architecture through the real engine, against the references:
score (sentence pairs) vs sentence-transformers' CrossEncoder, classify / token_classify / token_embed
vs transformers run on each prompt alone (no padding at all in the reference)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from poolstream.pooling_params import PoolingParams
from tests.models import test_modernbert, test_mpnet, test_qwen, test_rotary_bert, test_xlm_roberta
from tests.models.parity import TOL, engine_outputs, load_native, max_diff
from tests.models.tiny import PAIRS, TEXTS, init_weights, save_model_dir

MAX_LEN = 24  # the long text and the long pair are truncated


@dataclass(frozen=True)
class Family:
    prefix: str  # transformers class prefix: f"{prefix}Model", f"{prefix}ForSequenceClassification" ...
    config: Callable[[Any, dict[str, Any]], Any]  # (tokenizer, overrides) -> transformers config
    tokenizer: Callable[[], Any]
    tokenizer_kwargs: dict[str, Any]


def from_real(config_cls: str, raw: dict[str, Any], ids: Callable[[Any], dict[str, int]]) -> Callable:
    """A transformers config from a real config.json (shrunk), with the tokenizer's special ids."""
    def make(tok: Any, extra: dict[str, Any]) -> Any:
        import transformers

        cfg = {k: v for k, v in raw.items() if k not in ("architectures", "model_type", "id2label", "label2id")}
        return getattr(transformers, config_cls)(**{**cfg, **ids(tok), "vocab_size": tok.get_vocab_size(), **extra})
    return make


FAMILIES = {
    "xlm_roberta": Family("XLMRoberta", from_real("XLMRobertaConfig", test_xlm_roberta.BGE_RERANKER,
                                                  lambda tok: {"pad_token_id": 1}),
                          test_xlm_roberta.xlmr_tokenizer, test_xlm_roberta.TOKENIZER_KWARGS),
    "mpnet": Family("MPNet", from_real("MPNetConfig", test_mpnet.ALL_MPNET, lambda tok: {"pad_token_id": 1}),
                    test_mpnet.mpnet_tokenizer, test_mpnet.TOKENIZER_KWARGS),
    "modernbert": Family("ModernBert", from_real("ModernBertConfig", test_modernbert.MODERNBERT_BASE,
                                                 lambda tok: {"pad_token_id": tok.token_to_id("[PAD]"),
                                                              "cls_token_id": tok.token_to_id("[CLS]"),
                                                              "sep_token_id": tok.token_to_id("[SEP]")}),
                         test_modernbert.modernbert_tokenizer, test_modernbert.TOKENIZER_KWARGS),
    # The pad token differs from the appended <|endoftext|>, so transformers' "last non-pad token"
    # is the last token, as in poolstream.
    "qwen3": Family("Qwen3", from_real("Qwen3Config", test_qwen.QWEN3_EMBEDDING,
                                       lambda tok: {"pad_token_id": tok.token_to_id("<|im_end|>")}),
                    test_qwen.qwen_tokenizer,
                    {**test_qwen.TOKENIZER_KWARGS, "pad_token": "<|im_end|>", "padding_side": "right"}),
    # Nomic has two token types: pair prompts (score) use them, as BERT cross-encoders do.
    "nomic_bert": Family("NomicBert", lambda tok, extra: test_rotary_bert.nomic_config(**extra),
                         test_rotary_bert.bert_tokenizer, test_rotary_bert.BERT_TOKENIZER_KWARGS),
    "gte": Family("Gte", lambda tok, extra: test_rotary_bert.gte_config(**extra),
                  test_rotary_bert.bert_tokenizer, test_rotary_bert.BERT_TOKENIZER_KWARGS),
}
LABELS = {0: "negative", 1: "neutral", 2: "positive"}


def build(family: str, head: str, tmp: Path, seed: int = 0, **extra: Any) -> tuple[Path, Any]:
    import transformers

    f = FAMILIES[family]
    tok = f.tokenizer()
    config = f.config(tok, extra)
    torch.manual_seed(seed)
    model = init_weights(getattr(transformers, f.prefix + head)(config), seed=seed)
    path = save_model_dir(tmp / f"{family}-{head}", model, tok, pooling=None, max_seq_length=MAX_LEN,
                          tokenizer_kwargs=f.tokenizer_kwargs)
    return path, model


def hf_alone(path: Path, model: Any, prompts: list[Any]) -> list[torch.Tensor]:
    """transformers' output for each prompt alone (tokenized by transformers, truncated)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    outs = []
    for p in prompts:
        args = p if isinstance(p, tuple) else (p,)
        enc = tok(*args, truncation=True, max_length=MAX_LEN, return_tensors="pt")
        if "token_type_ids" not in inspect.signature(model.forward).parameters:
            enc.pop("token_type_ids", None)
        with torch.inference_mode():
            out = model(**enc)
        outs.append((out.logits if hasattr(out, "logits") else out.last_hidden_state)[0])
    return outs


@pytest.mark.parametrize("family", sorted(FAMILIES))
async def test_score_matches_cross_encoder(tmp_path, family):
    from sentence_transformers import CrossEncoder

    path, _ = build(family, "ForSequenceClassification", tmp_path, num_labels=1)
    prompts = [{"prompt": q, "text_pair": d} for q, d in PAIRS]
    scores, outs = await engine_outputs(path, prompts, PoolingParams(task="score"))
    raw, _ = await engine_outputs(path, prompts, PoolingParams(task="score", use_activation=False))
    assert any(o.truncated for o in outs)
    ce = CrossEncoder(str(path), device="cpu", max_length=MAX_LEN)
    assert max_diff(scores[:, 0], ce.predict(PAIRS, convert_to_tensor=True)) < TOL  # sigmoid, as CrossEncoder
    assert max_diff(raw[:, 0], ce.predict(PAIRS, activation_fn=torch.nn.Identity(), convert_to_tensor=True)) < TOL


@pytest.mark.parametrize("family", sorted(FAMILIES))
async def test_classify_matches_transformers(tmp_path, family):
    path, model = build(family, "ForSequenceClassification", tmp_path, seed=1, num_labels=3, id2label=LABELS,
                        label2id={v: k for k, v in LABELS.items()})
    spec = load_native(path).spec()
    assert spec.default_task == "classify" and spec.labels == ("negative", "neutral", "positive")
    assert set(spec.tasks) == {"embed", "token_embed", "classify", "score"}
    probs, _ = await engine_outputs(path, TEXTS)  # the default task
    raw, _ = await engine_outputs(path, TEXTS, PoolingParams(task="classify", use_activation=False))
    ref = torch.stack(hf_alone(path, model, TEXTS))
    assert max_diff(raw, ref) < TOL
    assert max_diff(probs, ref.softmax(-1)) < TOL


@pytest.mark.parametrize("family", sorted(FAMILIES))
async def test_token_classify_matches_transformers(tmp_path, family):
    path, model = build(family, "ForTokenClassification", tmp_path, seed=2, num_labels=5)
    assert load_native(path).spec().default_task == "token_classify"
    _, outs = await engine_outputs(path, TEXTS, PoolingParams(task="token_classify", use_activation=False))
    for out, ref in zip(outs, hf_alone(path, model, TEXTS)):
        assert max_diff(out.outputs.data, ref) < TOL


@pytest.mark.parametrize("family", sorted(FAMILIES))
async def test_token_embed_matches_transformers(tmp_path, family):
    path, model = build(family, "Model", tmp_path, seed=3)
    _, outs = await engine_outputs(path, TEXTS, PoolingParams(task="token_embed", normalize=False))
    for out, ref in zip(outs, hf_alone(path, model, TEXTS)):
        assert max_diff(out.outputs.data, ref) < TOL
