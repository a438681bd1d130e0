"""The hostile inputs of issue 24 for tests/test_fuzz_inputs.py's table (each: exit 2, one line, no traceback,
inputs and earlier outputs byte-identical): rich markup in paths and class names, readers given JSON
nested 100,000 deep, megabyte lines, NaN and 1e400, HDF5 linked out of the file or declaring more than
it stores, float labels, metrics.jsonl that is not UTF-8; `-` for binary inputs and outputs; repeated or
empty method terms, NaN and infinity for float flags, --paper values and run names.

Hypothesis tests of each reader: tests/test_reader_properties.py; HTTP answers: tests/test_http_answers.py.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from conftest import CLASSES
from makd_cli.formats.targets import write_targets
from test_fuzz_inputs import TRAIN, Case, _fake_gguf, bad_file, h5_targets, jsonl, mcq, out_file


def _missing(tmp: Path, name: str) -> Path:
    return tmp / name / "c.txt"


def _h5_link(tmp: Path, how: str) -> Path:
    """Targets whose ``probs`` is read from outside the file, or declares far more than it stores."""
    other = tmp / "other.h5"
    with h5py.File(other, "w") as g:
        g["probs"] = np.full((3, 3, 4), 0.25)
    raw = tmp / "raw.bin"
    raw.write_bytes(b"\0" * 64)

    def edit(f):
        del f["probs"]
        if how == "external":
            f["probs"] = h5py.ExternalLink(str(other), "probs")
        elif how == "external-text":
            f["probs"] = h5py.ExternalLink(str(tmp / "c.txt"), "probs")
            (tmp / "c.txt").write_text("not hdf5\n")
        elif how == "soft":
            f["probs"] = h5py.SoftLink("/classes")
        elif how == "huge":  # 288 GiB declared by a file of a few KB
            f.create_dataset("probs", shape=(3, 3, 1 << 33), dtype="f4", chunks=(1, 1, 1 << 16))
        elif how == "external-storage":
            f.create_dataset("probs", shape=(3, 3, 4), dtype="f4", external=[(str(raw), 0, 144)])
        elif how == "bools":
            f["probs"] = np.ones((3, 3, 4), dtype=bool)

    return h5_targets(tmp / "t.h5", edit)


def _targets_edit(tmp: Path, name: str, value) -> Path:
    return h5_targets(tmp / "t.h5", lambda f: (f.__delitem__(name), f.create_dataset(name, data=value)))


def _image_targets_float_labels(tmp: Path) -> Path:
    from makd_cli.formats.targets import Targets

    t = Targets("image_yesno", list(CLASSES), ["q1"], np.full((4, 1), 0.5), images=[f"i{i}" for i in range(4)], labels=[0, 1, 2, 0])
    write_targets(tmp / "t.h5", t)
    with h5py.File(tmp / "t.h5", "r+") as f:
        del f["labels"]
        f["labels"] = np.array([0.0, 1.7, 2.2, 0.0])
    return tmp / "t.h5"


def _metrics_run(tmp: Path, content: bytes) -> Path:
    run = tmp / "r"
    run.mkdir()
    (run / "metrics.jsonl").write_bytes(content)
    return run


def hostile_cases() -> list[Case]:
    cases: list[Case] = []
    EXTRACT_Q = lambda w, t, q: ["extract", "--teacher", "random", "--questions", q, "--classes", w.classes, "-o", out_file(t, "t.h5")]  # noqa: E731
    SELECT_Q = lambda w, t, q: ["select", w.targets, "--questions", q, "-q", "2", "--out-questions", out_file(t, "sq.jsonl"),  # noqa: E731
                                "--out-targets", t / "st.h5"]
    HOSTILE_QUESTIONS = {  # kind: (maker, what the error line must say)
        "nested-100000": (lambda w, t: bad_file("q.jsonl", b"[" * 100_000 + b"]" * 100_000)(w, t), "deep"),
        "nested-in-record": (lambda w, t: jsonl(t / "q.jsonl", '{"source": ' + "[" * 5000 + "]" * 5000 + "}"), "deep"),
        "line-2-mb": (lambda w, t: jsonl(t / "q.jsonl", mcq(text="What <object>? " + "x" * (2 << 20))), "characters long"),
        "nan": (lambda w, t: jsonl(t / "q.jsonl", mcq(source={"seed": float("nan")})), "NaN"),
        "1e400": (lambda w, t: jsonl(t / "q.jsonl", '{"format_version": 1e400}'), "too large"),
        "int-5000-digits": (lambda w, t: jsonl(t / "q.jsonl", '{"format_version": ' + "9" * 5000 + "}"), "not JSON"),
        "placeholder-twice": (lambda w, t: jsonl(t / "q.jsonl", mcq(text="Is the <object> bigger than a <object>?")), "placeholder repeated"),
        "placeholder-in-option": (lambda w, t: jsonl(t / "q.jsonl", mcq(options=["the <object>", "blue", "green"])), "placeholder in option"),
    }
    for _kind, (_make, _says) in HOSTILE_QUESTIONS.items():
        cases += [Case(f"extract/questions-{_kind}", lambda w, t, m=_make: EXTRACT_Q(w, t, m(w, t)), "t.h5", _says),
                  Case(f"select/questions-{_kind}", lambda w, t, m=_make: SELECT_Q(w, t, m(w, t)), "sq.jsonl", _says)]
    HOSTILE_TARGETS = {
        "probs-external-link": (lambda w, t: _h5_link(t, "external"), "link to"),
        "probs-link-to-text": (lambda w, t: _h5_link(t, "external-text"), "link to"),
        "probs-soft-link": (lambda w, t: _h5_link(t, "soft"), "soft link"),
        "probs-declares-288-gib": (lambda w, t: _h5_link(t, "huge"), "declares"),
        "probs-external-storage": (lambda w, t: _h5_link(t, "external-storage"), "external file"),
        "probs-bools": (lambda w, t: _h5_link(t, "bools"), "floats"),
        "logits-nan": (lambda w, t: _targets_edit(t, "logits", np.full((3, 3, 4), np.nan)), "NaN"),
        "logits-inf": (lambda w, t: _targets_edit(t, "logits", np.full((3, 3, 4), np.inf)), "NaN or infinite"),
        "labels-float": (lambda w, t: _image_targets_float_labels(t), "integers"),
    }
    for _kind, (_make, _says) in HOSTILE_TARGETS.items():
        cases += [Case(f"inspect/targets-{_kind}", lambda w, t, m=_make: ["inspect", m(w, t), "-o", out_file(t, "h.png"), "--no-terminal"],
                       "h.png", _says),
                  Case(f"select/targets-{_kind}", lambda w, t, m=_make: ["select", m(w, t), "--questions", w.questions, "-q", "2",
                                                                           "--out-questions", out_file(t, "sq.jsonl"), "--out-targets", t / "st.h5"],
                       "sq.jsonl", _says)]
    cases += [Case("train/targets-probs-external-link", lambda w, t: ["train", "--data", w.data, "--targets", _h5_link(t, "external"), "--method",
                                                                       "lavid", "--student", "small_cnn", "--epochs", "1", "-o", t / "run", "--quiet"],
                   fragment="link to")]
    HOSTILE_METRICS = {
        "not-utf8": (b'{"epoch": 0, "train_ce": 1.0}\n\xff\xfe\n', "not UTF-8"),
        "nested": (b"[" * 100_000 + b"]" * 100_000 + b"\n", "deep"),
        "epoch-string": (b'{"epoch": "zero", "train_ce": 1.0}\n', "epoch must be an integer"),
        "loss-string": (b'{"epoch": 0, "train_ce": "low"}\n', "must be a number"),
        # split on \n only: a vertical tab does not end a record (str.splitlines would read two)
        "vertical-tab-split": (b'{"epoch": 0, "train_ce": 1.0}\x0b{"epoch": 1, "train_ce": 0.5}\n', "Extra data"),
    }
    for _kind, (_content, _says) in HOSTILE_METRICS.items():
        cases.append(Case(f"inspect-curves/metrics-{_kind}", lambda w, t, c=_content: ["inspect", _metrics_run(t, c), "--view", "curves",
                                                                                       "-o", out_file(t, "c.png"), "--no-terminal"], "c.png", _says))
    cases += [
        Case("import-questions/lavid-not-utf8", lambda w, t: ["import", "questions", bad_file("chat.txt", b"What is the class?\n1. R\xe9d\n")(w, t),
                                                              "-o", out_file(t, "q.jsonl")], "q.jsonl", "not UTF-8"),
        Case("import-targets/lavid-nested", lambda w, t: ["import", "targets", bad_file("l.json", b"[" * 100_000 + b"]" * 100_000)(w, t),
                                                          "--classes", w.classes, "--questions", w.questions, "-o", out_file(t, "t.h5")], "t.h5", "deep"),
        Case("import-targets/lavid-nan", lambda w, t: ["import", "targets", bad_file("l.json", b'{"red square": [[NaN, 0.5]]}')(w, t),
                                                       "--classes", w.classes, "--questions", w.questions, "-o", out_file(t, "t.h5")], "t.h5", "NaN"),
        Case("import-targets/lavid-1e400", lambda w, t: ["import", "targets", bad_file("l.json", b'{"red square": [[1e400, 0]]}')(w, t),
                                                         "--classes", w.classes, "--questions", w.questions, "-o", out_file(t, "t.h5")], "t.h5", "too large"),
        Case("import-targets/class-map-nested", lambda w, t: ["import", "targets", bad_file("l.json", b'{"a": [[1]]}')(w, t), "--classes", w.classes,
                                                              "--questions", w.questions, "--class-map", bad_file("m.json", b"{" * 3000)(w, t),
                                                              "-o", out_file(t, "t.h5")], "t.h5", "deep"),
    ]

    # markup: a path or class name holding rich markup is printed as written, in one line
    for _name in ("a[/]b", "[red]c", "[bold]x[/bold]", "x:smile:y", "[/]"):
        cases += [
            Case(f"extract/markup-path-{_name}", lambda w, t, n=_name: ["extract", "--teacher", "random", "--questions", w.questions,
                                                                          "--classes", _missing(t, n), "-o", out_file(t, "t.h5")], "t.h5", f"{_name}/c.txt"),
            Case(f"inspect/markup-path-{_name}", lambda w, t, n=_name: ["inspect", t / n / "t.h5", "--quality"], fragment=f"{_name}/t.h5"),
        ]
    cases += [
        Case("train/markup-data", lambda w, t: [*TRAIN, "--data", str(t / "[bold]x[/]"), "-o", t / "run"], fragment="[bold]x[/]"),
        Case("eval/markup-checkpoint", lambda w, t: ["eval", t / "[/]" / "best.pt", "--device", "cpu"], fragment="[/]"),
        Case("extract/markup-class-repeated", lambda w, t: ["extract", "--teacher", "random", "--questions", w.questions,
                                                            "--classes", bad_file("c.txt", b"[/]\n[red]x\n[/]\n")(w, t), "-o", out_file(t, "t.h5")],
             "t.h5", "repeats [/]"),
    ]

    # `-`: standard input/output for text files; binary outputs and inputs refused
    cases += [
        Case("extract/out-stdout", lambda w, t: ["extract", "--teacher", "random", "--questions", w.questions, "--classes", w.classes, "-o", "-"],
             fragment="standard output"),
        Case("select/out-targets-stdout", lambda w, t: ["select", w.targets, "--questions", w.questions, "-q", "2",
                                                        "--out-questions", out_file(t, "sq.jsonl"), "--out-targets", "-"], "sq.jsonl", "standard output"),
        Case("inspect/out-stdout", lambda w, t: ["inspect", w.targets, "-o", "-", "--no-terminal"], fragment="standard output"),
        Case("train/out-stdout", lambda w, t: [*TRAIN, "--data", w.data, "-o", "-"], fragment="standard output"),
        Case("import-targets/out-stdout", lambda w, t: ["import", "targets", bad_file("l.json", b"{}")(w, t), "--classes", w.classes,
                                                        "--questions", w.questions, "-o", "-"], fragment="standard output"),
        Case("extract/two-stdin-inputs", lambda w, t: ["extract", "--teacher", "random", "--questions", "-", "--classes", "-",
                                                       "-o", out_file(t, "t.h5")], "t.h5", "only one input"),
        Case("inspect/source-stdin", lambda w, t: ["inspect", "-", "--quality"], fragment="standard input"),
        Case("train/targets-stdin", lambda w, t: [*TRAIN, "--data", w.data, "--method", "lavid", "--targets", "-", "-o", t / "run"],
             fragment="standard input"),
        Case("select/targets-stdin", lambda w, t: ["select", "-", "--questions", w.questions, "-q", "2", "--out-questions",
                                                   out_file(t, "sq.jsonl"), "--out-targets", t / "st.h5"], "sq.jsonl", "standard input"),
    ]

    # method specs, float flags (NaN and infinity refused for every float flag, by the parser), --paper
    for _spec, _says in [("kd+kd", "more than once"), ("lavid+", "empty term"), ("+kd", "empty term"), ("ce+ce", "more than once"),
                         ("lavid++kd", "empty term"), ("kd + kd", "more than once")]:
        cases.append(Case(f"train/method={_spec}", lambda w, t, s=_spec: [*TRAIN, "--data", w.data, "--method", s, "-o", t / "run"], fragment=_says))
    for _flag in (["--lr", "nan"], ["--lr", "inf"], ["--momentum", "nan"], ["--weight-decay", "inf"], ["--aux-weight", "nan"],
                  ["--train-fraction", "nan"], ["--val-fraction", "inf"], ["--kd-temperature", "inf"]):
        cases.append(Case("train/" + "=".join(_flag), lambda w, t, f=_flag: [*TRAIN, "--data", w.data, "-o", t / "run", *f,
                                                                               *(["--method", "kd"] if "kd" in f[0] else [])], fragment=_flag[0]))
    for _value in ("inf", "-inf", "nan"):
        cases.append(Case(f"extract/temperature={_value}", lambda w, t, v=_value: ["extract", "--teacher", "random", "--questions", w.questions,
                                                                                   "--classes", w.classes, "--temperature", v, "-o", out_file(t, "t.h5")],
                          "t.h5", "finite"))
    cases += [
        Case("gen-questions/temperature=inf", lambda w, t: ["gen-questions", "--classes", w.classes, "--temperature", "inf", "--llm", _fake_gguf(t),
                                                            "-o", out_file(t, "q.jsonl")], "q.jsonl", "temperature"),
        Case("eval/paper=abc", lambda w, t: ["eval", w.ckpt, "--device", "cpu", "--paper", "ce=abc"], fragment="does not start with a number"),
        Case("eval/paper=nan", lambda w, t: ["eval", w.ckpt, "--device", "cpu", "--paper", "ce=nan"], fragment="does not start with a number"),
        Case("eval/paper-twice", lambda w, t: ["eval", w.ckpt, "--device", "cpu", "--paper", "ce=1", "--paper", "ce=2"], fragment="twice"),
        Case("eval/paper-unknown-run", lambda w, t: ["eval", w.ckpt, "--device", "cpu", "--paper", "lavdi=70.15"], fragment="no such run"),
    ]
    return cases
