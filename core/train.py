"""Train the chest X-ray classifier: ``python -m core.train --data DIR --out models/NAME.safetensors``.

Seeded; patient-level train/validation split; class imbalance handled by a weighted loss;
X-ray-suited augmentation (rotations, shifts, crops and zoom, gamma, brightness/contrast, blur, noise; no
flips that would move the heart); an exponential moving average of the weights; the checkpoint kept is the
best epoch by ROC AUC on the selection set (the validation fold, or ``--external`` new patients, recorded in
the metadata). Images are decoded once into memory.
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
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchvision.transforms import v2
from tqdm import tqdm

from core.data import CLASS_NAMES, data_dir, index_folder, load_tensors, patient_id, patient_split, split_digest
from core.distill import distillation_loss, ensemble_logits
from core.evaluate import binary_metrics
from core.nets import WideResNet18
from core.zoo import (
    DISCLAIMER,
    Preprocessing,
    instantiate,
    read_checkpoint_config,
    save_checkpoint,
    spec_from_checkpoint,
)


class RandomGamma(v2.Transform):
    """Gamma jitter x ** exp(u), u ~ U(-r, r): film exposure and post-processing curves differ between sites."""

    def __init__(self, log_range: float) -> None:
        super().__init__()
        self.log_range = log_range

    def transform(self, inpt: torch.Tensor, params: dict) -> torch.Tensor:
        """Raise the image (in [0, 1]) to a random power."""
        gamma = float(torch.empty(()).uniform_(-self.log_range, self.log_range).exp())
        return inpt.clamp(0, 1) ** gamma


def augmentation(seed: int, size: int, strength: str = "strong") -> v2.Transform:
    """Per-image geometric and photometric jitter that keeps chest anatomy plausible.

    ``basic`` is the first bundled model's recipe; ``strong`` adds random resized crops, gamma, blur and noise,
    the variation between hospitals and periods that a validation fold from the training period does not show.
    """
    torch.manual_seed(seed)
    if strength == "basic":
        return v2.Compose([
            v2.RandomAffine(degrees=8, translate=(0.06, 0.06), scale=(0.92, 1.1)),
            v2.RandomApply([v2.ColorJitter(brightness=0.2, contrast=0.2)], p=0.8),
        ])
    return v2.Compose([
        v2.RandomApply([v2.RandomResizedCrop(size, scale=(0.7, 1.0), ratio=(0.85, 1.18), antialias=True)], p=0.7),
        v2.RandomAffine(degrees=10, translate=(0.06, 0.06), scale=(0.9, 1.1)),
        v2.RandomApply([v2.ColorJitter(brightness=0.3, contrast=0.3)], p=0.8),
        v2.RandomApply([RandomGamma(0.35)], p=0.5),
        v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 1.5))], p=0.25),
        v2.RandomApply([v2.GaussianNoise(sigma=0.03, clip=True)], p=0.25),
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


def _plain(value: object) -> object:
    """A recipe value as JSON: paths (also in lists) become strings."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def load_teacher(path: Path, mean: float, std: float, size: int) -> nn.Module:
    """A frozen teacher checkpoint that must read the student's input exactly (same size and normalisation)."""
    spec = spec_from_checkpoint(path)
    prep = spec.preprocessing
    if prep.size != size or prep.channels != 1 or not np.allclose([*prep.mean, *prep.std], [mean, std], atol=1e-4):
        raise SystemExit(f"teacher {path} reads {prep.channels}x{prep.size} px normalised with mean {prep.mean} "
                         f"std {prep.std}; the student reads 1x{size} px with mean {mean:.4f} std {std:.4f}")
    teacher = instantiate(spec, torch.device("cpu")).model.eval()
    teacher.requires_grad_(False)
    return teacher


def teacher_lineage(path: Path) -> dict:
    """What a teacher checkpoint was trained with, its own teachers' lineage included: a student distilled from a
    chain of students carries every recipe that reproduces it, not just a path that may since hold other weights."""
    config = read_checkpoint_config(path)
    return {"file": Path(path).name, "recipe": config.get("recipe", {}), "epoch": config.get("epoch"),
            "teachers": config.get("teachers", [])}


def train(args: argparse.Namespace) -> dict:
    """Run training and write the best checkpoint; returns its metrics on validation (and new patients)."""
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    index = index_folder(args.data, CLASS_NAMES)
    if args.limit:
        keep = np.random.default_rng(args.split_seed).permutation(len(index))[: args.limit]
        index = index.subset(np.sort(keep))
    train_idx, val_idx = patient_split(index, args.val_fraction, args.split_seed)
    external = index_folder(args.external, CLASS_NAMES) if args.external else None
    if args.select == "external" and external is None:
        raise SystemExit("--select external needs --external DIR (a folder of new patients).")
    # Decode once at model size in [0, 1]; augment, then normalise with the training set's statistics.
    raw = Preprocessing(args.size, 1, (0.0,), (1.0,))
    x_train, x_val = load_tensors(train_idx, raw), load_tensors(val_idx, raw)
    mean, std = float(x_train.mean()), float(x_train.std())
    y_train = torch.from_numpy(train_idx.labels)
    scored = {"validation": (val_idx, (x_val - mean) / std)}
    if external is not None:
        scored["external"] = (external, (load_tensors(external, raw) - mean) / std)

    model = WideResNet18(width=args.width, in_channels=1, num_classes=len(CLASS_NAMES))
    teachers = [load_teacher(path, mean, std, args.size) for path in args.teacher]
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(args.ema), use_buffers=True) if args.ema else None
    counts = np.bincount(train_idx.labels, minlength=2)
    class_weight = torch.tensor(len(y_train) / (2.0 * counts), dtype=torch.float32)
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = int(np.ceil(len(y_train) / args.batch_size))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, args.lr, total_steps=args.epochs * steps_per_epoch,
                                                   pct_start=0.15)
    transform = augmentation(args.seed, args.size, args.augment)
    generator = torch.Generator().manual_seed(args.seed)
    best: dict = {"score": -1.0}
    history: list[float] = []
    stale, started = 0, time.time()
    config = {
        "architecture": "resnet18", "width": args.width, "channels": 1, "input_size": args.size,
        "mean": [mean], "std": [std], "class_names": list(CLASS_NAMES),
        "seed": args.split_seed,  # the split's seed: zoo rebuilds the validation fold from it
        "val_fraction": args.val_fraction, "limit": args.limit, "val_digest": split_digest(val_idx),
        "recipe": {k: _plain(v) for k, v in vars(args).items() if k not in ("out", "data")},
        "teachers": [teacher_lineage(path) for path in args.teacher],
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
                logits = model(xb)
                if teachers:
                    loss = distillation_loss(logits.float(), ensemble_logits(teachers, xb), y_train[idx],
                                             args.temperature, args.distill_weight, class_weight,
                                             args.label_smoothing)
                else:
                    loss = F.cross_entropy(logits, y_train[idx], weight=class_weight,
                                           label_smoothing=args.label_smoothing)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            if ema is not None:
                ema.update_parameters(model)
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        history.append(float(np.mean(losses)))
        kept = ema.module if ema is not None else model
        metrics = {name: binary_metrics(idx.labels, predict_proba(kept, x)) for name, (idx, x) in scored.items()}
        print(f"epoch {epoch}: loss {history[-1]:.4f} " + " | ".join(
            f"{name} auc {m['roc_auc']:.4f} acc {m['accuracy']:.4f} sens {m['sensitivity']:.4f} "
            f"spec {m['specificity']:.4f}" for name, m in metrics.items()) + f" ({time.time() - started:.0f} s)",
            flush=True)
        score = metrics[args.select]["roc_auc"]
        if score > best["score"]:
            best = {"score": score, "epoch": epoch, "selected_on": args.select, **metrics}
            stale = 0
            if args.out:
                save_checkpoint(kept, Path(args.out), {**config, **{k: v for k, v in best.items() if k != "score"}})
        else:
            stale += 1
            if stale >= args.patience:
                print(f"early stop: no {args.select} AUC gain for {args.patience} epochs")
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
    p.add_argument("--augment", choices=("basic", "strong"), default="strong")
    p.add_argument("--ema", type=float, default=0.99,
                   help="weight EMA decay per step (0 = off; 0.99: half-life 69 steps)")
    p.add_argument("--external", type=Path, help="new-patient folder scored every epoch (e.g. chest_xray/external)")
    p.add_argument("--select", choices=("validation", "external"), default="validation",
                   help="data set whose ROC AUC picks the kept epoch (its numbers are then optimistic)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--teacher", type=Path, nargs="+", default=[],
                   help="checkpoints whose averaged probabilities the student also learns from (distillation)")
    p.add_argument("--temperature", type=float, default=4.0, help="distillation temperature T")
    p.add_argument("--distill-weight", type=float, default=0.7, help="weight of the teacher term (alpha)")
    p.add_argument("--seed", type=int, default=0, help="initialisation, batch order and augmentation")
    p.add_argument("--split-seed", type=int, default=0,
                   help="patient-level validation split (keep it fixed across ensemble members: one held-out fold)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps(train(args), indent=2))


if __name__ == "__main__":
    main()
