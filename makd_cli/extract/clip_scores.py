"""LEAD's teacher targets: CLIP scores every image against one description per class.

Kind ``image_clip``: ``probs`` = softmax(cos(image, description) / 0.02) over the C classes (N x C),
``logits`` = cos / 0.02, ``entropy`` = H(probs) / log C per image (LEAD's H) and ``text_embeddings``
(C x D, the descriptions' normalised embeddings: ``--method lead-ssl`` takes the student's distribution
over them and an online teacher scores augmented views against them). Descriptions come
from ``makd gen-questions --kind description`` and are matched to the dataset's classes by
``class_name``; a class without a description stops the run.

Image embeddings are computed chunk by chunk (one forward pass of ``chunk_images`` images) through
``run_chunks``: finished chunks wait in ``<out>.partial/``, a rerun skips them, and under torchrun
every rank embeds a strided share. The chunks hold image embeddings only, so the descriptions are
scored once at the end, in float64.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from makd_cli.data.base import Split
from makd_cli.errors import MakdError
from makd_cli.extract.chunks import PARTIAL_FORMAT, finish, report_failures, run_chunks
from makd_cli.fileio import sha256_text
from makd_cli.formats.questions import Question
from makd_cli.formats.targets import Targets
from makd_cli.teachers.clip import TEMPERATURE, class_distribution


def match_descriptions(questions: list[Question], classes: list[str]) -> tuple[list[Question], list[str]]:
    """One description per class, in the classes' order, and the class names of unused descriptions."""
    by_class: dict[str, Question] = {}
    for q in questions:
        if q.kind != "description" or not q.class_name:
            raise MakdError(f"question {q.id} is not a class description; --clip needs `makd gen-questions --kind description`")
        if q.class_name in by_class:
            raise MakdError(f"two descriptions for class {q.class_name!r} ({by_class[q.class_name].id}, {q.id}); "
                            "LEAD takes one description per class")
        by_class[q.class_name] = q
    missing = [c for c in classes if c not in by_class]
    if missing:
        raise MakdError(f"no description for {len(missing)} of the dataset's {len(classes)} classes (first: {missing[0]!r}); "
                        "generate them from the dataset's class list (`makd data classes DATA -o classes.txt`, "
                        "`makd gen-questions --kind description --classes classes.txt`)")
    unused = [name for name in by_class if name not in set(classes)]
    return [by_class[c] for c in classes], unused


def extract_clip_scores(teacher, split: Split, questions: list[Question], classes: list[str], out_path=None, *,
                        temperature: float = TEMPERATURE, chunk_images: int = 64, num_workers: int = 2,
                        resume: bool = True, progress: bool = True, questions_sha256: str | None = None) -> Targets:
    """Per-image class distributions from a CLIP teacher (kind ``image_clip``), written to ``out_path``
    atomically when given; ranks other than 0 get the file read back."""
    if temperature <= 0:
        raise MakdError(f"the CLIP temperature must be positive, not {temperature}")
    if chunk_images < 1:
        raise MakdError("chunk_images must be at least 1")
    descs, unused = match_descriptions(questions, classes)
    if unused:
        print(f"[makd] clip: ignoring {len(unused)} description(s) of classes the dataset lacks (first: {unused[0]!r})",
              file=sys.stderr)
    text_emb, truncated = teacher.encode_texts([d.text for d in descs])
    limit = teacher.context_length
    if truncated:
        print(f"[makd] clip: {len(truncated)} of {len(descs)} descriptions are longer than CLIP's {limit}-token context "
              f"and were truncated (first: {classes[truncated[0]]!r})", file=sys.stderr)
    sha = questions_sha256 or sha256_text(json.dumps([q.to_record() for q in descs], sort_keys=True))
    fp = {
        "format": PARTIAL_FORMAT, "kind": "image_clip_embeddings", "teacher": teacher.name, "dtype": str(teacher.dtype),
        "image_processor_sha256": sha256_text(teacher.image_processor.to_json_string()),
        "ids_sha256": sha256_text("\n".join(split.ids)), "n_images": len(split), "chunk_images": chunk_images,
        "embedding_dim": int(text_emb.shape[1]),
    }
    res = run_chunks(split, teacher.preprocessor(), teacher.encode_pixels, int(text_emb.shape[1]), out=out_path,
                     fingerprint=fp, chunk_images=chunk_images, num_workers=num_workers, resume=resume,
                     progress=progress, label="clip", batched=True)
    targets = None
    if res is not None:
        image_emb, ok, failed, errors = res
        if len(ok) == 0:
            raise MakdError(f"none of the {len(split)} images could be read; nothing to score")
        logits, probs, entropy = class_distribution(image_emb, text_emb, temperature)
        labels = split.labels[ok]
        targets = Targets(
            kind="image_clip", classes=list(classes), question_ids=[d.id for d in descs], probs=probs, logits=logits,
            teacher=f"clip:{teacher.name}", questions_sha256=sha, images=[split.ids[i] for i in ok], labels=labels,
            entropy=entropy, text_embeddings=text_emb,
            meta={"source": "clip", "model": teacher.name, "temperature": temperature,
                  "scoring": "softmax(cos(image, description) / temperature)", "logits": "cos / temperature",
                  "entropy": "H(probs) / log(C)", "context_length": limit,
                  "truncated_descriptions": [classes[i] for i in truncated], "unused_descriptions": unused,
                  "zero_shot_accuracy": float(np.mean(logits.argmax(axis=1) == labels)),
                  "mean_entropy": float(entropy.mean()),
                  "failed_images": report_failures(split, failed, errors, "clip")},
        )
    return finish(out_path, targets)
