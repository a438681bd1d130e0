"""The llama.cpp self-test: load the embedded model, decode a few tokens, run one JSON-schema generation.

Run it in a subprocess (``makd_cli.llamacpp_build.run_selftest``): a llama.cpp build that does not fit the
CPU dies with SIGSEGV or SIGILL inside the native library, which no Python code can catch. The last line
printed is a JSON report; the exit code is 0 when everything worked.
"""

from __future__ import annotations

import json
import os
import sys
import time


ENVIRONMENT_EXIT = 3  # makd_cli.llamacpp_build.ENVIRONMENT_EXIT: the environment, not the build, is at fault


def main() -> int:
    started = time.time()
    from makd_cli.errors import MakdError
    from makd_cli.teachers.models import DEFAULT_LLM, resolve_gguf

    try:
        from llama_cpp import Llama, llama_print_system_info

        path = resolve_gguf(os.environ.get("MAKD_SELFTEST_MODEL", DEFAULT_LLM))
    except ModuleNotFoundError as exc:  # a missing Python dependency; a broken native library raises OSError
        print(json.dumps({"ok": False, "environment": True, "error": f"missing Python module {exc.name}"}))
        return ENVIRONMENT_EXIT
    except MakdError as exc:  # the embedded model is not installed
        print(json.dumps({"ok": False, "environment": True, "error": str(exc)}))
        return ENVIRONMENT_EXIT
    # One thread: the kernels run the same, and a busy machine cannot stall OpenMP barriers.
    llm = Llama(str(path), n_ctx=512, n_threads=1, n_threads_batch=1, seed=0, verbose=False)
    # A prompt long enough to go through the batched matrix kernels (where AMX crashed), then decoding.
    prompt = "List three colours of birds and three shapes of beaks. " * 6
    text = llm.create_completion(prompt, max_tokens=6, temperature=0.0)["choices"][0]["text"]
    schema = {"type": "object", "properties": {"colour": {"type": "string", "maxLength": 12}}, "required": ["colour"]}
    out = llm.create_chat_completion([{"role": "user", "content": "Name one colour as JSON."}],
                                     response_format={"type": "json_object", "schema": schema}, temperature=0.0, max_tokens=24)
    parsed = json.loads(out["choices"][0]["message"]["content"])
    if not isinstance(parsed, dict) or "colour" not in parsed:
        print(json.dumps({"ok": False, "error": f"constrained generation gave {parsed!r}"}))
        return 1
    info = llama_print_system_info()
    print(json.dumps({"ok": True, "model": path.name, "decoded": text, "json": parsed,
                      "system_info": info.decode() if isinstance(info, bytes) else str(info),
                      "seconds": round(time.time() - started, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
