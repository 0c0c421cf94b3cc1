"""Training lab speed: one epoch of the default live run against the bare forward + backward of the same batches.

The live epoch (``core.lessons.training.LiveRun.epoch``) adds slicing and normalising the batches, the running
training numbers, and scoring the validation fold and external/ (new patients); the floor is the network's own
forward, loss, backward and optimiser step on the same pre-normalised batches, run round-robin with it on the same
threads. Targets: ratio <= 1.3 and an epoch <= 10 s on 2 cores.

    python -m bench.training_lab [--json] [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from bench.common import interleaved_medians, table
from core.lessons import training as T

TARGET_RATIO, TARGET_SECONDS = 1.3, 10.0


def measure(repeats: int) -> list[dict]:
    """Median seconds of a live epoch and of its bare training steps, with the live epoch's own split."""
    data = T.load_lab_data()
    settings = T.Settings()
    probe = T.LiveRun(data, settings)
    order = torch.randperm(len(probe.train), generator=torch.Generator().manual_seed(settings.seed))
    batches = [((probe.train.x[idx] - probe.mean) / probe.std, probe.train.y[idx])
               for idx in order.split(settings.batch_size)]
    records: list[T.EpochRecord] = []

    def live() -> None:
        records.append(T.LiveRun(data, settings).epoch(1))

    def bare() -> None:
        torch.manual_seed(settings.seed)
        model = T.build_model(settings.architecture, settings.width, settings.dropout, settings.batch_norm).train()
        optimiser = T.make_optimiser(settings.optimiser, model.parameters(), settings.lr, settings.weight_decay)
        for x, y in batches:
            loss = F.cross_entropy(model(x), y, weight=probe.weights)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()

    medians = interleaved_medians({"live epoch": live, "bare forward+backward": bare}, repeats)
    floor = medians["bare forward+backward"]
    last = records[-1]
    scored = len(data.validation) + (len(data.external) if data.external is not None else 0)
    common = {"threads": torch.get_num_threads(), "train films": len(probe.train), "scored films": scored}
    return [{"contestant": name, **common, "seconds": s, "ratio to bare": s / floor,
             "of which scoring": last.score_seconds if name == "live epoch" else None}
            for name, s in medians.items()]


def main() -> None:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = measure(args.repeats)
    if args.json:
        print(json.dumps(rows))
        return
    print(table(rows, list(rows[0])))
    live = rows[0]
    print(f"\nlive/bare {live['ratio to bare']:.2f}x (target <= {TARGET_RATIO}x); epoch {live['seconds']:.1f} s "
          f"(target <= {TARGET_SECONDS:.0f} s on 2 cores)")


if __name__ == "__main__":
    main()
