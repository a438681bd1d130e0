"""Hinton KD from a visual teacher (``--teacher-ckpt``): CE + weight * KL(teacher || student) * T^2.

Shared by the KD family (kd, dkd, mlkd): the teacher-logit check, the optional logit
standardisation (``--logit-standardize``, Sun et al. 2024) and the temperature rule.
"""

from __future__ import annotations

from torch import Tensor

from makd_cli.errors import MakdError
from makd_cli.losses import kd, logit_standardize
from makd_cli.methods.base import Batch, MethodTerm, register_method
from makd_cli.registry import Option

DEFAULT_TEMPERATURE = 4.0
LS_BASE_TEMPERATURE = 2.0  # the LS paper's base temperature when logits are standardised

# Options of the KD family, declared by each method that reads them (dkd, mlkd add or drop some).
LOGIT_STANDARDIZE = Option("logit-standardize", bool, False, "Logit standardisation for kd/dkd/mlkd (Sun et al. 2024).")
KD_OPTIONS = (Option("kd-temperature", float, None, "KD temperature (default 4; 2 with --logit-standardize)."),
              LOGIT_STANDARDIZE)


class TeacherTerm(MethodTerm):
    """A term that distils the teacher's class logits (``batch.teacher_logits``)."""

    needs_teacher = True
    default_weight = 1.0  # kd, dkd and mlkd alike

    def __init__(self, ctx):
        super().__init__(ctx)
        self.standardize = bool(ctx.options.get("logit_standardize", False))
        t = ctx.options.get("temperature")
        # An explicit temperature wins; unset (None) means 4, or LS's base temperature 2 with --logit-standardize.
        self.temperature = float(t) if t is not None else (LS_BASE_TEMPERATURE if self.standardize else DEFAULT_TEMPERATURE)
        if self.temperature <= 0:
            raise MakdError(f"--kd-temperature must be positive, not {self.temperature}")

    def pair(self, logits: Tensor, batch: Batch) -> tuple[Tensor, Tensor]:
        """Student and teacher logits, both standardised when logit standardisation is on."""
        if batch.teacher_logits is None:
            raise MakdError(f"--method {self.name} distils a teacher's logits: pass --teacher-ckpt (a checkpoint from `makd train`)")
        t = batch.teacher_logits.detach().to(logits.dtype)
        if t.shape != logits.shape:
            raise MakdError(f"--method {self.name}: the teacher gives {tuple(t.shape)} logits but the student {tuple(logits.shape)}; "
                            "the teacher must be trained on the same classes")
        if self.standardize:
            return logit_standardize(logits), logit_standardize(t)
        return logits, t

    def head_info(self) -> dict:
        return {**super().head_info(), "temperature": self.temperature, "logit_standardize": self.standardize}


@register_method("kd", help="CE + weight * KL(softmax(teacher/T) || softmax(student/T)) * T^2 (needs --teacher-ckpt)",
                 options=KD_OPTIONS)
class KD(TeacherTerm):
    name = "kd"

    def loss(self, logits, extra, batch):
        s, t = self.pair(logits, batch)
        return self.weight * kd(s, t, self.temperature)
