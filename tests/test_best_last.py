"""`makd eval`: the last epoch's top-1 beside the chosen checkpoint's, and the epoch each came from."""

import json

import pytest
import torch
from typer.testing import CliRunner

from makd_cli.cli import app
from makd_cli.evaluate.report import evaluate_checkpoint
from makd_cli.evaluate.run import EvalConfig, run_eval
from makd_cli.formats.checkpoint import load_checkpoint, save_checkpoint
from makd_cli.train import TrainConfig, train


def cfg(data, out, **kw):
    base = dict(data=str(data), out=str(out), student="small_cnn", epochs=3, batch_size=8, lr=0.05, quiet=True, val_fraction=0.25)
    base.update(kw)
    return TrainConfig(**base)


def _best_is_epoch_one(run):
    """best.pt as if --select-by had chosen epoch 1: other weights than last.pt's."""
    ckpt = {k: v for k, v in load_checkpoint(run / "last.pt").items() if k not in ("optimizer", "scheduler", "format", "format_version")}
    ckpt["model"] = {k: torch.zeros_like(v) if k.endswith("weight") else v for k, v in ckpt["model"].items()}
    ckpt["epoch"], ckpt["selection"] = 0, {**ckpt["selection"], "epoch": 1}
    save_checkpoint(run / "best.pt", ckpt)


def test_best_and_last_side_by_side(tiny_data, tmp_path):
    for seed in (0, 1):
        train(cfg(tiny_data, tmp_path / "runs" / f"seed{seed}", seed=seed))
    _best_is_epoch_one(tmp_path / "runs" / "seed0")
    found = run_eval(EvalConfig(checkpoints=[tmp_path / "runs"], device="cpu", progress=False))
    r0, r1 = found["results"]
    assert r0["epoch"] == 1 and r0["last"]["epoch"] == 3 and r0["last"]["checkpoint"].endswith("last.pt")
    assert r0["last"]["top1"] == evaluate_checkpoint(str(tmp_path / "runs" / "seed0" / "last.pt"), cache=False)["top1"]
    assert r1["last"]["epoch"] == 3 and r1["epoch"] == load_checkpoint(tmp_path / "runs" / "seed1" / "best.pt")["epoch"] + 1
    row = found["table"].iloc[0]
    assert row["runs"] == 2 and row["last_top1"] == pytest.approx((r0["last"]["top1"] + r1["last"]["top1"]) / 2)
    assert row["last_epoch"] == "3" and row["epoch"] == ("1" if r1["epoch"] == 1 else f"1-{r1['epoch']}")

    runner = CliRunner()
    res = runner.invoke(app, ["eval", str(tmp_path / "runs"), "--device", "cpu", "--format", "markdown"])
    assert res.exit_code == 0, res.output
    head, _, first = [ln for ln in res.output.splitlines() if ln.startswith("|")][:3]
    assert head.endswith("| epoch | last epoch top-1 |") and first.endswith(f"(3) |")
    res = runner.invoke(app, ["eval", str(tmp_path / "runs"), "--device", "cpu"], env={"COLUMNS": "250"})
    assert res.exit_code == 0 and "last (epoch)" in res.output
    res = runner.invoke(app, ["eval", str(tmp_path / "runs" / "seed0"), "--device", "cpu", "--json"])
    result = json.loads(res.output)["results"][0]
    assert result["last"]["epoch"] == 3 and result["epoch"] == 1  # additive keys: the old ones stay
    assert {"top1", "selected_by", "selection", "checkpoint"} <= set(result)


def test_last_pt_alone_is_its_own_last(tiny_data, tmp_path):
    train(cfg(tiny_data, tmp_path / "r", epochs=1))
    found = run_eval(EvalConfig(checkpoints=[tmp_path / "r" / "last.pt"], device="cpu", progress=False))
    r = found["results"][0]
    assert r["last"] == {"checkpoint": str(tmp_path / "r" / "last.pt"), "epoch": 1, "top1": r["top1"]}


def test_side_by_side_has_the_last_epoch_of_every_protocol():
    from makd_cli.evaluate.protocols import side_by_side_markdown
    from makd_cli.evaluate.report import comparison_table

    def result(selected_by, seed, top1, last_top1, epoch):
        return {"data": "cub:/d", "student": "resnet18", "method": "ce", "control": None, "train_per_class": None,
                "epochs": 240, "selected_by": selected_by, "seed": seed, "top1": top1, "top5": 90.0, "mean_per_class": top1,
                "settings": {}, "epoch": epoch, "last": {"checkpoint": "x", "epoch": 240, "top1": last_top1}}

    table = comparison_table([result("val", 0, 60.0, 58.0, 200), result("val", 1, 70.0, 66.0, 230), result("test-acc †", 0, 72.0, 69.0, 199)])
    lines = side_by_side_markdown(table).splitlines()
    assert lines[0] == "| method | control | top-1, val | last epoch, val | top-1, test-acc † | last epoch, test-acc † | paper |"
    assert lines[2] == "| ce | - | 65.00 ± 5.00 (2) | 62.00 ± 4.00 (240) | 72.00 (1) | 69.00 (240) | - |"
    assert table["epoch"].tolist() == ["200-230", "199"]
