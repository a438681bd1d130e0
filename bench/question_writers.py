"""Which offline model should write the questions? Items kept per attempt, time, and class separation.

For each writer (embedded GGUF aliases or .gguf paths) and each class list, runs `makd gen-questions`
(the CLI, as a user would), then has one fixed answerer (`--answerer`, default the embedded SmolLM2)
answer the kept questions with `makd extract`, and reads `makd inspect --quality --json`: how far apart the
classes' answer signatures are next to random codes of the same shape. A writer is better when more of
its attempts survive validation and its questions separate the classes more.

    python bench/question_writers.py --writers smollm2-135m gemma3-270m -n 20

Class lists: Fashion-MNIST's ten classes (the demo) and four CUB birds (the issue's hard case).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

BIRDS = ["Black footed Albatross", "Laysan Albatross", "Rusty Blackbird", "Cardinal"]
FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def makd(*args: str) -> tuple[dict, float]:
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "makd_cli", *args, "--json"], capture_output=True, text=True)
    if proc.returncode != 0:  # e.g. a writer that kept nothing: a result, not a crash of the benchmark
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}, time.time() - started
    return json.loads(proc.stdout), time.time() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--writers", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    ap.add_argument("--answerer", default="smollm2-135m")
    ap.add_argument("-n", type=int, default=20)
    ap.add_argument("--retries", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads (1 keeps a busy machine from stalling OpenMP)")
    ap.add_argument("--work", default=str(Path(__file__).resolve().parent / "work" / "question_writers"))
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for list_name, classes in (("fashion-mnist", FASHION), ("4 birds", BIRDS)):
        cfile = work / f"{list_name.replace(' ', '_')}.txt"
        cfile.write_text("\n".join(classes) + "\n")
        for writer in args.writers:
            tag = f"{list_name.replace(' ', '_')}-{Path(writer).stem}"
            qfile = work / f"{tag}.jsonl"
            rep, secs = makd("gen-questions", "--llm", writer, "--classes", str(cfile), "--kind", "mcq", "-n", str(args.n),
                             "--options", "5", "--retries", str(args.retries), "--seed", str(args.seed), "-o", str(qfile),
                             *(["--threads", str(args.threads)] if args.threads else []))
            if "error" in rep:  # nothing kept: every attempt was rejected
                n_try = args.n * (args.retries + 1)
                rep = {"kept": 0, "requested": args.n, "attempts": n_try, "rejected": {"error": rep["error"]}}
            row = {"classes": list_name, "writer": writer, "kept": rep["kept"], "requested": rep["requested"],
                   "attempts": rep["attempts"], "seconds": round(secs, 1), "rejected": rep["rejected"]}
            if rep["kept"]:
                tfile = work / f"{tag}.h5"
                tfile.unlink(missing_ok=True)
                makd("extract", "--llm", args.answerer, "--questions", str(qfile), "--classes", str(cfile), "-o", str(tfile))
                quality, _ = makd("inspect", str(tfile), "--quality")
                row["quality"] = quality
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "quality"}), file=sys.stderr, flush=True)
    (work / "results.json").write_text(json.dumps(rows, indent=1))
    print(f"| classes | writer | kept / requested | attempts | kept per attempt | seconds | mean class distance (x random codes) | indistinguishable pairs |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        q = r.get("quality", {})
        ratio = q.get("summary", {}).get("mean_distance_ratio")
        ratio = f"{ratio:.2f}" if ratio is not None else None
        pairs = q.get("overall", {}).get("teacher", {}).get("indistinguishable_pairs")
        print(f"| {r['classes']} | {r['writer']} | {r['kept']} / {r['requested']} | {r['attempts']} | {r['kept'] / max(1, r['attempts']):.2f} | "
              f"{r['seconds']} | {ratio if ratio is not None else '-'} | {pairs if pairs is not None else '-'} |")


if __name__ == "__main__":
    main()
