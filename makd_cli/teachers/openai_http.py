"""Language teacher behind any OpenAI-compatible HTTP endpoint (``--backend openai``): OpenAI itself,
vLLM, llama.cpp's and llama-cpp-python's servers, Ollama, LM Studio ...

The HTTP plumbing (``openai_endpoint.py``, where answers are checked like files and one deadline holds
for the whole job) uses only the standard library. The endpoint is ``--api-base`` (or ``$OPENAI_BASE_URL``,
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

**Redirects:** a redirect to another origin (scheme, host, port) than ``--api-base``'s is refused,
never followed: the API key and the prompts go to that host only, and a key-less loopback endpoint
cannot forward them elsewhere.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from makd_cli.errors import MakdError
from makd_cli.teachers.base import LanguageModel
from makd_cli.teachers.openai_endpoint import (  # noqa: F401  (the shared plumbing, importable from here as before)
    DEFAULT_API_BASE,
    HTTPError,
    OpenAIEndpoint,
    is_loopback,
    normalise_api_base,
)
from makd_cli.teachers.openai_endpoint import error_message as _error_message  # noqa: F401
from makd_cli.teachers.openai_endpoint import first_choice, prompt_tokens, shown, top_logprobs_of

FORMAT_MODES = ("json_schema", "json_object+schema", "json_object", "none")


class OpenAIChatLM(OpenAIEndpoint, LanguageModel):
    backend = "openai"

    def __init__(self, model: str, api_base: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 timeout: float = 120.0, retries: int = 3, top_logprobs: int = 20, concurrency: int = 16):
        OpenAIEndpoint.__init__(self, model, api_base, api_key_env, timeout, retries, concurrency)
        self.top_logprobs = top_logprobs
        self.prompts_per_call = 4 * concurrency  # the extractor hands over several units at once: no idle tail per unit
        self.evaluated_tokens = 0
        self._format_mode = 0  # index into FORMAT_MODES: the first one the endpoint accepted
        self._bias: dict[str, float] | None = None  # logit_bias for the current labels; {} when not available
        self._bias_groups: list | None = None
        self._biased_texts: set[str] = set()
        self.label_reads: Counter = Counter()  # prompts per reading: logit-bias | top-logprobs, and floored

    @property
    def label_probs_method(self) -> str:
        """How this run's label probabilities were read (targets' metadata ``label_probs``)."""
        reads = self.label_reads
        return "logit-bias" if reads["logit-bias"] and not reads["top-logprobs"] else "top-logprobs"

    def _chat(self, body: dict) -> dict:
        try:
            out = self._post("/chat/completions", {"model": self.model, **body})
        except HTTPError as exc:
            raise MakdError(f"{self.api_base}/chat/completions failed: HTTP {exc.status}: {_error_message(exc.body)}") from None
        with self._lock:
            self.evaluated_tokens += prompt_tokens(out)
        first_choice(out, f"{self.api_base}/chat/completions")
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
        return top_logprobs_of(first_choice(out, f"{self.api_base}/chat/completions"), self.api_base)

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
        self.evaluated_tokens += prompt_tokens(out)
        where = f"{self.api_base}/chat/completions"
        message = first_choice(out, where).get("message")
        if message is None:
            return ""
        if not isinstance(message, dict) or not isinstance(message.get("content"), (str, type(None))):
            raise MakdError(f"{where} answered a message that is not {{\"content\": text}}: {shown(message)}")
        return message.get("content") or ""
