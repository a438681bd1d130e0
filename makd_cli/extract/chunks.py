"""The image-chunk runner every per-image teacher shares (multimodal yes/no and zero-shot, CLIP).

``run_chunks`` applies a teacher to every image of a split, chunk by chunk: DataLoader workers decode
and preprocess while the model runs; finished chunks go to ``<out>.partial/`` (atomic .npz files
beside a fingerprint) so a rerun after ``kill -9`` skips them; under torchrun every rank takes a
strided share of the unfinished chunks and rank 0 merges them in sample order. Unreadable images are
skipped and reported (``report_failures``); ``finish`` writes the targets once and cleans up.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np

from makd_cli.data.base import Split
from makd_cli.errors import MakdError
from makd_cli.extract.resume import ResumeStore
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


def report_failures(split: Split, failed, errors, label: str) -> list[str]:
    ids = [split.ids[i] for i in failed]
    if ids:
        print(f"[makd] {label}: skipped {len(ids)} unreadable image(s), e.g. "
              + "; ".join(f"{i} ({e})" for i, e in list(zip(ids, errors))[:3]), file=sys.stderr)
    return ids


def finish(out_path, targets: Targets | None) -> Targets:
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
