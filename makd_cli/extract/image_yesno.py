"""Per-image teacher targets from a multimodal LLM: MaKD yes/no answers and zero-shot class scores.

Long runs survive ``kill -9``: finished chunks of image rows go to ``<out>.partial/`` (one .npz per
chunk, written to a temporary file and renamed) beside a fingerprint of model, prompts and sample
ids, and a rerun skips them. DataLoader workers decode and preprocess images while the model runs.
Under torchrun every rank takes a strided share of the unfinished chunks and rank 0 merges them in
sample order, so the file equals a single-process run. Unreadable images are skipped, reported and
listed in ``meta["failed_images"]`` (targets files cannot hold NaN rows).
"""

from __future__ import annotations

import json

import numpy as np

from makd_cli.data.base import Split
from makd_cli.errors import MakdError
from makd_cli.extract.chunks import PARTIAL_FORMAT, finish, report_failures, run_chunks
from makd_cli.fileio import sha256_text
from makd_cli.formats.questions import Question
from makd_cli.formats.targets import Targets
from makd_cli.numerics import softmax
from makd_cli.teachers.base import yesno_layout

def _fingerprint(kind: str, teacher, prompts: list[str], split: Split, chunk_images: int, naive: bool) -> dict:
    return {
        "format": PARTIAL_FORMAT, "kind": kind, "teacher": teacher.name, "dtype": str(teacher.dtype),
        "prompts_sha256": sha256_text(json.dumps(prompts)), "ids_sha256": sha256_text("\n".join(split.ids)),
        "n_images": len(split), "chunk_images": chunk_images, "naive": naive,
    }


def extract_image_yesno(teacher, split: Split, questions: list[Question], out_path, *, classes: list[str],
                        object_word: str = "object", batch_questions: int = 64, chunk_images: int = 32,
                        num_workers: int = 2, resume: bool = True, progress: bool = True, naive: bool = False,
                        questions_sha256: str | None = None, layout: str = "paper") -> Targets:
    """p(yes) of every question for every image of ``split`` (kind ``image_yesno``), written to
    ``out_path`` atomically. ``<object>`` in each question becomes ``object_word`` (one generic word:
    the teacher must judge the image, not a class name we would leak). ``layout`` is how the question
    is put and the answer read (``teachers/base.YESNO_LAYOUTS``: makd's "paper" or "makd-reference").
    Other ranks get the file read back."""
    if not questions:
        raise MakdError("no questions to ask")
    lay = yesno_layout(layout)
    texts = [q.instantiate(object_word) for q in questions]
    prep = teacher.prepare_yesno(texts, layout)
    sha = questions_sha256 or sha256_text(json.dumps([q.to_record() for q in questions], sort_keys=True))
    fp = _fingerprint("image_yesno", teacher, prep.prompts, split, chunk_images, naive)
    if layout != "paper":  # the answer tokens read differ too (a paper run's fingerprint stays as it was)
        fp["prompt_layout"] = layout
    batched = getattr(teacher, "batched_images", False)  # a server teacher: a chunk's requests in flight together
    compute = ((lambda encs: teacher.yesno_batch(encs, prep)) if batched
               else (lambda enc: teacher.yesno_from_encoded(enc, prep, batch_questions)))
    res = run_chunks(split, teacher.preprocessor(prep, naive), compute, len(texts),
                     out=out_path, fingerprint=fp, chunk_images=chunk_images, num_workers=num_workers,
                     resume=resume, progress=progress, label="image_yesno", batched=batched)
    targets = None
    if res is not None:
        logodds, ok, failed, errors = res
        if len(ok) == 0:
            raise MakdError(f"none of the {len(split)} images could be read; nothing to write")
        targets = Targets(
            kind="image_yesno", classes=list(classes), question_ids=[q.id for q in questions],
            probs=1.0 / (1.0 + np.exp(-logodds.astype(np.float64))), logits=logodds,  # logits: z_yes - z_no
            teacher=f"{teacher.backend}:{teacher.name}", questions_sha256=sha, images=[split.ids[i] for i in ok], labels=split.labels[ok],
            meta={"source": "mllm", "model": teacher.name, "object_word": object_word, "prompt_layout": layout,
                  "answer_suffix": lay.suffix, "yes_token_ids": list(prep.yes_ids), "no_token_ids": list(prep.no_ids),
                  "answer_aggregation": "logsumexp",
                  "logits": "z_yes - z_no", "naive": naive, "failed_images": report_failures(split, failed, errors, "image_yesno"),
                  **(teacher.targets_meta() if hasattr(teacher, "targets_meta") else {})},
        )
    return finish(out_path, targets)


def zero_shot_scores(teacher, split: Split, classes: list[str], out_path=None, *, question: str | None = None,
                     batch_answers: int = 32, chunk_images: int = 32, num_workers: int = 2, resume: bool = True,
                     progress: bool = True, naive: bool = False) -> Targets:
    """Zero-shot classification by the MLLM: log-likelihood of each class name as the answer to one
    fixed question (answers batched against the cached image prefix), as kind ``image_clip``: probs
    = softmax over classes, logits = the log-likelihoods, zero-shot accuracy in meta."""
    from makd_cli.teachers.hf_mllm import ZERO_SHOT_QUESTION

    question = question or ZERO_SHOT_QUESTION
    answers = [c.replace("_", " ") for c in classes]  # folder names such as golden_retriever
    prep = teacher.prepare_answers(question, answers)
    fp = _fingerprint("image_clip", teacher, prep.prompts, split, chunk_images, naive)
    res = run_chunks(split, teacher.preprocessor(prep, naive),
                     lambda enc: teacher.answer_logliks_from_encoded(enc, prep, batch_answers), len(classes),
                     out=out_path, fingerprint=fp, chunk_images=chunk_images, num_workers=num_workers,
                     resume=resume, progress=progress, label="zero_shot")
    targets = None
    if res is not None:
        scores, ok, failed, errors = res
        if len(ok) == 0:
            raise MakdError(f"none of the {len(split)} images could be read; nothing to score")
        s = scores.astype(np.float64)
        probs = softmax(s, axis=1)
        labels = split.labels[ok]
        targets = Targets(
            kind="image_clip", classes=list(classes), question_ids=[], probs=probs, logits=scores,
            teacher=f"{teacher.backend}:{teacher.name}", images=[split.ids[i] for i in ok], labels=labels,
            meta={"source": "mllm_zero_shot", "model": teacher.name, "question": question,
                  "scoring": "sum of answer-token log-probabilities", "naive": naive,
                  "zero_shot_accuracy": float(np.mean(scores.argmax(axis=1) == labels)),
                  "failed_images": report_failures(split, failed, errors, "zero_shot")},
        )
    return finish(out_path, targets)
