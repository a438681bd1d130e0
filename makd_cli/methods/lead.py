"""LEAD, supervised variant (lead-supplementary.txt): CE + weight * (1 - H^2) * KL(teacher || student).

The teacher is CLIP scoring one LLM description per class (``makd extract --clip``, kind
``image_clip``): per training image a distribution p over the C classes and its normalised entropy
H = entropy(p) / log C. Confident teacher rows (H near 0) are distilled fully, uncertain ones (H near
1) hardly at all. The student side is the softmax of its C class logits, so the term adds no outputs.
The self-supervised variant (MoCo v2 + this term, ``--method lead-ssl``) lives in ``train/moco.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from makd_cli.losses import lead_weighted_kl, normalized_entropy
from makd_cli.methods.base import MethodTerm, TargetTable, register_method, require_targets


def teacher_entropy(targets) -> torch.Tensor:
    """Per-row normalised entropy: the file's ``entropy`` dataset, or computed from ``probs`` (files
    from ``--mllm --kind zero_shot`` and controls have none)."""
    if targets.entropy is not None:
        return torch.from_numpy(targets.entropy).float()
    return normalized_entropy(torch.from_numpy(targets.probs).double()).float()


def text_logits(projection: Tensor, text_embeddings: Tensor, temperature: float) -> Tensor:
    """LEAD's public code: the student's logits over the classes are cos(projection, description
    embedding) / temperature, with the projection L2-normalised here and the description embeddings
    (C x D, from the ``image_clip`` file) already normalised: the student speaks the teacher's space."""
    return F.normalize(projection, dim=1) @ text_embeddings.t().to(projection.dtype) / temperature


def lead_reference_kl(student_logits: Tensor, teacher_probs: Tensor, entropy: Tensor, weight: float) -> Tensor:
    """The distillation term as LEAD's public code computes it (``main.py``: ``KLDivLoss(reduction='none')``,
    ``.mean(dim=1)``, times ``(1 - H^2)`` and ``beta``, ``.sum()``):

        sum over the batch of  weight * (1 - H_i^2) * (1 / C) * sum_c p_ic (log p_ic - log q_ic)

    i.e. the per-sample KL divided by C (a mean over classes), summed (not averaged) over the batch
    this process holds."""
    p = teacher_probs.detach().to(student_logits.dtype)
    log_q = F.log_softmax(student_logits, dim=-1)
    per_class_mean = (torch.special.xlogy(p, p) - p * log_q).mean(dim=-1)
    w = 1.0 - entropy.detach().to(per_class_mean.dtype) ** 2
    return weight * (w * per_class_mean).sum()


class TeacherDistribution:
    """Per-image teacher distribution and entropy, looked up by training-sample index."""

    def __init__(self, targets, ctx):
        self.table = TargetTable(targets, ctx)
        self.entropy = teacher_entropy(targets)

    def to(self, device) -> "TeacherDistribution":
        self.table.to(device)
        self.entropy = self.entropy.to(device)
        return self

    def lookup(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.table.row_of_sample[indices]
        return self.table.table[rows], self.entropy[rows]


@register_method("lead", help="CE + weight * (1 - H^2) * KL(CLIP teacher || student) with image_clip targets (LEAD)")
class LEAD(MethodTerm):
    name = "lead"
    target_kinds = ("image_clip",)
    default_weight = 1.0

    def __init__(self, ctx):
        super().__init__(ctx)
        self.teacher = TeacherDistribution(require_targets(self, ctx), ctx)

    def to(self, device):
        self.teacher.to(device)
        return self

    def loss(self, logits, extra, batch):
        p, h = self.teacher.lookup(batch.indices)
        return self.weight * lead_weighted_kl(logits, p, h)
