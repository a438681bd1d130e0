"""The ``makd gen-questions`` job: load the LLM, generate by kind, write the questions file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from makd_cli.errors import MakdError
from makd_cli.fileio import check_outputs_distinct
from makd_cli.formats.questions import read_classes, write_questions
from makd_cli.progress import progress_bar
from makd_cli.questions.generate import generate_descriptions, generate_mcq, generate_yesno
from makd_cli.teachers.registry import load_llm


@dataclass(frozen=True, kw_only=True)
class GenQuestionsConfig:
    """Everything ``makd gen-questions`` takes (the flags of the same names)."""

    classes: Path  # class list, one name per line
    output: Path  # questions file to write (JSONL)
    llm: str  # alias, .gguf path, hub id or API model name
    kind: str = "mcq"  # mcq | yesno | description
    n: int = 20
    options: int = 5  # answer options per mcq question
    select: int | None = None  # yesno: let the LLM select and rank this many of n
    backend: str = "llama.cpp"
    api_base: str | None = None
    seed: int = 0
    retries: int = 4
    temperature: float = 0.8
    max_tokens: int = 70  # description: CLIP token limit
    threads: int | None = None
    progress: bool = True
    backend_options: dict = field(default_factory=dict)  # options the chosen backend declares (--concurrency ...)
    prompt_class_names: str = "folder"  # --class-names: the names the writer's prompt lists (recipes/class_names)


def run_gen_questions(cfg: GenQuestionsConfig) -> dict:
    """Generate, validate and write the questions; returns the report (kept, rejected by reason, notes)."""
    kind, n, m, select, seed, retries, temperature = cfg.kind, cfg.n, cfg.options, cfg.select, cfg.seed, cfg.retries, cfg.temperature
    output, max_tokens = cfg.output, cfg.max_tokens
    check_outputs_distinct({"--classes": cfg.classes, "--llm": cfg.llm}, {"-o": output})
    classes = read_classes(cfg.classes)
    if cfg.prompt_class_names != "folder":
        from makd_cli.recipes.class_names import prompt_names

        if kind == "description":  # descriptions are stored under their class's name: it must stay makd's
            raise MakdError("--class-names applies to mcq and yesno questions; descriptions keep the class list's names")
        classes = list(dict.fromkeys(prompt_names(cfg.prompt_class_names, classes)))  # Caltech's two face folders: one "face"
    if n < 1:
        raise MakdError("-n must be at least 1")
    if kind == "mcq" and not 2 <= m <= 9:
        raise MakdError("--options must be between 2 and 9")
    if select is not None and (kind != "yesno" or not 1 <= select <= n):
        raise MakdError("--select takes yesno questions and a number between 1 and -n")
    if retries < 0:
        raise MakdError("--retries must be 0 or more")
    if temperature < 0:
        raise MakdError("--temperature must be 0 or more")
    llm = load_llm(cfg.llm, cfg.backend, threads=cfg.threads, seed=seed, api_base=cfg.api_base, **cfg.backend_options)
    total = len(classes) if kind == "description" else n
    with progress_bar(f"{kind} questions", total, cfg.progress) as advance:
        step = lambda kept, attempts: advance(completed=kept, info=f"{attempts} tries")  # noqa: E731
        if kind == "mcq":
            questions, report = generate_mcq(llm, classes, n, m, seed, retries, temperature, step)
        elif kind == "yesno":
            questions, report = generate_yesno(llm, classes, n, select, 0, seed, retries, temperature, step)
        else:
            questions, report = generate_descriptions(llm, classes, max_tokens, seed, retries, temperature, step)
    if not questions:
        raise MakdError(f"{llm.name} wrote no valid {kind} question in {report.attempts} tries "
                        f"({', '.join(f'{k}: {v}' for k, v in report.rejected.most_common(3))}); use a larger model or raise --retries")
    write_questions(output, questions)
    return {**report.to_dict(), "output": str(output), "model": llm.name}
