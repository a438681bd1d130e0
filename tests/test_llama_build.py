"""The llama.cpp build choice, its wheel cache and the self-test (issue 13), with fake wheels and builders."""

from __future__ import annotations

import json
import os
import shlex
import sys
import textwrap
from pathlib import Path

import pytest

from makd_cli import llamacpp_build as lb

AVX2_CPU = {"sse3", "ssse3", "avx", "avx2", "fma", "f16c", "bmi2"}
AMX_CPU = AVX2_CPU | {"avx512f", "avx512bw", "amx_tile", "amx_int8", "amx_bf16"}
SEGFAULT = [sys.executable, "-c", "import ctypes; ctypes.string_at(0)"]


def fake_entry(cache, spec, *, key=None, requires=None, selftest="passed", arch="x86_64"):
    """A cache entry as build_wheel leaves it, with a fake wheel file."""
    folder = cache / spec.key
    folder.mkdir(parents=True)
    (folder / f"llama_cpp_python-{spec.version}-py3-none-linux_x86_64.whl").write_bytes(b"PK fake wheel")
    record = {**spec.to_json(), "selftest": selftest, "arch": arch}
    if key is not None:
        record["key"] = key
    if requires is not None:
        record["requires"] = requires
    (folder / "build.json").write_text(json.dumps(record))
    return folder


def test_portable_spec_is_avx2_without_avx512_or_amx():
    spec = lb.build_spec("portable", "x86_64", AMX_CPU)
    args = " ".join(spec.cmake_args)
    assert "-DGGML_NATIVE=OFF" in args and "-DGGML_AVX2=ON" in args
    assert "-DGGML_AVX512=OFF" in args and "-DGGML_AMX_INT8=OFF" in args
    assert set(spec.requires) == {"avx", "avx2", "fma", "f16c", "bmi2"}
    # the same portable build for every AVX2 CPU: a cluster shares one cache entry
    assert spec.key == lb.build_spec("portable", "x86_64", AVX2_CPU).key
    plain = lb.build_spec("portable", "x86_64", {"sse3"})
    assert plain.requires == () and plain.key != spec.key and "-DGGML_AVX2=OFF" in plain.cmake_args


def test_native_key_depends_on_the_cpu_and_switches_amx_off():
    a, b = lb.build_spec("native", "x86_64", AVX2_CPU), lb.build_spec("native", "x86_64", AMX_CPU)
    assert a.key != b.key
    assert not any("amx" in x for x in a.cmake_args)
    assert any("-mno-amx-int8" in x for x in b.cmake_args)
    assert not b.runs_on(AVX2_CPU, "x86_64") and b.runs_on(AMX_CPU, "x86_64")
    assert not any("no-amx" in x for x in lb.build_spec("amx", "x86_64", AMX_CPU).cmake_args)
    with pytest.raises(lb.BuildError, match="no AMX"):
        lb.build_spec("amx", "x86_64", AVX2_CPU)
    with pytest.raises(lb.BuildError, match="unknown"):
        lb.build_spec("fastest", "x86_64", AVX2_CPU)


def test_cache_never_hands_out_a_wheel_built_for_other_flags(tmp_path):
    portable = lb.build_spec("portable", "x86_64", AMX_CPU)
    native = lb.build_spec("native", "x86_64", AMX_CPU)
    fake_entry(tmp_path, native)
    assert lb.find_cached(tmp_path, portable, AMX_CPU, "x86_64") is None
    # a folder renamed to the right key but recording other flags is refused too
    (tmp_path / native.key).rename(tmp_path / portable.key)
    assert lb.find_cached(tmp_path, portable, AMX_CPU, "x86_64") is None


def test_cache_checks_cpu_features_arch_and_selftest(tmp_path):
    spec = lb.build_spec("portable", "x86_64", AVX2_CPU)
    folder = fake_entry(tmp_path, spec)
    entry = lb.find_cached(tmp_path, spec, AVX2_CPU, "x86_64")
    assert entry is not None and entry.wheel.parent == folder
    assert lb.find_cached(tmp_path, spec, {"sse3", "avx"}, "x86_64") is None  # the CPU lacks AVX2
    assert lb.find_cached(tmp_path, spec, AVX2_CPU, "aarch64") is None
    lb.discard(folder)
    fake_entry(tmp_path, spec, selftest="failed")
    assert lb.find_cached(tmp_path, spec, AVX2_CPU, "x86_64") is None


class Recorder:
    """Fake builder / installer / self-test for ensure(): records calls, fails the self-test on demand."""

    def __init__(self, fail_keys=()):
        self.built, self.installed, self.fail_keys, self.current = [], [], set(fail_keys), None

    def builder(self, spec, cache, python=None, log=None):
        self.built.append(spec.key)
        folder = cache / spec.key
        lb.discard(folder)
        fake_entry(cache, spec, selftest="pending")
        return lb.find_cached(cache, spec, set(spec.requires), spec.arch) or lb.CacheEntry(folder, next(folder.glob("*.whl")), spec.to_json())

    def installer(self, entry, python=None):
        self.installed.append(entry.spec["key"])
        self.current = entry.spec["key"]

    def selftest(self, python=None):
        ok = self.current not in self.fail_keys
        return lb.SelfTest(ok, "ok" if ok else "the llama.cpp self-test killed by SIGSEGV")


@pytest.fixture
def amx_machine(monkeypatch, tmp_path):
    monkeypatch.setattr(lb, "cpu_info", lambda: ("x86_64", AMX_CPU, "Fake Xeon with AMX"))
    monkeypatch.setattr(lb, "installed_stamp", lambda prefix=None: None)
    monkeypatch.delenv("MAKD_LLAMA_BUILD", raising=False)
    return tmp_path


def _ensure(rec, cache, profile=None):
    return lb.ensure(profile, cache=cache, log=lambda m: None, builder=rec.builder, installer=rec.installer, selftest=rec.selftest)


def test_ensure_builds_instead_of_reusing_a_wheel_for_other_flags(amx_machine):
    fake_entry(amx_machine, lb.build_spec("native", "x86_64", AMX_CPU))  # an old native wheel in a shared cache
    rec = Recorder()
    done = _ensure(rec, amx_machine)
    portable = lb.build_spec("portable", "x86_64", AMX_CPU)
    assert done["action"] == "built" and rec.built == [portable.key] and rec.installed == [portable.key]
    assert json.loads((amx_machine / portable.key / "build.json").read_text())["selftest"] == "passed"
    rec2 = Recorder()
    assert _ensure(rec2, amx_machine)["action"] == "cached" and rec2.built == []


def test_ensure_deletes_a_cached_wheel_that_fails_its_selftest_and_rebuilds(amx_machine):
    spec = lb.build_spec("portable", "x86_64", AMX_CPU)
    fake_entry(amx_machine, spec)
    calls = {"n": 0}
    rec = Recorder()

    def selftest(python=None):  # the cached wheel crashes, the rebuilt one works
        calls["n"] += 1
        return lb.SelfTest(calls["n"] > 1, "crashed" if calls["n"] == 1 else "ok")

    done = lb.ensure(None, cache=amx_machine, log=lambda m: None, builder=rec.builder, installer=rec.installer, selftest=selftest)
    assert done["action"] == "rebuilt" and rec.built == [spec.key]


def test_ensure_stops_with_one_line_when_even_a_fresh_build_crashes(amx_machine):
    spec = lb.build_spec("portable", "x86_64", AMX_CPU)
    rec = Recorder(fail_keys={spec.key})
    with pytest.raises(lb.BuildError) as exc:
        _ensure(rec, amx_machine)
    msg = str(exc.value)
    assert "\n" not in msg and "SIGSEGV" in msg and "Fake Xeon" in msg and "makd doctor" in msg
    assert not (amx_machine / spec.key).exists()  # never reused


def test_a_missing_module_is_not_blamed_on_the_build(amx_machine):
    """The self-test's exit code 3 (a missing module or model) stops set-up but keeps the cached wheel."""
    spec = lb.build_spec("portable", "x86_64", AMX_CPU)
    fake_entry(amx_machine, spec)
    missing = [sys.executable, "-c", "import json, sys; print(json.dumps({'ok': False, 'error': 'missing Python module diskcache'})); sys.exit(3)"]
    rec = Recorder()
    with pytest.raises(lb.BuildError, match="could not run.*diskcache.*build was kept"):
        lb.ensure(None, cache=amx_machine, log=lambda m: None, builder=rec.builder, installer=rec.installer,
                  selftest=lambda python=None: lb.run_selftest(command=missing))
    assert rec.built == [] and lb.find_cached(amx_machine, spec, AMX_CPU, "x86_64") is not None


def test_amx_is_opt_in_and_falls_back_when_its_selftest_fails(amx_machine, monkeypatch):
    amx = lb.build_spec("amx", "x86_64", AMX_CPU)
    rec = Recorder(fail_keys={amx.key})
    monkeypatch.setenv("MAKD_LLAMA_BUILD", "amx")
    done = _ensure(rec, amx_machine)
    assert rec.built == [amx.key, lb.build_spec("portable", "x86_64", AMX_CPU).key]
    assert done["key"] == lb.build_spec("portable", "x86_64", AMX_CPU).key and not (amx_machine / amx.key).exists()


def test_selftest_reports_a_crash_as_a_result():
    result = lb.run_selftest(command=SEGFAULT)
    assert not result.ok and "SIGSEGV" in result.message
    hung = lb.run_selftest(command=[sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.5)
    assert not hung.ok and "hung" in hung.message


def test_plan_prints_json(capsys):
    assert lb.main(["plan"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["profile"] == "portable" and plan["key"].startswith(lb.LLAMA_VERSION)


def test_guard_fails_llama_tests_instead_of_dying(pytester, monkeypatch):
    """A crashing self-test fails the tests that use llama.cpp with a message; the others still run."""
    pytester.makepyfile(textwrap.dedent("""
        import pytest

        @pytest.mark.llamacpp
        def test_marked():
            raise SystemExit("must not run")

        def test_by_source():
            from makd_cli.teachers.llamacpp import LlamaCppLM  # named in the source: guarded

        def test_unrelated():
            assert 1 + 1 == 2
    """))
    monkeypatch.setenv("MAKD_TEST_LLAMA_SELFTEST", shlex.join(SEGFAULT))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    result = pytester.runpytest_subprocess("-p", "llama_guard", "-q")
    result.assert_outcomes(passed=1, errors=2)  # failed at set-up: never started
    result.stdout.fnmatch_lines(["*not run: llama.cpp fails its self-test on this machine*SIGSEGV*"])
