"""LEAD, self-supervised (``--method lead-ssl``): MoCo v2 plus entropy-adaptive distillation from a
CLIP teacher (lead-supplementary.txt sections 8, 11; shared/reference/paper-numbers.md).

Per image, two augmented views go through the query encoder (student backbone + projection MLP) and
the momentum key encoder (a copy updated as ``k = m k + (1 - m) q``, m = 0.999). The loss is

    mean_i( H_i^2 * InfoNCE_i )  +  weight * mean_i( (1 - H_i^2) * KL(p_i || softmax(student class logits)) )

with InfoNCE against the positive key and a queue of 65536 past keys (temperature 0.2), and p_i, H_i
the CLIP teacher's class distribution and normalised entropy (``makd extract --clip``). No labels are
used. Without ``--targets`` every H is 1: plain MoCo v2, the paper's baseline.

The checkpoint is the usual makd checkpoint (``head.method`` "lead-ssl"): the student's ``fc`` of C
outputs is the teacher-distribution predictor, so ``makd eval`` reads it like any other run;
``makd eval --probe`` gives the paper's protocol (linear probe, retrieval) on the backbone features.
``best.pt`` is the last epoch (a self-supervised run has no labels to choose an epoch with);
``last.pt`` also holds the projection head, the key encoder and the queue for ``--resume``.
Single process only (no torchrun).
"""

from __future__ import annotations

import copy
import os
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision import transforms as T

from makd_cli.data import load_dataset
from makd_cli.data.splits import carve_train_val
from makd_cli.data.transforms import MEAN, STD, TorchSplit, default_image_size, eval_transform
from makd_cli.errors import MakdError
from makd_cli.evaluate.metrics import topk_accuracy
from makd_cli.evaluate.predict import predict
from makd_cli.fileio import sha256_file
from makd_cli.formats.checkpoint import load_checkpoint
from makd_cli.losses import lead_weighted_kl
from makd_cli.methods.base import MethodContext
from makd_cli.methods.lead import TeacherDistribution
from makd_cli.students import build_student
from makd_cli.train.config import TrainConfig
from makd_cli.device import resolve_device
from makd_cli.train.engine import Objective, Run, fit, seed_everything
from makd_cli.train.loop import _check_resume, _load_targets, default_workers, run_paths
from makd_cli.train.progress import TrainProgress

METHOD = "lead-ssl"


# ------------------------------------------------------------------------------------------ parts
class ProjectionHead(nn.Module):
    """LEAD section 11: two fully connected layers with ReLU, then a linear layer with batch norm."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, hidden),
                                 nn.ReLU(inplace=True), nn.Linear(hidden, out_dim), nn.BatchNorm1d(out_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class MoCoQueue(nn.Module):
    """A ring buffer of the last ``size`` keys (L2-normalised rows); ``ptr`` is the next row to overwrite."""

    def __init__(self, dim: int, size: int, seed: int = 0):
        super().__init__()
        if size < 1:
            raise MakdError(f"--moco-queue must be at least 1, not {size}")
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("queue", F.normalize(torch.randn(size, dim, generator=gen), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.queue.shape[0]

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Replace the oldest keys by ``keys`` (B x dim), wrapping around the end of the buffer."""
        keys = keys.detach().to(self.queue.dtype)
        b, k = keys.shape[0], self.size
        if b >= k:  # more keys than room: keep the newest
            self.queue.copy_(keys[-k:])
            self.ptr.zero_()
            return
        idx = (int(self.ptr) + torch.arange(b, device=self.queue.device)) % k
        self.queue[idx] = keys
        self.ptr.fill_((int(self.ptr) + b) % k)


@torch.no_grad()
def momentum_update(query: nn.Module, key: nn.Module, m: float) -> None:
    """``key = m * key + (1 - m) * query`` for every parameter (buffers stay the key encoder's own)."""
    for pq, pk in zip(query.parameters(), key.parameters()):
        pk.mul_(m).add_(pq.detach(), alpha=1.0 - m)


def info_nce(q: Tensor, k: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """Per-sample InfoNCE (B,): the positive key ``k`` against the queue's negatives; q, k, queue L2-normalised."""
    l_pos = (q * k).sum(dim=1, keepdim=True)
    l_neg = q @ queue.t()
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device), reduction="none")


def lead_ssl_loss(nce: Tensor, class_logits: Tensor, teacher_probs: Tensor | None, entropy: Tensor | None,
                  weight: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """(total, contrastive, distillation): mean(H^2 * InfoNCE) + weight * mean((1 - H^2) * KL(p || q))."""
    if teacher_probs is None:  # no teacher: H = 1, plain MoCo v2
        zero = nce.new_zeros(())
        return nce.mean(), nce.mean(), zero
    h = entropy.detach().to(nce.dtype)
    contrastive = (h ** 2 * nce).mean()
    distill = weight * lead_weighted_kl(class_logits, teacher_probs, h)
    return contrastive + distill, contrastive, distill


def moco_transform(size: int) -> T.Compose:
    """MoCo v2's augmentation (random resized crop, colour jitter, grey, blur, flip)."""
    kernel = max(3, int(0.1 * size) // 2 * 2 + 1)
    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.2, 1.0)),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.RandomApply([T.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=0.5),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(MEAN, STD),
    ])


class _Twice:
    """Two independent augmentations of one image (a class, not a lambda: loader workers pickle it)."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, img):
        return self.transform(img), self.transform(img)


class TwoViews(TorchSplit):
    """(view 1, view 2, index): two augmentations of one image; the label is never read. An image that
    cannot be decoded is flagged and the next readable one stands in, as in ``TorchSplit``."""

    def __init__(self, split, transform):
        super().__init__(split, _Twice(transform), what="train")

    def __getitem__(self, i: int):
        (v1, v2), _, j = super().__getitem__(i)
        return v1, v2, j


class _Progress(TrainProgress):
    def end_epoch(self, record: dict) -> None:
        if self.quiet:
            return
        parts = [f"epoch {record['epoch']}/{self.epochs}", f"loss {record['train_loss']:.4f}"]
        parts += [f"{k[6:]} {v:.4f}" for k, v in record.items() if k.startswith("train_") and k != "train_loss"]
        if "val_top1" in record:
            parts.append(f"teacher-head val top-1 {record['val_top1']:.2f}%")
        parts.append(f"{record['images_per_s']:.0f} img/s")
        self.progress.console.print("  ".join(parts))


# ------------------------------------------------------------------------------------------ loop
def _check_options(cfg: TrainConfig) -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise MakdError("--method lead-ssl trains in one process; run it without torchrun")
    if not 0 <= cfg.moco_momentum < 1:
        raise MakdError(f"--moco-momentum must be in [0, 1), not {cfg.moco_momentum}")
    if cfg.moco_temperature <= 0:
        raise MakdError(f"--moco-temperature must be positive, not {cfg.moco_temperature}")
    if cfg.moco_dim < 1 or cfg.moco_queue < 1:
        raise MakdError("--moco-dim and --moco-queue must be at least 1")
    if cfg.control:
        raise MakdError("--control is not supported with --method lead-ssl")
    if cfg.teacher_ckpt:
        raise MakdError("--method lead-ssl distils the CLIP targets (--targets), not --teacher-ckpt")


def train_moco(cfg: TrainConfig) -> dict:
    """Train ``cfg.student`` with LEAD's self-supervised objective; returns the summary ``train`` returns."""
    _check_options(cfg)
    device = resolve_device(cfg.device)
    out, last_path, best_path = run_paths(cfg)

    ds = load_dataset(cfg.data, seed=cfg.seed)
    C = len(ds.classes)
    targets = _load_targets(cfg, ds.classes)
    if targets is not None and targets.kind != "image_clip":
        raise MakdError(f"--method lead-ssl takes image_clip targets (`makd extract --clip`), but the file holds {targets.kind}")
    train_split, val_split = carve_train_val(ds.train, C, cfg.val_fraction, cfg.per_class, cfg.train_fraction, cfg.seed)
    if len(train_split) < 2:
        raise MakdError("--method lead-ssl needs at least 2 training images (batch norm in the projection head)")
    teacher = None
    if targets is not None:
        ctx = MethodContext(num_classes=C, targets=targets, train_ids=train_split.ids, train_labels=None)
        teacher = TeacherDistribution(targets, ctx).to(device)
    weight = 1.0 if cfg.aux_weight is None else float(cfg.aux_weight)
    size = cfg.image_size or default_image_size(ds.native_size)

    seed_everything(cfg.seed)  # the initial weights depend on the seed alone
    model = build_student(cfg.student, C, 0, size, cfg.pretrained).to(device)
    features = model.fc.in_features
    proj = ProjectionHead(features, features, cfg.moco_dim).to(device)
    key_backbone, key_proj = copy.deepcopy(model.backbone), copy.deepcopy(proj)
    for p in list(key_backbone.parameters()) + list(key_proj.parameters()):
        p.requires_grad_(False)
    queue = MoCoQueue(cfg.moco_dim, cfg.moco_queue, seed=cfg.seed).to(device)

    params = list(model.parameters()) + list(proj.parameters())
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.milestones is None:  # MoCo v2's cosine schedule
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
        schedule = "cosine"
    else:
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, cfg.resolved_milestones(), gamma=0.1)
        schedule = f"step {cfg.resolved_milestones()}"
    history, start_epoch = [], 0
    if cfg.resume:
        ckpt = load_checkpoint(last_path)
        _check_resume(ckpt, cfg, out)
        for key in ("moco_queue", "moco_momentum", "moco_temperature", "moco_dim"):
            if ckpt["config"].get(key) != getattr(cfg, key):
                raise MakdError(f"{out}/last.pt was trained with --{key.replace('_', '-')} {ckpt['config'].get(key)}, "
                                f"not {getattr(cfg, key)}; resume with the same options or choose another -o")
        model.load_state_dict(ckpt["model"])
        moco = ckpt["moco"]
        proj.load_state_dict(moco["projection"])
        key_backbone.load_state_dict(moco["key_backbone"])
        key_proj.load_state_dict(moco["key_projection"])
        queue.load_state_dict(moco["queue"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        history, start_epoch = list(ckpt["history"]), int(ckpt["epoch"]) + 1

    term = {"method": METHOD, "extra_dim": 0, "weight": weight, "moco_momentum": cfg.moco_momentum,
            "moco_queue": cfg.moco_queue, "moco_temperature": cfg.moco_temperature, "moco_dim": cfg.moco_dim,
            "projection": [features, features, cfg.moco_dim], "schedule": schedule,
            "teacher": "image_clip" if targets is not None else None}
    head = {
        "method": METHOD, "extra_dim": 0, "terms": [term], "slices": {}, "self_supervised": True,
        "class_head": "teacher-distribution predictor" if targets is not None else "untrained (no teacher)",
        "targets_kind": targets.kind if targets is not None else None,
        "question_ids": list(targets.question_ids) if targets is not None else [],
        "targets_sha256": sha256_file(cfg.targets) if cfg.targets else None,
    }
    base = {
        "arch": cfg.student, "num_classes": C, "classes": list(ds.classes), "image_size": size,
        "native_size": ds.native_size, "head": head, "config": cfg.to_dict(),
        "split": {"train": len(train_split), "val": len(val_split) if val_split else 0, "test": len(ds.test)},
    }
    workers = default_workers(device) if cfg.workers is None else cfg.workers
    data = TwoViews(train_split, moco_transform(size))
    ev_tf = eval_transform(size, ds.native_size)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" and cfg.amp else nullcontext
    out.mkdir(parents=True, exist_ok=True)
    m, temp = cfg.moco_momentum, cfg.moco_temperature
    keys = {}  # this step's keys, queued after the optimizer step

    def step(batch, epoch):
        data.unreadable.check()  # more than 1 % undecodable images: one line, not a silent run
        v1, v2, idx = batch
        with autocast():
            feats = model.backbone(v1)
            class_logits, z = model.fc(feats), proj(feats)
            with torch.no_grad():
                momentum_update(model.backbone, key_backbone, m)
                momentum_update(proj, key_proj, m)
                zk = key_proj(key_backbone(v2))
        # the losses in fp32: bf16 similarities / 0.2 would be coarse
        q, k = F.normalize(z.float(), dim=1), F.normalize(zk.float(), dim=1)
        keys["k"] = k
        nce = info_nce(q, k, queue.queue.clone().detach(), temp)
        p, h = teacher.lookup(idx) if teacher is not None else (None, None)
        loss, con, kd = lead_ssl_loss(nce, class_logits.float(), p, h, weight)
        return loss, {"moco": con.item(), "lead": kd.item(), "entropy": h.mean().item() if h is not None else 1.0}

    def validate() -> dict:  # monitoring only: nothing is chosen by it
        if val_split is None or teacher is None:
            return {}
        pv = predict(model, val_split, ev_tf, batch_size=max(64, cfg.batch_size), workers=workers, device=str(device))
        return {"val_top1": topk_accuracy(pv["logits"], pv["labels"], 1)}

    def extra_state() -> dict:
        return {"moco": {"projection": proj.state_dict(), "key_backbone": key_backbone.state_dict(),
                         "key_projection": key_proj.state_dict(), "queue": queue.state_dict()}}

    objective = Objective(
        model=model, data=data, train_modules=[model, proj, key_backbone, key_proj], step=step,
        after_step=lambda batch: queue.enqueue(keys.pop("k")), validate=validate, extra_state=extra_state,
        parts=("moco", "lead", "entropy"), batch_size=min(cfg.batch_size, len(data)), drop_last=True,
        keep="latest",  # no labels to choose an epoch by: the latest is the result
    )
    run = Run(out, last_path, best_path, base, optimizer, scheduler, device, workers=workers, history=history,
              start_epoch=start_epoch)
    with _Progress(cfg.epochs, start_epoch, quiet=cfg.quiet) as bar:
        fit(cfg, run, objective, bar)
    final = history[-1] if history else {}
    return {"out": str(out), "epochs": cfg.epochs, "best_val_top1": final.get("val_top1", -final.get("train_loss", 0.0)),
            "history": history, "split": base["split"]}
