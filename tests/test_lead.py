"""LEAD: the CLIP-description teacher (tiny random CLIP built from a config, no download), the
entropy-adaptive weighting, MoCo v2 parts, lead / lead-ssl training and the probe metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from makd_cli.data import load_dataset
from makd_cli.errors import MakdError
from makd_cli.evaluate.probe import linear_probe, retrieval_metrics, sgd_linear_probe
from makd_cli.extract.clip_scores import extract_clip_scores
from makd_cli.formats.checkpoint import load_checkpoint
from makd_cli.formats.questions import Question, write_questions
from makd_cli.formats.targets import Targets, read_targets, write_targets
from makd_cli.losses import lead_weighted_kl, normalized_entropy
from makd_cli.methods import MethodContext, build_terms
from makd_cli.methods.base import Batch
from makd_cli.teachers.clip import class_distribution, load_clip
from makd_cli.train import TrainConfig, train
from makd_cli.methods.lead import lead_reference_kl, text_logits
from makd_cli.train.moco import MoCoQueue, info_nce, lead_ssl_loss, momentum_update, train_moco, unshuffle

from conftest import CLASSES

transformers = pytest.importorskip("transformers")
CONTEXT = 48  # the tiny CLIP's text context (OpenAI's: 77); its tokenizer writes one token per character
DESCRIPTIONS = {
    "blue dot": "a small blue dot in the middle",
    "green bar": "a tall green bar from the top of the picture to the bottom, upright and narrow, never bent",
    "red square": "a large red square",
}


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    from tokenizers.pre_tokenizers import ByteLevel

    tf = transformers
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in sorted(ByteLevel.alphabet()):  # characters only, no merges: a real CLIPTokenizer, built offline
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    tok = tf.CLIPTokenizer(vocab=vocab, merges=[], model_max_length=CONTEXT)
    cfg = tf.CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         max_position_embeddings=CONTEXT, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                           patch_size=8),
        projection_dim=16)
    torch.manual_seed(0)
    model = tf.CLIPModel(cfg)
    proc = tf.CLIPProcessor(image_processor=tf.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                            tokenizer=tok)
    d = tmp_path_factory.mktemp("tiny-clip")
    model.save_pretrained(d)
    proc.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def teacher(clip_dir):
    return load_clip(str(clip_dir), device="cpu")


def descriptions(classes=CLASSES) -> list[Question]:
    return [Question("description", DESCRIPTIONS[c], class_name=c) for c in classes]


# ------------------------------------------------------------------------------------- teacher
def test_embeddings_distribution_entropy_and_truncation(teacher, tiny_data, tmp_path, capsys):
    assert teacher.context_length == CONTEXT
    text, truncated = teacher.encode_texts([DESCRIPTIONS[c] for c in CLASSES])
    assert text.shape == (3, 16) and truncated == [1]  # only the green bar's description is longer than 48 tokens
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1, atol=1e-5)

    split = load_dataset(str(tiny_data)).train
    out = tmp_path / "clip.h5"
    t = extract_clip_scores(teacher, split, list(reversed(descriptions())), CLASSES, out, chunk_images=8, num_workers=0,
                            progress=False)
    err = capsys.readouterr().err
    assert "1 of 3 descriptions are longer than CLIP's 48-token context and were truncated (first: 'green bar')" in err
    assert t.kind == "image_clip" and t.probs.shape == (36, 3) and t.images == split.ids
    np.testing.assert_allclose(t.probs.sum(1), 1, atol=1e-5)
    assert t.question_ids == [q.id for q in descriptions()]  # matched by class_name, in the dataset's class order
    assert np.all((t.entropy >= 0) & (t.entropy <= 1))
    np.testing.assert_allclose(t.entropy, normalized_entropy(torch.from_numpy(t.probs).double()).numpy(), atol=1e-5)
    assert t.meta["truncated_descriptions"] == ["green bar"] and t.meta["temperature"] == 0.02
    # logits are cos(image, description) / 0.02, computed independently here for three images
    img = teacher.encode_images([split.load(i) for i in (0, 17, 35)])
    assert img.shape == (3, 16)
    np.testing.assert_allclose(t.logits[[0, 17, 35]], img @ text.T / 0.02, rtol=1e-4, atol=1e-3)
    back = read_targets(out)
    np.testing.assert_array_equal(back.entropy, t.entropy)
    assert not Path(str(out) + ".partial").exists()


def test_class_distribution_by_hand():
    img = np.array([[1.0, 0.0], [0.0, 1.0]])
    txt = np.array([[1.0, 0.0], [0.0, 1.0]])
    logits, probs, h = class_distribution(img, txt, temperature=0.5)
    np.testing.assert_allclose(logits, [[2, 0], [0, 2]])
    p = math.exp(2) / (math.exp(2) + 1)
    np.testing.assert_allclose(probs[0], [p, 1 - p])
    np.testing.assert_allclose(h, -(p * math.log(p) + (1 - p) * math.log(1 - p)) / math.log(2))


def test_description_matching_errors(teacher, tiny_data):
    split = load_dataset(str(tiny_data)).train
    with pytest.raises(MakdError, match="no description for 1 of the dataset's 3 classes \\(first: 'red square'\\)"):
        extract_clip_scores(teacher, split, descriptions(CLASSES[:2]), CLASSES, progress=False, num_workers=0)
    with pytest.raises(MakdError, match="two descriptions for class 'blue dot'"):
        extract_clip_scores(teacher, split, descriptions() + [Question("description", "another", class_name="blue dot")],
                            CLASSES, progress=False, num_workers=0)


def test_offline_model_not_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(MakdError, match="not in the local Hugging Face cache.*huggingface-cli download openai/clip-vit-base-patch16"):
        load_clip("clip-b16", device="cpu")


class Interrupted(Exception):
    pass


class KillAfter:
    """The teacher, dying after ``n`` chunk forwards (as a kill -9 would: nothing is cleaned up)."""

    def __init__(self, inner, n):
        self.inner, self.n, self.calls = inner, n, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode_pixels(self, pixels):
        self.calls += 1
        if self.calls > self.n:
            raise Interrupted
        return self.inner.encode_pixels(pixels)


def test_resume_skips_finished_chunks(teacher, tiny_data, tmp_path):
    split = load_dataset(str(tiny_data)).train  # 36 images: chunks of 8 -> 5 chunks
    kw = dict(chunk_images=8, num_workers=0, progress=False)
    full, out = tmp_path / "full.h5", tmp_path / "resumed.h5"
    extract_clip_scores(teacher, split, descriptions(), CLASSES, full, **kw)
    with pytest.raises(Interrupted):
        extract_clip_scores(KillAfter(teacher, 2), split, descriptions(), CLASSES, out, **kw)
    partial = Path(str(out) + ".partial")
    assert sorted(p.name for p in partial.iterdir()) == ["fingerprint.json", "unit-chunk000000.npz", "unit-chunk000001.npz"]
    counting = KillAfter(teacher, 10**6)
    extract_clip_scores(counting, split, descriptions(), CLASSES, out, **kw)
    assert counting.calls == 3
    assert full.read_bytes() == out.read_bytes() and not partial.exists()


# ------------------------------------------------------------------------------------- weighting
def test_lead_weighting_by_hand():
    logits = torch.zeros(3, 2)  # the student says 50/50
    p = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.9, 0.1]])
    h = normalized_entropy(p)
    h09 = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1)) / math.log(2)
    np.testing.assert_allclose(h.numpy(), [0.0, 1.0, h09], atol=1e-6)
    kl = [math.log(2), 0.0, 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)]
    want = ((1 - 0) * kl[0] + (1 - 1) * kl[1] + (1 - h09 ** 2) * kl[2]) / 3  # (1 - H^2) * KL(teacher || student)
    assert lead_weighted_kl(logits, p, h).item() == pytest.approx(want, rel=1e-5)
    # lead-ssl: H^2 on InfoNCE, 1 - H^2 on KL
    nce = torch.tensor([2.0, 3.0, 1.0])
    total, con, kd = lead_ssl_loss(nce, logits, p, h, weight=2.0, kl="batchmean")
    assert con.item() == pytest.approx((0 * 2.0 + 1 * 3.0 + h09 ** 2 * 1.0) / 3, rel=1e-5)
    assert kd.item() == pytest.approx(2 * want, rel=1e-5)
    assert total.item() == pytest.approx(con.item() + kd.item())
    total, con, kd = lead_ssl_loss(nce, logits, None, None)  # no teacher: plain MoCo
    assert total.item() == pytest.approx(2.0) and kd.item() == 0


def reference_distill(f_s, f_t, text, temperature=0.02, beta=20.0):
    """LEAD-pp main.py's distillation lines, written out: f_s the student's normalised projection, f_t
    the teacher's normalised image embedding, text the description tensor."""
    t_soft = torch.softmax(f_t @ text.T / temperature, dim=1)
    s_soft = torch.softmax(f_s @ text.T / temperature, dim=1)
    kl = nn.KLDivLoss(reduction="none")(s_soft.log(), t_soft)
    entropy = -torch.sum(t_soft * torch.log(t_soft + 1e-10), dim=1) / math.log(text.shape[0])
    w_distill = torch.tensor([1 - e * e for e in entropy])
    return (kl.mean(dim=1) * w_distill * beta).sum(), t_soft


def test_reference_kl_and_text_student_against_the_public_code():
    torch.manual_seed(0)
    C, D, B = 5, 12, 7
    text = nn.functional.normalize(torch.randn(C, D), dim=1)
    proj = torch.randn(B, D) * 3  # the student's projection, before normalisation
    f_t = nn.functional.normalize(text[torch.randint(0, C, (B,))] + 0.4 * torch.randn(B, D), dim=1)
    want, t_soft = reference_distill(nn.functional.normalize(proj, dim=1), f_t, text)
    # cos(projection, description) / 0.02, by hand
    cos = torch.tensor([[float(proj[i] @ text[c] / proj[i].norm()) for c in range(C)] for i in range(B)])
    torch.testing.assert_close(text_logits(proj, text, 0.02), cos / 0.02, rtol=1e-5, atol=1e-4)
    got = lead_reference_kl(text_logits(proj, text, 0.02), t_soft, normalized_entropy(t_soft), 20.0)
    assert got.item() == pytest.approx(want.item(), rel=1e-4)
    nce = torch.rand(B)
    total, con, kd = lead_ssl_loss(nce, text_logits(proj, text, 0.02), t_soft, normalized_entropy(t_soft))  # defaults: 20, reference
    assert kd.item() == pytest.approx(want.item(), rel=1e-4) and total.item() == pytest.approx(con.item() + kd.item(), rel=1e-6)


def test_shuffle_bn_unshuffle_puts_keys_back():
    """Two processes of 3 views each, simulated: the permuted batch is split per process, each half
    encoded with its own batch statistics (a batch-norm-like encoder), gathered and unshuffled."""
    views = torch.arange(6, dtype=torch.float32).view(6, 1) * torch.tensor([[1.0, 2.0]])
    perm = torch.tensor([4, 0, 5, 2, 1, 3])

    def encode(x):  # per-batch centring: what makes shuffle-BN matter
        return torch.cat([x - x.mean(0), x], dim=1)

    keys = torch.cat([encode(views[perm[:3]]), encode(views[perm[3:]])])
    back = unshuffle(keys, perm)
    torch.testing.assert_close(back[:, 2:], views)  # every key back at its view's row
    for i in range(6):
        half = perm[:3] if i in perm[:3] else perm[3:]
        torch.testing.assert_close(back[i, :2], views[i] - views[half].mean(0))


def test_lead_term_reads_image_clip_targets(tiny_data):
    split = load_dataset(str(tiny_data)).train
    rng = np.random.default_rng(0)
    z = rng.standard_normal((len(split), 3)) * 3
    probs = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    t = Targets("image_clip", CLASSES, [], probs, z, images=list(reversed(split.ids)), labels=split.labels[::-1])
    ctx = MethodContext(num_classes=3, targets=t, train_ids=split.ids)
    (term,) = build_terms("lead", ctx)
    assert term.weight == 1.0 and term.extra_dim == 0
    idx = torch.tensor([0, 5, 9])
    logits = torch.randn(3, 3)
    rows = torch.from_numpy(probs[::-1].copy())[idx].float()  # image i sits in row N-1-i
    want = lead_weighted_kl(logits, rows, normalized_entropy(rows))
    got = term.loss(logits, logits[:, :0], Batch(torch.zeros(3), torch.zeros(3, dtype=torch.long), idx))
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


# ------------------------------------------------------------------------------------- MoCo parts
def test_queue_wraps_around():
    q = MoCoQueue(dim=2, size=5)
    keys = torch.arange(22, dtype=torch.float32).reshape(11, 2)
    q.enqueue(keys[:3])
    assert int(q.ptr) == 3 and torch.equal(q.queue[:3], keys[:3])
    old4 = q.queue[4].clone()
    q.enqueue(keys[3:5])
    assert int(q.ptr) == 0 and torch.equal(q.queue[3:5], keys[3:5])
    assert not torch.equal(q.queue[4], old4)
    q.enqueue(keys[5:8])  # 3 more: rows 0, 1, 2 (the oldest) replaced
    assert int(q.ptr) == 3 and torch.equal(q.queue[:3], keys[5:8]) and torch.equal(q.queue[3:], keys[3:5])
    q.enqueue(keys[8:11])  # crosses the end: rows 3, 4 then 0
    assert int(q.ptr) == 1
    assert torch.equal(q.queue, torch.stack([keys[10], keys[6], keys[7], keys[8], keys[9]]))
    q.enqueue(keys[:7])  # more keys than room: the newest 5
    assert int(q.ptr) == 0 and torch.equal(q.queue, keys[2:7])


def test_momentum_update_and_info_nce():
    torch.manual_seed(0)
    query, key = nn.Linear(3, 2), nn.Linear(3, 2)
    wq, wk = query.weight.detach().clone(), key.weight.detach().clone()
    momentum_update(query, key, 0.9)
    torch.testing.assert_close(key.weight, 0.9 * wk + 0.1 * wq)
    torch.testing.assert_close(query.weight, wq)  # the query encoder is untouched
    q = torch.tensor([[1.0, 0.0]])
    nce = info_nce(q, q.clone(), torch.tensor([[0.0, 1.0], [-1.0, 0.0]]), temperature=0.5)
    assert nce.item() == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(-2))), rel=1e-6)


# ------------------------------------------------------------------------------------- training
def confident_targets(data: Path, path: Path, text_dim: int = 8) -> Path:
    """image_clip targets that mostly agree with the labels, with mixed confidence, and random
    normalised description embeddings (C x text_dim)."""
    split = load_dataset(str(data)).train
    rng = np.random.default_rng(0)
    z = np.eye(3)[split.labels] * rng.uniform(1, 6, (len(split), 1)) + rng.standard_normal((len(split), 3)) * 0.3
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    emb = rng.standard_normal((3, text_dim))
    write_targets(path, Targets("image_clip", CLASSES, [], p, z, teacher="test", images=split.ids, labels=split.labels,
                                entropy=normalized_entropy(torch.from_numpy(p)).numpy(),
                                text_embeddings=emb / np.linalg.norm(emb, axis=1, keepdims=True)))
    return path


def cfg(data, out, **kw):
    base = dict(data=str(data), out=str(out), student="small_cnn", epochs=4, batch_size=8, lr=0.05, quiet=True, val_fraction=0.25,
                image_size=16)
    base.update(kw)
    # the moco task's options (--moco-*) are the plug-in's: they go in options, never in the config's fields
    options = {**base.pop("options", {}), **{k: base.pop(k) for k in list(base) if k.startswith("moco_")}}
    return TrainConfig(**base, options=options)


def test_lead_trains(tiny_data, tmp_path):
    targets = confident_targets(tiny_data, tmp_path / "t.h5")
    hist = train(cfg(tiny_data, tmp_path / "lead", method="lead", targets=str(targets)))["history"]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"] and hist[-1]["train_lead"] < hist[0]["train_lead"]


def test_lead_ssl_trains_and_resumes_exactly(tiny_data, tmp_path, stopped_after_epoch):
    targets = confident_targets(tiny_data, tmp_path / "t.h5")
    common = dict(method="lead-ssl", targets=str(targets), epochs=4, moco_queue=16, moco_dim=8, moco_momentum=0.99,
                  options={"lead_teacher": "offline"})
    hist = train_moco(cfg(tiny_data, tmp_path / "ssl", **common))["history"]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert all(0 <= r["train_entropy"] <= 1 and "val_top1" not in r for r in hist)
    ckpt = load_checkpoint(tmp_path / "ssl" / "best.pt")
    assert ckpt["head"]["method"] == "lead-ssl" and ckpt["num_classes"] == 3 and ckpt["head"]["extra_dim"] == 0
    assert ckpt["head"]["terms"][0]["moco_queue"] == 16 and "moco" not in ckpt
    assert ckpt["split"] == {"train": 36, "val": 0, "test": 12}  # no hold-out: nothing is chosen on one
    assert ckpt["head"]["terms"][0]["student_distribution"] == "text" and ckpt["head"]["terms"][0]["kl"] == "reference"
    last = load_checkpoint(tmp_path / "ssl" / "last.pt")
    assert last["moco"]["queue"]["queue"].shape == (16, 8)

    with stopped_after_epoch(2):
        train_moco(cfg(tiny_data, tmp_path / "cut", **common))
    with pytest.raises(MakdError, match="already holds a run"):
        train_moco(cfg(tiny_data, tmp_path / "cut", **common))
    with pytest.raises(MakdError, match="trained with --lead-student text, not head"):
        train_moco(cfg(tiny_data, tmp_path / "cut", resume=True, **{**common, "options": {**common["options"], "lead_student": "head"}}))
    for option, message in (({"lead_kl_weight": 10.0}, "--lead-kl-weight 20.0, not 10.0"),
                            ({"lead_kl": "batchmean"}, "--lead-kl reference, not batchmean")):
        with pytest.raises(MakdError, match=message):
            train_moco(cfg(tiny_data, tmp_path / "cut", resume=True, **{**common, "options": {**common["options"], **option}}))
    train_moco(cfg(tiny_data, tmp_path / "cut", resume=True, **common))
    b = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert [r["train_loss"] for r in b["history"]] == [r["train_loss"] for r in hist]
    for k in last["model"]:
        assert torch.equal(last["model"][k], b["model"][k]), k
    assert torch.equal(last["moco"]["queue"]["queue"], b["moco"]["queue"]["queue"])

    # a run from before issue 16 (class head, stored teacher, KL batch mean x --aux-weight): its head has no "kl"
    from makd_cli.formats.checkpoint import save_checkpoint

    (tmp_path / "old").mkdir()
    term = last["head"]["terms"][0]
    for key in ("kl", "student_distribution"):
        term.pop(key)
    term.update(teacher="image_clip", weight=1.0)
    save_checkpoint(tmp_path / "old" / "last.pt", last)
    old = {**common, "options": {**common["options"], "lead_student": "head"}}
    with pytest.raises(MakdError, match="--lead-kl batchmean, not reference"):
        train_moco(cfg(tiny_data, tmp_path / "old", resume=True, **old))
    with pytest.raises(MakdError, match="--lead-kl-weight 1.0, not 20.0"):
        train_moco(cfg(tiny_data, tmp_path / "old", resume=True, **{**old, "options": {**old["options"], "lead_kl": "batchmean"}}))


def test_online_teacher_sees_the_augmented_view_and_trains(teacher, clip_dir, tiny_data, tmp_path):
    from PIL import Image
    from torchvision import transforms as T

    from makd_cli.data.transforms import MEAN, STD

    # encode_views undoes the student's normalisation and applies CLIP's: a 32 x 32 view gives the
    # embedding the processor path gives for the same picture
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    view = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])(img)[None]
    torch.testing.assert_close(teacher.encode_views(view, MEAN, STD), torch.from_numpy(teacher.encode_images([img])),
                               rtol=1e-4, atol=1e-4)
    assert teacher.encode_views(nn.functional.interpolate(view, size=16), MEAN, STD).shape == (1, 16)  # resized to 32

    split = load_dataset(str(tiny_data)).train
    targets = tmp_path / "clip.h5"
    t = extract_clip_scores(teacher, split, descriptions(), CLASSES, targets, chunk_images=64, num_workers=0, progress=False)
    assert t.text_embeddings.shape == (3, 16) and read_targets(targets).text_embeddings.shape == (3, 16)
    hist = train_moco(cfg(tiny_data, tmp_path / "online", method="lead-ssl", targets=str(targets), epochs=3, moco_queue=16,
                          lr=0.02))["history"]  # defaults: online teacher, text student, reference KL
    assert all(math.isfinite(r["train_loss"]) and 0 < r["teacher_share"] < 1 and r["teacher_s_per_step"] > 0 for r in hist)
    assert hist[-1]["train_lead"] < hist[0]["train_lead"]
    ckpt = load_checkpoint(tmp_path / "online" / "last.pt")
    term = ckpt["head"]["terms"][0]
    assert term["teacher"] == f"online {clip_dir}" and term["moco_dim"] == 16 and term["shuffle_bn"] is False
    with pytest.raises(MakdError, match="names no CLIP model"):
        plain = confident_targets(tiny_data, tmp_path / "plain.h5")
        train_moco(cfg(tiny_data, tmp_path / "x", method="lead-ssl", targets=str(plain), moco_queue=16))
    old = Targets("image_clip", CLASSES, [], t.probs, t.logits, images=t.images, labels=t.labels)  # a version 1 file
    write_targets(tmp_path / "old.h5", old)
    with pytest.raises(MakdError, match="holds no description embeddings.*--lead-student head --lead-teacher offline"):
        train_moco(cfg(tiny_data, tmp_path / "y", method="lead-ssl", targets=str(tmp_path / "old.h5"), moco_queue=16))
    with pytest.raises(MakdError, match="--lead-kl-weight"):
        train_moco(cfg(tiny_data, tmp_path / "z", method="lead-ssl", targets=str(targets), aux_weight=2.0))


def test_version_1_targets_still_read(tmp_path):
    import h5py

    split_ids = ["a.png", "b.png"]
    t = Targets("image_clip", CLASSES, [], np.full((2, 3), 1 / 3), images=split_ids, labels=np.array([0, 2]))
    write_targets(tmp_path / "t.h5", t)
    with h5py.File(tmp_path / "t.h5", "a") as f:
        f.attrs["format_version"] = 1
    back = read_targets(tmp_path / "t.h5")
    assert back.text_embeddings is None and back.images == split_ids
    with pytest.raises(MakdError, match="text_embeddings must be one row per class"):
        Targets("image_clip", CLASSES, [], np.full((2, 3), 1 / 3), images=split_ids, labels=np.array([0, 2]),
                text_embeddings=np.ones((2, 4)))


# ------------------------------------------------------------------------------------- probe
def test_retrieval_leave_one_out_known_answer():
    # five points on the unit circle (angle in degrees, label): cosine order = angle order
    angles, labels = np.array([0, 10, 30, 90, 55]), np.array([0, 0, 1, 1, 0])
    x = np.stack([np.cos(np.radians(angles)), np.sin(np.radians(angles))], axis=1)
    # the others, nearest first: A: B C E D | B: A C E D | C: B E A D | D: E C B A | E: C D B A
    # relevant at: A 1, 3 | B 1, 3 | C 4 | D 2 | E 3, 4  ->  AP 5/6, 5/6, 1/4, 1/2, 5/12
    m = retrieval_metrics(x, labels, ks=(1, 2, 5))
    assert m["rank1"] == pytest.approx(40.0) and m["rank2"] == pytest.approx(60.0) and m["rank5"] == pytest.approx(100.0)
    assert m["map"] == pytest.approx(100 * (5 / 6 + 5 / 6 + 1 / 4 + 1 / 2 + 5 / 12) / 5)
    assert retrieval_metrics(x, labels, block=2) == retrieval_metrics(x, labels)  # blocks cut nothing


def test_sgd_probe_separates_quickly():
    rng = np.random.default_rng(0)
    train_y, test_y = np.repeat(np.arange(4), 16), np.repeat(np.arange(4), 5)
    centres = np.eye(4, 8) * 3
    seen = []

    def train_features(epoch):  # fresh "augmentation" noise every epoch, as the probe draws new crops
        seen.append(epoch)
        return centres[train_y] + rng.standard_normal((64, 8)) * 0.5, train_y

    test_x = centres[test_y] + rng.standard_normal((20, 8)) * 0.5
    r = sgd_linear_probe(train_features, test_x, test_y, 4, batch_size=16, epochs=5)
    assert seen == [1, 2, 3, 4, 5] and r["epochs"] == 5
    assert r["top1"] == 100.0 and r["top5"] == 100.0 and r["best_top1"] == 100.0 and 1 <= r["best_epoch"] <= 5
    noise = sgd_linear_probe(lambda e: (rng.standard_normal((64, 8)), train_y), rng.standard_normal((20, 8)), test_y, 4,
                             batch_size=16, epochs=3)
    assert noise["top1"] < 70 and noise["best_top1"] >= noise["top1"]


def test_retrieval_metrics_known_answer():
    gallery = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    gallery_y = np.array([0, 1, 1, 0])
    queries = np.array([[1.0, 0.05], [0.05, 1.0], [1.0, 0.2], [0.92, 0.1]])
    query_y = np.array([0, 1, 1, 0])
    # rankings: g0 g1 g3 g2 | g2 g3 g1 g0 | g1 g0 g3 g2 | g1 g0 g3 g2
    # relevant at: 1, 3 | 1, 3 | 1, 4 | 2, 3  ->  AP 5/6, 5/6, 3/4, 7/12
    m = retrieval_metrics(queries, query_y, gallery, gallery_y, ks=(1, 2, 5))
    assert m["rank1"] == pytest.approx(75.0) and m["rank2"] == pytest.approx(100.0) and m["rank5"] == pytest.approx(100.0)
    assert m["map"] == pytest.approx(100 * (5 / 6 + 5 / 6 + 3 / 4 + 7 / 12) / 4)


def test_linear_probe_known_answer():
    rng = np.random.default_rng(0)
    centres = np.eye(6) * 10
    train_y, test_y = np.repeat(np.arange(6), 10), np.repeat(np.arange(6), 4)
    train_x = centres[train_y] + rng.standard_normal((60, 6))
    test_x = centres[test_y] + rng.standard_normal((24, 6))
    assert linear_probe(train_x, train_y, test_x, test_y, 6) == {"top1": 100.0, "top5": 100.0}
    # features that carry nothing: chance level, and top-5 of 6 classes covers 5/6 of the answers at least as often
    noise = linear_probe(rng.standard_normal((60, 6)), train_y, rng.standard_normal((24, 6)), test_y, 6)
    assert noise["top1"] < 60 and noise["top5"] >= noise["top1"]


# ------------------------------------------------------------------------------------- CLI pipeline
def test_cli_lead_pipeline(clip_dir, tmp_path):
    """extract --clip -> train --method lead / lead-ssl -> eval --probe, through the command line."""
    from typer.testing import CliRunner

    from conftest import make_imagefolder
    from makd_cli.cli import app

    data = make_imagefolder(tmp_path / "shapes", per_class_train=6, per_class_test=3)
    write_questions(tmp_path / "d.jsonl", descriptions())
    runner = CliRunner()
    r = runner.invoke(app, ["extract", "--clip", str(clip_dir), "--questions", str(tmp_path / "d.jsonl"), "--data", str(data),
                            "-o", str(tmp_path / "clip.h5"), "--workers", "0", "--device", "cpu", "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout[r.stdout.index("{"):])
    assert summary["kind"] == "image_clip" and summary["images"] == 18 and summary["truncated_descriptions"] == 1
    common = ["--data", str(data), "--targets", str(tmp_path / "clip.h5"), "--student", "small_cnn", "--epochs", "2",
              "-b", "6", "--image-size", "16", "--device", "cpu", "--quiet"]
    r = runner.invoke(app, ["train", "--method", "lead", "-o", str(tmp_path / "lead"), *common])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["train", "--method", "lead-ssl", "-o", str(tmp_path / "ssl"), "--moco-queue", "12", "--moco-dim", "8",
                            *common])
    assert isinstance(r.exception, MakdError) and "--moco-dim 8: with --lead-student text" in str(r.exception)
    r = runner.invoke(app, ["train", "--method", "lead-ssl", "-o", str(tmp_path / "ssl"), "--moco-queue", "12", *common])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["eval", str(tmp_path / "ssl"), str(tmp_path / "lead"), "--probe", "--probe-epochs", "3",
                            "--device", "cpu", "--json"])
    assert r.exit_code == 0, r.output
    results = json.loads(r.stdout[r.stdout.index("{"):])["results"]
    assert [x["method"] for x in results] == ["lead-ssl", "lead"]
    for x in results:
        p = x["probe"]
        assert set(p) >= {"linear_top1", "linear_top5", "rank1", "rank5", "map", "linear_top1_best"}
        assert p["probe"] == "sgd" and p["retrieval"] == "test" and p["probe_epochs"] == 3
        assert 0 <= p["linear_top1"] <= p["linear_top5"] <= 100 and 0 <= p["rank1"] <= p["rank5"] <= 100 and 0 < p["map"] <= 100
    r = runner.invoke(app, ["eval", str(tmp_path / "ssl"), "--probe", "quick", "--retrieval", "train-test", "--device", "cpu"])
    assert r.exit_code == 0 and "R-1" in r.output and "train gallery" in r.output, r.output
    r = runner.invoke(app, ["eval", "--probe", str(tmp_path / "ssl"), "--probe-epochs", "1", "--device", "cpu", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout[r.stdout.index("{"):])["results"][0]["probe"]["probe"] == "sgd", r.output
    r = runner.invoke(app, ["eval", str(tmp_path / "ssl"), "--probe=fast"])
    assert isinstance(r.exception, MakdError) and "--probe 'fast': choose one of sgd, quick" in str(r.exception)
    r = runner.invoke(app, ["extract", "--clip", str(tmp_path / "nowhere"), "--questions", str(tmp_path / "d.jsonl"),
                            "--data", str(data), "-o", str(tmp_path / "x.h5")])
    assert isinstance(r.exception, MakdError) and "does not exist" in str(r.exception)  # main() prints it as one line, exit 2


DIST_SCRIPT = """
import sys
from makd_cli.data import load_dataset
from makd_cli.extract.clip_scores import extract_clip_scores
from makd_cli.formats.questions import read_questions
from makd_cli.teachers.clip import load_clip
model_dir, data, questions, out = sys.argv[1:5]
ds = load_dataset(data)
extract_clip_scores(load_clip(model_dir, device="cpu"), ds.train, read_questions(questions), list(ds.classes), out,
                    chunk_images=5, num_workers=1, progress=False)
"""


@pytest.mark.slow
def test_torchrun_two_ranks_equal_one(clip_dir, tiny_data, tmp_path):
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    script = tmp_path / "run.py"
    script.write_text(DIST_SCRIPT)
    write_questions(tmp_path / "d.jsonl", descriptions())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    args = [str(clip_dir), str(tiny_data), str(tmp_path / "d.jsonl")]
    one, two = tmp_path / "one.h5", tmp_path / "two.h5"
    subprocess.run([sys.executable, str(script), *args, str(one)], env=env, check=True, timeout=300)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
                    *args, str(two)], env=env, check=True, timeout=300)
    a, b = read_targets(one), read_targets(two)
    np.testing.assert_array_equal(a.logits, b.logits)
    np.testing.assert_array_equal(a.entropy, b.entropy)
    assert a.images == b.images and a.meta == b.meta
    assert not Path(str(two) + ".partial").exists()


LEAD_SSL_SCRIPT = """
import json, os, sys
from makd_cli.train import TrainConfig
from makd_cli.train.moco import train_moco
data, targets, out = sys.argv[1:4]
r = train_moco(TrainConfig(data=data, out=out, method="lead-ssl", targets=targets, student="small_cnn", epochs=2, batch_size=8,
                           lr=0.05, quiet=True, image_size=16, workers=0, device="cpu",
                           options={"lead_teacher": "offline", "moco_queue": 12}))
if os.environ["RANK"] == "0":  # one line: both processes printing at once can interleave on the shared stdout
    print(json.dumps([h["train_loss"] for h in r["history"]]))
"""


@pytest.mark.slow
def test_lead_ssl_two_processes_shuffle_bn(tiny_data, tmp_path):
    """torchrun, 2 processes (gloo): DDP, keys from a batch shuffled across the processes, one queue."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    script = tmp_path / "ssl.py"
    script.write_text(LEAD_SSL_SCRIPT)
    targets = confident_targets(tiny_data, tmp_path / "t.h5")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
                           str(tiny_data), str(targets), str(tmp_path / "two")], env=env, check=True, timeout=300,
                          capture_output=True, text=True)
    losses = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    last = load_checkpoint(tmp_path / "two" / "last.pt")
    term = last["head"]["terms"][0]
    assert term["shuffle_bn"] is True and term["processes"] == 2
    # each step queued the keys of both processes: 2 epochs x 4 steps x 8 keys = 64 rows through a 12-row ring
    # (a process queueing only its own 4 keys a step would stand at 32 % 12 = 8)
    assert int(last["moco"]["queue"]["ptr"]) == (2 * 4 * 8) % 12


def test_lead_example_makefile_dry_run(tmp_path):
    import subprocess

    folder = Path(__file__).resolve().parents[1] / "examples" / "lead"
    run = subprocess.run(["make", "-n", "-C", str(folder), f"DATA={tmp_path}", f"WORK={tmp_path / 'w'}"], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    text = run.stdout
    assert "--kind description" in text and f"extract --clip clip-b16 --questions {tmp_path / 'w'}/descriptions.jsonl" in text
    assert text.count("--method lead-ssl") == 2 and "--student resnet50 --pretrained cache" in text  # MoCo v2 and LEAD
    assert "--epochs 100 -b 64" in text and "--probe" in text and "torchrun" not in text
    two = subprocess.run(["make", "-n", "-C", str(folder), f"DATA={tmp_path}", f"WORK={tmp_path / 'w'}", "NPROC=2"],
                         capture_output=True, text=True, timeout=60).stdout
    assert "torchrun --standalone --nproc_per_node 2 --no-python" in two
