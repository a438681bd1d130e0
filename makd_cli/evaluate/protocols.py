"""Which checkpoint protocol chose a run's weights (``makd train --select-by``), as ``makd eval`` shows it.

Every table marks a checkpoint chosen on the test split (the papers' protocols) with ``TEST_MARK``:
its test accuracy is an optimistic figure, not a held-out estimate. ``side_by_side_markdown`` puts
the honest protocol (val) and the papers' (test-loss, test-acc) in one row per setting, beside the
paper's number: the reproduction tables of ``examples/paper.mk``.
"""

from __future__ import annotations

import re

import pandas as pd

from makd_cli.errors import MakdError

TEST_MARK = "†"
_PAPER_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?%?(\s|$|±|\()")
TEST_NOTE = (f"{TEST_MARK} checkpoint chosen on the test split (the papers' protocol, `--select-by test-loss|test-acc`): "
             "its test accuracy is optimistic, not a held-out estimate")


def protocol_label(ckpt: dict) -> str:
    """``val``, ``test-loss/5 †``, ``test-acc †``, ``latest`` (MoCo) or ``last epoch`` (a last.pt that is
    not the chosen epoch). Runs from before --select-by chose on validation."""
    sel = ckpt.get("selection") or {"by": "val", "every": 1}
    if "selection" in ckpt and "epoch" in ckpt and ckpt["epoch"] + 1 != sel.get("epoch"):
        return "last epoch"  # an unfinished run's last.pt (none chosen yet, or another epoch): not the protocol's weights
    label = sel["by"] + (f"/{sel['every']}" if sel.get("every", 1) != 1 else "")
    return f"{label} {TEST_MARK}" if sel.get("split") == "test" else label


def parse_paper(items: list[str]) -> dict[str, str]:
    """``--paper RUN=NUMBER`` (RUN: a method, or METHOD.CONTROL for a control) -> {RUN: text}."""
    paper = {}
    for item in items:
        run, sep, number = item.partition("=")
        if not sep or not run.strip() or not number.strip():
            raise MakdError(f"--paper {item!r}: give RUN=NUMBER, e.g. lavid=70.15 or makd.gaussian=79.36")
        # a number first, a note may follow it ("63.07 (LaViD) / 53.83 (MaKD)", as examples/paper.mk gives);
        # or n/a where the paper reports none
        if not _PAPER_NUMBER.match(number.strip()) and number.strip().lower() not in ("n/a", "-"):
            raise MakdError(f"--paper {item!r}: {number.strip()!r} does not start with a number; give RUN=NUMBER "
                            "(e.g. lavid=70.15), or RUN=n/a where the paper has none")
        if run.strip() in paper:
            raise MakdError(f"--paper names {run.strip()!r} twice; give one number per run")
        paper[run.strip()] = number.strip()
    return paper


def check_paper_runs(table: pd.DataFrame, paper: dict[str, str]) -> None:
    """Every ``--paper RUN`` must name a run of the table: a misspelt name is not dropped silently."""
    names = sorted({run_name(row) for _, row in table.iterrows()})
    unknown = [r for r in paper if r not in names]
    if unknown:
        raise MakdError(f"--paper {unknown[0]}: no such run among the checkpoints; the runs are {', '.join(names)}")


def run_name(row) -> str:
    """The name a --paper number is given for: the method, or METHOD.CONTROL (paper.mk's run names)."""
    return row["method"] if row["control"] in ("-", None) else f"{row['method']}.{row['control']}"


def _protocol_order(labels) -> list[str]:
    """The honest protocol first, then the papers' (test-split) ones, then the rest."""
    return sorted(set(labels), key=lambda p: (TEST_MARK in p, p != "val", p))


def mean_std_cell(r, name: str) -> str:
    """A seed-aggregated row's ``name`` as ``mean ± std`` (the mean alone for one run; "-" when the row has none)."""
    if r.get(name) is None or r[name] != r[name]:  # NaN: a metric only some runs have (top-1 over all outputs)
        return "-"
    return f"{r[name]:.2f}" + (f" ± {r[name + '_std']:.2f}" if r["runs"] > 1 else "")


def side_by_side_markdown(table: pd.DataFrame, paper: dict[str, str] | None = None) -> str:
    """One row per setting, one top-1 (and worst-group) column per protocol, and the paper's number.

    The protocols' runs may train on different images (the papers' train on every training image,
    ``--val-fraction 0``), so ``val_fraction`` is part of the protocol column, not of the row."""
    paper = paper or {}
    check_paper_runs(table, paper)
    differ = [c for c in table.attrs.get("differ", []) if c != "val_fraction"]
    keys = ["method", "control"] + [c for c in ("student", "data", "train_per_class", "epochs") if table[c].nunique() > 1] + differ
    protocols = _protocol_order(table["selected_by"])
    worst = "worst_group" in table and table["worst_group"].notna().any()
    last = "last_top1" in table  # best and last (evaluate/last_epoch.py): the last epoch's top-1 (its epoch) beside each protocol's
    every = "top1_all_outputs" in table and table["top1_all_outputs"].notna().any()  # MaKD's scoring beside the class head's
    head = list(keys)
    for p in protocols:
        head += ([f"top-1, {p}"] + ([f"worst group, {p}"] if worst else []) + ([f"top-1 (all outputs), {p}"] if every else [])
                 + ([f"last epoch, {p}"] if last else []))
    head.append("paper")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, group in table.groupby(keys, sort=False, dropna=False):
        first = group.iloc[0]
        cells = [str(first[k]) for k in keys]
        for p in protocols:
            row = group[group["selected_by"] == p]
            metrics = ["top1"] + (["worst_group"] if worst else []) + (["top1_all_outputs"] if every else [])
            for m in metrics:
                if row.empty:
                    cells.append("-")
                    continue
                r = row.iloc[0]
                cell = mean_std_cell(r, m)  # "-": a metric this row lacks (top-1 over all outputs of a run without makd)
                cells.append(cell if cell == "-" else f"{cell} ({int(r['runs'])})")
            if last:
                cells.append("-" if row.empty else last_cell(row.iloc[0]))
        cells.append(paper.get(run_name(first), "-"))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Each cell: mean ± std (runs)" + ("; last epoch: its top-1 (epoch)" if last else "") + ". " + TEST_NOTE + "."]
    return "\n".join(lines)


def last_cell(row) -> str:
    """The last epoch's top-1 (mean ± std over seeds) and its epoch, for the printers."""
    if "last_top1" not in row or row["last_top1"] != row["last_top1"]:
        return "-"
    return f"{mean_std_cell(row, 'last_top1')} ({row['last_epoch']})"
