"""Unseen-class recognition on Fashion-MNIST (issue 26): does the student read the teacher's knowledge
from the images, on classes it never trained on?

3 of the 10 classes held out (`--hold-out-classes 3`: Sandal, Shirt, Ankle boot), the demo's student
(small_cnn, 100 training images per class, 5 epochs), 3 seeds per row:

- oracle: MaKD on the hand-written attribute table (examples/fashion-mnist/attributes.h5);
- the same head and loss on random codes and on class-shuffled rows of that table (controls);
- with --embedded TARGETS: LaViD (lambda 5, as the demo) on the embedded model's class_mcq targets
  (the demo's work/targets.h5), and its random-codes control.

    PYTHONPATH=. OMP_NUM_THREADS=2 python bench/unseen_classes.py --work /tmp/unseen [--embedded work/targets.h5]

Prints the `makd eval --unseen` markdown table and the CPU seconds each row took; writes
WORK/unseen.json (every result).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ATTRIBUTES = HERE.parent / "examples" / "fashion-mnist" / "attributes.h5"


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    from makd_cli.evaluate.report import format_markdown
    from makd_cli.evaluate.run import EvalConfig, run_eval
    from makd_cli.evaluate.unseen import unseen_markdown
    from makd_cli.train import TrainConfig, train

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--hold-out", default="3")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--oracle-method", default="makd", choices=("makd", "lavid"))
    parser.add_argument("--embedded", type=Path, default=None, help="the embedded model's class_mcq targets (the demo's work/targets.h5)")
    args = parser.parse_args()

    rows = [(f"oracle-{args.oracle_method}", args.oracle_method, ATTRIBUTES, None)]
    rows += [(f"oracle-{args.oracle_method}-{c}", args.oracle_method, ATTRIBUTES, c) for c in ("random-codes", "shuffled")]
    if args.embedded:
        rows += [("embedded-lavid", "lavid", args.embedded, None), ("embedded-lavid-random-codes", "lavid", args.embedded, "random-codes")]
    runs, seconds = [], {}
    for name, method, targets, control in rows:
        start, wall = cpu_seconds(), time.time()
        for seed in range(args.seeds):
            out = args.work / name / f"seed{seed}"
            if not (out / "best.pt").exists():
                train(TrainConfig(data="fashion-mnist", out=str(out), method=method, targets=str(targets), control=control,
                                  student="small_cnn", epochs=args.epochs, per_class=args.per_class, seed=seed, quiet=True,
                                  device="cpu", hold_out_classes=args.hold_out, aux_weight=5.0 if method == "lavid" else None))
            runs.append(out)
        found_start = cpu_seconds()
        run_eval(EvalConfig(checkpoints=[args.work / name], unseen=True, progress=False, device="cpu"))
        seconds[name] = {"train_and_eval_cpu_s": round(cpu_seconds() - start, 1), "eval_cpu_s": round(cpu_seconds() - found_start, 1),
                         "wall_s": round(time.time() - wall, 1)}
        print(name, seconds[name], flush=True)
    found = run_eval(EvalConfig(checkpoints=[args.work / r[0] for r in rows], unseen=True, progress=False, device="cpu"))
    print(format_markdown(found["table"]))
    print()
    print(unseen_markdown(found["table"]))
    (args.work / "unseen.json").write_text(json.dumps({"seconds": seconds, "results": found["results"]}, indent=1, default=str))


if __name__ == "__main__":
    main()
