"""Training: each method trains and lowers its loss, checkpoints are complete, resume is exact."""

import json

import numpy as np
import pytest
import torch

from makd_cli.errors import MakdError
from makd_cli.evaluate.report import comparison_table, evaluate_checkpoint
from makd_cli.formats.checkpoint import load_checkpoint
from makd_cli.formats.targets import Targets, write_targets
from makd_cli.train import TrainConfig, train

from conftest import CLASSES


def cfg(data, out, **kw):
    base = dict(data=str(data), out=str(out), student="small_cnn", epochs=3, batch_size=8, lr=0.05, quiet=True, val_fraction=0.25)
    base.update(kw)
    return TrainConfig(**base)


def test_ce_trains_and_writes_checkpoints(tiny_data, tmp_path):
    result = train(cfg(tiny_data, tmp_path / "ce", epochs=4))
    hist = result["history"]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    for name in ("best.pt", "last.pt", "metrics.jsonl"):
        assert (tmp_path / "ce" / name).exists()
    ckpt = torch.load(tmp_path / "ce" / "best.pt", weights_only=True)
    assert ckpt["classes"] == CLASSES and ckpt["arch"] == "small_cnn" and ckpt["head"]["extra_dim"] == 0
    assert "optimizer" not in ckpt  # best.pt is for use; last.pt carries the optimizer for --resume
    assert "optimizer" in torch.load(tmp_path / "ce" / "last.pt", weights_only=True)
    lines = (tmp_path / "ce" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["epoch"] for ln in lines] == [1, 2, 3, 4]
    assert result["split"] == {"train": 27, "val": 9, "test": 12}


def test_lavid_head_and_loss(tiny_data, tmp_path, mcq_targets_file):
    result = train(cfg(tiny_data, tmp_path / "lavid", method="lavid", targets=str(mcq_targets_file), epochs=4, aux_weight=5.0))
    hist = result["history"]
    assert hist[-1]["train_lavid"] < hist[0]["train_lavid"]
    ckpt = load_checkpoint(tmp_path / "lavid" / "best.pt")
    assert ckpt["head"]["extra_dim"] == 12 and ckpt["head"]["slices"] == {"lavid": [0, 12]}
    assert ckpt["head"]["terms"][0]["shape"] == [3, 4]


def test_makd_with_per_image_and_per_class_targets(tiny_data, tmp_path):
    from makd_cli.data import load_dataset

    ds = load_dataset(str(tiny_data))
    rng = np.random.default_rng(0)
    per_image = Targets("image_yesno", CLASSES, ["q1", "q2"], rng.random((len(ds.train), 2)), images=ds.train.ids, labels=ds.train.labels)
    write_targets(tmp_path / "img.h5", per_image)
    r = train(cfg(tiny_data, tmp_path / "makd_img", method="makd", targets=str(tmp_path / "img.h5"), epochs=3))
    assert r["history"][-1]["train_makd"] < r["history"][0]["train_makd"]
    per_class = Targets("class_yesno", CLASSES, ["q1", "q2"], [[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    write_targets(tmp_path / "cls.h5", per_class)
    r = train(cfg(tiny_data, tmp_path / "makd_cls", method="makd", targets=str(tmp_path / "cls.h5"), options={"aspect_loss": "kl"}, epochs=2))
    assert load_checkpoint(tmp_path / "makd_cls" / "best.pt")["head"]["terms"][0]["aspect_loss"] == "kl"


@pytest.mark.parametrize("control", ["random-codes", "shuffled"])
def test_controls_train(tiny_data, tmp_path, mcq_targets_file, control):
    train(cfg(tiny_data, tmp_path / control, method="lavid", targets=str(mcq_targets_file), control=control, epochs=1, aux_weight=5.0))
    assert load_checkpoint(tmp_path / control / "best.pt")["config"]["control"] == control


def test_resume_equals_uninterrupted(tiny_data, tmp_path, stopped_after_epoch, mcq_targets_file):
    common = dict(method="lavid", targets=str(mcq_targets_file), epochs=3, aux_weight=5.0)
    train(cfg(tiny_data, tmp_path / "full", **common))

    with stopped_after_epoch(2):
        train(cfg(tiny_data, tmp_path / "cut", **common))
    with pytest.raises(MakdError, match="--resume"):
        train(cfg(tiny_data, tmp_path / "cut", **common))
    train(cfg(tiny_data, tmp_path / "cut", resume=True, **common))
    a = load_checkpoint(tmp_path / "full" / "last.pt")
    b = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert a["history"][-1]["train_loss"] == b["history"][-1]["train_loss"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_eval_metrics_and_seed_aggregation(tiny_data, tmp_path):
    train(cfg(tiny_data, tmp_path / "s0", epochs=2, seed=0))
    train(cfg(tiny_data, tmp_path / "s1", epochs=2, seed=1))
    results = [evaluate_checkpoint(str(tmp_path / s / "best.pt")) for s in ("s0", "s1")]
    r = results[0]
    assert r["n"] == 12 and 0 <= r["top1"] <= 100 and r["top5"] == 100.0  # 3 classes: top-5 is always right
    cm = np.array(r["confusion"])
    assert cm.sum() == 12 and cm.shape == (3, 3)
    assert r["top1"] == pytest.approx(100 * np.trace(cm) / 12)
    table = comparison_table(results)
    assert len(table) == 1 and table["runs"].iloc[0] == 2
    assert table["top1"].iloc[0] == pytest.approx(np.mean([x["top1"] for x in results]))
    assert table["top1_std"].iloc[0] == pytest.approx(np.std([x["top1"] for x in results]))


def test_kd_from_teacher_checkpoint_and_from_mllm_class_scores(tiny_data, tmp_path):
    from makd_cli.data import load_dataset

    train(cfg(tiny_data, tmp_path / "teacher", epochs=2))
    r = train(cfg(tiny_data, tmp_path / "kd", method="kd", teacher_ckpt=str(tmp_path / "teacher" / "best.pt"), epochs=2))
    assert "train_kd" in r["history"][0]
    ds = load_dataset(str(tiny_data))
    z = np.random.default_rng(0).standard_normal((len(ds.train), 3))
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    write_targets(tmp_path / "zs.h5", Targets("image_clip", CLASSES, [], p, z, images=ds.train.ids, labels=ds.train.labels))
    r = train(cfg(tiny_data, tmp_path / "kd_mllm", method="dkd", targets=str(tmp_path / "zs.h5"), epochs=2))
    assert r["history"][-1]["train_dkd"] > 0
    with pytest.raises(MakdError, match="--teacher-ckpt"):
        train(cfg(tiny_data, tmp_path / "kd_none", method="kd", epochs=1))


def test_gaussian_control_is_per_image(tiny_data, tmp_path):
    write_targets(tmp_path / "cls.h5", Targets("class_yesno", CLASSES, ["q1", "q2"], [[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]]))
    train(cfg(tiny_data, tmp_path / "g", method="makd", targets=str(tmp_path / "cls.h5"), control="gaussian", epochs=1))
    assert load_checkpoint(tmp_path / "g" / "best.pt")["head"]["targets_kind"] == "image_yesno"
