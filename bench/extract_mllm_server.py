"""Images per second of MaKD yes/no extraction through an OpenAI-compatible server on loopback
(``--mllm MODEL --backend openai``) at several ``--concurrency`` values, side by side with makd's
in-process llama.cpp multimodal teacher (cached image prefix, and the naive one-prompt-per-question
loop) on the same model, images and questions.

    OMP_NUM_THREADS=1 python bench/extract_mllm_server.py [--images 6] [--questions 10] [--concurrency 1 4 16]

Model: SmolLM2-135M (the embedded GGUF) with the tiny random mmproj of tests/test_mllm_backends.py;
server: llama-cpp-python's own (tests/llama_mtmd_server.py), same thread count as the in-process teacher.
What it shows on a CPU: llama-cpp-python's server runs one request at a time (one model, one context),
so concurrency only overlaps the HTTP and image decoding with compute; and it evaluates every request
whole, the image included (its handler clears the KV cache per request), so it runs at about the
in-process naive loop's rate, not the cached prefix's. A server built for throughput (vLLM, SGLang:
continuous batching, prefix caching keyed on the image) is what concurrency is for.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from extract_mllm import make_questions  # noqa: E402
from llama_mtmd_server import missing_server_module, serve  # noqa: E402
from test_mllm_backends import tiny_mmproj  # noqa: E402

from makd_cli.teachers.backends import load_multimodal  # noqa: E402
from makd_cli.teachers.models import resolve_gguf  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--questions", type=int, default=10)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--threads", type=int, default=1, help="llama.cpp threads, in process and in the server")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    why = missing_server_module()
    if why:
        raise SystemExit(f"extract_mllm_server.py: llama-cpp-python's server needs {why}")
    os.environ.pop("OPENAI_API_KEY", None)  # loopback: no key
    model = resolve_gguf("smollm2-135m")
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(args.images + 1)]
    texts = make_questions(args.questions)
    rows, res = {}, {"command": " ".join(["python"] + sys.argv), "model": "SmolLM2-135M + tiny random mmproj (4 image tokens)",
                     "images": args.images, "questions": len(texts), "threads": args.threads,
                     "cpu": next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
                                 platform.machine()), "cores": os.cpu_count(),
                     "loadavg_before": [round(x, 2) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory() as tmp:
        mmproj = tiny_mmproj(Path(tmp) / "mmproj-tiny.gguf", 576)
        local = load_multimodal(str(model), mmproj=mmproj, threads=args.threads)
        prep = local.prepare_yesno(texts)
        pre = local.preprocessor(prep)

        def timed(fn):
            fn(images[0])  # warm-up, not counted
            t0 = time.perf_counter()
            out = [fn(im) for im in images[1:]]
            return len(out) / (time.perf_counter() - t0), np.stack(out)

        rate, cached = timed(lambda im: local.yesno_from_encoded(pre(im), prep))
        rows["in-process, cached image prefix"] = rate
        rate, naive = timed(lambda im: local.yesno_naive(im, prep))
        rows["in-process, one prompt per question"] = rate
        local.close()
        diffs = {}
        with serve(model, mmproj, Path(tmp), threads=args.threads) as base:
            for c in args.concurrency:
                http = load_multimodal("smollm2", "openai", api_base=base, concurrency=c)
                hprep = http.prepare_yesno(texts)
                hpre = http.preprocessor(hprep)
                http.yesno_batch([hpre(images[0])], hprep)  # warm-up, and the /v1/score probe
                t0 = time.perf_counter()
                got = http.yesno_batch([hpre(im) for im in images[1:]], hprep)  # one chunk: every request of it in flight
                rows[f"server, --concurrency {c}"] = args.images / (time.perf_counter() - t0)
                p = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
                diffs[c] = float(np.abs(p(got) - p(cached)).max())
                res["label_probs"] = http.label_probs_method
    res["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    res["images_per_s"] = {k: round(v, 3) for k, v in rows.items()}
    res["max_abs_p_yes_diff_vs_in_process"] = diffs
    print(f"{res['model']}, {args.images} images x {len(texts)} questions, {args.threads} thread(s), {res['cpu']} "
          f"({res['cores']} cores), load {res['loadavg_before'][0]} -> {res['loadavg_after'][0]}")
    print(f"{'path':<40}{'images/s':>10}{'questions/s':>13}")
    for k, v in rows.items():
        print(f"{k:<40}{v:>10.3f}{v * len(texts):>13.1f}")
    print(f"max |p(yes) difference| server vs in-process cached: {max(diffs.values()):.1e} (label_probs: {res['label_probs']})")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
