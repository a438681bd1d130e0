"""Device resolution in one place: ``--device auto|cpu|cuda|cuda:N|mps`` for training, eval, inspect and teachers."""

from __future__ import annotations

import re

from makd_cli.errors import MakdError

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device_name(name: str) -> str:
    """``name`` if it names a device makd can use; otherwise a one-line ``MakdError``."""
    if not _DEVICE.match(name or ""):
        raise MakdError(f"--device {name!r} is not a device; use auto, cpu, cuda, cuda:N or mps")
    return name


def resolve_device(name: str | None):
    """``auto`` (or None): the GPU when there is one, else the CPU; a CUDA device this machine lacks is an error."""
    import torch

    name = check_device_name(name or "auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise MakdError(f"--device {name} asked for, but this machine has no CUDA GPU; use --device cpu")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise MakdError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise MakdError("--device mps asked for, but this machine has no Apple GPU; use --device cpu")
    return torch.device(name)


def default_device() -> str:
    """The device a teacher runs on when none is given: this torchrun rank's GPU when there is one, else ``cpu``."""
    import os

    import torch

    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"  # one GPU per torchrun rank
    return "cpu"
