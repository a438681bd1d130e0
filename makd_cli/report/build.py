"""What a report holds, computed by the commands it names, section by section.

Every number comes from the code that prints it elsewhere: the comparison table is ``makd eval``'s
(``evaluate/run.py``: controls, protocols and † marks, seed spread, best and last, ``--paper`` side by side),
the curves are ``makd inspect RUN``'s, the target heatmap and quality report ``makd inspect TARGETS``'s
(``inspect/``). Each section keeps the command that reproduces it. ``render.py`` turns the sections into
HTML or Markdown.
"""

from __future__ import annotations

import io
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from makd_cli.errors import MakdError


@dataclass(frozen=True, kw_only=True)
class ReportConfig:
    runs: list = field(default_factory=list)  # run folders (or checkpoints), as for makd eval
    output: Path = Path("report.html")
    fmt: str = "html"  # html | markdown
    paper: dict = field(default_factory=dict)  # --paper RUN=NUMBER: the reproduction table beside the paper
    data: str | None = None
    device: str = "auto"
    progress: bool = True


@dataclass
class Section:
    title: str
    command: str  # the makd command that reproduces this section
    text: str = ""  # a sentence above the content
    tables: list = field(default_factory=list)  # {"caption", "head": [...], "rows": [[...]], "note"}
    images: list = field(default_factory=list)  # {"name", "png": bytes, "alt"}
    pre: list = field(default_factory=list)  # preformatted blocks (the quality report as the terminal shows it)


def _quote(paths) -> str:
    return " ".join(shlex.quote(str(p)) for p in paths)


def markdown_rows(md: str) -> tuple[list[str], list[list[str]], str]:
    """A Markdown table printed by ``makd eval`` as (head, rows, the text below it)."""
    lines = md.splitlines()
    table = [ln for ln in lines if ln.startswith("|")]
    cells = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in table]
    note = " ".join(ln for ln in lines if ln.strip() and not ln.startswith("|"))
    return cells[0], cells[2:], note


def run_label(checkpoint: str) -> str:
    """``RUN/seedK`` (or ``PARENT/RUN``) of a checkpoint: the folder name alone repeats across runs."""
    return "/".join(Path(checkpoint).parts[-3:-1])


def comparison_sections(cfg: ReportConfig, found: dict) -> list[Section]:
    from makd_cli.evaluate.protocols import side_by_side_markdown
    from makd_cli.evaluate.report import format_markdown

    table, runs = found["table"], _quote(cfg.runs) + (f" --data {shlex.quote(cfg.data)}" if cfg.data else "")
    if table.attrs.get("task") == "detection":  # COCO AP (detection/evaluate.py): its own columns
        head = [str(c) for c in table.columns]
        rows = [[f"{v:.2f}" if isinstance(v, float) else str(v) for v in r] for r in table.itertuples(index=False)]
        return [Section("Comparison (COCO AP)", f"makd eval {runs}", tables=[{"head": head, "rows": rows}])]
    head, rows, note = markdown_rows(format_markdown(table))  # the † note, where there is one, comes below it
    section = Section("Comparison", f"makd eval {runs} --format markdown",
                      text="Test top-1, top-5 and mean per-class accuracy (%), mean ± std over seeds; runs that differ only "
                           "in the seed share a row. The epoch column is the one the checkpoint protocol chose; the last "
                           "column is the last epoch's top-1 (its epoch).",
                      tables=[{"head": head, "rows": rows, "note": note}])
    agreement = []
    for r in found["results"]:
        ag = r.get("aspect_agreement") or {}
        if "mae" in ag:
            auc = f", mean AUC {ag['mean_auc']:.3f}" if ag.get("mean_auc") is not None else ""
            agreement.append(f"{run_label(r['checkpoint'])}: student vs teacher targets: MAE {ag['mae']:.4f}{auc}")
    if agreement:
        section.pre.append("\n".join(agreement))
    sections = [section]
    if cfg.paper or table["selected_by"].nunique() > 1:
        head, rows, note = markdown_rows(side_by_side_markdown(table, cfg.paper))
        flags = "".join(f" --paper {shlex.quote(f'{k}={v}')}" for k, v in cfg.paper.items())
        sections.append(Section("Protocols side by side", f"makd eval {runs} --side-by-side{flags}",
                                text="One row per setting, one top-1 column per checkpoint protocol, and the paper's number.",
                                tables=[{"head": head, "rows": rows, "note": note}]))
    return sections


def _png_of_view(source: Path, view: str, **kw) -> bytes:
    from makd_cli.inspect.run import InspectConfig, run_inspect

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "view.png"
        run_inspect(InspectConfig(source=source, output=out, view=view, terminal=False, **kw), console=Console(file=io.StringIO()))
        return out.read_bytes()


def curves_section(cfg: ReportConfig) -> Section:
    section = Section("Training curves", "\n".join(f"makd inspect {shlex.quote(str(r))} --view curves -o curves-{n}.png"
                                                   for n, r in enumerate(cfg.runs, 1)),
                      text="Class loss, the method's losses and validation top-1 per epoch (dotted: learning-rate drops).")
    for n, run in enumerate(cfg.runs, 1):
        try:
            png = _png_of_view(Path(run), "curves")
        except MakdError as exc:  # a checkpoint without history: say so in its place
            section.pre.append(f"{run}: {exc}")
            continue
        section.images.append({"name": f"curves-{n}.png", "png": png, "alt": f"training curves of {run}"})
    return section


def per_class_section(cfg: ReportConfig, results: list[dict]) -> Section | None:
    rows = [r for r in results if r.get("per_class")]
    if not rows:
        return None
    names = [run_label(r["checkpoint"]) for r in rows]
    classes = list(rows[0]["per_class"])
    body = [[c] + ["-" if r["per_class"].get(c) is None else f"{r['per_class'][c]:.2f}" for r in rows] for c in classes]
    data = f" --data {shlex.quote(cfg.data)}" if cfg.data else ""
    return Section("Per-class accuracy", f"makd eval {_quote(cfg.runs)}{data} --per-class",
                   text="Test accuracy (%) of each class, per checkpoint (each seed on its own).",
                   tables=[{"head": ["class"] + names, "rows": body}])


def target_files(results: list[dict]) -> list[Path]:
    """The training targets of the compared runs that are still where training read them."""
    from makd_cli.formats.checkpoint import load_checkpoint

    found: list[Path] = []
    for r in results:
        path = (load_checkpoint(r["checkpoint"]).get("config") or {}).get("targets")
        if path and Path(path).is_file() and Path(path).resolve() not in [p.resolve() for p in found]:
            found.append(Path(path))
    return found


def target_sections(results: list[dict]) -> list[Section]:
    from makd_cli.inspect.run import InspectConfig, run_inspect
    from makd_cli.quality import format_quality_table

    sections = []
    for n, path in enumerate(target_files(results), 1):
        heat = Section(f"Targets: {path.name}", f"makd inspect {shlex.quote(str(path))} -o heatmap.png",
                       text="The teacher's targets, classes x questions (clustered).",
                       images=[{"name": f"heatmap-{n}.png", "png": _png_of_view(path, "heatmap"), "alt": f"heatmap of {path}"}])
        report = run_inspect(InspectConfig(source=path, view="quality", as_json=True, terminal=False), console=Console(file=io.StringIO()))
        console = Console(file=io.StringIO(), width=110, record=True, color_system=None)
        console.print(format_quality_table(report))
        quality = Section(f"Target quality: {path.name}", f"makd inspect {shlex.quote(str(path))} --quality",
                          text="Do the teacher's targets tell the classes apart, next to random codes of the same shape?",
                          pre=[console.export_text()])
        sections += [heat, quality]
    return sections


def build_report(cfg: ReportConfig) -> list[Section]:
    from makd_cli.evaluate.run import EvalConfig, run_eval

    if not cfg.runs:
        raise MakdError("makd report needs at least one run folder or checkpoint")
    found = run_eval(EvalConfig(checkpoints=list(cfg.runs), data=cfg.data, device=cfg.device, progress=cfg.progress))
    sections = comparison_sections(cfg, found)
    sections.append(curves_section(cfg))
    if found["table"].attrs.get("task") != "detection":
        per_class = per_class_section(cfg, found["results"])
        sections += [per_class] if per_class else []
        sections += target_sections(found["results"])
    return sections
