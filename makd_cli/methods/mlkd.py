"""Multi-level logit distillation (Jin et al. 2023) as its public code runs it (``losses.mlkd``).

Defaults are LaViD's fine-grained runs (``lavid/models/distill_models.py``: T 1, weight 0.5, CE 0.5):
a weak and a strong view of each image (the strong one adds RandAugment(2, 10) and Cutout,
``data/transforms.strong_train_transform``), CE x 0.5 on both views, instance KD at temperatures
{T, 3, 5, 2, 6}, the median-confidence masks from the teacher's weak-view predictions, batch- and
class-level terms on the weak view; ``--logit-standardize`` z-scores the instance terms only.
``--mlkd-views 1 --mlkd-masks none --kd-weight 1 --kd-ce-weight 1 --kd-temperature 4`` is makd's earlier
simplified MLKD without LS (temperatures 4, 3, 5, 2, 6: its 2 to 6; ``--kd-temperature`` sets the base one,
whose fixed partners stay 3, 5, 2, 6).
"""

from __future__ import annotations

from makd_cli.errors import MakdError
from makd_cli.losses import mlkd, mlkd_temperatures
from makd_cli.methods.base import register_method
from makd_cli.methods.kd import KD_OPTIONS, TeacherTerm
from makd_cli.registry import Option


@register_method("mlkd", help="CE on a weak and a strong view + masked instance/batch/class alignment at T, 3, 5, 2, 6 "
                              "(needs --teacher-ckpt)", options=[
    *KD_OPTIONS,
    Option("mlkd-views", int, 2, "Views per image: 2 (a weak and a RandAugment view, as the reference) or 1 (the weak "
                                 "view only: about half the step time).", choices=(1, 2)),
    Option("mlkd-masks", str, "median", "Confidence masks: median (the reference: samples and classes at most the "
                                        "teacher's median confidence) or none.", choices=("median", "none")),
])
class MLKD(TeacherTerm):
    name = "mlkd"

    def __init__(self, ctx):
        super().__init__(ctx)
        self.views = int(ctx.options.get("mlkd_views", 2))
        self.masks = ctx.options.get("mlkd_masks", "median") != "none"
        self.temperatures = mlkd_temperatures(self.temperature)

    def loss(self, logits, extra, batch):
        teacher = self.teacher_logits(logits, batch)
        strong = strong_teacher = None
        if self.views == 2:
            if batch.strong_logits is None:
                raise MakdError("--method mlkd with --mlkd-views 2 needs the strong view's logits (Batch.strong_logits); "
                                "the training loop gives them, or pass --mlkd-views 1")
            strong = batch.strong_logits.to(logits.dtype)
            strong_teacher = self.teacher_logits(strong, batch, strong=True)
        return mlkd(logits, teacher, self.temperatures, strong_student=strong, strong_teacher=strong_teacher,
                    masks=self.masks, standardize=self.standardize, weight=self.weight)

    def head_info(self):
        info = {**super().head_info(), "temperatures": list(self.temperatures), "views": self.views, "masks": self.masks}
        info.pop("temperature", None)
        return info
