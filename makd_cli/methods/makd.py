"""MaKD (makd.txt sections 3.3-3.4): output widened to C+Q, BCE on the Q aspect outputs."""

from makd_cli.errors import MakdError
from makd_cli.losses import makd_bce, makd_kl
from makd_cli.methods.base import MethodTerm, TargetTable, register_method, require_targets
from makd_cli.registry import Option

ASPECT_LOSSES = {"bce": makd_bce, "kl": makd_kl}


@register_method("makd", help="CE + alpha * BCE(aspect outputs, p(yes) per image or per class)", options=[
    Option("aspect-loss", str, "bce", "makd: bce (paper) or kl (ablation, makd.txt Table 3a).", choices=tuple(ASPECT_LOSSES)),
])
class MaKD(MethodTerm):
    name = "makd"
    target_kinds = ("image_yesno", "class_yesno")
    default_weight = 4.0  # the reference code's alpha
    output = "sigmoid"  # the aspect outputs are logits of p(yes) (BCE)
    metric = "yesno"  # scored as yes/no answers: MAE of p(yes) and per-question AUC

    def __init__(self, ctx):
        super().__init__(ctx)
        self.targets = TargetTable(require_targets(self, ctx), ctx)
        self.extra_dim = self.targets.table.shape[1]
        name = ctx.options.get("aspect_loss", "bce")
        if name not in ASPECT_LOSSES:
            raise MakdError(f"--aspect-loss {name!r} is unknown; choose bce or kl")
        self.aspect_loss = ASPECT_LOSSES[name]
        self.aspect_loss_name = name

    def to(self, device):
        self.targets.to(device)
        return self

    def loss(self, logits, extra, batch):
        return self.weight * self.aspect_loss(extra, self.targets.lookup(batch))

    def head_info(self):
        return {**super().head_info(), "shape": list(self.targets.row_shape), "aspect_loss": self.aspect_loss_name}
