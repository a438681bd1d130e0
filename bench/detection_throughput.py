"""Detection training throughput: `makd train --task detection` with and without MaKD's aspect head.

Both variants train the same Faster R-CNN + FPN on the same drawn COCO-format images (coloured shapes
on noise, tests/test_detection.py's drawer) through makd's own training path (engine, checkpoints,
loader); the only difference is `--method ce` vs `--method makd` (Q aspect outputs on the pooled last
backbone stage, BCE against random per-image targets). Runs alternate ce, makd, ce, makd, ... so a
busy machine slows both alike; each run's first epoch warms up and the rest is timed (the engine's
epoch seconds). Prints images/s of each variant (median over repeats) and the head's relative cost.

    .venv/bin/python bench/detection_throughput.py [--student resnet18] [--image-size 256] [--images 8]
        [--batch-size 2] [--epochs 2] [--repeats 2] [--device cpu|cuda] [--coco-sampling]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_detection import draw_coco  # noqa: E402  (the tests' COCO-format drawer)

from makd_cli.data import load_dataset  # noqa: E402
from makd_cli.formats.targets import Targets, write_targets  # noqa: E402
from makd_cli.train import TrainConfig  # noqa: E402
from makd_cli.train.runs import train_runs  # noqa: E402


def run(kind: str, coco: Path, targets: Path, out: Path, args) -> float:
    extra = {} if args.coco_sampling else {"rois_per_image": 128, "proposals": 500}
    cfg = TrainConfig(data=f"coco:{coco}", out=str(out), task="detection", method=kind, student=args.student,
                      targets=str(targets) if kind == "makd" else None, epochs=args.epochs, batch_size=args.batch_size,
                      lr=0.005, weight_decay=1e-4, image_size=args.image_size, device=args.device, workers=0, quiet=True,
                      options=extra)
    history = train_runs(cfg)[0]["history"][1:]  # the first epoch warms up
    per_epoch = args.images // args.batch_size * args.batch_size  # drop_last
    return per_epoch * len(history) / sum(r["seconds"] for r in history)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student", default="resnet18", choices=("resnet18", "resnet50"))
    ap.add_argument("--image-size", type=int, default=256, help="shorter side the detector resizes to (COCO: 800)")
    ap.add_argument("--images", type=int, default=8, help="training images per epoch")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--questions", type=int, default=50)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--coco-sampling", action="store_true", help="COCO's 512 RoIs and 2000 proposals per image (default: 128 / 500)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        coco = draw_coco(tmp / "coco", n_train=args.images, n_val=2, size=args.image_size)  # drawn at the trained size
        view = load_dataset(f"coco:{coco}")
        rng = np.random.default_rng(0)
        write_targets(tmp / "t.h5", Targets(kind="image_yesno", classes=list(view.classes),
                                             question_ids=[f"q{i}" for i in range(args.questions)],
                                             probs=rng.uniform(0, 1, (len(view.train), args.questions)),
                                             images=list(view.train.ids), labels=view.train.labels, teacher="bench"))
        speeds: dict[str, list[float]] = {"ce": [], "makd": []}
        t0 = time.time()
        for r in range(args.repeats):
            for kind in ("ce", "makd"):
                speeds[kind].append(run(kind, coco, tmp / "t.h5", tmp / f"{kind}{r}", args))
    ce, makd = np.median(speeds["ce"]), np.median(speeds["makd"])
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), platform.machine())
    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else None
    print(json.dumps({"machine": gpu or cpu, "threads": torch.get_num_threads(),
                      "device": args.device, "student": args.student, "image_size": args.image_size,
                      "batch_size": args.batch_size, "sampling": "coco" if args.coco_sampling else "128 RoIs / 500 proposals",
                      "questions": args.questions, "images_per_s": {k: [round(v, 3) for v in s] for k, s in speeds.items()},
                      "seconds": round(time.time() - t0, 1)}))
    print(f"{args.student} {args.image_size}px batch {args.batch_size} on {args.device}: without the aspect head {ce:.2f} img/s, "
          f"with it (Q = {args.questions}) {makd:.2f} img/s; with/without {makd / ce:.3f}")


if __name__ == "__main__":
    main()
