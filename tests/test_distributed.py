"""`makd train` under torchrun: two gloo processes train one model; rank 0 writes the run."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from makd_cli.formats.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow


def test_torchrun_two_processes(tiny_data, tmp_path, mcq_targets_file):
    torchrun = Path(sys.executable).with_name("torchrun")
    assert torchrun.exists() or shutil.which("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "makd_cli", "train", "--data", str(tiny_data),
           "--method", "lavid", "--targets", str(mcq_targets_file), "--aux-weight", "5", "--student", "small_cnn",
           "--epochs", "2", "--batch-size", "8", "--device", "cpu", "-o", str(tmp_path / "run"), "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["epoch"] == 1 and len(ckpt["history"]) == 2
    # every training image is seen once per epoch across the two ranks
    assert ckpt["history"][0]["images_per_s"] > 0
    assert not any(k.startswith("module.") for k in ckpt["model"])
