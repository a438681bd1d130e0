"""Every registered method trains through ``train()`` and every registered view renders a file.

These iterate the registries (``METHODS`` plus the ``--method`` values training tasks own, and
``VIEWS``), so a new method or view is run end to end the day it is registered. One tiny ImageFolder
(3 classes, few images), one epoch, a small CNN: seconds per item. What a plug-in needs (targets of
its kind, a teacher checkpoint, a run folder with an aspect head) is built here from fixtures.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from rich.console import Console

from makd_cli.data import load_dataset
from makd_cli.formats.targets import Targets, write_targets
from makd_cli.inspect.run import InspectConfig, run_inspect
from makd_cli.inspect.views import VIEWS
from makd_cli.losses import normalized_entropy
from makd_cli.methods import METHODS
from makd_cli.train import TrainConfig, train
from makd_cli.train.tasks import task_methods

from conftest import CLASSES, class_mcq_targets, make_imagefolder

C = len(CLASSES)


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def targets_of(kind: str, split) -> Targets:
    """Valid targets of ``kind`` for the tiny dataset's classes and training images."""
    rng = np.random.default_rng(0)
    if kind == "class_mcq":
        return class_mcq_targets()
    if kind == "class_yesno":
        return Targets(kind, CLASSES, ["q0", "q1"], rng.uniform(size=(C, 2)))
    if kind == "class_vector":
        return Targets(kind, CLASSES, ["dim"], rng.standard_normal((C, 5)))
    if kind == "image_yesno":
        return Targets(kind, CLASSES, ["q0", "q1"], rng.uniform(size=(len(split), 2)), images=split.ids, labels=split.labels)
    assert kind == "image_clip", kind
    z = np.eye(C)[split.labels] * 3 + rng.standard_normal((len(split), C)) * 0.3
    p = _softmax(z)
    import torch

    return Targets(kind, CLASSES, [], p, z, teacher="test", images=split.ids, labels=split.labels,
                   entropy=normalized_entropy(torch.from_numpy(p)).numpy())


def base_cfg(data, out, **kw) -> TrainConfig:
    return TrainConfig(data=str(data), out=str(out), student="small_cnn", epochs=1, batch_size=8, lr=0.05, quiet=True,
                       val_fraction=0.25, device="cpu", **kw)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry_runs")
    data = make_imagefolder(root / "data", per_class_train=6, per_class_test=2)
    split = load_dataset(str(data)).train
    files = {}
    for kind in ("class_mcq", "class_yesno", "class_vector", "image_yesno", "image_clip"):
        files[kind] = root / f"{kind}.h5"
        write_targets(files[kind], targets_of(kind, split))
    train(base_cfg(data, root / "teacher"))
    lavid = root / "lavid"
    train(base_cfg(data, lavid, method="lavid", targets=str(files["class_mcq"])))
    unseen = root / "unseen"  # one class held out, for --view unseen
    train(base_cfg(data, unseen, method="lavid", targets=str(files["class_mcq"]), hold_out_classes="1"))
    return {"root": root, "data": data, "targets": files, "teacher": root / "teacher" / "best.pt", "lavid": lavid, "unseen": unseen}


def _needs(name: str):
    """(target kind or None, needs a teacher checkpoint) of a --method value."""
    if name in METHODS:
        cls = METHODS.get(name)
        return (cls.target_kinds[0] if cls.target_kinds else None), bool(cls.needs_teacher)
    if name in task_methods():
        return "image_clip", False  # the task-owned methods (lead-ssl) distil CLIP targets
    return None, False  # ce: the baseline


# a queue the tiny run can fill; the stored distributions and a class head (the tiny targets name no CLIP model)
TASK_OPTIONS = {"lead-ssl": {"options": {"moco_queue": 16, "moco_dim": 8, "lead_teacher": "offline", "lead_student": "head"}}}


@pytest.mark.parametrize("name", sorted({"ce", *METHODS.names(), *task_methods()}))
def test_every_method_trains_an_epoch(world, name, tmp_path):
    kind, teacher = _needs(name)
    cfg = base_cfg(world["data"], tmp_path / name, method=name, targets=str(world["targets"][kind]) if kind else None,
                   teacher_ckpt=str(world["teacher"]) if teacher else None, **TASK_OPTIONS.get(name, {}))
    result = train(cfg)
    assert (tmp_path / name / "last.pt").exists()
    assert len(result["history"]) == 1
    assert all(math.isfinite(v) for k, v in result["history"][0].items() if k.startswith("train_") and isinstance(v, float))


# view -> (source: "targets" or "run", what else it needs)
VIEW_NEEDS = {
    "question": ("targets", {"question": "1"}),  # a 1-based position
    "class": ("targets", {"class_name": CLASSES[0]}),
    "compare": ("targets", {"options": {"compare": "class_mcq_other"}, "picture": False}),  # a terminal table only
    "quality": ("targets", {"picture": False}),  # a terminal report
    "curves": ("run", {}),
    "tsne": ("run", {"options": {"device": "cpu"}}),
    "image": ("run", {"options": {"device": "cpu", "images": ["0"]}}),
    "gradcam": ("run", {"options": {"device": "cpu", "images": ["0"]}}),
    "unseen": ("unseen", {"options": {"device": "cpu"}}),  # a run with a held-out class
}


@pytest.mark.parametrize("name", VIEWS.names())
def test_every_view_renders_a_file(world, name, tmp_path):
    source, extra = VIEW_NEEDS.get(name, ("targets", {}))  # a new view: a targets file, nothing else
    options = dict(extra.get("options", {}))
    if options.get("compare") == "class_mcq_other":
        other = tmp_path / "other.h5"
        write_targets(other, class_mcq_targets(seed=1))
        options["compare"] = [other]
    src = {"run": world["lavid"], "unseen": world["unseen"]}.get(source, world["targets"]["class_mcq"])
    picture = extra.get("picture", True)
    out = tmp_path / f"{name}.png" if picture else None
    cfg = InspectConfig(source=src, output=out, view=name, terminal=not picture, options=options,
                        **{k: v for k, v in extra.items() if k not in ("options", "picture")})
    console = Console(file=io.StringIO(), width=100)
    result = run_inspect(cfg, console=console)
    assert isinstance(result, dict) and result
    if picture:
        assert out.exists() and out.stat().st_size > 0
    else:
        assert console.file.getvalue().strip()
