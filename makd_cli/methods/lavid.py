"""LaViD (lavid.txt section 3.3): an auxiliary linear head of Q*M outputs, MSE against T_y."""

from makd_cli.losses import lavid_mse
from makd_cli.methods.base import METHODS, MethodTerm, TargetTable, register_method, require_targets


@register_method("lavid", help="CE + lambda * MSE(aux head, class x question x option targets)")
class LaViD(MethodTerm):
    name = "lavid"
    # class_vector covers the word-embedding control (LaViD Table 5): regress any per-class code.
    target_kinds = ("class_mcq", "class_yesno", "class_vector")
    default_weight = 40.0  # the paper's lambda for ResNet-18 on CUB and Cars

    def __init__(self, ctx):
        super().__init__(ctx)
        self.targets = TargetTable(require_targets(self, ctx), ctx)
        self.extra_dim = self.targets.table.shape[1]

    def to(self, device):
        self.targets.to(device)
        return self

    def loss(self, logits, extra, batch):
        return self.weight * lavid_mse(extra, self.targets.lookup(batch))

    def head_info(self):
        return {**super().head_info(), "shape": list(self.targets.row_shape)}
