"""The example Makefiles: each dry-runs to the full pipeline of commands."""

import subprocess
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PAPER_DATASETS = ["cub", "cars", "pets", "flowers", "aircraft", "dtd", "caltech101", "waterbirds"]


def dry_run(folder: Path, *args) -> str:
    proc = subprocess.run(["make", "-n", "-C", str(folder), *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("name", PAPER_DATASETS)
def test_paper_makefile_dry_run(name, tmp_path):
    text = dry_run(EXAMPLES / name, f"DATA={tmp_path}", f"WORK={tmp_path / 'work'}")
    spec = f"{name}:{tmp_path}"
    assert f"makd data classes {spec}" in text
    assert "gen-questions" in text and "--kind mcq" in text and "--kind yesno" in text and "--select 50" in text
    assert f"extract --mllm internvl3-8b --data {spec}" in text
    for method in ("ce", "makd", "lavid"):
        for seed in (0, 1, 2):
            assert f"--method {method} --seed {seed}" in text
    assert "--epochs 240" in text and "results.md" in text
    for control in ("--control random-codes", "--control shuffled", "--control gaussian"):
        assert control in text


def test_paper_makefile_needs_data():
    proc = subprocess.run(["make", "-n", "-C", str(EXAMPLES / "cub")], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "set DATA=" in proc.stderr


def test_demo_makefile_dry_run(tmp_path):
    text = dry_run(EXAMPLES / "fashion-mnist", f"WORK={tmp_path}")
    for fragment in ("gen-questions --llm smollm2-135m", "extract --llm smollm2-135m", "--method ce", "--method lavid",
                     "--control random-codes", "--control shuffled", "inspect", "eval"):
        assert fragment in text
    for run in ("ce", "lavid", "random-codes", "shuffled"):  # three seeds per row (issue 13)
        for seed in (0, 1, 2):
            assert f"--seed {seed}" in text and f"runs/{run}/seed{seed}" in text
