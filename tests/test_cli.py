"""The command line: help texts, and bad input exits 2 with one line and no traceback."""

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from makd_cli.cli import app

runner = CliRunner()


def run_makd(*args, cwd=None):
    """Run the real console entry point in a subprocess: exit codes and stderr as a user sees them."""
    return subprocess.run([sys.executable, "-m", "makd_cli", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.mark.parametrize("cmd", ["gen-questions", "extract", "train", "eval", "inspect", "select", "data"])
def test_every_command_has_help(cmd):
    result = runner.invoke(app, [cmd, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output and len(result.output) > 300


def assert_one_line_error(proc, fragment):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert fragment in lines[0], lines[0]


def test_missing_classes_file(tmp_path):
    proc = run_makd("gen-questions", "--classes", tmp_path / "nope.txt", "-o", tmp_path / "q.jsonl")
    assert_one_line_error(proc, "does not exist")


def test_empty_class_list(tmp_path):
    (tmp_path / "c.txt").write_text("\n\n")
    proc = run_makd("gen-questions", "--classes", tmp_path / "c.txt", "-o", tmp_path / "q.jsonl")
    assert_one_line_error(proc, "empty")


def test_non_gguf_model(tmp_path, classes_file):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 definitely not gguf")
    proc = run_makd("gen-questions", "--classes", classes_file, "--llm", fake, "-o", tmp_path / "q.jsonl")
    assert_one_line_error(proc, "not a GGUF file")


def test_questions_without_placeholder(tmp_path, classes_file):
    q = tmp_path / "q.jsonl"
    q.write_text('{"format_version": 1, "kind": "mcq", "text": "What colour is it?", "options": ["red", "blue"]}\n')
    proc = run_makd("extract", "--llm", "smollm2-135m", "--questions", q, "--classes", classes_file, "-o", tmp_path / "t.h5")
    assert_one_line_error(proc, "placeholder")


def test_targets_classes_differ_from_dataset(tmp_path, tiny_data, mcq_targets_file):
    from makd_cli.formats.targets import read_targets, write_targets

    t = read_targets(mcq_targets_file)
    t.classes = ["cat", "dog", "bird"]
    write_targets(tmp_path / "other.h5", t)
    proc = run_makd("train", "--data", tiny_data, "--method", "lavid", "--targets", tmp_path / "other.h5", "--epochs", "1",
                    "--student", "small_cnn", "-o", tmp_path / "run")
    assert_one_line_error(proc, "differ from the dataset")


def test_unknown_method_and_dataset(tmp_path, tiny_data):
    proc = run_makd("train", "--data", tiny_data, "--method", "magic", "-o", tmp_path / "r", "--student", "small_cnn")
    assert_one_line_error(proc, "unknown method 'magic'")
    proc = run_makd("train", "--data", "no-such-dataset", "-o", tmp_path / "r")
    assert_one_line_error(proc, "neither a known dataset")


def test_method_needs_targets(tmp_path, tiny_data):
    proc = run_makd("train", "--data", tiny_data, "--method", "lavid", "-o", tmp_path / "r", "--student", "small_cnn", "--epochs", "1")
    assert_one_line_error(proc, "needs --targets")


def test_data_classes(tiny_data):
    result = runner.invoke(app, ["data", "classes", str(tiny_data)])
    assert result.exit_code == 0
    assert result.output.splitlines() == ["blue dot", "green bar", "red square"]
