"""Compact views in the terminal: coloured blocks, one per cell."""

from __future__ import annotations

import numpy as np
from rich.text import Text

from makd_cli.cli_output import bold, styled

MAX_ROWS, MAX_COLS = 40, 80


def _colour(v: float) -> str:
    # viridis-like ramp from dark blue through green to yellow
    stops = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=float)
    x = min(max(v, 0.0), 1.0) * (len(stops) - 1)
    i = min(int(x), len(stops) - 2)
    r, g, b = stops[i] + (stops[i + 1] - stops[i]) * (x - i)
    return f"rgb({int(r)},{int(g)},{int(b)})"


def print_block_heatmap(console, mat: np.ndarray, rows: list[str], cols: list[str], title: str = "",
                        cell_width: int = 1, lo: float | None = None, hi: float | None = None) -> None:
    """One coloured block per cell; with ``cell_width`` > 1 a header names the columns and cells show values."""
    lo = float(np.min(mat)) if lo is None else lo
    hi = float(np.max(mat)) if hi is None else hi
    span = hi - lo or 1.0
    shown = mat[:MAX_ROWS, : MAX_COLS // cell_width]
    width = min(24, max((len(r) for r in rows[:MAX_ROWS]), default=4))
    console.print(styled(bold(title), f"  (dark {lo:.2f} .. bright {hi:.2f}; {mat.shape[0]} x {mat.shape[1]})"), highlight=False)
    if cell_width > 1:
        console.print(" " * (width + 1) + "".join(f"{str(c)[:cell_width - 1]:^{cell_width}}" for c in cols[: shown.shape[1]]),
                      highlight=False)
    for r, row in zip(rows, shown):
        line = Text(f"{r[:width]:>{width}} ")
        for v in row:
            frac = (v - lo) / span
            if cell_width > 1:
                label = f"{v:.2f}"[: cell_width - 1].center(cell_width)
                line.append(label, style=f"{'black' if frac > 0.5 else 'white'} on {_colour(frac)}")
            else:
                line.append("█", style=_colour(frac))
        console.print(line)
    if mat.shape[0] > shown.shape[0] or mat.shape[1] > shown.shape[1]:
        console.print(f"(terminal view cut to {shown.shape[0]} x {shown.shape[1]}; the picture has all)")


_SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values) -> str:
    """One character per value, low to high; NaN shows as a space."""
    v = np.asarray([np.nan if x is None else x for x in values], dtype=float)
    if v.size == 0 or np.all(np.isnan(v)):
        return ""
    lo, hi = np.nanmin(v), np.nanmax(v)
    span = hi - lo or 1.0
    return "".join(" " if np.isnan(x) else _SPARK[min(int((x - lo) / span * len(_SPARK)), len(_SPARK) - 1)] for x in v)


def bar(value: float, width: int = 20, lo: float = 0.0, hi: float = 1.0) -> str:
    """A horizontal bar of ``width`` cells for value in [lo, hi], with eighth-cell resolution."""
    frac = 0.0 if hi == lo else min(max((value - lo) / (hi - lo), 0.0), 1.0)
    eighths = int(round(frac * width * 8))
    full, part = divmod(eighths, 8)
    return ("█" * full + (" ▏▎▍▌▋▊▉"[part] if part else "")).ljust(width)


def colour_of(v: float) -> str:
    """The viridis-like colour of a value in [0, 1] (the terminal heatmap's ramp)."""
    return _colour(v)
