"""The ``makd gen-questions`` job: load the LLM, generate by kind, write the questions file."""

from __future__ import annotations

from pathlib import Path

from makd_cli.errors import MakdError
from makd_cli.formats.questions import read_classes, write_questions
from makd_cli.progress import progress_bar
from makd_cli.questions.generate import generate_descriptions, generate_mcq, generate_yesno
from makd_cli.teachers.registry import load_llm


def run_gen_questions(classes_path: Path, output: Path, kind: str, n: int, m: int, select: int | None, llm_spec: str,
                      backend: str, api_base: str | None, seed: int, retries: int, temperature: float,
                      max_tokens: int, threads: int | None, progress: bool = True, backend_options: dict | None = None) -> dict:
    classes = read_classes(classes_path)
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
    llm = load_llm(llm_spec, backend, threads=threads, seed=seed, api_base=api_base, **(backend_options or {}))
    total = len(classes) if kind == "description" else n
    with progress_bar(f"{kind} questions", total, progress) as advance:
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
