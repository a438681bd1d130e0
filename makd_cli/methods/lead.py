"""LEAD, supervised variant (lead-supplementary.txt): CE + weight * (1 - H^2) * KL(teacher || student).

The teacher is CLIP scoring one LLM description per class (``makd extract --clip``, kind
``image_clip``): per training image a distribution p over the C classes and its normalised entropy
H = entropy(p) / log C. Confident teacher rows (H near 0) are distilled fully, uncertain ones (H near
1) hardly at all. The student side is the softmax of its C class logits, so the term adds no outputs.
The self-supervised variant (MoCo v2 + this term, ``--method lead-ssl``) lives in ``train/moco.py``.
"""

from __future__ import annotations

import torch

from makd_cli.losses import lead_weighted_kl, normalized_entropy
from makd_cli.methods.base import MethodTerm, TargetTable, register_method, require_targets


def teacher_entropy(targets) -> torch.Tensor:
    """Per-row normalised entropy: the file's ``entropy`` dataset, or computed from ``probs`` (files
    from ``--mllm --kind zero_shot`` and controls have none)."""
    if targets.entropy is not None:
        return torch.from_numpy(targets.entropy).float()
    return normalized_entropy(torch.from_numpy(targets.probs).double()).float()


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
