"""The ``makd extract`` job: pick the teacher from the flags and run its driver."""

from __future__ import annotations

from pathlib import Path

from makd_cli.errors import MakdError
from makd_cli.fileio import sha256_file
from makd_cli.formats.questions import read_classes, read_questions
from makd_cli.progress import progress_bar


def _class_list(classes: Path | None, data: str | None) -> list[str]:
    if classes is not None:
        return read_classes(classes)
    if data is not None:
        from makd_cli.data import load_dataset

        return list(load_dataset(data).classes)
    raise MakdError("give the classes: --classes FILE or --data DATASET")


def run_extract(*, output: Path, questions: Path | None, classes: Path | None, data: str | None, llm: str | None,
                mllm: str | None, clip: str | None, teacher: str | None, backend: str, prompt_layout: str, labels: str,
                temperature: float, restart: bool, seed: int, threads: int | None, progress: bool = True) -> dict:
    chosen = [name for name, v in (("--llm", llm), ("--mllm", mllm), ("--clip", clip), ("--teacher", teacher)) if v]
    if len(chosen) != 1:
        raise MakdError("choose exactly one teacher: --llm MODEL, --mllm MODEL, --clip MODEL or --teacher random|word-embedding"
                        + (f" (got {', '.join(chosen)})" if chosen else ""))
    if labels not in ("digits", "letters"):
        raise MakdError("--labels must be digits or letters")
    if teacher is not None:
        from makd_cli.teachers.controls import run_control_teacher

        return run_control_teacher(teacher, output=output, questions=questions, classes=_class_list(classes, data), seed=seed)
    if mllm is not None or clip is not None:
        raise MakdError(f"{chosen[0]} (image teachers) is not available in this build of makd; use --llm")
    if questions is None:
        raise MakdError("--llm needs --questions (a file from `makd gen-questions`)")
    qs = read_questions(questions)
    class_names = _class_list(classes, data)
    from makd_cli.extract.class_options import LAYOUTS, extract_class_answers
    from makd_cli.teachers.registry import load_llm

    if prompt_layout not in LAYOUTS:
        raise MakdError(f"--prompt-layout {prompt_layout!r} is unknown; choose {' or '.join(LAYOUTS)}")
    model = load_llm(llm, backend, threads=threads, seed=seed)
    units = len(class_names) if prompt_layout == "paper" else len(qs)
    with progress_bar(f"extract ({prompt_layout})", units, progress) as advance:
        _, summary = extract_class_answers(
            model, qs, class_names, str(output), questions_sha256=sha256_file(questions), layout=prompt_layout,
            label_set=labels, temperature=temperature, restart=restart, on_unit=lambda key: advance(info=key),
        )
    return {**summary, "output": str(output), "teacher": model.name}
