"""--backend openai at server scale: requests in flight, label probabilities made exact with
logit_bias where the server takes it (and the fallback where it does not), retries, resume, and
the API key never following a redirect to another host. A small threaded OpenAI-style server on
127.0.0.1, written here, records what it was sent."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

from makd_cli.errors import MakdError
from makd_cli.extract.class_options import extract_class_answers
from makd_cli.formats.questions import Question
from makd_cli.teachers.openai_http import OpenAIChatLM

from loopback import JSONHandler, LoopbackServer, fake_openai_front

QUESTIONS = [
    Question("mcq", "What is the main color of the head of the <object>?", ["red", "blue", "yellow", "black", "white"]),
    Question("mcq", "Where does the <object> build its nest?", ["in shrubs", "in trees", "on cliffs", "on the ground", "in barns"]),
]
CLASSES = ["cardinal", "blue jay", "goldfinch", "raven", "mallard", "barn owl"]
LABELS = [str(i) for i in range(1, 6)]
# The fake vocabulary: the labels with and without a leading space, then 30 words the model prefers,
# so that without a bias most label spellings fall out of a top-20 list.
VOCAB = LABELS + [" " + x for x in LABELS] + [f"w{i}" for i in range(30)]


def model_logits(text: str) -> np.ndarray:
    """A deterministic 'model': next-token logits from the prompt text."""
    rng = np.random.default_rng(sum(map(ord, text)) * 7919 + len(text))
    z = np.empty(len(VOCAB))
    z[:10] = rng.normal(0.0, 1.5, 10)
    z[10:] = rng.normal(4.0, 1.0, 30)
    return z


def exact_label_probs(text: str) -> np.ndarray:
    z = model_logits(text)
    s = np.logaddexp(z[:5], z[5:10])  # each label: "1" or " 1"
    e = np.exp(s - s.max())
    return e / e.sum()


class FakeServer(LoopbackServer):
    """OpenAI-style /v1/chat/completions (+ /tokenize) on loopback; counts requests in flight."""

    def __init__(self, *, bias: bool = True, tokenize: bool = True, delay: float = 0.05, fail_after: int | None = None,
                 first_429: bool = False, redirect_to: str | None = None):
        self.bias, self.tokenize, self.delay, self.fail_after = bias, tokenize, delay, fail_after
        self.first_429, self.redirect_to = first_429, redirect_to
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = self.chat_requests = self.rejected = 0
        self.headers: list[dict] = []
        self.bodies: list[dict] = []
        srv = self

        class Handler(JSONHandler):
            _send = JSONHandler.send_json

            def do_GET(self):
                with srv.lock:
                    srv.headers.append(dict(self.headers))
                self._send(404, {"error": {"message": "not here"}})

            def do_POST(self):
                body = self.read_json()
                if fake_openai_front(self, srv, body, body, 302, VOCAB):  # record, redirect, /tokenize
                    return
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": "no such route"})
                with srv.lock:
                    srv.chat_requests += 1
                    n = srv.chat_requests
                    if srv.first_429 and n == 1:
                        return self._send(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
                    if srv.fail_after is not None and n > srv.fail_after:
                        return self._send(500, {"error": {"message": "the server broke"}})
                    if "logit_bias" in body and not srv.bias:
                        srv.rejected += 1
                        return self._send(400, {"error": {"message": "Unrecognized request argument supplied: logit_bias"}})
                    srv.in_flight += 1
                    srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
                try:
                    time.sleep(srv.delay)
                    z = model_logits(body["messages"][-1]["content"])
                    for tok_id, b in (body.get("logit_bias") or {}).items():
                        z[int(tok_id)] += b
                    lp = z - np.logaddexp.reduce(z)  # reported after the bias, as OpenAI does
                    top = np.argsort(-lp)[: body.get("top_logprobs", 0)]
                    content = [{"token": VOCAB[top[0]], "logprob": float(lp[top[0]]),
                                "top_logprobs": [{"token": VOCAB[i], "logprob": float(lp[i])} for i in top]}]
                finally:
                    with srv.lock:  # before the answer leaves: the client may send its next request at once
                        srv.in_flight -= 1
                self._send(200, {"choices": [{"message": {"role": "assistant", "content": VOCAB[top[0]]},
                                              "logprobs": {"content": content}}],
                                 "usage": {"prompt_tokens": 10, "completion_tokens": 1}})

        self.serve(Handler)


def _extract(lm, tmp_path, name: str, **kw):
    return extract_class_answers(lm, QUESTIONS, CLASSES, str(tmp_path / f"{name}.h5"), questions_sha256="x", **kw)


def _texts(layout: str = "paper") -> list[list[str]]:
    from makd_cli.extract.class_options import mcq_user_text

    return [[mcq_user_text(q, c, LABELS, layout) for q in QUESTIONS] for c in CLASSES]


@pytest.fixture(autouse=True)
def _no_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def test_requests_in_flight_and_exact_label_probs_with_logit_bias(tmp_path):
    want = np.array([[exact_label_probs(t) for t in row] for row in _texts()])
    with FakeServer() as srv:
        lm = OpenAIChatLM("fake", api_base=srv.url, concurrency=8)
        got, summary = _extract(lm, tmp_path, "c8")
        peak = srv.max_in_flight
        assert all("logit_bias" in b for b in srv.bodies if "messages" in b)
        with FakeServer() as one:
            serial, _ = _extract(OpenAIChatLM("fake", api_base=one.url, concurrency=1), tmp_path, "c1")
            assert one.max_in_flight == 1
    assert 2 <= peak <= 8  # 12 prompts, 8 at a time
    np.testing.assert_allclose(got.probs, want, atol=1e-6)  # exact: every label spelling was in the list
    np.testing.assert_array_equal(got.probs, serial.probs)  # in order, whatever finished first
    assert got.meta["label_probs"] == "logit-bias" and lm.label_reads["floored"] == 0
    assert summary["prompts_computed"] == len(CLASSES) * len(QUESTIONS)


def test_server_rejecting_logit_bias_falls_back_to_top_logprobs(tmp_path):
    want = np.array([[exact_label_probs(t) for t in row] for row in _texts()])
    with FakeServer(bias=False) as srv:
        lm = OpenAIChatLM("fake", api_base=srv.url, concurrency=4)
        got, _ = _extract(lm, tmp_path, "nobias")
        rejected = srv.rejected
    assert 1 <= rejected <= 4  # the rejection is remembered: at most the requests already in flight
    assert got.meta["label_probs"] == "top-logprobs" and lm.label_reads["top-logprobs"] == 12
    assert lm.label_reads["floored"] > 0  # without the bias some labels fell out of the top 20
    assert np.abs(got.probs - want).max() > 1e-3  # the floor is a bound, not the answer
    np.testing.assert_allclose(got.probs.sum(-1), 1.0, rtol=1e-6)

    with FakeServer(tokenize=False) as srv:  # no tokenizer: no bias is ever sent
        lm = OpenAIChatLM("fake", api_base=srv.url, concurrency=4)
        got2, _ = _extract(lm, tmp_path, "notok")
        assert not any("logit_bias" in b for b in srv.bodies)
    np.testing.assert_allclose(got2.probs, got.probs, atol=1e-12)
    assert got2.meta["label_probs"] == "top-logprobs"


def test_retry_after_429_and_resume_after_a_failure(tmp_path):
    with FakeServer(first_429=True) as srv:
        full, _ = _extract(OpenAIChatLM("fake", api_base=srv.url, concurrency=4), tmp_path, "full")
    with FakeServer(fail_after=7, delay=0.0) as srv:  # dies part way: whole units done before it stay saved
        lm = OpenAIChatLM("fake", api_base=srv.url, concurrency=1, retries=0)
        lm.prompts_per_call = 1  # one unit per call, so the first units are saved before the failure
        with pytest.raises(MakdError, match="the server broke"):
            _extract(lm, tmp_path, "resume")
    with FakeServer() as srv:
        again, summary = _extract(OpenAIChatLM("fake", api_base=srv.url, concurrency=4), tmp_path, "resume")
    assert summary["units_resumed"] == 3 and summary["prompts_computed"] == 6
    np.testing.assert_allclose(again.probs, full.probs, atol=1e-12)


@pytest.mark.parametrize("key", [None, "sk-secret-test"])
def test_redirect_to_another_host_is_refused_and_the_key_stays(monkeypatch, key):
    if key:
        monkeypatch.setenv("MAKD_TEST_KEY", key)
    else:
        monkeypatch.delenv("MAKD_TEST_KEY", raising=False)
    with FakeServer() as target:
        with FakeServer(redirect_to=target.url) as front:
            lm = OpenAIChatLM("fake", api_base=front.url, api_key_env="MAKD_TEST_KEY", retries=0, concurrency=2)
            with pytest.raises(MakdError, match="redirected .* another host"):
                lm.option_logprobs([[{"role": "user", "content": "1 or 2?"}]], [["1", " 1"], ["2", " 2"]])
            with pytest.raises(MakdError, match="redirected"):
                lm.generate_json([{"role": "user", "content": "x"}], {"type": "object"}, seed=0)
            sent = front.headers
        got = target.headers
    assert got == []  # nothing reached the other port: no key, no prompt
    if key:
        assert sent and all(h.get("Authorization") == f"Bearer {key}" for h in sent)  # only --api-base's host saw it


def test_concurrency_must_be_positive():
    with pytest.raises(MakdError, match="--concurrency"):
        OpenAIChatLM("fake", api_base="http://127.0.0.1:9/v1", concurrency=0)
    assert math.isfinite(OpenAIChatLM("fake", api_base="http://127.0.0.1:9/v1").concurrency)
