"""llama-cpp-python's own OpenAI-compatible server (its ``server`` extra) with a GGUF language model and an
mmproj on loopback, for tests/test_openai_mllm_server.py and bench/extract_mllm_server.py.

``python tests/llama_mtmd_server.py --model M.gguf --clip_model_path P.gguf ...`` runs
``python -m llama_cpp.server`` with ``--chat_format mtmd`` (the handler that renders the GGUF's own chat
template around the image) and one adaptation: a user turn sent as OpenAI content parts [image, text] is
given to the template as one string, ``<image marker>\\n<text>``. SmolLM2's template (the test model) only
takes string contents, as many do; servers join the parts the same way for such templates (vLLM puts the
image placeholder and the text on separate lines), and it is the prompt makd's in-process llama.cpp
teacher writes (``LlamaCppMultimodalTeacher.prompt``), so both see the same tokens. And one setting:
the projector's flash attention is left at mtmd's default (auto), as makd's in-process teacher leaves
it; llama-cpp-python's handler would switch it off whenever the language model's is off, and the
vision tower's output then differs by a few 1e-2 in log-probability with the tests' random projector.
"""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

SERVER_MODULES = ("llama_cpp", "fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings")


def missing_server_module() -> str | None:
    """The first module llama-cpp-python's server needs that is not installed (None: all there)."""
    for mod in SERVER_MODULES:
        if importlib.util.find_spec(mod) is None:
            return mod
    try:
        import llama_cpp.llama_chat_format as fmt
        import llama_cpp.mtmd_cpp  # noqa: F401
    except (ImportError, OSError) as exc:
        return f"llama_cpp.mtmd_cpp ({type(exc).__name__})"
    if not hasattr(fmt, "MTMDChatHandler"):
        return "llama_cpp.llama_chat_format.MTMDChatHandler (llama-cpp-python >= 0.3.35)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(model: Path, mmproj: Path, log_dir: Path, *, threads: int = 1, n_ctx: int = 2048, timeout: float = 120.0):
    """Start the server, wait until it answers, yield its base URL (http://127.0.0.1:PORT); always stop it."""
    port = free_port()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--model", str(model), "--clip_model_path", str(mmproj),
           "--chat_format", "mtmd", "--host", "127.0.0.1", "--port", str(port), "--n_threads", str(threads),
           "--n_threads_batch", str(threads), "--n_ctx", str(n_ctx), "--logits_all", "True", "--verbose", "False"]
    log_path = Path(log_dir) / "llama_server.log"
    log = open(log_path, "w")  # a file, not a pipe: a full pipe would block the server
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {log_path.read_text()[-1500:]}")
            try:
                with urllib.request.urlopen(base + "/v1/models", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"llama_cpp.server did not answer within {timeout:.0f} s: {log_path.read_text()[-1500:]}")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()


def _install_string_content_handler() -> None:
    import llama_cpp.llama_chat_format as fmt

    class StringContentMTMDChatHandler(fmt.MTMDChatHandler):
        @classmethod
        def _convert_message_for_template(cls, message, media_marker):
            out = dict(message)
            content = out.get("content")
            if isinstance(content, list):
                out["content"] = "\n".join(media_marker if isinstance(p, dict) and p.get("type") == "image_url"
                                           else (p.get("text", "") if isinstance(p, dict) else str(p)) for p in content)
            return out

    fmt.MTMDChatHandler = StringContentMTMDChatHandler  # the server looks it up by this name when it loads the model

    import llama_cpp
    import llama_cpp.mtmd_cpp as mtmd

    init = mtmd.mtmd_init_from_file

    def init_with_default_flash_attn(path, model, params):
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO  # mtmd's default, as in makd's process
        return init(path, model, params)

    mtmd.mtmd_init_from_file = init_with_default_flash_attn


if __name__ == "__main__":
    _install_string_content_handler()
    import runpy

    sys.argv[0] = "llama_cpp.server"
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
