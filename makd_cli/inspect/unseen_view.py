"""Unseen-class confusion (``makd inspect RUN --view unseen``) of a run trained with ``--hold-out-classes``.

Which held-out class is mistaken for which (unseen top-1: the held-out classes' test images scored
against the held-out classes' signatures, ``evaluate/unseen.py``), next to how far apart the
teacher's signatures of the two classes are. A mistake between two classes whose signatures nearly
agree is the teacher's (it cannot tell them apart); one between distant signatures is the
student's (it did not learn to read those answers from the images). A multi-seed run folder sums
the seeds' confusions and averages their signature distances (a control's codes differ per seed).
"""

from __future__ import annotations

import numpy as np

from makd_cli.errors import MakdError
from makd_cli.inspect.views import ViewRequest, register_view, save_figure


def unseen_confusion(req: ViewRequest) -> dict:
    """The summed confusion, mean signature distances and per-class accuracy over the source's checkpoints."""
    from makd_cli.device import resolve_device
    from makd_cli.evaluate.unseen_run import unseen_for_checkpoint
    from makd_cli.run_folder import run_checkpoints

    opts = req.options or {}
    device = str(resolve_device(opts.get("device") or "auto"))
    targets = opts.get("targets")
    found = []
    for path in run_checkpoints(req.source):
        u = unseen_for_checkpoint(str(path), opts.get("data"), str(targets) if targets else None, device)
        if u is None:
            raise MakdError(f"{path} holds no classes out; --view unseen reads runs trained with `makd train --hold-out-classes`")
        found.append(u)
    held = found[0]["held_out"]
    if any(u["held_out"] != held for u in found):
        raise MakdError(f"the runs under {req.source} hold out different classes; inspect them one at a time")
    confusion = np.sum([np.asarray(u["unseen_confusion"]) for u in found], axis=0)
    distances = np.mean([np.asarray(u["signature_distances"]) for u in found], axis=0)
    rate = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    mistakes = []
    for i, name in enumerate(held):
        off = [(rate[i, j], j) for j in range(len(held)) if j != i]
        r, j = max(off) if off else (0.0, i)
        mistakes.append({"class": name, "top1": float(100 * rate[i, i]), "mistaken_for": held[j] if off else None,
                         "mistaken_share": float(100 * r), "signature_distance": float(distances[i, j])})
    return {"checkpoints": len(found), "method": found[0]["method"], "kind": found[0]["kind"], "held_out": held,
            "confusion": confusion.tolist(), "signature_distances": distances.round(4).tolist(),
            "unseen_top1": float(np.mean([u["unseen_top1"] for u in found])), "chance": found[0]["chance_unseen_top1"],
            "mistakes": mistakes}


def draw(result: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    held = result["held_out"]
    conf = np.asarray(result["confusion"], dtype=float)
    rate = 100 * conf / np.maximum(conf.sum(axis=1, keepdims=True), 1)
    dist = np.asarray(result["signature_distances"])
    n = len(held)
    fig, axes = plt.subplots(1, 2, figsize=(4 + 1.6 * n, 2 + 0.7 * n))
    for ax, m, title, fmt, cmap in ((axes[0], rate, f"unseen confusion, % of row ({result['checkpoints']} run(s))", "{:.0f}", "Blues"),
                                    (axes[1], dist, "teacher signature distance (RMS)", "{:.2f}", "Oranges")):
        ax.imshow(m, cmap=cmap)
        ax.set_xticks(range(n), held, rotation=45, ha="right")
        ax.set_yticks(range(n), held)
        ax.set_title(title, fontsize=9)
        for i in range(n):
            for j in range(n):
                ax.text(j, i, fmt.format(m[i, j]), ha="center", va="center", fontsize=8)
    axes[0].set_xlabel("predicted")
    axes[0].set_ylabel("true")
    fig.suptitle(f"{result['method']} ({result['kind']}): unseen top-1 {result['unseen_top1']:.1f}% (chance {result['chance']:.1f}%)",
                 fontsize=10)
    save_figure(fig, path)


@register_view("unseen", help="held-out classes: which unseen class is mistaken for which, beside their signatures' distance")
def unseen_view(req: ViewRequest) -> dict:
    result = unseen_confusion(req)
    if req.output is not None:
        draw(result, req.output)
    if req.terminal:
        from rich.table import Table

        t = Table(title=f"unseen top-1 {result['unseen_top1']:.1f}% (chance {result['chance']:.1f}%), {result['checkpoints']} run(s)")
        for col in ("held-out class", "top-1 %", "most mistaken for", "share %", "signature distance"):
            t.add_column(col, justify="left" if col in ("held-out class", "most mistaken for") else "right")
        for m in result["mistakes"]:
            t.add_row(m["class"], f"{m['top1']:.1f}", str(m["mistaken_for"] or "-"), f"{m['mistaken_share']:.1f}",
                      f"{m['signature_distance']:.3f}")
        req.console.print(t)
    return result
