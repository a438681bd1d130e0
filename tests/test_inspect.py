"""``makd inspect`` views: each writes a picture whose content follows its input, and bad input is one MakdError.

Checkpoints are built in code (a small_cnn StudentNet saved with the keys ``makd train`` writes), so no
test trains; the dataset is the tiny ImageFolder of conftest.
"""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console

from makd_cli.errors import MakdError
from makd_cli.formats.checkpoint import save_checkpoint
from makd_cli.formats.questions import Question, write_questions
from makd_cli.formats.targets import Targets, write_targets
from makd_cli.inspect.run import InspectConfig, run_inspect
from makd_cli.inspect.views import VIEWS
from makd_cli.students import build_student

from conftest import CLASSES, make_imagefolder

Q = 5
YESNO_QUESTIONS = [Question("yesno", f"Does the <object> show feature {i}?") for i in range(Q)]


def render(source, view, out=None, question=None, class_name=None, top=None, questions=None, terminal=True, **options):
    console = Console(file=io.StringIO(), width=100)
    result = run_inspect(InspectConfig(source=source, output=out, view=view, question=question, class_name=class_name, top=top,
                                       questions=questions, terminal=terminal, options=options), console=console)
    result["_terminal"] = console.file.getvalue()
    return result


def pixels(path) -> np.ndarray:
    arr = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
    assert arr.std() > 5, f"{path} is (nearly) one colour"
    return arr


def differ(a, b) -> bool:
    pa, pb = pixels(a), pixels(b)
    return pa.shape != pb.shape or bool(np.any(pa != pb))


def yesno(p, classes=None, teacher="t") -> Targets:
    p = np.asarray(p, dtype=float)
    return Targets("class_yesno", classes or [f"class {i}" for i in range(p.shape[0])], [q.id for q in YESNO_QUESTIONS][: p.shape[1]],
                   p, teacher=teacher)


def mcq(seed=0, C=4, q=3, m=4) -> Targets:
    z = np.random.default_rng(seed).standard_normal((C, q, m)) * 2
    return Targets("class_mcq", [f"class {i}" for i in range(C)], [f"m{j}" for j in range(q)], np.exp(z) / np.exp(z).sum(-1, keepdims=True),
                   option_labels=["A", "B", "C", "D"][:m], teacher="t")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Targets files, a dataset, a MaKD checkpoint with an aspect head and a CE one without."""
    root = tmp_path_factory.mktemp("inspect")
    rng = np.random.default_rng(0)
    w = {"root": root}
    w["yn1"], w["yn2"] = root / "yn1.h5", root / "yn2.h5"
    write_targets(w["yn1"], yesno(rng.uniform(size=(6, Q))))
    write_targets(w["yn2"], yesno(rng.uniform(size=(6, Q))))
    w["mcq"] = root / "mcq.h5"
    write_targets(w["mcq"], mcq())
    w["vec"] = root / "vec.h5"
    write_targets(w["vec"], Targets("class_vector", ["a", "b", "c"], ["d0", "d1"], rng.standard_normal((3, 2))))
    w["questions"] = root / "q.jsonl"
    write_questions(w["questions"], YESNO_QUESTIONS)
    w["data"] = make_imagefolder(root / "shapes", per_class_train=4, per_class_test=3)
    # teacher targets over the dataset's classes: two different ones for the checkpoint views
    w["t1"], w["t2"] = root / "t1.h5", root / "t2.h5"
    write_targets(w["t1"], yesno(rng.uniform(size=(3, Q)), CLASSES))
    write_targets(w["t2"], yesno(rng.uniform(size=(3, Q)), CLASSES))
    w["makd"] = make_checkpoint(root / "run_makd", w["data"], w["t1"], aspect=True)
    w["ce"] = make_checkpoint(root / "run_ce", w["data"], None, aspect=False)
    t = mcq(C=3)
    t.classes = list(CLASSES)
    w["lavid_t"] = root / "lavid_t.h5"
    write_targets(w["lavid_t"], t)
    w["lavid"] = make_checkpoint(root / "run_lavid", w["data"], w["lavid_t"], aspect=True, lavid_mcq=t)
    return w


def make_checkpoint(folder, data, targets, aspect: bool, seed: int = 0, lavid_mcq: Targets | None = None):
    """What `makd train` writes: a MaKD student (aspect=True), a CE one, or a LaViD one on mcq targets."""
    torch.manual_seed(seed)
    if lavid_mcq is not None:
        shape, method, kind, ids = list(lavid_mcq.probs.shape[1:]), "lavid", "class_mcq", list(lavid_mcq.question_ids)
    else:
        shape, method, kind, ids = [Q], "makd", "class_yesno", [q.id for q in YESNO_QUESTIONS]
    width = int(np.prod(shape)) if aspect else 0
    model = build_student("small_cnn", len(CLASSES), width, image_size=16)
    terms = [{"method": method, "extra_dim": width, "weight": 4.0, "shape": shape}] if aspect else []
    head = {"method": method if aspect else "ce", "extra_dim": width, "terms": terms,
            "slices": {method: [0, width]} if aspect else {}, "targets_kind": kind if aspect else None,
            "question_ids": ids if aspect else [], "targets_sha256": None}
    history = [{"epoch": e + 1, "lr": 0.01 if e < 2 else 0.001, "train_loss": 3.0 / (e + 1), "train_ce": 1.5 / (e + 1),
                **({f"train_{method}": 1.5 / (e + 1) ** 0.5} if aspect else {}), "val_top1": 30.0 + 10 * e} for e in range(4)]
    ckpt = {"arch": "small_cnn", "num_classes": len(CLASSES), "classes": list(CLASSES), "image_size": 16, "native_size": None,
            "head": head, "config": {"data": str(data), "targets": str(targets) if targets else None, "seed": 0,
                                     "method": head["method"], "student": "small_cnn"},
            "model": model.state_dict(), "epoch": 3, "history": history, "metrics": history[-1]}
    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint(folder / "best.pt", ckpt)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    return folder


def test_every_view_is_registered():
    assert {"heatmap", "question", "class", "quality", "curves", "tsne", "image", "gradcam"} <= set(VIEWS.names())


# ------------------------------------------------------------------------------------------- targets views
def test_heatmap_follows_the_targets_and_top_keeps_the_varying_questions(world, tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    render(world["yn1"], "heatmap", a)
    render(world["yn2"], "heatmap", b)
    assert differ(a, b)
    # q2 varies most across classes; --top 1 keeps it and the class farthest from the mean
    p = np.full((4, Q), 0.5)
    p[:, 2] = [0.0, 1.0, 0.45, 0.5]
    p[:, 4] = [0.4, 0.6, 0.5, 0.5]
    write_targets(tmp_path / "t.h5", yesno(p))
    r = render(tmp_path / "t.h5", "heatmap", tmp_path / "top.svg", top=1)
    assert r["question_ids"] == [YESNO_QUESTIONS[2].id] and len(r["classes"]) == 1 and r["classes"][0] in ("class 0", "class 1")
    assert (tmp_path / "top.svg").read_text().lstrip().startswith("<?xml")


def test_heatmap_of_many_classes_stays_fast(tmp_path):
    import time

    rng = np.random.default_rng(1)
    ids = [f"q{j}" for j in range(50)]
    write_targets(tmp_path / "big.h5", Targets("class_yesno", [f"a long class name number {i}" for i in range(200)], ids,
                                               rng.uniform(size=(200, 50))))
    t0 = time.perf_counter()
    render(tmp_path / "big.h5", "heatmap", tmp_path / "big.png", terminal=False)
    assert time.perf_counter() - t0 < 15  # bench/inspect_render.py measures it properly (< 5 s)
    assert pixels(tmp_path / "big.png").shape[0] > 1000


def test_question_view_shows_options_per_class_and_follows_the_question(world, tmp_path):
    r = render(world["mcq"], "question", tmp_path / "q0.png", question="m0")
    render(world["mcq"], "question", tmp_path / "q1.png", question="2")  # a 1-based position works too
    assert differ(tmp_path / "q0.png", tmp_path / "q1.png")
    t = mcq()
    got = {c: row for c, row in zip(r["classes"], r["matrix"])}
    for i, c in enumerate(t.classes):
        np.testing.assert_allclose(got[c], t.probs[i, 0], atol=1e-4)
    assert r["options"] == ["A", "B", "C", "D"]
    y = render(world["yn1"], "question", None, question=YESNO_QUESTIONS[1].id, questions=world["questions"])
    assert y["options"] == ["yes", "no"] and "feature 1" in y["text"] and "feature 1" in y["_terminal"]


def test_question_view_with_option_texts(tmp_path):
    qs = [Question("mcq", "What colour is the <object>?", ["red", "green", "blue"])]
    write_questions(tmp_path / "q.jsonl", qs)
    p = np.array([[[0.8, 0.1, 0.1]], [[0.1, 0.1, 0.8]]])
    write_targets(tmp_path / "t.h5", Targets("class_mcq", ["apple", "sky"], [qs[0].id], p, option_labels=["1", "2", "3"]))
    r = render(tmp_path / "t.h5", "question", tmp_path / "q.png", question=qs[0].id, questions=tmp_path / "q.jsonl")
    assert r["options"] == ["1: red", "2: green", "3: blue"]
    assert dict(zip(r["classes"], r["answer"])) == {"apple": "1: red", "sky": "3: blue"}
    assert "What colour" in r["text"]


def test_question_view_rejects_unknown_ids_and_unsuitable_targets(world):
    with pytest.raises(MakdError, match=r"unknown question id 'nope'.*m0, m1, m2"):
        render(world["mcq"], "question", None, question="nope")
    with pytest.raises(MakdError, match="--question"):
        render(world["mcq"], "question", None)
    with pytest.raises(MakdError, match="class_vector"):
        render(world["vec"], "question", None, question="d0")


def test_class_view_orders_aspects_and_finds_the_closest_class(world, tmp_path):
    p = np.array([[0.9, 0.1, 0.5, 0.7, 0.3], [0.8, 0.2, 0.5, 0.6, 0.3], [0.1, 0.9, 0.5, 0.2, 0.8]])
    write_targets(tmp_path / "t.h5", yesno(p, ["cat", "lynx", "fish"]))
    r = render(tmp_path / "t.h5", "class", tmp_path / "cat.png", class_name="cat", questions=world["questions"], top=2)
    assert [a["question_id"] for a in r["aspects"]][:2] == [YESNO_QUESTIONS[0].id, YESNO_QUESTIONS[3].id]
    assert r["aspects"][-1]["question_id"] == YESNO_QUESTIONS[1].id
    assert r["aspects"][0]["others_mean"] == pytest.approx(0.45)
    assert r["closest_classes"][0]["class"] == "lynx"
    assert "Does the cat show feature 0?" in r["_terminal"]
    render(tmp_path / "t.h5", "class", tmp_path / "fish.png", class_name="FISH")  # case does not matter
    assert differ(tmp_path / "cat.png", tmp_path / "fish.png")
    m = render(world["mcq"], "class", tmp_path / "m.png", class_name="class 1")
    assert m["meaning"].startswith("p(most likely option)") and len(m["aspects"]) == 3


def test_class_view_rejects_unknown_classes(world):
    with pytest.raises(MakdError, match=r"unknown class 'dog'.*class 0"):
        render(world["yn1"], "class", None, class_name="dog")
    with pytest.raises(MakdError, match="--class"):
        render(world["yn1"], "class", None)


# ------------------------------------------------------------------------------------------- run views
def test_curves_follow_the_metrics(world, tmp_path):
    r = render(world["makd"], "curves", tmp_path / "a.png")
    assert r["terms"] == ["makd"] and r["runs"][0]["best_val_top1"] == 60.0
    assert "train_makd" in r["_terminal"]
    render(world["ce"], "curves", tmp_path / "b.png")
    assert differ(tmp_path / "a.png", tmp_path / "b.png")
    # the checkpoint alone (no metrics.jsonl beside it) carries its history
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "best.pt").write_bytes((world["makd"] / "best.pt").read_bytes())
    assert render(alone / "best.pt", "curves", None)["runs"][0]["epochs"] == 4
    # seedN/ folders of a multi-seed run: one line each
    for s in (0, 1):
        (tmp_path / "multi" / f"seed{s}").mkdir(parents=True)
        (tmp_path / "multi" / f"seed{s}" / "metrics.jsonl").write_text((world["makd"] / "metrics.jsonl").read_text())
    assert [x["run"] for x in render(tmp_path / "multi", "curves", tmp_path / "m.png")["runs"]] == ["seed0", "seed1"]
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.jsonl").write_text("")
    with pytest.raises(MakdError, match="empty"):
        render(tmp_path / "empty", "curves", None)


def test_tsne_follows_the_teacher_targets(world, tmp_path):
    a = render(world["makd"], "tsne", tmp_path / "a.png", device="cpu")
    assert a["images"] == 9 and a["split"] == "test" and a["question_id"] == YESNO_QUESTIONS[0].id
    render(world["makd"], "tsne", tmp_path / "b.png", device="cpu", targets=world["t2"], question="3", limit=6)
    assert differ(tmp_path / "a.png", tmp_path / "b.png")


def test_lavid_mcq_students_get_the_aspect_views(world, tmp_path):
    r = render(world["lavid"], "image", tmp_path / "i.png", device="cpu", images=["5"])
    assert r["meaning"] == "p(teacher's most likely option)" and len(r["aspects"]) == 3
    assert all(" -> " in a["text"] for a in r["aspects"])
    s = render(world["lavid"], "tsne", tmp_path / "t.png", device="cpu", question="m1")
    assert s["space"] == "probabilities" and s["question_id"] == "m1"
    pixels(tmp_path / "t.png")


def test_aspect_views_need_an_aspect_head(world, tmp_path):
    for view in ("tsne", "image"):
        with pytest.raises(MakdError, match="no aspect head.*--method makd or lavid"):
            render(world["ce"], view, tmp_path / "x.png", device="cpu")
    with pytest.raises(MakdError, match="-o"):
        render(world["makd"], "tsne", None, device="cpu")
    with pytest.raises(MakdError, match="question ids differ"):
        render(world["makd"], "tsne", tmp_path / "x.png", device="cpu", targets=world["mcq"])


def test_image_view_pairs_student_and_teacher(world, tmp_path):
    r = render(world["makd"], "image", tmp_path / "a.png", device="cpu", images=["0"], questions=world["questions"])
    ids = [q.id for q in YESNO_QUESTIONS]
    assert r["class"] == CLASSES[0] and len(r["aspects"]) == Q
    from makd_cli.formats.targets import read_targets

    teacher = read_targets(world["t1"]).probs[0]
    got = {a["question_id"]: a["teacher"] for a in r["aspects"]}
    assert [got[i] for i in ids] == pytest.approx(teacher, abs=1e-4)
    assert all(0 <= a["student"] <= 1 for a in r["aspects"])
    assert "feature" in r["_terminal"]
    # an image from another class: another teacher row, another picture
    b = render(world["makd"], "image", tmp_path / "b.png", device="cpu", images=["-1"])
    assert b["class"] == CLASSES[-1]
    assert differ(tmp_path / "a.png", tmp_path / "b.png")
    # a file inside a class folder names its class
    f = sorted((world["data"] / "test" / CLASSES[1]).glob("*.png"))[0]
    assert render(world["makd"], "image", None, device="cpu", images=[str(f)])["class"] == CLASSES[1]
    with pytest.raises(MakdError, match="test split .* has 9 images"):
        render(world["makd"], "image", None, device="cpu", images=["99"])
    with pytest.raises(MakdError, match="neither an image file nor an index"):
        render(world["makd"], "image", None, device="cpu", images=["nothing.png"])


def test_image_view_uses_the_images_own_row_of_per_image_targets(world, tmp_path):
    from makd_cli.data import load_dataset

    test = load_dataset(str(world["data"])).test
    p = np.random.default_rng(3).uniform(size=(len(test), Q))
    t = Targets("image_yesno", list(CLASSES), [q.id for q in YESNO_QUESTIONS], p, images=list(test.ids), labels=test.labels)
    write_targets(tmp_path / "img.h5", t)
    r = render(world["makd"], "image", None, device="cpu", images=["4"], targets=tmp_path / "img.h5")
    assert r["teacher"] == "the image's own targets"
    got = {a["question_id"]: a["teacher"] for a in r["aspects"]}
    assert [got[i] for i in t.question_ids] == pytest.approx(p[4], abs=1e-4)


def test_gradcam_maps_follow_the_image_and_class(world, tmp_path):
    from makd_cli.inspect.gradcam import grad_cam, target_layer
    from makd_cli.inspect.image_view import load_student

    r = render(world["makd"], "gradcam", tmp_path / "a.png", device="cpu", images=["0", "3"])
    assert r["layer"].startswith("backbone.") and len(r["images"]) == 2
    assert all(x["explained"] == x["predicted"] for x in r["images"])
    c = render(world["makd"], "gradcam", tmp_path / "b.png", device="cpu", images=["6", "3"], class_name=CLASSES[2])
    assert all(x["explained"] == CLASSES[2] for x in c["images"])
    assert differ(tmp_path / "a.png", tmp_path / "b.png")
    d = render(world["makd"], "gradcam", None, device="cpu", limit=2)  # no --image: one test image per class
    assert [x["class"] for x in d["images"]] == CLASSES[:2]

    _, _, model = load_student(world["makd"])
    x = torch.randn(2, 3, 16, 16)
    name, _ = target_layer(model, x)
    cam, logits, target, _, grid = grad_cam(model, x)
    assert cam.shape == (2, 16, 16) and cam.min() >= 0 and cam.max() <= 1 + 1e-6 and min(grid) > 1
    assert list(target) == list(logits.argmax(1))
    with pytest.raises(MakdError, match="unknown class"):
        render(world["makd"], "gradcam", None, device="cpu", class_name="zebra")


def test_cli_errors_are_one_line(world, monkeypatch, capsys):
    from makd_cli import cli

    monkeypatch.setattr(sys, "argv", ["makd", "inspect", str(world["mcq"]), "--view", "question", "--question", "zzz"])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown question id 'zzz'" in err[0]
    monkeypatch.setattr(sys, "argv", ["makd", "inspect", str(world["ce"]), "--view", "tsne", "-o", "x.png"])
    with pytest.raises(SystemExit):
        cli.main()
    assert "no aspect head" in capsys.readouterr().err


def test_image_views_name_an_unreadable_image_in_one_line(world, tmp_path):
    """Issue 19 item 2 for the image views: a corrupt dataset image or file is one MakdError, not a PIL traceback."""
    import shutil

    from makd_cli.inspect.image_view import resolve_images

    data = tmp_path / "shapes"
    shutil.copytree(world["data"], data)
    bad = sorted((data / "test" / CLASSES[0]).glob("*.png"))[0]
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    ckpt = {"classes": list(CLASSES), "config": {"data": str(data), "seed": 0}}
    spec = resolve_images(["0"], ckpt, None)[0]
    with pytest.raises(MakdError, match=r"test image 0 .* cannot be read"):
        spec.load()
    with pytest.raises(MakdError, match="not an image file PIL can read"):
        resolve_images([str(bad)], ckpt, None)[0].load()
    with pytest.raises(MakdError, match="cannot be read"):
        render(world["makd"], "gradcam", None, device="cpu", images=["0"], data=str(data))
