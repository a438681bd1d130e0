"""Detection (``makd train --task detection``, ``makd eval`` on detectors) on a COCO-format set drawn here:
coloured squares, discs and bars on noise, 64 px, with the JSON in COCO's format."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from makd_cli.cli import app
from makd_cli.data import load_dataset
from makd_cli.data.coco import read_coco
from makd_cli.detection import train as det_train
from makd_cli.detection.data import DetectionData, collate
from makd_cli.detection.model import build_detector
from makd_cli.errors import MakdError
from makd_cli.formats.checkpoint import load_checkpoint
from makd_cli.formats.targets import Targets, write_targets
from makd_cli.losses import makd_bce
from makd_cli.train import TrainConfig
from makd_cli.train.runs import train_runs

CATEGORIES = [(1, "square"), (2, "disc"), (5, "bar")]  # not contiguous, as COCO's ids
COLOURS = [(230, 40, 40), (40, 200, 60), (50, 80, 230)]
SIZE, Q = 64, 6
SMALL = {"rois_per_image": 32, "proposals": 64}  # a cheap step on 64 px images


def draw_coco(root: Path, n_train: int = 12, n_val: int = 4, seed: int = 0, crowd: bool = True, size: int = SIZE) -> Path:
    """COCO's layout: annotations/instances_{train,val}2017.json, train2017/, val2017/ (``size`` px squares)."""
    rng = np.random.default_rng(seed)
    ann_id = image_id = 0
    for split, n in (("train2017", n_train), ("val2017", n_val)):
        (root / split).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for _ in range(n):
            image_id += 1
            im = Image.fromarray(rng.integers(0, 90, (size, size, 3), dtype=np.uint8))
            pen = ImageDraw.Draw(im)
            for _ in range(int(rng.integers(1, 3))):
                c, s = int(rng.integers(0, 3)), int(rng.integers(14, 26) * size // SIZE)
                x, y = (int(v) for v in rng.integers(0, size - s, 2))
                box = [x, y, s, s] if c != 2 else [x, y + s // 3, s, s // 3]
                if c == 1:
                    pen.ellipse([x, y, x + s, y + s], fill=COLOURS[c])
                else:
                    pen.rectangle([box[0], box[1], box[0] + box[2], box[1] + box[3]], fill=COLOURS[c])
                ann_id += 1
                annotations.append({"id": ann_id, "image_id": image_id, "category_id": CATEGORIES[c][0], "bbox": box,
                                    "area": box[2] * box[3], "iscrowd": 0})
            if crowd and image_id == 1:
                ann_id += 1
                annotations.append({"id": ann_id, "image_id": image_id, "category_id": 1, "bbox": [0, 0, 9, 9],
                                    "area": 81, "iscrowd": 1})
            name = f"{image_id:012d}.jpg"
            im.save(root / split / name, quality=95)
            images.append({"id": image_id, "file_name": name, "width": size, "height": size})
        (root / "annotations").mkdir(exist_ok=True)
        doc = {"images": images, "annotations": annotations, "categories": [{"id": i, "name": n} for i, n in CATEGORIES]}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc))
    return root


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory) -> Path:
    return draw_coco(tmp_path_factory.mktemp("coco") / "coco")


def aspect_targets(coco: Path, path: Path, drop: int = 0, seed: int = 0) -> Path:
    """image_yesno targets for the training images (all but the last ``drop``)."""
    view = load_dataset(f"coco:{coco}")
    ids = view.train.ids[: len(view.train.ids) - drop]
    rng = np.random.default_rng(seed)
    write_targets(path, Targets(kind="image_yesno", classes=list(view.classes), question_ids=[f"q{i}" for i in range(Q)],
                                probs=rng.uniform(0.05, 0.95, (len(ids), Q)), images=ids,
                                labels=view.train.labels[: len(ids)], teacher="test"))
    return path


def config(coco: Path, out: Path, **kw) -> TrainConfig:
    base = dict(data=f"coco:{coco}", out=str(out), task="detection", epochs=2, batch_size=4, lr=0.01, weight_decay=1e-4,
                image_size=SIZE, quiet=True, workers=0, device="cpu", options=dict(SMALL))
    return TrainConfig(**{**base, **kw})


# -- the dataset ------------------------------------------------------------------------------------
def test_reader_maps_categories_boxes_and_leaves_crowds_out(coco_dir):
    ds = read_coco(coco_dir)
    assert ds.classes == ["square", "disc", "bar"] and ds.category_ids == [1, 2, 5]
    doc = json.loads((coco_dir / "annotations" / "instances_train2017.json").read_text())
    first = [a for a in doc["annotations"] if a["image_id"] == 1 and not a["iscrowd"]]
    x, y, w, h = first[0]["bbox"]
    assert ds.train.boxes[0][0].tolist() == [x, y, x + w, y + h]  # xywh -> xyxy
    assert ds.train.labels[0].tolist() == [[1, 2, 5].index(a["category_id"]) + 1 for a in first]  # crowd left out
    assert ds.train.ids[0] == "train2017/000000000001.jpg" and len(ds.val) == 4
    view = load_dataset(f"coco:{coco_dir}")  # the classification view: labelled by the largest object
    b, lab = ds.train.boxes[0], ds.train.labels[0]
    assert view.train.labels[0] == lab[int(np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))] - 1
    assert view.train.ids == ds.train.ids


def test_boxes_are_clipped_to_the_image_and_left_out_when_nothing_stays(coco_dir, tmp_path):
    shutil.copytree(coco_dir, tmp_path / "c")
    file = tmp_path / "c" / "annotations" / "instances_train2017.json"
    doc = json.loads(file.read_text())
    first = next(a for a in doc["annotations"] if a["image_id"] == 1 and not a["iscrowd"])
    first["bbox"] = [-3.5, 50.0, 20.0, 30.0]  # past the left and the bottom edge of the 64 px image
    doc["annotations"].append({"id": 999, "image_id": 1, "category_id": 2, "bbox": [63.5, 10, 8, 8], "area": 64, "iscrowd": 0})
    file.write_text(json.dumps(doc))
    ds = read_coco(tmp_path / "c")
    assert ds.train.boxes[0][0].tolist() == [0.0, 50.0, 16.5, 64.0]  # x1 0, x2 -3.5 + 20, y2 at the height
    assert len(ds.train.boxes[0]) == len(read_coco(coco_dir).train.boxes[0])  # the half-pixel sliver is left out


def test_roboflow_layout_reads_too(coco_dir, tmp_path):
    for split, folder in (("train2017", "train"), ("val2017", "valid")):
        shutil.copytree(coco_dir / split, tmp_path / "rf" / folder)
        shutil.copy(coco_dir / "annotations" / f"instances_{split}.json", tmp_path / "rf" / folder / "_annotations.coco.json")
    ds = read_coco(tmp_path / "rf")
    assert ds.layout == "roboflow" and ds.train.ids[0] == "train/000000000001.jpg" and len(ds.val) == 4


def test_wrong_layouts_are_one_line(coco_dir, tmp_path):
    cases = []
    (tmp_path / "empty").mkdir()
    cases.append((tmp_path / "empty", "no COCO annotation files"))
    only_val = tmp_path / "only_val"
    shutil.copytree(coco_dir, only_val)
    (only_val / "annotations" / "instances_train2017.json").unlink()
    cases.append((only_val, "no training split"))
    no_images = tmp_path / "no_images"
    shutil.copytree(coco_dir, no_images)
    shutil.rmtree(no_images / "val2017")
    cases.append((no_images, "has no image folder"))
    broken = tmp_path / "broken"
    shutil.copytree(coco_dir, broken)
    (broken / "annotations" / "instances_val2017.json").write_text('{"images": []}')
    cases.append((broken, "not in COCO's format"))
    missing = tmp_path / "missing"
    shutil.copytree(coco_dir, missing)
    (missing / "train2017" / "000000000002.jpg").unlink()
    cases.append((missing, "are missing"))
    cases.append((coco_dir / "annotations" / "instances_train2017.json", "is a file; give the dataset folder"))
    for folder, message in cases:
        with pytest.raises(MakdError, match=message) as e:
            load_dataset(f"coco:{folder}")
        assert "\n" not in str(e.value)


# -- the model ----------------------------------------------------------------------------------------
def test_one_step_is_finite_and_the_aspect_loss_falls(coco_dir):
    ds = read_coco(coco_dir)
    _, images, boxes = collate([DetectionData(ds.train, range(2), flip=False)[i] for i in range(2)])
    targets = torch.rand(2, Q, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    plain = build_detector("resnet18", 3, 0, image_size=SIZE, **SMALL).train()
    losses, aspect = plain(images, boxes)
    assert aspect is None and set(losses) == {f"loss_{n}" for n in det_train.LOSS_NAMES}
    assert all(torch.isfinite(v) for v in losses.values())

    model = build_detector("resnet18", 3, Q, image_size=SIZE, **SMALL).train()
    assert model.aspect_head.in_features == 512  # ResNet-18's last stage, pooled
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    seen = []
    for _ in range(4):
        losses, aspect = model(images, boxes)
        bce = makd_bce(aspect, targets)
        seen.append(bce.item())
        opt.zero_grad()
        (sum(losses.values()) + bce).backward()
        opt.step()
    assert seen[0] == pytest.approx(float(makd_bce(torch.zeros(2, Q), targets)), rel=1e-5)  # the head starts at zero
    assert all(math.isfinite(v) for v in seen) and seen[-1] < seen[0] - 1e-3


def test_aspect_head_pools_each_image_without_its_padding():
    model = build_detector("resnet18", 3, Q, image_size=SIZE, **SMALL)
    c5 = torch.arange(2 * 1 * 2 * 4, dtype=torch.float32).reshape(2, 1, 2, 4)
    pooled = model.pooled_c5(c5, [(64, 128), (64, 60)], (64, 128))
    assert pooled[0].item() == c5[0].mean().item()
    assert pooled[1].item() == c5[1, :, :2, :2].mean().item()  # 60 of 128 px wide: 2 of the 4 columns


# -- training -----------------------------------------------------------------------------------------
@pytest.mark.slow  # three short runs and three evaluations: about a minute on 2 busy cores
def test_train_resume_equals_uninterrupted_and_eval_gives_ap(coco_dir, tmp_path, stopped_after_epoch):
    targets = aspect_targets(coco_dir, tmp_path / "t.h5")
    common = dict(method="makd", targets=str(targets), aux_weight=1.0)
    full = train_runs(config(coco_dir, tmp_path / "full", **common))[0]
    assert [r["epoch"] for r in full["history"]] == [1, 2] and full["best_val_top1"] is None  # no top-1 for a detector
    rec = full["history"][0]
    assert math.isfinite(rec["train_loss"]) and rec["train_makd"] > 0
    parts = sum(rec[f"train_{n}"] for n in (*det_train.LOSS_NAMES, "makd"))
    assert rec["train_loss"] == pytest.approx(parts, rel=1e-5)

    with stopped_after_epoch(1):
        train_runs(config(coco_dir, tmp_path / "cut", **common))
    train_runs(config(coco_dir, tmp_path / "cut", resume=True, **common))
    a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(tmp_path / "cut" / "last.pt")
    assert a["history"][-1]["train_loss"] == b["history"][-1]["train_loss"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["task"] == "detection" and a["category_ids"] == [1, 2, 5] and a["head"]["slices"] == {"makd": [0, Q]}

    # makd eval: the two identical runs are one setting (runs = 2, std 0) in every output form
    runner = CliRunner()
    res = runner.invoke(app, ["eval", str(tmp_path / "full"), str(tmp_path / "cut"), "--json", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    found = json.loads(res.stdout)
    assert [r["n"] for r in found["results"]] == [4, 4]
    row = found["table"][0]
    assert len(found["table"]) == 1 and row["runs"] == 2 and row["AP_std"] == 0.0
    assert 0.0 <= row["AP"] <= 100.0 and row["AP"] == found["results"][0]["AP"]
    csv = runner.invoke(app, ["eval", str(tmp_path / "full"), "--format", "csv", "--device", "cpu"])
    assert csv.exit_code == 0 and csv.stdout.splitlines()[0].split(",")[-7:] == [
        "AP_std", "AP50_std", "AP75_std", "APs_std", "APm_std", "APl_std", "runs"]
    md = runner.invoke(app, ["eval", str(tmp_path / "full"), "--format", "markdown", "--device", "cpu"])
    assert md.exit_code == 0 and "| AP | AP50 | AP75 | APs | APm | APl |" in md.stdout


@pytest.mark.slow  # one short training run: about 10 s
def test_per_object_targets_train_the_head_on_each_boxs_roi_features(coco_dir, tmp_path):
    objects = load_dataset(f"coco-objects:{coco_dir}")
    ds = read_coco(coco_dir)
    assert len(objects.train) == sum(len(b) for b in ds.train.boxes)  # one sample per training box
    assert objects.train.ids[0] == "train2017/000000000001.jpg#0"
    x1, y1, x2, y2 = ds.train.boxes[0][0].tolist()
    assert objects.train.load(0).size == (math.ceil(x2) - math.floor(x1), math.ceil(y2) - math.floor(y1))
    rng = np.random.default_rng(0)
    write_targets(tmp_path / "obj.h5", Targets(kind="image_yesno", classes=list(objects.classes), question_ids=[f"q{i}" for i in range(Q)],
                                                probs=rng.uniform(0.05, 0.95, (len(objects.train), Q)), images=objects.train.ids,
                                                labels=objects.train.labels, teacher="test"))
    cfg = config(coco_dir, tmp_path / "run", method="makd", targets=str(tmp_path / "obj.h5"), epochs=1)
    assert det_train.aspect_level(cfg) == "object"
    rec = train_runs(cfg)[0]["history"][0]
    assert math.isfinite(rec["train_makd"]) and rec["train_makd"] > 0
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["head"]["aspect_level"] == "object" and ckpt["model"]["aspect_head.weight"].shape == (Q, 1024)

    model = build_detector("resnet18", 3, Q, image_size=SIZE, **SMALL, aspect_level="object").train()
    _, images, boxes = collate([DetectionData(ds.train, range(3), flip=False)[i] for i in range(3)])
    _, aspect = model(images, boxes)
    assert aspect.shape == (sum(len(b["boxes"]) for b in boxes), Q)  # a row per ground-truth box


def test_targets_that_miss_training_images_are_one_line(coco_dir, tmp_path):
    targets = aspect_targets(coco_dir, tmp_path / "t.h5", drop=2)
    with pytest.raises(MakdError, match="lack 2 of the 12 training images") as e:
        train_runs(config(coco_dir, tmp_path / "run", method="makd", targets=str(targets)))
    assert "\n" not in str(e.value)


def test_an_unreadable_training_image_is_one_line_from_a_loader_worker_too(coco_dir, tmp_path):
    shutil.copytree(coco_dir, tmp_path / "c")
    for image in (tmp_path / "c" / "train2017").iterdir():
        image.write_bytes(b"not a jpeg")
    with pytest.raises(MakdError, match=r"^cannot read image .*train2017/0+\d+\.jpg \(UnidentifiedImageError\)") as e:
        train_runs(config(tmp_path / "c", tmp_path / "run", epochs=1, workers=1))
    assert "\n" not in str(e.value) and "Traceback" not in str(e.value)


def test_controls_replace_the_aspect_targets(coco_dir, tmp_path):
    from makd_cli.controls import apply_control
    from makd_cli.formats.targets import read_targets

    targets = read_targets(aspect_targets(coco_dir, tmp_path / "t.h5"))
    for control in ("random-codes", "shuffled"):
        other = apply_control(control, targets, 0)
        assert other.kind == "image_yesno" and other.images == targets.images
        assert not np.allclose(other.probs, targets.probs)


# -- the command line -----------------------------------------------------------------------------------------
def test_cli_task_detection_takes_coco_1x_defaults_unless_given(coco_dir, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr("makd_cli.train.runs.train_runs", lambda cfg, runs=1: seen.append(cfg) or [])
    runner = CliRunner()
    base = ["train", "--task", "detection", "--data", f"coco:{coco_dir}", "-o", str(tmp_path / "r")]
    assert runner.invoke(app, base).exit_code == 0
    assert runner.invoke(app, base + ["--epochs", "3", "--lr", "0.01"]).exit_code == 0
    assert (seen[0].epochs, seen[0].lr, seen[0].weight_decay, seen[0].task) == (12, 0.02, 1e-4, "detection")
    assert (seen[1].epochs, seen[1].lr, seen[1].weight_decay) == (3, 0.01, 1e-4)
    assert det_train.milestones(seen[0]) == [8, 11] and det_train.milestones(seen[1]) == [2, 3]
    # the task's own flags: defaults when absent, the given values reach the config
    opts = seen[0].options["task:detection"]  # the task's options, recorded under its name
    assert (opts["rois_per_image"], opts["proposals"]) == (512, 2000)
    assert runner.invoke(app, base + ["--rois-per-image", "64", "--proposals", "128"]).exit_code == 0
    opts = seen[2].options["task:detection"]
    assert (opts["rois_per_image"], opts["proposals"]) == (64, 128)
    # the Python API gets the same defaults: the task's schedule for the fields not given
    from makd_cli.train import TrainConfig
    api = TrainConfig.for_task("detection", data=f"coco:{coco_dir}", out=str(tmp_path / "p"), lr=0.01)
    assert (api.task, api.epochs, api.lr, api.weight_decay) == ("detection", 12, 0.01, 1e-4)
    assert TrainConfig.for_task(None, data="x", out="y").epochs == 240


def test_cli_refuses_other_data_and_methods_in_one_line(coco_dir, tmp_path, capsys):
    from makd_cli.cli import main

    for args, message in ((["--data", f"coco:{coco_dir}", "--method", "kd"], "ce .*or makd"),
                          (["--data", str(tmp_path)], "coco:PATH"),
                          (["--data", f"coco:{coco_dir}", "--val-fraction", "0.2"], "--val-fraction .*not supported"),
                          (["--data", f"coco:{coco_dir}", "--select-every", "2"], "--select-every is not supported")):
        with pytest.raises(SystemExit) as e:
            main(["train", "--task", "detection", "-o", str(tmp_path / "r"), *args])
        assert e.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and __import__("re").search(message, err), err


def test_epoch_batches_count_each_process_share():
    assert det_train.epoch_batches(118_000, 1, 16) == (7375, True)
    assert det_train.epoch_batches(118_000, 8, 2) == (7375, True)  # 14750 images per process
    assert det_train.epoch_batches(12, 2, 8) == (1, False)  # 6 per process: one short batch, not none
    assert det_train.epoch_batches(13, 1, 4) == (3, True)


def test_warmup_and_decay_follow_the_1x_schedule():
    assert det_train.lr_factor(0, 0, [8, 11], 1000) == pytest.approx(0.001)
    assert det_train.lr_factor(0, 500, [8, 11], 1000) == pytest.approx(0.001 * 0.5 + 0.5)
    assert det_train.lr_factor(7, 5000, [8, 11], 1000) == 1.0
    assert det_train.lr_factor(8, 5000, [8, 11], 1000) == pytest.approx(0.1)
    assert det_train.lr_factor(11, 5000, [8, 11], 1000) == pytest.approx(0.01)


# -- the example ------------------------------------------------------------------------------------------
def test_coco_example_makefile_runs_table_7_with_controls(tmp_path):
    import subprocess

    folder = Path(__file__).resolve().parents[1] / "examples" / "coco"
    proc = subprocess.run(["make", "-n", "-C", str(folder), f"DATA={tmp_path}", f"WORK={tmp_path / 'w'}"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "extract --mllm internvl2-8b" in text and f"--data coco:{tmp_path}" in text and "--select 50" in text
    for student in ("mobilenet_v2", "resnet18", "resnet50"):
        for run in ("ce", "makd", "makd.random-codes", "makd.shuffled"):
            for seed in (0, 1, 2):
                assert f"--student {student} --method {run.split('.')[0]} --seed {seed} -o {tmp_path}/w/runs/{student}/{run}/seed{seed}/" in text
    assert text.count("--control random-codes") == 9 and text.count("--control shuffled") == 9
    assert text.count("train --task detection") == 36 and "eval" in text and "results.md" in text
    missing = subprocess.run(["make", "-n", "-C", str(folder)], capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "set DATA=" in missing.stderr


@pytest.mark.slow  # two torchrun processes: about a minute
def test_torchrun_two_processes_train_one_detector(coco_dir, tmp_path):
    import subprocess
    import sys

    targets = aspect_targets(coco_dir, tmp_path / "t.h5")
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "makd_cli", "train", "--task", "detection",
           "--data", f"coco:{coco_dir}", "--method", "makd", "--targets", str(targets), "--image-size", str(SIZE),
           "--epochs", "1", "--batch-size", "4", "--lr", "0.005", "--device", "cpu", "-o", str(tmp_path / "run"), "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["epoch"] == 0 and math.isfinite(ckpt["history"][0]["train_makd"])
    assert not any(k.startswith("module.") for k in ckpt["model"]) and "aspect_head.weight" in ckpt["model"]


def test_pretrained_weights_file_fills_the_backbone_and_freezes_its_norm(tmp_path):
    import torchvision
    from torchvision.ops.misc import FrozenBatchNorm2d

    resnet = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        resnet.bn1.running_mean.uniform_()
    torch.save(resnet.state_dict(), tmp_path / "r18.pth")
    model = build_detector("resnet18", 3, 0, pretrained=str(tmp_path / "r18.pth"), image_size=SIZE)
    body = model.detector.backbone.body
    assert torch.equal(body.conv1.weight, resnet.conv1.weight) and torch.equal(body.layer4[1].conv2.weight, resnet.layer4[1].conv2.weight)
    assert isinstance(body.bn1, FrozenBatchNorm2d) and torch.equal(body.bn1.running_mean, resnet.bn1.running_mean)
    assert not body.conv1.weight.requires_grad and not body.layer1[0].conv1.weight.requires_grad  # Detectron2's FREEZE_AT 2
    assert body.layer2[0].conv1.weight.requires_grad
    with pytest.raises(MakdError, match="resnet50 or mobilenet_v2"):
        build_detector("vit_b_16", 3)
    net = torchvision.models.mobilenet_v2(weights=None)
    torch.save(net.state_dict(), tmp_path / "mv2.pth")
    mv2 = build_detector("mobilenet_v2", 3, Q, pretrained=str(tmp_path / "mv2.pth"), image_size=SIZE)
    assert torch.equal(mv2.detector.backbone.body["0"][0].weight, net.features[0][0].weight)
    assert mv2.aspect_head.in_features == 320 and not mv2.detector.backbone.body["3"].conv[0][0].weight.requires_grad


def test_resume_with_another_task_is_one_line(coco_dir, tmp_path):
    from makd_cli.train.task import check_resume as _check_resume

    detector = {"config": config(coco_dir, tmp_path / "r").to_dict()}
    with pytest.raises(MakdError, match="--task detection, not classify") as e:
        # a classifier's config (the detector's --rois-per-image / --proposals are not its options)
        _check_resume(detector, config(coco_dir, tmp_path / "r", task=None, resume=True, options={}), tmp_path / "r")
    assert "\n" not in str(e.value)
    _check_resume(detector, config(coco_dir, tmp_path / "r", resume=True), tmp_path / "r")  # the same task resumes
    classifier = {"config": {k: v for k, v in detector["config"].items() if k != "task"}}  # a run from before --task
    with pytest.raises(MakdError, match="--task classify, not detection"):
        _check_resume(classifier, config(coco_dir, tmp_path / "r", resume=True), tmp_path / "r")


def test_resume_keeps_the_detectors_sampling_image_size_and_frozen_stages(coco_dir, tmp_path):
    run = config(coco_dir, tmp_path / "r", pretrained="cache")
    ckpt = {"config": run.to_dict(), "head": {"sampling": dict(SMALL)}}
    det_train.check_detector_resume(ckpt, config(coco_dir, tmp_path / "r", pretrained="r18.pth", resume=True), dict(SMALL),
                                    tmp_path / "r")  # another weights file: the same frozen stages
    for change, sampling, message in (({}, {**SMALL, "proposals": 128}, "--proposals .* not"),
                                      ({"image_size": 96}, SMALL, "--image-size 64, not 96"),
                                      ({"pretrained": None}, SMALL, r"--pretrained \(given or not\) True, not False")):
        resumed = config(coco_dir, tmp_path / "r", **{"pretrained": "cache", **change}, resume=True)
        with pytest.raises(MakdError, match=message) as e:
            det_train.check_detector_resume(ckpt, resumed, dict(sampling), tmp_path / "r")
        assert "\n" not in str(e.value)


@pytest.mark.slow  # a run in this process, one killed in another, its resumption: about 30 s
def test_kill_9_mid_epoch_then_resume_equals_the_uninterrupted_run(coco_dir, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    targets = aspect_targets(coco_dir, tmp_path / "t.h5")
    common = dict(method="makd", targets=str(targets), aux_weight=1.0)
    train_runs(config(coco_dir, tmp_path / "full", **common))
    cut = tmp_path / "cut"
    cmd = [sys.executable, "-m", "makd_cli", "train", "--task", "detection", "--data", f"coco:{coco_dir}", "--method", "makd",
           "--targets", str(targets), "--aux-weight", "1", "--epochs", "2", "--batch-size", "4", "--lr", "0.01",
           "--weight-decay", "1e-4", "--image-size", str(SIZE), "--workers", "0", "--device", "cpu", "--quiet",
           "--rois-per-image", str(SMALL["rois_per_image"]), "--proposals", str(SMALL["proposals"]), "-o", str(cut)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not (cut / "metrics.jsonl").is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # in epoch 2, after epoch 1's checkpoint
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert load_checkpoint(cut / "last.pt")["epoch"] == 0
    train_runs(config(coco_dir, cut, resume=True, **common))
    a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(cut / "last.pt")
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k, state in a["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], b["optimizer"]["state"][k]["momentum_buffer"]), k
