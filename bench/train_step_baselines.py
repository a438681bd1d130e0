"""Training-step time of the KD-family baselines side by side: ce, kd, dkd, mlkd with one view and
with the reference's two views (weak + RandAugment strong view), through `makd train` itself.

Every method trains the same student on the same synthetic images (random PNGs, 10 classes) with a
frozen teacher checkpoint of the same architecture; the step time is an epoch's training time (data
loading and augmentation in the main process, forward, loss, backward, SGD) over its steps. Methods
run round-robin, ``--rounds`` times, each run one warm-up epoch and one timed epoch, so load from other
jobs on the machine spreads over all of them; the median per method is printed, and its ratio to ce
(the median of the per-round ratios).

    OMP_NUM_THREADS=1 .venv/bin/python bench/train_step_baselines.py [--student small_cnn] [--size 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from makd_cli.train import TrainConfig, train

METHODS = (("ce", {}), ("kd", {}), ("dkd", {}), ("mlkd, 1 view", {"mlkd_views": 1}), ("mlkd, 2 views", {}))


def synthetic_imagefolder(root: Path, classes: int, per_class: int, size: int) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        d = root / "train" / f"class{c}"
        d.mkdir(parents=True)
        (root / "test" / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(d / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / "test" / f"class{c}" / "0.png")
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student", default="small_cnn")
    ap.add_argument("--size", type=int, default=32, help="image side in pixels")
    ap.add_argument("--per-class", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = str(synthetic_imagefolder(tmp / "data", 10, args.per_class, args.size))
        common = dict(data=data, student=args.student, batch_size=args.batch_size, image_size=args.size, val_fraction=0.0,
                      device=args.device, quiet=True, workers=0, lr=0.001, milestones=[100])
        train(TrainConfig(out=str(tmp / "teacher"), epochs=1, **common))
        teacher = str(tmp / "teacher" / "best.pt")
        steps = (10 * args.per_class) // args.batch_size
        times: dict[str, list[float]] = {name: [] for name, _ in METHODS}
        for r in range(args.rounds):
            for name, extra in METHODS:
                method = name.split(",")[0]
                result = train(TrainConfig(out=str(tmp / f"{r}-{name}"), method=method, epochs=2,
                                           teacher_ckpt=None if method == "ce" else teacher, options=dict(extra), **common))
                times[name].append(result["history"][1]["seconds"] / steps)  # epoch 1 warms up
    print(f"student {args.student}, {args.size} px, batch {args.batch_size}, {steps} steps per timed epoch, "
          f"{args.rounds} rounds, {torch.get_num_threads()} thread(s), {args.device}, torch {torch.__version__}, "
          f"{platform.machine()}")
    def ratio(a: str, b: str) -> float:
        # per round, then the median: the methods of one round ran back to back under the same load
        return statistics.median(x / y for x, y in zip(times[a], times[b]))

    print(f"{'method':<15} {'ms/step':>8} {'x ce':>6}   runs (ms/step)")
    for name, _ in METHODS:
        print(f"{name:<15} {statistics.median(times[name]) * 1e3:8.1f} {ratio(name, 'ce'):6.2f}   "
              f"{', '.join(f'{t * 1e3:.1f}' for t in times[name])}")
    print(f"mlkd two views / one view: {ratio('mlkd, 2 views', 'mlkd, 1 view'):.2f}")


if __name__ == "__main__":
    main()
