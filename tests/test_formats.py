"""Formats round-trip, and every way a file can be wrong gives one clear MakdError."""

import json

import h5py
import numpy as np
import pytest
import torch

from makd_cli.errors import MakdError
from makd_cli.formats.checkpoint import load_checkpoint, save_checkpoint
from makd_cli.formats.questions import Question, read_classes, read_questions, write_questions
from makd_cli.formats.targets import Targets, read_targets, write_targets

from conftest import CLASSES, class_mcq_targets, mcq_questions


def test_questions_round_trip(tmp_path):
    qs = mcq_questions() + []
    p = tmp_path / "q.jsonl"
    write_questions(p, qs)
    back = read_questions(p)
    assert [q.to_record() for q in back] == [q.to_record() for q in qs]
    assert back[0].instantiate("cat").endswith("of the cat?")


def test_question_ids_are_stable_and_content_based():
    a = Question("mcq", "Is the <object> big?", ["yes", "no"])
    b = Question("mcq", "Is the   <object> big?", ["yes", "no"])
    c = Question("mcq", "Is the <object> big?", ["no", "yes"])
    assert a.id == b.id != c.id


@pytest.mark.parametrize("line, message", [
    ("not json", "not valid JSON"),
    (json.dumps({"format_version": 2, "kind": "mcq", "text": "x <object>", "options": ["a", "b"]}), "format_version 2"),
    (json.dumps({"format_version": 1, "kind": "essay", "text": "x"}), "kind 'essay'"),
    (json.dumps({"format_version": 1, "kind": "mcq", "text": "What is it?", "options": ["a", "b"]}), "placeholder"),
    (json.dumps({"format_version": 1, "kind": "mcq", "text": "What is <object>?", "options": ["a"]}), "at least 2 options"),
])
def test_questions_bad_input(tmp_path, line, message):
    p = tmp_path / "q.jsonl"
    p.write_text(line + "\n")
    with pytest.raises(MakdError, match=message):
        read_questions(p)


def test_classes_file_errors(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("\n# only a comment\n")
    with pytest.raises(MakdError, match="empty"):
        read_classes(p)
    p.write_text("a\nb\na\n")
    with pytest.raises(MakdError, match="repeats"):
        read_classes(p)
    with pytest.raises(MakdError, match="does not exist"):
        read_classes(tmp_path / "missing.txt")


def test_targets_round_trip(tmp_path):
    t = class_mcq_targets()
    p = tmp_path / "t.h5"
    write_targets(p, t)
    back = read_targets(p)
    assert back.classes == CLASSES and back.question_ids == t.question_ids and back.kind == "class_mcq"
    np.testing.assert_allclose(back.probs, t.probs, rtol=0, atol=0)
    np.testing.assert_allclose(back.logits, t.logits)
    assert back.option_labels == ["1", "2", "3", "4"]


def test_image_targets_round_trip(tmp_path):
    t = Targets("image_yesno", CLASSES, ["q1", "q2"], np.full((4, 2), 0.25), images=["a", "b", "c", "d"], labels=[0, 1, 2, 0])
    write_targets(tmp_path / "i.h5", t)
    back = read_targets(tmp_path / "i.h5")
    assert back.images == ["a", "b", "c", "d"] and back.labels.tolist() == [0, 1, 2, 0]


def test_targets_wrong_version_shape_and_ids(tmp_path):
    p = tmp_path / "t.h5"
    write_targets(p, class_mcq_targets())
    with h5py.File(p, "r+") as f:
        f.attrs["format_version"] = 7
    with pytest.raises(MakdError, match="version 7"):
        read_targets(p)
    with pytest.raises(MakdError, match="shape"):
        Targets("class_mcq", CLASSES, ["a", "b"], np.full((3, 3, 2), 0.5))
    with pytest.raises(MakdError, match="sum to 1"):
        Targets("class_mcq", CLASSES, ["a"], np.full((3, 1, 2), 0.9))
    with pytest.raises(MakdError, match="repeat"):
        Targets("class_yesno", CLASSES, ["a", "a"], np.full((3, 2), 0.5))
    t = class_mcq_targets()
    with pytest.raises(MakdError, match="differ from the dataset"):
        t.check_classes(["blue dot", "green bar", "yellow star"])
    with pytest.raises(MakdError, match="different order"):
        t.check_classes(list(reversed(CLASSES)))
    (tmp_path / "x.h5").write_text("not hdf5")
    with pytest.raises(MakdError, match="not an HDF5"):
        read_targets(tmp_path / "x.h5")


def test_checkpoint_loads_weights_only(tmp_path):
    p = tmp_path / "c.pt"
    save_checkpoint(p, {"arch": "small_cnn", "num_classes": 3, "classes": CLASSES, "head": {"extra_dim": 0}, "config": {"seed": 0},
                        "model": {"w": torch.ones(2)}, "metrics": {"val_top1": 50.0}})
    raw = torch.load(p, weights_only=True)
    assert raw["format"] == "makd-checkpoint" and raw["format_version"] == 1
    assert load_checkpoint(p)["metrics"]["val_top1"] == 50.0
    torch.save({"format": "makd-checkpoint", "format_version": 1, "arch": "x"}, tmp_path / "bad.pt")
    with pytest.raises(MakdError, match="lacks"):
        load_checkpoint(tmp_path / "bad.pt")
    (tmp_path / "junk.pt").write_text("junk")
    with pytest.raises(MakdError, match="not a loadable"):
        load_checkpoint(tmp_path / "junk.pt")
