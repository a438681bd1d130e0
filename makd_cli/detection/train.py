"""``makd train --task detection``: Faster R-CNN + FPN on COCO-format data, with or without MaKD's aspect head.

``--method ce`` is the plain detector (Table 7's "Base"); ``--method makd --targets T.h5`` adds the
aspect head and ``alpha * BCE(aspect logits, p(yes))`` against the MLLM's per-image answers
(``image_yesno`` targets from ``makd extract --mllm ... --data coco:PATH``; ``--control`` replaces
them by random or class-shuffled ones). The training loop is the shared engine (reseeding, DDP
sampler, bf16 autocast on CUDA, atomic checkpoints, ``--resume`` after ``kill -9``).

The schedule is COCO's 1x (Detectron2's, which the baselines of Table 7 use), counted in epochs:
12 epochs of 118k images at 16 per batch (90k iterations), lr 0.02 (not scaled with --batch-size: scale it yourself), momentum 0.9,
weight decay 1e-4, lr x0.1 after epochs 8 and 11 (60k and 80k iterations), 1000 warm-up iterations
from lr x0.001 (at most one epoch), multi-scale training (shorter side 640..800, longer at most 1333,
800 at test) and random horizontal flips. ``SCHEDULE_1X`` replaces the classification defaults of
any flag not given (``makd train --task detection``, ``TrainConfig.for_task("detection", ...)``); the
milestones scale with ``--epochs``.
"""

from __future__ import annotations

import math
import sys
from contextlib import nullcontext

import torch

from makd_cli.data import load_dataset
from makd_cli.data.coco import OBJECT_SEP, read_coco
from makd_cli.detection import SCHEDULE_1X
from makd_cli.detection.data import DetectionData, check_readable, collate
from makd_cli.detection.model import build_detector, image_sizes
from makd_cli.errors import MakdError, resume_mismatch
from makd_cli.methods import Batch, MethodContext, build_terms
from makd_cli.registry import Option
from makd_cli.train.config import DEFAULT_VAL_FRACTION, TrainConfig
from makd_cli.train.distributed import per_rank_batch
from makd_cli.train.engine import Objective, seed_everything
from makd_cli.train.progress import TrainProgress
from makd_cli.train.task import Built, Env, TrainingTask, load_targets
from makd_cli.train.tasks import TASKS, register_task

TASK = "detection"
METHODS = ("ce", "makd")
MILESTONES_1X = (8, 11)  # of 12 epochs
WARMUP_ITERS, WARMUP_FACTOR = 1000, 0.001
# The detector's sampling sizes (torchvision/Detectron2 values), the task's --rois-per-image and --proposals;
# TrainConfig(options={"rois_per_image": 64}) makes a step on tiny images far cheaper (the tests do).
SAMPLING = {"rois_per_image": 512, "proposals": 2000}
LOSS_NAMES = ("classifier", "box_reg", "objectness", "rpn_box_reg")  # torchvision's loss_<name>


def milestones(cfg: TrainConfig) -> list[int]:
    if cfg.milestones is not None:
        return list(cfg.milestones)
    return [max(1, round(m * cfg.epochs / SCHEDULE_1X["epochs"])) for m in MILESTONES_1X]


def decay(epoch: int, steps: list[int]) -> float:
    """lr multiplier of 0-based ``epoch``: x0.1 for each milestone reached (MultiStepLR's rule)."""
    return 0.1 ** sum(epoch >= m for m in steps)


def epoch_batches(images: int, world: int, batch_size: int) -> tuple[int, bool]:
    """(batches per epoch, drop_last) of one process: its DistributedSampler share of ``images`` in batches of
    ``batch_size`` (per process), the last short one dropped unless the share is smaller than one batch."""
    share = math.ceil(images / world)
    return (share // batch_size, True) if share > batch_size else (1, False)


def lr_factor(epoch: int, iteration: int, steps: list[int], warmup: int) -> float:
    """The lr multiplier at global ``iteration`` of 0-based ``epoch``: step decay times linear warm-up."""
    decay_factor = decay(epoch, steps)
    if iteration >= warmup:
        return decay_factor
    a = iteration / warmup
    return decay_factor * (WARMUP_FACTOR * (1 - a) + a)


ASPECT_HEADS = {"image": "linear on the mean of the last backbone stage",
                "object": "linear on the box head's RoI features of each ground-truth box"}


def aspect_level(cfg: TrainConfig) -> str:
    """``object`` when ``--targets`` holds per-object answers (``--data coco-objects:PATH``), else ``image``."""
    if not cfg.targets:
        return "image"
    from makd_cli.formats.targets import read_targets

    images = read_targets(cfg.targets).images or []
    return "object" if images and images[0].rpartition(OBJECT_SEP)[2].isdigit() else "image"


def _check_options(cfg: TrainConfig) -> list[str]:
    if cfg.data.partition(":")[0] != "coco":
        raise MakdError(f"--task detection reads COCO-format data: --data coco:PATH, not {cfg.data!r}")
    parts = [p.strip() for p in cfg.method.split("+") if p.strip()]
    if not parts or any(p not in METHODS for p in parts):
        raise MakdError(f"--task detection trains --method ce (the detector) or makd (with the aspect head), not {cfg.method!r}")
    for flag, bad in (("--teacher-ckpt", cfg.teacher_ckpt), ("--per-class", cfg.per_class is not None),
                      ("--train-fraction", cfg.train_fraction != 1.0), ("--select-by", getattr(cfg, "select_by", "val") != "val"),
                      ("--compile", cfg.compile), ("--select-every", cfg.select_every is not None),
                      ("--val-fraction (nothing is held out)", cfg.val_fraction != DEFAULT_VAL_FRACTION)):
        if bad:
            raise MakdError(f"{flag} is not supported with --task detection")
    return parts


def check_detector_resume(ckpt: dict, cfg: TrainConfig, sampling: dict, where: str) -> None:
    """The detector's own settings a resumed run must keep: the sampling sizes, the image size, and
    whether ImageNet weights were given (they freeze the batch norm and first stages, so the weights
    and the optimizer's parameters differ)."""
    old = ckpt["config"]
    for flag, was, now in (("--rois-per-image / --proposals", ckpt["head"].get("sampling", sampling), sampling),
                           ("--image-size", old.get("image_size"), cfg.image_size),
                           ("--pretrained (given or not)", bool(old.get("pretrained")), bool(cfg.pretrained))):
        if was != now:
            raise resume_mismatch(where, flag, was, now)


def train_detection(cfg: TrainConfig) -> dict:
    return TASKS.get(TASK).train(cfg)


class _Progress(TrainProgress):
    def epoch_parts(self, record: dict) -> list[str]:
        return [f"lr {record['lr']:.4g}", f"{record['images_per_s']:.1f} img/s"]


def _build(cfg: TrainConfig, env: Env) -> Built:
    device, info = env.device, env.info
    coco = read_coco(cfg.data.partition(":")[2] or None)
    positions = coco.train.with_objects()  # the training images, in the order of the datasets' views
    level = aspect_level(cfg)
    # the samples the targets are keyed by: the images (coco:PATH), or their boxes (coco-objects:PATH)
    samples = load_dataset(f"coco{'-objects' if level == 'object' else ''}:{cfg.data.partition(':')[2]}", seed=cfg.seed).train
    from makd_cli.methods.base import METHODS as TERMS

    # a method that learns from targets (makd), or --targets / --control given: load_targets says what is missing
    wants_targets = any(TERMS.get(p).target_kinds for p in _check_options(cfg) if p in TERMS) or cfg.targets or cfg.control
    targets = load_targets(cfg, coco.classes, samples) if wants_targets else None
    if targets is not None and targets.kind != "image_yesno":
        raise MakdError(f"--task detection learns per-image answers (image_yesno targets from `makd extract --mllm ... "
                        f"--data {cfg.data}`), but {cfg.targets} holds {targets.kind}")
    ctx = MethodContext(num_classes=len(coco.classes), targets=targets, train_ids=samples.ids,
                        train_labels=samples.labels, weight=cfg.aux_weight, epochs=cfg.epochs,
                        options=cfg.options_of_kind("method"))
    terms = [t.to(device) for t in build_terms(cfg.method, ctx)]
    if targets is not None and not terms:
        raise MakdError("--method ce does not use --targets; drop --targets or train --method makd")
    aspect_dim = sum(t.extra_dim for t in terms)

    seed_everything(cfg.seed)  # the initial weights depend on the seed alone
    sampling = {k: int(v) for k, v in cfg.options_of("task", TASK).items() if k in SAMPLING}  # --rois-per-image, --proposals
    model = build_detector(cfg.student, len(coco.classes), aspect_dim, cfg.pretrained, cfg.image_size, **sampling,
                           aspect_level=level).to(device)
    step_model = model
    if info.enabled:
        step_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[info.local_rank] if device.type == "cuda" else None)
    batch_size = per_rank_batch(cfg.batch_size, info)
    data = DetectionData(coco.train, positions, flip=True)
    steps_per_epoch, drop_last = epoch_batches(len(data), info.world if info.enabled else 1, batch_size)
    warmup = min(WARMUP_ITERS, steps_per_epoch)
    steps = milestones(cfg)

    params = [p for p in model.parameters() if p.requires_grad]

    _, test_size, max_size = image_sizes(cfg.image_size)
    head = {
        "task": TASK, "method": cfg.method, "extra_dim": aspect_dim, "terms": [t.head_info() for t in terms],
        "slices": {t.name: [0, t.extra_dim] for t in terms if t.extra_dim},
        "aspect_level": level if aspect_dim else None,
        "aspect_head": (ASPECT_HEADS[level] if aspect_dim else None),
        "schedule": {"milestones": steps, "warmup_iters": warmup, "max_size": max_size}, "sampling": sampling,
    }
    base = {
        "task": TASK, "arch": cfg.student, "num_classes": len(coco.classes), "classes": list(coco.classes),
        "category_ids": list(coco.category_ids), "image_size": test_size, "native_size": None,
        "split": {"train": len(data), "val": 0, "test": len(coco.val)},
    }
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" and cfg.amp else nullcontext
    counter = {"epoch": -1, "i": 0}
    optimizer_ref = []  # the optimizer the shared setup makes (TrainingTask.scheduler hands it over)
    # object level: the targets' row of box j of training image i is first_box[i] + j
    counts = torch.tensor([len(coco.train.boxes[k]) for k in positions])
    first_box = torch.cumsum(counts, 0) - counts

    def aspect_rows(indices):
        if level == "image":
            return indices
        idx = indices.cpu()
        return torch.cat([torch.arange(int(first_box[i]), int(first_box[i] + counts[i])) for i in idx]).to(indices.device)

    def step(batch, epoch):
        indices, images, boxes = batch
        check_readable(images, boxes)
        if counter["epoch"] != epoch:
            counter.update(epoch=epoch, i=0)
        factor = lr_factor(epoch, epoch * steps_per_epoch + counter["i"], steps, warmup)
        counter["i"] += 1
        for group in optimizer_ref[0].param_groups:
            group["lr"] = cfg.lr * factor
        images = [im.to(device, non_blocking=True) for im in images]
        boxes = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in boxes]
        with autocast():
            losses, aspect = step_model(images, boxes)
        parts = {name[5:]: value.float() for name, value in losses.items()}
        loss = sum(parts.values())
        for t in terms:
            parts[t.name] = t.loss(None, aspect.float(), Batch(None, None, aspect_rows(indices), epoch))
            loss = loss + parts[t.name]
        return loss, {name: value.item() for name, value in parts.items()}

    objective = Objective(model=model, data=data, train_modules=[model], step=step, parts=(*LOSS_NAMES, *(t.name for t in terms)),
                          batch_size=batch_size, drop_last=drop_last, keep="latest", collate=collate,
                          part_weights={t.name: t.weight for t in terms},
                          loss_hint="lower --lr or --aux-weight (a detector from random weights needs a smaller lr than 0.02)")
    return Built(objective, params, base, head, targets, state={"sampling": sampling, "coco": coco, "optimizer": optimizer_ref})


@register_task(TASK, help="Faster R-CNN + FPN on --data coco:PATH (--task detection; --method ce, or makd for the aspect head); "
               "defaults: COCO's 1x schedule, 12 epochs, lr 0.02, weight decay 1e-4", options=[
    Option("rois-per-image", int, SAMPLING["rois_per_image"], "--task detection: RoIs sampled per image for the box head's loss "
                                       "(Detectron2's and torchvision's 512; fewer make a step on small images cheaper).", min=1),
    Option("proposals", int, SAMPLING["proposals"], "--task detection: RPN proposals kept per image after NMS in training "
                                   "(torchvision's 2000).", min=1),
])
class Detection(TrainingTask):
    """Faster R-CNN + FPN, with MaKD's aspect head for --method makd; chosen by --task detection."""

    defaults = SCHEDULE_1X
    progress = _Progress

    check = staticmethod(_check_options)
    build = staticmethod(_build)

    def scheduler(self, cfg: TrainConfig, optimizer, built: Built):
        built.state["optimizer"].append(optimizer)  # the step sets the warm-up lr on it
        steps = milestones(cfg)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: decay(e, steps))

    def check_resume(self, ckpt: dict, cfg: TrainConfig, built: Built, where: str) -> None:
        check_detector_resume(ckpt, cfg, built.state["sampling"], where)

    def summary(self, cfg: TrainConfig, run, built: Built) -> dict:
        if run.info.main and not cfg.quiet:
            print(f"makd: {run.out}: evaluate with `makd eval {run.out}` (COCO AP on {built.state['coco'].val.name})", file=sys.stderr)
        # no validation top-1 for a detector: COCO AP comes from makd eval
        return {"out": str(run.out), "epochs": cfg.epochs, "best_val_top1": None, "history": run.history,
                "split": run.base["split"], "task": TASK}
