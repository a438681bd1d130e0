"""`makd inspect --quality` and `makd select` on files: informative questions are kept, constant ones dropped."""

import json

import numpy as np
from typer.testing import CliRunner

from makd_cli.cli import app
from makd_cli.fileio import sha256_file
from makd_cli.formats.questions import Question, read_questions, write_questions
from makd_cli.formats.targets import Targets, read_targets, write_targets

CLASSES = [f"class {i}" for i in range(6)]


def padded_files(tmp_path):
    """4 informative questions (each class a different answer pattern) padded with 4 constant ones."""
    qs = [Question("mcq", f"Informative {i}: which kind of <object>?", ["a", "b", "c"]) for i in range(4)]
    qs += [Question("mcq", f"Constant {i}: which kind of <object>?", ["a", "b", "c"]) for i in range(4)]
    write_questions(tmp_path / "q.jsonl", qs)
    rng = np.random.default_rng(0)
    probs = np.zeros((6, 8, 3))
    for q in range(4):
        answers = rng.permutation(np.arange(6) % 3)
        probs[np.arange(6), q, answers] = 1.0
    probs[:, 4:, 0] = 1.0
    probs = 0.9 * probs + 0.1 / 3
    write_targets(tmp_path / "t.h5", Targets("class_mcq", CLASSES, [q.id for q in qs], probs, questions_sha256=sha256_file(tmp_path / "q.jsonl")))
    return qs


def test_quality_flags_constant_questions(tmp_path):
    qs = padded_files(tmp_path)
    r = CliRunner().invoke(app, ["inspect", str(tmp_path / "t.h5"), "--quality", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    low = {q["id"] for q in report["questions"] if q["low_entropy"]}
    assert low == {q.id for q in qs[4:]}
    r = CliRunner().invoke(app, ["inspect", str(tmp_path / "t.h5"), "--questions", str(tmp_path / "q.jsonl"),
                                 "--drop-low-entropy", str(tmp_path / "kept.jsonl"), "--json"])
    assert r.exit_code == 0, r.output
    assert [q.id for q in read_questions(tmp_path / "kept.jsonl")] == [q.id for q in qs[:4]]


def test_select_keeps_informative_questions(tmp_path):
    qs = padded_files(tmp_path)
    r = CliRunner().invoke(app, ["select", str(tmp_path / "t.h5"), "--questions", str(tmp_path / "q.jsonl"), "-q", "4",
                                 "--out-questions", str(tmp_path / "sq.jsonl"), "--out-targets", str(tmp_path / "st.h5"), "--json"])
    assert r.exit_code == 0, r.output
    kept = read_questions(tmp_path / "sq.jsonl")
    assert {q.id for q in kept} == {q.id for q in qs[:4]}
    t = read_targets(tmp_path / "st.h5")
    assert t.question_ids == [q.id for q in kept] and t.probs.shape == (6, 4, 3)
    assert t.questions_sha256 == sha256_file(tmp_path / "sq.jsonl")
    report = json.loads(r.output)
    assert report["after"]["low_entropy_questions"] == 0 < report["before"]["low_entropy_questions"]
