"""Every pooling task on CUDA through the engine, against the same engine on CPU and transformers.

    PYTHONPATH=service python3 bench/gpu_tasks_check.py [--device cuda]

Standalone on purpose (a bare GPU machine has torch/transformers but not the embedded
model or pytest-asyncio): tiny random BERT heads built here from a BERT config, token-id
prompts (no tokenizer needed) including pairs with token types. float32 on CUDA must match
CPU to 1e-4; float16 is reported (max abs difference). Exit 1 on a float32 mismatch.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

import torch

from poolstream.config import EngineConfig, ModelConfig, PoolstreamConfig
from poolstream.engine import AsyncEngine
from poolstream.pooling_params import PoolingParams

CFG = dict(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
           max_position_embeddings=512, type_vocab_size=2, initializer_range=0.2)
HEADS = {"BertForSequenceClassification": ("classify", "score"), "BertForTokenClassification": ("token_classify",),
         "BertForMaskedLM": ("embed_sparse",), "BertModel": ("embed", "token_embed")}


def build(tmp: Path, arch: str) -> Path:
    import transformers

    config = transformers.BertConfig(**CFG, num_labels=1 if arch.endswith("ForSequenceClassification") else 3)
    config.architectures = [arch]
    torch.manual_seed(0)
    model = getattr(transformers, arch)(config).eval()
    path = tmp / arch
    model.save_pretrained(str(path), safe_serialization=True)
    return path


def prompts(task: str) -> list:
    g = torch.Generator().manual_seed(1)
    out = []
    for n in (5, 17, 64, 3, 200):
        ids = [101] + torch.randint(1000, 30000, (n,), generator=g).tolist() + [102]
        if task == "score":
            pair = torch.randint(1000, 30000, (n // 2 + 1,), generator=g).tolist() + [102]
            out.append({"prompt_token_ids": ids + pair, "token_type_ids": [0] * len(ids) + [1] * len(pair)})
        else:
            out.append({"prompt_token_ids": ids})
    return out


async def run(path: Path, device: str, dtype: str, task: str) -> list[torch.Tensor]:
    config = PoolstreamConfig(ModelConfig.from_dir(path), EngineConfig(device=device, dtype=dtype, num_threads=1))
    engine = await asyncio.to_thread(AsyncEngine.from_config, config)
    await engine.start()
    try:
        outs = await asyncio.gather(*(engine.encode_one(p, PoolingParams(task=task), f"r{i}")
                                      for i, p in enumerate(prompts(task))))
    finally:
        await engine.shutdown()
    return [o.outputs.data if o.outputs.indices is None else
            torch.zeros(CFG["vocab_size"]).index_put_((o.outputs.indices,), o.outputs.data) for o in outs]


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    print("torch", torch.__version__, "cuda", torch.cuda.is_available() and torch.cuda.get_device_name(0))
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for arch, tasks in HEADS.items():
            path = build(Path(tmp), arch)
            for task in tasks:
                ref = await run(path, "cpu", "float32", task)
                got32 = await run(path, args.device, "float32", task)
                got16 = await run(path, args.device, "float16" if args.device != "cpu" else "float32", task)
                d32 = max(float((a - b).abs().max()) for a, b in zip(ref, got32))
                d16 = max(float((a - b).abs().max()) for a, b in zip(ref, got16))
                scale = max(float(a.abs().max()) for a in ref)
                ok = d32 <= 1e-4 * max(1.0, scale)
                bad += not ok
                print(f"{arch:32s} {task:15s} fp32 max|diff| {d32:.2e}  fp16 max|diff| {d16:.2e}  "
                      f"(max|value| {scale:.2e})  {'OK' if ok else 'MISMATCH'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
