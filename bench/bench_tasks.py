"""Task benchmark: cross-encoder scoring and SPLADE, poolstream's native BERT paths against
sentence-transformers (CrossEncoder, SparseEncoder) and poolstream's transformers fallback.

    .venv/bin/python bench/bench_tasks.py [--n 512] [--rounds 3] [--save]

Models: the all-MiniLM-L6-v2 architecture (6 layers, hidden 384, BERT vocab) with random
weights, saved as the two kinds of directory users serve: a BertForSequenceClassification
cross-encoder (the shape of cross-encoder/ms-marco-MiniLM-L6-v2) and a BertForMaskedLM
SparseEncoder (MLMTransformer + SpladePooling). Random weights cost what trained ones do.

Paths, all in this process on the same texts, batches of 32 in the order given:
- score: CrossEncoder.predict  vs  native BertEmbeddingModel.forward_task("score") + sigmoid
  vs  TransformersModel (the fallback) likewise; tokenization included in each;
- embed_sparse: SparseEncoder.encode  vs  native  vs  fallback.
Each figure is the median of --rounds interleaved rounds (pairs or texts per second).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from sentences import sentences  # noqa: E402

from poolstream.config import default_model_path  # noqa: E402
from poolstream.engine.processor import load_tokenizer  # noqa: E402
from poolstream.models.bert import BertEmbeddingModel  # noqa: E402
from poolstream.models.model_dir import read_model_dir  # noqa: E402
from poolstream.models.transformers_backend import TransformersModel  # noqa: E402

BATCH = 32
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def build(tmp: Path, architecture: str) -> Path:
    import transformers

    cfg = json.loads((Path(default_model_path()) / "config.json").read_text())
    cfg.pop("transformers_version", None)
    cfg.pop("architectures", None)
    config = transformers.BertConfig(**cfg, num_labels=1)
    config.architectures = [architecture]
    torch.manual_seed(0)
    getattr(transformers, architecture)(config).eval().save_pretrained(str(tmp), safe_serialization=True)
    for name in _TOKENIZER_FILES:
        shutil.copy(Path(default_model_path()) / name, tmp / name)
    return tmp


def load(cls, path: Path):
    d = read_model_dir(path)
    return cls.load(path, d.hf_config, torch.device("cpu"), torch.float32)


def batches(items: list, n: int = BATCH) -> list[list]:
    return [items[i:i + n] for i in range(0, len(items), n)]


def run_model(model, tok, max_len: int, task: str, inputs: list) -> None:
    """Tokenize (pairs or texts) and run one task on batches of 32, as the engine would."""
    tok.enable_truncation(max_len)
    for chunk in batches(inputs):
        encs = tok.encode_batch(chunk)
        seq = max(len(e.ids) for e in encs)
        ids = torch.zeros(len(encs), seq, dtype=torch.long)
        mask = torch.zeros_like(ids)
        types = torch.zeros_like(ids) if task == "score" else None
        for i, e in enumerate(encs):
            ids[i, : len(e.ids)] = torch.tensor(e.ids)
            mask[i, : len(e.ids)] = 1
            if types is not None:
                types[i, : len(e.ids)] = torch.tensor(e.type_ids)
        with torch.inference_mode():
            out = model.forward_task(task, ids, mask, types)
            if task == "score":
                torch.sigmoid(out)


def timed(fn, count: int) -> float:
    t0 = time.perf_counter()
    fn()
    return count / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--save", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from sentence_transformers import CrossEncoder, SparseEncoder
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling

    tmp = Path(tempfile.mkdtemp(prefix="bench-tasks-"))
    ce_dir = build(tmp / "ce", "BertForSequenceClassification")
    mlm_dir = build(tmp / "mlm", "BertForMaskedLM")
    sparse = SparseEncoder(modules=[MLMTransformer(str(mlm_dir), max_seq_length=256), SpladePooling()], device="cpu")
    sparse.save(str(tmp / "sparse"))
    ce = CrossEncoder(str(ce_dir), max_length=256, device="cpu")
    native_ce, fallback_ce = load(BertEmbeddingModel, ce_dir), load(TransformersModel, ce_dir)
    native_sp, fallback_sp = load(BertEmbeddingModel, tmp / "sparse"), load(TransformersModel, tmp / "sparse")
    tok = load_tokenizer(read_model_dir(ce_dir).tokenizer_file)
    queries, docs = sentences(args.n, seed=1, max_words=12), sentences(args.n, seed=2, min_words=20, max_words=60)
    pairs, texts = list(zip(queries, docs)), docs

    paths = {
        ("score", "sentence-transformers CrossEncoder"): lambda: ce.predict(pairs, batch_size=BATCH),
        ("score", "poolstream native"): lambda: run_model(native_ce, tok, 256, "score", pairs),
        ("score", "poolstream transformers fallback"): lambda: run_model(fallback_ce, tok, 256, "score", pairs),
        ("embed_sparse", "sentence-transformers SparseEncoder"): lambda: sparse.encode(texts, batch_size=BATCH),
        ("embed_sparse", "poolstream native"): lambda: run_model(native_sp, tok, 256, "embed_sparse", texts),
        ("embed_sparse", "poolstream transformers fallback"):
            lambda: run_model(fallback_sp, tok, 256, "embed_sparse", texts),
    }
    with torch.inference_mode():  # warm-up: one batch of each model
        ce.predict(pairs[:BATCH]), sparse.encode(texts[:BATCH])
        for model, task, items in ((native_ce, "score", pairs), (fallback_ce, "score", pairs),
                                   (native_sp, "embed_sparse", texts), (fallback_sp, "embed_sparse", texts)):
            run_model(model, tok, 256, task, items[:BATCH])
    rates: dict = {k: [] for k in paths}
    for _ in range(args.rounds):
        for key, fn in paths.items():
            rates[key].append(timed(fn, args.n))
    lines = [f"# Task benchmark ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
             f"`.venv/bin/python bench/bench_tasks.py --n {args.n} --rounds {args.rounds}`; CPU "
             f"{platform.processor() or platform.machine()}, {args.threads} torch threads, torch {torch.__version__}. "
             "all-MiniLM-L6 sized BERT (random weights), batches of 32, tokenization included. "
             "The machine was shared with other jobs: compare ratios within a task, not absolute numbers.", "",
             "| task | path | items/s (median) | vs sentence-transformers |", "|---|---|---:|---:|"]
    for task in ("score", "embed_sparse"):
        ref = next(statistics.median(v) for (t, name), v in rates.items() if t == task and "sentence" in name)
        for (t, name), v in rates.items():
            if t == task:
                lines.append(f"| {task} | {name} | {statistics.median(v):.1f} | {statistics.median(v) / ref:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.save:
        out = HERE / "results" / time.strftime("%Y%m%d-%H%M%S-tasks-cpu.md", time.gmtime())
        out.write_text(text)
        print(f"saved {out}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
