"""Issue 24's mechanisms, one at a time: outputs never written over inputs (fileio.check_outputs_distinct),
run folders (run_folder.check_run_folder), datasets recognised by their layout (data/layout.py), recorded
hashes compared (input_hashes.py, the prediction cache), divergence stopped (train/divergence.py).
The hostile command lines themselves are rows of tests/test_fuzz_inputs.py."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from makd_cli.errors import MakdError
from makd_cli.fileio import check_outputs_distinct
from conftest import CLASSES, class_mcq_targets, make_imagefolder
from test_fuzz_inputs import run_main


# ---- check_outputs_distinct --------------------------------------------------------------------
def test_an_output_on_an_input_is_refused_by_name_link_and_hard_link(tmp_path):
    q = tmp_path / "q.jsonl"
    q.write_text("x\n")
    (tmp_path / "link").symlink_to(q)
    (tmp_path / "hard").hardlink_to(q)
    (tmp_path / "sub").mkdir()
    for out in (q, tmp_path / "link", tmp_path / "hard", tmp_path / "sub" / ".." / "q.jsonl"):
        with pytest.raises(MakdError, match=r"-o .* is the input --questions .*q\.jsonl"):
            check_outputs_distinct({"--questions": q, "--classes": None}, {"-o": out})
    check_outputs_distinct({"--questions": q}, {"-o": tmp_path / "t.h5"})  # distinct: no error


def test_two_outputs_on_one_file_and_lists_of_paths(tmp_path):
    with pytest.raises(MakdError, match="--out-questions .* and --out-targets .* are the same file"):
        check_outputs_distinct({}, {"--out-questions": tmp_path / "x", "--out-targets": tmp_path / "." / "x"})
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(b"ckpt")
    with pytest.raises(MakdError, match="--teacher-ckpt"):
        check_outputs_distinct({"--teacher-ckpt": run / "best.pt"}, {"-o": [run, run / "best.pt", run / "last.pt"]})
    # one flag may name several outputs; an input that does not exist cannot be destroyed
    check_outputs_distinct({"--targets": tmp_path / "missing.h5"}, {"-o": [run, run / "last.pt"]})


# ---- run folders --------------------------------------------------------------------------------
def _touch(*paths):
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")


def test_run_folder_rules(tmp_path):
    from makd_cli.run_folder import check_run_folder

    check_run_folder(tmp_path / "new")  # nothing there
    empty = tmp_path / "empty"
    empty.mkdir()
    check_run_folder(empty, runs=3)
    done = tmp_path / "done"
    _touch(done / "best.pt", done / "metrics.jsonl")  # finished, last.pt gone
    with pytest.raises(MakdError, match="already holds a run .*--overwrite"):
        check_run_folder(done)
    check_run_folder(done, resume=True)  # the run checks last.pt itself
    with pytest.raises(MakdError, match="single run"):
        check_run_folder(done, runs=2)
    seeds = tmp_path / "seeds"
    _touch(seeds / "seed0" / "best.pt", seeds / "seed1" / "last.pt")
    with pytest.raises(MakdError, match="2 seed run"):
        check_run_folder(seeds)
    with pytest.raises(MakdError, match="already holds a run"):
        check_run_folder(seeds, runs=2)
    check_run_folder(seeds, runs=2, resume=True)
    _touch(seeds / "last.pt")
    with pytest.raises(MakdError, match="both"):
        check_run_folder(seeds, runs=2, resume=True)
    with pytest.raises(MakdError, match="give one of them"):
        check_run_folder(done, resume=True, fresh=True)


def test_overwrite_removes_only_run_files(tmp_path):
    from makd_cli.run_folder import check_run_folder, run_files, seed_runs

    out = tmp_path / "run"
    _touch(out / "best.pt", out / "metrics.jsonl", out / ".eval-best-test-abc.npz", out / "notes.txt",
           out / "seed0" / "best.pt", out / "seed1" / "last.pt", out / "seed1" / "mine.txt")
    check_run_folder(out, fresh=True)
    assert run_files(out) == [] and seed_runs(out) == []
    assert (out / "notes.txt").exists() and (out / "seed1" / "mine.txt").exists()  # the user's own files stay
    assert not (out / "seed0").exists() and not (out / ".eval-best-test-abc.npz").exists()


def test_train_overwrite_and_chance_warning(tmp_path):
    data = make_imagefolder(tmp_path / "data", per_class_train=10, per_class_test=1)
    args = ["train", "--data", data, "-o", tmp_path / "run", "--student", "small_cnn", "--epochs", "2", "-b", "8",
            "--val-fraction", "0.5", "--lr", "0", "--quiet"]
    code, out, err = run_main(args)
    assert code == 0, err
    # lr 0 learns nothing: at chance, said on stderr and in the summary and the record, not "best"
    assert "chance" in err and "chance level" in out and "best validation" not in out
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert last["selection"]["at_chance"] is True and "warning" in last["selection"]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("at_chance") for r in records] == [None, True]
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert best["dataset"]["reader"] == "imagefolder" and len(best["dataset"]["sha256"]) == 64
    code, _, err = run_main(args)
    assert code == 2 and "--overwrite" in err
    code, _, err = run_main([*args, "--overwrite"])
    assert code == 0, err


# ---- datasets by layout -------------------------------------------------------------------------
def test_every_native_layout_is_recognised_as_a_plain_folder(tmp_path):
    from native_layouts import build_all

    from makd_cli.data import load_dataset
    from makd_cli.data.layout import detect_layouts

    owner = {"caltech101-lavid": "caltech101", "coco-objects": "coco"}  # two views of one layout: its default reader
    for name, path in build_all(tmp_path).items():
        assert detect_layouts(path) == [owner.get(name, name)], name
        assert load_dataset(str(path)).reader == owner.get(name, name)
    assert detect_layouts(make_imagefolder(tmp_path / "plain", 2, 1)) == []


def test_a_misread_folder_is_refused_with_the_name_path_forms(tmp_path):
    from native_layouts import make_cub

    from makd_cli.data import load_dataset

    cub = make_cub(tmp_path)
    assert load_dataset(str(cub)).reader == "cub" and load_dataset(str(cub.parent)).reader == "cub"  # or the folder above
    (cub / "images.txt").unlink()  # no longer the layout: an ImageFolder of one class, "images"
    with pytest.raises(MakdError, match=r"'images'.*cub:"):
        load_dataset(str(cub))
    one = tmp_path / "one" / "roses"
    one.mkdir(parents=True)
    with pytest.raises(MakdError, match="1 class"):
        load_dataset(str(one.parent))


def test_a_new_dataset_plugin_declares_its_own_layout(tmp_path):
    from makd_cli.data import load_dataset
    from makd_cli.data.base import DatasetSplits, Split
    from makd_cli.data.registry import DATASETS, LAYOUTS, register_dataset
    from makd_cli.data.layout import Layout

    @register_dataset("toy-layout", help="test", layout=Layout(markers=("toy.marker",)))
    def load_toy(root, seed=0):
        split = Split(["a", "b"], [0, 1], lambda i: None)
        return DatasetSplits("toy", ["x", "y"], split, split)

    try:
        (tmp_path / "toy.marker").write_text("")
        ds = load_dataset(str(tmp_path))
        assert ds.reader == "toy-layout" and ds.classes == ["x", "y"]
    finally:
        DATASETS.unregister("toy-layout")
        LAYOUTS.pop("toy-layout", None)


def test_data_info_names_the_reader(tmp_path):
    from native_layouts import make_cub

    code, out, err = run_main(["data", "info", make_cub(tmp_path), "--json"])
    assert code == 0, err
    assert json.loads(out)["reader"] == "cub"


# ---- hashes ------------------------------------------------------------------------------------
def test_targets_warning_once_and_resume_refusal(tmp_path, capsys):
    from types import SimpleNamespace

    from makd_cli.fileio import sha256_file
    from makd_cli.formats.targets import write_targets
    from makd_cli.input_hashes import check_resume_inputs, warn_if_targets_changed

    t = tmp_path / "t.h5"
    write_targets(t, class_mcq_targets())
    ckpt = {"head": {"targets_sha256": sha256_file(t)}}
    assert not warn_if_targets_changed(ckpt, t, "run")
    check_resume_inputs(ckpt, SimpleNamespace(targets=str(t)), "run")
    write_targets(t, class_mcq_targets(seed=3))
    assert warn_if_targets_changed(ckpt, t, "run") and not warn_if_targets_changed(ckpt, t, "run")
    assert capsys.readouterr().err.count("makd: warning") == 1
    with pytest.raises(MakdError, match="--restart"):
        check_resume_inputs(ckpt, SimpleNamespace(targets=str(t)), "run")


def test_a_prediction_cache_that_does_not_fit_is_recomputed(tmp_path):
    from makd_cli.evaluate.report import evaluate_checkpoint

    data = make_imagefolder(tmp_path / "data", per_class_train=4, per_class_test=2)
    code, _, err = run_main(["train", "--data", data, "-o", tmp_path / "run", "--student", "small_cnn", "--epochs", "1",
                             "-b", "4", "--val-fraction", "0", "--quiet"])
    assert code == 0, err
    first = evaluate_checkpoint(str(tmp_path / "run" / "best.pt"))
    (cache,) = (tmp_path / "run").glob(".eval-*.npz")
    with np.load(cache) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["logits"] = arrays["logits"][:, :2]  # cut columns: top-5 of a damaged cache would be nonsense
    with open(cache, "wb") as fh:
        np.savez(fh, **arrays)
    again = evaluate_checkpoint(str(tmp_path / "run" / "best.pt"))
    assert again["top1"] == first["top1"] and again["top5"] == first["top5"]
    with np.load(cache) as z:
        assert z["logits"].shape[1] == len(CLASSES)  # rewritten


# ---- divergence ---------------------------------------------------------------------------------
def test_divergence_guard_names_the_term_and_its_weight():
    from makd_cli.train.divergence import DivergenceGuard

    guard = DivergenceGuard({"ce": 1.0, "lavid": 40.0})
    guard.check(torch.tensor(30.0), {"ce": 2.3, "lavid": 27.7}, 0)
    guard.check(torch.tensor(900.0), {"ce": 2.0, "lavid": 898.0}, 0)  # 32x: still training
    with pytest.raises(MakdError, match=r"the lavid term \(weight 40\) reached .*1000x.*--aux-weight \(now 40\)"):
        guard.check(torch.tensor(3e19), {"ce": 2.0, "lavid": 3e19}, 4)
    nan = DivergenceGuard({"ce": 1.0, "kd": 1.0})
    with pytest.raises(MakdError, match=r"the kd term \(weight 1\) became nan.*NaN or inf in the teacher's targets"):
        nan.check(torch.tensor(math.nan), {"ce": 2.0, "kd": math.nan}, 0)
    small = DivergenceGuard({"kd": 1.0})
    small.check(torch.tensor(0.001), {"kd": 0.001}, 0)
    small.check(torch.tensor(500.0), {"kd": 500.0}, 0)  # a term starting near zero: floored at 1


def test_chance_note():
    from makd_cli.train.divergence import chance_note

    at_chance = [{"epoch": e, "val_top1": 10.0} for e in (1, 2, 3)]
    assert chance_note(at_chance, 10, 300)["at_chance"]
    assert chance_note(at_chance[:1], 10, 300) == {}  # after the first epochs only
    assert chance_note([*at_chance, {"epoch": 4, "val_top1": 40.0}], 10, 300) == {}
    assert chance_note(at_chance, 10, None) == {}  # no validation split: nothing to say
    assert chance_note(at_chance, 10, 20) == {}  # 2 validation images per class cannot tell
