"""Best and last: the last epoch's top-1 beside the chosen checkpoint's, and the epoch each came from.

A paper that reports the best epoch and a reader who takes the last one disagree by a few points
(mdistiller issues #7 and #69): ``makd eval`` shows both. The chosen weights are best.pt (the epoch
``--select-by`` picked); last.pt, which every run keeps for ``--resume``, holds the last epoch. When
they are the same epoch the last epoch's figures are the chosen ones, and nothing runs twice.
"""

from __future__ import annotations

from pathlib import Path

from makd_cli.formats.checkpoint import load_checkpoint


def checkpoint_epoch(ckpt: dict) -> int | None:
    """The 1-based epoch whose weights a checkpoint holds."""
    return int(ckpt["epoch"]) + 1 if ckpt.get("epoch") is not None else None


def add_last_epochs(paths: list[Path], results: list[dict], evaluate) -> None:
    """Adds ``last`` ({"checkpoint", "epoch", "top1"}) to each result whose run folder keeps a last.pt.
    ``evaluate(path)``: the same evaluation the chosen checkpoint had (same data and split)."""
    for path, result in zip(paths, results):
        last_path = Path(path).parent / "last.pt"
        if Path(path).name == "last.pt" or not last_path.is_file():
            if Path(path).name == "last.pt":
                result["last"] = {"checkpoint": str(path), "epoch": result.get("epoch"), "top1": result["top1"]}
            continue
        epoch = checkpoint_epoch(load_checkpoint(last_path))
        if epoch is not None and epoch == result.get("epoch"):
            top1 = result["top1"]  # best.pt is the last epoch: the same weights
        else:
            top1 = evaluate(str(last_path))["top1"]
        result["last"] = {"checkpoint": str(last_path), "epoch": epoch, "top1": top1}


def epoch_span(values) -> str:
    """The epochs of a table row's seeds: ``12``, or ``9-12`` where the seeds' chosen epochs differ."""
    known = sorted({int(v) for v in values if v is not None and v == v})
    if not known:
        return "-"
    return str(known[0]) if len(known) == 1 else f"{known[0]}-{known[-1]}"
