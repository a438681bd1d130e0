"""makd import / inspect --quality / inspect --compare on LaViD's published CUB files (issue 15).

Usage: python bench/lavid_published.py LAVID_REPO [--work DIR]
LAVID_REPO is a checkout of github lliangthomas/lavid (its questions/cub200/ and lavid/data/classes/).
Every step runs the makd command line, so the printed commands are what a user types.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

TEACHERS = ["qwen2.5-7b", "qwen2.5-72B", "qwen2.5-0.5B", "llama3.1-8b", "llama3.1-70b", "gemma3-27b", "mistral0.3-7b"]


def makd(*args) -> tuple[str, float]:
    cmd = [sys.executable, "-m", "makd_cli", *map(str, args)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"failed: makd {shlex.join(map(str, args))}\n{proc.stderr}")
    return proc.stdout, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("repo", type=Path)
    ap.add_argument("--work", type=Path, default=Path("bench/work/lavid"))
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    cub = a.repo / "questions" / "cub200"
    # makd's CUB loader names the classes as CUB's folders without the number (Black_footed_Albatross).
    names = json.loads((a.repo / "lavid/data/classes/cub200_classes.json").read_text())
    (a.work / "classes.txt").write_text("\n".join(n.replace(" ", "_") for n in names) + "\n")
    out, s = makd("import", "questions", cub / "chat_50-5.txt", "--from", "lavid", "-o", a.work / "questions.jsonl", "--json")
    print(f"import questions: {json.loads(out)['questions']} questions, {s:.2f} s")
    rows = []
    for t in TEACHERS:
        src = cub / "logits" / f"{t}_chat_50-5.json"
        out, s = makd("import", "targets", src, "--from", "lavid", "--classes", a.work / "classes.txt",
                      "--questions", a.work / "questions.jsonl", "-o", a.work / f"{t}.h5", "--json")
        _, s2 = makd("export", "targets", a.work / f"{t}.h5", "--to", "lavid", "-o", a.work / f"{t}.json")
        same = (a.work / f"{t}.json").read_bytes() == src.read_bytes()
        q, _ = makd("inspect", a.work / f"{t}.h5", "--quality", "--json")
        o = json.loads(q)["overall"]
        rows.append(f"| {t} | {s:.2f} / {s2:.2f} | {same} | {o['teacher']['min_distance'] / o['random']['min_distance']:.2f} | "
                    f"{o['teacher']['mean_distance'] / o['random']['mean_distance']:.2f} | {o['teacher']['effective_rank']:.1f} | "
                    f"{o['teacher']['indistinguishable_pairs']} |")
    print("| published teacher | import / export s | byte-identical round trip | min class distance (x random) | "
          "mean class distance (x random) | effective rank | indistinguishable pairs |\n|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    args = ["inspect", a.work / "qwen2.5-7b.h5"]
    for t in TEACHERS[1:]:
        args += ["--compare", a.work / f"{t}.h5"]
    out, s = makd(*args, "--json")
    print(f"\ncompare against qwen2.5-7b (the paper's teacher), {s:.2f} s:")
    print("| teacher | argmax agreement | mean JS (bits) | class-distance correlation |\n|---|---|---|---|")
    for c in json.loads(out)["comparisons"]:
        o = c["overall"]
        print(f"| {c['teacher']} | {o['argmax_agreement']:.3f} | {o['mean_js']:.3f} | {o['distance_correlation']:.3f} |")


if __name__ == "__main__":
    main()
