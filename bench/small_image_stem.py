"""Why small-image ResNets keep their max-pool: training speed of ResNet-18 on 28 px inputs.

Compares the stem makd uses (3x3 stride-1 conv, max-pool kept) with the CIFAR recipe (no max-pool).

    .venv/bin/python bench/small_image_stem.py
"""

import time

import torch
import torch.nn.functional as F

from makd_cli.students import build_student


def images_per_s(model, steps: int = 10, batch: int = 16) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(batch, 3, 28, 28), torch.randint(0, 10, (batch,))
    for i in range(steps + 3):
        if i == 3:
            t0 = time.perf_counter()
        logits, _ = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - t0)


if __name__ == "__main__":
    torch.manual_seed(0)
    kept = build_student("resnet18", 10, 0, 28)
    cifar = build_student("resnet18", 10, 0, 28)
    cifar.backbone.maxpool = torch.nn.Identity()
    a, b = images_per_s(kept), images_per_s(cifar)
    print(f"{torch.get_num_threads()} threads, batch 16, 28 px")
    print(f"3x3 stem + max-pool (makd)   : {a:7.1f} images/s")
    print(f"3x3 stem, no max-pool (CIFAR): {b:7.1f} images/s   ({a / b:.1f}x slower)")
