"""The plug-in architecture (issue 23): one home per option, one training-task dispatcher, methods that say
what they are, plug-ins from installed distributions, and the import layers checked by import-linter."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import makd_cli.cli  # noqa: F401  (reserves the commands' flags, as the CLI does when it starts)
from makd_cli.errors import MakdError
from makd_cli.formats.targets import Targets, write_targets
from makd_cli.methods.base import METHODS, MethodTerm, TargetTable, require_targets
from makd_cli.registry import KINDS, Option
from makd_cli.train import TrainConfig, train

from conftest import CLASSES

ROOT = Path(__file__).resolve().parents[1]


# -- one home per option --------------------------------------------------------------------------
def test_an_option_that_shadows_a_command_flag_is_refused_at_registration():
    class Shadow(MethodTerm):
        name = "shadow"

    with pytest.raises(MakdError, match=r"option --momentum is a flag of `makd train` itself"):
        METHODS.add("shadow", Shadow, options=[Option("momentum", float, 0.5, "a plug-in's momentum")])
    assert "shadow" not in METHODS
    with pytest.raises(MakdError, match=r"--json is a flag of `makd train` itself"):
        METHODS.add("shadow", Shadow, options=[Option("json", bool, False)])


def test_an_option_declared_differently_by_two_plug_ins_is_refused_and_a_shared_one_is_not():
    class A(MethodTerm):
        name = "opt-a"

    shared = Option("shared-knob", float, 1.0, "one knob for the family")
    METHODS.add("opt-a", A, options=[shared, Option("own-knob", int, 1)])
    try:
        METHODS.add("opt-b", A, options=[shared])  # the same declaration: one option of both
        METHODS.unregister("opt-b")
        with pytest.raises(MakdError, match=r"--own-knob is declared differently by method 'opt-a'"):
            METHODS.add("opt-c", A, options=[Option("own-knob", float, 1.0)])
        assert "opt-c" not in METHODS
    finally:
        METHODS.unregister("opt-a")
    METHODS.add("opt-c", A, options=[Option("own-knob", float, 1.0)])  # free again once opt-a is gone
    METHODS.unregister("opt-c")


def test_plugin_options_live_under_the_plugin_and_never_in_command_fields(tiny_data, tmp_path):
    cfg = TrainConfig(data=str(tiny_data), out=str(tmp_path / "r"), method="kd", momentum=0.95,
                      options={"kd_temperature": 4.0})
    assert cfg.momentum == 0.95 and not hasattr(cfg, "kd_temperature")
    assert cfg.options["method:kd"]["kd_temperature"] == 4.0
    assert cfg.options["method:kd"]["kd_weight"] is None  # every declared option recorded, default or given
    assert cfg.to_dict()["options"] == cfg.options
    with pytest.raises(MakdError, match=r"--kd-temperature: not an option of the chosen plug-ins \(--method ce"):
        TrainConfig(data=str(tiny_data), out=str(tmp_path / "r"), method="ce", options={"kd_temperature": 4.0})
    with pytest.raises(MakdError, match="--kd-temperature"):
        TrainConfig(data=str(tiny_data), out=str(tmp_path / "r"), method="kd", options={"kd_temperature": float("inf")})


def test_the_cli_passes_only_what_was_given(tiny_data, tmp_path, monkeypatch):
    from makd_cli.cli import main

    seen = []
    monkeypatch.setattr("makd_cli.train.runs.train_runs", lambda cfg, runs=1: seen.append(cfg) or [])
    with pytest.raises(SystemExit):
        main(["train", "--data", str(tiny_data), "-o", str(tmp_path / "r"), "--method", "kd", "--kd-temperature", "4",
              "--momentum", "0.95", "--json"])
    cfg = seen[0]
    assert cfg.momentum == 0.95 and cfg.lr == TrainConfig.__dataclass_fields__["lr"].default
    assert cfg.options["method:kd"]["kd_temperature"] == 4.0
    seen.clear()
    with pytest.raises(SystemExit):
        main(["train", "--data", "coco:/nowhere", "-o", str(tmp_path / "d"), "--task", "detection", "--json"])
    assert (seen[0].epochs, seen[0].lr, seen[0].weight_decay) == (12, 0.02, 1e-4)  # the task's defaults: not given


def test_method_help_lists_the_registry(capsys):
    from makd_cli.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in ["ce", *METHODS.names(), "lead-ssl"]:
        assert name in text
    assert "{choices}" not in text


# -- one training dispatcher -----------------------------------------------------------------------
@pytest.mark.slow
def test_train_honours_cfg_task_detection(tmp_path):
    from test_detection import SIZE, SMALL, draw_coco

    coco = draw_coco(tmp_path / "coco", n_train=4, n_val=2)
    r = train(TrainConfig(data=f"coco:{coco}", out=str(tmp_path / "det"), task="detection", epochs=1, batch_size=2,
                          lr=0.001, image_size=SIZE, quiet=True, workers=0, device="cpu", options=dict(SMALL)))
    assert r["task"] == "detection"
    from makd_cli.formats.checkpoint import load_checkpoint

    ckpt = load_checkpoint(tmp_path / "det" / "last.pt")
    assert ckpt["task"] == "detection" and ckpt["config"]["options"]["task:detection"] == SMALL


# -- a method says what it is ----------------------------------------------------------------------
@pytest.fixture
def sigmoid_method():
    """A new aspect-style method, written in a test: logits of p(yes), BCE, scored as yes/no answers."""
    import torch.nn.functional as F

    class YesNoAspects(MethodTerm):
        name = "yesno-aspects"
        target_kinds = ("class_yesno",)
        output = "sigmoid"
        metric = "yesno"

        def __init__(self, ctx):
            super().__init__(ctx)
            self.targets = TargetTable(require_targets(self, ctx), ctx)
            self.extra_dim = self.targets.table.shape[1]

        def to(self, device):
            self.targets.to(device)
            return self

        def loss(self, logits, extra, batch):
            return F.binary_cross_entropy_with_logits(extra, self.targets.lookup(batch))

        def head_info(self):
            return {**super().head_info(), "shape": list(self.targets.row_shape)}

    METHODS.add("yesno-aspects", YesNoAspects)
    yield
    METHODS.unregister("yesno-aspects")


def test_a_declared_sigmoid_method_is_scored_as_yesno_and_drawn_without_a_name_check(sigmoid_method, tiny_data, tmp_path):
    from makd_cli.evaluate.report import evaluate_checkpoint
    from makd_cli.inspect.run import InspectConfig, run_inspect

    rng = np.random.default_rng(0)
    probs = rng.uniform(0.05, 0.95, (len(CLASSES), 4)).astype(np.float32)
    write_targets(tmp_path / "yn.h5", Targets("class_yesno", list(CLASSES), ["q1", "q2", "q3", "q4"], probs))
    train(TrainConfig(data=str(tiny_data), out=str(tmp_path / "run"), method="yesno-aspects", targets=str(tmp_path / "yn.h5"),
                      student="small_cnn", epochs=1, batch_size=8, quiet=True, image_size=16, workers=0, device="cpu"))
    from makd_cli.formats.checkpoint import load_checkpoint

    term = load_checkpoint(tmp_path / "run" / "best.pt")["head"]["terms"][0]
    assert (term["output"], term["metric"], term["aspect_head"], term["views"]) == ("sigmoid", "yesno", True, 1)
    result = evaluate_checkpoint(str(tmp_path / "run" / "best.pt"), None, None, "test", device="cpu")
    agreement = result["aspect_agreement"]
    assert agreement["method"] == "yesno-aspects" and len(agreement["auc_per_question"]) == 4
    from rich.console import Console

    shown = run_inspect(InspectConfig(source=tmp_path / "run", output=tmp_path / "img.png", view="image", terminal=False,
                                      as_json=True, options={"images": ["0"], "device": "cpu"}), console=Console(quiet=True))
    assert shown["meaning"].startswith("p(")  # yes/no answers: the outputs went through the sigmoid the method declared
    student = np.array([row["student"] for row in shown["aspects"]], dtype=float)
    assert len(student) == 4 and ((student > 0) & (student < 1)).all()


def test_no_method_name_is_tested_outside_the_methods():
    """eval and inspect read what a method declares; they never compare a method's name."""
    names = set(METHODS.names())
    for package in ("evaluate", "inspect", "train", "detection"):
        for path in (ROOT / "makd_cli" / package).rglob("*.py"):
            text = path.read_text()
            for name in names:
                for pattern in (f'== "{name}"', f"== '{name}'", f'in ("{name}", "', '("makd", "lavid")'):
                    assert pattern not in text, f"{path.relative_to(ROOT)} tests the method name {name!r}"


# -- plug-ins from installed distributions ---------------------------------------------------------
PLUGIN = '''
"""A method from a separate distribution: CE plus a scaled zero term, with an option of its own."""
from makd_cli.methods.base import MethodTerm, register_method
from makd_cli.registry import Option


@register_method("throwaway", help="a method installed from another package", options=[
    Option("throwaway-scale", float, 1.0, "How much of nothing to add.", min=0),
])
class Throwaway(MethodTerm):
    name = "throwaway"

    def loss(self, logits, extra, batch):
        return logits.sum() * 0.0 * self.ctx.options["throwaway_scale"]
'''


def make_distribution(root: Path) -> Path:
    """An installed distribution as pip leaves one: the package and its *.dist-info with entry_points.txt."""
    (root / "makd_throwaway").mkdir(parents=True)
    (root / "makd_throwaway" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    info = root / "makd_throwaway-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: makd-throwaway\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[makd.plugins]\nthrowaway = makd_throwaway\n")
    return root


@pytest.mark.slow
def test_a_plugin_distribution_adds_a_method_with_its_option_through_the_cli(tiny_data, tmp_path):
    site = make_distribution(tmp_path / "site")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    run = [sys.executable, "-m", "makd_cli"]
    listed = subprocess.run(run + ["plugins", "method", "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0, listed.stderr
    entry = json.loads(listed.stdout)["method"]["throwaway"]
    assert entry["options"][0]["flag"] == "--throwaway-scale"
    out = tmp_path / "run"
    done = subprocess.run(run + ["train", "--data", str(tiny_data), "-o", str(out), "--method", "throwaway", "--throwaway-scale",
                                 "2.5", "--student", "small_cnn", "--epochs", "1", "--image-size", "16", "--device", "cpu",
                                 "--json"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    from makd_cli.formats.checkpoint import load_checkpoint

    assert load_checkpoint(out / "last.pt")["config"]["options"]["method:throwaway"] == {"throwaway_scale": 2.5}
    bad = subprocess.run(run + ["train", "--data", str(tiny_data), "-o", str(tmp_path / "x"), "--throwaway-scale", "2"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--throwaway-scale is an option of --method throwaway" in bad.stderr


def test_a_broken_plugin_distribution_is_one_line(tmp_path):
    site = make_distribution(tmp_path / "site")
    (site / "makd_throwaway" / "__init__.py").write_text("raise RuntimeError('half installed')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    r = subprocess.run([sys.executable, "-m", "makd_cli", "plugins", "method"], env=env, capture_output=True, text=True,
                       timeout=300)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "makd-throwaway" in lines[0] and "half installed" in lines[0]


# -- one list of kinds; every kind may declare options ---------------------------------------------
def test_every_kind_loads_and_serves_a_command():
    from makd_cli.cli_plugins import kinds_of

    for kind in KINDS.values():
        registry = kind.load()
        assert registry.kind == kind.name and len(registry) > 0, kind.name
        assert all(kind in kinds_of(c) for c in kind.commands)


def test_a_view_option_joins_inspect(tmp_path, capsys, mcq_targets_file):
    from makd_cli.cli import main
    from makd_cli.inspect.views import VIEWS, ViewRequest

    seen = {}

    def echo(req: ViewRequest) -> dict:
        seen.update(req.options)
        return {"echo": req.options.get("echo_text")}

    VIEWS.add("echo", echo, "repeats its option", options=[Option("echo-text", str, "hi", "What to repeat.")])
    try:
        with pytest.raises(SystemExit) as exit_:
            main(["inspect", str(mcq_targets_file), "--view", "echo", "--echo-text", "hello", "--json", "--no-terminal"])
        assert exit_.value.code == 0 and seen["echo_text"] == "hello"
        with pytest.raises(SystemExit) as exit_:
            main(["inspect", str(mcq_targets_file), "--view", "heatmap", "--echo-text", "x"])
        assert exit_.value.code == 2 and "--echo-text is an option of --view echo" in capsys.readouterr().err
    finally:
        VIEWS.unregister("echo")


# -- the layers ------------------------------------------------------------------------------------
def test_import_layers_hold_and_nothing_imports_in_a_circle():
    lint = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(lint).exists():
        pytest.skip("import-linter is not installed (make setup installs it)")
    r = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:]
    assert "2 kept, 0 broken" in r.stdout
