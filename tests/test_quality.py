"""Target quality, question selection and control targets on hand-built matrices."""

from __future__ import annotations

import json

import numpy as np
import pytest

from makd_cli.controls import CONTROLS, apply_control, class_shuffled, derangement, gaussian_per_image, random_codes
from makd_cli.errors import MakdError
from makd_cli.formats.questions import Question
from makd_cli.formats.targets import Targets
from makd_cli.quality import format_quality_table, quality_report
from makd_cli.select import select_questions, subset_questions, subset_targets


def yesno(p, classes=None) -> Targets:
    p = np.asarray(p, dtype=float)
    C, Q = p.shape
    return Targets(kind="class_yesno", classes=classes or [f"c{i}" for i in range(C)],
                   question_ids=[f"q{j}" for j in range(Q)], probs=p, teacher="t", questions_sha256="abc")


def mcq(probs) -> Targets:
    probs = np.asarray(probs, dtype=float)
    C, Q, M = probs.shape
    return Targets(kind="class_mcq", classes=[f"c{i}" for i in range(C)], question_ids=[f"q{j}" for j in range(Q)],
                   probs=probs, option_labels=[chr(65 + m) for m in range(M)], teacher="t")


def onehot(idx, M):
    return np.eye(M)[np.asarray(idx)]


def image_yesno(n_per_class=3, C=4, Q=5, seed=0) -> Targets:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(C), n_per_class)
    return Targets(kind="image_yesno", classes=[f"c{i}" for i in range(C)], question_ids=[f"q{j}" for j in range(Q)],
                   probs=rng.uniform(size=(len(labels), Q)), images=[f"img{i}" for i in range(len(labels))],
                   labels=labels, teacher="mm")


def by_id(report):
    return {q["id"]: q for q in report["questions"]}


def test_constant_question_has_zero_entropy_and_splits_nothing():
    # q0 constant "yes", q1 splits classes {0,1} from {2,3}, q2 all-different mcq answers
    p = np.array([[0.9, 0.9, 0.1], [0.9, 0.8, 0.2], [0.9, 0.1, 0.7], [0.9, 0.2, 0.9]])
    qs = by_id(quality_report(yesno(p)))
    assert qs["q0"]["answer_entropy"] == 0 and qs["q0"]["groups"] == 1 and qs["q0"]["pairs_split"] == 0
    assert qs["q0"]["mutual_information"] == pytest.approx(0) and qs["q0"]["spread"] == pytest.approx(0)
    assert qs["q0"]["low_entropy"] and not qs["q1"]["low_entropy"]
    assert qs["q1"]["answer_entropy"] == pytest.approx(1.0) and qs["q1"]["groups"] == 2
    assert qs["q1"]["pairs_split"] == pytest.approx(4 / 6)

    m = mcq(np.stack([onehot([0, 0, 1, 2], 4), onehot([0, 1, 2, 3], 4)], axis=1))  # C=4, Q=2, M=4
    qm = by_id(quality_report(m))
    assert qm["q0"]["groups"] == 3 and qm["q1"]["groups"] == 4 and qm["q1"]["pairs_split"] == 1.0
    assert qm["q1"]["answer_entropy"] == pytest.approx(1.0)  # uniform over 4 options = log 4
    assert qm["q1"]["mutual_information"] == pytest.approx(1.0)


def test_identical_signatures_are_indistinguishable():
    p = np.array([[0.2, 0.7, 0.4], [0.2, 0.7, 0.4], [0.9, 0.1, 0.5]])
    r = quality_report(yesno(p, ["shirt", "tshirt", "boot"]))
    t = r["overall"]["teacher"]
    assert t["min_distance"] == 0.0 and t["indistinguishable_pairs"] == 1
    near = {c["name"]: c for c in r["classes"]}
    assert near["shirt"]["nearest"] == "tshirt" and near["shirt"]["distance"] == 0.0
    assert near["boot"]["distance"] > 0
    assert r["overall"]["random"]["indistinguishable_pairs"] == 0
    assert r["summary"]["closest_pair"] == ["shirt", "tshirt"]
    json.dumps(r)  # serialisable


def test_effective_rank_and_distance_of_known_matrix():
    r = quality_report(yesno(np.eye(3)))  # three orthonormal signatures
    t = r["overall"]["teacher"]
    assert t["effective_rank"] == pytest.approx(3.0)
    assert t["min_distance"] == pytest.approx(np.sqrt(2)) and t["mean_distance"] == pytest.approx(np.sqrt(2))


def test_random_baseline_is_seeded_and_stable():
    t = mcq(np.full((5, 6, 3), 1 / 3))
    a, b = quality_report(t, seed=3, n_random=3), quality_report(t, seed=3, n_random=3)
    c = quality_report(t, seed=4, n_random=3)
    assert a["overall"]["random"] == b["overall"]["random"]
    assert a["overall"]["random"] != c["overall"]["random"]
    assert a["overall"]["teacher"]["min_distance"] == 0.0 and a["overall"]["teacher"]["indistinguishable_pairs"] == 10
    assert a["overall"]["random"]["min_distance"] > 0


def test_per_image_targets_are_averaged_per_class():
    t = image_yesno()
    r = quality_report(t)
    assert r["num_questions"] == 5 and len(r["classes"]) == 4 and r["classes_without_targets"] == []
    t.probs[:] = 0.3  # every image answers alike: nothing is separable
    r = quality_report(t)
    assert r["overall"]["teacher"]["indistinguishable_pairs"] == 6 and r["summary"]["low_entropy_questions"] == 5


def test_format_table_renders():
    from rich.console import Console

    console = Console(width=120, record=True)
    console.print(format_quality_table(quality_report(yesno(np.eye(3)))))
    assert "random" in console.export_text()


def padded_targets():
    """8 classes; informative q at indices 2, 5, 6 (a 3-bit code); constant questions elsewhere."""
    C, Q = 8, 9
    p = np.full((C, Q), 0.9)
    p[:, 0] = 0.1
    bits = (np.arange(C)[:, None] >> np.arange(3)) & 1
    p[:, [2, 5, 6]] = np.where(bits == 1, 0.95, 0.05)
    return yesno(p)


@pytest.mark.parametrize("strategy", ["maximin", "pairs"])
def test_selection_picks_informative_questions(strategy):
    t = padded_targets()
    chosen = select_questions(t, 3, strategy)
    assert sorted(chosen) == [2, 5, 6]
    assert chosen == select_questions(t, 3, strategy)  # deterministic
    sub = subset_targets(t, chosen)
    assert sub.question_ids == [t.question_ids[i] for i in chosen] and sub.probs.shape == (8, 3)
    assert quality_report(sub)["overall"]["teacher"]["indistinguishable_pairs"] == 0
    assert sub.meta["selected_from"]["indices"] == chosen


def test_selection_errors_and_question_subset():
    t = padded_targets()
    for q in (0, 10):
        with pytest.raises(MakdError):
            select_questions(t, q)
    with pytest.raises(MakdError):
        select_questions(t, 2, "nope")
    qs = [Question(kind="yesno", text=f"Is <object> thing {i}?") for i in range(3)]
    ids = [qs[2].id, qs[0].id]
    assert [q.id for q in subset_questions(qs, ids)] == ids
    with pytest.raises(MakdError):
        subset_questions(qs, ["qmissing"])


def test_derangement_is_a_permutation_without_fixed_points():
    rng = np.random.default_rng(0)
    for n in (2, 3, 10, 50):
        perm = derangement(n, rng)
        assert sorted(perm.tolist()) == list(range(n)) and not np.any(perm == np.arange(n))
    with pytest.raises(MakdError):
        derangement(1, rng)


def test_shuffled_gives_every_class_another_class_targets():
    p = np.arange(20, dtype=float).reshape(5, 4) / 20  # rows all distinct
    t = yesno(p)
    s = class_shuffled(t, seed=1)
    perm = s.meta["permutation"]
    assert s.probs.shape == t.probs.shape and s.kind == t.kind and s.classes == t.classes
    for c in range(5):
        assert perm[c] != c and np.allclose(s.probs[c], t.probs[perm[c]])
        assert not np.allclose(s.probs[c], t.probs[c])
    assert sorted(s.probs[:, 0].tolist()) == sorted(t.probs[:, 0].tolist())
    assert class_shuffled(t, seed=1).meta["permutation"] == perm

    ti = image_yesno()
    si = class_shuffled(ti, seed=2)
    mp = si.meta["permutation"]
    assert np.array_equal(si.labels, ti.labels) and si.probs.shape == ti.probs.shape
    for i, c in enumerate(ti.labels):  # each row is some image of class perm[c]
        src = ti.probs[ti.labels == mp[c]]
        assert mp[c] != c and np.any(np.all(np.isclose(src, si.probs[i]), axis=1))


def test_random_codes_and_gaussian_shapes_and_seeds():
    m = mcq(np.full((4, 3, 5), 0.2))
    r = random_codes(m, seed=7)
    assert r.kind == "class_mcq" and r.probs.shape == (4, 3, 5) and r.teacher == "control:random-codes"
    assert r.question_ids == m.question_ids and r.classes == m.classes
    assert np.allclose(r.probs.sum(-1), 1) and np.array_equal(r.probs, random_codes(m, seed=7).probs)
    y = random_codes(yesno(np.full((3, 4), 0.5)), seed=0)
    assert y.probs.shape == (3, 4) and 0 <= y.probs.min() and y.probs.max() <= 1
    ti = image_yesno()
    ri = random_codes(ti, seed=0)
    assert ri.probs.shape == ti.probs.shape and np.allclose(ri.probs[0], ri.probs[1])  # same class, same code

    g = gaussian_per_image(ti, seed=1)
    assert g.kind == "image_yesno" and g.probs.shape == ti.probs.shape and g.images == ti.images
    assert np.allclose(g.probs, 1 / (1 + np.exp(-g.logits)), atol=1e-6)
    g2 = apply_control("gaussian", m, seed=1, labels=[0, 1, 2, 3, 3])
    assert g2.probs.shape == (5, 3) and g2.kind == "image_yesno"
    with pytest.raises(MakdError):
        gaussian_per_image(m)  # per-class targets need labels


def test_apply_control_names():
    assert set(CONTROLS) == {"random-codes", "gaussian", "shuffled"}
    t = yesno(np.eye(3))
    assert apply_control("shuffled", t, seed=0).teacher == "control:shuffled"
    with pytest.raises(MakdError):
        apply_control("nonsense", t, seed=0)
