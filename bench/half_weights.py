"""Copy a model directory with its safetensors weights rounded to float16.

The GPU check ships the model to a machine that cannot download it, under a
size limit; half the bytes fit. The copy computes in any dtype (float32 runs
upcast the rounded weights), so poolstream and sentence-transformers still
compare like for like on it.

    .venv/bin/python bench/half_weights.py OUT_DIR [--model DIR]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

from poolstream.config import default_model_path

SKIP = {"README.md", "data_config.json", ".gitattributes", "model.safetensors"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--model", type=Path, default=None, help="default: the embedded all-MiniLM-L6-v2")
    args = ap.parse_args()
    src = args.model or Path(default_model_path())
    shutil.rmtree(args.out, ignore_errors=True)
    for path in src.rglob("*"):
        if path.is_file() and path.name not in SKIP:
            dst = args.out / path.relative_to(src)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, dst)
    weights = load_file(src / "model.safetensors")
    save_file({k: v.half().contiguous() if v.is_floating_point() else v for k, v in weights.items()},
              args.out / "model.safetensors", metadata={"format": "pt"})
    print(f"{args.out}: {sum(p.stat().st_size for p in args.out.rglob('*') if p.is_file()) / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
