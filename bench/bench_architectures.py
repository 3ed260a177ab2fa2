"""Native architectures against sentence-transformers, side by side, per architecture and task.

    .venv/bin/python bench/bench_architectures.py --save

For every native architecture, a randomly initialised model is built with
``transformers`` from the family's real config (as in tests/models), at
all-MiniLM-L6 scale (hidden 384, 6 layers; see SCALE) so the whole table runs
in minutes on two shared cores, and saved as a model directory. Then, in this
process, interleaved over ``--rounds`` rounds:

- embed: sentence-transformers ``SentenceTransformer.encode(batch_size=32)``
  vs poolstream's model (tokenize + forward + pool + normalise, batches of 32
  sorted by length, as sentence-transformers sorts);
- score: ``CrossEncoder.predict`` on (query, document) pairs vs poolstream's
  ``forward_task("score")`` + sigmoid, same batching;
- classify (3 labels, on the same pairs, as NLI cross-encoders classify):
  ``CrossEncoder.predict`` vs ``forward_task("classify")`` + softmax.

Both sides run with the same torch threads. The outputs are compared too
(max |diff|), so a fast wrong path would show. Throughput is the median over
rounds; the ratio is the median of per-round ratios (the machine is shared:
compare ratios, not absolute figures). Markdown to stdout and, with
``--save``, to bench/results/.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from sentences import sentences  # noqa: E402

from poolstream.engine.processor import load_tokenizer  # noqa: E402
from poolstream.models.model_dir import read_model_dir  # noqa: E402
from poolstream.models.registry import resolve_model_class  # noqa: E402
from tests.models import test_architecture_tasks as tasks  # noqa: E402
from tests.models import test_rotary_bert  # noqa: E402
from tests.models import tiny  # noqa: E402
from tests.models.tiny import init_weights, save_model_dir  # noqa: E402

# all-MiniLM-L6 scale per family (the real configs' other values unchanged).
SCALE: dict[str, dict[str, Any]] = {
    "xlm_roberta": {"hidden_size": 384, "num_attention_heads": 12, "intermediate_size": 1536,
                    "num_hidden_layers": 6},
    "mpnet": {"hidden_size": 384, "num_attention_heads": 12, "intermediate_size": 1536, "num_hidden_layers": 6},
    "modernbert": {"hidden_size": 384, "num_attention_heads": 6, "intermediate_size": 576, "num_hidden_layers": 6,
                   "local_attention": 128},
    "qwen3": {"hidden_size": 384, "num_attention_heads": 6, "num_key_value_heads": 2, "head_dim": 64,
              "intermediate_size": 1024, "num_hidden_layers": 6},
    "nomic_bert": {"hidden_size": 384, "num_attention_heads": 12, "intermediate_size": 1536,
                   "num_hidden_layers": 6},
    "gte": {"hidden_size": 384, "num_attention_heads": 12, "intermediate_size": 1536, "num_hidden_layers": 6},
}
POOLING = {"qwen3": "last", "modernbert": "mean"}
MAX_LEN = 128


def build(family: str, head: str, out: Path, **extra: Any) -> Path:
    import transformers

    f = tasks.FAMILIES[family]
    tok = f.tokenizer()
    config = f.config(tok, {**SCALE[family], **extra})
    torch.manual_seed(0)
    model = init_weights(getattr(transformers, f.prefix + head)(config))
    pooling = POOLING.get(family, "cls") if head == "Model" else None
    kwargs = dict(f.tokenizer_kwargs)
    if family in ("nomic_bert", "gte"):
        kwargs = dict(test_rotary_bert.BERT_TOKENIZER_KWARGS)
    return save_model_dir(out / f"{family}-{head}", model, tok, pooling=pooling, max_seq_length=MAX_LEN,
                          tokenizer_kwargs={**kwargs, "padding_side": "right"})


class Native:
    """poolstream's model, called directly: tokenize, collate right-padded, forward, activation."""

    def __init__(self, path: Path):
        mdir = read_model_dir(path)
        self.model = resolve_model_class(mdir.architecture).load(path, mdir.hf_config, torch.device("cpu"),
                                                                 torch.float32)
        self.tok = load_tokenizer(mdir.tokenizer_file)
        assert self.tok is not None
        self.tok.enable_truncation(self.model.spec().max_model_len)
        self.types = self.model.spec().token_type_ids

    def run(self, task: str, items: list[Any], batch_size: int = 32) -> torch.Tensor:
        encs = self.tok.encode_batch(items)
        order = sorted(range(len(items)), key=lambda i: -len(encs[i].ids))
        out: list[torch.Tensor | None] = [None] * len(items)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                seq = max(len(encs[i].ids) for i in idx)
                ids = torch.zeros(len(idx), seq, dtype=torch.int64)
                mask = torch.zeros(len(idx), seq, dtype=torch.int64)
                types = torch.zeros(len(idx), seq, dtype=torch.int64) if self.types and task != "embed" else None
                for row, i in enumerate(idx):
                    n = len(encs[i].ids)
                    ids[row, :n] = torch.tensor(encs[i].ids)
                    mask[row, :n] = 1
                    if types is not None:
                        types[row, :n] = torch.tensor(encs[i].type_ids)
                y = self.model.forward_task(task, ids, mask, types)
                if task == "embed":
                    y = torch.nn.functional.normalize(y, dim=-1)
                elif task == "score":
                    y = torch.sigmoid(y)
                else:
                    y = y.softmax(-1)
                for row, i in enumerate(idx):
                    out[i] = y[row]
        return torch.stack(out)  # type: ignore[arg-type]


def reference(path: Path, task: str) -> Callable[[list[Any]], torch.Tensor]:
    from sentence_transformers import CrossEncoder, SentenceTransformer

    if task == "embed":
        st = SentenceTransformer(str(path), device="cpu")
        return lambda items: st.encode(items, batch_size=32, convert_to_tensor=True, normalize_embeddings=True)
    ce = CrossEncoder(str(path), device="cpu", max_length=MAX_LEN)
    act = torch.nn.Sigmoid() if task == "score" else torch.nn.Softmax(dim=-1)
    return lambda items: ce.predict(items, batch_size=32, convert_to_tensor=True, activation_fn=act)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=256, help="sentences (or pairs) per run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--families", default=",".join(SCALE))
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--save", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    # The families' tokenizers are trained on tiny.CORPUS: add the benchmark's words so that
    # they tokenize into whole-word pieces, as the published tokenizers would.
    tiny.CORPUS = tiny.CORPUS + sentences(200, seed=99)
    tiny.train_tokenizer.__defaults__ = (2000,)  # vocab_size: room for every benchmark word
    texts = sentences(args.n, seed=1)
    docs = sentences(args.n, seed=2)
    pairs = list(zip(texts, docs))
    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-arch-") as tmp:
        for family in args.families.split(","):
            for task, head, extra in (("embed", "Model", {}),
                                      ("score", "ForSequenceClassification", {"num_labels": 1}),
                                      ("classify", "ForSequenceClassification", {"num_labels": 3})):
                path = build(family, head, Path(tmp) / task, **extra)
                native, ref = Native(path), reference(path, task)
                items = texts if task == "embed" else pairs
                ours_rates, ref_rates, ratios = [], [], []
                diff = 0.0
                for _ in range(args.rounds):
                    t0 = time.perf_counter()
                    a = native.run(task, items)
                    t1 = time.perf_counter()
                    b = ref(items).float()
                    t2 = time.perf_counter()
                    ours_rates.append(len(items) / (t1 - t0))
                    ref_rates.append(len(items) / (t2 - t1))
                    ratios.append((t2 - t1) / (t1 - t0))
                    diff = max(diff, (a.reshape(b.shape) - b).abs().max().item())
                arch = read_model_dir(path).architecture
                rows.append((arch, task, statistics.median(ours_rates), statistics.median(ref_rates),
                             statistics.median(ratios), diff))
                print(f"{arch:40s} {task:9s} native {rows[-1][2]:7.1f}/s  reference {rows[-1][3]:7.1f}/s  "
                      f"x{rows[-1][4]:.2f}  max|diff| {diff:.1e}", file=sys.stderr, flush=True)
    md = [
        "## Native architectures vs sentence-transformers (cpu, float32)",
        "",
        f"- {args.n} sentences (or pairs) of 5-40 words, batches of 32, {args.rounds} interleaved rounds; "
        f"rates are medians, speed-up the median of per-round ratios; torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs, torch threads {args.threads}, Python {platform.python_version()}",
        "- random models at all-MiniLM-L6 scale (hidden 384, 6 layers) from each family's real config "
        f"(bench/bench_architectures.py SCALE), max {MAX_LEN} tokens; tokenizers trained on a small corpus "
        "(tests/models/tiny.py), so token counts differ from the published models'",
        f"- load average before/after: {load_before:.2f} / {os.getloadavg()[0]:.2f}: the machine is shared "
        "with other work, so absolute figures are noisy; compare the ratios within this run",
        "- reference: SentenceTransformer.encode (embed), CrossEncoder.predict (score: sigmoid; classify: "
        "softmax); max |diff| is poolstream's output against it in that run",
        "",
        "| architecture | task | poolstream native /s | sentence-transformers /s | speed-up | max abs diff |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for arch, task, ours, ref_rate, ratio, diff in rows:
        md.append(f"| {arch} | {task} | {ours:.1f} | {ref_rate:.1f} | {ratio:.2f}x | {diff:.1e} |")
    text = "\n".join(md) + "\n"
    print(text)
    if args.save:
        out = HERE / "results" / time.strftime("%Y%m%d-%H%M%S-architectures-cpu.md")
        out.write_text(text + "\ncommand: `.venv/bin/python bench/bench_architectures.py --save`\n")
        print(f"saved {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
