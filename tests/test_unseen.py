"""Held-out classes (train --hold-out-classes) and unseen-class scoring (eval --unseen, evaluate/unseen.py)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from makd_cli.data.hold_out import resolve_hold_out, without_classes
from makd_cli.errors import MakdError
from makd_cli.evaluate.unseen import (class_signatures, harmonic_mean, mcq_log_likelihood, signature_distances, unseen_metrics,
                                      yes_probabilities, yesno_log_likelihood)
from makd_cli.formats.targets import Targets, write_targets

CLASSES10 = [f"c{i}" for i in range(10)]


# ------------------------------------------------------------------------------ scoring, by hand
def test_mcq_log_likelihood_is_the_signature_under_the_softmax_of_each_question():
    # one question, two options: outputs (0, log 3) -> p = (1/4, 3/4)
    outputs = np.array([[0.0, math.log(3)]])
    signatures = np.array([[[1.0, 0.0]], [[0.5, 0.5]], [[0.0, 1.0]]])
    got = mcq_log_likelihood(outputs, signatures)
    assert got.shape == (1, 3)
    assert got[0] == pytest.approx([math.log(0.25), 0.5 * math.log(0.25) + 0.5 * math.log(0.75), math.log(0.75)])


def test_mcq_log_likelihood_sums_over_questions():
    # two questions of two options; question 2's outputs (0, 0) -> (1/2, 1/2)
    outputs = np.array([[0.0, math.log(3), 0.0, 0.0]])
    signatures = np.array([[[0.0, 1.0], [1.0, 0.0]]])
    assert mcq_log_likelihood(outputs, signatures)[0, 0] == pytest.approx(math.log(0.75) + math.log(0.5))


def test_yesno_log_likelihood_is_bernoulli():
    p = np.array([[0.8, 0.5]])
    signatures = np.array([[1.0, 0.0], [0.5, 1.0]])
    got = yesno_log_likelihood(p, signatures)
    assert got[0, 0] == pytest.approx(math.log(0.8) + math.log(0.5))
    assert got[0, 1] == pytest.approx(0.5 * math.log(0.8) + 0.5 * math.log(0.2) + math.log(0.5))


def test_yes_probabilities_follow_the_loss_that_trained_the_outputs():
    out = np.array([[0.0, 1.2, -0.3]])
    assert yes_probabilities(out, "sigmoid")[0] == pytest.approx([0.5, 1 / (1 + math.exp(-1.2)), 1 / (1 + math.exp(0.3))])
    assert yes_probabilities(out, "identity")[0] == pytest.approx([0.01, 0.99, 0.01])  # MSE-regressed p(yes), clipped


def test_per_image_targets_give_class_profiles():
    t = Targets("image_yesno", ["a", "b"], ["q0", "q1"], np.array([[1.0, 0.0], [0.0, 0.0], [0.5, 1.0]]),
                images=["i0", "i1", "i2"], labels=[0, 0, 1])
    assert class_signatures(t) == pytest.approx(np.array([[0.5, 0.0], [0.5, 1.0]]))
    t = Targets("image_yesno", ["a", "b"], ["q0"], np.array([[1.0]]), images=["i0"], labels=[0])
    with pytest.raises(MakdError, match="no image of class 'b'"):
        class_signatures(t)


def test_unseen_metrics_by_hand():
    # 4 classes, 2 and 3 held out; two test images per class. Scores over all 4 candidates.
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    scores = np.array([
        [9, 0, 0, 0], [0, 9, 0, 0],  # class 0: right, then wrong (as 1)
        [0, 9, 0, 0], [0, 9, 0, 0],  # class 1: right twice
        [0, 0, 9, 1], [9, 0, 1, 2],  # class 2: right; in GZSL the 2nd goes to 0, among unseen to 3
        [0, 0, 2, 1], [0, 0, 0, 9],  # class 3: among unseen 2 then 3; GZSL: 2 (wrong), 3 (right)
    ], dtype=float)
    m = unseen_metrics(scores, labels, [3, 2])
    # unseen top-1: class 2: 1/2, class 3: 1/2 -> 50
    assert m["unseen_top1"] == pytest.approx(50.0)
    assert m["unseen_confusion"] == [[1, 1], [1, 1]]  # rows: true 2, 3; columns: predicted 2, 3
    # GZSL: seen classes 0 (1/2) and 1 (2/2) -> 75; unseen 2 (1/2), 3 (1/2) -> 50; H = 2*75*50/125 = 60
    assert m["gzsl_seen"] == pytest.approx(75.0)
    assert m["gzsl_unseen"] == pytest.approx(50.0)
    assert m["gzsl_h"] == pytest.approx(60.0)
    assert m["chance_unseen_top1"] == pytest.approx(50.0) and m["chance_gzsl"] == pytest.approx(25.0)


def test_harmonic_mean_and_distances():
    assert harmonic_mean(50, 25) == pytest.approx(100 / 3)
    assert harmonic_mean(0, 0) == 0
    d = signature_distances(np.array([[0.0, 0.0], [1.0, 1.0], [1.0, 0.0]]), [0, 2])
    assert d == pytest.approx(np.array([[0, math.sqrt(0.5)], [math.sqrt(0.5), 0]]))


# ------------------------------------------------------------------------------ choosing the classes
def test_hold_out_count_is_seeded_by_its_own_seed(tmp_path):
    a = resolve_hold_out("3", CLASSES10)
    assert a["seed"] == 0 and len(a["classes"]) == 3 and a["classes"] == sorted(a["classes"], key=CLASSES10.index)
    assert resolve_hold_out("3", CLASSES10) == a  # the same split for every --seed
    assert resolve_hold_out("3:0", CLASSES10)["classes"] == a["classes"]
    assert resolve_hold_out("3:7", CLASSES10)["seed"] == 7


def test_hold_out_file_and_its_errors(tmp_path):
    f = tmp_path / "unseen.txt"
    f.write_text("# a split\nc7\nc2  # trailing comment\n\n")
    assert resolve_hold_out(str(f), CLASSES10) == {"spec": str(f), "seed": None, "classes": ["c2", "c7"]}
    f.write_text("c2\nnope\n")
    with pytest.raises(MakdError, match="not classes of the dataset.*'nope'"):
        resolve_hold_out(str(f), CLASSES10)
    with pytest.raises(MakdError, match="hold out 1 to 8"):
        resolve_hold_out("9", CLASSES10)
    with pytest.raises(MakdError, match="a number of classes"):
        resolve_hold_out(str(tmp_path / "missing.txt"), CLASSES10)


def test_without_classes_drops_every_image_of_them():
    from makd_cli.data.base import Split

    split = Split([f"i{k}" for k in range(6)], [0, 1, 2, 0, 1, 2], lambda i: None)
    kept = without_classes(split, ["a", "b", "c"], ["b"])
    assert kept.ids == ["i0", "i2", "i3", "i5"] and kept.labels.tolist() == [0, 2, 0, 2]


# ------------------------------------------------------------------------------ end to end
COLOURS = {"red": 0, "green": 1, "blue": 2}
SHAPES = ("hbar", "square", "vbar")
ATTR_CLASSES = sorted(f"{c} {s}" for c in COLOURS for s in SHAPES)  # ImageFolder's order
HELD = ["blue square", "green vbar", "red hbar"]  # a Latin square: every colour and shape is still seen twice


def _draw(name: str, rng) -> Image.Image:
    img = rng.integers(0, 50, (16, 16, 3), dtype=np.uint8)
    colour, shape = name.split()
    ch = COLOURS[colour]
    if shape == "square":
        img[4:12, 4:12, ch] = 230
    elif shape == "vbar":
        img[:, 6:10, ch] = 230
    else:
        img[6:10, :, ch] = 230
    return Image.fromarray(img)


def attribute_world(root: Path) -> tuple[Path, Path, Path]:
    """Nine colour x shape classes and a yes/no table of their six attributes that tells the held-out
    classes apart exactly (each differs from the others in colour and in shape)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 3)):
        for name in ATTR_CLASSES:
            d = root / "data" / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                _draw(name, rng).save(d / f"{i:03d}.png")
    questions = [f"is {c}" for c in COLOURS] + [f"is {s}" for s in SHAPES]
    probs = np.array([[float(q in (f"is {n.split()[0]}", f"is {n.split()[1]}")) for q in questions] for n in ATTR_CLASSES])
    write_targets(root / "attributes.h5", Targets("class_yesno", ATTR_CLASSES, [f"q{i}" for i in range(len(questions))], probs,
                                                  teacher="hand-written"))
    held = root / "held.txt"
    held.write_text("\n".join(HELD) + "\n")
    return root / "data", root / "attributes.h5", held


@pytest.mark.slow
def test_attribute_table_recognises_held_out_classes_and_random_codes_do_not(tmp_path):
    from makd_cli.evaluate.run import EvalConfig, run_eval
    from makd_cli.formats.checkpoint import load_checkpoint
    from makd_cli.train import TrainConfig, train

    data, targets, held = attribute_world(tmp_path)
    found = {}
    for control in (None, "random-codes"):
        out = tmp_path / f"run-{control or 'oracle'}"
        result = train(TrainConfig(data=str(data), out=str(out), method="makd", targets=str(targets), control=control,
                                   student="small_cnn", epochs=4, milestones=[4], batch_size=16, lr=0.05, quiet=True, device="cpu",
                                   hold_out_classes=str(held)))
        assert result["split"]["train"] + result["split"]["val"] == 6 * 12  # the held-out classes' images never train
        assert load_checkpoint(out / "best.pt")["hold_out"]["classes"] == HELD
        found[control] = run_eval(EvalConfig(checkpoints=[out], unseen=True, progress=False, device="cpu"))
    oracle, random = found[None]["results"][0]["unseen"], found["random-codes"]["results"][0]["unseen"]
    assert oracle["held_out"] == HELD and oracle["chance_unseen_top1"] == pytest.approx(100 / 3)
    assert oracle["unseen_top1"] == 100.0  # every held-out image is closest to its own class's attributes
    assert oracle["unseen_confusion"] == [[3, 0, 0], [0, 3, 0], [0, 0, 3]]
    assert random["unseen_top1"] < 100.0  # random codes of unseen classes carry nothing the images show
    table = found[None]["table"]
    assert table.iloc[0]["unseen_top1"] == 100.0 and "gzsl_h" in table


def test_unseen_on_a_run_without_held_out_classes_is_one_line(tmp_path, mcq_targets_file):
    from conftest import make_imagefolder
    from makd_cli.evaluate.run import EvalConfig, run_eval
    from makd_cli.train import TrainConfig, train

    data = make_imagefolder(tmp_path / "d", per_class_train=3, per_class_test=1)
    train(TrainConfig(data=str(data), out=str(tmp_path / "r"), method="lavid", targets=str(mcq_targets_file), student="small_cnn",
                      epochs=1, batch_size=4, quiet=True, device="cpu", val_fraction=0.0))
    with pytest.raises(MakdError, match="none of these runs holds classes out"):
        run_eval(EvalConfig(checkpoints=[tmp_path / "r"], unseen=True, progress=False, device="cpu"))


def test_hold_out_refuses_the_test_split_protocols_and_other_tasks(tmp_path):
    from makd_cli.train.task import check_hold_out_task
    from makd_cli.train import TrainConfig, train
    from conftest import make_imagefolder

    data = make_imagefolder(tmp_path / "d", per_class_train=2, per_class_test=1)
    with pytest.raises(MakdError, match="drop --select-by test-acc"):
        train(TrainConfig(data=str(data), out=str(tmp_path / "r"), hold_out_classes="1", select_by="test-acc", student="small_cnn",
                          epochs=1, quiet=True, device="cpu"))
    with pytest.raises(MakdError, match="the moco task does not take it"):
        check_hold_out_task(TrainConfig(data=str(data), out="x", method="lead-ssl", hold_out_classes="1"))


def test_cli_bad_hold_out_is_one_line(tmp_path):
    from conftest import make_imagefolder
    from test_cli import assert_one_line_error, run_makd

    data = make_imagefolder(tmp_path / "d", per_class_train=2, per_class_test=1)
    proc = run_makd("train", "--data", data, "-o", tmp_path / "r", "--student", "small_cnn", "--epochs", "1", "--quiet",
                    "--hold-out-classes", "two")
    assert_one_line_error(proc, "give a number of classes (N or N:SEED) or a file")


def _result(seed, control, unseen_top1, held=("c1", "c2")):
    unseen = None if unseen_top1 is None else {
        "held_out": list(held), "unseen_top1": unseen_top1, "gzsl_seen": 80.0, "gzsl_unseen": 10.0 + seed, "gzsl_h": 20.0,
        "chance_unseen_top1": 50.0, "chance_gzsl": 25.0}
    return {"checkpoint": f"r/{control}/seed{seed}/best.pt", "data": "d", "student": "small_cnn", "method": "makd", "control": control,
            "train_per_class": None, "epochs": 1, "selected_by": "val", "seed": seed, "settings": {"hold_out_classes": "2" if unseen else None},
            "top1": 50.0, "top5": 90.0, "mean_per_class": 50.0, "unseen": unseen}


def test_eval_table_aggregates_unseen_columns_over_seeds_and_prints_them():
    import io

    from rich.console import Console

    from makd_cli.evaluate.report import comparison_table
    from makd_cli.evaluate.unseen import print_unseen, unseen_markdown

    results = [_result(0, None, 100.0), _result(1, None, 50.0), _result(0, "random-codes", 50.0), _result(0, "shuffled", None)]
    table = comparison_table(results)
    oracle = table[(table["control"] == "-")].iloc[0]
    assert oracle["runs"] == 2 and oracle["unseen_top1"] == 75.0 and oracle["unseen_top1_std"] == 25.0
    assert oracle["gzsl_unseen"] == 10.5 and oracle["chance_unseen_top1"] == 50.0
    md = unseen_markdown(table)
    assert "| makd | - | 2 | 2 | 75.00 ± 25.00 | 50.00 | 80.00 ± 0.00 |" in md  # hold_out_classes differs: a column
    assert "random-codes" in md and "shuffled" not in md  # a run without held-out classes has no unseen row
    assert "Held out: c1, c2." in md
    console = Console(file=io.StringIO(), width=200)
    print_unseen(table, console)
    assert "75.00 ± 25.00" in console.file.getvalue()


def test_apply_hold_out_returns_a_copy_without_the_held_out_training_images():
    from types import SimpleNamespace

    from makd_cli.data.base import DatasetSplits, Split
    from makd_cli.data.hold_out import apply_hold_out

    train = Split([f"i{k}" for k in range(8)], [0, 1, 2, 3] * 2, lambda i: None)
    test = Split(["t0", "t1", "t2", "t3"], [0, 1, 2, 3], lambda i: None)
    ds = DatasetSplits("x", ["a", "b", "c", "d"], train, test)
    cfg = SimpleNamespace(hold_out_classes="1:3", select_by="val", control=None)
    kept, record = apply_hold_out(cfg, ds)
    (held,) = record["classes"]
    assert record == {"spec": "1:3", "seed": 3, "classes": [held]}
    assert ds.classes.index(held) not in kept.train.labels and len(kept.train) == 6
    assert len(ds.train) == 8 and kept.test is ds.test  # the loader's splits untouched; the test split keeps every class
    assert apply_hold_out(SimpleNamespace(hold_out_classes=None), ds) == (ds, None)
