"""The HTTP plumbing every OpenAI-compatible teacher shares (``--backend openai``: the language teacher
``openai_http.OpenAIChatLM`` and the multimodal one ``openai_mllm.OpenAIMultimodalTeacher``).

Only the standard library is used (urllib). ``OpenAIEndpoint`` resolves the endpoint (``--api-base``,
else ``$OPENAI_BASE_URL``, default https://api.openai.com/v1; a bare ``http://host:port`` gets ``/v1``)
and the key (the environment variable ``api_key_env``, default ``OPENAI_API_KEY``; without a key only a
loopback endpoint is used, a remote one is refused before anything is sent), posts JSON with retries
(jittered exponential backoff on 429/5xx and connection errors, a server's Retry-After honoured up to
30 s), refuses redirects to another origin (so the key and the prompts go to ``--api-base``'s host
only), finds a label's token ids through the server's tokenize endpoint, and turns a top-logprobs list
into label scores (with the floor for labels missing from it; see ``label_scores``).
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import random
import threading
import urllib.error
import urllib.request
from urllib.parse import urlparse

import numpy as np

from makd_cli.errors import MakdError

DEFAULT_API_BASE = "https://api.openai.com/v1"


def is_loopback(url: str) -> bool:
    host = (urlparse(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normalise_api_base(api_base: str) -> str:
    base = api_base.rstrip("/")
    if base.endswith("/chat/completions"):
        base = base[: -len("/chat/completions")]
    parsed = urlparse(base)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise MakdError(f"--api-base {api_base!r} is not an http(s) URL; e.g. http://127.0.0.1:8080/v1")
    if parsed.path in ("", "/"):
        base += "/v1"
    return base


def _origin(url: str) -> tuple:
    u = urlparse(url)
    return u.scheme.lower(), (u.hostname or "").lower(), u.port or {"http": 80, "https": 443}.get(u.scheme.lower())


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """urllib follows redirects and re-sends the headers, the API key included: follow only those
    that stay on ``--api-base``'s origin."""

    def __init__(self, api_base: str):
        super().__init__()
        self.origin = _origin(api_base)

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if _origin(newurl) != self.origin:
            fp.close()
            raise MakdError(f"{req.full_url} redirected (HTTP {code}) to {newurl}, another host; makd does not follow it, so "
                            "the API key and the prompts stay with --api-base's host: pass the final endpoint as --api-base")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class HTTPError(Exception):
    def __init__(self, status: int, body: str):
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status, self.body = status, body


class OpenAIEndpoint:
    """An OpenAI-compatible endpoint: where it is, its key, and ``_post`` with retries (see the module doc).

    ``flag`` names the option in messages (``--backend openai``)."""

    def __init__(self, model: str, api_base: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 timeout: float = 120.0, retries: int = 3, concurrency: int = 16, flag: str = "--backend openai"):
        self.model = model
        self.name = model
        self.api_base = normalise_api_base(api_base or os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_BASE")
                                           or DEFAULT_API_BASE)
        self.api_key = os.environ.get(api_key_env) or None
        if self.api_key is None and not is_loopback(self.api_base):
            raise MakdError(f"{flag}: ${api_key_env} is not set; export the API key for {self.api_base} "
                            "(only loopback endpoints are used without a key)")
        self.timeout, self.retries = timeout, retries
        if concurrency < 1:
            raise MakdError("--concurrency must be at least 1 (requests in flight)")
        self.concurrency = concurrency
        self._opener = urllib.request.build_opener(_SameOriginRedirects(self.api_base))
        self._lock = threading.Lock()  # counters and switches shared by the request threads
        self._tokenize_path: str | None = None
        self._gave_up = threading.Event()  # a request failed for good: the others stop retrying (one deadline)
        self._gave_up_error: MakdError | None = None

    @property
    def api_root(self) -> str:
        """The server's root: ``--api-base`` without its ``/v1`` (where /tokenize and /health live)."""
        return self.api_base[: -len("/v1")] if self.api_base.endswith("/v1") else self.api_base

    def _post(self, path: str, body: dict, *, url: str | None = None, retries: int | None = None) -> dict:
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        url = url or self.api_base + path
        retries = self.retries if retries is None else retries
        for attempt in range(retries + 1):
            self._check_gave_up()
            req = urllib.request.Request(url, data=data, headers=headers, method="POST")
            try:
                with self._opener.open(req, timeout=self.timeout) as resp:
                    raw = resp.read()
            except urllib.error.HTTPError as exc:
                text = exc.read().decode("utf-8", "replace")
                if exc.code in (429, 502, 503, 504):
                    if attempt < retries and self._backoff(attempt, exc.headers.get("Retry-After") if exc.headers else None):
                        continue
                    if retries:  # its retries spent: the job fails now, not when every other request has waited too
                        self._give_up(MakdError(f"{url} failed: HTTP {exc.code}: {error_message(text)} "
                                                f"(after {retries + 1} attempts)"))
                if exc.code in (401, 403):
                    raise MakdError(f"{url} refused the request (HTTP {exc.code}): check the API key") from None
                raise HTTPError(exc.code, text) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                if attempt < retries and self._backoff(attempt):
                    continue
                reason = getattr(exc, "reason", exc)
                error = MakdError(f"cannot reach {url}: {reason}; is the server running?")
                if retries:
                    self._give_up(error)
                raise error from None
            return checked_answer(raw, url)
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int, retry_after: str | None = None) -> bool:
        """Wait before the next attempt; False (no wait) once another request of the job has failed for good."""
        pause(self._gave_up, backoff_seconds(attempt, retry_after))
        return not self._gave_up.is_set()

    def _give_up(self, error: MakdError) -> None:
        with self._lock:
            if self._gave_up_error is None:
                self._gave_up_error = error
        self._gave_up.set()
        raise error

    def _check_gave_up(self) -> None:
        if self._gave_up.is_set() and self._gave_up_error is not None:
            raise MakdError(str(self._gave_up_error))


    @staticmethod
    def label_scores(top: dict[str, float], groups: list[list[str]]) -> np.ndarray:
        """Log-sum-exp of each label's spellings in ``top``; missing labels get the floor (module docstring)."""
        vals = np.full(len(groups), np.nan)
        for i, spellings in enumerate(groups):
            found = [top[s] for s in spellings if s in top]
            if found:
                mx = max(found)
                vals[i] = mx + math.log(sum(math.exp(v - mx) for v in found))
        missing = np.isnan(vals)
        if missing.any():
            lowest = min(top.values()) if top else 0.0
            leftover = max(1.0 - sum(math.exp(v) for v in top.values()), 1e-12)
            vals[missing] = min(lowest, math.log(leftover / int(missing.sum())))
        return vals

    def server_token_ids(self, text: str) -> list[int] | None:
        """``text``'s token ids on the server's tokenizer, through whichever tokenize endpoint it has
        (llama.cpp, vLLM and SGLang: ``/tokenize``; some proxies: ``/v1/tokenize``; llama-cpp-python:
        ``/extras/tokenize``); None if none."""
        root = self.api_root
        for path in [self._tokenize_path] if self._tokenize_path else ["/tokenize", "/v1/tokenize", "/extras/tokenize"]:
            ids = []
            for probe in ("", text):  # the empty text shows what the endpoint prepends (a BOS token)
                body = {"content": probe, "add_special": False, "input": probe, "model": self.model, "prompt": probe,
                        "add_special_tokens": False}
                try:
                    out = self._post("", body, url=root + path, retries=0)
                except (HTTPError, MakdError):
                    ids = None
                    break
                toks = out.get("tokens") if isinstance(out, dict) else None
                if not isinstance(toks, list) or not all(isinstance(t, int) for t in toks):
                    ids = None
                    break
                ids.append(toks)
            if ids is not None:
                self._tokenize_path = path
                head, full = ids
                return full[len(head):] if full[: len(head)] == head else full
        return None


def pause(stop: threading.Event, seconds: float) -> None:
    """Wait ``seconds``, or less once ``stop`` is set (another request of the job has failed for good)."""
    stop.wait(seconds)


def backoff_seconds(attempt: int, retry_after: str | None = None) -> float:
    """Exponential backoff with jitter (concurrent requests that failed together do not retry
    together); a server's Retry-After in seconds is honoured up to 30 s."""
    try:
        wait = float(retry_after) if retry_after else None
    except ValueError:
        wait = None
    if wait is not None and not math.isfinite(wait):
        wait = None
    return max(0.0, min(30.0, wait if wait is not None else 2.0 ** attempt * (0.5 + random.random())))


def shown(value) -> str:
    """A short, one-line picture of what a server sent, for an error line."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return " ".join(text.split())[:120]


def checked_answer(raw: bytes, url: str) -> dict:
    """A server's body as a JSON object: not UTF-8, not JSON or not an object is one line naming the server."""
    from makd_cli.jsonio import loads

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MakdError(f"{url} answered with a body that is not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                        "is --api-base an OpenAI-compatible endpoint?") from None
    try:
        obj = loads(text, f"{url} answered", allow_nonfinite=True)  # -Infinity is a log-probability some servers send
    except MakdError as exc:
        raise MakdError(f"{exc}; is --api-base an OpenAI-compatible endpoint?") from None
    if not isinstance(obj, dict):
        raise MakdError(f"{url} answered with a JSON {type(obj).__name__.replace('list', 'array')}, not an object: {shown(obj)}; "
                        "is --api-base an OpenAI-compatible endpoint?")
    return obj


def prompt_tokens(out: dict) -> int:
    usage = out.get("usage")
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return tokens if isinstance(tokens, int) and not isinstance(tokens, bool) and 0 <= tokens < 1 << 40 else 0


def first_choice(out: dict, where: str) -> dict:
    """The first choice of a chat completion, checked."""
    choices = out.get("choices")
    if not choices:
        raise MakdError(f"{where} returned no choices: {shown(out)}")
    if not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise MakdError(f"{where} answered choices that are not a list of objects: {shown(choices)}")
    return choices[0]


def top_logprobs_of(choice: dict, server: str) -> dict[str, float]:
    """{token text: log-probability} of the first answer token, every entry checked: a token is text and a
    log-probability a number in [-inf, 0] (a little above 0 is rounding); -inf entries are dropped."""
    where = f"{server}/chat/completions"
    lp = choice.get("logprobs")
    content = lp.get("content") if isinstance(lp, dict) else None
    if lp is not None and not isinstance(lp, dict) or content is not None and not isinstance(content, list):
        raise MakdError(f"{where} answered logprobs that are not {{\"content\": [...]}}: {shown(lp)}")
    first = content[0] if content else None
    if first is not None and not isinstance(first, dict):
        raise MakdError(f"{where} answered a logprobs entry that is not an object: {shown(first)}")
    items = first.get("top_logprobs") if first else None
    if not items:
        raise MakdError(f"{server} returned no top_logprobs; extraction needs an endpoint that gives "
                        "log-probabilities (llama.cpp's server, vLLM, OpenAI chat models) or --backend llama.cpp / hf")
    if not isinstance(items, list):
        raise MakdError(f"{where} answered top_logprobs that are not a list: {shown(items)}")
    top: dict[str, float] = {}
    for item in items:
        tok = item.get("token") if isinstance(item, dict) else None
        val = item.get("logprob") if isinstance(item, dict) else None
        if not isinstance(tok, str) or isinstance(val, bool) or not isinstance(val, (int, float)):
            raise MakdError(f"{where} answered a top_logprobs entry that is not {{\"token\": text, \"logprob\": number}}: {shown(item)}")
        if math.isnan(val) or val > 1e-3:
            raise MakdError(f"{where} answered the log-probability {val!r} for token {tok!r}; a log-probability lies in [-inf, 0]")
        if val > -math.inf:
            top[tok] = max(top.get(tok, -math.inf), min(float(val), 0.0))
    if not top:
        raise MakdError(f"{where} answered top_logprobs that are all -inf: {shown(items)}")
    return top


def error_message(body: str) -> str:
    try:
        obj = json.loads(body)
        msg = (obj.get("error") or {}).get("message") if isinstance(obj.get("error"), dict) else obj.get("error") or obj.get("detail")
        return " ".join(str(msg or body).split())[:300]
    except (ValueError, AttributeError, RecursionError):
        return " ".join(body.split())[:300]
