"""LEAD, self-supervised (``--method lead-ssl``): MoCo v2 plus entropy-adaptive distillation from a
CLIP teacher (lead-supplementary.txt sections 8, 11; shared/reference/paper-numbers.md).

Per image, two augmented views go through the query encoder (student backbone + projection MLP) and
the momentum key encoder (a copy updated as ``k = m k + (1 - m) q``, m = 0.999). The loss is

    mean_i( H_i^2 * InfoNCE_i )  +  KL term

with InfoNCE against the positive key and a queue of 65536 past keys (temperature 0.2), and p_i, H_i
the CLIP teacher's class distribution and normalised entropy (``makd extract --clip``). No labels are
used. Without ``--targets`` every H is 1: plain MoCo v2, the paper's baseline. As LEAD's public code
(HuiGuanLab/LEAD-pp ``main.py``) runs it, by default:

- ``--lead-student text``: the student's distribution is softmax(normalised projection q . description
  embeddings^T / 0.02), the embeddings read from the targets file; ``head`` uses a C-way class head.
- ``--lead-kl reference``: sum over the batch of weight * (1 - H^2) * KL / C, weight ``--lead-kl-weight``
  20; ``batchmean``: weight * mean over the batch of (1 - H^2) * KL.
- ``--lead-teacher online``: CLIP encodes the student's own augmented view at every step (the CLIP
  model is loaded for training); ``offline``: the distribution stored per image by ``extract --clip``.
- under torchrun the key encoder runs on a batch shuffled across the processes (MoCo's shuffle-BN).
  One process has nothing to shuffle across: its key encoder's batch norm sees the same images as the
  query's, as in any one-GPU MoCo without SplitBN.
- no hold-out: nothing is chosen on a validation split, so every training image is trained on.

The checkpoint is the usual makd checkpoint (``head.method`` "lead-ssl"); with ``--lead-student head``
the student's ``fc`` of C outputs is the teacher-distribution predictor, with ``text`` it is untrained.
``makd eval --probe`` gives the paper's protocol (linear probe, retrieval) on the backbone features.
``best.pt`` is the last epoch (a self-supervised run has no labels to choose an epoch with);
``last.pt`` also holds the projection head, the key encoder and the queue for ``--resume``.
"""

from __future__ import annotations

import copy
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision import transforms as T

from makd_cli.data import load_dataset
from makd_cli.data.splits import carve_train_val
from makd_cli.data.transforms import MEAN, STD, TorchSplit, default_image_size
from makd_cli.errors import MakdError, resume_mismatch
from makd_cli.losses import lead_weighted_kl, normalized_entropy
from makd_cli.methods.base import MethodContext
from makd_cli.methods.lead import TeacherDistribution, lead_reference_kl, text_logits
from makd_cli.registry import Option
from makd_cli.students import build_student
from makd_cli.train.config import TrainConfig
from makd_cli.train.distributed import DistInfo, per_rank_batch
from makd_cli.train.engine import Objective, seed_everything
from makd_cli.input_hashes import dataset_record
from makd_cli.train.progress import TrainProgress
from makd_cli.train.task import Built, Env, TrainingTask, load_targets
from makd_cli.train.tasks import TASKS, register_task

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


def lead_ssl_loss(nce: Tensor, student_logits: Tensor, teacher_probs: Tensor | None, entropy: Tensor | None,
                  weight: float = 20.0, kl: str = "reference") -> tuple[Tensor, Tensor, Tensor]:
    """(total, contrastive, distillation): mean(H^2 * InfoNCE) + the KL term, ``kl`` "reference"
    (``lead_reference_kl``: sum over the batch of weight * (1 - H^2) * KL / C) or "batchmean"
    (weight * mean over the batch of (1 - H^2) * KL)."""
    if teacher_probs is None:  # no teacher: H = 1, plain MoCo v2
        zero = nce.new_zeros(())
        return nce.mean(), nce.mean(), zero
    h = entropy.detach().to(nce.dtype)
    contrastive = (h ** 2 * nce).mean()
    if kl == "reference":
        distill = lead_reference_kl(student_logits, teacher_probs, h, weight)
    else:
        distill = weight * lead_weighted_kl(student_logits, teacher_probs, h)
    return contrastive + distill, contrastive, distill


class QueryEncoder(nn.Module):
    """What the gradient flows through: backbone, projection and (``--lead-student head``) the class
    head; one module so that DistributedDataParallel averages all of their gradients."""

    def __init__(self, backbone: nn.Module, projection: nn.Module, head: nn.Module | None):
        super().__init__()
        self.backbone, self.projection, self.head = backbone, projection, head

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        feats = self.backbone(x)
        return self.projection(feats), (self.head(feats) if self.head is not None else None)


def _all_gather(x: Tensor) -> Tensor:
    import torch.distributed as dist

    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


@torch.no_grad()
def shuffled_keys(encode, views: Tensor, info: DistInfo) -> Tensor:
    """Keys of every process's views (world * b rows, in rank order) computed with MoCo's shuffle-BN:
    the views of all processes are gathered, permuted by one permutation (rank 0's, broadcast), and
    each process encodes its share of the permuted batch, so the key encoder's batch norm never sees
    the batch the query encoder normalised. One process: no shuffle, its own keys (b rows)."""
    if not info.enabled:
        return encode(views)
    import torch.distributed as dist

    gathered = _all_gather(views)
    perm = torch.randperm(gathered.shape[0], device=views.device)
    dist.broadcast(perm, 0)
    keys = _all_gather(encode(gathered[perm.view(info.world, -1)[info.rank]]))
    return unshuffle(keys, perm)


def unshuffle(keys: Tensor, perm: Tensor) -> Tensor:
    """Row ``j`` of ``keys`` belongs to view ``perm[j]``: put every key back at its view's row."""
    out = torch.empty_like(keys)
    out[perm] = keys
    return out


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
    def epoch_parts(self, record: dict) -> list[str]:
        parts = []
        if "teacher_share" in record:
            parts.append(f"online teacher {record['teacher_s_per_step']:.3f} s/step ({100 * record['teacher_share']:.0f}% of the time)")
        return parts + [f"{record['images_per_s']:.0f} img/s"]


# ------------------------------------------------------------------------------------------ loop
# The moco task's options (declared on the task: --method lead-ssl is not a METHODS term).
MOCO_OPTIONS = [
    Option("moco-queue", int, 65536, "--method lead-ssl: MoCo v2 queue of negative keys (the paper: 65536).", min=1),
    Option("moco-momentum", float, 0.999, "--method lead-ssl: momentum of the key encoder. Under torchrun the key encoder "
                                          "sees a batch shuffled across the processes (MoCo's shuffle-BN); one process has no "
                                          "such shuffle.", min=0, max=1),
    Option("moco-temperature", float, 0.2, "--method lead-ssl: InfoNCE temperature.", min=0),
    Option("moco-key-updates", int, 1, "--method lead-ssl: momentum updates of the key encoder per step (LEAD++'s code runs its "
                                       "model three times per step, each updating it: 3, i.e. k = m^3 k + (1 - m^3) q).", min=1),
    Option("moco-dim", int, None, "--method lead-ssl: output width of the projection MLP (default 128; with --lead-student "
                                  "text it is the width of the description embeddings, 512 for CLIP ViT-B/16 as in the "
                                  "public code, and another value is an error).", min=1),
    Option("lead-student", str, "text", "--method lead-ssl: the student's distribution. text (LEAD's public code): softmax of "
                                        "the normalised projection . CLIP description embeddings / 0.02 (from the targets file); "
                                        "head: a C-way class head.", choices=("text", "head")),
    Option("lead-kl", str, "reference", "--method lead-ssl: the KL term. reference (the public code): sum over the batch of "
                                        "weight * (1 - H^2) * KL / C; batchmean: weight * mean over the batch of (1 - H^2) * KL.",
           choices=("reference", "batchmean")),
    Option("lead-kl-weight", float, 20.0, "--method lead-ssl: weight of the KL term (the public code's beta, 20).", min=0),
    Option("lead-teacher", str, "online", "--method lead-ssl: online (the public code): CLIP scores the student's own augmented "
                                          "view at every step (loads the CLIP model; its share of the time is logged); offline: "
                                          "the distribution extract --clip stored per un-augmented image.",
           choices=("online", "offline")),
    Option("lead-clip", str, None, "--method lead-ssl --lead-teacher online: the CLIP model (default: the one named in the "
                                   "targets file)."),
]


def moco_options(cfg: TrainConfig) -> dict:
    """The moco task's options of this run (given, else their defaults), by key."""
    return cfg.options_of("task", "moco")


def _check_options(cfg: TrainConfig) -> None:
    if cfg.aux_weight is not None:
        raise MakdError("--method lead-ssl weighs its KL term with --lead-kl-weight (default 20, the public code's), not --aux-weight")
    opts = moco_options(cfg)
    if not 0 <= opts["moco_momentum"] < 1:
        raise MakdError(f"--moco-momentum must be in [0, 1), not {opts['moco_momentum']}")
    if opts["moco_temperature"] <= 0:
        raise MakdError(f"--moco-temperature must be positive, not {opts['moco_temperature']}")
    if (opts["moco_dim"] is not None and opts["moco_dim"] < 1) or opts["moco_queue"] < 1:
        raise MakdError("--moco-dim and --moco-queue must be at least 1")
    if cfg.control:
        raise MakdError("--control is not supported with --method lead-ssl")
    if cfg.teacher_ckpt:
        raise MakdError("--method lead-ssl distils the CLIP targets (--targets), not --teacher-ckpt")


def train_moco(cfg: TrainConfig) -> dict:
    """Train ``cfg.student`` with LEAD's self-supervised objective; returns the summary ``train`` returns.
    Under torchrun every process trains its share of each batch (DDP) and rank 0 writes the files."""
    return TASKS.get("moco").train(cfg)


class TeacherClock:
    """Seconds the online CLIP teacher takes, against the wall time of the epoch's steps."""

    def __init__(self):
        self.start, self.teacher, self.steps = None, 0.0, 0

    def report(self) -> dict:
        if self.start is None or not self.steps:
            return {}
        wall = time.perf_counter() - self.start
        figures = {"teacher_s_per_step": self.teacher / self.steps, "teacher_share": self.teacher / max(wall, 1e-9)}
        self.start, self.teacher, self.steps = None, 0.0, 0
        return figures


def _online_teacher(cfg: TrainConfig, name: str | None, targets, device):
    from makd_cli.teachers.clip import load_clip

    name = name or targets.meta.get("model")
    if not name:
        raise MakdError(f"--lead-teacher online: {cfg.targets} names no CLIP model (it is not from `makd extract --clip`); "
                        "pass --lead-clip MODEL, or --lead-teacher offline to use the stored distributions")
    return load_clip(name, device=str(device))


def _build(cfg: TrainConfig, env: Env) -> Built:
    device, info = env.device, env.info
    opts = moco_options(cfg)

    ds = load_dataset(cfg.data, seed=cfg.seed)
    C = len(ds.classes)
    targets = load_targets(cfg, ds.classes)
    if targets is not None and targets.kind != "image_clip":
        raise MakdError(f"--method lead-ssl takes image_clip targets (`makd extract --clip`), but the file holds {targets.kind}")
    # No hold-out: a self-supervised run chooses nothing on a validation split (best.pt is the last
    # epoch), so --val-fraction does not apply and every training image is trained on.
    train_split, _ = carve_train_val(ds.train, C, 0.0, cfg.per_class, cfg.train_fraction, cfg.seed)
    if len(train_split) < 2 * info.world:
        raise MakdError("--method lead-ssl needs at least 2 training images per process (batch norm in the projection head)")
    teacher, text_emb, clip_teacher = None, None, None
    student_kind = opts["lead_student"] if targets is not None else "head"
    online = targets is not None and opts["lead_teacher"] == "online"
    temperature = float(targets.meta.get("temperature", 0.02)) if targets is not None else 0.02
    if targets is not None:
        if (student_kind == "text" or online) and targets.text_embeddings is None:
            flag = "--lead-student head" if student_kind == "text" else "--lead-teacher offline"
            raise MakdError(f"{cfg.targets} holds no description embeddings (a format version 1 file, or one not from "
                            f"`makd extract --clip`); re-extract it with this makd, or pass {flag}"
                            + (" --lead-teacher offline" if online and student_kind == "text" else ""))
        if targets.text_embeddings is not None:
            text_emb = torch.from_numpy(targets.text_embeddings).float().to(device)
        ctx = MethodContext(num_classes=C, targets=targets, train_ids=train_split.ids, train_labels=None)
        teacher = None if online else TeacherDistribution(targets, ctx).to(device)
        if online:
            clip_teacher = _online_teacher(cfg, opts["lead_clip"], targets, device)
    weight, kl_form = float(opts["lead_kl_weight"]), opts["lead_kl"]
    size = cfg.image_size or default_image_size(ds.native_size)

    seed_everything(cfg.seed)  # the initial weights depend on the seed alone
    model = build_student(cfg.student, C, 0, size, cfg.pretrained, init=cfg.init).to(device)
    features = model.fc.in_features
    # --lead-student text: the projection lives in CLIP's embedding space, so its width is the embeddings'
    proj_dim = text_emb.shape[1] if student_kind == "text" else (opts["moco_dim"] or 128)
    if student_kind == "text" and opts["moco_dim"] not in (None, proj_dim):
        raise MakdError(f"--moco-dim {opts['moco_dim']}: with --lead-student text the projection lives in CLIP's embedding space, "
                        f"{proj_dim} wide in {cfg.targets}; leave --moco-dim out or pass --lead-student head")
    proj = ProjectionHead(features, features, proj_dim).to(device)
    key_backbone, key_proj = copy.deepcopy(model.backbone), copy.deepcopy(proj)
    for p in list(key_backbone.parameters()) + list(key_proj.parameters()):
        p.requires_grad_(False)
    queue = MoCoQueue(proj_dim, opts["moco_queue"], seed=cfg.seed).to(device)
    query = QueryEncoder(model.backbone, proj, model.fc if student_kind == "head" and targets is not None else None)
    step_query = query
    if info.enabled:
        step_query = torch.nn.parallel.DistributedDataParallel(query, device_ids=[info.local_rank] if device.type == "cuda" else None)

    schedule = "cosine" if cfg.milestones is None else f"step {cfg.resolved_milestones()}"
    term = {"method": METHOD, "extra_dim": 0, "weight": weight, "kl": kl_form, "moco_momentum": opts["moco_momentum"],
            "moco_queue": opts["moco_queue"], "moco_temperature": opts["moco_temperature"], "moco_dim": proj_dim,
            "projection": [features, features, proj_dim], "schedule": schedule,
            "student_distribution": student_kind,
            "teacher": None if targets is None else ("online " + clip_teacher.name if online else "image_clip"),
            "shuffle_bn": info.enabled, "processes": info.world}
    class_head = ("untrained (no teacher)" if targets is None else "teacher-distribution predictor" if student_kind == "head"
                  else "untrained (--lead-student text: the distribution is taken over the description embeddings)")
    head = {
        "method": METHOD, "extra_dim": 0, "terms": [term], "slices": {}, "self_supervised": True,
        "class_head": class_head,
    }
    base = {
        "arch": cfg.student, "num_classes": C, "classes": list(ds.classes), "image_size": size,
        "native_size": ds.native_size, "dataset": dataset_record(ds),
        "split": {"train": len(train_split), "val": 0, "test": len(ds.test)},
    }
    data = TwoViews(train_split, moco_transform(size))
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" and cfg.amp else nullcontext
    m, temp = opts["moco_momentum"], opts["moco_temperature"]
    key_updates = int(opts.get("moco_key_updates") or 1)  # LEAD++: 3 per step (its three forward passes)
    keys = {}  # this step's keys (every process's, under torchrun), queued after the optimizer step
    clock = TeacherClock()

    def encode_keys(views):
        return F.normalize(key_proj(key_backbone(views)).float(), dim=1)

    def teacher_rows(v1, idx):
        if clip_teacher is None:
            return teacher.lookup(idx) if teacher is not None else (None, None)
        t0 = time.perf_counter()
        image_emb = clip_teacher.encode_views(v1, MEAN, STD)  # the very view the query encoder sees
        p = torch.softmax(image_emb @ text_emb.t() / temperature, dim=1)
        clock.teacher += time.perf_counter() - t0
        return p, normalized_entropy(p)

    def step(batch, epoch):
        data.unreadable.check()  # more than 1 % undecodable images: one line, not a silent run
        v1, v2, idx = batch
        if clock.start is None:
            clock.start = time.perf_counter()
        clock.steps += 1
        with autocast():
            z, class_logits = step_query(v1)
            with torch.no_grad():
                for _ in range(key_updates):
                    momentum_update(model.backbone, key_backbone, m)
                    momentum_update(proj, key_proj, m)
                all_keys = shuffled_keys(encode_keys, v2, info)
        # the losses in fp32: bf16 similarities / 0.2 would be coarse
        q = F.normalize(z.float(), dim=1)
        k = all_keys.view(info.world, -1, all_keys.shape[1])[info.rank]
        keys["k"] = all_keys
        nce = info_nce(q, k, queue.queue.clone().detach(), temp)
        p, h = teacher_rows(v1, idx)
        if p is not None and student_kind == "text":
            class_logits = text_logits(z.float(), text_emb, temperature)
        loss, con, kd = lead_ssl_loss(nce, class_logits.float() if class_logits is not None else None, p, h, weight, kl_form)
        return loss, {"moco": con.item(), "lead": kd.item(), "entropy": h.mean().item() if h is not None else 1.0}

    def validate() -> dict:  # nothing is chosen by it: the online teacher's cost, when there is one
        return clock.report() if clip_teacher is not None else {}

    def extra_state() -> dict:
        return {"moco": {"projection": proj.state_dict(), "key_backbone": key_backbone.state_dict(),
                         "key_projection": key_proj.state_dict(), "queue": queue.state_dict()}}

    objective = Objective(
        model=model, data=data, train_modules=[model, proj, key_backbone, key_proj], step=step,
        after_step=lambda batch: queue.enqueue(keys.pop("k")), validate=validate, extra_state=extra_state,
        parts=("moco", "lead", "entropy"), batch_size=min(per_rank_batch(cfg.batch_size, info), len(data) // info.world),
        drop_last=True,
        keep="latest",  # no labels to choose an epoch by: the latest is the result
    )
    state = {"proj": proj, "key_backbone": key_backbone, "key_proj": key_proj, "queue": queue, "proj_dim": proj_dim,
             "student_kind": student_kind, "online": online, "kl_form": kl_form, "weight": weight, "opts": opts}
    return Built(objective, list(model.parameters()) + list(proj.parameters()), base, head, targets, state)


@register_task("moco", help="LEAD's self-supervised MoCo v2 with entropy-weighted distillation; under torchrun the key "
               "encoder sees a batch shuffled across the processes (shuffle-BN), one process has no such shuffle",
               options=MOCO_OPTIONS)
class MoCo(TrainingTask):
    """``--method lead-ssl``: MoCo v2 (query and momentum key encoders, a queue of keys) plus LEAD's KL."""

    methods = (METHOD,)
    progress = _Progress

    check = staticmethod(_check_options)
    build = staticmethod(_build)

    def scheduler(self, cfg: TrainConfig, optimizer, built: Built):
        if cfg.milestones is None:  # MoCo v2's cosine schedule
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
        return super().scheduler(cfg, optimizer, built)

    def check_resume(self, ckpt: dict, cfg: TrainConfig, built: Built, where: str) -> None:
        # what the run was, read from its head (a run from before issue 16 had a class head and the stored teacher)
        st, saved, old = built.state, ckpt["head"]["terms"][0], ckpt["config"]
        old_opts = old.get("options", {}).get("task:moco") or old  # runs from before issue 23 kept them as fields
        pairs = {key: (old_opts.get(key), st["opts"][key]) for key in ("moco_queue", "moco_momentum", "moco_temperature")}
        pairs["moco_dim"] = (saved.get("moco_dim"), st["proj_dim"])
        pairs["lead_student"] = (saved.get("student_distribution") or "head", st["student_kind"])
        pairs["lead_teacher"] = ("online" if str(saved.get("teacher") or "").startswith("online") else "offline",
                                 "online" if st["online"] else "offline")
        if built.targets is not None:  # the KL term (before issue 16: batch mean x --aux-weight, no "kl" in the head)
            pairs["lead_kl"] = (saved.get("kl") or "batchmean", st["kl_form"])
            pairs["lead_kl_weight"] = (saved.get("weight"), st["weight"])
        for key, (was, now) in pairs.items():
            if was != now:
                raise resume_mismatch(where, f"--{key.replace('_', '-')}", was, now)

    def load_state(self, ckpt: dict, built: Built) -> None:
        moco, st = ckpt["moco"], built.state
        st["proj"].load_state_dict(moco["projection"])
        st["key_backbone"].load_state_dict(moco["key_backbone"])
        st["key_proj"].load_state_dict(moco["key_projection"])
        st["queue"].load_state_dict(moco["queue"])

    def summary(self, cfg: TrainConfig, run, built: Built) -> dict:
        final = run.history[-1] if run.history else {}
        return {"out": str(run.out), "epochs": cfg.epochs, "best_val_top1": final.get("val_top1", -final.get("train_loss", 0.0)),
                "history": run.history, "split": run.base["split"]}
