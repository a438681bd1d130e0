"""Training throughput: `makd train --method lavid` against a plain PyTorch loop.

Both train the same student on the same images (Fashion-MNIST, N per class), with the same batch
size, transforms and thread count; the plain loop is the minimum any trainer must do (forward,
CE + MSE, backward, SGD step). Prints images/s of each and their ratio (goal: makd >= 0.95 x plain).

    .venv/bin/python bench/train_throughput.py [--student resnet18] [--per-class 100] [--epochs 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from makd_cli.data import load_dataset
from makd_cli.data.splits import carve_train_val
from makd_cli.data.transforms import TorchSplit, train_transform
from makd_cli.formats.targets import Targets, write_targets
from makd_cli.students import build_student
from makd_cli.train import TrainConfig, train


def plain_loop(split, targets: torch.Tensor, student: str, size: int, native: int | None, batch: int, epochs: int, device: str) -> float:
    torch.manual_seed(0)
    model = build_student(student, 10, targets.shape[1], size).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    loader = torch.utils.data.DataLoader(TorchSplit(split, train_transform(size, native)), batch_size=batch, shuffle=True, drop_last=True)
    targets = targets.to(device)
    n, t0 = 0, None
    for epoch in range(epochs + 1):  # epoch 0 warms up and is not timed
        if epoch == 1:
            t0 = time.perf_counter()
        model.train()
        for x, y, _ in loader:
            x, y = x.to(device), y.to(device)
            logits, extra = model(x)
            loss = F.cross_entropy(logits, y) + 40 * F.mse_loss(extra, targets[y])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += len(y) if epoch else 0
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student", default="resnet18")
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    ds = load_dataset("fashion-mnist")
    train_split, _ = carve_train_val(ds.train, 10, 0.0, args.per_class, 1.0, 0)
    rng = np.random.default_rng(0)
    z = rng.standard_normal((10, 20, 5))
    probs = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    with tempfile.TemporaryDirectory() as tmp:
        tpath = Path(tmp) / "t.h5"
        write_targets(tpath, Targets("class_mcq", ds.classes, [f"q{i}" for i in range(20)], probs))
        plain = plain_loop(train_split, torch.tensor(probs.reshape(10, -1), dtype=torch.float32), args.student, 28, 28,
                           args.batch_size, args.epochs, args.device)
        result = train(TrainConfig(data="fashion-mnist", out=str(Path(tmp) / "run"), method="lavid", targets=str(tpath),
                                   student=args.student, epochs=args.epochs + 1, per_class=args.per_class, val_fraction=0.0,
                                   batch_size=args.batch_size, device=args.device, quiet=True, workers=0))
        # makd's own per-epoch figure times the training steps of each epoch (the first epoch warms up)
        makd = float(np.mean([h["images_per_s"] for h in result["history"][1:]]))
    print(f"student {args.student}, {len(train_split)} images, batch {args.batch_size}, {torch.get_num_threads()} threads, {args.device}")
    print(f"plain PyTorch loop : {plain:8.1f} images/s")
    print(f"makd train (lavid) : {makd:8.1f} images/s")
    print(f"ratio              : {makd / plain:8.3f}  (goal >= 0.95)")


if __name__ == "__main__":
    main()
