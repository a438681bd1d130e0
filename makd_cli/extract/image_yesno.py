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
import os
import shutil
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np

from makd_cli.data.base import Split
from makd_cli.errors import MakdError
from makd_cli.numerics import softmax
from makd_cli.extract.resume import ResumeStore
from makd_cli.fileio import sha256_text
from makd_cli.formats.questions import Question
from makd_cli.formats.targets import Targets, read_targets, write_targets
from makd_cli.progress import progress_bar

PARTIAL_FORMAT = "makd-partial-targets"


def dist_info():
    """(rank, world_size, torch.distributed or None); joins a torchrun job with gloo if needed."""
    import torch.distributed as dist

    if not dist.is_available():
        return 0, 1, None
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # gloo is enough: ranks only exchange small objects and wait for each other. The long
        # timeout covers ranks that finish their share hours apart.
        dist.init_process_group("gloo", timeout=timedelta(hours=24))
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), dist
    return 0, 1, None


class _Images:
    """Dataset for the DataLoader: (sample index, preprocessed inputs or None, error text or None)."""

    def __init__(self, split: Split, indices: list[int], preprocess):
        self.split, self.indices, self.preprocess = split, indices, preprocess

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int):
        i = self.indices[j]
        try:
            return i, self.preprocess(self.split.load(i)), None
        except Exception as exc:  # a corrupt file must not end a run of thousands of images
            return i, None, f"{type(exc).__name__}: {exc}"


def _identity(x):
    return x


def run_chunks(split: Split, preprocess, compute, width: int, *, out, fingerprint: dict, chunk_images: int = 32,
               num_workers: int = 2, resume: bool = True, progress: bool = True, label: str = "extract",
               batched: bool = False):
    """Apply ``compute(preprocessed) -> (width,)`` to every image of ``split``, chunk by chunk
    (saved in ``<out>.partial/`` when ``out`` is given). Returns (rows n_ok x width, ok indices,
    failed indices, error texts) on rank 0 and None on the other ranks. ``batched=True``: ``compute``
    takes the list of a chunk's preprocessed images at once and returns (n x width), so a chunk is
    one forward pass (the CLIP teacher)."""
    import torch

    rank, world, dist = dist_info()
    n = len(split)
    n_chunks = (n + chunk_images - 1) // chunk_images
    key = lambda k: f"chunk{k:06d}"  # noqa: E731
    store, status, remaining = None, None, list(range(n_chunks))
    if out is not None and rank == 0:
        try:
            store = ResumeStore(out, fingerprint, restart=not resume)
            remaining = [k for k in range(n_chunks) if not store.done(key(k))]
        except MakdError as exc:
            status = str(exc)
    if dist is not None:  # one view of the folder for every rank, taken before anyone writes to it
        box = [status, remaining]
        dist.broadcast_object_list(box, src=0)
        status, remaining = box
    if status:
        raise MakdError(status)
    if out is not None and store is None:
        store = ResumeStore(out, fingerprint)  # ranks > 0: rank 0 has checked the folder
    mine = remaining[rank::world]
    indices = [i for k in mine for i in range(k * chunk_images, min(n, (k + 1) * chunk_images))]
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # workers fork after the tokenizer ran
    loader = torch.utils.data.DataLoader(_Images(split, indices, preprocess), batch_size=None, shuffle=False,
                                         num_workers=num_workers if indices else 0, collate_fn=_identity)
    chunks, cur = {}, {"index": [], "rows": [], "failed": [], "errors": []}
    done, seen_ok, t0 = 0, 0, time.time()
    with progress_bar(label, total=len(indices), enabled=progress and rank == 0) as advance:
        for i, enc, err in loader:
            k = i // chunk_images
            if err is None:
                cur["index"].append(i)
                if batched:
                    cur.setdefault("inputs", []).append(enc)
                else:
                    cur["rows"].append(np.asarray(compute(enc), np.float32).reshape(width))
                seen_ok += 1
            else:
                cur["failed"].append(i)
                cur["errors"].append(err)
            done += 1
            if done >= 8 and seen_ok == 0:
                raise MakdError(f"{label}: none of the first {done} images could be read or preprocessed "
                                f"(first error: {cur['errors'][0]})")
            if len(cur["index"]) + len(cur["failed"]) == min(n, (k + 1) * chunk_images) - k * chunk_images:
                if batched and cur.get("inputs"):
                    cur["rows"] = list(np.asarray(compute(cur["inputs"]), np.float32).reshape(len(cur["inputs"]), width))
                chunk = {"index": np.asarray(cur["index"], np.int64),
                         "rows": np.stack(cur["rows"]) if cur["rows"] else np.zeros((0, width), np.float32),
                         "failed": np.asarray(cur["failed"], np.int64), "errors": np.asarray(cur["errors"], dtype=str)}
                if store is not None:
                    store.save(key(k), **chunk)
                else:
                    chunks[k] = chunk
                cur = {"index": [], "rows": [], "failed": [], "errors": []}
            advance(info=f"{done / max(time.time() - t0, 1e-9):.2f} img/s" + (f" x {world} ranks" if world > 1 else ""))
    if dist is not None:
        gathered = [None] * world if rank == 0 else None
        dist.gather_object(chunks, gathered, dst=0)  # also waits until every rank has saved its chunks
        if rank != 0:
            return None
        for part in gathered:
            chunks.update(part)
    if store is not None:
        for k in range(n_chunks):
            if not store.done(key(k)):
                raise MakdError(f"{label}: chunk {k} is missing from {store.dir}; under torchrun the output folder "
                                "must be on a file system that every rank shares")
            chunks[k] = store.load_checked(key(k), index=(None,), rows=(None, width), failed=(None,))
    parts = [chunks[k] for k in range(n_chunks)]
    cat = lambda name, empty: np.concatenate([p[name] for p in parts]) if parts else empty  # noqa: E731
    return (cat("rows", np.zeros((0, width), np.float32)), cat("index", np.zeros(0, np.int64)),
            cat("failed", np.zeros(0, np.int64)), [str(e) for e in cat("errors", np.zeros(0, str))])


def _report_failures(split: Split, failed, errors, label: str) -> list[str]:
    ids = [split.ids[i] for i in failed]
    if ids:
        print(f"[makd] {label}: skipped {len(ids)} unreadable image(s), e.g. "
              + "; ".join(f"{i} ({e})" for i, e in list(zip(ids, errors))[:3]), file=sys.stderr)
    return ids


def _finish(out_path, targets: Targets | None) -> Targets:
    rank, world, dist = dist_info()
    if rank == 0 and out_path is not None:
        write_targets(out_path, targets)
        shutil.rmtree(Path(str(out_path) + ".partial"), ignore_errors=True)  # only once the final file is in place
    if dist is None:
        return targets
    dist.barrier()
    if out_path is not None:
        return targets if rank == 0 else read_targets(out_path)
    box = [targets]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _fingerprint(kind: str, teacher, prompts: list[str], split: Split, chunk_images: int, naive: bool) -> dict:
    return {
        "format": PARTIAL_FORMAT, "kind": kind, "teacher": teacher.name, "dtype": str(teacher.dtype),
        "prompts_sha256": sha256_text(json.dumps(prompts)), "ids_sha256": sha256_text("\n".join(split.ids)),
        "n_images": len(split), "chunk_images": chunk_images, "naive": naive,
    }


def extract_image_yesno(teacher, split: Split, questions: list[Question], out_path, *, classes: list[str],
                        object_word: str = "object", batch_questions: int = 64, chunk_images: int = 32,
                        num_workers: int = 2, resume: bool = True, progress: bool = True, naive: bool = False,
                        questions_sha256: str | None = None) -> Targets:
    """p(yes) of every question for every image of ``split`` (kind ``image_yesno``), written to
    ``out_path`` atomically. ``<object>`` in each question becomes ``object_word`` (one generic word:
    the teacher must judge the image, not a class name we would leak). Other ranks get the file read back."""
    if not questions:
        raise MakdError("no questions to ask")
    texts = [q.instantiate(object_word) for q in questions]
    prep = teacher.prepare_yesno(texts)
    sha = questions_sha256 or sha256_text(json.dumps([q.to_record() for q in questions], sort_keys=True))
    fp = _fingerprint("image_yesno", teacher, prep.prompts, split, chunk_images, naive)
    res = run_chunks(split, teacher.preprocessor(prep, naive),
                     lambda enc: teacher.yesno_from_encoded(enc, prep, batch_questions), len(texts),
                     out=out_path, fingerprint=fp, chunk_images=chunk_images, num_workers=num_workers,
                     resume=resume, progress=progress, label="image_yesno")
    targets = None
    if res is not None:
        logodds, ok, failed, errors = res
        if len(ok) == 0:
            raise MakdError(f"none of the {len(split)} images could be read; nothing to write")
        targets = Targets(
            kind="image_yesno", classes=list(classes), question_ids=[q.id for q in questions],
            probs=1.0 / (1.0 + np.exp(-logodds.astype(np.float64))), logits=logodds,  # logits: z_yes - z_no
            teacher=f"{teacher.backend}:{teacher.name}", questions_sha256=sha, images=[split.ids[i] for i in ok], labels=split.labels[ok],
            meta={"source": "mllm", "model": teacher.name, "object_word": object_word, "answer_suffix": " Answer yes or no.",
                  "yes_token_ids": teacher.yes_ids, "no_token_ids": teacher.no_ids, "answer_aggregation": "logsumexp",
                  "logits": "z_yes - z_no", "naive": naive, "failed_images": _report_failures(split, failed, errors, "image_yesno")},
        )
    return _finish(out_path, targets)


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
                  "failed_images": _report_failures(split, failed, errors, "zero_shot")},
        )
    return _finish(out_path, targets)
