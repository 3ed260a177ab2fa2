#!/usr/bin/env python3
"""Train the demo land / water / cloud model shipped in models/prithvi-water-demo.

Reproducible on CPU in a few minutes: every random choice comes from fixed
seeds (scene seeds, crop sampling, torch initialisation), and torch runs with
a fixed thread count and deterministic algorithms. Bit-identical weights need
the same torch build and CPU instruction set; on other machines results agree
to floating-point rounding.

    .venv/bin/python plugins/geotiff_segmentation/training/train.py \
        --out models/prithvi-water-demo

Data (see poolstream_geotiff.synthetic for the scene model):
- training: scenes with seeds 0 .. N_TRAIN-1 (320 x 320 px), a third of them
  with a missing-data swath edge; random crops of 96-160 px (multiples of the
  16 px patch), random flips and 90-degree rotations;
- validation: scenes with seeds 100000 .. 100007 (448 x 448 px), never seen
  in training; water / cloud IoU is printed and stored in config.json.
- normalisation: per-band mean and std over all valid training pixels.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve()
REPO = HERE.parents[3]
sys.path.insert(0, str(HERE.parents[1] / "src"))  # poolstream_geotiff without installing

from poolstream.models.prithvi import PrithviSegmentationModel  # noqa: E402
from poolstream_geotiff import synthetic  # noqa: E402

ARCH = {
    "num_bands": 6,
    "num_classes": 3,
    "patch_size": 16,
    "tile_size": 224,
    "embed_dim": 96,
    "depth": 4,
    "num_heads": 4,
    "mlp_ratio": 4.0,
    "decoder_channels": [64, 32, 16, 8],
    "stem_channels": 8,
    "fuse_channels": 16,
}
N_TRAIN = 96
TRAIN_SIZE = 320
VAL_SEEDS = range(100000, 100008)
VAL_SIZE = 448


def build_pool(n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    bands = np.empty((n, 6, size, size), np.int16)
    labels = np.empty((n, size, size), np.uint8)
    for i in range(n):
        s = synthetic.make_scene(size, size, seed=i, nodata_edge=(i % 3 == 2))
        bands[i], labels[i] = s.bands, s.label
    return bands, labels


def normalise(bands: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Same rule as the plugin: (x - mean) / std; missing pixels -> 0 (the mean)."""
    x = bands.astype(np.float32)
    missing = (bands == synthetic.NODATA).any(axis=-3, keepdims=True)
    x = (x - mean[:, None, None]) / std[:, None, None]
    return np.where(missing, 0.0, x).astype(np.float32)


def sample_batch(rng: np.random.Generator, bands: np.ndarray, labels: np.ndarray, batch: int,
                 size: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for _ in range(batch):
        i = int(rng.integers(len(bands)))
        y0, x0 = (int(v) for v in rng.integers(0, bands.shape[-1] - size + 1, size=2))
        x = bands[i, :, y0:y0 + size, x0:x0 + size]
        y = labels[i, y0:y0 + size, x0:x0 + size]
        k = int(rng.integers(4))
        x, y = np.rot90(x, k, axes=(1, 2)), np.rot90(y, k)
        if rng.random() < 0.5:
            x, y = x[:, :, ::-1], y[:, ::-1]
        xs.append(x)
        ys.append(y)
    return np.stack(xs), np.stack(ys)


@torch.inference_mode()
def evaluate(model: PrithviSegmentationModel, mean: np.ndarray, std: np.ndarray) -> dict[str, float]:
    model.eval()
    inter = np.zeros(3)
    union = np.zeros(3)
    correct = total = 0
    for seed in VAL_SEEDS:
        s = synthetic.make_scene(VAL_SIZE, VAL_SIZE, seed=seed)
        x = torch.from_numpy(normalise(s.bands, mean, std))[None]
        pred = model(x)[0].argmax(0).numpy()
        valid = s.label != synthetic.LABEL_NODATA
        for c in range(3):
            p, t = (pred == c) & valid, (s.label == c) & valid
            inter[c] += np.count_nonzero(p & t)
            union[c] += np.count_nonzero(p | t)
        correct += np.count_nonzero((pred == s.label) & valid)
        total += np.count_nonzero(valid)
    model.train()
    iou = inter / np.maximum(union, 1)
    return {"pixel_accuracy": correct / total, "iou_land": iou[0], "iou_water": iou[1], "iou_cloud": iou[2]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "models" / "prithvi-water-demo")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()

    bands, labels = build_pool(N_TRAIN, TRAIN_SIZE)
    valid = ~(bands == synthetic.NODATA).any(axis=1)  # [N, H, W]
    per_band = bands.transpose(1, 0, 2, 3)[:, valid].astype(np.float64)  # [6, n_valid]
    # Rounded as stored in config.json, so training and serving normalise identically.
    mean = per_band.mean(1).round(3).astype(np.float32)
    std = per_band.std(1).round(3).astype(np.float32)
    del per_band
    norm = np.stack([normalise(b, mean, std) for b in bands])  # [N, 6, H, W] float32
    labels = np.where(labels == synthetic.LABEL_NODATA, 255, labels).astype(np.int64)
    print(f"pool: {N_TRAIN} scenes in {time.time() - t0:.1f}s; mean {mean.round(1)} std {std.round(1)}")

    model = PrithviSegmentationModel(ARCH)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warmup = max(1, args.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * min(1.0, s / args.steps)))
    )
    sizes = (96, 128, 160)
    model.train()
    for step in range(args.steps):
        size = sizes[step % len(sizes)]
        x, y = sample_batch(rng, norm, labels, args.batch, size)
        logits = model(torch.from_numpy(x.copy()))
        loss = F.cross_entropy(logits, torch.from_numpy(y.copy()), ignore_index=255)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:4d} loss {loss.item():.4f} lr {sched.get_last_lr()[0]:.2e} {time.time() - t0:.0f}s",
                  flush=True)
    metrics = evaluate(model, mean, std)
    elapsed = time.time() - t0
    print("validation:", {k: round(v, 4) for k, v in metrics.items()}, f"total {elapsed:.0f}s")

    from safetensors.torch import save_file

    args.out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(args.out / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "architectures": ["PrithviSegmentationModel"],
        "model_type": "prithvi_segmentation",
        "io_processor_plugin": "geotiff_segmentation",
        **ARCH,
        "band_names": list(synthetic.BAND_NAMES),
        "class_names": list(synthetic.CLASS_NAMES),
        "positive_class": synthetic.WATER,
        "mean": [float(v) for v in mean.astype(np.float64).round(3)],
        "std": [float(v) for v in std.astype(np.float64).round(3)],
        "input_units": "surface reflectance x 10000 (HLS scaling)",
        "torch_dtype": "float32",
        "max_raster_pixels": 8192 * 8192,
        "training": {
            "script": "plugins/geotiff_segmentation/training/train.py",
            "data": (
                f"synthetic scenes (poolstream_geotiff.synthetic.make_scene), seeds 0..{N_TRAIN - 1}, "
                f"{TRAIN_SIZE}x{TRAIN_SIZE} px, crops {list(sizes)} px with flips/rotations"
            ),
            "steps": args.steps,
            "batch": args.batch,
            "lr": args.lr,
            "seed": args.seed,
            "threads": args.threads,
            "torch": torch.__version__,
            "seconds": round(elapsed),
            "validation_seeds": f"{VAL_SEEDS.start}..{VAL_SEEDS.stop - 1} ({VAL_SIZE}x{VAL_SIZE} px)",
            "validation": {k: round(float(v), 4) for k, v in metrics.items()},
        },
    }
    (args.out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"wrote {args.out}")
    # What a different-seed, full-size check gives is in the plugin's tests.
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
