"""Decoupled KD (Zhao et al. 2022) from a visual teacher: CE + warm-up * weight * (alpha TCKD + beta NCKD).

Defaults are LaViD's fine-grained runs (``lavid/models/distill_models.py``): alpha 1, beta 2, T 4,
CE weight 1 and a warm-up of 1 epoch, counted as LaViD counts it: the factor is
``min(epoch / warmup, 1)`` with the 0-based epoch, so the first epoch trains with CE alone.
``--dkd-warmup-from mdistiller`` counts from 1 as mdistiller does (``min((epoch + 1) / warmup, 1)``;
its CIFAR runs warm up over 20 of 240 epochs: ``--dkd-warmup 20``).
"""

from __future__ import annotations

from makd_cli.losses import dkd
from makd_cli.methods.base import register_method
from makd_cli.methods.kd import KD_OPTIONS, TeacherTerm
from makd_cli.registry import Option

WARMUP_COUNTS = ("lavid", "mdistiller")


@register_method("dkd", help="CE + warm-up * (alpha TCKD + beta NCKD) * T^2, alpha 1 beta 2 T 4, LaViD's 1-epoch warm-up "
                             "(needs --teacher-ckpt)", options=[
    *KD_OPTIONS,
    Option("dkd-alpha", float, 1.0, "Weight of the target-class term TCKD (LaViD and mdistiller: 1).", min=0),
    Option("dkd-beta", float, 2.0, "Weight of the non-target-class term NCKD (LaViD's fine-grained runs: 2).", min=0),
    Option("dkd-warmup", int, 1, "Epochs of linear warm-up of the DKD loss, 0 for none (LaViD's fine-grained runs: 1; "
                                 "mdistiller's CIFAR runs: 20 of 240).", min=0),
    Option("dkd-warmup-from", str, "lavid", "How the warm-up counts epochs: lavid (factor epoch/warmup from epoch 0, so a "
                                            "1-epoch warm-up trains the first epoch on CE alone) or mdistiller "
                                            "((epoch+1)/warmup).", choices=WARMUP_COUNTS),
])
class DKD(TeacherTerm):
    name = "dkd"
    default_temperature = 4.0
    default_weight = 1.0
    default_ce_weight = 1.0

    def __init__(self, ctx):
        super().__init__(ctx)
        self.alpha = float(ctx.options.get("dkd_alpha", 1.0))
        self.beta = float(ctx.options.get("dkd_beta", 2.0))
        self.warmup = int(ctx.options.get("dkd_warmup", 1))
        self.warmup_from = ctx.options.get("dkd_warmup_from", "lavid")

    def ramp(self, epoch: int) -> float:
        """Warm-up factor for the 0-based ``epoch`` (1 once the warm-up is over, or without one)."""
        if self.warmup == 0:
            return 1.0
        counted = epoch if self.warmup_from == "lavid" else epoch + 1
        return min(counted / self.warmup, 1.0)

    def loss(self, logits, extra, batch):
        s, t = self.pair(logits, batch)
        return self.weight * self.ramp(batch.epoch) * dkd(s, t, batch.labels, self.alpha, self.beta, self.temperature)

    def head_info(self):
        return {**super().head_info(), "alpha": self.alpha, "beta": self.beta, "warmup": self.warmup,
                "warmup_from": self.warmup_from}
