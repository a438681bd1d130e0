"""Property-based tests (Hypothesis) of every file reader makd has: whatever bytes a file holds, the
reader returns a result or raises one ``MakdError``; nothing else (no ``RecursionError``,
``UnicodeDecodeError``, ``KeyError``, ``MemoryError``, ``OverflowError`` ...). And what makd writes,
makd reads back, whatever characters the text holds (vertical tabs, U+2028, ``[/]``).

Each reader gets raw bytes, mutations of a valid file (so the fuzzing reaches past the first check),
and structured inputs built to hit its checks: JSON of any shape and depth, HDF5 files whose datasets
are missing, linked out, of the wrong type or shape, or declaring more than they store.
"""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from makd_cli.errors import MakdError
from makd_cli.formats.questions import Question, read_classes, read_questions, write_questions
from makd_cli.formats.targets import read_targets, write_targets
from conftest import CLASSES, class_mcq_targets, mcq_questions

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_DIR = Path(tempfile.mkdtemp(prefix="makd-hyp-"))


def _file(name: str, data: bytes) -> Path:
    p = _DIR / name
    p.write_bytes(data)
    return p


def result_or_makd_error(read, *args):
    """Run a reader: a value or a MakdError of one line; anything else fails the property (shown short)."""
    try:
        return read(*args)
    except MakdError as exc:
        assert "\n" not in str(exc) and str(exc)
        return exc


# ---- strategies ------------------------------------------------------------------------------
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=20)
odd_text = st.lists(st.sampled_from(list("ab {}\"\\\x0b\x0c\x1c\x85\u2028\u2029\r\t#é?") + ["[red]", "[/]", "<object>", "\n", " :smile:"]),
                    max_size=12).map("".join)


@st.composite
def mutated(draw, good: bytes) -> bytes:
    """``good`` with a few bytes replaced, inserted, or cut off."""
    data = bytearray(good)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "cut"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        else:
            data = data[:pos]
    return bytes(data)


def _good_questions() -> bytes:
    p = _DIR / "good.jsonl"
    write_questions(p, mcq_questions())
    return p.read_bytes()


def _good_targets() -> bytes:
    p = _DIR / "good.h5"
    write_targets(p, class_mcq_targets())
    return p.read_bytes()


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# ---- questions.jsonl ---------------------------------------------------------------------------
@FAST
@given(st.binary(max_size=300) | mutated(_good_questions()))
def test_questions_reader_any_bytes(data):
    result_or_makd_error(read_questions, _file("q.jsonl", data))


@FAST
@given(st.lists(json_values, min_size=1, max_size=3))
def test_questions_reader_any_json(values):
    text = "\n".join(json.dumps(v) for v in values)
    result_or_makd_error(read_questions, _file("q.jsonl", text.encode()))


@FAST
@given(st.fixed_dictionaries({"format_version": st.sampled_from([1, 1, 1, 2, "1", None]), "kind": st.sampled_from(["mcq", "yesno", "x"]),
                              "text": odd_text | st.integers(), "options": st.lists(odd_text | st.integers(), max_size=4) | odd_text,
                              "source": st.none() | st.dictionaries(st.text(max_size=3), json_scalars, max_size=2) | st.text(max_size=3)}))
def test_questions_reader_records_of_any_field_values(record):
    result_or_makd_error(read_questions, _file("q.jsonl", json.dumps(record).encode()))


def test_questions_reader_deep_and_long_lines():
    for text in (nested(100_000), '{"a": ' + nested(5_000) + "}", '{"text": "' + "x" * (2 << 20) + '"}', '{"x": 1e400}',
                 '{"x": NaN}', '{"x": ' + "9" * 5000 + "}"):
        err = result_or_makd_error(read_questions, _file("q.jsonl", text.encode()))
        assert isinstance(err, MakdError), text[:40]


no_placeholder = odd_text.map(lambda t: t.replace("<object>", "<obj>"))


@FAST
@given(st.lists(st.tuples(no_placeholder, no_placeholder, no_placeholder, no_placeholder), min_size=1, max_size=3))
def test_questions_written_are_read_back(items):
    """Any text a question holds (U+2028, vertical tab, markup) survives write_questions -> read_questions."""
    qs = [Question("mcq", f"{before}<object>{after} {i}?", [f"a{i} {o1}", f"b{i} {o2}"]) for i, (before, after, o1, o2) in enumerate(items)]
    p = _DIR / "rt.jsonl"
    write_questions(p, qs)
    back = read_questions(p)
    assert [(q.text, q.options, q.id) for q in back] == [(q.text, q.options, q.id) for q in qs]
    assert p.read_bytes().count(b"\n") == len(qs)  # one line each: U+2028/U+2029 escaped


def test_questions_reader_refuses_a_repeated_placeholder():
    rec = {"format_version": 1, "kind": "mcq", "text": "Is the <object> bigger than a <object>?", "options": ["yes", "no"]}
    with pytest.raises(MakdError, match="placeholder repeated"):
        read_questions(_file("q.jsonl", json.dumps(rec).encode()))


# ---- class lists -------------------------------------------------------------------------------
@FAST
@given(st.binary(max_size=200))
def test_class_list_reader_any_bytes(data):
    result_or_makd_error(read_classes, _file("c.txt", data))


@FAST
@given(st.lists(odd_text.map(lambda s: s.replace("\n", " ").replace("\r", " ")), min_size=1, max_size=5))
def test_class_list_splits_on_newline_only(names):
    """A vertical tab, form feed, U+0085 or U+2028 inside a class name does not split it."""
    names = [n.strip() for n in names]
    assume(all(n and not n.startswith("#") for n in names) and len(set(names)) == len(names))
    got = read_classes(_file("c.txt", ("\n".join(names) + "\n").encode()))
    assert got == names


@FAST
@given(st.lists(odd_text, min_size=1, max_size=5, unique=True))
def test_class_list_written_is_read_back_or_refused(names):
    """What write_classes writes, read_classes reads back as written; a name it cannot hold is refused."""
    from makd_cli.formats.questions import write_classes

    p = _DIR / "written.txt"
    try:
        write_classes(p, names)
    except MakdError as exc:
        assert "\n" not in str(exc)
        return
    assert read_classes(p) == names


# ---- targets.h5 --------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=300) | mutated(_good_targets()))
def test_targets_reader_any_bytes(data):
    result_or_makd_error(read_targets, _file("t.h5", data))


FIELDS = ["classes", "question_ids", "probs", "logits"]
DAMAGE = ["keep", "missing", "group", "strings", "floats-1d", "ints", "bools", "nan", "inf", "external", "soft", "wrong-shape",
          "huge-fill", "external-storage"]


def _damaged_targets(path: Path, damage: dict[str, str]) -> Path:
    write_targets(path, class_mcq_targets())
    other = _DIR / "other.h5"
    with h5py.File(other, "w") as g:
        g["probs"] = np.ones((3, 3, 4)) / 4
    raw = _DIR / "raw.bin"
    raw.write_bytes(b"\0" * 64)
    with h5py.File(path, "r+") as f:
        for name, how in damage.items():
            if how == "keep":
                continue
            shape = f[name].shape
            del f[name]
            if how == "missing":
                continue
            if how == "group":
                f.create_group(name)
            elif how == "strings":
                f[name] = np.array([b"a"] * 3)
            elif how == "floats-1d":
                f[name] = np.linspace(0, 1, 3)
            elif how == "ints":
                f[name] = np.ones(shape, dtype=np.int64)
            elif how == "bools":
                f[name] = np.ones(shape, dtype=bool)
            elif how in ("nan", "inf"):
                bad = np.full(shape, 0.25) if len(shape) else np.array(0.25)
                bad.flat[0] = np.nan if how == "nan" else np.inf
                f[name] = bad
            elif how == "external":
                f[name] = h5py.ExternalLink(str(other), "probs")
            elif how == "soft":
                f[name] = h5py.SoftLink("/nowhere")
            elif how == "wrong-shape":
                f[name] = np.ones((2, 5))
            elif how == "huge-fill":  # a header declaring 447 GiB, no data stored
                f.create_dataset(name, shape=(3, 3, 1 << 33), dtype="f4", chunks=(1, 1, 1 << 16))
            elif how == "external-storage":
                f.create_dataset(name, shape=(4,), dtype="f8", external=[(str(raw), 0, 32)])
    return path


@settings(max_examples=80, deadline=None)
@given(st.fixed_dictionaries({name: st.sampled_from(DAMAGE) for name in FIELDS}))
def test_targets_reader_damaged_datasets(damage):
    result = result_or_makd_error(read_targets, _damaged_targets(_DIR / "d.h5", damage))
    if any(how != "keep" for how in damage.values()):
        assert isinstance(result, MakdError), damage


@pytest.mark.parametrize("how, says", [("external", "link to"), ("soft", "soft link"), ("huge-fill", "declares"),
                                        ("external-storage", "external file"), ("nan", "NaN")])
def test_targets_reader_refuses_data_from_outside_or_too_big(how, says):
    field = "probs" if how != "nan" else "logits"
    with pytest.raises(MakdError, match=says):
        read_targets(_damaged_targets(_DIR / "d.h5", {field: how}))


def test_targets_reader_refuses_float_labels():
    from makd_cli.formats.targets import Targets

    t = Targets("image_yesno", list(CLASSES), ["q1"], np.full((4, 1), 0.5), images=[f"i{i}" for i in range(4)], labels=[0, 1, 2, 0])
    p = _DIR / "img.h5"
    write_targets(p, t)
    with h5py.File(p, "r+") as f:
        del f["labels"]
        f["labels"] = np.array([0.0, 1.7, 2.2, 0.0])
    with pytest.raises(MakdError, match="labels.*integers"):
        read_targets(p)


# ---- checkpoints -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def good_checkpoint() -> bytes:
    import torch

    from makd_cli.formats.checkpoint import save_checkpoint

    p = _DIR / "good.pt"
    save_checkpoint(p, {"arch": "small_cnn", "num_classes": 3, "classes": list(CLASSES), "head": {"extra_dim": 0}, "config": {},
                        "model": {"w": torch.zeros(2, 2)}})
    return p.read_bytes()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_checkpoint_reader_any_bytes(good_checkpoint, data):
    from makd_cli.formats.checkpoint import load_checkpoint

    blob = data.draw(st.binary(max_size=300) | mutated(good_checkpoint))
    result_or_makd_error(load_checkpoint, _file("c.pt", blob))


# ---- metrics.jsonl (inspect --view curves) -----------------------------------------------------
@FAST
@given(st.binary(max_size=300) | st.lists(json_values, min_size=1, max_size=3).map(lambda vs: "\n".join(map(json.dumps, vs)).encode()))
def test_metrics_reader_any_bytes(data):
    from makd_cli.inspect.curves import read_metrics

    result_or_makd_error(read_metrics, _file("metrics.jsonl", data))


@FAST
@given(st.lists(st.fixed_dictionaries({"epoch": json_scalars, "train_ce": json_scalars, "lr": json_scalars}), min_size=1, max_size=3))
def test_metrics_records_of_any_field_values(records):
    """What the reader accepts, the curves view can plot: no TypeError later."""
    from makd_cli.inspect.curves import read_metrics, series

    got = result_or_makd_error(read_metrics, _file("metrics.jsonl", "\n".join(map(json.dumps, records)).encode()))
    if not isinstance(got, MakdError):
        for key in ("train_ce", "lr"):
            series(got, key)


# ---- LaViD / MaKD imports ----------------------------------------------------------------------
@FAST
@given(st.binary(max_size=300) | odd_text.map(str.encode))
def test_lavid_question_text_any_bytes(data):
    from makd_cli.interop.run import ImportQuestionsConfig, import_questions

    src = _file("lavid.txt", data)
    result_or_makd_error(import_questions, ImportQuestionsConfig(source=src, output=_DIR / "imported.jsonl", fmt="lavid"))
    result_or_makd_error(import_questions, ImportQuestionsConfig(source=src, output=_DIR / "imported.jsonl", fmt="makd"))


@FAST
@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_lavid_targets_json_any_bytes(data):
    from makd_cli.interop.lavid import load_json_object, parse_targets_json

    def parse(p):
        from makd_cli.fileio import read_text

        text = read_text(p, "LaViD targets file")
        parse_targets_json(text, str(p))
        load_json_object(text, str(p), "{...}")

    result_or_makd_error(parse, _file("lavid.json", data))


def test_lavid_targets_json_refuses_deep_and_non_finite():
    from makd_cli.interop.lavid import parse_targets_json

    for text in (nested(200_000), '{"a": [[NaN, 1]]}', '{"a": [[1e400, 0]]}', '{"a": [[Infinity, 0]]}'):
        with pytest.raises(MakdError):
            parse_targets_json(text, "x.json")


# ---- COCO annotations --------------------------------------------------------------------------
def _coco(images, annotations, categories=({"id": 1, "name": "thing"},)) -> bytes:
    return json.dumps({"images": images, "annotations": annotations, "categories": list(categories)}).encode()


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode())
       | st.lists(st.fixed_dictionaries({"id": json_scalars, "file_name": json_scalars, "width": json_scalars}), max_size=2).flatmap(
           lambda ims: st.lists(st.fixed_dictionaries({"image_id": json_scalars, "category_id": json_scalars,
                                                       "bbox": st.lists(json_scalars, max_size=5) | json_scalars}), max_size=2).map(
               lambda anns: _coco(ims, anns))))
def test_coco_annotation_reader_any_bytes(data):
    from makd_cli.data.coco import _read_split

    folder = _DIR / "coco-images"
    folder.mkdir(exist_ok=True)
    (folder / "a.jpg").write_bytes(b"x")
    result_or_makd_error(_read_split, "train", _file("instances.json", data), folder, _DIR, {1: 0})


@pytest.mark.parametrize("image, bbox, says", [
    ({"id": 1, "file_name": "a.jpg"}, ["NaN", 0, 5, 5], "finite"),
    ({"id": 1, "file_name": "a.jpg"}, [0, 0, "inf", 5], "finite"),
    ({"id": 1, "file_name": "../../../../etc/hostname"}, [0, 0, 5, 5], "leaves the image folder"),
])
def test_coco_reader_refuses_bad_boxes_and_paths(image, bbox, says):
    from makd_cli.data.coco import _read_split

    folder = _DIR / "coco-images"
    folder.mkdir(exist_ok=True)
    (folder / "a.jpg").write_bytes(b"x")
    ann = _file("instances.json", _coco([image], [{"image_id": 1, "category_id": 1, "bbox": bbox}]))
    with pytest.raises(MakdError, match=says):
        _read_split("train", ann, folder, _DIR, {1: 0})


def test_coco_reader_refuses_two_images_of_one_id():
    from makd_cli.data.coco import _read_split

    folder = _DIR / "coco-images"
    folder.mkdir(exist_ok=True)
    (folder / "a.jpg").write_bytes(b"x")
    ann = _file("instances.json", _coco([{"id": 1, "file_name": "a.jpg"}, {"id": 1, "file_name": "a.jpg"}], []))
    with pytest.raises(MakdError, match="given twice"):
        _read_split("train", ann, folder, _DIR, {1: 0})


# ---- the shared layers -------------------------------------------------------------------------
@FAST
@given(st.binary(max_size=200))
def test_read_text_any_bytes(data):
    from makd_cli.fileio import read_text

    result_or_makd_error(read_text, _file("any.txt", data), "text file")


@FAST
@given(json_values)
def test_jsonio_writes_what_it_reads(value):
    from makd_cli.jsonio import dumps, iter_jsonl, loads

    try:
        text = dumps(value)
    except MakdError:  # NaN or infinity: refused by the writer as by the reader
        return
    assert "\u2028" not in text and "\u2029" not in text and "\n" not in text
    assert loads(text, "x") == value
    assert [v for _, v in iter_jsonl(text + "\n" + text, "x")] == [value, value]


def test_hdf5_size_check_uses_the_header_not_the_data():
    """A small file declaring a big dataset is refused before the read, not by a MemoryError."""
    from makd_cli.formats.h5read import Damaged, FLOAT, read_array

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_dataset("x", shape=(1 << 20, 1 << 10), dtype="f4", chunks=(1, 1 << 10))
        with pytest.raises(Damaged, match="declares"):
            read_array(f, "x", FLOAT)
        f["y"] = np.ones((4, 4), dtype="f4")
        with pytest.raises(Damaged, match="free memory"):
            read_array(f, "y", FLOAT, memory=16)
        assert read_array(f, "y", FLOAT).shape == (4, 4)
