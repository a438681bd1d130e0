"""bench/gpu.sh, the one prepared GPU run: its --dry-run (tiny sizes on the CPU) runs every section
and prints one JSON, so the script is known to work before a GPU is lent to run it for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_sh_dry_run_prints_one_json_of_every_section(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "GPU_BENCH_OUT": str(tmp_path / "gpu.json"), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), "--dry-run"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)  # one JSON, nothing else on stdout
    assert res["format"] == "makd-gpu-bench" and res["dry_run"] is True and "incomplete" not in res
    assert res["environment"]["device"] == "cpu"
    sections = ["llm_extract", "llm_bf16_vs_fp32", "mllm_llava_1_5_7b", "train_resnet18", "detection"]
    for name in sections:
        assert "error" not in res[name], (name, res[name])
    assert {"reference_b25", "makd_packed", "one_at_a_time"} <= set(res["llm_extract"]["rows"])
    assert res["llm_extract"]["makd_packed_vs_reference"]["argmax_agreement"] == 1.0  # same model, fp32
    m = res["mllm_llava_1_5_7b"]
    assert m["cached_batched"]["images_per_s"] > 0 and m["one_prompt_per_question"]["images_per_s"] > 0
    assert m["max_abs_logodds_diff"] < 1e-4  # fp32 on the CPU: the cached path equals the reference loop
    t = res["train_resnet18"]
    assert all(t[k] > 0 for k in ("makd_train_bf16_channels_last", "makd_train_fp32", "plain_loop_fp32", "gpu_step_fp32"))
    assert set(res["detection"]["images_per_s"]) == {"ce", "makd"}
    assert json.loads((tmp_path / "gpu.json").read_text()) == res


def test_gpu_sh_names_what_it_needs():
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_bench.py"), "--missing"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == ""  # the test environment has every distribution it needs
    text = (ROOT / "bench" / "gpu.sh").read_text()
    assert "--fetch-wheels" in text and "torchvision" in text and "gpu_wheels.txt" in text
