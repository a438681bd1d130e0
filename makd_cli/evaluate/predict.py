"""Run a student over a split and collect class logits, extra outputs and labels."""

from __future__ import annotations

import numpy as np
import torch

from makd_cli.data.transforms import TorchSplit, collate_readable
from makd_cli.errors import MakdError


@torch.no_grad()
def predict(model, split, transform, batch_size: int = 256, workers: int = 0, device: str = "cpu", progress=None, features: bool = False,
            what: str = "evaluated") -> dict:
    """Class logits, extra outputs, labels and ids of the split's readable images (unreadable ones are
    skipped and counted in ``unreadable``; too many stop with one line)."""
    data = TorchSplit(split, transform, what=what, skip_unreadable=True)
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate_readable)
    model.eval()
    logits, extra, feats, kept = [], [], [], []
    task = progress.add_task("predict", total=len(loader)) if progress is not None else None
    for batch in loader:
        data.unreadable.check()
        if batch is None:  # every image of this batch was unreadable
            continue
        images, _, indices = batch
        kept.append(indices)
        out = model(images.to(device), return_features=features)
        logits.append(out[0].float().cpu())
        extra.append(out[1].float().cpu())
        if features:
            feats.append(out[2].float().cpu())
        if task is not None:
            progress.advance(task)
    if task is not None:
        progress.remove_task(task)
    data.unreadable.check()
    if not kept:
        raise MakdError(f"no image of the {what} split could be read (first: {data.unreadable.first()})")
    kept = torch.cat(kept).numpy()
    result = {
        "logits": torch.cat(logits).numpy(),
        "extra": torch.cat(extra).numpy(),
        "labels": np.asarray(split.labels)[kept],
        "ids": [split.ids[i] for i in kept],
        "index": kept,  # positions in the split of the rows above
        "unreadable": data.unreadable.report(),  # None, or the count and first id of skipped images
    }
    if features:
        result["features"] = torch.cat(feats).numpy()
    return result
