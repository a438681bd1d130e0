"""Prompts per second of per-class LLM extraction over HTTP (``--backend openai``) at concurrency 1
against 16 requests in flight, side by side in one run, against local servers on loopback.

    python bench/extract_openai.py                        # both servers below
    python bench/extract_openai.py --skip-llama           # the latency server only (seconds)

Servers:
  (a) latency   a threaded OpenAI-style server written here that answers every request after a fixed
                delay (``--latency``, default 0.1 s: an API round trip or a batching GPU server's step);
                it computes nothing, so prompts/s measures the client alone
  (b) llama-cpp-python's own server with SmolLM2-135M (one model, requests served one after another):
                what concurrency does for a server that does not batch
Both rows of a server extract the same prompts (paper layout) and must give the same targets.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from extract_llm import CLASSES, make_questions  # noqa: E402

from makd_cli.extract.class_options import extract_class_answers  # noqa: E402
from makd_cli.teachers.openai_http import OpenAIChatLM  # noqa: E402


def serve_latency(latency: float, port_queue) -> None:
    """The latency server, in a process of its own (in the client's process it would share its GIL)."""
    state = {"in_flight": 0, "max": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):  # /stats: the most requests in flight since the last look
            with lock:
                data = json.dumps(state).encode()
                state["max"] = 0
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            if self.path != "/v1/chat/completions":
                data, code = b'{"error": "no such route"}', 404
            else:
                with lock:
                    state["in_flight"] += 1
                    state["max"] = max(state["max"], state["in_flight"])
                time.sleep(latency)
                with lock:
                    state["in_flight"] -= 1
                seed = sum(map(ord, body["messages"][-1]["content"]))
                lp = np.log(np.random.default_rng(seed).dirichlet(np.ones(5)))
                top = [{"token": str(i + 1), "logprob": float(v)} for i, v in enumerate(lp)]
                data, code = json.dumps({"choices": [{"message": {"content": "1"}, "logprobs": {"content": [
                    {"token": "1", "logprob": top[0]["logprob"], "top_logprobs": top}]}}],
                    "usage": {"prompt_tokens": 60}}).encode(), 200
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    class Server(ThreadingHTTPServer):
        daemon_threads, request_queue_size = True, 64  # the listen backlog is set when the server binds

    httpd = Server(("127.0.0.1", 0), Handler)
    port_queue.put(httpd.server_address[1])
    httpd.serve_forever()


def in_flight_peak(url: str) -> int:
    with urllib.request.urlopen(url + "/stats", timeout=5) as r:
        return json.loads(r.read())["max"]


def llama_server(threads: int):
    from makd_cli.teachers.models import resolve_gguf

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tempfile.NamedTemporaryFile("w", suffix=".log", delete=False)
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(resolve_gguf("smollm2-135m")),
                             "--host", "127.0.0.1", "--port", str(port), "--n_threads", str(threads), "--n_threads_batch",
                             str(threads), "--n_ctx", "2048", "--logits_all", "True", "--verbose", "False"],
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"llama_cpp.server exited; see {log.name}")
        try:
            with urllib.request.urlopen(base + "/v1/models", timeout=2):
                return proc, base
        except OSError:
            time.sleep(0.3)
    proc.terminate()
    raise SystemExit("llama_cpp.server did not start within 120 s")


def measure(base: str, questions, classes, concurrency: int, tmp: str):
    lm = OpenAIChatLM("bench", api_base=base, concurrency=concurrency)
    t, s = extract_class_answers(lm, questions, classes, os.path.join(tmp, f"c{concurrency}.h5"), questions_sha256="b",
                                 restart=True)
    return t, {"prompts": s["prompts"], "seconds": s["seconds"], "prompts_per_s": s["prompts_per_s"],
               "label_probs": t.meta["label_probs"], "floored": t.meta.get("label_probs_floored")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--questions", type=int, default=20)
    ap.add_argument("--llama-classes", type=int, default=2)
    ap.add_argument("--llama-questions", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-llama", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    os.environ.pop("OPENAI_API_KEY", None)  # loopback needs no key

    res: dict = {"command": " ".join(["python"] + sys.argv), "loadavg_before": [round(x, 2) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory() as tmp:
        ports = multiprocessing.Queue()
        server = multiprocessing.Process(target=serve_latency, args=(args.latency, ports), daemon=True)
        server.start()
        url = f"http://127.0.0.1:{ports.get(timeout=30)}"
        qs, cls = make_questions(args.questions), CLASSES[: args.classes]
        rows = {}
        for c in (1, 16):
            in_flight_peak(url)
            t, rows[c] = measure(url, qs, cls, c, tmp)
            rows[c]["max_in_flight_seen_by_server"] = in_flight_peak(url)
            rows[c]["probs"] = t.probs
        same = bool(np.array_equal(rows[1].pop("probs"), rows[16].pop("probs")))
        res["latency_server"] = {"latency_s": args.latency, "rows": rows, "speedup": round(rows[16]["prompts_per_s"] / rows[1]["prompts_per_s"], 2),
                                 "identical_targets": same}
        server.terminate()
        server.join(timeout=10)
        if not args.skip_llama and importlib.util.find_spec("llama_cpp") and importlib.util.find_spec("uvicorn"):
            proc, base = llama_server(args.threads)
            try:
                qs, cls = make_questions(args.llama_questions), CLASSES[: args.llama_classes]
                rows = {}
                for c in (1, 16):
                    t, rows[c] = measure(base, qs, cls, c, tmp)
                    rows[c]["probs"] = t.probs
                diff = float(np.abs(rows[1].pop("probs") - rows[16].pop("probs")).max())
                res["llama_cpp_python_server"] = {"rows": rows, "speedup": round(rows[16]["prompts_per_s"] / rows[1]["prompts_per_s"], 2),
                                                  "max_abs_prob_diff": diff}
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    res["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    for name in ("latency_server", "llama_cpp_python_server"):
        if name not in res:
            continue
        r = res[name]
        print(f"{name}: " + ", ".join(f"concurrency {c}: {v['prompts']} prompts, {v['prompts_per_s']} prompts/s "
                                      f"(label_probs {v['label_probs']}, floored {v['floored']})" for c, v in r["rows"].items())
              + f"; speed-up {r['speedup']}x" + (f"; identical targets {r['identical_targets']}" if "identical_targets" in r
                                                else f"; max |prob diff| {r['max_abs_prob_diff']:.1e}"))
    print(f"load average {res['loadavg_before'][0]} -> {res['loadavg_after'][0]}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    main()
