"""The teacher kinds of ``makd extract`` as a registry: which flag chooses each, the prompt layouts it
asks with, and its driver. ``--llm`` (per-class answers, LaViD), ``--mllm`` (per-image p(yes) or class
scores, MaKD), ``--clip`` (per-image distributions over class descriptions, LEAD) and ``--teacher``
(the control teachers). A new kind is one more ``@register_teacher_kind`` with a driver taking the
``ExtractConfig``; its options, if it declares any, join ``makd extract``'s flags.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from makd_cli.errors import MakdError
from makd_cli.extract.config import ExtractConfig
from makd_cli.fileio import sha256_file
from makd_cli.formats.questions import read_classes, read_questions
from makd_cli.progress import progress_bar
from makd_cli.registry import Registry


@dataclass(frozen=True)
class TeacherKind:
    field: str  # the ExtractConfig field (and flag) that chooses it: llm -> --llm MODEL
    run: Callable[[ExtractConfig], dict]
    layouts: Callable[[ExtractConfig], tuple[str, ...]] = lambda cfg: ("paper",)  # the --prompt-layout values it takes

    @property
    def flag(self) -> str:
        return "--" + self.field


TEACHER_KINDS: Registry[TeacherKind] = Registry("teacher kind", kind="teacher-kind")


def register_teacher_kind(name: str, help: str = "", options=()):
    def deco(kind: TeacherKind) -> TeacherKind:
        TEACHER_KINDS.add(name, kind, help, options)
        return kind

    return deco


def class_list(cfg: ExtractConfig) -> list[str]:
    if cfg.classes is not None:
        return read_classes(cfg.classes)
    if cfg.data is not None:
        from makd_cli.data import load_dataset

        return list(load_dataset(cfg.data).classes)
    raise MakdError("give the classes: --classes FILE or --data DATASET")


def _image_split(cfg: ExtractConfig, flag: str):
    from makd_cli.data import load_dataset

    if cfg.data is None:
        raise MakdError(f"{flag} needs --data: the images it {'looks at' if flag == '--mllm' else 'scores'}")
    if cfg.split not in ("train", "test"):
        raise MakdError("--split must be train or test")
    ds = load_dataset(cfg.data)
    return ds, ds.train if cfg.split == "train" else ds.test


def _image_summary(t, ds, seconds: float, output) -> dict:
    n = len(t.images or [])
    return {"kind": t.kind, "classes": len(ds.classes), "questions": len(t.question_ids), "images": n,
            "failed_images": len(t.meta.get("failed_images", [])), "seconds": round(seconds, 2),
            "images_per_s": round(n / seconds, 3) if seconds > 0 else None, "teacher": t.teacher, "output": str(output)}


def _run_llm(cfg: ExtractConfig) -> dict:
    """A language-only teacher: per-class soft answers (LaViD), through the chosen --backend."""
    from makd_cli.extract.class_options import extract_class_answers
    from makd_cli.teachers.registry import load_llm

    if cfg.questions is None:
        raise MakdError("--llm needs --questions (a file from `makd gen-questions`)")
    qs = read_questions(cfg.questions)
    class_names = class_list(cfg)
    from makd_cli.recipes.class_names import prompt_names

    data = cfg.data
    asked_as = prompt_names(cfg.prompt_class_names, class_names, data.split(":", 1)[0] if data and ":" in data else None)
    model = load_llm(cfg.llm, cfg.backend, threads=cfg.threads, seed=cfg.seed, api_base=cfg.api_base, **cfg.options)
    units = len(qs) if cfg.prompt_layout == "class-last" else len(class_names)
    with progress_bar(f"extract ({cfg.prompt_layout})", units, cfg.progress) as advance:
        _, summary = extract_class_answers(
            model, qs, class_names, str(cfg.output), questions_sha256=sha256_file(cfg.questions), layout=cfg.prompt_layout,
            label_set=cfg.labels, temperature=cfg.temperature, restart=cfg.restart, on_unit=lambda key: advance(info=key),
            prompt_names=None if asked_as == class_names else asked_as,
        )
    return {**summary, "output": str(cfg.output), "teacher": model.name}


def _llm_layouts(cfg: ExtractConfig) -> tuple[str, ...]:
    from makd_cli.extract.class_options import LAYOUTS

    return tuple(LAYOUTS)


def _run_mllm(cfg: ExtractConfig) -> dict:
    """MaKD's multimodal teacher: p(yes) per image and question, or zero-shot class scores. A ``.gguf``
    MODEL with ``--mmproj`` runs on llama.cpp (CPU); ``--backend openai`` on a server; anything else on transformers."""
    from makd_cli.extract.image_yesno import extract_image_yesno, zero_shot_scores
    from makd_cli.teachers.backends import load_multimodal

    if cfg.kind not in ("yesno", "zero_shot"):
        raise MakdError("--kind for --mllm is yesno (aspect targets) or zero_shot (class scores)")
    if cfg.batch_questions < 1:
        raise MakdError("--batch-questions must be at least 1")
    ds, part = _image_split(cfg, "--mllm")
    qs = None
    if cfg.kind == "yesno":
        if cfg.questions is None:
            raise MakdError("--mllm --kind yesno needs --questions (yes/no aspect questions from `makd gen-questions --kind yesno`)")
        qs = read_questions(cfg.questions, kind="yesno")
    device = None if cfg.device in (None, "auto") else cfg.device
    teacher = load_multimodal(cfg.mllm, cfg.backend, options=cfg.options, device=device, trust_remote_code=cfg.trust_remote_code,
                              mmproj=cfg.mmproj, threads=cfg.threads, api_base=cfg.api_base)
    t0 = time.time()
    if cfg.kind == "yesno":
        t = extract_image_yesno(teacher, part, qs, cfg.output, classes=list(ds.classes), object_word=cfg.object_word,
                                batch_questions=cfg.batch_questions, num_workers=cfg.workers, resume=not cfg.restart,
                                progress=cfg.progress, questions_sha256=sha256_file(cfg.questions), layout=cfg.prompt_layout)
    else:
        t = zero_shot_scores(teacher, part, list(ds.classes), cfg.output, num_workers=cfg.workers, resume=not cfg.restart,
                             progress=cfg.progress)
    summary = _image_summary(t, ds, time.time() - t0, cfg.output)
    if "zero_shot_accuracy" in t.meta:
        summary["zero_shot_accuracy"] = 100.0 * t.meta["zero_shot_accuracy"]
    return summary


def _mllm_layouts(cfg: ExtractConfig) -> tuple[str, ...]:
    from makd_cli.teachers.base import YESNO_LAYOUTS

    return tuple(YESNO_LAYOUTS) if cfg.kind == "yesno" else ("paper",)


def _run_clip(cfg: ExtractConfig) -> dict:
    """LEAD's CLIP teacher: per image, a distribution over the class descriptions (kind image_clip)."""
    from makd_cli.extract.clip_scores import extract_clip_scores
    from makd_cli.teachers.clip import load_clip

    if cfg.data is None:
        raise MakdError("--clip needs --data: the images it scores")
    if cfg.questions is None:
        raise MakdError("--clip needs --questions: one description per class from `makd gen-questions --kind description`")
    if cfg.split not in ("train", "test"):
        raise MakdError("--split must be train or test")
    qs = read_questions(cfg.questions, kind="description")
    ds, part = _image_split(cfg, "--clip")
    teacher = load_clip(cfg.clip, device=cfg.device)
    t0 = time.time()
    t = extract_clip_scores(teacher, part, qs, list(ds.classes), cfg.output, num_workers=cfg.workers, resume=not cfg.restart,
                            progress=cfg.progress, questions_sha256=sha256_file(cfg.questions))
    return {**_image_summary(t, ds, time.time() - t0, cfg.output),
            "zero_shot_accuracy": 100.0 * t.meta["zero_shot_accuracy"], "mean_entropy": t.meta["mean_entropy"],
            "truncated_descriptions": len(t.meta["truncated_descriptions"])}


def _run_control(cfg: ExtractConfig) -> dict:
    from makd_cli.teachers.controls import run_control_teacher

    return run_control_teacher(cfg.teacher, output=cfg.output, questions=cfg.questions, classes=class_list(cfg), seed=cfg.seed)


register_teacher_kind("llm", "a language model answers per class (LaViD; yes/no for MaKD questions)")(
    TeacherKind("llm", _run_llm, _llm_layouts))
register_teacher_kind("mllm", "a multimodal model answers per image (MaKD: p(yes), or zero-shot class scores)")(
    TeacherKind("mllm", _run_mllm, _mllm_layouts))
register_teacher_kind("clip", "CLIP scores each image against the class descriptions (LEAD)")(TeacherKind("clip", _run_clip))
register_teacher_kind("teacher", "a control teacher: random (Gaussian targets) or word-embedding (class-name embeddings)")(
    TeacherKind("teacher", _run_control))
