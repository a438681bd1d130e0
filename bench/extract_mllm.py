"""Images per second of MaKD yes/no extraction: cached image prefix + batched questions vs the naive
loop (one full forward per image and question, as the reference code does).

    OMP_NUM_THREADS=1 python bench/extract_mllm.py                       # tiny random LLaVA on CPU
    python bench/extract_mllm.py --model llava-1.5-7b --device cuda      # a real (downloaded) model

Both paths see the same images and questions; the table also gives the largest |difference| of the
log-odds between them (float32 on CPU should agree to ~1e-5; bf16 on GPU to a few 1e-2).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from makd_cli.teachers.hf_mllm import HFMultimodalTeacher, load_mllm  # noqa: E402

ATTRS = ["red", "blue", "green", "black", "white", "striped", "spotted", "furry", "metallic", "wooden"]
PARTS = ["wings", "wheels", "a tail", "four legs", "feathers", "a beak", "windows", "fins", "horns", "a handle"]


def make_questions(q: int) -> list[str]:
    pool = [f"Is the object {a}?" for a in ATTRS] + [f"Does the object have {p}?" for p in PARTS]
    pool += [f"Is the {a} object shown outdoors?" for a in ATTRS] + [f"Is the object larger than a person and {a}?" for a in ATTRS]
    pool += [f"Could the object with {p} be used indoors?" for p in PARTS]
    return (pool * (q // len(pool) + 1))[:q]


def tiny_llava(image_tokens_side: int = 16) -> HFMultimodalTeacher:
    """A random LLaVA with 256 image tokens (LLaVA-1.5 has 576) and a 4-layer, 256-wide language model."""
    return random_llava(dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4),
                        dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=8,
                             num_key_value_heads=8), image_tokens_side=image_tokens_side, name="tiny-random-llava")


def random_llava(vision: dict, text: dict, *, image_tokens_side: int = 16, patch: int = 14, vocab_size: int | None = None,
                 name: str = "random-llava", device: str = "cpu", dtype=None) -> HFMultimodalTeacher:
    """A LLaVA-architecture model with random weights: a CLIP vision tower (``vision``: its config) on
    ``patch * image_tokens_side`` px images (``image_tokens_side``^2 image tokens) and a Llama language
    model (``text``); ``vocab_size`` sizes the embedding and output layers (default: the tokenizer's
    1000 tokens, trained here on the questions). Built directly on ``device`` in ``dtype`` (GPU runs:
    a 7B model is not initialised on the CPU)."""
    import transformers as tf
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
    corpus = [" ".join(make_questions(50)) + " USER: ASSISTANT: Answer yes or no."] * 5 + [" Yes No yes no Yes No"] * 50
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=1000, special_tokens=specials, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = tf.PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    side = patch * image_tokens_side
    cfg = tf.LlavaConfig(
        vision_config=tf.CLIPVisionConfig(**vision, image_size=side, patch_size=patch),
        text_config=tf.LlamaConfig(vocab_size=max(vocab_size or 0, len(tok)), max_position_embeddings=4096,
                                   pad_token_id=tok.pad_token_id, **text),
        image_token_id=tok.convert_tokens_to_ids("<image>"))
    torch.manual_seed(0)
    template = ("{% for m in messages %}USER: {% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n"
                "{% else %}{{ c['text'] }}{% endif %}{% endfor %} {% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}")
    proc = tf.LlavaProcessor(image_processor=tf.CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side}),
                             tokenizer=tok, patch_size=patch, vision_feature_select_strategy="default",
                             num_additional_image_tokens=1, chat_template=template)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype or default)  # parameters made in their dtype: no fp32 copy of 7B weights on the way
    try:
        with torch.device(device):
            model = tf.LlavaForConditionalGeneration(cfg)
    finally:
        torch.set_default_dtype(default)
    return HFMultimodalTeacher(model, proc, name)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, images) -> tuple[float, list[np.ndarray]]:
    fn(images[0])  # warm-up (allocator, kernels), not counted
    sync(teacher_device)
    t0 = time.perf_counter()
    out = [fn(im) for im in images]
    sync(teacher_device)
    return len(images) / (time.perf_counter() - t0), out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="alias, hub id or directory of a real model (default: tiny random LLaVA)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--questions", type=int, default=50)
    ap.add_argument("--images", type=int, default=8, help="images for the batched path")
    ap.add_argument("--naive-images", type=int, default=3, help="images for the naive path (it is slow)")
    ap.add_argument("--batch-questions", type=int, default=64)
    args = ap.parse_args()

    teacher = load_mllm(args.model, device=args.device) if args.model else tiny_llava()
    teacher_device = teacher.device
    texts = make_questions(args.questions)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)) for _ in range(max(args.images, args.naive_images) + 1)]
    prep = teacher.prepare_yesno(texts)
    pre = teacher.preprocessor(prep)
    fast_rate, fast = timed(lambda im: teacher.yesno_from_encoded(pre(im), prep, args.batch_questions), images[: args.images + 1])
    naive_rate, naive = timed(lambda im: teacher.yesno_naive(im, prep), images[: args.naive_images + 1])
    diff = max(float(np.abs(a - b).max()) for a, b in zip(fast[: len(naive)], naive))
    threads = torch.get_num_threads()
    print(f"model {teacher.name} on {teacher.device} ({teacher.dtype}), Q = {len(texts)} questions, "
          f"torch {torch.__version__}, {threads} CPU thread(s), {platform.processor() or platform.machine()}")
    print(f"{'path':<34}{'images':>8}{'images/s':>11}{'questions/s':>13}")
    print(f"{'naive (1 forward per question)':<34}{args.naive_images:>8}{naive_rate:>11.3f}{naive_rate * len(texts):>13.1f}")
    print(f"{'cached prefix + batched questions':<34}{args.images:>8}{fast_rate:>11.3f}{fast_rate * len(texts):>13.1f}")
    print(f"speed-up {fast_rate / naive_rate:.1f}x; max |log-odds difference| {diff:.2e}")
