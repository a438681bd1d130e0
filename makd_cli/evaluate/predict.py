"""Run a student over a split and collect class logits, extra outputs and labels."""

from __future__ import annotations

import numpy as np
import torch

from makd_cli.data.transforms import TorchSplit


@torch.no_grad()
def predict(model, split, transform, batch_size: int = 256, workers: int = 0, device: str = "cpu", progress=None, features: bool = False) -> dict:
    loader = torch.utils.data.DataLoader(TorchSplit(split, transform), batch_size=batch_size, shuffle=False, num_workers=workers)
    model.eval()
    logits, extra, feats = [], [], []
    task = progress.add_task("predict", total=len(loader)) if progress is not None else None
    for images, _, _ in loader:
        out = model(images.to(device), return_features=features)
        logits.append(out[0].float().cpu())
        extra.append(out[1].float().cpu())
        if features:
            feats.append(out[2].float().cpu())
        if task is not None:
            progress.advance(task)
    if task is not None:
        progress.remove_task(task)
    result = {
        "logits": torch.cat(logits).numpy(),
        "extra": torch.cat(extra).numpy(),
        "labels": np.asarray(split.labels),
        "ids": list(split.ids),
    }
    if features:
        result["features"] = torch.cat(feats).numpy()
    return result
