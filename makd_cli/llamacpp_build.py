"""Which llama-cpp-python build this CPU gets, and a wheel cache that cannot hand out the wrong one.

llama-cpp-python has no portable binary on PyPI for CPUs: it compiles llama.cpp from source. Built with
the builder's native flags (the package default), the library only runs on CPUs that have every
instruction the builder had, and on Intel CPUs with AMX its AMX matrix kernels crash (issue 13). So:

- ``portable`` (the default): ``GGML_NATIVE=OFF`` with an explicit AVX2 baseline (AVX, AVX2, FMA, F16C,
  BMI2), no AVX-512 and no AMX. Runs on any x86-64 CPU with AVX2 (every server CPU since 2013); a CPU
  without AVX2 gets a plain SSE build. On aarch64 the generic ARMv8 build. bench/llama_build.py measures
  it against the native build (bench/RESULTS.md).
- ``native``: ``GGML_NATIVE=ON`` (-march=native) with AMX switched off; fastest where it was built,
  runs only on CPUs with at least the builder's instruction set.
- ``amx``: native with AMX; opt-in only, and kept only when the self-test passes.

Choose with ``MAKD_LLAMA_BUILD=portable|native|amx`` (set-up reads it). The cache key holds the
llama-cpp-python version, the profile, the CMake flags and the CPU features the build needs, so a home
folder shared by cluster nodes with different CPUs never hands a native build to a CPU that cannot run
it; an entry whose self-test fails is deleted and rebuilt. Only the standard library is used here:
set-up runs this module before anything else of makd is importable for certain.

    python -m makd_cli.llamacpp_build ensure     # set-up: install the right build, self-test it
    python -m makd_cli.llamacpp_build plan       # what ensure would do, as JSON
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

LLAMA_VERSION = "0.3.36"
PROFILES = ("portable", "native", "amx")
AVX2_BASELINE = ("avx", "avx2", "fma", "f16c", "bmi2")
AMX_FEATURES = ("amx_tile", "amx_int8", "amx_bf16")
_NO_AMX_CFLAGS = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
ENVIRONMENT_EXIT = 3  # the self-test's exit code for "a module or the model is missing", not a bad build
STAMP_NAME = "makd-llama-build.json"  # in the venv's prefix: which build is installed there


class BuildError(Exception):
    """Set-up cannot give this machine a working llama.cpp; the message is one line saying what to do."""


@dataclass(frozen=True)
class BuildSpec:
    profile: str
    arch: str
    cmake_args: tuple[str, ...]
    requires: tuple[str, ...]  # CPU features (as /proc/cpuinfo names them) a CPU needs to run the build
    version: str = LLAMA_VERSION

    @property
    def key(self) -> str:
        blob = json.dumps({"cmake_args": self.cmake_args, "requires": self.requires}, sort_keys=True)
        return f"{self.version}-{self.arch}-{self.profile}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"

    def runs_on(self, features: set[str], arch: str) -> bool:
        return arch == self.arch and set(self.requires) <= features

    def to_json(self) -> dict:
        return {**asdict(self), "key": self.key}


def cpu_info() -> tuple[str, set[str], str]:
    """(architecture, CPU feature flags, model name) of this machine, from /proc/cpuinfo on Linux."""
    arch = platform.machine().lower().replace("amd64", "x86_64")
    features: set[str] = set()
    model = platform.processor() or arch
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return arch, features, model
    for line in text.splitlines():
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name in ("flags", "features") and not features:
            features = set(value.split())
        elif name == "model name" and model in (arch, ""):
            model = value.strip()
    return arch, features, model


def build_spec(profile: str, arch: str, features: set[str]) -> BuildSpec:
    if profile not in PROFILES:
        raise BuildError(f"MAKD_LLAMA_BUILD={profile!r} is unknown; choose one of {', '.join(PROFILES)}")
    if profile == "portable":
        if arch != "x86_64":
            return BuildSpec("portable", arch, ("-DGGML_NATIVE=OFF",), ())
        if set(AVX2_BASELINE) <= features:
            on = " ".join(f"-DGGML_{f.upper()}=ON" for f in AVX2_BASELINE)
            off = "-DGGML_AVX512=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AVX_VNNI=OFF " \
                  "-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
            return BuildSpec("portable", arch, tuple(f"-DGGML_NATIVE=OFF {on} {off}".split()), AVX2_BASELINE)
        plain = "-DGGML_NATIVE=OFF -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF -DGGML_BMI2=OFF"
        return BuildSpec("portable", arch, tuple(plain.split()), ())
    # native and amx: -march=native, so the build needs every instruction-set flag this CPU has.
    requires = tuple(sorted(features))
    args = ["-DGGML_NATIVE=ON"]
    if profile == "native" and set(AMX_FEATURES) & features:
        args += [f"-DCMAKE_C_FLAGS={_NO_AMX_CFLAGS}", f"-DCMAKE_CXX_FLAGS={_NO_AMX_CFLAGS}"]
    if profile == "amx" and not set(AMX_FEATURES) <= features:
        raise BuildError("MAKD_LLAMA_BUILD=amx: this CPU has no AMX (amx_tile, amx_int8, amx_bf16); use portable or native")
    return BuildSpec(profile, arch, tuple(args), requires)


# ---- the cache -------------------------------------------------------------------------------
@dataclass
class CacheEntry:
    folder: Path
    wheel: Path
    spec: dict


def default_cache_dir() -> Path:
    return Path(os.environ.get("MAKD_WHEEL_CACHE") or Path.home() / ".cache" / "makd" / "wheels")


def find_cached(cache: Path, spec: BuildSpec, features: set[str], arch: str) -> CacheEntry | None:
    """The cached wheel for exactly this build, or None. Anything that does not match is never used."""
    folder = cache / spec.key
    try:
        recorded = json.loads((folder / "build.json").read_text())
    except (OSError, ValueError):
        return None
    wheels = sorted(folder.glob("llama_cpp_python-*.whl"))
    if (len(wheels) != 1 or recorded.get("key") != spec.key or recorded.get("selftest") == "failed"
            or not set(recorded.get("requires", [])) <= features or recorded.get("arch") != arch):
        return None
    return CacheEntry(folder, wheels[0], recorded)


def discard(entry_folder: Path) -> None:
    shutil.rmtree(entry_folder, ignore_errors=True)


def build_wheel(spec: BuildSpec, cache: Path, *, python: str = sys.executable, log=print) -> CacheEntry:
    """Compile llama-cpp-python with the spec's flags into the cache (atomically: a killed build leaves nothing)."""
    cache.mkdir(parents=True, exist_ok=True)
    for stale in cache.glob(".*.*"):  # staging folders of builds killed long ago (a build takes minutes)
        if stale.is_dir() and time.time() - stale.stat().st_mtime > 6 * 3600:
            shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.key}.", dir=cache))
    env = {**os.environ, "CMAKE_ARGS": " ".join(spec.cmake_args),
           "CMAKE_BUILD_PARALLEL_LEVEL": os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))}
    # --no-cache-dir: pip's own wheel cache would hand back an old build when only CMAKE_ARGS changed.
    cmd = [python, "-m", "pip", "wheel", "-q", "--no-cache-dir", "--no-deps", f"llama-cpp-python=={spec.version}", "-w", str(staging)]
    log(f"building llama-cpp-python {spec.version} ({spec.profile}: {' '.join(spec.cmake_args)}); this takes several minutes")
    started = time.time()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        tail = " | ".join(proc.stdout.strip().splitlines()[-3:])
        raise BuildError(f"building llama-cpp-python {spec.version} failed (exit {proc.returncode}): {tail}; "
                         f"check that gcc, g++ and cmake are installed")
    _, _, model = cpu_info()
    record = {**spec.to_json(), "built_on": model, "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "build_seconds": round(time.time() - started), "selftest": "pending"}
    (staging / "build.json").write_text(json.dumps(record, indent=1))
    folder = cache / spec.key
    discard(folder)
    os.replace(staging, folder)
    wheel = next(folder.glob("llama_cpp_python-*.whl"))
    return CacheEntry(folder, wheel, record)


def mark_selftest(entry: CacheEntry, ok: bool) -> None:
    entry.spec["selftest"] = "passed" if ok else "failed"
    tmp = entry.folder / ".build.json.tmp"
    tmp.write_text(json.dumps(entry.spec, indent=1))
    os.replace(tmp, entry.folder / "build.json")


# ---- installing and testing -----------------------------------------------------------------
def installed_stamp(prefix: str = sys.prefix) -> dict | None:
    try:
        return json.loads((Path(prefix) / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return None


def install(entry: CacheEntry, *, python: str = sys.executable) -> None:
    # First the wheel itself, replacing whatever build is there; then, without --force, whatever of its
    # dependencies (numpy, jinja2, diskcache, typing-extensions) the venv lacks.
    for extra in (["--no-deps", "--force-reinstall"], []):
        cmd = [python, "-m", "pip", "install", "-q", *extra, str(entry.wheel)]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            last = (proc.stdout.strip().splitlines() or ["no output"])[-1]
            raise BuildError(f"installing {entry.wheel.name} failed: {last}")
    (Path(_prefix_of(python)) / STAMP_NAME).write_text(json.dumps(entry.spec, indent=1))


@dataclass
class SelfTest:
    ok: bool
    message: str
    seconds: float = 0.0
    detail: dict = field(default_factory=dict)
    # True when the native library itself failed (a signal such as SIGSEGV or SIGILL, a hang, or wrong
    # output): the build is bad. False for a Python-level error (a missing module, a missing model): the
    # environment is, and deleting the build would not help.
    build_fault: bool = True


def describe_exit(code: int) -> str:
    if code < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def run_selftest(python: str = sys.executable, command: list[str] | None = None, timeout: float = 120) -> SelfTest:
    """Run the llama.cpp self-test in a subprocess, so that a crash of the native library is a result."""
    cmd = command or [python, "-m", "makd_cli.llamacpp_selftest"]
    started = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return SelfTest(False, f"the llama.cpp self-test hung for {timeout:.0f} s", time.time() - started)
    seconds = time.time() - started
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stdout + proc.stderr).strip().splitlines() if ln.strip()]
        last = lines[-1][:200] if lines else ""
        try:  # the self-test's own report, when it got as far as writing one
            last = json.loads(proc.stdout.strip().splitlines()[-1])["error"][:200]
        except (ValueError, IndexError, KeyError, TypeError):
            pass
        environment = proc.returncode == ENVIRONMENT_EXIT  # the self-test says: not the build's fault
        return SelfTest(False, f"the llama.cpp self-test {describe_exit(proc.returncode)}" + (f": {last}" if last else ""), seconds,
                        build_fault=not environment)
    try:
        detail = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return SelfTest(False, "the llama.cpp self-test printed no result", seconds)
    return SelfTest(True, "loaded the embedded model, decoded tokens and ran a JSON-schema generation", seconds, detail)


def crash_advice(spec: BuildSpec, model: str, result: SelfTest) -> str:
    return (f"llama-cpp-python {spec.version} ({spec.profile} build) does not run on this CPU ({model}): {result.message}; "
            f"run `MAKD_LLAMA_BUILD=portable make setup`, or `makd doctor` for details")


def ensure(profile: str | None = None, *, cache: Path | None = None, python: str = sys.executable, log=print,
           builder=build_wheel, installer=install, selftest=run_selftest) -> dict:
    """Give this venv the llama.cpp build this CPU should run, tested. Returns what was done."""
    profile = profile or os.environ.get("MAKD_LLAMA_BUILD", "portable")
    cache = cache or default_cache_dir()
    arch, features, model = cpu_info()
    spec = build_spec(profile, arch, features)
    stamp = installed_stamp(_prefix_of(python))
    if stamp and stamp.get("key") == spec.key and spec.runs_on(features, arch):
        result = selftest(python)
        if result.ok:
            return {"action": "kept", "key": spec.key, "selftest": result.message}
        log(f"the installed llama.cpp build fails its self-test ({result.message}); reinstalling")

    def install_and_test(entry: CacheEntry) -> SelfTest:
        installer(entry, python=python)
        result = selftest(python)
        if not result.ok and not result.build_fault:  # e.g. a missing module: fix the environment, keep the wheel
            raise BuildError(f"the llama.cpp self-test could not run ({result.message}); the build was kept; "
                             f"run `make setup` again, or `makd doctor` for details")
        return result

    entry = find_cached(cache, spec, features, arch)
    action = "cached"
    if entry is None:
        entry = builder(spec, cache, python=python, log=log)
        action = "built"
    else:
        log(f"using the cached llama-cpp-python wheel {entry.folder.name}")
    result = install_and_test(entry)
    if not result.ok and action == "cached":
        log(f"the cached wheel fails its self-test ({result.message}): deleting it and rebuilding")
        discard(entry.folder)
        entry = builder(spec, cache, python=python, log=log)
        result = install_and_test(entry)
        action = "rebuilt"
    mark_selftest(entry, result.ok)
    if not result.ok:
        discard(entry.folder)
        if profile == "amx":
            log(f"the AMX build fails its self-test ({result.message}); falling back to the portable build")
            return ensure("portable", cache=cache, python=python, log=log, builder=builder, installer=installer, selftest=selftest)
        raise BuildError(crash_advice(spec, model, result))
    return {"action": action, "key": spec.key, "selftest": result.message}


def _prefix_of(python: str) -> str:
    if Path(python).resolve() == Path(sys.executable).resolve():
        return sys.prefix
    out = subprocess.run([python, "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True)
    return out.stdout.strip() or sys.prefix


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m makd_cli.llamacpp_build", description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=("ensure", "plan", "selftest"))
    ap.add_argument("--profile", default=None, help="portable (default), native or amx; or set MAKD_LLAMA_BUILD")
    args = ap.parse_args(argv)
    say = lambda msg: print(f"\033[1m[setup]\033[0m {msg}", flush=True)  # noqa: E731
    try:
        if args.command == "plan":
            arch, features, model = cpu_info()
            spec = build_spec(args.profile or os.environ.get("MAKD_LLAMA_BUILD", "portable"), arch, features)
            cached = find_cached(default_cache_dir(), spec, features, arch)
            print(json.dumps({"cpu": model, **spec.to_json(), "cached": str(cached.wheel) if cached else None,
                              "installed": (installed_stamp() or {}).get("key")}, indent=1))
            return 0
        if args.command == "selftest":
            result = run_selftest()
            print(json.dumps(asdict(result), indent=1))
            return 0 if result.ok else 2
        done = ensure(args.profile, log=say)
        say(f"llama.cpp: {done['action']} {done['key']}; self-test passed")
        return 0
    except BuildError as exc:
        print(f"makd set-up: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
