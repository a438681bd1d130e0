"""How ``makd eval`` prints its results (table, markdown, csv or JSON); called by ``cli.py`` only."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.table import Table

from makd_cli.cli_output import bold
from makd_cli.data.transforms import unreadable_note
from makd_cli.evaluate.evaluators import EVALUATORS
from makd_cli.evaluate.protocols import TEST_MARK, TEST_NOTE, last_cell, mean_std_cell, side_by_side_markdown
from makd_cli.evaluate.report import ALL_OUTPUTS, format_markdown
from makd_cli.evaluate.unseen import print_unseen, unseen_markdown


def show_eval(found: dict, *, split: str, fmt: str, per_class: bool, probe: bool, as_json: bool, console,
              side_by_side: bool = False, paper: dict | None = None) -> None:
    results, table = found["results"], found["table"]
    task = table.attrs.get("task")
    if task and task in EVALUATORS:  # another task's own columns (a detector: COCO AP, detection/evaluate.py)
        return EVALUATORS.get(task).show(found, split=split, fmt=fmt, as_json=as_json, console=console)
    for r in results:  # on stderr, so --json and csv output stay clean
        if r.get("unreadable_images"):
            print(f"makd: {r['checkpoint']}: {unreadable_note(r['unreadable_images'])}", file=sys.stderr)
    if as_json:
        print(json.dumps({"results": results, "table": table.to_dict(orient="records")}, indent=1, default=str))
        return
    if side_by_side or paper:  # the reproduction table: protocols side by side, the paper's number last
        print(side_by_side_markdown(table, paper))
    elif fmt == "markdown":
        print(format_markdown(table))
        if unseen_markdown(table):  # eval --unseen: the held-out runs' table below
            print("\n" + unseen_markdown(table))
    elif fmt == "csv":
        print(table.to_csv(index=False), end="")
    else:
        marked = table["selected_by"].str.contains(TEST_MARK).any()
        t = Table(title=f"{split} accuracy (%)", caption=TEST_NOTE if marked else None)
        differ = list(table.attrs.get("differ", []))  # settings that differ between runs: each value its own row
        left = ("method", "control", "student", "protocol", *differ)
        last = "last_top1" in table  # best and last: the chosen epoch, and the last epoch's top-1 (evaluate/last_epoch.py)
        every = "top1_all_outputs" in table and table["top1_all_outputs"].notna().any()  # MaKD's scoring (runs with a makd term)
        metric_keys = ("top1", "top5", "mean_per_class") + (("top1_all_outputs",) if every else ())
        for col in ("method", "control", "student", "protocol", *differ, "runs", "top-1", "top-5", "per-class",
                    *((ALL_OUTPUTS,) if every else ()), *(("epoch", "last (epoch)") if last else ())):
            # the protocol (--select-by) wraps rather than losing its mark (the test split chose the checkpoint)
            t.add_column(col, justify="left" if col in left else "right", overflow="fold" if col == "protocol" else "ellipsis")
        for _, r in table.iterrows():
            t.add_row(str(r["method"]), str(r["control"]), str(r["student"]), str(r["selected_by"]), *(str(r[k]) for k in differ),
                      str(int(r["runs"])), *(mean_std_cell(r, k) for k in metric_keys),
                      *((str(r["epoch"]), last_cell(r)) if last else ()))
        console.print(t)
        for r in results:
            ag = r.get("aspect_agreement") or {}
            if "mae" in ag:
                auc = f", mean AUC {ag['mean_auc']:.3f}" if ag.get("mean_auc") is not None else ""
                console.print(f"{Path(r['checkpoint']).parent.name}: student vs teacher targets on {split}: MAE {ag['mae']:.4f}{auc}")
            if "worst_group" in r:
                console.print(f"{Path(r['checkpoint']).parent.name}: worst-group accuracy {r['worst_group']:.2f}%")
        print_unseen(table, console)
    if probe:
        _print_probe(results, fmt, console)
    if per_class:
        for r in results:
            console.print(bold(r['checkpoint']))
            for c, a in r["per_class"].items():
                console.print(f"  {c:30s} {'-' if a is None else f'{a:6.2f}'}")


PROBE_COLUMNS = (("linear_top1", "probe top-1"), ("linear_top5", "probe top-5"), ("rank1", "R-1"), ("rank5", "R-5"), ("map", "mAP"))


def _print_probe(results: list[dict], fmt: str, console) -> None:
    rows = [r["probe"] for r in results if r.get("probe")]
    names = [Path(r["checkpoint"]).parent.name or r["checkpoint"] for r in rows]
    if fmt == "markdown":
        print("\n| run | method | " + " | ".join(h for _, h in PROBE_COLUMNS) + " |")
        print("|" + "---|" * (len(PROBE_COLUMNS) + 2))
        for n, r in zip(names, rows):
            print(f"| {n} | {r['method']} | " + " | ".join(f"{r[k]:.2f}" for k, _ in PROBE_COLUMNS) + " |")
    elif fmt == "csv":
        print("\nrun,method," + ",".join(k for k, _ in PROBE_COLUMNS))
        for n, r in zip(names, rows):
            print(f"{n},{r['method']}," + ",".join(f"{r[k]:.4f}" for k, _ in PROBE_COLUMNS))
    else:
        how = {r.get("probe", "quick") for r in rows} | {r.get("retrieval", "train-test") for r in rows}
        probe_words = "SGD probe, last epoch" if "sgd" in how else "logistic-regression probe"
        ret_words = "test queries, leave-one-out in the test split" if "test" in how else "test queries, train gallery"
        t = Table(title=f"linear probe (train -> test; {probe_words}) and retrieval ({ret_words}), %")
        for col in ("run", "method", *(h for _, h in PROBE_COLUMNS)):
            t.add_column(col, justify="left" if col in ("run", "method") else "right")
        for n, r in zip(names, rows):
            t.add_row(n, str(r["method"]), *(f"{r[k]:.2f}" for k, _ in PROBE_COLUMNS))
        console.print(t)
