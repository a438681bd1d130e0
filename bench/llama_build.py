"""Prompt and decode throughput of llama-cpp-python builds side by side (issue 13: portable vs native).

Each wheel is unpacked into its own folder under bench/work/llama_build/ and measured in a fresh
subprocess with that folder first on PYTHONPATH, so several builds of the same version are compared
on the same machine, model and prompts. Rounds alternate the builds, so background load hits all of
them alike; the table gives the median of the rounds and each build's ratio to the first one.

    python bench/llama_build.py --wheel native=/tmp/native.whl --wheel portable=~/.cache/makd/wheels/KEY/*.whl

The model is the embedded SmolLM2-135M Q4_1 (or --model PATH); the prompt is --prompt-tokens long,
evaluated from a cold cache each repetition (prompt throughput, the cost of `makd extract`), then
--decode tokens are generated one by one (the cost of `makd gen-questions`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import zipfile
from pathlib import Path

WORKER = r"""
import json, sys, time
from llama_cpp import Llama, llama_print_system_info
model, n_prompt, n_decode, reps, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
llm = Llama(model, n_ctx=n_prompt + n_decode + 8, n_threads=threads, n_threads_batch=threads, n_batch=512, seed=0, verbose=False)
words = ("the bird has a short curved beak and red feathers on its head while the wings are dark brown " * 200).split()
tokens = llm.tokenize(" ".join(words).encode())[:n_prompt]
prompt_s, decode_s = [], []
for _ in range(reps):
    llm.reset()
    t = time.perf_counter(); llm.eval(tokens); prompt_s.append(time.perf_counter() - t)
    t = time.perf_counter()
    for _ in range(n_decode):
        llm.eval([int(llm._ctx.get_logits()[0] > 0) + 100])  # any token: the cost is one decode step
    decode_s.append(time.perf_counter() - t)
print(json.dumps({"prompt_tps": n_prompt / min(prompt_s), "decode_tps": n_decode / min(decode_s),
                  "system_info": llama_print_system_info().decode()}))
"""


def unpack(name: str, wheel: Path, root: Path) -> Path:
    target = root / name
    stamp = target / ".wheel"
    if not (stamp.exists() and stamp.read_text() == str(wheel.resolve())):
        if target.exists():
            import shutil

            shutil.rmtree(target)
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(target)
        for lib in (target / "llama_cpp" / "lib").glob("*.so*"):
            lib.chmod(0o755)
        stamp.write_text(str(wheel.resolve()))
    return target


def default_model() -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from makd_cli.teachers.models import resolve_gguf

    return str(resolve_gguf("smollm2-135m"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wheel", action="append", required=True, help="NAME=PATH of a llama_cpp_python wheel (the first is the baseline)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--prompt-tokens", type=int, default=384)
    ap.add_argument("--decode", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3, help="repetitions inside one worker (best of)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds over the builds (median of)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    model = args.model or default_model()
    root = Path(__file__).resolve().parent / "work" / "llama_build"
    builds = {}
    for item in args.wheel:
        name, _, path = item.partition("=")
        builds[name] = unpack(name, Path(path).expanduser(), root)
    results: dict[str, list[dict]] = {name: [] for name in builds}
    for r in range(args.rounds):
        for name, site in builds.items():
            env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": str(args.threads)}
            proc = subprocess.run([sys.executable, "-c", WORKER, model, str(args.prompt_tokens), str(args.decode), str(args.reps),
                                   str(args.threads)], capture_output=True, text=True, env=env, cwd=root)
            if proc.returncode != 0:
                results[name].append({"error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]})
                continue
            results[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1} {name}: {results[name][-1]['prompt_tps']:.0f} prompt tok/s, {results[name][-1]['decode_tps']:.1f} decode tok/s",
                  file=sys.stderr, flush=True)
    base = None
    table = []
    for name, runs in results.items():
        ok = [x for x in runs if "error" not in x]
        if not ok:
            table.append({"build": name, "error": runs[0]["error"]})
            continue
        row = {"build": name, "prompt_tps": statistics.median(x["prompt_tps"] for x in ok),
               "decode_tps": statistics.median(x["decode_tps"] for x in ok),
               "compiled": ok[0]["system_info"].replace("CPU : ", "").replace(" = 1", "").replace(" |", "").strip()}
        base = base or row
        row["prompt_ratio"] = row["prompt_tps"] / base["prompt_tps"]
        row["decode_ratio"] = row["decode_tps"] / base["decode_tps"]
        table.append(row)
    if args.json:
        print(json.dumps(table, indent=1))
        return
    print(f"model {Path(model).name}, prompt {args.prompt_tokens} tokens, {args.decode} decode steps, {args.threads} threads, "
          f"median of {args.rounds} alternating rounds (best of {args.reps} each)")
    print(f"| build | prompt tok/s | vs {table[0]['build']} | decode tok/s | vs {table[0]['build']} | compiled |")
    print("|---|---|---|---|---|---|")
    for row in table:
        if "error" in row:
            print(f"| {row['build']} | failed: {row['error']} | | | | |")
        else:
            print(f"| {row['build']} | {row['prompt_tps']:.0f} | {row['prompt_ratio']:.2f}x | {row['decode_tps']:.1f} | "
                  f"{row['decode_ratio']:.2f}x | {row['compiled']} |")


if __name__ == "__main__":
    main()
