"""Multimodal yes/no teacher on tiny random models (LLaVA, Qwen2-VL, InternVL) built from configs:
no download. The batched cached-prefix path must equal the one-prompt-at-a-time reference."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from makd_cli.data.base import Split, file_loader
from makd_cli.errors import MakdError
from makd_cli.extract.image_yesno import extract_image_yesno, zero_shot_scores
from makd_cli.formats.questions import Question
from makd_cli.formats.targets import read_targets
from makd_cli.teachers.hf_mllm import HFMultimodalTeacher, answer_token_ids, load_mllm, resolve_model_id

transformers = pytest.importorskip("transformers")
REPO = Path(__file__).resolve().parents[1]
SPECIAL = ["<unk>", "<s>", "</s>", "<pad>", "<image>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
           "<|vision_end|>", "<|image_pad|>", "<|video_pad|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
QUESTIONS = ["Is there a red <object> in the image?", "Does the <object> have wings?", "Is it a cat?",
             "Is the <object> red or a dog in the image?", "Can the <object> fly?"]
CLASSES = ["cat", "dog", "red bird"]
# Chat templates shaped like the real ones (image first, then the text, then the generation prompt).
LLAVA_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}USER: {% for c in m['content'] %}{% if c['type'] == 'image' %}"
    "<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %} {% else %}ASSISTANT: {{ m['content'][0]['text'] }}</s>"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def chatml(image: str) -> str:
    return (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}{% if c['type'] == 'image' %}"
        + image + "{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


@pytest.fixture(scope="module")
def tokenizer_object():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    corpus = ["USER: ASSISTANT: user assistant Answer yes or no. Is there a red object in the image? Does the "
              "object have wings? Is it a cat? Can it fly? What is in this image? Answer with the class name. "
              "cat dog bird"] * 20 + [" Yes", " No", " yes", " no", "Yes", "No", "yes", "no"] * 50
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tk


def make_tokenizer(tk, **extra):
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>",
                                                pad_token="<pad>", unk_token="<unk>", **extra)


def text_config(tok, **kw):
    return dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=512, pad_token_id=tok.pad_token_id,
                initializer_range=0.2, **kw)  # larger weights: answers that depend on every input


def tiny_llava(tk):
    tf = transformers
    tok = make_tokenizer(tk)
    cfg = tf.LlavaConfig(
        vision_config=tf.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                          image_size=28, patch_size=7),
        text_config=tf.LlamaConfig(**text_config(tok)), image_token_id=tok.convert_tokens_to_ids("<image>"))
    torch.manual_seed(0)
    model = tf.LlavaForConditionalGeneration(cfg)
    ip = tf.CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    proc = tf.LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=7, vision_feature_select_strategy="default",
                             num_additional_image_tokens=1, chat_template=LLAVA_TEMPLATE)
    return model, proc


def tiny_qwen2vl(tk):
    tf = transformers
    tok = make_tokenizer(tk)
    c = tok.convert_tokens_to_ids
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
    cfg = tf.Qwen2VLConfig(
        text_config=text_config(tok, rope_parameters=rope, bos_token_id=c("<s>"), eos_token_id=c("</s>")),
        vision_config=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, patch_size=14, spatial_merge_size=2,
                           temporal_patch_size=2),
        image_token_id=c("<|image_pad|>"), video_token_id=c("<|video_pad|>"),
        vision_start_token_id=c("<|vision_start|>"), vision_end_token_id=c("<|vision_end|>"))
    torch.manual_seed(0)
    model = tf.Qwen2VLForConditionalGeneration(cfg)
    proc = tf.Qwen2VLProcessor(image_processor=tf.Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112),
                               tokenizer=tok, video_processor=tf.Qwen2VLVideoProcessor(),
                               chat_template=chatml("<|vision_start|><|image_pad|><|vision_end|>"))
    return model, proc


def tiny_internvl(tk):
    tf = transformers
    tok = make_tokenizer(tk, extra_special_tokens={"start_image_token": "<img>", "end_image_token": "</img>",
                                                   "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"})
    cfg = tf.InternVLConfig(
        text_config=dict(model_type="qwen2", **text_config(tok)),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=[28, 28], patch_size=[7, 7]),
        image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"), image_seq_length=4)
    torch.manual_seed(0)
    model = tf.InternVLForConditionalGeneration(cfg)
    ip = tf.GotOcr2ImageProcessor(size={"height": 28, "width": 28}, crop_to_patches=True, max_patches=2)
    proc = tf.InternVLProcessor(image_processor=ip, tokenizer=tok, video_processor=tf.InternVLVideoProcessor(),
                                image_seq_length=4, chat_template=chatml("<IMG_CONTEXT>\n"))
    return model, proc


FAMILIES = {"llava": tiny_llava, "qwen2vl": tiny_qwen2vl}
if hasattr(transformers, "InternVLConfig"):
    FAMILIES["internvl"] = tiny_internvl


@pytest.fixture(scope="module")
def teachers(tokenizer_object):
    return {name: HFMultimodalTeacher(*build(tokenizer_object), name) for name, build in FAMILIES.items()}


@pytest.fixture(scope="module")
def llava_dir(tokenizer_object, tmp_path_factory):
    """A saved tiny LLaVA, loaded back through load_mllm like a real checkpoint directory."""
    d = tmp_path_factory.mktemp("tiny_llava")
    model, proc = tiny_llava(tokenizer_object)
    model.save_pretrained(d)
    proc.save_pretrained(d)
    return d


def image(seed: int, size=(40, 52)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """11 images of 3 classes; sample 7 is a corrupt file."""
    root = tmp_path_factory.mktemp("images")
    ids, paths, labels = [], [], []
    for i in range(11):
        label = i % 3
        p = root / CLASSES[label] / f"{i:02d}.png"
        p.parent.mkdir(exist_ok=True)
        if i == 7:
            p.write_bytes(b"this is not a png")
        else:
            image(i, (30 + i, 40)).save(p)
        ids.append(f"{CLASSES[label]}/{i:02d}.png")
        paths.append(p)
        labels.append(label)
    return {"ids": ids, "paths": [str(p) for p in paths], "labels": labels}


def make_split(ds) -> Split:
    return Split(ds["ids"], ds["labels"], file_loader([Path(p) for p in ds["paths"]]))


def questions():
    return [Question(kind="yesno", text=t) for t in QUESTIONS]


def test_aliases_and_yes_no_tokens(teachers):
    assert resolve_model_id("llava-1.5-7b") == "llava-hf/llava-1.5-7b-hf"
    assert resolve_model_id("internvl2-8b") == "OpenGVLab/InternVL2-8B"
    assert resolve_model_id("some/repo") == "some/repo"
    tok = teachers["llava"].tokenizer
    assert set(answer_token_ids(tok, ["Yes", " Yes"])) == {tok.convert_tokens_to_ids("Yes"), tok.convert_tokens_to_ids("ĠYes")}
    for t in teachers.values():
        assert len(t.yes_ids) >= 2 and len(t.no_ids) >= 2 and not set(t.yes_ids) & set(t.no_ids)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_batched_equals_naive(teachers, family):
    t = teachers[family]
    texts = [q.replace("<object>", "bird") for q in QUESTIONS]
    img = image(1, (45, 70))  # not square: Qwen2-VL's grid and InternVL's tiles depend on the shape
    naive = t.yesno_logodds(img, texts, naive=True)
    batched = t.yesno_logodds(img, texts)
    assert batched.shape == naive.shape == (len(texts),)
    assert np.all(np.isfinite(batched))
    np.testing.assert_allclose(batched, naive, atol=1e-4)
    np.testing.assert_allclose(t.yesno_logodds(img, texts, batch_questions=2), naive, atol=1e-4)  # padded batches
    np.testing.assert_allclose(t.yesno_logodds(img, texts[2:3]), naive[2:3], atol=1e-4)  # one question: no shared text
    # Another image must not reuse the first one's prefix or position offset.
    img2 = image(2, (70, 30))
    other = t.yesno_logodds(img2, texts)
    np.testing.assert_allclose(other, t.yesno_logodds(img2, texts, naive=True), atol=1e-4)
    assert np.abs(other - batched).max() > 1e-3  # the answers do depend on the image


def test_unspliceable_prompts_are_refused(teachers):
    t = teachers["llava"]
    prep = t.prepare_yesno(["Is it red?", "Is it a cat?"])
    # Pretend the tokenizer wrote the second prompt differently from what the processor produces.
    bad = dataclasses.replace(prep, token_ids=[prep.token_ids[0], prep.token_ids[1][:-1] + [t.tokenizer.pad_token_id]])
    with pytest.raises(MakdError, match="naive path"):
        t.yesno_from_encoded(t.preprocessor(bad)(image(0)), bad)


@pytest.mark.parametrize("family", [f for f in ("llava", "qwen2vl") if f in FAMILIES])
def test_answer_scores_equal_naive(teachers, family):
    t = teachers[family]
    prep = t.prepare_answers("What is in this image? Answer with the class name.", CLASSES + ["dog cat"])
    assert t.prompt("Q?", "cat").endswith(("cat</s>", "cat<|im_end|>\n"))  # the finished turn is scored
    enc = t.preprocessor(prep)(image(3))
    fast = t.answer_logliks_from_encoded(enc, prep, batch_answers=3)
    np.testing.assert_allclose(fast, t.answer_logliks_naive(image(3), prep), atol=1e-4)
    assert np.all(fast < 0)


def test_extract_writes_targets_and_skips_corrupt(llava_dir, dataset, tmp_path, capsys):
    teacher = load_mllm(str(llava_dir), device="cpu")
    out = tmp_path / "t.h5"
    qs = questions()
    t = extract_image_yesno(teacher, make_split(dataset), qs, out, classes=CLASSES, object_word="bird",
                            chunk_images=4, num_workers=2, progress=False)
    back = read_targets(out)
    good = [i for i in range(11) if i != 7]
    assert back.kind == "image_yesno" and back.probs.shape == (10, len(qs))
    assert back.images == [dataset["ids"][i] for i in good] and list(back.labels) == [dataset["labels"][i] for i in good]
    assert back.meta["failed_images"] == [dataset["ids"][7]] and "1 unreadable" in capsys.readouterr().err
    assert np.all((back.probs >= 0) & (back.probs <= 1))
    np.testing.assert_allclose(back.probs, 1 / (1 + np.exp(-back.logits)), atol=1e-6)
    assert back.question_ids == [q.id for q in qs] and back.teacher == f"transformers:{llava_dir}"
    np.testing.assert_array_equal(t.probs, back.probs)
    assert not Path(str(out) + ".partial").exists()
    # Rows are the teacher's answers for those images, with <object> replaced by the object word.
    row = teacher.yesno_logodds(Image.open(dataset["paths"][3]).convert("RGB"), [q.instantiate("bird") for q in qs])
    np.testing.assert_allclose(back.logits[3], row, atol=1e-5)
    naive = extract_image_yesno(teacher, make_split(dataset), qs, tmp_path / "naive.h5", classes=CLASSES,
                                object_word="bird", chunk_images=4, num_workers=1, progress=False, naive=True)
    np.testing.assert_allclose(naive.logits, back.logits, atol=1e-4)
    assert naive.meta["naive"] and naive.images == back.images


class Interrupted(Exception):
    pass


class KillAfter:
    """The teacher, dying after ``n`` images (as a kill -9 would: nothing is cleaned up)."""

    def __init__(self, inner, n):
        self.inner, self.n, self.calls = inner, n, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def yesno_from_encoded(self, *a, **kw):
        self.calls += 1
        if self.calls > self.n:
            raise Interrupted
        return self.inner.yesno_from_encoded(*a, **kw)


def test_resume_after_interruption(llava_dir, dataset, tmp_path):
    teacher = load_mllm(str(llava_dir), device="cpu")
    split, qs = make_split(dataset), questions()
    kw = dict(classes=CLASSES, chunk_images=3, num_workers=0, progress=False)
    full = tmp_path / "full.h5"
    extract_image_yesno(teacher, split, qs, full, **kw)
    out = tmp_path / "resumed.h5"
    with pytest.raises(Interrupted):
        extract_image_yesno(KillAfter(teacher, 7), split, qs, out, **kw)  # chunks 0, 1 done; 2 half done
    partial = Path(str(out) + ".partial")
    assert sorted(p.name for p in partial.iterdir()) == ["fingerprint.json", "unit-chunk000000.npz", "unit-chunk000001.npz"]
    with pytest.raises(MakdError, match="unfinished run with other inputs"):  # other questions: refuse to mix
        extract_image_yesno(teacher, split, qs[:2], out, **kw)
    counting = KillAfter(teacher, 10**6)
    extract_image_yesno(counting, split, qs, out, **kw)
    assert counting.calls == 11 - 6 - 1  # only chunks 2-3 ran again; sample 7 is unreadable
    a, b = read_targets(full), read_targets(out)
    np.testing.assert_array_equal(a.logits, b.logits)
    assert a.images == b.images and a.meta == b.meta
    assert full.read_bytes() == out.read_bytes()
    assert not partial.exists()


def test_zero_shot_scores(teachers, dataset):
    t = zero_shot_scores(teachers["llava"], make_split(dataset), CLASSES, chunk_images=4, num_workers=0, progress=False)
    assert t.kind == "image_clip" and t.probs.shape == (10, 3)
    np.testing.assert_allclose(t.probs.sum(1), 1, atol=1e-5)
    assert t.meta["source"] == "mllm_zero_shot" and 0 <= t.meta["zero_shot_accuracy"] <= 1
    assert t.meta["failed_images"] == [dataset["ids"][7]]


def test_load_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MakdError, match="huggingface-cli download llava-hf/llava-1.5-7b-hf"):
        load_mllm("llava-1.5-7b", device="cpu")
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "config.json").write_text(json.dumps({"model_type": "internvl_chat", "auto_map": {
        "AutoConfig": "configuration_internvl_chat.InternVLChatConfig"}}))
    with pytest.raises(MakdError, match="--trust-remote-code"):
        load_mllm(str(remote), device="cpu")


DIST_SCRIPT = """
import json, sys
from pathlib import Path
from makd_cli.data.base import Split, file_loader
from makd_cli.extract.image_yesno import extract_image_yesno
from makd_cli.formats.questions import Question
from makd_cli.teachers.hf_mllm import load_mllm
model_dir, spec, out = sys.argv[1:4]
ds = json.loads(Path(spec).read_text())
split = Split(ds["ids"], ds["labels"], file_loader([Path(p) for p in ds["paths"]]))
qs = [Question(kind="yesno", text=t) for t in ds["questions"]]
extract_image_yesno(load_mllm(model_dir, device="cpu"), split, qs, out, classes=ds["classes"], chunk_images=2,
                    num_workers=1, progress=False)
"""


@pytest.mark.slow
def test_torchrun_two_ranks_equal_one(llava_dir, dataset, tmp_path):
    script, spec = tmp_path / "run.py", tmp_path / "spec.json"
    script.write_text(DIST_SCRIPT)
    spec.write_text(json.dumps({**dataset, "questions": QUESTIONS, "classes": CLASSES}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    one, two = tmp_path / "one.h5", tmp_path / "two.h5"
    subprocess.run([sys.executable, str(script), str(llava_dir), str(spec), str(one)], env=env, check=True, timeout=300)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    str(script), str(llava_dir), str(spec), str(two)], env=env, check=True, timeout=300)
    a, b = read_targets(one), read_targets(two)
    np.testing.assert_array_equal(a.logits, b.logits)
    assert a.images == b.images and a.meta == b.meta
    assert not Path(str(two) + ".partial").exists()


def test_cli_makd_pipeline_with_tiny_mllm(llava_dir, tmp_path):
    """`makd extract --mllm DIR --data D` -> image_yesno targets -> `makd train --method makd` -> `makd eval`."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import make_imagefolder
    from typer.testing import CliRunner

    from makd_cli.cli import app
    from makd_cli.formats.questions import write_questions
    from makd_cli.formats.targets import read_targets

    data = make_imagefolder(tmp_path / "shapes", per_class_train=4, per_class_test=2)
    write_questions(tmp_path / "q.jsonl", questions())
    runner = CliRunner()
    r = runner.invoke(app, ["extract", "--mllm", str(llava_dir), "--data", str(data), "--questions", str(tmp_path / "q.jsonl"),
                            "-o", str(tmp_path / "t.h5"), "--workers", "0", "--json"])
    assert r.exit_code == 0, r.output
    t = read_targets(tmp_path / "t.h5")
    assert t.kind == "image_yesno" and t.probs.shape == (12, len(QUESTIONS)) and t.images[0].startswith("train/")
    r = runner.invoke(app, ["train", "--data", str(data), "--method", "makd", "--targets", str(tmp_path / "t.h5"), "--student", "small_cnn",
                            "--epochs", "1", "--batch-size", "4", "-o", str(tmp_path / "run"), "--json"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["eval", str(tmp_path / "run"), "--json"])
    assert r.exit_code == 0, r.output
