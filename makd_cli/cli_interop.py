"""``makd import`` and ``makd export``: other projects' files (LaViD's question sets and targets) to and from
makd's formats. Only parsing and printing; the jobs live in ``makd_cli.interop``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from makd_cli.cli_output import emit as _emit, out

import_app = typer.Typer(help="Read other projects' files (LaViD's question sets and targets) into makd's formats.", no_args_is_help=True)
export_app = typer.Typer(help="Write makd's files in other projects' formats (LaViD's targets JSON).", no_args_is_help=True)


@import_app.command("questions")
def import_questions(
    source: Path = typer.Argument(..., help="LaViD question file (questions/<dataset>/chat_50-5.txt)."),
    output: Path = typer.Option(..., "-o", "--output", help="questions.jsonl to write."),
    fmt: str = typer.Option("lavid", "--from", help="Format of SOURCE: lavid (LaViD's question blocks), makd (MaKD's yes/no questions, one per line)."),
    dataset: Optional[str] = typer.Option(None, "--lavid-dataset", help="LaViD's dataset name, which adds placeholder phrases as the "
                                                                      "reference does (caltech101: 'the object'; default: SOURCE's folder name)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
):
    """Read a LaViD question file: "class" becomes <object> exactly where the reference substitutes the class name."""
    from makd_cli.interop.run import ImportQuestionsConfig, import_questions as run

    report = run(ImportQuestionsConfig(source=source, output=output, fmt=fmt, dataset=dataset))
    _emit(report, as_json, lambda: out.print(
        f"read {report['questions']} " + (f"questions x {report['options']} options" if report["options"] else "yes/no questions")
        + f" from {source} -> {output} "
        + (f"({report['substitutions']} placeholder(s) for {', '.join(map(repr, report['phrases']))})" if report["phrases"] else ""),
        highlight=False, soft_wrap=True))


@import_app.command("targets")
def import_targets(
    source: Path = typer.Argument(..., help="LaViD targets (questions/<dataset>/logits/<model>_chat_50-5.json)."),
    output: Path = typer.Option(..., "-o", "--output", help="targets.h5 to write."),
    classes: Optional[Path] = typer.Option(None, "--classes", help="--from lavid: the dataset's class list (`makd data classes`), the targets' class order."),
    questions: Path = typer.Option(..., "--questions", help="questions.jsonl from `makd import questions` of the file these targets answer."),
    fmt: str = typer.Option("lavid", "--from", help="Format of SOURCE: lavid ({class: Q x M}), lavid-images ({image: Q p(yes)}, with --data)."),
    data: Optional[str] = typer.Option(None, "--data", help="--from lavid-images: the dataset (NAME:PATH) whose images the rows describe."),
    split: str = typer.Option("train", "--split", help="--from lavid-images: the split whose images get rows (train or test)."),
    class_map: Optional[Path] = typer.Option(None, "--class-map", help="JSON {\"makd class\": \"LaViD name\"} for names that do not match "
                                                                      "after normalising case, spaces and underscores."),
    teacher: Optional[str] = typer.Option(None, "--teacher-name", help="Teacher recorded in the targets (default: lavid:<file stem>)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
):
    """Read a LaViD targets file ({class: Q x M probabilities}) into targets.h5, the probabilities kept exactly."""
    from makd_cli.interop.run import ImportTargetsConfig, import_targets as run

    report = run(ImportTargetsConfig(source=source, output=output, classes=classes, questions=questions, fmt=fmt,
                                     class_map=class_map, teacher=teacher, data=data, split=split))

    def render():
        if "images" in report:
            out.print(f"image_yesno targets for {report['images']} images x {report['questions']} questions -> {output} "
                      f"({report['unused_images']} rows of other images left out)", highlight=False, soft_wrap=True)
            return
        out.print(f"class_mcq targets for {report['classes']} classes x {report['questions']} questions x {report['options']} options "
                  f"-> {output}", highlight=False, soft_wrap=True)
        if report["renamed"]:
            out.print(f"  {len(report['renamed'])} class(es) matched a differently written LaViD name", highlight=False, soft_wrap=True)
        if report["unused_lavid_classes"]:
            out.print(f"  unused LaViD classes: {', '.join(report['unused_lavid_classes'])}", highlight=False, soft_wrap=True)

    _emit(report, as_json, render)


@export_app.command("targets")
def export_targets(
    source: Path = typer.Argument(..., help="A class_mcq targets.h5."),
    output: Path = typer.Option(..., "-o", "--output", help="File to write."),
    fmt: str = typer.Option("lavid", "--to", help="Format to write: lavid (the reference code's {class: Q x M} JSON), lavid-images ({image: Q p(yes)})."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
):
    """Write targets for the reference code; a LaViD file imported and exported comes back byte for byte."""
    from makd_cli.interop.run import ExportTargetsConfig, export_targets as run

    report = run(ExportTargetsConfig(source=source, output=output, fmt=fmt))
    _emit(report, as_json, lambda: out.print(f"wrote {report['classes'] if 'classes' in report else report['images']} "
                                             f"{'classes' if 'classes' in report else 'images'} x {report['questions']} questions -> {output}",
                                             highlight=False, soft_wrap=True))


@import_app.command("descriptions")
def import_descriptions(
    source: Path = typer.Argument(..., help="LEAD++ text_description/output_<dataset>.csv, a DCLIP descriptor JSON or LaBo class2concepts.json."),
    output: Path = typer.Option(..., "-o", "--output", help="questions.jsonl to write."),
    fmt: str = typer.Option("lead-pp", "--from", help="Format of SOURCE: lead-pp (LEAD++'s CSV), dclip ({class: [descriptors]}), "
                                                      "labo ({class: [concepts]})."),
    as_kind: str = typer.Option("descriptions", "--as", help="descriptions: one per class (extract --clip, LEAD); questions (dclip, "
                                                             "labo): every distinct descriptor as a yes/no question (MaKD's extract)."),
    classes: Optional[Path] = typer.Option(None, "--classes", help="The dataset's class list: the file's names are matched to it "
                                                                   "(case, spaces, underscores) and the descriptions take makd's names."),
    class_map: Optional[Path] = typer.Option(None, "--class-map", help="JSON {\"makd class\": \"name in the file\"} for names that do not match."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
):
    """Read published class descriptions or concepts (LEAD++, DCLIP, LaBo) into a questions file."""
    from makd_cli.interop.run import ImportDescriptionsConfig, import_descriptions as run

    report = run(ImportDescriptionsConfig(source=source, output=output, fmt=fmt, as_kind=as_kind, classes=classes, class_map=class_map))
    count = report.get("descriptions", report.get("questions"))
    _emit(report, as_json, lambda: out.print(f"read {count} {report['kind']} item(s) from {source} ({fmt}) -> {output}"
                                             + (f"; {len(report['renamed'])} class name(s) matched to makd's" if report.get("renamed") else ""),
                                             highlight=False, soft_wrap=True))


@export_app.command("descriptions")
def export_descriptions(
    source: Path = typer.Argument(..., help="A questions file of descriptions (`makd import descriptions`)."),
    output: Path = typer.Option(..., "-o", "--output", help="File to write."),
    fmt: str = typer.Option("lead-pp", "--to", help="lead-pp (LEAD++'s CSV), dclip or labo (the JSON the descriptions came from)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
):
    """Write descriptions back in the file format they came from (LEAD++'s CSV comes back byte for byte)."""
    from makd_cli.interop.run import ExportDescriptionsConfig, export_descriptions as run

    report = run(ExportDescriptionsConfig(source=source, output=output, fmt=fmt))
    _emit(report, as_json, lambda: out.print(f"wrote {report['descriptions']} descriptions -> {output}", highlight=False, soft_wrap=True))
