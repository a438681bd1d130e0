"""makd inspect A.h5 --compare B.h5: agreement between teachers, on targets built in code."""

import json
import subprocess
import sys

import numpy as np
import pytest

from makd_cli.errors import MakdError
from makd_cli.formats.targets import Targets, write_targets
from makd_cli.inspect.compare import compare_targets

CLASSES = ["a", "b", "c", "d"]


def mcq(seed, classes=CLASSES, q=3, m=4, teacher="t"):
    rng = np.random.default_rng(seed)
    return Targets("class_mcq", list(classes), [f"q{i}" for i in range(q)], rng.dirichlet(np.ones(m) * 0.3, size=(len(classes), q)),
                   teacher=teacher)


def test_identical_teachers_agree_fully():
    a = mcq(0)
    r = compare_targets(a, mcq(0))
    assert r["overall"]["argmax_agreement"] == 1.0 and r["overall"]["mean_js"] == pytest.approx(0, abs=1e-9)
    assert r["overall"]["distance_correlation"] == pytest.approx(1.0)
    assert len(r["questions_detail"]) == 3 and all(q["argmax_agreement"] == 1.0 for q in r["questions_detail"])


def test_known_disagreement_and_alignment():
    a = mcq(1)
    # b: the same answers, classes and questions stored in another order, and question q1's options reversed.
    probs = a.probs.copy()
    probs[:, 1] = probs[:, 1, ::-1]
    b = Targets("class_mcq", CLASSES[::-1], ["q2", "q1", "q0"], probs[::-1][:, ::-1])
    r = compare_targets(a, b)
    by_id = {q["id"]: q for q in r["questions_detail"]}
    assert by_id["q0"]["argmax_agreement"] == 1.0 and by_id["q2"]["mean_js"] == pytest.approx(0, abs=1e-9)
    assert by_id["q1"]["argmax_agreement"] < 1.0 and by_id["q1"]["mean_js"] > 0.05
    # Reversing the options keeps the distances between classes: the class-distance matrix is the same.
    assert by_id["q1"]["distance_correlation"] == pytest.approx(1.0)
    # Disjoint one-hot answers are 1 bit apart.
    one = np.zeros((4, 1, 2)); one[..., 0] = 1
    other = np.zeros((4, 1, 2)); other[..., 1] = 1
    r = compare_targets(Targets("class_mcq", CLASSES, ["q"], one), Targets("class_mcq", CLASSES, ["q"], other))
    assert r["overall"]["mean_js"] == pytest.approx(1.0) and r["overall"]["argmax_agreement"] == 0.0


def test_yes_no_and_vectors():
    rng = np.random.default_rng(2)
    p = rng.uniform(size=(4, 5))
    r = compare_targets(Targets("class_yesno", CLASSES, list("vwxyz"), p), Targets("class_yesno", CLASSES, list("vwxyz"), 1 - p))
    assert r["overall"]["argmax_agreement"] == 0.0
    vec = Targets("class_vector", CLASSES, [], rng.normal(size=(4, 8)))
    r = compare_targets(mcq(3), vec)
    assert r["questions"] == 0 and -1 <= r["overall"]["distance_correlation"] <= 1 and "mean_js" not in r["overall"]


def test_mismatches_are_one_line():
    with pytest.raises(MakdError, match="other classes"):
        compare_targets(mcq(0), mcq(0, classes=["a", "b", "c", "e"]))
    with pytest.raises(MakdError, match="other questions"):
        compare_targets(mcq(0), mcq(0, q=4))
    with pytest.raises(MakdError, match="shape"):
        compare_targets(mcq(0), mcq(0, m=5))


def test_cli_compare_json(tmp_path):
    for name, seed in (("a", 0), ("b", 0), ("c", 5)):
        write_targets(tmp_path / f"{name}.h5", mcq(seed, teacher=name))
    run = [sys.executable, "-m", "makd_cli", "inspect", tmp_path / "a.h5", "--compare", tmp_path / "b.h5", "--compare", tmp_path / "c.h5"]
    proc = subprocess.run([*map(str, run), "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert [c["teacher"] for c in out["comparisons"]] == ["b", "c"]
    assert out["comparisons"][0]["overall"]["argmax_agreement"] == 1.0 and out["comparisons"][1]["overall"]["argmax_agreement"] < 1.0
    proc = subprocess.run(list(map(str, run)), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "overall" in proc.stdout
    write_targets(tmp_path / "d.h5", mcq(0, classes=["a", "b", "c", "x"]))
    proc = subprocess.run(list(map(str, [sys.executable, "-m", "makd_cli", "inspect", tmp_path / "a.h5", "--compare", tmp_path / "d.h5"])),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "other classes" in proc.stderr
