"""Seconds to render a 200-class x 50-question targets heatmap (and one question, one class) to PNG.

    OMP_NUM_THREADS=1 python bench/inspect_render.py            # in-process render time, 3 repeats
    OMP_NUM_THREADS=1 python bench/inspect_render.py --cli      # also the whole `makd inspect` command

The targets are random class_yesno and class_mcq files written to a temporary folder with long
class names and question texts (what a CUB-sized run has). The goal: a heatmap in under 5 s.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402

from makd_cli.formats.questions import Question, write_questions  # noqa: E402
from makd_cli.formats.targets import Targets, write_targets  # noqa: E402
from makd_cli.inspect.run import InspectConfig, run_inspect  # noqa: E402


def make_files(folder: Path, C: int, Q: int, M: int = 5) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    classes = [f"{i:03d}.Long_Winded_Bird_Species_Name_{i}" for i in range(C)]
    yn = [Question("yesno", f"Does the <object> have a distinctly coloured feature number {j} on its wings or back?") for j in range(Q)]
    mc = [Question("mcq", f"What colour is part {j} of the <object>?", [f"colour {k}" for k in range(M)]) for j in range(Q)]
    write_questions(folder / "yesno.jsonl", yn)
    write_questions(folder / "mcq.jsonl", mc)
    z = rng.standard_normal((C, Q))
    write_targets(folder / "yesno.h5", Targets("class_yesno", classes, [q.id for q in yn], 1 / (1 + np.exp(-2 * z)), teacher="bench"))
    z = rng.standard_normal((C, Q, M)) * 2
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    write_targets(folder / "mcq.h5", Targets("class_mcq", classes, [q.id for q in mc], p, teacher="bench",
                                             option_labels=[str(k + 1) for k in range(M)]))
    return {"yesno": folder / "yesno.h5", "mcq": folder / "mcq.h5", "yesno_q": folder / "yesno.jsonl", "mcq_q": folder / "mcq.jsonl"}


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--classes", type=int, default=200)
    ap.add_argument("--questions", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cli", action="store_true", help="also time the whole command in a fresh process (imports included)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        f = make_files(folder, args.classes, args.questions)
        console = Console(file=io.StringIO())

        def run(view, src, out, questions=None, **kw):
            return lambda: run_inspect(InspectConfig(source=src, output=folder / out, view=view, question=kw.get("question"),
                                                     class_name=kw.get("class_name"), questions=questions, terminal=False),
                                       console=console)

        cases = [
            ("heatmap, class_yesno, question texts", run("heatmap", f["yesno"], "h.png", f["yesno_q"])),
            ("heatmap, class_mcq, question texts", run("heatmap", f["mcq"], "hm.png", f["mcq_q"])),
            ("question, class_mcq", run("question", f["mcq"], "q.png", f["mcq_q"], question="1")),
            ("class, class_yesno", run("class", f["yesno"], "c.png", f["yesno_q"], class_name="000.Long_Winded_Bird_Species_Name_0")),
        ]
        print(f"{args.classes} classes x {args.questions} questions; {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}")
        print(f"{'view':40s} {'best s':>8s} {'median s':>9s}  png size")
        for name, fn in cases:
            times = timed(fn, args.repeats)
            png = sorted(folder.glob("*.png"), key=lambda p: p.stat().st_mtime)[-1]
            print(f"{name:40s} {min(times):8.2f} {float(np.median(times)):9.2f}  {png.stat().st_size // 1024} KB")
        if args.cli:
            cmd = [sys.executable, "-m", "makd_cli", "inspect", str(f["yesno"]), "--questions", str(f["yesno_q"]),
                   "-o", str(folder / "cli.png"), "--no-terminal"]
            times = timed(lambda: subprocess.run(cmd, check=True, capture_output=True), args.repeats)
            print(f"{'makd inspect (heatmap, whole command)':40s} {min(times):8.2f} {float(np.median(times)):9.2f}")


if __name__ == "__main__":
    main()
