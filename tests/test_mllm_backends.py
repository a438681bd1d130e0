"""The other multimodal teacher backends.

llama.cpp (GGUF language model + mmproj projector): runs for real on the SmolLM2-135M GGUF that a
package ships, with a tiny random vision projector written here in llama.cpp's gemma3 mmproj format
(a SigLIP-style tower and one projection matrix, as the `globalmm` package builds them, but with
random weights: no download). Its answers mean nothing; what is tested is the plumbing: the cached
prefix (image embedded once) equals a full re-evaluation per question, and `makd extract` runs.

InternVL2/2.5 remote-code adapter: GPU-only in real use; here its CPU-testable parts (tiling,
normalisation, prompt assembly, image-token expansion) and the cached path on a tiny stand-in model
with the InternVLChatModel interface.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from makd_cli.data.base import Split, file_loader
from makd_cli.errors import MakdError
from makd_cli.extract.image_yesno import extract_image_yesno, zero_shot_scores
from makd_cli.formats.questions import Question, write_questions
from makd_cli.formats.targets import read_targets
from makd_cli.teachers.backends import load_multimodal as load_mllm  # picks llama.cpp for GGUF, else transformers

QUESTIONS = ["Is there a red <object> in the image?", "Does the <object> have wings?", "Is it a cat?"]
CLASSES = ["cat", "dog", "red bird"]


def image(seed: int, size=(40, 52)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8))


# ---- a tiny mmproj for llama.cpp -----------------------------------------------------------------
def write_gguf(path: Path, kv: dict, tensors: dict, alignment: int = 32) -> None:
    """Minimal GGUF v3 writer: str / bool / int (uint32) / float (float32) / list of floats, and
    float32 tensors (dimensions written fastest first, as ggml counts them)."""
    def text(x: str) -> bytes:
        b = x.encode()
        return struct.pack("<Q", len(b)) + b

    def value(v) -> bytes:
        if isinstance(v, bool):
            return struct.pack("<I?", 7, v)
        if isinstance(v, int):
            return struct.pack("<II", 4, v)
        if isinstance(v, float):
            return struct.pack("<If", 6, v)
        if isinstance(v, str):
            return struct.pack("<I", 8) + text(v)
        return struct.pack("<IIQ", 9, 6, len(v)) + b"".join(struct.pack("<f", float(x)) for x in v)

    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv)) + b"".join(text(k) + value(v) for k, v in kv.items())
    blobs, offset = [], 0
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        head += text(name) + struct.pack("<I", arr.ndim) + b"".join(struct.pack("<Q", d) for d in arr.shape[::-1])
        head += struct.pack("<IQ", 0, offset)
        data = arr.tobytes() + b"\0" * (-arr.nbytes % alignment)
        blobs.append(data)
        offset += len(data)
    with open(path, "wb") as fh:
        fh.write(head + b"\0" * (-len(head) % alignment))
        for b in blobs:
            fh.write(b)


def tiny_mmproj(path: Path, n_embd_llm: int, seed: int = 0, embd: int = 32, image_size: int = 56, patch: int = 14) -> Path:
    """A gemma3-type projector: SigLIP-style ViT (1 block) on 56 px images, 4x4 patches pooled 2x2
    into 4 image tokens, projected to the language model's embedding size."""
    rng = np.random.default_rng(seed)

    def r(*shape, sc=0.2):
        return rng.standard_normal(shape).astype(np.float32) * sc

    kv = {"general.architecture": "clip", "clip.projector_type": "gemma3", "clip.has_text_encoder": False,
          "clip.has_vision_encoder": True, "clip.has_llava_projector": False, "clip.vision.image_size": image_size,
          "clip.vision.patch_size": patch, "clip.vision.embedding_length": embd, "clip.vision.feed_forward_length": 2 * embd,
          "clip.vision.projection_dim": n_embd_llm, "clip.vision.block_count": 1, "clip.vision.attention.head_count": 2,
          "clip.vision.attention.layer_norm_epsilon": 1e-6, "clip.vision.image_mean": [0.5, 0.5, 0.5],
          "clip.vision.image_std": [0.5, 0.5, 0.5], "clip.use_gelu": True, "clip.vision.projector.scale_factor": 2}
    t = {"v.patch_embd.weight": r(embd, 3, patch, patch, sc=0.05), "v.patch_embd.bias": r(embd),
         "v.position_embd.weight": r((image_size // patch) ** 2, embd)}
    for n in ("ln1", "ln2"):
        t[f"v.blk.0.{n}.weight"], t[f"v.blk.0.{n}.bias"] = 1 + r(embd, sc=0.05), r(embd, sc=0.05)
    for n in ("attn_q", "attn_k", "attn_v", "attn_out"):
        t[f"v.blk.0.{n}.weight"], t[f"v.blk.0.{n}.bias"] = r(embd, embd), r(embd, sc=0.05)
    t["v.blk.0.ffn_up.weight"], t["v.blk.0.ffn_up.bias"] = r(2 * embd, embd), r(2 * embd, sc=0.05)
    t["v.blk.0.ffn_down.weight"], t["v.blk.0.ffn_down.bias"] = r(embd, 2 * embd), r(embd, sc=0.05)
    t["v.post_ln.weight"], t["v.post_ln.bias"] = np.ones(embd), np.zeros(embd)
    t["mm.input_projection.weight"] = r(embd, n_embd_llm, sc=0.05)
    t["mm.soft_emb_norm.weight"] = np.ones(embd)
    write_gguf(path, kv, t)
    return path


@pytest.fixture(scope="module")
def gguf_lm() -> Path:
    pytest.importorskip("llama_cpp.mtmd_cpp")
    from makd_cli.teachers.models import resolve_gguf

    try:
        return resolve_gguf("smollm2-135m")
    except MakdError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def mmproj(gguf_lm, tmp_path_factory) -> Path:
    return tiny_mmproj(tmp_path_factory.mktemp("mmproj") / "mmproj-tiny.gguf", 576)  # SmolLM2-135M: 576


@pytest.fixture(scope="module")
def lcpp(gguf_lm, mmproj):
    t = load_mllm(str(gguf_lm), mmproj=mmproj, threads=1)
    yield t
    t.close()


def test_gguf_argument_errors(gguf_lm, mmproj, tmp_path):
    with pytest.raises(MakdError, match="--mmproj PATH"):
        load_mllm(str(gguf_lm))
    with pytest.raises(MakdError, match="no such file"):
        load_mllm("smollm2-135m", mmproj=tmp_path / "missing.gguf")
    (tmp_path / "notgguf.bin").write_bytes(b"not a gguf file")
    with pytest.raises(MakdError, match="not a GGUF"):
        load_mllm("smollm2-135m", mmproj=tmp_path / "notgguf.bin")
    with pytest.raises(MakdError, match="no such file"):
        load_mllm("absent-model.gguf", mmproj=mmproj)
    with pytest.raises(MakdError, match="--mmproj goes with a GGUF"):
        load_mllm("org/some-vlm", mmproj=mmproj)
    wrong = tiny_mmproj(tmp_path / "wrong.gguf", 64)  # made for a model with 64-dim embeddings
    with pytest.raises(MakdError, match="could not load the projector .*576") as exc:
        load_mllm("smollm2-135m", mmproj=wrong, threads=1)
    assert "\n" not in str(exc.value)


def test_gguf_prompt_assembly(lcpp):
    t = lcpp
    assert t.backend == "llama.cpp" and t.name.endswith("+mmproj-tiny.gguf")
    assert len(t.yes_ids) >= 2 and len(t.no_ids) >= 2 and not set(t.yes_ids) & set(t.no_ids)
    texts = [q.replace("<object>", "bird") for q in QUESTIONS]
    prep = t.prepare_yesno(texts)
    p0 = prep.prompts[0]
    assert p0.count(t.marker) == 1 and p0.index(t.marker) < p0.index(texts[0])  # image first, then the question
    assert p0.endswith("<|im_start|>assistant\n") and texts[0] + " Answer yes or no." in p0  # SmolLM2's chat template
    assert prep.cut > 0 and all(len(p) > prep.cut for p in prep.post)
    assert all(p[: prep.cut] == prep.post[0][: prep.cut] for p in prep.post)
    # The suffixes are each question's own text; the shared part after the image is not repeated.
    suffix = t.llm.detokenize(prep.post[2][prep.cut :]).decode()
    assert suffix.startswith("Is it a cat?") or "cat?" in suffix
    # gemma3 projectors wrap the image in <start_of_image> ... <end_of_image> text.
    assert "start_of_image" in t.llm.detokenize(prep.pre).decode()
    assert t.prepare_yesno(texts) is prep  # prepared once per question set
    done = t.prompt("What is it?", "cat")
    assert done.startswith(t.prompt("What is it?")) and done.endswith("cat<|im_end|>\n")


def test_gguf_cached_equals_naive(lcpp):
    t = lcpp
    texts = [q.replace("<object>", "bird") for q in QUESTIONS]
    img = image(1, (45, 70))
    n0 = t.encoded_images
    cached = t.yesno_logodds(img, texts)
    assert t.encoded_images == n0 + 1  # the image is embedded once for all questions
    naive = t.yesno_logodds(img, texts, naive=True)
    assert t.encoded_images == n0 + 1 + len(texts)
    assert cached.shape == naive.shape == (len(texts),) and np.all(np.isfinite(cached))
    p_cached, p_naive = 1 / (1 + np.exp(-cached)), 1 / (1 + np.exp(-naive))
    assert np.all((p_cached >= 0) & (p_cached <= 1))
    np.testing.assert_allclose(p_cached, p_naive, atol=1e-3)
    np.testing.assert_allclose(cached, naive, atol=1e-3)
    np.testing.assert_allclose(t.yesno_logodds(img, texts[1:2]), naive[1:2], atol=1e-3)  # one question
    other = t.yesno_logodds(image(2, (70, 30)), texts)  # the next image does not see the previous one
    np.testing.assert_allclose(other, t.yesno_logodds(image(2, (70, 30)), texts, naive=True), atol=1e-3)
    assert np.abs(other - cached).max() > 1e-3  # the answers depend on the image


def test_gguf_answer_scores_equal_naive(lcpp):
    t = lcpp
    prep = t.prepare_answers("What is in this image? Answer with the class name.", CLASSES)
    enc = t.preprocessor(prep)(image(3))
    fast = t.answer_logliks_from_encoded(enc, prep)
    np.testing.assert_allclose(fast, t.answer_logliks_naive(image(3), prep), atol=1e-3)
    assert fast.shape == (3,) and np.all(fast < 0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """6 images of 3 classes; sample 4 is a corrupt file."""
    root = tmp_path_factory.mktemp("images")
    ids, paths, labels = [], [], []
    for i in range(6):
        p = root / CLASSES[i % 3] / f"{i:02d}.png"
        p.parent.mkdir(exist_ok=True)
        if i == 4:
            p.write_bytes(b"this is not a png")
        else:
            image(i, (30 + i, 40)).save(p)
        ids.append(f"{CLASSES[i % 3]}/{i:02d}.png")
        paths.append(p)
        labels.append(i % 3)
    return Split(ids, labels, file_loader(paths)), paths


def test_gguf_extract_driver(lcpp, dataset, tmp_path):
    split, paths = dataset
    qs = [Question(kind="yesno", text=q) for q in QUESTIONS]
    out = tmp_path / "t.h5"
    t = extract_image_yesno(lcpp, split, qs, out, classes=CLASSES, object_word="bird", chunk_images=4,
                            num_workers=2, progress=False)
    back = read_targets(out)
    assert back.kind == "image_yesno" and back.probs.shape == (5, 3)
    assert np.all((back.probs >= 0) & (back.probs <= 1)) and back.teacher == f"llama.cpp:{lcpp.name}"
    assert back.meta["failed_images"] == [split.ids[4]] and back.meta["yes_token_ids"] == lcpp.yes_ids
    np.testing.assert_array_equal(t.probs, back.probs)
    row = lcpp.yesno_logodds(Image.open(paths[3]).convert("RGB"), [q.instantiate("bird") for q in qs])
    np.testing.assert_allclose(back.logits[3], row, atol=1e-5)
    z = zero_shot_scores(lcpp, split, CLASSES, chunk_images=4, num_workers=0, progress=False)
    assert z.probs.shape == (5, 3) and np.allclose(z.probs.sum(1), 1)


def test_cli_extract_gguf_mmproj(gguf_lm, mmproj, tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import make_imagefolder
    from typer.testing import CliRunner

    from makd_cli.cli import app

    data = make_imagefolder(tmp_path / "shapes", per_class_train=2, per_class_test=1)
    write_questions(tmp_path / "q.jsonl", [Question(kind="yesno", text=q) for q in QUESTIONS])
    runner = CliRunner()
    args = ["extract", "--mllm", str(gguf_lm), "--mmproj", str(mmproj), "--data", str(data), "--questions",
            str(tmp_path / "q.jsonl"), "-o", str(tmp_path / "t.h5"), "--workers", "0", "--threads", "1", "--json"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    t = read_targets(tmp_path / "t.h5")
    assert t.kind == "image_yesno" and t.probs.shape == (6, 3) and t.teacher.startswith("llama.cpp:SmolLM2")
    assert np.all((t.probs >= 0) & (t.probs <= 1)) and t.images[0].startswith("train/")
    r = runner.invoke(app, ["extract", "--mllm", str(gguf_lm), "--data", str(data), "--questions", str(tmp_path / "q.jsonl"),
                            "-o", str(tmp_path / "u.h5")])
    assert isinstance(r.exception, MakdError) and "--mmproj PATH" in str(r.exception)  # main() prints it, exit 2
    r = runner.invoke(app, ["extract", "--teacher", "random", "--mmproj", str(mmproj), "--data", str(data),
                            "--questions", str(tmp_path / "q.jsonl"), "-o", str(tmp_path / "v.h5")])
    assert isinstance(r.exception, MakdError) and "--mmproj goes with --mllm" in str(r.exception)


# ---- InternVL2/2.5 remote-code adapter (CPU-testable parts) ---------------------------------------
from makd_cli.teachers import internvl_remote as ivl  # noqa: E402


def test_internvl_tiling_known_sizes():
    grids = ivl.tile_grids(1, 12)
    assert grids[0] == (1, 1) and all(1 <= a * b <= 12 for a, b in grids) and len(grids) == len(set(grids))
    assert [a * b for a, b in grids] == sorted(a * b for a, b in grids)

    def n_tiles(w, h, **kw):
        return len(ivl.dynamic_tiles(Image.new("RGB", (w, h)), **kw))

    assert n_tiles(448, 448) == 1  # one tile: no thumbnail
    assert n_tiles(896, 448) == 2 + 1  # 2x1 grid + thumbnail
    assert n_tiles(672, 448) == 6 + 1  # aspect 1.5: 3x2
    assert n_tiles(1000, 300) == 3 + 1  # aspect 3.33: 3x1 (6x2 ties but the image is too small for it)
    assert n_tiles(52, 40) == 12 + 1  # small images are upscaled to the closest grid: 4x3 (aspect 1.33)
    assert n_tiles(896, 448, max_num=1) == 1  # dynamic tiling off
    assert n_tiles(896, 448, use_thumbnail=False) == 2
    assert ivl.closest_grid(1000, 300, grids, 448) == (3, 1)
    # Equal distance to two grids: the larger one wins when the image has the pixels for it.
    assert ivl.closest_grid(448 * 6, 448 * 2, [(1, 1), (3, 1), (6, 2)], 448) == (6, 2)
    assert ivl.closest_grid(30, 10, [(1, 1), (3, 1), (6, 2)], 448) == (3, 1)
    # Tiles are cut row by row from the resized image.
    img = Image.new("RGB", (896, 448))
    img.paste((255, 0, 0), (448, 0, 896, 448))
    tiles = ivl.dynamic_tiles(img, 448)
    assert tiles[0].getpixel((10, 10)) == (0, 0, 0) and tiles[1].getpixel((10, 10)) == (255, 0, 0)
    assert all(t.size == (448, 448) for t in tiles)


def test_internvl_pixels_normalised():
    px = ivl.tiles_to_pixels([Image.new("RGB", (28, 28), (255, 255, 255)), Image.new("RGB", (28, 28))], 28)
    assert px.shape == (2, 3, 28, 28) and px.dtype == torch.float32
    mean, std = torch.tensor(ivl.IMAGENET_MEAN), torch.tensor(ivl.IMAGENET_STD)
    torch.testing.assert_close(px[0, :, 5, 5], (1 - mean) / std)
    torch.testing.assert_close(px[1, :, 5, 5], -mean / std)


def test_internvl_token_expansion():
    assert ivl.expand_image("a <img><IMG_CONTEXT></img>\nq", 3, 2) == "a <img>" + "<IMG_CONTEXT>" * 6 + "</img>\nq"
    assert ivl.expand_ids([1, 2, 9, 3, 4], 9, 3) == [1, 2, 9, 9, 9, 3, 4]
    with pytest.raises(MakdError):
        ivl.expand_ids([1, 9, 9], 9, 2)
    with pytest.raises(MakdError):
        ivl.expand_image("no image here", 3, 1)


class FakeConv:
    """The MPT-style conversation template of InternVL's conversation.py (internvl2_5: chatml)."""

    def __init__(self):
        self.system_template = "<|im_start|>system\n{system_message}"
        self.system_message = "template default"
        self.roles = ("<|im_start|>user\n", "<|im_start|>assistant\n")
        self.sep = "<|im_end|>\n"
        self.messages = []

    def append_message(self, role, message):
        self.messages.append([role, message])

    def get_prompt(self):
        ret = self.system_template.format(system_message=self.system_message) + self.sep
        for role, message in self.messages:
            ret += role + message + self.sep if message else role
        return ret


class FakeInternVL(torch.nn.Module):
    """InternVLChatModel's interface on a tiny Qwen2: 28 px tiles, 4 image tokens per tile."""

    def __init__(self, lm, tile: int = 28):
        super().__init__()
        self.language_model = lm
        self.proj = torch.nn.Linear(3, lm.config.hidden_size)
        self.num_image_token = 4
        self.template = "internvl2_5"
        self.system_message = "You are InternVL."
        self.conv_template = FakeConv()
        self.img_context_token_id = None
        self.config = SimpleNamespace(force_image_size=tile, vision_config=SimpleNamespace(image_size=tile),
                                      dynamic_image_size=True, min_dynamic_patch=1, max_dynamic_patch=4, use_thumbnail=True)

    def extract_feature(self, pixel_values):
        x = torch.nn.functional.adaptive_avg_pool2d(pixel_values, 2).flatten(2).transpose(1, 2)  # tiles x 4 x 3
        return 3 * torch.tanh(self.proj(x))


@pytest.fixture(scope="module")
def internvl():
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers, decoders

    special = ["<unk>", "<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>"]
    corpus = ["system user assistant You are InternVL. Answer yes or no. Is there a red bird in the image? Does the "
              "bird have wings? Is it a cat? What is in this image? Answer with the class name. cat dog red bird"] * 20
    corpus += [" Yes", " No", " yes", " no", "Yes", "No", "yes", "no"] * 50
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=special, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                               unk_token="<unk>")
    cfg = transformers.Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                                   pad_token_id=tok.pad_token_id, initializer_range=0.2)
    torch.manual_seed(0)
    model = FakeInternVL(transformers.Qwen2ForCausalLM(cfg))
    return ivl.InternVLChatTeacher(model, tok, "fake/InternVL2_5")


def test_internvl_prompt_assembly(internvl):
    t = internvl
    p = t.prompt("Is it a cat? Answer yes or no.")
    # model.chat: "<image>\n" + question in the template, the model's system message, <image> -> placeholder.
    assert p == ("<|im_start|>system\nYou are InternVL.<|im_end|>\n<|im_start|>user\n<img><IMG_CONTEXT></img>\n"
                 "Is it a cat? Answer yes or no.<|im_end|>\n<|im_start|>assistant\n")
    assert t.prompt("What is it?", "cat").endswith("<|im_start|>assistant\ncat<|im_end|>\n")
    assert t.chat_model.img_context_token_id == t.tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    assert (t.tile, t.min_num, t.max_num, t.use_thumbnail) == (28, 1, 4, True)
    prep = t.prepare_yesno(["Is it red?", "Is it a cat?"])
    ids = prep.token_ids[0]
    assert ids.count(t.context_id) == 1 and prep.cut > ids.index(t.context_id)  # the image is in the shared prefix
    expanded = t.tokenizer(ivl.expand_image(prep.prompts[0], t.num_image_token, 3))["input_ids"]
    assert expanded == ivl.expand_ids(ids, t.context_id, 12)
    enc = t.preprocessor(prep)(image(0, (45, 70)))  # aspect 1.56 -> 2x1 grid + thumbnail
    assert enc["pixel_values"].shape == (3, 3, 28, 28)


def test_internvl_cached_equals_naive(internvl):
    t = internvl
    texts = [q.replace("<object>", "bird") for q in QUESTIONS]
    img = image(1, (45, 70))
    naive = t.yesno_logodds(img, texts, naive=True)
    cached = t.yesno_logodds(img, texts)
    assert cached.shape == (3,) and np.all(np.isfinite(cached))
    np.testing.assert_allclose(cached, naive, atol=1e-4)
    np.testing.assert_allclose(t.yesno_logodds(img, texts, batch_questions=2), naive, atol=1e-4)
    other = t.yesno_logodds(image(2, (30, 80)), texts)
    np.testing.assert_allclose(other, t.yesno_logodds(image(2, (30, 80)), texts, naive=True), atol=1e-4)
    assert np.abs(other - cached).max() > 1e-4  # the vision features reach the answers
    prep = t.prepare_answers("What is in this image? Answer with the class name.", CLASSES)
    fast = t.answer_logliks_from_encoded(t.preprocessor(prep)(img), prep)
    np.testing.assert_allclose(fast, t.answer_logliks_naive(img, prep), atol=1e-4)


def test_load_mllm_dispatches_internvl_chat(tmp_path, monkeypatch):
    """An internvl_chat config with --trust-remote-code goes to the adapter (its loader stubbed)."""
    pytest.importorskip("transformers")
    d = tmp_path / "internvl"
    d.mkdir()
    (d / "configuration_internvl_chat.py").write_text(
        "from transformers import PretrainedConfig\n\n\nclass InternVLChatConfig(PretrainedConfig):\n"
        "    model_type = 'internvl_chat'\n")
    (d / "config.json").write_text('{"model_type": "internvl_chat", "auto_map": {"AutoConfig": '
                                   '"configuration_internvl_chat.InternVLChatConfig"}}')
    seen = {}

    def fake_load(repo, config, **kw):
        seen.update(repo=repo, model_type=config.model_type, **kw)
        return "teacher"

    monkeypatch.setattr(ivl, "load_internvl_chat", fake_load)
    assert load_mllm(str(d), device="cpu", trust_remote_code=True) == "teacher"
    assert seen["repo"] == str(d) and seen["model_type"] == "internvl_chat" and seen["local_files_only"] is True
    with pytest.raises(MakdError, match="--trust-remote-code"):
        load_mllm(str(d), device="cpu")
