"""`-` is standard input or output for every text file makd reads or writes, so its commands chain in
shell pipelines; a binary output given as `-` is refused in one line, and no file named `-` appears.
And user text (paths, class names) prints verbatim: `[/]` or `[red]` is never read as rich markup."""

from __future__ import annotations

import io
import json
import sys
import traceback
from pathlib import Path

import pytest

from makd_cli.formats.questions import read_questions, write_questions
from makd_cli.formats.targets import read_targets, write_targets
from conftest import CLASSES, class_mcq_targets, make_imagefolder, mcq_questions


def run(args, stdin: bytes = b"") -> tuple[object, str, str]:
    """(exit code or "traceback", stdout, stderr) of ``makd ARGS`` in this process, with ``stdin`` as input."""
    from makd_cli import cli

    out, err = io.StringIO(), io.StringIO()
    old = sys.argv, sys.stdout, sys.stderr, sys.stdin
    sys.argv, sys.stdout, sys.stderr = ["makd", *map(str, args)], out, err
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    try:
        cli.main()
        code: object = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001
        code = "traceback"
        err.write(traceback.format_exc())
    finally:
        sys.argv, sys.stdout, sys.stderr, sys.stdin = old
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def world(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = make_imagefolder(tmp_path / "shapes", per_class_train=2, per_class_test=1)
    questions = tmp_path / "q.jsonl"
    write_questions(questions, mcq_questions())
    targets = tmp_path / "t.h5"
    write_targets(targets, class_mcq_targets())
    return tmp_path, data, questions, targets


def no_dash_file(root: Path) -> None:
    assert not list(root.rglob("-")), "a file or folder named - was created"


def test_class_list_through_a_pipe(world):
    root, data, questions, _ = world
    code, classes_text, err = run(["data", "classes", data, "-o", "-"])
    assert code == 0, err
    assert classes_text == "\n".join(CLASSES) + "\n"
    code, out, err = run(["extract", "--teacher", "random", "--classes", "-", "--questions", questions, "-o", root / "t2.h5"],
                         stdin=classes_text.encode())
    assert code == 0, err
    assert read_targets(root / "t2.h5").classes == CLASSES
    no_dash_file(root)


def test_questions_and_exports_through_pipes(world):
    root, _, questions, targets = world
    # questions from standard input, selected questions to standard output (the summary goes to stderr)
    code, out, err = run(["select", targets, "--questions", "-", "-q", "2", "--out-questions", "-", "--out-targets", root / "s.h5"],
                         stdin=questions.read_bytes())
    assert code == 0, err
    assert len(out.strip().split("\n")) == 2 and "kept 2 of 3" in err
    (root / "selected.jsonl").write_text(out)
    assert read_questions(root / "selected.jsonl")
    assert read_targets(root / "s.h5").question_ids == [q.id for q in read_questions(root / "selected.jsonl")]
    # LaViD export to standard output, imported back from standard input
    code, lavid_json, err = run(["export", "targets", targets, "--to", "lavid", "-o", "-"])
    assert code == 0, err
    assert set(json.loads(lavid_json)) == set(CLASSES)
    (root / "c.txt").write_text("\n".join(CLASSES) + "\n")
    code, out, err = run(["import", "targets", "-", "--from", "lavid", "--classes", root / "c.txt", "--questions", questions,
                          "-o", root / "back.h5"], stdin=lavid_json.encode())
    assert code == 0, err
    assert read_targets(root / "back.h5").probs.shape == (3, 3, 4)
    no_dash_file(root)


def test_lavid_questions_import_to_standard_output(world):
    root = world[0]
    code, out, err = run(["import", "questions", "-", "-o", "-"], stdin=b"What colour is the class?\n1. Red\n2. Blue\n")
    assert code == 0, err
    rec = json.loads(out)
    assert rec["text"] == "What colour is the <object>?" and rec["options"] == ["Red", "Blue"]
    no_dash_file(root)


@pytest.mark.parametrize("name", ["extract", "inspect", "train", "select-targets", "import-targets", "export-images"])
def test_a_binary_output_to_standard_output_is_refused(world, name):
    root, data, questions, targets = world
    (root / "c.txt").write_text("\n".join(CLASSES) + "\n")
    argv = {
        "extract": ["extract", "--teacher", "random", "--classes", root / "c.txt", "--questions", questions, "-o", "-"],
        "inspect": ["inspect", targets, "-o", "-", "--no-terminal"],
        "train": ["train", "--data", data, "--student", "small_cnn", "--epochs", "1", "-o", "-", "--quiet"],
        "select-targets": ["select", targets, "--questions", questions, "-q", "2", "--out-questions", root / "sq.jsonl",
                           "--out-targets", "-"],
        "import-targets": ["import", "targets", root / "x.json", "--from", "lavid", "--classes", root / "c.txt",
                           "--questions", questions, "-o", "-"],
        "export-images": ["inspect", targets, "--view", "heatmap", "-o", "-", "--no-terminal"],
    }[name]
    code, out, err = run(argv)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "standard output" in lines[0] and "Traceback" not in err
    assert out == ""
    no_dash_file(root)


def test_two_inputs_cannot_both_be_standard_input(world):
    root, data, questions, targets = world
    code, _, err = run(["extract", "--teacher", "random", "--classes", "-", "--questions", "-", "-o", root / "t3.h5"],
                       stdin=b"a\nb\n")
    assert code == 2 and "only one input can be `-`" in err, err


def test_a_binary_input_from_standard_input_is_refused(world):
    root, _, questions, _ = world
    code, _, err = run(["inspect", "-", "--quality"], stdin=b"\x89HDF")
    assert code == 2 and "standard input" in err and len(err.strip().splitlines()) == 1, err


# ---- markup ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["bad [/] name", "[red]x", "a [bold]b[/bold] c", "x:smile:y"])
def test_user_text_in_errors_prints_verbatim(world, name):
    root = world[0]
    missing = root / name / "c.txt"
    code, _, err = run(["extract", "--teacher", "random", "--classes", missing, "--questions", missing, "-o", root / "t.h5"])
    assert code == 2 and "Traceback" not in err, err
    assert str(missing) in err and len(err.strip().splitlines()) == 1, err


def test_user_text_in_summaries_prints_verbatim(world, tmp_path):
    root, _, questions, _ = world
    odd = root / "out [/] [red]dir"
    (root / "c.txt").write_text("a [/] class\n[red]b\nc :smile:\n")
    code, out, err = run(["extract", "--teacher", "random", "--classes", root / "c.txt", "--questions", questions, "-o", odd / "t.h5"])
    assert code == 0, err
    assert str(odd / "t.h5") in out.replace("\n", "")
    code, out, err = run(["inspect", odd / "t.h5", "--view", "class", "--class", "a [/] class", "--no-terminal"])
    assert code == 0, err
    code, out, err = run(["inspect", odd / "t.h5", "--view", "heatmap"])
    assert code == 0, err
    assert "a [/] class" in out and "[red]b" in out and ":smile:" in out
