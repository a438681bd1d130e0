"""Every option of a training run, with the papers' schedule as defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from makd_cli.errors import MakdError

PAPER_EPOCHS = 240
PAPER_MILESTONES = (150, 180, 210)
DEFAULT_VAL_FRACTION = 0.1  # held out of the training split for --select-by val (never the test split)
# Which epoch best.pt holds (--select-by). "val" is makd's honest default: the held-out validation
# split. The other two are the papers' protocols, which read the test split: LaViD's reference keeps
# the lowest test CE, checked every 5 epochs (Lightning's check_val_every_n_epoch=5 on a val loader
# that is the test split); MaKD's keeps the best test top-1 of any epoch (mdistiller's trainer).
SELECT_BY = ("val", "test-loss", "test-acc")
DEFAULT_SELECT_EVERY = {"val": 1, "test-loss": 5, "test-acc": 1}


@dataclass
class TrainConfig:
    data: str
    out: str
    method: str = "ce"
    task: str | None = None  # classify | moco | detection (train/task.py TASKS); None: the task that owns --method
    targets: str | None = None
    student: str = "resnet18"
    epochs: int = PAPER_EPOCHS
    batch_size: int = 16
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: list[int] | None = None  # None: the papers' 150/180/210 of 240, scaled to --epochs
    aux_weight: float | None = None
    control: str | None = None  # random-codes | gaussian | shuffled (issue 10 controls)
    teacher_ckpt: str | None = None
    per_class: int | None = None
    train_fraction: float = 1.0
    val_fraction: float | None = None  # None: DEFAULT_VAL_FRACTION, or 0 when --select-by reads the test split
    select_by: str = "val"  # val | test-loss | test-acc (SELECT_BY)
    select_every: int | None = None  # epochs between checks; None: the protocol's reference interval
    image_size: int | None = None
    pretrained: str | None = None
    seed: int = 0
    workers: int | None = None
    device: str = "auto"
    amp: bool = True  # bf16 autocast, CUDA only
    channels_last: bool = True  # CUDA only
    compile: bool = False
    resume: bool = False
    overwrite: bool = False  # replace a run already in -o (run_folder.check_run_folder)
    restart: bool = False  # start the run in -o over, its saved progress discarded (same effect as overwrite)
    quiet: bool = False
    log: list[str] = field(default_factory=list)  # --log: experiment trackers (train/loggers.py); never changes a result
    init: str = "timm"  # --init: timm (zero-init residual BN scales and aux rows) or reference (LaViD's and MaKD's code)
    test_resize: int | None = None  # --test-resize: shorter side before the centre crop at test time (None: size x 256/224)
    hold_out_classes: str | None = None  # N[:SEED] or a class list file: classes left out of training (data/hold_out.py)
    # The options the chosen plug-ins declare (--kd-temperature, --aspect-loss, --moco-queue, ...): given
    # by key ({"kd_temperature": 4.0}); resolved to {"method:kd": {every option of kd}, ...}, the form the
    # run records. They live here only: never in, or renamed through, the fields above.
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        from makd_cli.train.plugin_options import resolve_options

        self.options = resolve_options(self)
        if self.select_by not in SELECT_BY:
            raise MakdError(f"--select-by {self.select_by}: choose {', '.join(SELECT_BY)}")
        if self.select_every is not None and self.select_every < 1:
            raise MakdError("--select-every must be at least 1")
        if self.val_fraction is None:  # a hold-out nothing is chosen on only costs training images (the references hold none out)
            self.val_fraction = 0.0 if self.select_by.startswith("test") else DEFAULT_VAL_FRACTION

    @classmethod
    def for_task(cls, task: str | None, **fields) -> "TrainConfig":
        """A config for ``--task task`` whose fields not given take the task's defaults (detection: COCO's
        1x schedule, 12 epochs, lr 0.02, weight decay 1e-4) before this class's (the papers' 240 epochs)."""
        if task is not None:
            from makd_cli.train.tasks import TASKS

            for key, value in TASKS.get(task).defaults.items():
                fields.setdefault(key, value)
        return cls(task=task, **fields)

    def options_of(self, kind: str, name: str | None) -> dict:
        """The resolved options of plug-in ``name`` of ``kind`` (``options_of("method", "kd")``); {} if it has none."""
        return dict(self.options.get(f"{kind}:{name}", {}))

    def options_of_kind(self, kind: str) -> dict:
        """Every chosen plug-in of ``kind``'s options by key (one --method lavid+kd: both terms'; a shared
        option is one declaration, so one value)."""
        merged = {}
        for label, values in self.options.items():
            if label.partition(":")[0] == kind:
                merged.update(values)
        return merged

    def resolved_milestones(self) -> list[int]:
        if self.milestones is not None:
            return list(self.milestones)
        return [max(1, round(m * self.epochs / PAPER_EPOCHS)) for m in PAPER_MILESTONES]

    def resolved_select_every(self) -> int:
        return self.select_every or DEFAULT_SELECT_EVERY[self.select_by]

    def to_dict(self) -> dict:
        return asdict(self)

