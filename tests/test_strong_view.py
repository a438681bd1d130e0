"""MLKD's second view: the strong augmentation (RandAugment(2, 10) + Cutout as the reference code),
the stacked weak/strong pair the loop splits, and short runs of the changed KD-family methods."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from makd_cli.data.transforms import (CUTOUT_FILL, RandAugment, WeakStrong, strong_train_transform,
                                      train_transform)
from makd_cli.train import TrainConfig, train


def _image(size=32, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def test_strong_view_is_the_weak_pipeline_plus_randaugment():
    for size, native in ((32, 32), (224, None)):
        weak = [type(op) for op in train_transform(size, native).transforms]
        strong = [type(op) for op in strong_train_transform(size, native).transforms]
        assert strong == weak[:-2] + [RandAugment] + weak[-2:]
    (ra,) = [op for op in strong_train_transform(32, 32).transforms if isinstance(op, RandAugment)]
    assert (ra.n, ra.m) == (2, 10)


def test_cutout_is_a_grey_square_where_the_draws_put_it():
    img = _image(40)
    for seed in range(5):
        torch.manual_seed(seed)
        out = np.asarray(RandAugment(n=0)(img))  # no ops: only the Cutout
        torch.manual_seed(seed)
        # the code's centre: np.random.uniform(w) = uniform(low=w, high=1), so between 1 and w
        side, x, y = (float(torch.rand(())) * 0.5 * 40, 1 + float(torch.rand(())) * 39, 1 + float(torch.rand(())) * 39)
        x0, y0 = int(max(0, x - side / 2)), int(max(0, y - side / 2))
        x1, y1 = min(40, x0 + side), min(40, y0 + side)
        inside = np.zeros((40, 40), bool)
        inside[y0:int(y1) + 1, x0:int(x1) + 1] = True  # PIL's rectangle includes its end pixels
        assert (out[inside] == CUTOUT_FILL).all()
        assert (out[~inside] == np.asarray(img)[~inside]).all()


def test_randaugment_repeats_under_the_seed_and_changes_the_image():
    img, tf = _image(), strong_train_transform(32, 32)
    torch.manual_seed(1)
    a = tf(img)
    torch.manual_seed(1)
    assert torch.equal(a, tf(img))
    torch.manual_seed(1)
    plain = T.Compose([T.ToTensor(), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    assert not all(torch.equal(tf(img), plain(img)) for _ in range(5))


def test_weak_strong_pairs_collate_to_b_by_2():
    pair = WeakStrong(train_transform(32, 32), strong_train_transform(32, 32))
    items = [pair(_image(seed=i)) for i in range(3)]
    assert items[0].shape == (2, 3, 32, 32)
    assert torch.utils.data.default_collate(items).shape == (3, 2, 3, 32, 32)


# -- a few epochs of each changed method through train(): finite, and the loss goes down ---------
# Batches of 8 and lr 0.005: with 3 classes MLKD's class-level term (C x C Gram matrices of batch sums,
# divided by C) grows with B^2 / C and makes a step 10-40x the KD one; a batch of 24 at lr 0.01 diverges.

@pytest.fixture(scope="module")
def teacher_world(tmp_path_factory):
    from conftest import make_imagefolder

    root = tmp_path_factory.mktemp("kd_family")
    data = make_imagefolder(root / "data", per_class_train=8, per_class_test=2)
    train(TrainConfig(data=str(data), out=str(root / "teacher"), student="small_cnn", epochs=8, batch_size=8, lr=0.05,
                      quiet=True, val_fraction=0.0, device="cpu", workers=0, image_size=32))
    return data, root


@pytest.mark.parametrize("method,extra", [("kd", {}), ("dkd", {}), ("mlkd", {}), ("mlkd", {"mlkd_views": 1}),
                                          ("mlkd", {"logit_standardize": True})])
def test_kd_family_trains_a_few_epochs(teacher_world, method, extra):
    data, root = teacher_world
    out = root / f"{method}-{len(extra)}-{'-'.join(map(str, extra))}"
    result = train(TrainConfig(data=str(data), out=str(out), method=method, teacher_ckpt=str(root / "teacher" / "best.pt"),
                               student="small_cnn", epochs=5, batch_size=8, lr=0.005, milestones=[100], quiet=True,
                               val_fraction=0.0, device="cpu", workers=0, image_size=32, options=dict(extra)))
    losses = [r["train_loss"] for r in result["history"]]
    assert all(math.isfinite(x) for x in losses)
    # dkd's first epoch is CE alone (LaViD's 1-epoch warm-up): compare from the second
    first = 1 if method == "dkd" else 0
    assert losses[-1] < losses[first], losses
    assert result["history"][-1][f"train_{method}"] > 0


def test_two_view_mlkd_resumes_bit_identically(teacher_world, stopped_after_epoch):
    # RandAugment draws from torch's generator, which the loop reseeds per epoch (and per loader worker)
    from makd_cli.formats.checkpoint import load_checkpoint

    data, root = teacher_world
    common = dict(data=str(data), method="mlkd", teacher_ckpt=str(root / "teacher" / "best.pt"), student="small_cnn",
                  epochs=3, batch_size=8, lr=0.005, quiet=True, device="cpu", workers=1, image_size=32)
    train(TrainConfig(out=str(root / "full"), **common))
    with stopped_after_epoch(2):
        train(TrainConfig(out=str(root / "cut"), **common))
    train(TrainConfig(out=str(root / "cut"), resume=True, **common))
    a, b = load_checkpoint(root / "full" / "last.pt"), load_checkpoint(root / "cut" / "last.pt")
    assert a["history"][-1]["train_loss"] == b["history"][-1]["train_loss"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_the_loop_feeds_mlkd_both_views_and_weighs_ce(teacher_world, monkeypatch, tmp_path):
    # Deterministic views (weak: as is; strong: mirrored) and one batch of every image: the logged CE and
    # MLKD parts of the epoch are then the reference formulas on the initial student's logits.
    import makd_cli.train.loop as loop
    from makd_cli.data import load_dataset
    from makd_cli.data.transforms import MEAN, STD
    from makd_cli.formats.checkpoint import load_checkpoint
    from makd_cli.students import build_student, student_from_checkpoint
    from makd_cli.train.engine import seed_everything

    from test_losses import mlkd_reference_numpy

    weak = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])
    strong = T.Compose([T.RandomHorizontalFlip(p=1.0), T.ToTensor(), T.Normalize(MEAN, STD)])
    monkeypatch.setattr(loop, "train_transform", lambda size, native=None: weak)
    monkeypatch.setattr(loop, "strong_train_transform", lambda size, native=None: strong)
    data, root = teacher_world
    split = load_dataset(str(data)).train
    result = train(TrainConfig(data=str(data), out=str(tmp_path / "run"), method="mlkd", teacher_ckpt=str(root / "teacher" / "best.pt"),
                               student="small_cnn", epochs=1, batch_size=len(split), lr=0.0, quiet=True, val_fraction=0.0,
                               device="cpu", workers=0, image_size=32, options={"logit_standardize": True}))
    record = result["history"][0]

    seed_everything(0)  # the loop's initial weights
    student = build_student("small_cnn", 3, 0, 32).train()  # train mode: batch statistics, as in the step
    teacher = student_from_checkpoint(load_checkpoint(root / "teacher" / "best.pt"))
    labels = torch.as_tensor(split.labels)
    with torch.no_grad():
        views = [torch.stack([tf(split.load(i)) for i in range(len(split))]) for tf in (weak, strong)]
        (sw, _), (ss, _) = student(views[0]), student(views[1])
        tw, ts = teacher(views[0])[0], teacher(views[1])[0]
    ce = 0.5 * (torch.nn.functional.cross_entropy(sw, labels) + torch.nn.functional.cross_entropy(ss, labels)).item()
    assert record["train_ce"] == pytest.approx(ce, rel=1e-4)
    want = mlkd_reference_numpy(*(x.double().numpy() for x in (sw, tw, ss, ts)), 1.0, 0.5, True)
    assert record["train_mlkd"] == pytest.approx(want, rel=1e-4)


def test_resume_keeps_the_kd_familys_settings(teacher_world, tmp_path):
    # A resumed run distils as it started: another setting, or a run from before issue 16 (CE 1, T 4, DKD's
    # warm-up counted from 1, one-view MLKD, absent from its head), is one line naming the flag, not a silent change.
    from makd_cli.errors import MakdError
    from makd_cli.formats.checkpoint import load_checkpoint, save_checkpoint

    data, root = teacher_world
    common = dict(data=str(data), teacher_ckpt=str(root / "teacher" / "best.pt"), student="small_cnn", batch_size=8, epochs=2,
                  lr=0.005, quiet=True, val_fraction=0.0, device="cpu", workers=0, image_size=32)
    train(TrainConfig(out=str(tmp_path / "dkd"), method="dkd", **common))
    with pytest.raises(MakdError, match=r"--dkd-warmup 1, not 3"):
        train(TrainConfig(out=str(tmp_path / "dkd"), method="dkd", resume=True, options={"dkd_warmup": 3}, **common))
    with pytest.raises(MakdError, match=r"--kd-temperature 4.0, not 2.0"):
        train(TrainConfig(out=str(tmp_path / "dkd"), method="dkd", resume=True, options={"kd_temperature": 2.0}, **common))
    # the same settings resume (the run is complete: nothing left to train)
    assert len(train(TrainConfig(out=str(tmp_path / "dkd"), method="dkd", resume=True, **common))["history"]) == 2

    # a pre-issue-16 dkd run: warm-up 20 counted from 1, CE 1 (no ce_weight, no warmup_from in its head)
    last = tmp_path / "dkd" / "last.pt"
    ckpt = load_checkpoint(last)
    old = ckpt["head"]["terms"][0]
    old.pop("ce_weight"), old.pop("warmup_from")
    old["warmup"] = 20
    save_checkpoint(last, ckpt)
    resume = dict(method="dkd", resume=True, **common)
    with pytest.raises(MakdError, match=r"--dkd-warmup 20, not 1"):
        train(TrainConfig(out=str(tmp_path / "dkd"), **resume))
    with pytest.raises(MakdError, match=r"--dkd-warmup-from mdistiller, not lavid"):
        train(TrainConfig(out=str(tmp_path / "dkd"), options={"dkd_warmup": 20}, **resume))
    assert len(train(TrainConfig(out=str(tmp_path / "dkd"), options={"dkd_warmup": 20, "dkd_warmup_from": "mdistiller"},
                                 **resume))["history"]) == 2

    # a pre-issue-16 mlkd run: one view, no masks; with LS its former formula is gone
    train(TrainConfig(out=str(tmp_path / "mlkd"), method="mlkd", options={"mlkd_views": 1}, **common))
    last = tmp_path / "mlkd" / "last.pt"
    ckpt = load_checkpoint(last)
    for key in ("ce_weight", "views", "masks"):
        ckpt["head"]["terms"][0].pop(key)
    save_checkpoint(last, ckpt)
    with pytest.raises(MakdError, match=r"--mlkd-masks none, not median"):
        train(TrainConfig(out=str(tmp_path / "mlkd"), method="mlkd", resume=True,
                          options={"mlkd_views": 1, "kd_ce_weight": 1.0}, **common))
    ckpt["head"]["terms"][0]["logit_standardize"] = True
    save_checkpoint(last, ckpt)
    with pytest.raises(MakdError, match="former logit standardisation"):
        train(TrainConfig(out=str(tmp_path / "mlkd"), method="mlkd", resume=True, **common))
