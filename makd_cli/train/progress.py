"""A rich progress bar for training, plus one log line per epoch (readable in CI logs too)."""

from __future__ import annotations

from makd_cli.cli_output import plain_console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = plain_console(stderr=True)  # user text printed as is, never as markup


class TrainProgress:
    def __init__(self, epochs: int, start_epoch: int, quiet: bool = False):
        self.epochs, self.quiet = epochs, quiet
        self.progress = Progress(
            TextColumn("{task.description}", style="bold", markup=False), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.4f}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True, disable=quiet,
        )
        self.task = None

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def start_epoch(self, epoch: int, steps: int) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(f"epoch {epoch + 1}/{self.epochs}", total=steps, loss=float("nan"))

    def step(self, loss: float) -> None:
        self.progress.update(self.task, advance=1, loss=loss)

    def end_epoch(self, record: dict) -> None:
        if not self.quiet:
            self.progress.console.print("  ".join(self.loss_parts(record) + self.epoch_parts(record)))

    def loss_parts(self, record: dict) -> list[str]:
        """``epoch N/E``, the loss, then each term of it (``train_<term>``, CE first)."""
        terms = sorted((k for k in record if k.startswith("train_") and k != "train_loss"), key=lambda k: k != "train_ce")
        return ([f"epoch {record['epoch']}/{self.epochs}", f"loss {record['train_loss']:.4f}"]
                + [f"{k[6:]} {record[k]:.4f}" for k in terms])

    def epoch_parts(self, record: dict) -> list[str]:
        """What a task reports beside its losses; classification: the split that chooses best.pt, and speed."""
        parts = []
        if "val_top1" in record:
            parts.append(f"val top-1 {record['val_top1']:.2f}%")
        if "test_loss" in record:  # --select-by test-loss / test-acc read the test split on this epoch
            parts.append(f"test CE {record['test_loss']:.4f} top-1 {record['test_top1']:.2f}%")
        parts.append(f"{record['images_per_s']:.0f} img/s")
        return parts
