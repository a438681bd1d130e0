"""The ``makd inspect`` job: choose the view and run it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from makd_cli.errors import MakdError
from makd_cli.fileio import check_outputs_distinct
from makd_cli.inspect.views import VIEWS, ViewRequest
from makd_cli.job_paths import inspect_inputs


def _auto_view(source: Path) -> str:
    if source.is_dir() or source.suffix == ".pt":
        return "curves"
    return "heatmap"


@dataclass(frozen=True, kw_only=True)
class InspectConfig:
    source: Path  # targets.h5, a checkpoint or a run folder
    output: Path | None = None  # picture to write (.png/.svg/.pdf)
    view: str = "auto"
    question: str | None = None
    class_name: str | None = None
    top: int | None = None
    questions: Path | None = None  # questions.jsonl, for texts and options
    terminal: bool = True  # also draw a compact view on the console
    as_json: bool = False
    options: dict = field(default_factory=dict)  # view-specific extras (data, images, compare, ...)


def run_inspect(cfg: InspectConfig, *, console) -> dict:
    """The chosen view's numbers; terminal drawings go to ``console``."""
    from makd_cli.fileio import check_output_path, is_stdio, require_file

    source, output, view, top, questions = Path(cfg.source), cfg.output, cfg.view, cfg.top, cfg.questions
    if is_stdio(source):
        require_file(source, "inspect's SOURCE (a targets.h5, checkpoint or run folder)")  # refuses `-`: binary
    if output is not None and is_stdio(output):
        check_output_path(output, "a picture")  # refuses `-`: a picture is binary
    if not source.exists():
        raise MakdError(f"{source} does not exist; give a targets.h5, a checkpoint or a run folder")
    if top is not None and top < 1:
        raise MakdError("--top must be at least 1")
    options = dict(cfg.options or {})
    if options.get("limit") is not None and options["limit"] < 1:
        raise MakdError("--limit must be at least 1")
    if output and Path(output).suffix.lower() not in (".png", ".svg", ".pdf"):
        raise MakdError(f"{output}: pictures are written as .png, .svg or .pdf")
    check_outputs_distinct(inspect_inputs(cfg), {"-o": output, "--drop-low-entropy": options.get("drop_low_entropy")})
    name = _auto_view(source) if view == "auto" else view
    if questions and source.is_file() and source.suffix != ".pt":  # texts from another file would mislabel every question
        from makd_cli.formats.targets import check_questions_file, read_targets

        check_questions_file(read_targets(source), Path(questions), where=str(source))
    req = ViewRequest(source, Path(output) if output else None, console, cfg.question, cfg.class_name, top,
                      Path(questions) if questions else None, cfg.terminal, cfg.as_json, options)
    return VIEWS.get(name)(req)  # the view's numbers; cli.py prints them (--json) or says where the picture went
