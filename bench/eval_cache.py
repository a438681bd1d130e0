"""`makd eval` over 20 run folders: the first call runs every checkpoint on the test split, the
second loads the predictions cached in each run folder (issue 19, item 15).

    .venv/bin/python bench/eval_cache.py [--runs 20] [--test-per-class 100] [--student resnet18]

Builds an ImageFolder of 3 classes (32 px), trains one tiny run and derives RUNS run folders from it
(each a different checkpoint: its seed differs), then times `makd eval` on all of them twice, each
time as a user would run it (a fresh process). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

CLASSES = ["blue dot", "green bar", "red square"]


def make_data(root: Path, train: int, test: int, size: int = 32) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("test", test)):
        for c, name in enumerate(CLASSES):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
                img[4:12, 4:12, c] = 230
                Image.fromarray(img).save(d / f"{i:04d}.png")
    return root


def makd(*args) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "makd_cli", *map(str, args)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--test-per-class", type=int, default=100)
    ap.add_argument("--student", default="resnet18")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="makd-eval-cache-") as tmp:
        tmp = Path(tmp)
        data = make_data(tmp / "data", 10, args.test_per_class)
        makd("train", "--data", data, "--student", args.student, "--epochs", "1", "-b", "8", "--val-fraction", "0", "--quiet",
             "-o", tmp / "base")
        ckpt = torch.load(tmp / "base" / "best.pt", weights_only=True)
        runs = []
        for i in range(args.runs):
            ckpt["config"]["seed"] = i
            (tmp / f"run{i:02d}").mkdir()
            torch.save(ckpt, tmp / f"run{i:02d}" / "best.pt")
            runs.append(tmp / f"run{i:02d}")
        first = makd("eval", *runs, "--device", "cpu", "--json")
        second = makd("eval", *runs, "--device", "cpu", "--json")
        print(json.dumps({
            "runs": args.runs, "student": args.student, "test_images": 3 * args.test_per_class,
            "first_s": round(first, 2), "second_s": round(second, 2),
            "first_per_run_s": round(first / args.runs, 3), "second_per_run_s": round(second / args.runs, 3),
            "speedup": round(first / second, 1),
        }))


if __name__ == "__main__":
    main()
