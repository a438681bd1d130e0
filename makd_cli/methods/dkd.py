"""Decoupled KD (Zhao et al. 2022) from a visual teacher: CE + warm-up * (alpha TCKD + beta NCKD).

Defaults follow the fine-grained setting: alpha 1, beta 2, T 4, and a linear warm-up of the DKD
loss over the first 20 of 240 epochs, scaled to ``--epochs`` (at least 1 epoch). Options
(``ctx.options``): ``dkd_alpha``, ``dkd_beta``, ``warmup`` (epochs, used as given).
"""

from __future__ import annotations

from makd_cli.errors import MakdError
from makd_cli.losses import dkd
from makd_cli.methods.base import register_method
from makd_cli.methods.kd import KD_OPTIONS, TeacherTerm
from makd_cli.registry import Option

PAPER_WARMUP, PAPER_EPOCHS = 20, 240


@register_method("dkd", help="CE + warm-up * (alpha TCKD + beta NCKD) * T^2, alpha 1 beta 2 (needs --teacher-ckpt)", options=[
    *KD_OPTIONS,
    Option("dkd-alpha", float, 1.0, "Weight of the target-class term TCKD.", min=0),
    Option("dkd-beta", float, 2.0, "Weight of the non-target-class term NCKD.", min=0),
    Option("warmup", int, None, "Epochs of linear warm-up (default: 20 of 240, scaled to --epochs).", min=1),
])
class DKD(TeacherTerm):
    name = "dkd"

    def __init__(self, ctx):
        super().__init__(ctx)
        self.alpha = float(ctx.options.get("dkd_alpha", 1.0))
        self.beta = float(ctx.options.get("dkd_beta", 2.0))
        w = ctx.options.get("warmup")
        self.warmup = int(w) if w is not None else max(1, round(PAPER_WARMUP * ctx.epochs / PAPER_EPOCHS))
        if self.warmup < 1:
            raise MakdError(f"--method dkd: the warm-up must be at least 1 epoch, not {self.warmup}")

    def ramp(self, epoch: int) -> float:
        """Linear warm-up factor for the 0-based ``epoch``: 1/warmup in the first epoch, 1 from epoch warmup-1 on."""
        return min((epoch + 1) / self.warmup, 1.0)

    def loss(self, logits, extra, batch):
        s, t = self.pair(logits, batch)
        return self.weight * self.ramp(batch.epoch) * dkd(s, t, batch.labels, self.alpha, self.beta, self.temperature)

    def head_info(self):
        return {**super().head_info(), "alpha": self.alpha, "beta": self.beta, "warmup": self.warmup}
