"""``makd train --select-by``: best.pt holds the epoch each protocol picks on a scripted curve.

The per-epoch evaluations (validation split, test split) are replaced by scripted curves, and each
call snapshots the weights the loop is about to score, so the test can tell which epoch's weights
best.pt holds. The expected epochs are worked out by hand from the curves and the references' rules:
LaViD (Lightning) keeps the strictly lowest test CE among every 5th epoch, MaKD (mdistiller) the best
test top-1 of any epoch with ties to the later one, makd's default the best validation top-1.
"""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from makd_cli.cli import app
from makd_cli.errors import MakdError
from makd_cli.evaluate.report import comparison_table, evaluate_checkpoint, format_markdown
from makd_cli.formats.checkpoint import load_checkpoint
from makd_cli.train import TrainConfig, train
from makd_cli.train import task as loop_mod  # the shared setup that calls fit
from makd_cli.train.engine import is_check_epoch, select_epoch

# epoch:            1     2     3     4     5     6     7
VAL_TOP1 = [10.0, 50.0, 30.0, 50.0, 20.0, 40.0, 45.0]
TEST_TOP1 = [20.0, 60.0, 90.0, 60.0, 90.0, 10.0, 30.0]
TEST_LOSS = [0.9, 0.5, 0.1, 0.4, 0.6, 0.45, 0.8]


def cfg(data, out, **kw):
    base = dict(data=str(data), out=str(out), student="small_cnn", epochs=7, batch_size=8, lr=0.05, quiet=True, val_fraction=0.25,
                image_size=16)  # the shapes are 16 px: 224 px only costs time
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture
def scripted(monkeypatch):
    """Replace the objective's evaluations by the curves above; record the weights and which split was read."""
    seen = {"weights": {}, "test_epochs": [], "val_epochs": []}
    real_fit = loop_mod.fit

    def fit(cfg, run, obj, bar):
        def epoch_now():
            return len(run.history) + 1  # the record of this epoch is appended after the evaluations

        def validate():
            e = epoch_now()
            seen["val_epochs"].append(e)
            seen["weights"][e] = {k: v.clone() for k, v in obj.model.state_dict().items()}
            return {"val_top1": VAL_TOP1[e - 1]}

        def evaluate_test():
            e = epoch_now()
            seen["test_epochs"].append(e)
            return {"test_loss": TEST_LOSS[e - 1], "test_top1": TEST_TOP1[e - 1]}

        obj.validate, obj.evaluate_test = validate, evaluate_test
        return real_fit(cfg, run, obj, bar)

    monkeypatch.setattr(loop_mod, "fit", fit)
    return seen


def held_epoch(best_pt, weights: dict) -> int:
    """The epoch whose snapshot equals best.pt's weights (exactly one must)."""
    state = load_checkpoint(best_pt)["model"]
    same = [e for e, w in weights.items() if all(torch.equal(state[k], w[k]) for k in w)]
    assert len(same) == 1, same
    return same[0]


@pytest.mark.parametrize("by, every, expected, checks", [
    ("val", None, 2, []),  # 50 at epochs 2 and 4: the earlier one (strictly better replaces)
    ("test-acc", None, 5, [1, 2, 3, 4, 5, 6, 7]),  # 90 at epochs 3 and 5: mdistiller's >= keeps the later
    ("test-loss", 2, 4, [2, 4, 6, 7]),  # 0.1 at epoch 3 is never checked; 0.5, 0.4, 0.45, 0.8 -> epoch 4
    ("test-loss", None, 5, [5, 7]),  # LaViD's interval of 5: epoch 5 (0.6) and the last (0.8)
])
def test_select_by_picks_the_epoch_of_the_scripted_curve(tiny_data, tmp_path, scripted, by, every, expected, checks):
    out = tmp_path / by
    result = train(cfg(tiny_data, out, select_by=by, select_every=every))
    assert held_epoch(out / "best.pt", scripted["weights"]) == expected
    assert scripted["test_epochs"] == checks  # the test split is read on check epochs of a test protocol only
    assert scripted["val_epochs"] == list(range(1, 8))  # the validation figure is kept every epoch
    sel = load_checkpoint(out / "best.pt")["selection"]
    split = "val" if by == "val" else "test"
    value = {"val": VAL_TOP1, "test-acc": TEST_TOP1, "test-loss": TEST_LOSS}[by][expected - 1]
    assert sel == {"by": by, "every": every or (5 if by == "test-loss" else 1), "split": split,
                   "metric": {"val": "val_top1", "test-acc": "test_top1", "test-loss": "test_loss"}[by],
                   "epoch": expected, "value": value}
    assert load_checkpoint(out / "last.pt")["selection"] == sel and result["selection"] == sel
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if "test_loss" in r] == checks


def test_resumed_run_selects_as_an_uninterrupted_one(tiny_data, tmp_path, scripted, stopped_after_epoch):
    with stopped_after_epoch(4):
        train(cfg(tiny_data, tmp_path / "r", select_by="test-acc"))
    assert load_checkpoint(tmp_path / "r" / "best.pt")["selection"]["epoch"] == 3  # 90 so far at epoch 3
    from makd_cli.evaluate.protocols import protocol_label

    assert protocol_label(load_checkpoint(tmp_path / "r" / "best.pt")) == "test-acc †"
    assert protocol_label(load_checkpoint(tmp_path / "r" / "last.pt")) == "last epoch"  # epoch 4, not the chosen 3
    train(cfg(tiny_data, tmp_path / "r", select_by="test-acc", resume=True))
    assert load_checkpoint(tmp_path / "r" / "best.pt")["selection"]["epoch"] == 5  # the later 90, as uninterrupted
    assert held_epoch(tmp_path / "r" / "best.pt", scripted["weights"]) == 5
    with pytest.raises(MakdError, match="--select-by test-acc, not test-loss"):
        train(cfg(tiny_data, tmp_path / "r", select_by="test-loss", resume=True))
    # the papers' protocol trains on every image (--val-fraction 0): resuming with another split is refused
    with pytest.raises(MakdError, match="--val-fraction 0.25, not 0"):
        train(cfg(tiny_data, tmp_path / "r", select_by="test-acc", val_fraction=0.0, resume=True))


def test_select_epoch_rules():
    hist = [{"epoch": e, "train_loss": 1.0, "test_loss": loss, "test_top1": acc}
            for e, (loss, acc) in enumerate(zip(TEST_LOSS, TEST_TOP1), start=1)]
    assert select_epoch(hist, "test-loss", 1, 7) == (3, -0.1)
    assert select_epoch(hist, "test-acc", 1, 7) == (5, 90.0)
    assert select_epoch(hist[:2], "test-loss", 5, 7) == (None, float("-inf"))  # no check epoch yet
    # 240 epochs every 5: the reference's 48 checks, the last one epoch 240
    checked = [e for e in range(240) if is_check_epoch(e, 5, 240)]
    assert len(checked) == 48 and checked[0] == 4 and checked[-1] == 239
    no_val = [{"epoch": 1, "train_loss": 2.0}, {"epoch": 2, "train_loss": 1.5}, {"epoch": 3, "train_loss": 1.7}]
    assert select_epoch(no_val, "val", 1, 3) == (2, -1.5)  # no validation split: the lowest training loss


def test_real_test_evaluation_matches_makd_eval(tiny_data, tmp_path):
    """Unscripted: the test top-1 recorded for the chosen epoch is makd eval's top-1 of best.pt, and the
    test CE is the mean -log softmax of the true class, computed here from eval's own predictions."""
    out = tmp_path / "acc"
    train(cfg(tiny_data, out, epochs=3, select_by="test-acc"))
    ckpt = load_checkpoint(out / "best.pt")
    record = next(r for r in ckpt["history"] if r["epoch"] == ckpt["selection"]["epoch"])
    assert ckpt["selection"]["value"] == record["test_top1"] == max(r["test_top1"] for r in ckpt["history"])
    ev = evaluate_checkpoint(str(out / "best.pt"), cache=False)
    assert ev["top1"] == pytest.approx(record["test_top1"], abs=1e-9)
    assert ev["selection"]["by"] == "test-acc" and ev["selection"]["split"] == "test"

    from makd_cli.data import load_dataset
    from makd_cli.data.transforms import eval_transform
    from makd_cli.evaluate.predict import predict
    from makd_cli.students import student_from_checkpoint

    ds = load_dataset(str(tiny_data))
    pred = predict(student_from_checkpoint(ckpt), ds.test, eval_transform(ckpt["image_size"], ckpt.get("native_size")))
    z = pred["logits"].astype(np.float64)
    log_p = z - z.max(1, keepdims=True) - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
    ce = float(-log_p[np.arange(len(z)), pred["labels"]].mean())
    assert record["test_loss"] == pytest.approx(ce, rel=1e-5)


def test_eval_shows_the_protocol_and_marks_test_choices(tiny_data, tmp_path):
    train(cfg(tiny_data, tmp_path / "val", epochs=1))
    train(cfg(tiny_data, tmp_path / "loss", epochs=1, select_by="test-loss"))
    results = [evaluate_checkpoint(str(tmp_path / r / "best.pt"), cache=False) for r in ("val", "loss")]
    table = comparison_table(results)
    assert list(table["selected_by"]) == ["val", "test-loss/5 †"]  # never averaged together
    md = format_markdown(table)
    assert "| protocol |" in md.splitlines()[0] and "test-loss/5 †" in md
    assert "† checkpoint chosen on the test split" in md
    runner = CliRunner()
    res = runner.invoke(app, ["eval", str(tmp_path / "val"), str(tmp_path / "loss"), "--device", "cpu"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "protocol" in res.output and "test-loss/5 †" in res.output and "checkpoint chosen on the test split" in res.output


def test_cli_flag_and_errors(tiny_data, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--data", str(tiny_data), "-o", str(tmp_path / "c"), "--student", "small_cnn",
                              "--epochs", "2", "--image-size", "16", "--val-fraction", "0", "--select-by", "test-acc", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "chosen on the test split" in res.output
    ckpt = load_checkpoint(tmp_path / "c" / "best.pt")
    assert ckpt["config"]["select_by"] == "test-acc" and ckpt["split"]["val"] == 0
    with pytest.raises(MakdError, match="--select-by best: choose val, test-loss, test-acc"):
        TrainConfig(data="x", out="y", select_by="best")
    with pytest.raises(MakdError, match="--select-every must be at least 1"):
        TrainConfig(data="x", out="y", select_every=0)


def test_val_fraction_defaults_follow_the_protocol(tiny_data, tmp_path):
    """A test-split protocol holds nothing out unless asked (the references train on every image); val holds 10 %."""
    assert TrainConfig(data="x", out="y").val_fraction == 0.1
    assert TrainConfig(data="x", out="y", select_by="test-loss").val_fraction == 0.0
    assert TrainConfig(data="x", out="y", select_by="test-acc").val_fraction == 0.0
    assert TrainConfig(data="x", out="y", select_by="test-acc", val_fraction=0.2).val_fraction == 0.2
    res = CliRunner().invoke(app, ["train", "--data", str(tiny_data), "-o", str(tmp_path / "d"), "--student", "small_cnn",
                                   "--epochs", "1", "--image-size", "16", "--select-by", "test-loss", "--quiet", "--json"])
    assert res.exit_code == 0, res.output
    assert load_checkpoint(tmp_path / "d" / "best.pt")["split"]["val"] == 0


def test_cli_val_without_a_validation_split_says_training_loss(tiny_data, tmp_path):
    """--select-by val with --val-fraction 0 ranks by the training loss: the summary says so (it printed
    the negated loss as a "validation top-1" in %)."""
    res = CliRunner().invoke(app, ["train", "--data", str(tiny_data), "-o", str(tmp_path / "n"), "--student", "small_cnn",
                                   "--epochs", "2", "--image-size", "16", "--val-fraction", "0", "--quiet"], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    history = load_checkpoint(tmp_path / "n" / "best.pt")["history"]
    best = min(history, key=lambda r: r["train_loss"])
    assert f"best.pt is epoch {best['epoch']} of 2, lowest training loss {best['train_loss']:.4g}" in res.output
    assert "validation top-1" not in res.output


def test_side_by_side_table_puts_protocols_and_the_paper_on_one_row():
    from makd_cli.evaluate.protocols import parse_paper, side_by_side_markdown

    def result(method, control, selected_by, seed, top1, val_fraction):
        return {"data": "cub:/d", "student": "resnet18", "method": method, "control": control, "train_per_class": None,
                "epochs": 240, "selected_by": selected_by, "seed": seed, "top1": top1, "top5": 90.0, "mean_per_class": top1,
                "settings": {"val_fraction": val_fraction, "lr": 0.01}}

    results = [result("ce", None, "val", 0, 60.0, 0.1), result("ce", None, "val", 1, 70.0, 0.1),
               result("ce", None, "test-loss/5 †", 0, 72.0, 0.0),
               result("lavid", "shuffled", "val", 0, 58.5, 0.1)]
    md = side_by_side_markdown(comparison_table(results), parse_paper(["ce=63.07", "lavid.shuffled=n/a"]))
    lines = md.splitlines()
    assert lines[0] == "| method | control | top-1, val | top-1, test-loss/5 † | paper |"
    # ce, val: mean of 60 and 70, population std 5; one test-loss run; val_fraction is part of the protocol, not a row
    assert lines[2] == "| ce | - | 65.00 ± 5.00 (2) | 72.00 (1) | 63.07 |"
    assert lines[3] == "| lavid | shuffled | 58.50 (1) | - | n/a |"
    assert len(lines) == 6 and "† checkpoint chosen on the test split" in lines[5]
    with pytest.raises(MakdError, match="--paper 'lavid': give RUN=NUMBER"):
        parse_paper(["lavid"])


def test_test_protocols_need_a_class_head_scored_on_test():
    from types import SimpleNamespace

    from makd_cli.train.engine import Objective, fit

    run = SimpleNamespace(info=None, device=None)
    moco = Objective(model=torch.nn.Linear(1, 1), data=[], train_modules=[], step=None, keep="latest")
    with pytest.raises(MakdError, match="keeps its latest epoch .* drop --select-by test-acc"):
        fit(TrainConfig(data="x", out="y", method="lead-ssl", select_by="test-acc"), run, moco, None)
    unscored = Objective(model=torch.nn.Linear(1, 1), data=[], train_modules=[], step=None)
    with pytest.raises(MakdError, match="--select-by test-loss scores epochs on the test split"):
        fit(TrainConfig(data="x", out="y", method="mine", select_by="test-loss"), run, unscored, None)
