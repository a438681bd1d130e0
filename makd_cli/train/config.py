"""Every option of a training run, with the papers' schedule as defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

PAPER_EPOCHS = 240
PAPER_MILESTONES = (150, 180, 210)


@dataclass
class TrainConfig:
    data: str
    out: str
    method: str = "ce"
    targets: str | None = None
    student: str = "resnet18"
    epochs: int = PAPER_EPOCHS
    batch_size: int = 16
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: list[int] | None = None  # None: the papers' 150/180/210 of 240, scaled to --epochs
    aux_weight: float | None = None
    aspect_loss: str = "bce"
    control: str | None = None  # random-codes | gaussian | shuffled (issue 10 controls)
    teacher_ckpt: str | None = None
    kd_temperature: float | None = None  # None: the method's default (kd, mlkd 1; dkd 4: LaViD's fine-grained runs)
    logit_standardize: bool = False
    per_class: int | None = None
    train_fraction: float = 1.0
    val_fraction: float = 0.1
    image_size: int | None = None
    pretrained: str | None = None
    seed: int = 0
    workers: int | None = None
    device: str = "auto"
    amp: bool = True  # bf16 autocast, CUDA only
    channels_last: bool = True  # CUDA only
    compile: bool = False
    resume: bool = False
    quiet: bool = False
    # --method lead-ssl (MoCo v2, train/moco.py): the paper's memory size, key momentum and InfoNCE temperature.
    moco_queue: int = 65536
    moco_momentum: float = 0.999
    moco_temperature: float = 0.2
    moco_dim: int = 128  # output of the projection MLP
    extra: dict = field(default_factory=dict)  # options the chosen plug-ins declare, by key (dkd_alpha, ...)

    def __post_init__(self):
        # A plug-in option this config also names as a field (the Python API's keywords: aspect_loss,
        # kd_temperature, moco_queue, ...) lands in that field, so the CLI and Python give one config.
        for key in [k for k in self.extra if k in _FIELDS]:
            setattr(self, key, self.extra.pop(key))

    def resolved_milestones(self) -> list[int]:
        if self.milestones is not None:
            return list(self.milestones)
        return [max(1, round(m * self.epochs / PAPER_EPOCHS)) for m in PAPER_MILESTONES]

    def to_dict(self) -> dict:
        return asdict(self)


_FIELDS = {f for f in TrainConfig.__dataclass_fields__ if f != "extra"}
