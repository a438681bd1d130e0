"""The method interface: a method is a loss term (plus, optionally, extra student outputs).

``--method lavid+kd`` combines terms: the student's head gets the sum of their extra widths, each
term reads its own slice, and the training loss is CE on the class logits plus every term's loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from makd_cli.errors import MakdError
from makd_cli.formats.targets import Targets
from makd_cli.registry import Registry


@dataclass
class MethodContext:
    num_classes: int
    targets: Targets | None = None
    train_ids: list[str] = field(default_factory=list)  # sample ids of the training split, row i = index i
    train_labels: np.ndarray | None = None
    weight: float | None = None  # --aux-weight; None means the method's default
    options: dict = field(default_factory=dict)  # method-specific settings (temperature, aspect_loss, ...)
    epochs: int = 1
    # Per training sample, its row of per-class targets when they describe finer classes than the
    # head (Waterbirds trained on CUB species targets: fine_target_rows); None: the row is the label.
    target_rows: np.ndarray | None = None


@dataclass
class Batch:
    images: Tensor
    labels: Tensor
    indices: Tensor  # positions in the training split, for per-image targets
    epoch: int = 0
    teacher_logits: Tensor | None = None
    # The second (strong) view, when a term asks for two (``MethodTerm.views``): student and teacher logits.
    strong_logits: Tensor | None = None
    strong_teacher_logits: Tensor | None = None


# How a term's extra outputs become answers (``MethodTerm.output``): "identity" (the outputs are the
# answers, LaViD's regressed probabilities) or "sigmoid" (logits of p(yes), MaKD's BCE); and which
# metric scores them against the targets (``MethodTerm.metric``): "mae" (mean absolute error) or
# "yesno" (MAE and per-question AUC of the yes/no answers).
OUTPUTS = ("identity", "sigmoid")
METRICS = ("mae", "yesno")


class MethodTerm:
    """One loss term. What a method is, declared here and recorded in the checkpoint (``head_info``),
    is what eval and inspect read: no code outside the method's file tests its name."""

    name = "?"
    target_kinds: tuple[str, ...] = ()  # target kinds this term consumes; empty: none needed
    needs_teacher = False  # needs teacher logits for each batch (KD family)
    default_weight = 1.0
    views = 1  # 2: the loop also feeds a strongly augmented view of each image (MLKD)
    ce_weight: float | None = None  # the weight of CE on the class logits this term asks for; None: no opinion (1)
    output = "identity"  # activation of its extra outputs (OUTPUTS)
    metric = "mae"  # how eval scores its extra outputs against the targets (METRICS)

    @property
    def aspect_head(self) -> bool:
        """Whether it learns extra outputs from the teacher's targets (an aspect head eval and inspect can read)."""
        return bool(self.target_kinds) and self.extra_dim > 0

    def __init__(self, ctx: MethodContext):
        self.ctx = ctx
        self.weight = self.default_weight if ctx.weight is None else float(ctx.weight)
        self.extra_dim = 0

    def to(self, device) -> "MethodTerm":
        return self

    def loss(self, logits: Tensor, extra: Tensor, batch: Batch) -> Tensor:
        raise NotImplementedError

    def head_info(self) -> dict:
        return {"method": self.name, "extra_dim": self.extra_dim, "weight": self.weight, "output": self.output,
                "metric": self.metric, "aspect_head": self.aspect_head, "views": self.views}

    def check_resume(self, saved: dict, where: str) -> None:
        """Stop (one line) when ``saved``, this term's ``head_info`` in the run's last.pt, is another objective."""


def term_facts(info: dict) -> dict:
    """What a term recorded in a checkpoint (``head_info``) is: its output activation, metric, whether it
    has an aspect head and its views. A checkpoint from before these were recorded gets the declarations
    of the method registered under its name (``{}`` for a name no longer registered)."""
    facts = {k: info[k] for k in ("output", "metric", "aspect_head", "views") if k in info}
    if len(facts) < 4:
        cls = METHODS.get(info["method"]) if info.get("method") in METHODS else None
        if cls is not None:
            facts = {"output": cls.output, "metric": cls.metric, "views": cls.views,
                     "aspect_head": bool(cls.target_kinds) and int(info.get("extra_dim") or 0) > 0, **facts}
    return facts


def ce_weight_of(terms: list[MethodTerm]) -> float:
    """The weight of CE in a combined method: the one its terms ask for (1 when none does)."""
    asked = {t.name: float(t.ce_weight) for t in terms if t.ce_weight is not None}
    if len(set(asked.values())) > 1:
        raise MakdError(f"the methods weigh CE differently ({', '.join(f'{n} {w:g}' for n, w in asked.items())}); "
                        "pass --kd-ce-weight to choose one")
    return next(iter(asked.values()), 1.0)


class TargetTable:
    """Teacher targets as one tensor, looked up per batch by class label or by image index."""

    def __init__(self, targets: Targets, ctx: MethodContext, flatten: bool = True):
        self.per_image = targets.per_image
        probs = torch.from_numpy(targets.probs)
        self.row_shape = tuple(probs.shape[1:])
        self.table = probs.reshape(probs.shape[0], -1) if flatten else probs
        if self.per_image:
            row = {img: i for i, img in enumerate(targets.images)}
            missing = [i for i in ctx.train_ids if i not in row]
            if missing:
                raise MakdError(
                    f"the per-image targets lack {len(missing)} of the {len(ctx.train_ids)} training images "
                    f"(first: {missing[0]}); extract them with the same --data"
                )
            self.row_of_sample = torch.tensor([row[i] for i in ctx.train_ids], dtype=torch.long)
        elif ctx.target_rows is not None:
            self.row_of_sample = torch.as_tensor(np.asarray(ctx.target_rows), dtype=torch.long)
        else:
            self.row_of_sample = None  # the class label is the row

    def to(self, device) -> "TargetTable":
        self.table = self.table.to(device)
        if self.row_of_sample is not None:
            self.row_of_sample = self.row_of_sample.to(device)
        return self

    def lookup(self, batch: Batch) -> Tensor:
        if self.row_of_sample is not None:
            return self.table[self.row_of_sample[batch.indices]]
        return self.table[batch.labels]


def fine_target_rows(targets: Targets, classes: list[str], fine_classes: list[str]) -> np.ndarray | None:
    """Row of per-class ``targets`` for each of the dataset's ``fine_classes`` when the targets name
    those finer classes instead of the dataset's ``classes`` (LaViD on Waterbirds: CUB species
    signatures, landbird/waterbird head); None when they are targets of the dataset's own classes.
    A fine class missing from the targets is one line."""
    if targets.per_image or not fine_classes or list(targets.classes) == list(classes):
        return None
    row = {c: i for i, c in enumerate(targets.classes)}
    if not any(c in row for c in fine_classes):
        return None  # neither the classes nor the fine classes: check_classes says so
    missing = [c for c in fine_classes if c not in row]
    if missing:
        raise MakdError(f"the targets name {len(fine_classes) - len(missing)} of the dataset's {len(fine_classes)} fine "
                        f"classes (species) but lack {len(missing)} (first: {missing[0]}); extract them for the full "
                        "class list (`makd data classes cub:PATH` for Waterbirds)")
    return np.array([row[c] for c in fine_classes], dtype=np.int64)


# Every module of makd_cli/methods is imported on first use: a new method file registers itself.
METHODS: Registry[type[MethodTerm]] = Registry("method", package="makd_cli.methods", kind="method")
register_method = METHODS.register


def require_targets(term: MethodTerm, ctx: MethodContext) -> Targets:
    t = ctx.targets
    if t is None:
        raise MakdError(f"--method {term.name} needs --targets (a {' or '.join(term.target_kinds)} file from `makd extract`)")
    if t.kind not in term.target_kinds:
        raise MakdError(f"--method {term.name} takes {' or '.join(term.target_kinds)} targets, but the file holds {t.kind}")
    return t
