"""Every subcommand over a table of hostile inputs: bad bytes, wrong types, wrong shapes, missing
attributes, bad numbers and bad output paths. Each case must end with exit code 2, exactly one line
on stderr, no traceback, and an earlier output left byte for byte as it was.

The commands run in-process through the real entry point (``makd_cli.cli.main``), so a case costs
milliseconds instead of a Python start-up; anything that escapes ``main`` is a traceback and fails.
"""

from __future__ import annotations

import io
import json
import pickle
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import h5py
import numpy as np
import pytest
import torch

from makd_cli.formats.questions import write_questions
from makd_cli.formats.targets import write_targets
from conftest import CLASSES, class_mcq_targets, make_imagefolder, mcq_questions

EARLIER = b"EARLIER OUTPUT: must survive a failed run\n"


def run_main(args) -> tuple[object, str, str]:
    """(exit code or "traceback", stdout, stderr) of ``makd ARGS`` run in this process."""
    import io

    from makd_cli import cli

    out, err = io.StringIO(), io.StringIO()
    old = sys.argv, sys.stdout, sys.stderr
    sys.argv, sys.stdout, sys.stderr = ["makd", *map(str, args)], out, err
    try:
        cli.main()
        code: object = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - anything escaping main() is what a user sees as a traceback
        code = "traceback"
        err.write(traceback.format_exc())
    finally:
        sys.argv, sys.stdout, sys.stderr = old
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Good inputs every case starts from: data, classes, questions, targets and a trained run."""
    root = tmp_path_factory.mktemp("world")
    w = SimpleNamespace(root=root)
    w.data = make_imagefolder(root / "shapes", per_class_train=6, per_class_test=2)
    w.classes = root / "classes.txt"
    w.classes.write_text("\n".join(CLASSES) + "\n")
    w.questions = root / "questions.jsonl"
    write_questions(w.questions, mcq_questions())
    w.targets = root / "targets.h5"
    write_targets(w.targets, class_mcq_targets())
    w.run = root / "run"
    code, _, err = run_main(["train", "--data", w.data, "-o", w.run, "--student", "small_cnn", "--epochs", "1", "-b", "8",
                             "--val-fraction", "0", "--quiet"])
    assert code == 0, err
    w.ckpt = w.run / "best.pt"
    return w


# ---- bad files ---------------------------------------------------------------------------------
GARBAGE = bytes(range(256)) * 4
TRUNCATED_UTF8 = "red square\nblue dot\ngreen b\u00e4".encode("utf-8")[:-1]  # ends inside a character


def h5_targets(path: Path, edit: Callable[[h5py.File], None]) -> Path:
    write_targets(path, class_mcq_targets())
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


def tampered_checkpoint(path: Path, src: Path, edit: Callable[[dict], None]) -> Path:
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    edit(ckpt)
    torch.save(ckpt, path)
    return path


class Evil:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def jsonl(path: Path, *records) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def mcq(**over) -> dict:
    rec = {"format_version": 1, "kind": "mcq", "text": "What colour is the <object>?", "options": ["red", "blue", "green"]}
    rec.update(over)
    return rec


def bad_file(name: str, content: bytes) -> Callable[[SimpleNamespace, Path], Path]:
    def make(w, tmp):
        p = tmp / name
        p.write_bytes(content)
        return p

    return make


CLASS_FILES = {  # kind: (maker, what the error line must say)
    "binary": (bad_file("c.txt", GARBAGE), "binary"),
    "truncated-utf8": (bad_file("c.txt", TRUNCATED_UTF8), "not UTF-8"),
    "latin1": (bad_file("c.txt", "caf\xe9\n".encode("latin-1")), "not UTF-8"),
    "empty": (bad_file("c.txt", b""), "empty"),
    "folder": (lambda w, tmp: tmp, "directory"),
}
QUESTION_FILES = {
    "binary": bad_file("q.jsonl", GARBAGE),
    "truncated-utf8": bad_file("q.jsonl", json.dumps(mcq(text="Is the <object> gr\u00fcn?"), ensure_ascii=False).encode()[:-4]),
    "not-json": lambda w, tmp: jsonl(tmp / "q.jsonl", "{oops"),
    "array": lambda w, tmp: jsonl(tmp / "q.jsonl", "[1, 2]"),
    "options-string": lambda w, tmp: jsonl(tmp / "q.jsonl", mcq(options="red, blue")),
    "options-numbers": lambda w, tmp: jsonl(tmp / "q.jsonl", mcq(options=[1, 2, 3])),
    "options-duplicate": lambda w, tmp: jsonl(tmp / "q.jsonl", mcq(options=["red", "red", "blue"])),
    "text-number": lambda w, tmp: jsonl(tmp / "q.jsonl", mcq(text=42)),
    "source-string": lambda w, tmp: jsonl(tmp / "q.jsonl", mcq(source="gpt")),
    "version-2": lambda w, tmp: jsonl(tmp / "q.jsonl", mcq(format_version=2)),
    "empty": bad_file("q.jsonl", b""),
}
TARGET_FILES = {
    "binary": bad_file("t.h5", GARBAGE),
    "empty": bad_file("t.h5", b""),
    "no-kind": lambda w, tmp: h5_targets(tmp / "t.h5", lambda f: f.attrs.__delitem__("kind")),
    "kind-number": lambda w, tmp: h5_targets(tmp / "t.h5", lambda f: f.attrs.__setitem__("kind", 3)),
    "meta-not-json": lambda w, tmp: h5_targets(tmp / "t.h5", lambda f: f.attrs.__setitem__("meta", "{not json")),
    "meta-list": lambda w, tmp: h5_targets(tmp / "t.h5", lambda f: f.attrs.__setitem__("meta", "[1]")),
    "labels-not-json": lambda w, tmp: h5_targets(tmp / "t.h5", lambda f: f.attrs.__setitem__("option_labels", "1,2")),
    "version-string": lambda w, tmp: h5_targets(tmp / "t.h5", lambda f: f.attrs.__setitem__("format_version", "one")),
    "probs-strings": lambda w, tmp: h5_targets(tmp / "t.h5", lambda f: (f.__delitem__("probs"),
                                                                        f.create_dataset("probs", data=np.array(["a"] * 4, dtype="S1")))),
    "probs-shape": lambda w, tmp: h5_targets(tmp / "t.h5", lambda f: (f.__delitem__("probs"), f.create_dataset("probs", data=np.ones((3, 2))))),
    "probs-group": lambda w, tmp: h5_targets(tmp / "t.h5", lambda f: (f.__delitem__("probs"), f.create_group("probs"))),
    "no-classes": lambda w, tmp: h5_targets(tmp / "t.h5", lambda f: f.__delitem__("classes")),
    "classes-numbers": lambda w, tmp: h5_targets(tmp / "t.h5", lambda f: (f.__delitem__("classes"), f.create_dataset("classes", data=np.arange(3)))),
}
CHECKPOINTS = {
    "binary": bad_file("best.pt", GARBAGE),
    "empty": bad_file("best.pt", b""),
    "pickle": lambda w, tmp: (tmp / "best.pt").write_bytes(pickle.dumps(Evil())) and tmp / "best.pt",
    "tensor": lambda w, tmp: torch.save(torch.zeros(3), tmp / "best.pt") or tmp / "best.pt",
    "arch-unknown": lambda w, tmp: tampered_checkpoint(tmp / "best.pt", w.ckpt, lambda c: c.__setitem__("arch", "resnet9000")),
    "arch-other": lambda w, tmp: tampered_checkpoint(tmp / "best.pt", w.ckpt, lambda c: c.__setitem__("arch", "resnet18")),
    "arch-number": lambda w, tmp: tampered_checkpoint(tmp / "best.pt", w.ckpt, lambda c: c.__setitem__("arch", 7)),
    "num-classes": lambda w, tmp: tampered_checkpoint(tmp / "best.pt", w.ckpt, lambda c: c.__setitem__("num_classes", 5)),
    "num-classes-string": lambda w, tmp: tampered_checkpoint(tmp / "best.pt", w.ckpt, lambda c: c.__setitem__("num_classes", "3")),
    "head-string": lambda w, tmp: tampered_checkpoint(tmp / "best.pt", w.ckpt, lambda c: c.__setitem__("head", "lavid")),
    "head-extra": lambda w, tmp: tampered_checkpoint(tmp / "best.pt", w.ckpt, lambda c: c["head"].__setitem__("extra_dim", 4)),
    "model-missing-key": lambda w, tmp: tampered_checkpoint(tmp / "best.pt", w.ckpt, lambda c: c["model"].pop("fc.weight")),
    "config-list": lambda w, tmp: tampered_checkpoint(tmp / "best.pt", w.ckpt, lambda c: c.__setitem__("config", [1])),
    "weights-nan": lambda w, tmp: tampered_checkpoint(tmp / "best.pt", w.ckpt, lambda c: c["model"]["fc.weight"].fill_(float("nan"))),
    "weights-inf": lambda w, tmp: tampered_checkpoint(tmp / "best.pt", w.ckpt, lambda c: c["model"]["fc.weight"].fill_(float("inf"))),
}
PRETRAINED = {
    "tensor": lambda w, tmp: torch.save(torch.zeros(3), tmp / "w.pth") or tmp / "w.pth",
    "folder": lambda w, tmp: tmp,
    "garbage": bad_file("w.pth", GARBAGE),
    "empty": bad_file("w.pth", b""),
    "pickle": lambda w, tmp: (tmp / "w.pth").write_bytes(pickle.dumps(Evil())) and tmp / "w.pth",
    "safetensors-garbage": bad_file("w.safetensors", GARBAGE),
    "other-arch": lambda w, tmp: torch.save({"conv.weight": torch.zeros(1)}, tmp / "w.pth") or tmp / "w.pth",
}


@dataclass
class Case:
    name: str
    argv: Callable[[SimpleNamespace, Path], list]
    output: str | None = None  # argv placeholder "{out}" holds an earlier output that must survive
    fragment: str = ""  # expected in the error line


def out_file(tmp: Path, name: str) -> Path:
    p = tmp / name
    p.write_bytes(EARLIER)
    return p


CASES: list[Case] = []
for _kind, (_make, _says) in CLASS_FILES.items():
    CASES += [
        Case(f"gen-questions/classes-{_kind}", lambda w, t, m=_make: ["gen-questions", "--classes", m(w, t), "--llm", _fake_gguf(t),
                                                                        "-o", out_file(t, "q.jsonl")], "q.jsonl", _says),
        Case(f"extract/classes-{_kind}", lambda w, t, m=_make: ["extract", "--teacher", "random", "--questions", w.questions,
                                                                  "--classes", m(w, t), "-o", out_file(t, "t.h5")], "t.h5", _says),
    ]
for _kind, _make in QUESTION_FILES.items():
    CASES += [
        Case(f"extract/questions-{_kind}", lambda w, t, m=_make: ["extract", "--teacher", "random", "--questions", m(w, t),
                                                                    "--classes", w.classes, "-o", out_file(t, "t.h5")], "t.h5"),
        Case(f"select/questions-{_kind}", lambda w, t, m=_make: ["select", w.targets, "--questions", m(w, t), "-q", "2",
                                                                   "--out-questions", out_file(t, "sq.jsonl"), "--out-targets", t / "st.h5"], "sq.jsonl"),
    ]
for _kind, _make in TARGET_FILES.items():
    CASES += [
        Case(f"inspect/targets-{_kind}", lambda w, t, m=_make: ["inspect", m(w, t), "-o", out_file(t, "h.png"), "--no-terminal"], "h.png"),
        Case(f"inspect-quality/targets-{_kind}", lambda w, t, m=_make: ["inspect", m(w, t), "--quality"]),
        Case(f"train/targets-{_kind}", lambda w, t, m=_make: ["train", "--data", w.data, "--targets", m(w, t), "--method", "lavid",
                                                                "--student", "small_cnn", "--epochs", "1", "-o", t / "run", "--quiet"]),
        Case(f"select/targets-{_kind}", lambda w, t, m=_make: ["select", m(w, t), "--questions", w.questions, "-q", "2",
                                                                 "--out-questions", out_file(t, "sq.jsonl"), "--out-targets", t / "st.h5"], "sq.jsonl"),
    ]
WEIGHTS_ONLY_DAMAGE = {"arch-unknown", "arch-other", "head-extra", "model-missing-key"}
for _kind, _make in CHECKPOINTS.items():
    if _kind not in WEIGHTS_ONLY_DAMAGE:  # the curves view reads the history, not the weights
        CASES.append(Case(f"inspect/checkpoint-{_kind}", lambda w, t, m=_make: ["inspect", m(w, t), "--view", "curves",
                                                                                 "-o", out_file(t, "c.png"), "--no-terminal"], "c.png"))
    CASES += [
        Case(f"eval/checkpoint-{_kind}", lambda w, t, m=_make: ["eval", m(w, t), "--device", "cpu"]),
        Case(f"train/teacher-ckpt-{_kind}", lambda w, t, m=_make: ["train", "--data", w.data, "--method", "kd", "--teacher-ckpt", m(w, t),
                                                                     "--student", "small_cnn", "--epochs", "1", "-o", t / "run", "--quiet"]),
    ]
for _kind, _make in PRETRAINED.items():
    CASES.append(Case(f"train/pretrained-{_kind}", lambda w, t, m=_make: ["train", "--data", w.data, "--pretrained", m(w, t),
                                                                           "--student", "small_cnn", "--epochs", "1", "-o", t / "run", "--quiet"]))

# ---- bad output paths --------------------------------------------------------------------------
CASES += [
    Case("extract/out-is-dir", lambda w, t: ["extract", "--teacher", "random", "--questions", w.questions, "--classes", w.classes,
                                             "-o", t], fragment="directory"),
    Case("extract/out-under-file", lambda w, t: ["extract", "--teacher", "random", "--questions", w.questions, "--classes", w.classes,
                                                 "-o", out_file(t, "afile") / "x.h5"], "afile", "is a file"),
    Case("data-classes/out-is-dir", lambda w, t: ["data", "classes", w.data, "-o", t], fragment="directory"),
    Case("data-classes/out-under-file", lambda w, t: ["data", "classes", w.data, "-o", out_file(t, "afile") / "c.txt"], "afile"),
    Case("train/out-is-file", lambda w, t: ["train", "--data", w.data, "--student", "small_cnn", "--epochs", "1", "-o", out_file(t, "run"),
                                            "--quiet"], "run"),
    Case("train/out-under-file", lambda w, t: ["train", "--data", w.data, "--student", "small_cnn", "--epochs", "1",
                                               "-o", out_file(t, "afile") / "run", "--quiet"], "afile"),
    Case("inspect/out-is-dir", lambda w, t: ["inspect", w.targets, "-o", _folder(t / "pic.png"), "--no-terminal"], fragment="directory"),
    Case("select/out-under-file", lambda w, t: ["select", w.targets, "--questions", w.questions, "-q", "2",
                                                "--out-questions", out_file(t, "afile") / "q.jsonl", "--out-targets", t / "st.h5"], "afile"),
]

# ---- mismatched inputs -------------------------------------------------------------------------
CASES += [
    Case("inspect/questions-not-the-targets", lambda w, t: ["inspect", w.targets, "--questions",
                                                            jsonl(t / "other.jsonl", mcq(text="Is the <object> round?")),
                                                            "-o", out_file(t, "h.png"), "--no-terminal"], "h.png", "not the questions file"),
    Case("train/data-empty-class-folder", lambda w, t: ["train", "--data", _data_with(t, w, empty_class=True), "--student", "small_cnn",
                                                        "--epochs", "1", "-o", t / "run", "--quiet"], fragment="no images"),
    Case("train/data-test-only-class", lambda w, t: ["train", "--data", _data_with(t, w, test_only_class=True), "--student", "small_cnn",
                                                     "--epochs", "1", "-o", t / "run", "--quiet"], fragment="training split lacks"),
    Case("train/data-mostly-unreadable", lambda w, t: ["train", "--data", _data_with(t, w, bad_images=4), "--student", "small_cnn",
                                                       "--epochs", "1", "-o", t / "run", "--quiet", "--val-fraction", "0"], fragment="cannot be read"),
    Case("eval/test-split-unreadable", lambda w, t: ["eval", w.ckpt, "--data", _data_with(t, w, bad_images=3, split="test"),
                                                     "--device", "cpu"], fragment="cannot be read"),
]

# ---- bad numbers and usage (engineer A's flag-validation layer owns these messages) ------------
TRAIN = ["train", "--student", "small_cnn", "--epochs", "1", "--quiet"]
BAD_NUMBERS = [
    ["-b", "0"], ["-b", "-4"], ["--lr", "-0.1"], ["--momentum", "-1"], ["--weight-decay", "-1"], ["--image-size", "1"],
    ["--image-size", "0"], ["--milestones", "a,b"], ["--device", "tpu"], ["--workers", "-1"], ["--aux-weight", "-5"],
    ["--epochs", "abc"], ["--no-such-option"],
]
for _flags in BAD_NUMBERS:
    CASES.append(Case("train/" + "=".join(_flags), lambda w, t, f=_flags: [*TRAIN, "--data", w.data, "-o", t / "run", *f]))
CASES += [
    Case("train/classes-with-data", lambda w, t: [*TRAIN, "--data", w.data, "-o", t / "run", "--classes", w.classes]),
    # A fake model: were the flag not checked first, the run would stop at the model, not at the flag.
    Case("gen-questions/temperature=-1", lambda w, t: ["gen-questions", "--classes", w.classes, "--temperature", "-1", "--llm", _fake_gguf(t),
                                                       "-o", out_file(t, "q.jsonl")], "q.jsonl", "temperature"),
    Case("gen-questions/threads=-3", lambda w, t: ["gen-questions", "--classes", w.classes, "--threads", "-3", "--llm", _fake_gguf(t),
                                                   "-o", out_file(t, "q.jsonl")], "q.jsonl", "threads"),
    Case("gen-questions/kind=foo", lambda w, t: ["gen-questions", "--classes", w.classes, "--kind", "foo", "--llm", _fake_gguf(t),
                                                 "-o", out_file(t, "q.jsonl")], "q.jsonl", "kind"),
    Case("extract/threads=-3", lambda w, t: ["extract", "--teacher", "random", "--questions", w.questions, "--classes", w.classes,
                                             "--threads", "-3", "-o", out_file(t, "t.h5")], "t.h5"),
    Case("eval/unknown-option", lambda w, t: ["eval", w.ckpt, "--frobnicate"]),
]

# ---- issue 24: nothing lost (inputs never written over, run folders never mixed), datasets by layout,
# recorded hashes compared, divergence stopped. The test below also checks every input byte for byte.
def _copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes())
    return dst


def _link(target: Path, link: Path, hard: bool = False) -> Path:
    if hard:
        link.hardlink_to(target)
    else:
        link.symlink_to(target.resolve())
    return link


def _run_copy(w, tmp: Path, files=("best.pt", "last.pt", "metrics.jsonl"), folder: str = "run") -> Path:
    for name in files:
        _copy(w.run / name, tmp / folder / name)
    return tmp / folder


def _class_folders(tmp: Path, names, per_class: int = 6) -> Path:
    """An ImageFolder whose class folders have the given names (images from the shapes data)."""
    from conftest import make_imagefolder as make

    src = make(tmp / "src", per_class_train=per_class, per_class_test=0)
    pngs = sorted((src / "train").rglob("*.png")) if (src / "train").is_dir() else sorted(src.rglob("*.png"))
    root = tmp / "folder"
    for i, name in enumerate(names):
        for k in range(per_class):
            _copy(pngs[(i * per_class + k) % len(pngs)], root / name / f"{k:03d}.png")
    return root


def _two_layouts(tmp: Path) -> Path:
    root = tmp / "both"
    for name in ("images.txt", "train_test_split.txt", "setid.mat", "imagelabels.mat"):
        _copy(Path(__file__), root / name)
    return root


def _cub(tmp: Path) -> Path:
    from native_layouts import make_cub

    return make_cub(tmp)


def _trained(w, tmp: Path, *extra, data=None, targets=None) -> list:
    """Train a one-epoch run into tmp/run (the case's own, so changing its inputs afterwards is safe)."""
    args = ["train", "--data", data or w.data, "-o", tmp / "run", "--student", "small_cnn", "--epochs", "1", "-b", "8",
            "--val-fraction", "0", "--quiet", *extra]
    if targets is not None:
        args += ["--method", "lavid", "--targets", targets, "--aux-weight", "1"]
    code, _, err = run_main(args)
    assert code == 0, err
    return args


def _resume_after_targets_change(w, tmp: Path) -> list:
    targets = tmp / "t.h5"
    write_targets(targets, class_mcq_targets())
    args = _trained(w, tmp, targets=targets)
    write_targets(targets, class_mcq_targets(seed=1))  # same path, new content
    return [*args, "--resume"]


def _resume_after_data_change(w, tmp: Path) -> list:
    data = make_imagefolder(tmp / "data", per_class_train=6, per_class_test=2)
    args = _trained(w, tmp, data=data)
    first = sorted((data / "train" / CLASSES[0]).glob("*.png"))[0]
    _copy(first, data / "train" / CLASSES[1] / "moved.png")  # one more image, labelled differently
    return [*args, "--resume"]


def _diverging(w, tmp: Path) -> list:
    targets = tmp / "t.h5"
    write_targets(targets, class_mcq_targets())
    return ["train", "--data", w.data, "-o", tmp / "run", "--student", "small_cnn", "--epochs", "3", "-b", "4",
            "--val-fraction", "0", "--quiet", "--method", "lavid", "--targets", targets, "--aux-weight", "1e4", "--lr", "1"]


RANDOM_EXTRACT = ["extract", "--teacher", "random"]
CASES += [
    # pattern 1: an output that is an input (by name, link or hard link), or two outputs on one file
    Case("extract/out-is-questions", lambda w, t: [*RANDOM_EXTRACT, "--questions", _copy(w.questions, t / "q.jsonl"), "--classes",
                                                   w.classes, "-o", t / "q.jsonl"], fragment="--questions"),
    Case("extract/out-is-classes", lambda w, t: [*RANDOM_EXTRACT, "--questions", w.questions, "--classes", _copy(w.classes, t / "c.txt"),
                                                 "-o", t / "c.txt"], fragment="--classes"),
    Case("extract/out-symlink-to-questions", lambda w, t: [*RANDOM_EXTRACT, "--questions", _copy(w.questions, t / "q.jsonl"), "--classes",
                                                           w.classes, "-o", _link(t / "q.jsonl", t / "link.h5")], fragment="--questions"),
    Case("extract/out-hardlink-to-classes", lambda w, t: [*RANDOM_EXTRACT, "--questions", w.questions, "--classes", _copy(w.classes, t / "c.txt"),
                                                          "-o", _link(t / "c.txt", t / "hard.h5", hard=True)], fragment="--classes"),
    Case("extract/out-is-dotted-questions", lambda w, t: [*RANDOM_EXTRACT, "--questions", _copy(w.questions, t / "q.jsonl"), "--classes",
                                                          w.classes, "-o", _folder(t / "sub") / ".." / "q.jsonl"], fragment="--questions"),
    Case("extract/out-is-cub-marker", lambda w, t: [*RANDOM_EXTRACT, "--questions", w.questions, "--data", _cub(t),
                                                    "-o", t / "CUB_200_2011" / "images.txt"], fragment="--data"),
    Case("select/out-questions-is-questions", lambda w, t: ["select", w.targets, "--questions", _copy(w.questions, t / "q.jsonl"), "-q", "1",
                                                            "--out-questions", t / "q.jsonl", "--out-targets", t / "s.h5"], fragment="--questions"),
    Case("select/out-targets-is-targets", lambda w, t: ["select", _copy(w.targets, t / "t.h5"), "--questions", w.questions, "-q", "1",
                                                        "--out-questions", t / "s.jsonl", "--out-targets", t / "t.h5"], fragment="TARGETS"),
    Case("select/outputs-one-file", lambda w, t: ["select", w.targets, "--questions", w.questions, "-q", "1",
                                                  "--out-questions", out_file(t, "x"), "--out-targets", t / "x"], "x", "same file"),
    Case("select/out-targets-symlink-to-questions", lambda w, t: ["select", w.targets, "--questions", _copy(w.questions, t / "q.jsonl"), "-q", "1",
                                                                  "--out-questions", t / "s.jsonl", "--out-targets", _link(t / "q.jsonl", t / "l.h5")],
         fragment="--questions"),
    Case("export-targets/out-is-source", lambda w, t: ["export", "targets", _copy(w.targets, t / "t.h5"), "--to", "lavid", "-o", t / "t.h5"],
         fragment="SOURCE"),
    Case("import-questions/out-is-source", lambda w, t: ["import", "questions", _copy(w.questions, t / "x.txt"), "-o", t / "x.txt"],
         fragment="SOURCE"),
    Case("import-targets/out-is-source", lambda w, t: ["import", "targets", bad_file("x.json", b"{}")(w, t), "--classes", w.classes,
                                                       "--questions", w.questions, "-o", t / "x.json"], fragment="SOURCE"),
    Case("import-targets/out-is-questions", lambda w, t: ["import", "targets", bad_file("x.json", b"{}")(w, t), "--classes", w.classes,
                                                          "--questions", _copy(w.questions, t / "q.jsonl"), "-o", t / "q.jsonl"], fragment="--questions"),
    Case("import-targets/out-is-classes", lambda w, t: ["import", "targets", bad_file("x.json", b"{}")(w, t), "--classes", _copy(w.classes, t / "c.txt"),
                                                        "--questions", w.questions, "-o", t / "c.txt"], fragment="--classes"),
    Case("gen-questions/out-is-classes", lambda w, t: ["gen-questions", "--classes", _copy(w.classes, t / "c.txt"), "--llm", _fake_gguf(t),
                                                       "-o", t / "c.txt"], fragment="--classes"),
    Case("gen-questions/out-is-model", lambda w, t: ["gen-questions", "--classes", w.classes, "--llm", _fake_gguf(t), "-o", t / "model.gguf"],
         fragment="--llm"),
    Case("data-classes/out-is-cub-file", lambda w, t: ["data", "classes", _cub(t), "-o", t / "CUB_200_2011" / "classes.txt"], fragment="DATA"),
    Case("inspect/drop-low-entropy-is-questions", lambda w, t: ["inspect", w.targets, "--questions", _copy(w.questions, t / "q.jsonl"), "--quality",
                                                                "--drop-low-entropy", t / "q.jsonl"], fragment="--questions"),
    Case("inspect/out-symlink-to-source", lambda w, t: ["inspect", _copy(w.targets, t / "t.h5"), "-o", _link(t / "t.h5", t / "pic.png"),
                                                        "--no-terminal"], fragment="SOURCE"),
    Case("inspect/out-is-image", lambda w, t: ["inspect", w.ckpt, "--view", "gradcam", "--image", _copy(sorted(w.data.rglob("*.png"))[0], t / "i.png"),
                                               "-o", t / "i.png", "--no-terminal", "--device", "cpu"], fragment="--image"),
    Case("train/out-is-data", lambda w, t: [*TRAIN, "--data", make_imagefolder(t / "data", per_class_train=6, per_class_test=2), "-o", t / "data"],
         fragment="--data"),
    Case("train/out-inside-data", lambda w, t: [*TRAIN, "--data", make_imagefolder(t / "data", per_class_train=6, per_class_test=2),
                                                "-o", t / "data" / "run"], fragment="inside the dataset"),
    Case("train/teacher-ckpt-in-out-with-overwrite", lambda w, t: [*TRAIN, "--data", w.data, "--method", "kd", "--teacher-ckpt",
                                                                   _run_copy(w, t) / "best.pt", "-o", t / "run", "--overwrite"],
         fragment="--teacher-ckpt"),
    Case("train/pretrained-in-out", lambda w, t: [*TRAIN, "--data", w.data, "--pretrained", _run_copy(w, t) / "last.pt", "-o", t / "run",
                                                  "--overwrite"], fragment="--pretrained"),
    # pattern 1b / 7: a finished run is never written over; one run or seedN/ runs, never both
    Case("train/finished-run-without-last", lambda w, t: [*TRAIN, "--data", w.data, "-o", _run_copy(w, t, ("best.pt", "metrics.jsonl"))],
         fragment="--overwrite"),
    Case("train/finished-run-metrics-only", lambda w, t: [*TRAIN, "--data", w.data, "-o", _run_copy(w, t, ("metrics.jsonl",))],
         fragment="already holds a run"),
    Case("train/runs-2-into-single-run", lambda w, t: [*TRAIN, "--data", w.data, "--runs", "2", "-o", _run_copy(w, t, ("best.pt",))],
         fragment="single run"),
    Case("train/single-into-seed-runs", lambda w, t: [*TRAIN, "--data", w.data, "-o", _run_copy(w, t, folder="run/seed0").parent],
         fragment="seed run"),
    Case("train/resume-single-into-seed-runs", lambda w, t: [*TRAIN, "--data", w.data, "--resume", "-o", _run_copy(w, t, folder="run/seed0").parent],
         fragment="--runs N --resume"),
    Case("train/runs-2-into-seed-runs", lambda w, t: [*TRAIN, "--data", w.data, "--runs", "2", "-o", _run_copy(w, t, folder="run/seed1").parent],
         fragment="already holds a run"),
    Case("train/single-and-seeds-mixed", lambda w, t: [*TRAIN, "--data", w.data, "--resume",
                                                       "-o", (_run_copy(w, t, folder="run/seed0"), _run_copy(w, t))[1]], fragment="both"),
    Case("eval/run-and-seed-runs-mixed", lambda w, t: ["eval", (_run_copy(w, t, folder="run/seed0"), _run_copy(w, t))[1], "--device", "cpu"],
         fragment="both"),
    Case("inspect/run-and-seed-runs-mixed", lambda w, t: ["inspect", (_run_copy(w, t, folder="run/seed0"), _run_copy(w, t))[1],
                                                          "--view", "curves", "--no-terminal", "-o", out_file(t, "c.png")], "c.png", "both"),
    Case("train/resume-and-overwrite", lambda w, t: [*TRAIN, "--data", w.data, "--resume", "--overwrite", "-o", _run_copy(w, t)],
         fragment="one of them"),
    # pattern 8: a folder is read by the layout it has; a misread one is refused with the NAME:PATH forms
    Case("data-classes/images-folder-of-cub", lambda w, t: ["data", "classes", _class_folders(t, ["images"])], fragment="cub:"),
    Case("train/images-folder-of-cub", lambda w, t: [*TRAIN, "--data", _class_folders(t, ["images"]), "-o", t / "run"], fragment="cub:"),
    Case("data-info/jpg-class-of-flowers", lambda w, t: ["data", "info", _class_folders(t, ["jpg", "roses"])], fragment="flowers:"),
    Case("extract/data-one-class", lambda w, t: [*RANDOM_EXTRACT, "--questions", w.questions, "--data", _class_folders(t, ["roses"]),
                                                 "-o", out_file(t, "t.h5")], "t.h5", "1 class"),
    Case("train/imagefolder-one-class", lambda w, t: [*TRAIN, "--data", f"imagefolder:{_class_folders(t, ['roses'])}", "-o", t / "run"],
         fragment="2 or more"),
    Case("data-classes/two-layouts", lambda w, t: ["data", "classes", _two_layouts(t)], fragment="several datasets"),
    Case("train/cub-markers-broken-layout", lambda w, t: [*TRAIN, "--data", (_cub(t), (t / "CUB_200_2011" / "classes.txt").unlink())[0],
                                                          "-o", t / "run"], fragment="imagefolder:"),
    # pattern 5: recorded hashes compared on --resume
    Case("train/resume-targets-changed", _resume_after_targets_change, fragment="--restart"),
    Case("train/resume-data-changed", _resume_after_data_change, fragment="--restart"),
    # pattern 6: divergence stops the run, naming the term
    Case("train/diverging-lavid", _diverging, fragment="lavid term"),
]


def _fake_gguf(tmp: Path) -> Path:
    p = tmp / "model.gguf"
    p.write_bytes(b"PK\x03\x04 not a gguf")
    return p


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


def _data_with(tmp: Path, w, *, empty_class=False, test_only_class=False, bad_images=0, split="train") -> Path:
    root = make_imagefolder(tmp / "data", per_class_train=6, per_class_test=2)
    if empty_class:
        (root / "train" / "zz empty").mkdir()
        (root / "test" / "zz empty").mkdir()
    if test_only_class:
        (root / "test" / "zz test only").mkdir()
        (root / "test" / "zz test only" / "x.png").write_bytes((root / "test" / CLASSES[0] / "000.png").read_bytes())
    for i in range(bad_images):
        folder = root / split / CLASSES[i % len(CLASSES)]
        kind = i % 3
        (folder / f"bad{i}.jpg").write_bytes(b"" if kind == 0 else b"this is text, not a jpeg" if kind == 1 else b"\xff\xd8\xff\xe0garbage")
    return root


from fuzz_hostile_cases import hostile_cases  # noqa: E402 - it builds on the helpers above

CASES += hostile_cases()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_line_and_exit_2(case: Case, world, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a malicious pickle that ran would write PWNED here
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"red square\n")))  # what `-` reads
    argv = case.argv(world, tmp_path)
    earlier = tmp_path / case.output if case.output else None
    before = _snapshot(tmp_path, world.root)
    code, _, err = run_main(argv)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    assert code == 2, f"exit {code}: {err}"
    assert len(lines) == 1, err
    assert case.fragment in lines[0], lines[0]
    assert not (tmp_path / "PWNED").exists(), "a pickle ran code"
    if earlier is not None and earlier.is_file():
        assert earlier.read_bytes() == EARLIER, f"{earlier} was changed by a failed run"
    leftovers = [p.name for p in tmp_path.rglob(".*.tmp")]
    assert not leftovers, leftovers
    after = _snapshot(tmp_path, world.root)
    changed = [str(p) for p, data in before.items() if after.get(p) != data]
    assert not changed, f"a failed run changed or removed its inputs or earlier outputs: {changed}"
    assert not list(tmp_path.rglob("-")), "a file named - was created"


def _snapshot(*roots: Path) -> dict[Path, bytes]:
    """Every visible file under ``roots`` (inputs and earlier outputs) and its bytes; hidden files are
    makd's own caches and locks."""
    return {p: p.read_bytes() for root in roots for p in root.rglob("*")
            if p.is_file() and not p.is_symlink() and not any(part.startswith(".") for part in p.relative_to(root).parts)}


def test_the_table_covers_every_subcommand():
    commands = {c.name.split("/")[0].split("-quality")[0] for c in CASES}
    assert {"gen-questions", "extract", "train", "eval", "inspect", "select", "data-classes"} <= commands
    assert len(CASES) >= 190
