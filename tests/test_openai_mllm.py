"""--mllm MODEL --backend openai: the multimodal teacher behind an OpenAI-compatible server.

A small threaded OpenAI-style multimodal server on 127.0.0.1, written here, whose 'model' answers from
the image's pixels and the question text; it records what it was sent. Covered: exact yes/no
log-odds with logit_bias, requests in flight and results in order, the floor where labels miss the top
list, SGLang's /v1/score (used only when it sees the image), 429 with Retry-After, a redirect to
another host (the key stays), bodies of the wrong shape, resume after a failure, and the command line.
The real-server check (llama-cpp-python's server against the in-process llama.cpp teacher) is in
tests/test_openai_mllm_server.py.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time

import numpy as np
import pytest
from PIL import Image

from makd_cli.data.base import Split, file_loader
from makd_cli.errors import MakdError
from makd_cli.extract.image_yesno import extract_image_yesno
from makd_cli.formats.questions import Question, write_questions
from makd_cli.formats.targets import read_targets
from makd_cli.teachers.openai_mllm import ImageDataURL, OpenAIMultimodalTeacher

from loopback import JSONHandler, LoopbackServer, fake_openai_front

QUESTIONS = ["Is the <object> red?", "Does the <object> have wings?", "Is it a cat?"]
CLASSES = ["cat", "dog", "bird"]
YES, NO = ["Yes", "yes", " Yes", " yes"], ["No", "no", " No", " no"]
# The labels first, then 30 words the fake model prefers, so that without a bias most spellings fall
# out of a top-20 list.
VOCAB = YES + NO + [f"w{i}" for i in range(30)]


def pixels_of(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


def model_logits(pixels: np.ndarray, text: str) -> np.ndarray:
    """A deterministic 'model': next-token logits from the image's pixels and the question."""
    rng = np.random.default_rng(sum(map(ord, text)) * 7919 + int(pixels.astype(np.int64).sum()) % 100003)
    z = np.empty(len(VOCAB))
    z[:8] = rng.normal(0.0, 1.5, 8)
    z[8:] = rng.normal(4.0, 1.0, 30)
    return z


def exact_logodds(pixels: np.ndarray, text: str) -> float:
    z = model_logits(pixels, text)
    return float(np.logaddexp.reduce(z[:4]) - np.logaddexp.reduce(z[4:8]))


class FakeMultimodalServer(LoopbackServer):
    """/v1/chat/completions with images (+ /tokenize, + /v1/score when ``score``) on loopback."""

    def __init__(self, *, tokenize: bool = True, bias: bool = True, score: str | None = None, delay: float = 0.02,
                 fail_after: int | None = None, retry_after: str | None = None, redirect_to: str | None = None,
                 wrong_shape: dict | None = None):
        self.tokenize, self.bias, self.score, self.delay, self.fail_after = tokenize, bias, score, delay, fail_after
        self.retry_after, self.redirect_to, self.wrong_shape = retry_after, redirect_to, wrong_shape
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = self.chat_requests = self.score_requests = 0
        self.headers: list[dict] = []
        self.bodies: list[dict] = []
        srv = self

        class Handler(JSONHandler):
            _send = JSONHandler.send_json

            def do_POST(self):
                body = self.read_json()
                if fake_openai_front(self, srv, body, {"path": self.path, **body}, 307, VOCAB):  # record, redirect, /tokenize
                    return
                if self.path == "/v1/score":
                    return self._score(body)
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": "no such route"})
                with srv.lock:
                    srv.chat_requests += 1
                    n = srv.chat_requests
                    if srv.retry_after is not None and n == 1:
                        return self._send(429, {"error": {"message": "slow down"}}, {"Retry-After": srv.retry_after})
                    if srv.fail_after is not None and n > srv.fail_after:
                        return self._send(500, {"error": {"message": "the server broke"}})
                    if "logit_bias" in body and not srv.bias:
                        return self._send(400, {"error": {"message": "Unrecognized request argument supplied: logit_bias"}})
                    srv.in_flight += 1
                    srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
                try:
                    time.sleep(srv.delay)
                    if srv.wrong_shape is not None:
                        return self._send(200, srv.wrong_shape)
                    content = body["messages"][-1]["content"]
                    assert content[0]["type"] == "image_url" and content[1]["type"] == "text"
                    z = model_logits(pixels_of(content[0]["image_url"]["url"]), content[1]["text"])
                    for tok_id, b in (body.get("logit_bias") or {}).items():
                        z[int(tok_id)] += b
                    lp = z - np.logaddexp.reduce(z)  # reported after the bias, as OpenAI does
                    top = np.argsort(-lp)[: body.get("top_logprobs", 0)]
                    first = {"token": VOCAB[top[0]], "logprob": float(lp[top[0]]),
                             "top_logprobs": [{"token": VOCAB[i], "logprob": float(lp[i])} for i in top]}
                finally:
                    with srv.lock:
                        srv.in_flight -= 1
                self._send(200, {"choices": [{"message": {"role": "assistant", "content": VOCAB[top[0]]},
                                              "logprobs": {"content": [first]}}],
                                 "usage": {"prompt_tokens": 20, "completion_tokens": 1}})

            def _score(self, body):
                if srv.score is None:
                    return self._send(404, {"detail": "Not Found"})
                with srv.lock:
                    srv.score_requests += 1
                assert body["query"] == "<image>\n" and body["apply_softmax"] is False
                px = pixels_of(body["image_data"]) if srv.score == "images" else np.zeros((1, 1, 3))
                rows = []
                for item in body["items"]:
                    z = model_logits(px, item)
                    p = np.exp(z - np.logaddexp.reduce(z))
                    rows.append([float(p[i]) for i in body["label_token_ids"]])
                self._send(200, {"scores": rows, "model": body.get("model"), "object": "scoring"})

        self.serve(Handler)


@pytest.fixture(autouse=True)
def _no_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def image(seed: int, size=(20, 26)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8))


@pytest.fixture
def split(tmp_path):
    """7 images of 3 classes; sample 4 is a corrupt file."""
    ids, paths, labels = [], [], []
    for i in range(7):
        p = tmp_path / "img" / CLASSES[i % 3] / f"{i:02d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        if i == 4:
            p.write_bytes(b"not a png")
        else:
            image(i, (18 + i, 24)).save(p)
        ids.append(f"{CLASSES[i % 3]}/{i:02d}.png")
        paths.append(p)
        labels.append(i % 3)
    return Split(ids, labels, file_loader(paths))


def qs() -> list[Question]:
    return [Question(kind="yesno", text=q) for q in QUESTIONS]


def expected(split: Split, layout_suffix: str = " Answer yes or no.") -> np.ndarray:
    ok = [i for i in range(len(split)) if i != 4]
    return np.array([[exact_logodds(np.asarray(split.load(i).convert("RGB")), q.replace("<object>", "bird") + layout_suffix)
                      for q in QUESTIONS] for i in ok])


def run(teacher, split, out, **kw):
    return extract_image_yesno(teacher, split, qs(), out, classes=CLASSES, object_word="bird", num_workers=0,
                               progress=False, **kw)


def test_exact_logodds_with_logit_bias_in_flight_and_in_order(split, tmp_path):
    with FakeMultimodalServer() as srv:
        t = OpenAIMultimodalTeacher("fake-vlm", api_base=srv.url, concurrency=8)
        got = run(t, split, tmp_path / "c8.h5", chunk_images=4)
        peak, chats = srv.max_in_flight, [b for b in srv.bodies if b["path"] == "/v1/chat/completions"]
    assert 2 <= peak <= 8  # a chunk's 4 images x 3 questions go out together, 8 at a time
    np.testing.assert_allclose(got.logits, expected(split), atol=1e-5)  # exact: every spelling was lifted into the list
    back = read_targets(tmp_path / "c8.h5")
    assert back.kind == "image_yesno" and back.teacher == "openai:fake-vlm" and back.probs.shape == (6, 3)
    m = back.meta
    assert m["label_probs"] == "logit-bias" and m["label_probs_floored"] == 0 and m["scoring"] == "chat/completions"
    assert m["score_endpoint"] == "absent" and m["yes_token_ids"] == [0, 1, 2, 3] and m["no_token_ids"] == [4, 5, 6, 7]
    assert m["failed_images"] == ["dog/04.png"] and m["api_base"] == srv.url + "/v1"
    # What went over the wire: the image as a lossless PNG data URL, then the question with the layout's suffix.
    body = chats[0]
    assert body["model"] == "fake-vlm" and body["max_tokens"] == 1 and body["logprobs"] is True
    assert set(body["logit_bias"]) == {str(i) for i in range(8)}
    assert body["messages"][0]["content"][1]["text"] == "Is the bird red? Answer yes or no."
    with FakeMultimodalServer() as one:
        serial = extract_image_yesno(OpenAIMultimodalTeacher("fake-vlm", api_base=one.url, concurrency=1), split, qs(),
                                     tmp_path / "c1.h5", classes=CLASSES, object_word="bird", num_workers=2,
                                     progress=False)  # images PNG-encoded in DataLoader workers
        assert one.max_in_flight == 1
    np.testing.assert_array_equal(serial.logits, got.logits)  # in order, whatever finished first


def test_reference_layout_and_the_floor_without_a_tokenizer(split, tmp_path):
    with FakeMultimodalServer() as srv:
        ref = run(OpenAIMultimodalTeacher("fake-vlm", api_base=srv.url), split, tmp_path / "r.h5", layout="makd-reference")
        texts = {b["messages"][0]["content"][1]["text"] for b in srv.bodies if b["path"] == "/v1/chat/completions"}
    assert "Is the bird red?" in texts  # the question bare: MaKD's reference prompt
    ok = [i for i in range(len(split)) if i != 4]
    want = [[(lambda z: z[0] - z[4])(model_logits(np.asarray(split.load(i).convert("RGB")), q.replace("<object>", "bird")))
             for q in QUESTIONS] for i in ok]  # softmax over "Yes" and "No" alone
    np.testing.assert_allclose(ref.logits, want, atol=1e-5)
    assert ref.meta["answer_spellings"] == [["Yes"], ["No"]] and ref.meta["label_probs"] == "logit-bias"

    with FakeMultimodalServer(tokenize=False) as srv:  # no tokenizer: no bias; labels outside the top 20 get the floor
        t = OpenAIMultimodalTeacher("fake-vlm", api_base=srv.url, concurrency=4)
        got = run(t, split, tmp_path / "f.h5")
        assert not any("logit_bias" in b for b in srv.bodies)
    assert got.meta["label_probs"] == "top-logprobs" and got.meta["label_probs_floored"] > 0
    assert got.meta["yes_token_ids"] == [] and np.all(np.isfinite(got.logits))
    assert np.abs(got.logits - expected(split)).max() > 1e-3  # the floor is a bound, not the answer

    with FakeMultimodalServer(bias=False) as srv:  # a server that rejects logit_bias: asked again without, remembered
        t = OpenAIMultimodalTeacher("fake-vlm", api_base=srv.url, concurrency=1)
        again = run(t, split, tmp_path / "nb.h5")
        rejected = sum("logit_bias" in b for b in srv.bodies)
    assert rejected == 1 and again.meta["label_probs"] == "top-logprobs"
    np.testing.assert_allclose(again.logits, got.logits, atol=1e-6)


@pytest.mark.parametrize("mode", ["images", "text-only"])
def test_score_endpoint_used_only_when_it_sees_the_image(split, tmp_path, mode):
    with FakeMultimodalServer(score=mode) as srv:
        t = OpenAIMultimodalTeacher("fake-vlm", api_base=srv.url, concurrency=4)
        got = run(t, split, tmp_path / "s.h5", chunk_images=4)
        n_score, n_chat = srv.score_requests, srv.chat_requests
    np.testing.assert_allclose(got.logits, expected(split), atol=1e-4)
    if mode == "images":
        assert got.meta["scoring"] == "v1/score" and got.meta["score_endpoint"] == "used"
        assert got.meta["label_probs"] == "score-endpoint"
        assert n_score == 2 + 6 and n_chat == 0  # two probes, then one request per image with all its questions
    else:  # it ignores the image: its targets would be wrong, so chat completions are used
        assert got.meta["score_endpoint"] == "ignores-images" and got.meta["scoring"] == "chat/completions"
        assert n_score == 2 and n_chat == 6 * 3
    with FakeMultimodalServer(score=mode) as srv:
        off = run(OpenAIMultimodalTeacher("fake-vlm", api_base=srv.url, score_endpoint="off"), split, tmp_path / "o.h5")
        assert srv.score_requests == 0 and off.meta["score_endpoint"] == "off"


def test_retry_after_429_is_honoured(split, tmp_path, monkeypatch):
    import makd_cli.teachers.openai_endpoint as ep

    waits = []
    monkeypatch.setattr(ep, "pause", lambda event, seconds: waits.append(seconds))  # the client's waits only
    with FakeMultimodalServer(retry_after="7", delay=0.0) as srv:
        t = OpenAIMultimodalTeacher("fake-vlm", api_base=srv.url, concurrency=1)
        got = t.yesno_logodds(image(0), ["Is it red?"])
    assert waits == [7.0]  # the server's Retry-After, not the client's own backoff
    np.testing.assert_allclose(got, [exact_logodds(np.asarray(image(0)), "Is it red? Answer yes or no.")], atol=1e-5)


@pytest.mark.parametrize("key", [None, "sk-secret-test"])
def test_redirect_to_another_host_is_refused_and_the_key_stays(monkeypatch, key):
    if key:
        monkeypatch.setenv("MAKD_TEST_KEY", key)
    else:
        monkeypatch.delenv("MAKD_TEST_KEY", raising=False)
    with FakeMultimodalServer() as target:
        with FakeMultimodalServer(redirect_to=target.url) as front:
            t = OpenAIMultimodalTeacher("fake-vlm", api_base=front.url, api_key_env="MAKD_TEST_KEY", concurrency=2)
            t.retries = 0
            with pytest.raises(MakdError, match="redirected .* another host") as exc:
                t.yesno_logodds(image(1), ["Is it red?", "Is it a cat?"])
            sent = front.headers
        got = target.headers
    assert "\n" not in str(exc.value)
    assert got == []  # nothing reached the other port: no key, no image
    if key:
        assert sent and all(h.get("Authorization") == f"Bearer {key}" for h in sent)


@pytest.mark.parametrize("body, what", [
    ({"choices": "none"}, "no choices"),
    ({"choices": [{"logprobs": {"content": [{"token": "Yes", "logprob": -0.1, "top_logprobs": [{"token": 3}]}]}}]},
     "without token and logprob"),
    ({"choices": [{"logprobs": {"content": [{"token": "Yes", "logprob": -0.1, "top_logprobs": {"Yes": -0.1}}]}}]},
     "no top_logprobs list"),
    ([1, 2, 3], "a JSON array, not an object"),  # refused by the shared endpoint, before the teacher reads it
])
def test_a_body_of_the_wrong_shape_is_one_clear_line(body, what):
    with FakeMultimodalServer(wrong_shape=body, delay=0.0) as srv:
        t = OpenAIMultimodalTeacher("fake-vlm", api_base=srv.url, concurrency=1)
        with pytest.raises(MakdError, match="wrong shape|not an object") as exc:
            t.yesno_logodds(image(2), ["Is it red?"])
    assert what in str(exc.value) and "\n" not in str(exc.value)
    with FakeMultimodalServer(wrong_shape={"choices": [{"message": {"content": "Yes"}}]}, delay=0.0) as srv:
        with pytest.raises(MakdError, match="returned no logprobs"):
            OpenAIMultimodalTeacher("fake-vlm", api_base=srv.url).yesno_logodds(image(2), ["Is it red?"])


def test_resume_after_the_server_fails(split, tmp_path):
    out = tmp_path / "r.h5"
    with FakeMultimodalServer(fail_after=10, delay=0.0) as srv:  # dies in the second chunk of 2 images
        t = OpenAIMultimodalTeacher("fake-vlm", api_base=srv.url, concurrency=1)
        t.retries = 0
        with pytest.raises(MakdError, match="the server broke"):
            run(t, split, out, chunk_images=2)
    assert len(list((tmp_path / "r.h5.partial").glob("unit-*.npz"))) == 1  # the first chunk was saved
    with FakeMultimodalServer() as srv:
        got = run(OpenAIMultimodalTeacher("fake-vlm", api_base=srv.url), split, out, chunk_images=2)
        asked = srv.chat_requests
    assert asked == (6 - 2) * 3  # the saved chunk was not asked again
    np.testing.assert_allclose(got.logits, expected(split), atol=1e-5)


def test_image_data_url_is_lossless_and_resized_on_request():
    img = image(3, (30, 50))
    enc = ImageDataURL()(img)
    np.testing.assert_array_equal(pixels_of(enc["url"]), np.asarray(img))  # the server gets the exact pixels
    small = ImageDataURL(max_side=20)(img)
    assert small["size"] == (20, 12) and pixels_of(small["url"]).shape == (12, 20, 3)
    assert ImageDataURL(max_side=100)(np.asarray(img))["size"] == (50, 30)  # smaller images are left alone


def test_arguments_are_checked(monkeypatch):
    from makd_cli.teachers.backends import load_multimodal

    with pytest.raises(MakdError, match="--concurrency"):
        OpenAIMultimodalTeacher("m", api_base="http://127.0.0.1:9", concurrency=0)
    with pytest.raises(MakdError, match=r"\$MAKD_NO_KEY is not set"):
        OpenAIMultimodalTeacher("m", api_base="https://vlm.example.com/v1", api_key_env="MAKD_NO_KEY")
    t = load_multimodal("any/name", "openai", api_base="http://127.0.0.1:9", concurrency=3, image_max_side=64)
    assert isinstance(t, OpenAIMultimodalTeacher) and t.concurrency == 3 and t.image_max_side == 64
    assert t.api_base == "http://127.0.0.1:9/v1"
    with pytest.raises(MakdError, match="--mmproj"):
        load_multimodal("any/name", "openai", api_base="http://127.0.0.1:9", mmproj="x.gguf")
    with pytest.raises(MakdError, match="zero_shot"):
        t.prepare_answers("What is it?", CLASSES)
    with pytest.raises(MakdError, match="naive"):
        t.preprocessor(None, naive=True)


def test_cli_extract_mllm_backend_openai(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import make_imagefolder
    from typer.testing import CliRunner

    from makd_cli.cli import app

    data = make_imagefolder(tmp_path / "shapes", per_class_train=2, per_class_test=1)
    write_questions(tmp_path / "q.jsonl", qs())
    runner = CliRunner()
    base = ["extract", "--mllm", "fake-vlm", "--data", str(data), "--questions", str(tmp_path / "q.jsonl"), "--workers", "0"]
    with FakeMultimodalServer() as srv:
        r = runner.invoke(app, base + ["-o", str(tmp_path / "t.h5"), "--backend", "openai", "--api-base", srv.url,
                                       "--concurrency", "4", "--image-max-side", "12", "--json"])
        assert r.exit_code == 0, r.output
        assert json.loads(r.output)["images"] == 6 and srv.max_in_flight <= 4
        t = read_targets(tmp_path / "t.h5")
        assert t.teacher == "openai:fake-vlm" and t.probs.shape == (6, 3) and t.meta["label_probs"] == "logit-bias"
        assert "longer side at most 12 px" in t.meta["image_encoding"]
        r = runner.invoke(app, base + ["-o", str(tmp_path / "z.h5"), "--backend", "openai", "--api-base", srv.url,
                                       "--kind", "zero_shot"])
        assert isinstance(r.exception, MakdError) and "zero_shot" in str(r.exception)
    r = runner.invoke(app, base + ["-o", str(tmp_path / "u.h5"), "--concurrency", "4"])  # no --backend openai
    assert isinstance(r.exception, MakdError) and "--backend openai" in str(r.exception)
