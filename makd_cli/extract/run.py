"""The ``makd extract`` job: pick the teacher from the flags and run its driver."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from makd_cli.errors import MakdError
from makd_cli.fileio import output_lock, sha256_file
from makd_cli.formats.questions import read_classes, read_questions
from makd_cli.progress import progress_bar


def _class_list(classes: Path | None, data: str | None) -> list[str]:
    if classes is not None:
        return read_classes(classes)
    if data is not None:
        from makd_cli.data import load_dataset

        return list(load_dataset(data).classes)
    raise MakdError("give the classes: --classes FILE or --data DATASET")


@dataclass(frozen=True, kw_only=True)
class ExtractConfig:
    """Everything ``makd extract`` takes (the flags of the same names); exactly one teacher is set."""

    output: Path  # targets file to write
    questions: Path | None = None
    classes: Path | None = None
    data: str | None = None
    llm: str | None = None  # language-only teacher (per-class answers)
    mllm: str | None = None  # multimodal teacher (per-image answers)
    clip: str | None = None  # LEAD's CLIP teacher
    teacher: str | None = None  # control teacher: random | word-embedding[:MODEL]
    backend: str = "llama.cpp"
    api_base: str | None = None
    backend_options: dict = field(default_factory=dict)  # options the chosen backend declares (--batch-size ...)
    prompt_layout: str = "paper"
    labels: str = "digits"
    temperature: float = 1.0
    kind: str = "yesno"  # --mllm: yesno | zero_shot
    split: str = "train"
    object_word: str = "object"
    trust_remote_code: bool = False
    batch_questions: int = 64
    workers: int = 2
    device: str | None = None
    mmproj: Path | None = None
    restart: bool = False
    seed: int = 0
    threads: int | None = None
    progress: bool = True
    prompt_class_names: str = "folder"  # --class-names: folder (makd's names) or lavid (the reference's list; recipes/class_names)


def run_extract(cfg: ExtractConfig | None = None, **fields_) -> dict:
    """Run the extraction (an ``ExtractConfig``, or its fields as keywords) while holding the output's lock:
    a second job on the same -o stops at once (naming the holder) instead of repeating all the work.
    Under torchrun only rank 0 takes it."""
    cfg = cfg if cfg is not None else ExtractConfig(**fields_)
    options = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    if os.environ.get("RANK", "0") != "0":
        return _run_extract(**options)
    with output_lock(cfg.output, "targets file"):
        return _run_extract(**options)


def _run_extract(*, output: Path, questions: Path | None, classes: Path | None, data: str | None, llm: str | None,
                mllm: str | None, clip: str | None, teacher: str | None, backend: str, prompt_layout: str, labels: str,
                temperature: float, restart: bool, seed: int, threads: int | None, progress: bool = True,
                kind: str = "yesno", split: str = "train", object_word: str = "object", trust_remote_code: bool = False,
                batch_questions: int = 64, workers: int = 2, device: str | None = None, api_base: str | None = None, mmproj: Path | None = None,
                backend_options: dict | None = None, prompt_class_names: str = "folder") -> dict:
    chosen = [name for name, v in (("--llm", llm), ("--mllm", mllm), ("--clip", clip), ("--teacher", teacher)) if v]
    if len(chosen) != 1:
        raise MakdError("choose exactly one teacher: --llm MODEL, --mllm MODEL, --clip MODEL or --teacher random|word-embedding"
                        + (f" (got {', '.join(chosen)})" if chosen else ""))
    if labels not in ("digits", "letters"):
        raise MakdError("--labels must be digits or letters")
    _check_layout(prompt_layout, chosen[0], kind)
    if classes is not None and data is not None:
        raise MakdError("give the classes one way: --classes FILE or --data DATASET (its classes), not both")
    if mmproj is not None and mllm is None:
        raise MakdError("--mmproj goes with --mllm MODEL.gguf (the vision projector of a llama.cpp language model)")
    if teacher is not None:
        from makd_cli.teachers.controls import run_control_teacher

        return run_control_teacher(teacher, output=output, questions=questions, classes=_class_list(classes, data), seed=seed)
    if mllm is not None:
        return _run_mllm(mllm, output=output, questions=questions, data=data, kind=kind, split=split, object_word=object_word,
                         trust_remote_code=trust_remote_code, batch_questions=batch_questions, workers=workers,
                         device=device, restart=restart, progress=progress, mmproj=mmproj, threads=threads,
                         prompt_layout=prompt_layout)
    if clip is not None:
        return _run_clip(clip, output=output, questions=questions, data=data, split=split, workers=workers, device=device,
                         restart=restart, progress=progress)
    if questions is None:
        raise MakdError("--llm needs --questions (a file from `makd gen-questions`)")
    qs = read_questions(questions)
    class_names = _class_list(classes, data)
    from makd_cli.recipes.class_names import prompt_names

    asked_as = prompt_names(prompt_class_names, class_names, data.split(":", 1)[0] if data and ":" in data else None)
    from makd_cli.extract.class_options import extract_class_answers
    from makd_cli.teachers.registry import load_llm

    model = load_llm(llm, backend, threads=threads, seed=seed, api_base=api_base, **(backend_options or {}))
    units = len(qs) if prompt_layout == "class-last" else len(class_names)
    with progress_bar(f"extract ({prompt_layout})", units, progress) as advance:
        _, summary = extract_class_answers(
            model, qs, class_names, str(output), questions_sha256=sha256_file(questions), layout=prompt_layout,
            label_set=labels, temperature=temperature, restart=restart, on_unit=lambda key: advance(info=key),
            prompt_names=None if asked_as == class_names else asked_as,
        )
    return {**summary, "output": str(output), "teacher": model.name}


def _check_layout(layout: str, teacher_flag: str, kind: str) -> None:
    """--prompt-layout must be one the chosen teacher asks with: --llm the per-class layouts, --mllm
    --kind yesno the per-image yes/no ones; the other teachers have one prompt ("paper")."""
    from makd_cli.extract.class_options import LAYOUTS
    from makd_cli.teachers.base import YESNO_LAYOUTS

    fits = {"--llm": tuple(LAYOUTS), "--mllm": tuple(YESNO_LAYOUTS) if kind == "yesno" else ("paper",)}.get(teacher_flag, ("paper",))
    if layout in fits:
        return
    known = tuple(LAYOUTS) + tuple(k for k in YESNO_LAYOUTS if k not in LAYOUTS)
    if layout not in known:
        raise MakdError(f"--prompt-layout {layout!r} is unknown; choose {' or '.join(known)}")
    mode = teacher_flag + (f" --kind {kind}" if teacher_flag == "--mllm" else "")
    raise MakdError(f"--prompt-layout {layout} does not fit {mode}; it takes {' or '.join(fits)}")


def _run_mllm(name: str, *, output: Path, questions: Path | None, data: str | None, kind: str, split: str, object_word: str,
              trust_remote_code: bool, batch_questions: int, workers: int, device: str | None, restart: bool, progress: bool,
              mmproj: Path | None = None, threads: int | None = None, prompt_layout: str = "paper") -> dict:
    """MaKD's multimodal teacher: p(yes) per image and question, or zero-shot class scores. A ``.gguf``
    MODEL with ``--mmproj`` runs on llama.cpp (CPU); anything else on transformers."""
    import time

    from makd_cli.data import load_dataset
    from makd_cli.extract.image_yesno import extract_image_yesno, zero_shot_scores
    from makd_cli.teachers.backends import load_multimodal

    if data is None:
        raise MakdError("--mllm needs --data: the images it looks at")
    if kind not in ("yesno", "zero_shot"):
        raise MakdError("--kind for --mllm is yesno (aspect targets) or zero_shot (class scores)")
    if split not in ("train", "test"):
        raise MakdError("--split must be train or test")
    if batch_questions < 1:
        raise MakdError("--batch-questions must be at least 1")
    ds = load_dataset(data)
    part = ds.train if split == "train" else ds.test
    qs = None
    if kind == "yesno":
        if questions is None:
            raise MakdError("--mllm --kind yesno needs --questions (yes/no aspect questions from `makd gen-questions --kind yesno`)")
        qs = read_questions(questions, kind="yesno")
    teacher = load_multimodal(name, device=None if device in (None, "auto") else device, trust_remote_code=trust_remote_code,
                        mmproj=mmproj, threads=threads)
    t0 = time.time()
    if kind == "yesno":
        t = extract_image_yesno(teacher, part, qs, output, classes=list(ds.classes), object_word=object_word,
                                batch_questions=batch_questions, num_workers=workers, resume=not restart,
                                progress=progress, questions_sha256=sha256_file(questions), layout=prompt_layout)
    else:
        t = zero_shot_scores(teacher, part, list(ds.classes), output, num_workers=workers, resume=not restart, progress=progress)
    seconds = time.time() - t0
    n = len(t.images or [])
    summary = {"kind": t.kind, "classes": len(ds.classes), "questions": len(t.question_ids), "images": n,
               "failed_images": len(t.meta.get("failed_images", [])), "seconds": round(seconds, 2),
               "images_per_s": round(n / seconds, 3) if seconds > 0 else None, "teacher": t.teacher, "output": str(output)}
    if "zero_shot_accuracy" in t.meta:
        summary["zero_shot_accuracy"] = 100.0 * t.meta["zero_shot_accuracy"]
    return summary


def _run_clip(name: str, *, output: Path, questions: Path | None, data: str | None, split: str, workers: int,
              device: str | None, restart: bool, progress: bool) -> dict:
    """LEAD's CLIP teacher: per image, a distribution over the class descriptions (kind image_clip)."""
    import time

    from makd_cli.data import load_dataset
    from makd_cli.extract.clip_scores import extract_clip_scores
    from makd_cli.teachers.clip import load_clip

    if data is None:
        raise MakdError("--clip needs --data: the images it scores")
    if questions is None:
        raise MakdError("--clip needs --questions: one description per class from `makd gen-questions --kind description`")
    if split not in ("train", "test"):
        raise MakdError("--split must be train or test")
    qs = read_questions(questions, kind="description")
    ds = load_dataset(data)
    part = ds.train if split == "train" else ds.test
    teacher = load_clip(name, device=device)
    t0 = time.time()
    t = extract_clip_scores(teacher, part, qs, list(ds.classes), output, num_workers=workers, resume=not restart,
                            progress=progress, questions_sha256=sha256_file(questions))
    seconds = time.time() - t0
    n = len(t.images or [])
    return {"kind": t.kind, "classes": len(ds.classes), "questions": len(t.question_ids), "images": n,
            "failed_images": len(t.meta.get("failed_images", [])), "seconds": round(seconds, 2),
            "images_per_s": round(n / seconds, 3) if seconds > 0 else None, "teacher": t.teacher, "output": str(output),
            "zero_shot_accuracy": 100.0 * t.meta["zero_shot_accuracy"], "mean_entropy": t.meta["mean_entropy"],
            "truncated_descriptions": len(t.meta["truncated_descriptions"])}
