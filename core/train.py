"""Train the chest X-ray classifier: ``python -m core.train --data DIR --out models/NAME.safetensors``.

Seeded; patient-level train/validation split; class imbalance handled by a weighted loss;
X-ray-suited augmentation (small rotations, shifts, zoom, brightness/contrast, no flips that would
move the heart); early stopping on validation ROC AUC. Images are decoded once into memory.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2
from tqdm import tqdm

from core.data import CLASS_NAMES, data_dir, index_folder, load_tensors, patient_id, patient_split, split_digest
from core.evaluate import binary_metrics
from core.nets import WideResNet18
from core.zoo import DISCLAIMER, Preprocessing, save_checkpoint


def augmentation(seed: int) -> v2.Transform:
    """Per-image geometric and photometric jitter that keeps chest anatomy plausible."""
    torch.manual_seed(seed)
    return v2.Compose([
        v2.RandomAffine(degrees=8, translate=(0.06, 0.06), scale=(0.92, 1.1)),
        v2.RandomApply([v2.ColorJitter(brightness=0.2, contrast=0.2)], p=0.8),
    ])


def augment_batch(x01: torch.Tensor, transform: v2.Transform) -> torch.Tensor:
    """Apply the transform to each image of a batch (values in [0, 1]) independently."""
    return torch.stack([transform(img) for img in x01])


@torch.no_grad()
def predict_proba(model: nn.Module, x: torch.Tensor, batch_size: int = 128) -> np.ndarray:
    """Positive-class probabilities for a preprocessed tensor, in batches."""
    model.eval()
    out = [torch.softmax(model(x[i:i + batch_size]), 1)[:, 1] for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy()


def train(args: argparse.Namespace) -> dict:
    """Run training and write the best checkpoint; returns its validation metrics."""
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    index = index_folder(args.data, CLASS_NAMES)
    if args.limit:
        keep = np.random.default_rng(args.seed).permutation(len(index))[: args.limit]
        index = index.subset(np.sort(keep))
    train_idx, val_idx = patient_split(index, args.val_fraction, args.seed)
    # Decode once at model size in [0, 1]; augment, then normalise with the training set's statistics.
    raw = Preprocessing(args.size, 1, (0.0,), (1.0,))
    x_train, x_val = load_tensors(train_idx, raw), load_tensors(val_idx, raw)
    mean, std = float(x_train.mean()), float(x_train.std())
    y_train = torch.from_numpy(train_idx.labels)
    x_val_n = (x_val - mean) / std

    model = WideResNet18(width=args.width, in_channels=1, num_classes=len(CLASS_NAMES))
    counts = np.bincount(train_idx.labels, minlength=2)
    class_weight = torch.tensor(len(y_train) / (2.0 * counts), dtype=torch.float32)
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = int(np.ceil(len(y_train) / args.batch_size))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, args.lr, total_steps=args.epochs * steps_per_epoch,
                                                   pct_start=0.15)
    transform = augmentation(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    best: dict = {"roc_auc": -1.0}
    history: list[float] = []
    stale, started = 0, time.time()
    config = {
        "architecture": "resnet18", "width": args.width, "channels": 1, "input_size": args.size,
        "mean": [mean], "std": [std], "class_names": list(CLASS_NAMES), "seed": args.seed,
        "val_fraction": args.val_fraction, "limit": args.limit, "val_digest": split_digest(val_idx),
        "description": f"ResNet-18 topology at width {args.width}, {args.size} px grayscale, "
                       f"trained from scratch on pediatric chest X-rays. {DISCLAIMER}",
    }
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = torch.randperm(len(y_train), generator=generator)
        losses = []
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}/{args.epochs}", leave=False)
        for step in bar:
            idx = order[step * args.batch_size:(step + 1) * args.batch_size]
            xb = (augment_batch(x_train[idx], transform) - mean) / std
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                loss = F.cross_entropy(model(xb), y_train[idx], weight=class_weight,
                                       label_smoothing=args.label_smoothing)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        history.append(float(np.mean(losses)))
        metrics = binary_metrics(val_idx.labels, predict_proba(model, x_val_n))
        print(f"epoch {epoch}: loss {np.mean(losses):.4f} val auc {metrics['roc_auc']:.4f} "
              f"acc {metrics['accuracy']:.4f} sens {metrics['sensitivity']:.4f} spec {metrics['specificity']:.4f} "
              f"({time.time() - started:.0f} s)", flush=True)
        if metrics["roc_auc"] > best["roc_auc"]:
            best = {**metrics, "epoch": epoch}
            stale = 0
            if args.out:
                save_checkpoint(model, Path(args.out), {**config, "validation": best})
        else:
            stale += 1
            if stale >= args.patience:
                print(f"early stop: no validation AUC gain for {args.patience} epochs")
                break
    best.update(loss_history=[round(v, 4) for v in history], seconds=round(time.time() - started, 1),
                n_train=len(train_idx), n_val=len(val_idx),
                train_patients=len(set(map(patient_id, train_idx.paths))),
                val_patients=len(set(map(patient_id, val_idx.paths))))
    return best


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; the defaults reproduce the bundled model."""
    default = data_dir()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=default, required=default is None,
                   help="folder with NORMAL/ and PNEUMONIA/ (default: $CNNLENS_DATA or ../shared/data)")
    p.add_argument("--out", type=Path, help="checkpoint path (.safetensors); best epoch by validation AUC")
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--label-smoothing", type=float, default=0.05)
    p.add_argument("--patience", type=int, default=8)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--limit", type=int, default=0, help="use a random subset of this many images (0 = all)")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                   help="bfloat16 autocast on CPU (fast on AMX/AVX-512 CPUs)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    args = parse_args(argv)
    print(json.dumps(train(args), indent=2))


if __name__ == "__main__":
    main()
