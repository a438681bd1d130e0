"""The whole pipeline with the real SmolLM2-135M GGUF: gen-questions -> extract -> train -> eval -> inspect."""

import json

import pytest
from typer.testing import CliRunner

from makd_cli.cli import app
from makd_cli.formats.questions import read_questions
from makd_cli.formats.targets import read_targets

from conftest import CLASSES

pytestmark = pytest.mark.slow


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, f"{args}: {result.output} {result.exception!r}"
    return result


def test_lavid_pipeline_end_to_end(tmp_path, tiny_data, classes_file):
    q = tmp_path / "questions.jsonl"
    report = json.loads(invoke("gen-questions", "--llm", "smollm2-135m", "--classes", classes_file, "--kind", "mcq", "-n", 2,
                               "--options", 3, "--seed", 1, "--threads", 2, "-o", q, "--json").output)
    questions = read_questions(q)
    assert report["kept"] == len(questions) >= 1
    assert all(len(x.options) == 3 and "<object>" in x.text for x in questions)
    assert questions[0].source["model"].startswith("SmolLM2")

    t_path = tmp_path / "targets.h5"
    summary = json.loads(invoke("extract", "--llm", "smollm2-135m", "--questions", q, "--classes", classes_file, "-o", t_path,
                                "--threads", 2, "--json").output)
    assert summary["prompts"] == len(CLASSES) * len(questions)
    t = read_targets(t_path)
    assert t.kind == "class_mcq" and t.probs.shape == (3, len(questions), 3) and t.classes == CLASSES

    run = tmp_path / "run"
    invoke("train", "--data", tiny_data, "--targets", t_path, "--method", "lavid", "--student", "small_cnn", "--epochs", 2,
           "--batch-size", 8, "--aux-weight", 10, "-o", run, "--quiet")
    ev = json.loads(invoke("eval", run / "best.pt", "--json").output)
    r = ev["results"][0]
    assert r["n"] == 12 and r["method"] == "lavid" and r["aspect_agreement"]["mae"] >= 0

    png = tmp_path / "heatmap.png"
    invoke("inspect", t_path, "-o", png, "--questions", q, "--no-terminal")
    assert png.stat().st_size > 1000
