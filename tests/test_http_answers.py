"""--backend openai reads a server's answers as it reads files: whatever the body holds, one line naming
the server and what it sent (no UnicodeDecodeError, AttributeError or OverflowError), and one deadline
for the whole job once a request has failed for good. A raw loopback server sends the bytes each test
chooses."""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler

import pytest

from makd_cli.errors import MakdError
from makd_cli.teachers.openai_http import OpenAIChatLM

from loopback import LoopbackServer

GROUPS = [["1", " 1"], ["2", " 2"]]


class RawServer(LoopbackServer):
    """Answers every POST with ``answer(body) -> (status, headers, bytes)``; counts the requests."""

    def __init__(self, answer):
        self.requests = 0
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                srv.requests += 1
                if self.path != "/v1/chat/completions":
                    status, headers, data = 404, {}, b'{"error": "no such route"}'
                else:
                    status, headers, data = answer(body)
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)), **headers}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.serve(Handler, "/v1")


def completion(top) -> bytes:
    return json.dumps({"choices": [{"message": {"content": "1"}, "logprobs": {"content": [{"token": "1", "logprob": -0.1,
                                                                                         "top_logprobs": top}]}}]}).encode()


GOOD_TOP = [{"token": "1", "logprob": -0.2}, {"token": "2", "logprob": -1.8}]
BAD_BODIES = {
    "not-utf8": (b'{"choices": "\xff\xfe"}', "not UTF-8"),
    "not-json": (b"<html>502 Bad Gateway</html>", "not valid JSON"),
    "array": (b'[{"choices": []}]', "JSON array, not an object"),
    "string": (b'"hello"', "JSON str, not an object"),
    "deep": (b"[" * 100_000 + b"]" * 100_000, "deep"),
    "choices-string": (b'{"choices": "1"}', "not a list of objects"),
    "choices-of-numbers": (b'{"choices": [1, 2]}', "not a list of objects"),
    "no-choices": (b'{"object": "chat.completion"}', "no choices"),
    "logprobs-list": (b'{"choices": [{"logprobs": [1]}]}', "logprobs that are not"),
    "content-dict": (b'{"choices": [{"logprobs": {"content": {"a": 1}}}]}', "logprobs that are not"),
    "entry-number": (b'{"choices": [{"logprobs": {"content": [7]}}]}', "not an object"),
    "top-dict": (completion({"1": -0.1}), "not a list"),
    "logprob-1000": (completion([{"token": "1", "logprob": 1000}]), "lies in [-inf, 0]"),
    "logprob-positive": (completion([{"token": "1", "logprob": 0.7}, *GOOD_TOP]), "lies in [-inf, 0]"),
    "logprob-nan": (completion([{"token": "1", "logprob": float("nan")}]), "lies in [-inf, 0]"),
    "logprob-string": (completion([{"token": "1", "logprob": "-0.1"}]), "not {\"token\""),
    "logprob-bool": (completion([{"token": "1", "logprob": True}]), "not {\"token\""),
    "token-number": (completion([{"token": 1, "logprob": -0.1}]), "not {\"token\""),
    "all-minus-inf": (completion([{"token": "1", "logprob": float("-inf")}]), "all -inf"),
    "no-top": (completion([]), "no top_logprobs"),
}


@pytest.fixture(autouse=True)
def _no_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


@pytest.mark.parametrize("name", list(BAD_BODIES))
def test_a_bad_answer_is_one_line_naming_the_server(name):
    body, says = BAD_BODIES[name]
    with RawServer(lambda req: (200, {}, body)) as srv:
        lm = OpenAIChatLM("m", api_base=srv.url, retries=0, concurrency=1)
        with pytest.raises(MakdError) as info:
            lm.option_logprobs([[{"role": "user", "content": "q"}]], GROUPS)
    message = str(info.value)
    assert says in message, message
    assert "127.0.0.1" in message and "\n" not in message


def test_usage_of_the_wrong_type_is_ignored_not_a_crash():
    body = json.loads(completion(GOOD_TOP))
    body["usage"] = ["not", "an", "object"]
    with RawServer(lambda req: (200, {}, json.dumps(body).encode())) as srv:
        lm = OpenAIChatLM("m", api_base=srv.url, retries=0, concurrency=1)
        scores = lm.option_logprobs([[{"role": "user", "content": "q"}]], GROUPS)
    assert scores.shape == (1, 2) and scores[0, 0] > scores[0, 1]


@pytest.mark.parametrize("message", [[1, 2], {"content": 5}, "text"])
def test_generation_message_of_the_wrong_type_is_one_line(message):
    body = json.dumps({"choices": [{"message": message}]}).encode()
    with RawServer(lambda req: (200, {}, body)) as srv:
        lm = OpenAIChatLM("m", api_base=srv.url, retries=0, concurrency=1)
        with pytest.raises(MakdError, match="127.0.0.1.*(message|choices)"):
            lm.generate_json([{"role": "user", "content": "q"}], {"type": "object"}, seed=0)


def test_one_deadline_once_a_request_failed_for_good():
    """The first prompt's request fails for good at once (Retry-After 0); the others are told to wait
    30 s. Before, the job waited out their backoffs (about 90 s); now the error comes at once."""

    def answer(req):
        first = "prompt 0" in req["messages"][-1]["content"]
        return 503, {"Retry-After": "0" if first else "30"}, b'{"error": {"message": "overloaded"}}'

    with RawServer(answer) as srv:
        lm = OpenAIChatLM("m", api_base=srv.url, retries=2, concurrency=4)
        start = time.monotonic()
        with pytest.raises(MakdError, match="HTTP 503.*overloaded"):
            lm.option_logprobs([[{"role": "user", "content": f"prompt {i}"}] for i in range(8)], GROUPS)
        elapsed = time.monotonic() - start
    assert elapsed < 10, f"the job held on {elapsed:.0f} s after a request had failed for good"
