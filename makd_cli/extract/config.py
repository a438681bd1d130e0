"""``ExtractConfig``: everything ``makd extract`` takes, with its defaults (the one home of them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, kw_only=True)
class ExtractConfig:
    """The flags of the same names; exactly one teacher (``llm``, ``mllm``, ``clip`` or ``teacher``) is set."""

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
    options: dict = field(default_factory=dict)  # the plug-in options given (--batch-size of --backend hf, ...), by key
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
