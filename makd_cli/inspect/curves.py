"""Training curves (makd.txt Appendix A, Figure 6): class loss, aspect loss and validation top-1 per epoch.

Reads ``metrics.jsonl`` of a run folder (one record per epoch from ``makd train``), the folder of a
checkpoint, the seedN/ folders of a multi-seed run, or the history stored in the checkpoint itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from makd_cli.cli_output import bold, styled
from makd_cli.errors import MakdError
from makd_cli.inspect.terminal import sparkline
from makd_cli.inspect.views import ViewRequest, register_view, save_figure
from makd_cli.run_folder import refuse_mixed_run_folder

NOT_TERMS = ("train_loss", "train_ce")


def is_aspect_term(name: str) -> bool:
    """Whether the logged term ``name`` is a method that learns an aspect head (its own declaration)."""
    from makd_cli.methods.base import term_facts

    return bool(term_facts({"method": name, "extra_dim": 1}).get("aspect_head"))


def read_metrics(path: Path) -> list[dict]:
    """The epoch records of a metrics.jsonl, through the shared UTF-8 and JSON Lines readers."""
    from makd_cli.fileio import read_text
    from makd_cli.jsonio import iter_jsonl

    # NaN and infinity read as floats: a diverged run's history is still worth a picture
    records = [rec for _, rec in iter_jsonl(read_text(path, "metrics file"), str(path), "epoch record of `makd train`",
                                            allow_nonfinite=True)]
    if not records:
        raise MakdError(f"{path} is empty: the run has not finished an epoch yet")
    return check_history(records, str(path))


def check_history(records, where: str) -> list[dict]:
    """Epoch records whose epoch is an integer and whose plotted values are numbers; else one line."""
    if not isinstance(records, list):
        raise MakdError(f"{where}: the training history is not a list of epoch records")
    for n, rec in enumerate(records, 1):
        at = f"{where}: record {n}"
        if not isinstance(rec, dict) or "epoch" not in rec:
            raise MakdError(f"{at} has no epoch; metrics.jsonl holds one record per epoch from `makd train`")
        if isinstance(rec["epoch"], bool) or not isinstance(rec["epoch"], int):
            raise MakdError(f"{at}: epoch must be an integer, found {str(rec['epoch'])[:40]!r}")
        for key, value in rec.items():
            plotted = key in ("lr", "val_top1") or key.startswith("train_")
            if plotted and value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise MakdError(f"{at}: {key} must be a number, found {str(value)[:40]!r}")
    return records


def find_runs(source: Path) -> list[tuple[str, list[dict]]]:
    """(label, records) per run found at ``source``."""
    if source.is_dir():
        refuse_mixed_run_folder(source)  # one run or seedN/ runs, never both
        if (source / "metrics.jsonl").exists():
            return [(source.name, read_metrics(source / "metrics.jsonl"))]
        seeds = sorted(source.glob("seed*/metrics.jsonl"))
        if seeds:
            return [(p.parent.name, read_metrics(p)) for p in seeds]
        raise MakdError(f"{source} holds no metrics.jsonl; give a run folder written by `makd train`")
    if source.suffix == ".jsonl":
        return [(source.parent.name, read_metrics(source))]
    if source.suffix == ".pt":
        beside = source.parent / "metrics.jsonl"
        if beside.exists():
            return [(source.parent.name, read_metrics(beside))]
        from makd_cli.formats.checkpoint import load_checkpoint

        history = load_checkpoint(source).get("history")
        if not history:
            raise MakdError(f"{source} has no training history and no metrics.jsonl beside it")
        return [(source.parent.name, check_history(history, str(source)))]
    raise MakdError(f"--view curves reads a run folder, a checkpoint or a metrics.jsonl, not {source.name}")


def term_names(runs: list[tuple[str, list[dict]]]) -> list[str]:
    names: list[str] = []
    for _, recs in runs:
        for rec in recs:
            for k in rec:
                if k.startswith("train_") and k not in NOT_TERMS and k[6:] not in names:
                    names.append(k[6:])
    return names


def series(recs: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    ep = np.array([r["epoch"] for r in recs], dtype=float)
    val = np.array([r.get(key, np.nan) if r.get(key) is not None else np.nan for r in recs], dtype=float)
    return ep, val


@register_view("curves", help="class loss, aspect loss and validation top-1 per epoch of a run")
def curves_view(req: ViewRequest) -> dict:
    runs = find_runs(req.source)
    terms = term_names(runs)
    if req.output:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        drops: set[float] = set()
        any_val = False
        for n, (label, recs) in enumerate(runs):
            col = colours[n % len(colours)]
            ep, ce = series(recs, "train_ce")
            axes[0].plot(ep, ce, "-o", ms=3, color=col, label=label)
            for k, term in enumerate(terms):
                ep, v = series(recs, f"train_{term}")
                if np.all(np.isnan(v)):
                    continue
                axes[1].plot(ep, v, ["-o", "--s", ":^"][k % 3], ms=3, color=col,
                             label=f"{label}: {term}" if len(runs) > 1 else term)
            ep, acc = series(recs, "val_top1")
            if not np.all(np.isnan(acc)):
                axes[2].plot(ep, acc, "-o", ms=3, color=col, label=label)
                any_val = True
            # a record's lr is the one the next epoch uses: a drop between records e-1 and e starts at e+1
            _, lr = series(recs, "lr")
            drops.update(float(e) + 0.5 for e in (ep[1:][np.diff(lr) < 0] if len(lr) > 1 else []))
        for e in sorted(drops):  # learning-rate drops, dotted on every panel
            for ax in axes:
                ax.axvline(e, color="grey", ls=":", lw=0.8)
        axes[0].set_title("class loss (train CE)")
        named = [t for t in terms if is_aspect_term(t)]
        axes[1].set_title("aspect loss (weighted)" if named and len(named) == len(terms) else
                          "method losses (weighted)" if terms else "aspect loss")
        if not terms:
            axes[1].text(0.5, 0.5, "no aspect loss:\ntrained with --method ce", ha="center", va="center", transform=axes[1].transAxes)
        axes[2].set_title("validation top-1 (%)")
        if not any_val:
            axes[2].text(0.5, 0.5, "no validation split\n(--val-fraction 0)", ha="center", va="center", transform=axes[2].transAxes)
        for ax in axes:
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0] and (len(runs) > 1 or ax is axes[1]):
                ax.legend(fontsize=7)
            ax.xaxis.get_major_locator().set_params(integer=True)
        fig.suptitle(f"training curves of {req.source}" + ("  (dotted: learning-rate drops)" if drops else ""), fontsize=10)
        fig.tight_layout()
        save_figure(fig, req.output)
    result_runs = []
    for label, recs in runs:
        last = recs[-1]
        best = [r["val_top1"] for r in recs if r.get("val_top1") is not None]
        result_runs.append({"run": label, "epochs": len(recs), "last": last, "best_val_top1": max(best) if best else None,
                            "series": {k: [r.get(k) for r in recs] for k in ["epoch", "lr", "train_loss", "train_ce", "val_top1"]
                                       + [f"train_{t}" for t in terms]}})
    if req.terminal and not req.as_json:
        for r in result_runs:
            s = r["series"]
            req.console.print(styled(bold(r['run']), f": {r['epochs']} epochs"
                                     + (f", best val top-1 {r['best_val_top1']:.2f}%" if r["best_val_top1"] is not None else "")), highlight=False)
            for key in ["train_ce"] + [f"train_{t}" for t in terms] + ["val_top1"]:
                vals = [v for v in s[key] if v is not None]
                if vals:
                    req.console.print(f"  {key:14s} {sparkline(s[key][-60:])}  {vals[0]:.4g} -> {vals[-1]:.4g}", highlight=False)
    return {"view": "curves", "source": str(req.source), "terms": terms, "runs": result_runs,
            "output": str(req.output) if req.output else None}
