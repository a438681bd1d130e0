"""Hinton KD from a visual teacher (``--teacher-ckpt``): CE weight * CE + KD weight * KL(teacher || student) * T^2.

Shared by the KD family (kd, dkd, mlkd): the teacher-logit check, the optional logit
standardisation (``--logit-standardize``, Sun et al. 2024), the temperature and the two weights.
Each method's defaults are what LaViD's fine-grained tables ran (``lavid/models/distill_models.py``:
KD CE 0.5, KD 0.5, T 1; DKD CE 1, T 4; MLKD CE 0.5 per view, weight 0.5, T 1); docs/reproducing.md
gives the flags for mdistiller's and the LS code's settings.
"""

from __future__ import annotations

from torch import Tensor

from makd_cli.errors import MakdError, resume_mismatch
from makd_cli.losses import kd, logit_standardize
from makd_cli.methods.base import Batch, MethodTerm, register_method
from makd_cli.registry import Option

# Options of the KD family, declared by each method that reads them. Their defaults differ per method,
# so the declarations say None and each term fills in its own (a shared flag keeps one declaration).
LOGIT_STANDARDIZE = Option("logit-standardize", bool, False,
                           "Logit standardisation (Sun et al. 2024): z-score with the unbiased std + 1e-7 as the public "
                           "code; kd and dkd standardise their whole input, mlkd its instance-level terms only. "
                           "Temperatures and weights stay as set (the LS code's own runs: see docs/reproducing.md).")
KD_OPTIONS = (
    Option("kd-temperature", float, None, "Distillation temperature T (default: kd 1 and mlkd 1, as LaViD's fine-grained "
                                          "runs; dkd 4; mdistiller's KD uses 4)."),
    Option("kd-weight", float, None, "Weight of the distillation loss (default: kd 0.5 and mlkd 0.5, as LaViD; dkd 1; "
                                     "mdistiller's KD uses 0.9); --aux-weight sets it too unless this is given, so "
                                     "`--method lavid+mlkd --aux-weight 40 --kd-weight 0.5` weighs LaViD 40, MLKD 0.5.", min=0),
    Option("kd-ce-weight", float, None, "Weight of CE on the labels (default: kd 0.5 and mlkd 0.5 on each view, as LaViD; "
                                        "dkd 1; mdistiller's KD uses 0.1).", min=0),
    LOGIT_STANDARDIZE,
)


# The flag of each setting a KD-family checkpoint records (and how its value reads on the command line),
# and the settings of runs from before issue 16, whose heads lack them: CE weighed 1, DKD's warm-up counted
# from 1 (mdistiller's way), MLKD on one view without masks.
SETTING_FLAGS = {
    "weight": ("--kd-weight", None), "temperature": ("--kd-temperature", None), "temperatures": ("--kd-temperature", None),
    "ce_weight": ("--kd-ce-weight", None), "logit_standardize": ("--logit-standardize", lambda on: "on" if on else "off"),
    "alpha": ("--dkd-alpha", None), "beta": ("--dkd-beta", None), "warmup": ("--dkd-warmup", None),
    "warmup_from": ("--dkd-warmup-from", None), "views": ("--mlkd-views", None),
    "masks": ("--mlkd-masks", lambda on: "median" if on else "none"),
}
FORMER_SETTINGS = {"ce_weight": 1.0, "warmup_from": "mdistiller", "views": 1, "masks": False}


class TeacherTerm(MethodTerm):
    """A term that distils the teacher's class logits (``batch.teacher_logits``)."""

    needs_teacher = True
    default_temperature = 1.0  # LaViD's KD and MLKD
    default_weight = 0.5  # LaViD's KD weight (KD) and ALPHA (MLKD)
    default_ce_weight = 0.5

    def __init__(self, ctx):
        super().__init__(ctx)
        opts = ctx.options
        self.standardize = bool(opts.get("logit_standardize", False))
        t = opts.get("kd_temperature")
        self.temperature = float(t) if t is not None else self.default_temperature
        if self.temperature <= 0:
            raise MakdError(f"--kd-temperature must be positive, not {self.temperature}")
        kd_weight = opts.get("kd_weight")
        if kd_weight is not None:  # wins over --aux-weight: `lavid+mlkd --aux-weight 40 --kd-weight 0.5` weighs each
            self.weight = float(kd_weight)
        ce = opts.get("kd_ce_weight")
        self.ce_weight = float(ce) if ce is not None else self.default_ce_weight

    def teacher_logits(self, logits: Tensor, batch: Batch, strong: bool = False) -> Tensor:
        """The teacher's logits of the batch (of its strong view with ``strong``), checked against the student's."""
        t = batch.strong_teacher_logits if strong else batch.teacher_logits
        if t is None:
            raise MakdError(f"--method {self.name} distils a teacher's logits: pass --teacher-ckpt (a checkpoint from `makd train`)")
        t = t.detach().to(logits.dtype)
        if t.shape != logits.shape:
            raise MakdError(f"--method {self.name}: the teacher gives {tuple(t.shape)} logits but the student {tuple(logits.shape)}; "
                            "the teacher must be trained on the same classes")
        return t

    def pair(self, logits: Tensor, batch: Batch) -> tuple[Tensor, Tensor]:
        """Student and teacher logits, both standardised when logit standardisation is on."""
        t = self.teacher_logits(logits, batch)
        if self.standardize:
            return logit_standardize(logits), logit_standardize(t)
        return logits, t

    def head_info(self) -> dict:
        return {**super().head_info(), "temperature": self.temperature, "logit_standardize": self.standardize,
                "ce_weight": self.ce_weight}

    def check_resume(self, saved: dict, where: str) -> None:
        """A resumed run distils as it started: a setting of ``saved`` (last.pt's head) that differs is one line
        naming its flag. A run from before issue 16 lacks the newer keys; it ran with ``FORMER_SETTINGS``."""
        former = "ce_weight" not in saved
        if former and saved.get("logit_standardize"):
            raise MakdError(f"{where} was trained with makd's former logit standardisation (population std; for mlkd "
                            "on all its levels), which this makd no longer computes; start a new run with another -o")
        for key, now in self.head_info().items():
            was = saved.get(key, FORMER_SETTINGS.get(key, now) if former else now)
            if key == "temperatures":  # MLKD sums over them: their order does not matter
                was, now = sorted(was), sorted(now)
            if was != now:
                flag, shown = SETTING_FLAGS.get(key, (f"{self.name} {key}", None))
                was, now = (shown(was), shown(now)) if shown else (was, now)
                raise resume_mismatch(where, flag, was, now)


@register_method("kd", help="0.5 CE + 0.5 KL(softmax(teacher/T) || softmax(student/T)) * T^2, T 1 as LaViD (needs --teacher-ckpt)",
                 options=KD_OPTIONS)
class KD(TeacherTerm):
    name = "kd"

    def loss(self, logits, extra, batch):
        s, t = self.pair(logits, batch)
        return self.weight * kd(s, t, self.temperature)
