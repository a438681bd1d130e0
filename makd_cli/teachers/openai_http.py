"""Language teacher behind any OpenAI-compatible HTTP endpoint (``--backend openai``): OpenAI itself,
vLLM, llama.cpp's and llama-cpp-python's servers, Ollama, LM Studio ...

Only the standard library is used (urllib). The endpoint is ``--api-base`` (or ``$OPENAI_BASE_URL``,
default https://api.openai.com/v1; a bare ``http://host:port`` gets ``/v1``) and the key comes from
the environment variable ``api_key_env`` (default ``OPENAI_API_KEY``). Without a key only a loopback
endpoint (localhost, 127.0.0.0/8, ::1) is used: a remote one is refused before anything is sent.

Generation (``gen-questions``): ``/chat/completions`` with ``response_format`` ``json_schema``; an
endpoint that rejects it is asked again with ``json_object`` plus the schema (llama-cpp-python,
Anyscale style), then plain ``json_object``, then no format; the first that works is kept.

Extraction: the endpoint formats the chat and tokenizes, so the teacher cannot read raw logits.
Instead each prompt is sent with ``max_tokens=1``, ``logprobs`` and ``top_logprobs`` (at most 20 on
OpenAI), and a label's score is the log-sum-exp of the log-probabilities of its spellings ("1", " 1",
...) among the first answer token's top list. **Floor for labels missing from the top list:** their
probability is unknown but at most the lowest listed one, and all of them together hold at most the
mass the list leaves over, so each missing label gets log(min(lowest listed probability, leftover
mass / number of missing labels)). These are log-probabilities, not logits; they differ from the
logits by one constant per prompt, so the softmax over the labels is the same where all labels are
listed. Labels are matched by their text, so they must be single tokens on the server's tokenizer
(digits 1-9 and letters A-J are in every common vocabulary).

**Exact label probabilities where the server allows it:** when the server has a tokenize endpoint
(llama.cpp's and vLLM's ``/tokenize``, llama-cpp-python's ``/extras/tokenize``), every request also
carries ``logit_bias`` +100 on the labels' token ids, which lifts all spellings of all labels into
the top list, so none needs the floor (the bias adds the same constant to every label, so their
softmax is unchanged). A server that rejects ``logit_bias`` is asked again without it, and that is
remembered. The targets' metadata says which reading gave the probabilities (``label_probs``:
``logit-bias`` when every prompt's list held every label spelling under the bias, else
``top-logprobs``) and counts the prompts that needed the floor.

**Throughput:** ``concurrency`` requests (default 16) are in flight at once (servers built for
throughput batch them), with retries and jittered exponential backoff on 429/5xx and connection
errors; results come back in prompt order, and the extractor saves finished units as before.

**Answers are checked like files** (``_answer``, ``_choice``, ``_top_logprobs``): a body that is not UTF-8
or not JSON, a JSON array where an object belongs, a field of the wrong type or a log-probability that is
not a number in [-inf, 0] ends the job in one line naming the server and what it sent. **One deadline:**
once a request has failed for good (its retries spent), every other request of the job stops at its next
retry instead of waiting out its own backoff, so the error comes when the first request gave up.

**Redirects:** a redirect to another origin (scheme, host, port) than ``--api-base``'s is refused,
never followed: the API key and the prompts go to that host only, and a key-less loopback endpoint
cannot forward them elsewhere.
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
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import numpy as np

from makd_cli.errors import MakdError
from makd_cli.teachers.base import LanguageModel

DEFAULT_API_BASE = "https://api.openai.com/v1"
FORMAT_MODES = ("json_schema", "json_object+schema", "json_object", "none")


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


class OpenAIChatLM(LanguageModel):
    backend = "openai"

    def __init__(self, model: str, api_base: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 timeout: float = 120.0, retries: int = 3, top_logprobs: int = 20, concurrency: int = 16):
        self.model = model
        self.name = model
        self.api_base = normalise_api_base(api_base or os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_BASE")
                                           or DEFAULT_API_BASE)
        self.api_key = os.environ.get(api_key_env) or None
        if self.api_key is None and not is_loopback(self.api_base):
            raise MakdError(f"--backend openai: ${api_key_env} is not set; export the API key for {self.api_base} "
                            "(only loopback endpoints are used without a key)")
        self.timeout, self.retries, self.top_logprobs = timeout, retries, top_logprobs
        if concurrency < 1:
            raise MakdError("--concurrency must be at least 1 (requests in flight)")
        self.concurrency = concurrency
        self.prompts_per_call = 4 * concurrency  # the extractor hands over several units at once: no idle tail per unit
        self.evaluated_tokens = 0
        self._format_mode = 0  # index into FORMAT_MODES: the first one the endpoint accepted
        self._opener = urllib.request.build_opener(_SameOriginRedirects(self.api_base))
        self._lock = threading.Lock()  # evaluated_tokens, the counts and the bias switch are shared by the threads
        self._bias: dict[str, float] | None = None  # logit_bias for the current labels; {} when not available
        self._bias_groups: list | None = None
        self._biased_texts: set[str] = set()
        self._tokenize_path: str | None = None
        self.label_reads: Counter = Counter()  # prompts per reading: logit-bias | top-logprobs, and floored
        self._gave_up = threading.Event()  # a request failed for good: the others stop retrying (one deadline)
        self._gave_up_error: MakdError | None = None

    @property
    def label_probs_method(self) -> str:
        """How this run's label probabilities were read (targets' metadata ``label_probs``)."""
        reads = self.label_reads
        return "logit-bias" if reads["logit-bias"] and not reads["top-logprobs"] else "top-logprobs"

    # ---- HTTP ------------------------------------------------------------------------------
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
                        self._give_up(MakdError(f"{url} failed: HTTP {exc.code}: {_error_message(text)} "
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
            return _answer(raw, url)
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int, retry_after: str | None = None) -> bool:
        """Wait before the next attempt; False (no wait) once another request of the job has failed for good."""
        self._gave_up.wait(_backoff_seconds(attempt, retry_after))
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

    def _chat(self, body: dict) -> dict:
        try:
            out = self._post("/chat/completions", {"model": self.model, **body})
        except HTTPError as exc:
            raise MakdError(f"{self.api_base}/chat/completions failed: HTTP {exc.status}: {_error_message(exc.body)}") from None
        with self._lock:
            self.evaluated_tokens += _prompt_tokens(out)
        _choice(out, f"{self.api_base}/chat/completions")
        return out

    # ---- what the extractor asks of every backend --------------------------------------------
    def tokenize_plain(self, text: str) -> list:
        """No tokenizer here: a label is matched by its text, so its "token" is the text itself."""
        return [text]

    def tokenize(self, text: str) -> list[int]:
        raise MakdError("--backend openai has no token access; it scores whole chat messages")

    def chat_prompt(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        raise MakdError("--backend openai formats chats on the server")

    def next_token_logits(self, tokens: list[int]) -> np.ndarray:
        raise MakdError("--backend openai gives top log-probabilities, not logits; extraction uses option_logprobs")

    naive_next_token_logits = next_token_logits

    def reset_cache(self) -> None:
        pass

    # ---- extraction ------------------------------------------------------------------------
    def first_token_logprobs(self, messages: list[dict], logit_bias: dict[str, float] | None = None) -> dict[str, float]:
        """The top list of the first answer token: {token text: log-probability}."""
        body = {"messages": messages, "max_tokens": 1, "temperature": 0.0, "seed": 0,
                "logprobs": True, "top_logprobs": self.top_logprobs}
        if logit_bias:
            body["logit_bias"] = logit_bias
        out = self._chat(body)
        return _top_logprobs(_choice(out, f"{self.api_base}/chat/completions"), self.api_base)

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
        (llama.cpp and vLLM: ``/tokenize``; llama-cpp-python: ``/extras/tokenize``); None if none."""
        root = self.api_base[: -len("/v1")] if self.api_base.endswith("/v1") else self.api_base
        for path in [self._tokenize_path] if self._tokenize_path else ["/tokenize", "/extras/tokenize"]:
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

    def _logit_bias(self, groups: list[list[str]]) -> dict[str, float]:
        """+100 on every label spelling that is one token on the server ({} without a tokenizer)."""
        if self._bias_groups != groups:
            bias, texts = {}, set()
            for text in (t for spellings in groups for t in spellings):
                ids = self.server_token_ids(text)
                if ids is None:  # no tokenize endpoint: no bias, the top list alone
                    bias, texts = {}, set()
                    break
                if len(ids) == 1:
                    bias[str(ids[0])] = 100.0
                    texts.add(text)
            self._bias, self._bias_groups, self._biased_texts = bias, groups, texts
        return self._bias or {}

    def _score(self, messages: list[dict], groups: list[list[str]]) -> np.ndarray:
        bias = self._bias or {}
        if bias:
            try:
                top = self.first_token_logprobs(messages, bias)
            except MakdError as exc:
                if "logit_bias" not in str(exc) and "HTTP 400" not in str(exc) and "HTTP 422" not in str(exc):
                    raise
                with self._lock:
                    self._bias = {}  # the endpoint takes no logit_bias: ask again without it, and from now on
                bias = {}
                top = self.first_token_logprobs(messages)
        else:
            top = self.first_token_logprobs(messages)
        found_all = all(any(s in top for s in spellings) for spellings in groups)
        exact = bool(bias) and found_all and all(t in top for t in self._biased_texts)
        with self._lock:
            self.label_reads["logit-bias" if exact else "top-logprobs"] += 1
            self.label_reads["floored"] += not found_all
        return self.label_scores(top, groups)

    def option_logprobs(self, messages_list: list[list[dict]], groups: list[list[str]]) -> np.ndarray:
        """Label scores of every prompt (n x M), ``concurrency`` requests in flight, in prompt order."""
        self._logit_bias(groups)
        if self.concurrency == 1 or len(messages_list) == 1:
            return np.stack([self._score(m, groups) for m in messages_list])
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(messages_list))) as pool:
            return np.stack(list(pool.map(lambda m: self._score(m, groups), messages_list)))

    # ---- generation ------------------------------------------------------------------------
    def generate_json(self, messages: list[dict], schema: dict, seed: int, temperature: float = 0.7, max_tokens: int = 512) -> str:
        body = {"messages": messages, "temperature": temperature, "max_tokens": max_tokens, "seed": seed}
        while True:
            mode = FORMAT_MODES[self._format_mode]
            fmt = {"json_schema": {"type": "json_schema", "json_schema": {"name": "item", "schema": schema}},
                   "json_object+schema": {"type": "json_object", "schema": schema},
                   "json_object": {"type": "json_object"}, "none": None}[mode]
            try:
                out = self._post("/chat/completions", {"model": self.model, **body, **({"response_format": fmt} if fmt else {})})
            except HTTPError as exc:
                format_trouble = exc.status in (400, 422) or any(w in exc.body for w in ("response_format", "json_schema", "json_object"))
                if format_trouble and self._format_mode + 1 < len(FORMAT_MODES):
                    self._format_mode += 1  # the endpoint does not take this format: try the next, and remember
                    continue
                raise MakdError(f"{self.api_base}/chat/completions failed: HTTP {exc.status}: {_error_message(exc.body)}") from None
            break
        self.evaluated_tokens += _prompt_tokens(out)
        where = f"{self.api_base}/chat/completions"
        message = _choice(out, where).get("message")
        if message is None:
            return ""
        if not isinstance(message, dict) or not isinstance(message.get("content"), (str, type(None))):
            raise MakdError(f"{where} answered a message that is not {{\"content\": text}}: {_shown(message)}")
        return message.get("content") or ""


def _backoff_seconds(attempt: int, retry_after: str | None = None) -> float:
    """Exponential backoff with jitter (concurrent requests that failed together do not retry
    together); a server's Retry-After in seconds is honoured up to 30 s."""
    try:
        wait = float(retry_after) if retry_after else None
    except ValueError:
        wait = None
    if wait is not None and not math.isfinite(wait):
        wait = None
    return max(0.0, min(30.0, wait if wait is not None else 2.0 ** attempt * (0.5 + random.random())))


def _shown(value) -> str:
    """A short, one-line picture of what a server sent, for an error line."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return " ".join(text.split())[:120]


def _answer(raw: bytes, url: str) -> dict:
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
        raise MakdError(f"{url} answered with a JSON {type(obj).__name__.replace('list', 'array')}, not an object: {_shown(obj)}; "
                        "is --api-base an OpenAI-compatible endpoint?")
    return obj


def _prompt_tokens(out: dict) -> int:
    usage = out.get("usage")
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return tokens if isinstance(tokens, int) and not isinstance(tokens, bool) and 0 <= tokens < 1 << 40 else 0


def _choice(out: dict, where: str) -> dict:
    """The first choice of a chat completion, checked."""
    choices = out.get("choices")
    if not choices:
        raise MakdError(f"{where} returned no choices: {_shown(out)}")
    if not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise MakdError(f"{where} answered choices that are not a list of objects: {_shown(choices)}")
    return choices[0]


def _top_logprobs(choice: dict, server: str) -> dict[str, float]:
    """{token text: log-probability} of the first answer token, every entry checked: a token is text and a
    log-probability a number in [-inf, 0] (a little above 0 is rounding); -inf entries are dropped."""
    where = f"{server}/chat/completions"
    lp = choice.get("logprobs")
    content = lp.get("content") if isinstance(lp, dict) else None
    if lp is not None and not isinstance(lp, dict) or content is not None and not isinstance(content, list):
        raise MakdError(f"{where} answered logprobs that are not {{\"content\": [...]}}: {_shown(lp)}")
    first = content[0] if content else None
    if first is not None and not isinstance(first, dict):
        raise MakdError(f"{where} answered a logprobs entry that is not an object: {_shown(first)}")
    items = first.get("top_logprobs") if first else None
    if not items:
        raise MakdError(f"{server} returned no top_logprobs; extraction needs an endpoint that gives "
                        "log-probabilities (llama.cpp's server, vLLM, OpenAI chat models) or --backend llama.cpp / hf")
    if not isinstance(items, list):
        raise MakdError(f"{where} answered top_logprobs that are not a list: {_shown(items)}")
    top: dict[str, float] = {}
    for item in items:
        tok = item.get("token") if isinstance(item, dict) else None
        val = item.get("logprob") if isinstance(item, dict) else None
        if not isinstance(tok, str) or isinstance(val, bool) or not isinstance(val, (int, float)):
            raise MakdError(f"{where} answered a top_logprobs entry that is not {{\"token\": text, \"logprob\": number}}: {_shown(item)}")
        if math.isnan(val) or val > 1e-3:
            raise MakdError(f"{where} answered the log-probability {val!r} for token {tok!r}; a log-probability lies in [-inf, 0]")
        if val > -math.inf:
            top[tok] = max(top.get(tok, -math.inf), min(float(val), 0.0))
    if not top:
        raise MakdError(f"{where} answered top_logprobs that are all -inf: {_shown(items)}")
    return top


def _error_message(body: str) -> str:
    try:
        obj = json.loads(body)
        msg = (obj.get("error") or {}).get("message") if isinstance(obj.get("error"), dict) else obj.get("error") or obj.get("detail")
        return " ".join(str(msg or body).split())[:300]
    except (ValueError, AttributeError, RecursionError):
        return " ".join(body.split())[:300]
