"""The plug-in registries: every registered plug-in honours its kind's contract (tests iterate the
registries, so a new plug-in is tested the day it is added), a plug-in written in this file runs
through the real CLI with an option of its own, and bad flags are one line on stderr with exit 2."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import torch

from makd_cli import cli
from makd_cli.errors import MakdError
from makd_cli.formats.targets import KINDS, Targets
from makd_cli.methods import METHODS, Batch, MethodContext, MethodTerm, build_terms
from makd_cli.registry import Option, Registry, option_values

C, Q, N = 4, 3, 8  # classes, questions, training images of the synthetic targets


def synthetic_targets(kind: str, seed: int = 0) -> Targets:
    """Valid targets of any kind for C classes, Q questions and N training images (img0..)."""
    rng = np.random.default_rng(seed)
    classes, qids = [f"c{i}" for i in range(C)], [f"q{i}" for i in range(Q)]
    labels = np.arange(N) % C

    def softmax(z):
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    if kind == "class_mcq":
        z = rng.standard_normal((C, Q, 4))
        return Targets(kind, classes, qids, softmax(z), z, option_labels=["1", "2", "3", "4"])
    if kind == "class_yesno":
        return Targets(kind, classes, qids, rng.uniform(size=(C, Q)))
    if kind == "class_vector":
        return Targets(kind, classes, ["dim"], rng.standard_normal((C, 5)))
    images = [f"img{i}" for i in range(N)]
    if kind == "image_yesno":
        return Targets(kind, classes, qids, rng.uniform(size=(N, Q)), images=images, labels=labels)
    assert kind == "image_clip"
    p = softmax(rng.standard_normal((N, C)) * 3)
    entropy = -(p * np.log(p)).sum(-1) / np.log(C)
    return Targets(kind, classes, [f"d{i}" for i in range(C)], p, images=images, labels=labels, entropy=entropy)


# -- methods ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_takes_a_training_step(name):
    """Each registered method builds from its own kind of targets and gives a finite loss and gradient."""
    cls = METHODS.get(name)
    assert issubclass(cls, MethodTerm) and cls.name == name
    assert set(cls.target_kinds) <= set(KINDS)
    targets = synthetic_targets(cls.target_kinds[0]) if cls.target_kinds else None
    ctx = MethodContext(num_classes=C, targets=targets, train_ids=[f"img{i}" for i in range(N)],
                        train_labels=np.arange(N) % C, epochs=2)
    [term] = build_terms(name, ctx)
    torch.manual_seed(0)
    logits = torch.randn(N, C, requires_grad=True)
    extra = torch.randn(N, term.extra_dim, requires_grad=True)
    batch = Batch(images=torch.zeros(N, 3, 8, 8), labels=torch.arange(N) % C, indices=torch.arange(N),
                  teacher_logits=torch.randn(N, C) if cls.needs_teacher else None)
    if term.views == 2:  # the loop also gives the strong view's logits (and the teacher's, for a KD term)
        batch.strong_logits = torch.randn(N, C, requires_grad=True)
        batch.strong_teacher_logits = torch.randn(N, C) if cls.needs_teacher else None
    loss = term.loss(logits, extra, batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert logits.grad is not None or extra.grad is not None
    assert json.dumps(term.head_info())  # goes into the checkpoint


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_declares_valid_options(name):
    for opt in METHODS.options(name):
        assert isinstance(opt, Option) and opt.name == opt.name.lower() and not opt.name.startswith("-")
        assert opt.help, f"--{opt.name} of {name} has no help"
        assert opt.default is None or opt.check(opt.default) == opt.default


def test_declared_method_options_are_checked_from_python_too():
    ctx = MethodContext(num_classes=C, epochs=2, options={"dkd_alpha": -1.0})
    with pytest.raises(MakdError, match="--dkd-alpha"):
        build_terms("dkd", ctx)
    [term] = build_terms("dkd", MethodContext(num_classes=C, epochs=240))
    assert (term.alpha, term.beta, term.warmup) == (1.0, 2.0, 1)  # the declared defaults, LaViD's 1-epoch warm-up


def test_every_task_owns_distinct_methods():
    from makd_cli.train.tasks import TASKS, task_name

    def task_for(method):
        return TASKS.get(task_name(None, method))

    owned = [m for e in TASKS.entries() for m in e.obj.methods]
    assert len(owned) == len(set(owned)) and not set(owned) & set(METHODS.names())
    assert task_for("lead-ssl") is TASKS.get("moco") and task_for("lavid+kd") is TASKS.get("classify")
    for entry in TASKS.entries():
        assert callable(entry.obj.train) and callable(entry.obj.build) and entry.help


# -- backends -----------------------------------------------------------------------------------
def test_every_language_backend_keeps_the_factory_contract():
    from makd_cli.teachers.backends import COMMON, LANGUAGE_BACKENDS

    assert {"llama.cpp", "hf", "openai"} <= set(LANGUAGE_BACKENDS.names())
    for entry in LANGUAGE_BACKENDS.entries():
        params = inspect.signature(entry.obj).parameters
        assert list(params)[0] == "spec"
        assert any(p.kind is p.VAR_KEYWORD for p in params.values()), f"{entry.name} must ignore other backends' settings"
        for opt in entry.options:
            assert opt.key in params, f"{entry.name} declares --{opt.name} but its factory does not take {opt.key}"
        assert entry.help
    assert {o.name: o.default for _, o in LANGUAGE_BACKENDS.all_options()}.items() >= {"batch-size": 0, "concurrency": 16}.items()
    assert set(COMMON) >= {"threads", "seed", "api_base", "device"}


def test_unknown_backend_names_the_choices():
    from makd_cli.teachers.backends import load_llm

    with pytest.raises(MakdError, match="unknown --backend 'nope'.*llama.cpp"):
        load_llm("x", "nope")


def test_every_multimodal_backend_claims_names():
    from makd_cli.teachers.backends import MULTIMODAL_BACKENDS

    claims = {e.name: e.obj.claims for e in MULTIMODAL_BACKENDS.entries()}
    assert set(claims) >= {"llama.cpp", "transformers"}
    assert claims["llama.cpp"]("model.gguf") and not claims["llama.cpp"]("org/some-vlm")
    assert claims["transformers"]("org/some-vlm")


# -- the other kinds ----------------------------------------------------------------------------
def test_every_dataset_has_a_miniature_layout_or_builds_in_code():
    from native_layouts import BUILDERS

    from makd_cli.data import DATASETS

    in_code = {"imagefolder", "fashion-mnist"}  # ImageFolder: conftest's tiny_data; Fashion-MNIST: its own test
    missing = set(DATASETS.names()) - set(BUILDERS) - in_code
    assert not missing, f"datasets without a miniature layout in tests/native_layouts.py: {sorted(missing)}"


def test_every_view_takes_a_request():
    from makd_cli.inspect.views import VIEWS

    for entry in VIEWS.entries():
        assert len(inspect.signature(entry.obj).parameters) == 1, entry.name
        assert entry.help, f"view {entry.name} has no help"


def test_registries_list_discover_and_refuse_twins():
    from makd_cli.controls import CONTROLS
    from makd_cli.select import STRATEGIES
    from makd_cli.students import STUDENTS

    assert set(CONTROLS) == {"random-codes", "gaussian", "shuffled"} and len(STRATEGIES) == 2
    assert {"resnet18", "small_cnn", "mobilenetv1"} <= set(STUDENTS.names())
    reg = Registry("thing")
    reg.add("a", 1, "one", [Option("size", int, 2, "a size", min=1)])
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("a", 2)
    with pytest.raises(MakdError, match="unknown thing 'b'; choose one of: a"):
        reg.get("b")
    assert reg.describe_full() == {"a": {"help": "one", "options": [
        {"flag": "--size", "type": "int", "default": 2, "help": "a size", "limits": "at least 1"}]}}
    assert option_values(reg.options("a"), {}) == {"size": 2}
    with pytest.raises(MakdError, match="--size 0 is out of range: at least 1"):
        option_values(reg.options("a"), {"size": 0})


# -- a plug-in from this file, run through the CLI ----------------------------------------------
@pytest.fixture
def mytest_method():
    seen: dict = {}

    class MyTest(MethodTerm):
        """A method written in a test file: CE plus a zero term; records the option it received."""

        name = "mytest"

        def __init__(self, ctx):
            super().__init__(ctx)
            seen["my_option"] = ctx.options["my_option"]

        def loss(self, logits, extra, batch):
            return logits.sum() * 0.0

    METHODS.add("mytest", MyTest, options=[Option("my-option", int, 1, "How many of mine.", min=1, max=9)])
    yield seen
    METHODS.unregister("mytest")


def _main(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_plugin_from_a_test_file_runs_through_the_cli_with_its_option(mytest_method, tiny_data, tmp_path, capsys):
    code, out, _ = _main(capsys, "train", "--help")
    assert code == 0 and "--my-option" in out and "How many of mine" in out
    run = tmp_path / "run"
    code, out, err = _main(capsys, "train", "--data", tiny_data, "-o", run, "--method", "mytest", "--my-option", "3",
                           "--student", "small_cnn", "--epochs", "1", "-b", "8", "--workers", "0", "--device", "cpu", "--json")
    assert code == 0, err
    assert mytest_method["my_option"] == 3
    assert json.loads(out)["runs"][0]["epochs"] == 1 and (run / "best.pt").exists()
    code, out, _ = _main(capsys, "plugins", "method", "--json")
    assert json.loads(out)["method"]["mytest"]["options"][0]["flag"] == "--my-option"


@pytest.mark.parametrize("args, fragment", [
    (["--method", "mytest", "--my-option", "0"], "--my-option"),
    (["--method", "mytest", "--my-option", "x"], "--my-option"),
    (["--method", "ce", "--my-option", "3"], "--my-option is an option of --method mytest"),
    (["--method", "ce", "--rois-per-image", "64"], "--rois-per-image is an option of --task detection, not of --method ce"),
    (["--task", "detection", "--rois-per-image", "0"], "--rois-per-image"),
])
def test_plugin_option_errors_are_one_line(mytest_method, tiny_data, tmp_path, capsys, args, fragment):
    code, _, err = _main(capsys, "train", "--data", tiny_data, "-o", tmp_path / "run", *args)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and fragment in lines[0] and "Traceback" not in err


# -- issue 19: every bad flag is one line on stderr, exit 2 ---------------------------------------
BAD_TRAIN = [
    (["-b", "0"], "--batch-size"), (["-b", "-4"], "--batch-size"), (["--lr", "-0.1"], "--lr"),
    (["--momentum", "-1"], "--momentum"), (["--weight-decay", "-1"], "--weight-decay"), (["--image-size", "1"], "--image-size"),
    (["--image-size", "0"], "--image-size"), (["--milestones", "a,b"], "--milestones"), (["--device", "tpu"], "--device 'tpu'"),
    (["--workers", "-1"], "--workers"), (["--aux-weight", "-5"], "--aux-weight"), (["--epochs", "abc"], "--epochs"),
    (["--bogus"], "No such option: --bogus"), (["--dkd-alpha", "-1", "--method", "dkd"], "--dkd-alpha"),
]


@pytest.mark.parametrize("args, fragment", BAD_TRAIN)
def test_bad_train_flags_are_one_line(tiny_data, tmp_path, capsys, args, fragment):
    code, _, err = _main(capsys, "train", "--data", tiny_data, "-o", tmp_path / "run", *args)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and fragment in lines[0] and "Traceback" not in err, err


@pytest.mark.parametrize("args, fragment", [
    (["gen-questions", "--classes", "c.txt", "-o", "q.jsonl", "--threads", "-3"], "--threads"),
    (["gen-questions", "--classes", "c.txt", "-o", "q.jsonl", "--temperature", "-1"], "--temperature"),
    (["gen-questions", "--classes", "c.txt", "-o", "q.jsonl", "--kind", "foo"], "--kind"),
    (["extract", "-o", "t.h5", "--teacher", "random", "--classes", "c.txt", "--data", "DATA"], "not both"),
    (["extract", "-o", "t.h5", "--llm", "x", "--concurrency", "0", "--backend", "openai"], "--concurrency"),
    (["extract", "-o", "t.h5", "--llm", "x", "--concurrency", "4"], "--concurrency is an option of --backend openai"),
    (["extract", "-o", "t.h5", "--mllm", "x", "--device", "tpu"], "--device 'tpu'"),
    (["eval", "nope.pt"], "nope.pt"),
])
def test_bad_flags_of_other_commands_are_one_line(tiny_data, tmp_path, capsys, monkeypatch, args, fragment):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.txt").write_text("cat\ndog\n")
    code, _, err = _main(capsys, *[str(tiny_data) if a == "DATA" else a for a in args])
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and fragment in lines[0] and "Traceback" not in err, err


def test_inspect_returns_numbers_and_the_cli_prints_them(mcq_targets_file, tmp_path, capsys):
    code, out, err = _main(capsys, "inspect", mcq_targets_file, "--view", "heatmap", "--json", "--no-terminal")
    assert code == 0, err
    assert isinstance(json.loads(out), dict)
    code, out, err = _main(capsys, "inspect", mcq_targets_file, "--view", "heatmap", "-o", tmp_path / "h.png", "--no-terminal")
    assert code == 0 and f"wrote {tmp_path / 'h.png'}" in " ".join(out.split()) and (tmp_path / "h.png").exists()
