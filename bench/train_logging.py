"""Training throughput with `--log tensorboard` against without it, side by side in one run (goal: within 2 %).

The same run (Fashion-MNIST, N images per class, the same student, seed and thread count) trains
alternately without a tracker and with TensorBoard, REPEATS times each, so load on the machine falls on
both alike. Per run: the wall-clock time of the whole `train()` call (opening the writer, every epoch's
scalars and flush, closing it) and the training loop's images/s (metrics.jsonl); the first epoch of each
run warms up and is left out of images/s. Prints the medians and their ratio.

    .venv/bin/python bench/train_logging.py [--student small_cnn] [--per-class 100] [--epochs 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from makd_cli.train import TrainConfig, train


def one_run(out: Path, log: list[str], args) -> tuple[float, float]:
    cfg = TrainConfig(data="fashion-mnist", out=str(out), student=args.student, epochs=args.epochs, per_class=args.per_class,
                      batch_size=args.batch_size, device=args.device, quiet=True, log=log, workers=0)
    t0 = time.perf_counter()
    result = train(cfg)
    wall = time.perf_counter() - t0
    ips = statistics.mean(r["images_per_s"] for r in result["history"][1:])
    return wall, ips


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student", default="small_cnn")
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    runs = {"none": [], "tensorboard": []}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.repeats):
            for name in runs:  # alternate, so a burst of load on the machine hits both
                runs[name].append(one_run(Path(tmp) / f"{name}-{k}", [] if name == "none" else [name], args))
    print(f"{args.student}, Fashion-MNIST {args.per_class}/class, {args.epochs} epochs, batch {args.batch_size}, "
          f"{args.device}, {torch.get_num_threads()} threads, {args.repeats} runs each (medians)")
    print(f"{'--log':<14}{'wall s':>10}{'images/s':>12}")
    med = {}
    for name, values in runs.items():
        med[name] = (statistics.median(w for w, _ in values), statistics.median(i for _, i in values))
        print(f"{name:<14}{med[name][0]:>10.2f}{med[name][1]:>12.1f}")
    wall = med["tensorboard"][0] / med["none"][0]
    ips = med["tensorboard"][1] / med["none"][1]
    print(f"tensorboard / none: wall time x{wall:.3f}, images/s x{ips:.3f} (goal: within 2 %)")


if __name__ == "__main__":
    main()
