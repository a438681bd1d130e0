"""Multi-level logit distillation (Jin et al. 2023), simplified: instance, batch and class alignment
summed over temperatures 2..6; no strong-augmentation view and no confidence masks (see
``makd_cli.losses.mlkd``). Option ``mlkd_temperatures`` (a list) replaces the set of temperatures;
``--kd-temperature`` does not apply.
"""

from __future__ import annotations

from makd_cli.errors import MakdError
from makd_cli.losses import mlkd
from makd_cli.methods.base import register_method
from makd_cli.methods.kd import LOGIT_STANDARDIZE, TeacherTerm

TEMPERATURES = (2.0, 3.0, 4.0, 5.0, 6.0)


@register_method("mlkd", help="CE + instance/batch/class logit alignment over temperatures 2..6 (needs --teacher-ckpt)",
                 options=[LOGIT_STANDARDIZE])
class MLKD(TeacherTerm):
    name = "mlkd"

    def __init__(self, ctx):
        super().__init__(ctx)
        temps = ctx.options.get("mlkd_temperatures") or TEMPERATURES
        self.temperatures = tuple(float(t) for t in temps)
        if any(t <= 0 for t in self.temperatures):
            raise MakdError(f"--method mlkd: temperatures must be positive, not {list(self.temperatures)}")

    def loss(self, logits, extra, batch):
        s, t = self.pair(logits, batch)
        return self.weight * mlkd(s, t, self.temperatures)

    def head_info(self):
        info = {**super().head_info(), "temperatures": list(self.temperatures)}
        info.pop("temperature", None)
        return info
