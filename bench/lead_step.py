"""LEAD (``--method lead-ssl``) step time: offline targets against the online CLIP teacher.

Trains the same student on the same images through ``train_moco`` twice: with the distributions
``extract --clip`` stored per image (``--lead-teacher offline``) and with CLIP scoring every augmented
view at each step (``online``, the public code's). The CLIP model has random weights but the real
architecture (``--clip b16``: ViT-B/16 image tower, 224 px, 512-d projection; ``tiny``: the tests'
2-layer model), so the compute is what a real teacher costs; nothing is downloaded.

A step is timed from the end of one optimizer step (``after_step``) to the end of the next, so the
first step (warm-up) is not counted and every figure includes loading the next batch, the forward
passes, the backward pass and the update. Both wall time and process CPU time (all threads) are
taken; the median step of each run is printed. With one thread, CPU time is the steady figure on a
machine that other jobs share (they stretch wall time, not the work done; with several threads,
waiting threads spin and inflate it); the teacher's part is timed the same way around
``CLIPTeacher.encode_views``.

    OMP_NUM_THREADS=1 .venv/bin/python bench/lead_step.py [--student resnet50] [--image-size 224] [--clip b16]
        [--batch 8] [--images 48] [--device cpu]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from makd_cli.data import load_dataset
from makd_cli.extract.clip_scores import extract_clip_scores
from makd_cli.formats.questions import Question
from makd_cli.teachers.clip import load_clip
from makd_cli.train import TrainConfig
from makd_cli.train.moco import train_moco

CLASSES = ["alpha", "beta", "gamma", "delta"]


def random_clip(folder: Path, kind: str) -> Path:
    """A CLIPModel with random weights, saved with a character-level tokenizer (no download)."""
    import transformers as tf
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in sorted(ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    tok = tf.CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    if kind == "b16":  # OpenAI's ViT-B/16 shapes
        vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=224, patch_size=16)
        text = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8)
        proj, side = 512, 224
    else:
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)
        text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
        proj, side = 16, 32
    cfg = tf.CLIPConfig(text_config=dict(vocab_size=len(vocab), max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                                         pad_token_id=1, **text), vision_config=vision, projection_dim=proj)
    torch.manual_seed(0)
    model = tf.CLIPModel(cfg)
    processor = tf.CLIPProcessor(image_processor=tf.CLIPImageProcessor(size={"shortest_edge": side},
                                                                       crop_size={"height": side, "width": side}), tokenizer=tok)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def image_folder(root: Path, per_class: int, side: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in CLASSES:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class if split == "train" else 1):
                Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")
    return root


def clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def run(data: Path, targets: Path, out: Path, teacher: str, args) -> dict:
    """One epoch of train_moco with the step and the teacher instrumented; medians of (wall, cpu) seconds."""
    from makd_cli.teachers.clip import CLIPTeacher
    from makd_cli.train import moco

    stamps, teacher_times = [], []
    real_fit, real_encode = moco.fit, CLIPTeacher.encode_views

    def timed_fit(cfg, run_, obj, bar):
        real_after = obj.after_step

        def after(batch):
            real_after(batch)
            stamps.append(clocks())

        obj.after_step = after
        return real_fit(cfg, run_, obj, bar)

    def timed_encode(self, *a, **kw):
        w0, c0 = clocks()
        out_ = real_encode(self, *a, **kw)
        w1, c1 = clocks()
        teacher_times.append((w1 - w0, c1 - c0))
        return out_

    moco.fit, CLIPTeacher.encode_views = timed_fit, timed_encode
    try:
        train_moco(TrainConfig(data=str(data), out=str(out), method="lead-ssl", targets=str(targets), student=args.student,
                               epochs=1, batch_size=args.batch, lr=0.01, image_size=args.image_size, workers=0,
                               device=args.device, quiet=True, options={"moco_queue": 4 * args.batch, "lead_teacher": teacher}))
    finally:
        moco.fit, CLIPTeacher.encode_views = real_fit, real_encode
    steps = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(stamps, stamps[1:])]
    median = lambda xs, i: float(np.median([x[i] for x in xs])) if xs else float("nan")  # noqa: E731
    return {"steps": len(steps), "wall": median(steps, 0), "cpu": median(steps, 1),
            "teacher_wall": median(teacher_times[1:], 0), "teacher_cpu": median(teacher_times[1:], 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--student", default="resnet50")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--clip", choices=("b16", "tiny"), default="b16")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--images", type=int, default=48, help="training images (a multiple of --batch: whole steps)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip_dir = random_clip(tmp / "clip", args.clip)
        data = image_folder(tmp / "data", args.images // len(CLASSES), max(args.image_size, 32))
        teacher = load_clip(str(clip_dir), device=args.device)
        ds = load_dataset(str(data))
        descriptions = [Question("description", f"a photo of a {c}, a kind of thing", class_name=c) for c in ds.classes]
        t0 = time.perf_counter()
        extract_clip_scores(teacher, ds.train, descriptions, list(ds.classes), tmp / "clip.h5", num_workers=0, progress=False)
        extract_s = time.perf_counter() - t0
        offline = run(data, tmp / "clip.h5", tmp / "offline", "offline", args)
        online = run(data, tmp / "clip.h5", tmp / "online", "online", args)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"student {args.student} at {args.image_size} px, CLIP {args.clip} (random weights), batch {args.batch}, "
          f"median of {offline['steps']} timed steps a run")
    print(f"offline extraction of the {args.images} training images, once before training: {extract_s:.2f} s wall")
    print("| teacher | wall s / step | CPU s / step | CPU x offline | teacher CPU s / step | teacher share of CPU |")
    print("|---|---|---|---|---|---|")
    print(f"| offline (stored per image) | {offline['wall']:.3f} | {offline['cpu']:.3f} | 1.00 | - | - |")
    print(f"| online (CLIP on each view) | {online['wall']:.3f} | {online['cpu']:.3f} | {online['cpu'] / offline['cpu']:.2f} | "
          f"{online['teacher_cpu']:.3f} | {100 * online['teacher_cpu'] / online['cpu']:.0f} % |")


if __name__ == "__main__":
    main()
