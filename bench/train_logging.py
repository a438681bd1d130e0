"""Training throughput with `--log tensorboard` against without it, side by side in one run (goal: within 2 %).

The same run (Fashion-MNIST, N images per class, the same student, seed and thread count) trains
alternately without a tracker and with TensorBoard, REPEATS times each, so load on the machine falls on
both alike. Per run: the wall-clock time of the whole `train()` call (opening the writer, every epoch's
scalars and flush, closing it) and the training loop's images/s (metrics.jsonl); the first epoch of each
run warms up and is left out of images/s. Prints the medians and their ratio. As the machine's load moves
both by more than 2 % (a shared CPU), the time spent inside the tracker (opening it, every epoch's call,
closing it: `train/loggers.py`, timed around its calls) is measured too, as a share of the run's wall time:
that share is the cost of logging, independent of the load.

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


TRACKER_SECONDS = [0.0]


def timed(fn):
    def wrapper(*a, **kw):
        t0 = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            TRACKER_SECONDS[0] += time.perf_counter() - t0

    return wrapper


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
    from makd_cli.train import engine, loggers

    engine.open_loggers = timed(loggers.open_loggers)  # fit's reference: the writer's start-up counts too
    loggers.EpochLoggers.log_epoch = timed(loggers.EpochLoggers.log_epoch)
    loggers.EpochLoggers.close = timed(loggers.EpochLoggers.close)
    runs = {"none": [], "tensorboard": []}
    shares = []
    with tempfile.TemporaryDirectory() as tmp:
        one_run(Path(tmp) / "warm-up", [], args)  # the dataset's first decode and the first allocations, not timed
        for k in range(args.repeats):
            for name in runs:  # alternate, so a burst of load on the machine hits both
                TRACKER_SECONDS[0] = 0.0
                runs[name].append(one_run(Path(tmp) / f"{name}-{k}", [] if name == "none" else [name], args))
                if name != "none":
                    shares.append(TRACKER_SECONDS[0] / runs[name][-1][0])
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
    print(f"time inside the TensorBoard tracker: {100 * statistics.median(shares):.2f} % of the run's wall time "
          f"(median; max {100 * max(shares):.2f} %)")


if __name__ == "__main__":
    main()
