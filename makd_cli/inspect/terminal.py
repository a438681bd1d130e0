"""Compact views in the terminal: coloured blocks, one per cell."""

from __future__ import annotations

import numpy as np
from rich.text import Text

MAX_ROWS, MAX_COLS = 40, 80


def _colour(v: float) -> str:
    # viridis-like ramp from dark blue through green to yellow
    stops = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=float)
    x = min(max(v, 0.0), 1.0) * (len(stops) - 1)
    i = min(int(x), len(stops) - 2)
    r, g, b = stops[i] + (stops[i + 1] - stops[i]) * (x - i)
    return f"rgb({int(r)},{int(g)},{int(b)})"


def print_block_heatmap(console, mat: np.ndarray, rows: list[str], cols: list[str], title: str = "") -> None:
    lo, hi = float(np.min(mat)), float(np.max(mat))
    span = hi - lo or 1.0
    shown = mat[:MAX_ROWS, :MAX_COLS]
    width = min(24, max((len(r) for r in rows[:MAX_ROWS]), default=4))
    console.print(f"[bold]{title}[/]  (dark {lo:.2f} .. bright {hi:.2f}; {mat.shape[0]} x {mat.shape[1]})")
    for r, row in zip(rows, shown):
        line = Text(f"{r[:width]:>{width}} ")
        for v in row:
            line.append("█", style=_colour((v - lo) / span))
        console.print(line)
    if mat.shape[0] > MAX_ROWS or mat.shape[1] > MAX_COLS:
        console.print(f"(terminal view cut to {MAX_ROWS} x {MAX_COLS}; the picture has all)")
