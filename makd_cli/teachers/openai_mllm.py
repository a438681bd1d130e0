"""A multimodal teacher behind an OpenAI-compatible server (``makd extract --mllm MODEL --backend openai
--api-base URL``): vLLM, SGLang, llama.cpp's and llama-cpp-python's servers, or a hosted API.

MaKD's yes/no extraction at server scale: every (image, question) pair is one chat request, the image
as an ``image_url`` data URL and the question (``--prompt-layout``: ``paper`` appends " Answer yes or
no.", ``makd-reference`` sends it bare) as the text after it, with ``max_tokens=1`` and ``logprobs``.
The server applies the model's own chat template and image processor, so the prompt is the one the
model was trained with, as in the in-process teachers. p(yes) is read from the first generated
token's top log-probabilities: log-odds = logsumexp over the yes spellings minus logsumexp over the
no spellings (the in-process teachers' ``z_yes - z_no``; log-probabilities differ from logits by one
constant per prompt, which cancels). The spellings are matched by their text as the server writes the
tokens, so a spelling counts only where it is one token on the server, as in the in-process teachers
(``makd-reference`` reads "Yes" and "No" alone: the vocabulary entries where the server writes tokens
as they are spelled in the vocabulary).

**Exact where the server allows it:** the Yes/No token ids come from the server's tokenize endpoint
(``/tokenize``, ``/v1/tokenize`` or llama-cpp-python's ``/extras/tokenize``); every request then
carries ``logit_bias`` +100 on them, which lifts every spelling into the top list without changing
their ratio. A spelling still missing gets the floor of ``openai_endpoint.label_scores``; the
targets' ``meta.label_probs`` says which reading gave the probabilities (``logit-bias`` where every
request's list held every biased spelling, else ``top-logprobs``) and ``label_probs_floored`` counts
the requests that needed the floor, as for the language teacher. A server that rejects
``logit_bias`` is asked again without it, and that is remembered.

**Images** go as lossless PNG at their own size by default, so the server's processor (LLaVA's 336 px
resize, InternVL's 448 px tiles, Qwen2-VL's pixel budget) sees exactly the pixels the in-process
processor sees; ``image_max_side`` (``--image-max-side``) downsizes larger images first (bicubic,
aspect kept) to save bandwidth, at the price of that exactness. Each image is encoded once, in the
DataLoader workers, and shared by its questions' requests; servers with prefix caching (vLLM
``--enable-prefix-caching``, SGLang's radix cache) then encode it once too.

**Scoring endpoint:** a server with SGLang's ``/v1/score`` returns the probabilities of given token
ids after a query and each of several items without generating, so one request per image carries all
its questions. It is probed once (on the first chunk): it is used only if it answers in its
documented shape *and* its scores change with the image (a server that ignored the image would give
wrong targets silently); the result is recorded in ``meta.score_endpoint``. Note that ``/v1/score``
takes raw text, not chat messages: the query is ``"<image>\\n"`` and each item a question (MaKD's
reference prompt without the chat template). ``score_endpoint="off"`` keeps chat completions.

**Throughput and safety:** ``concurrency`` requests in flight (across the images of a chunk and their
questions), results in order; retries with jittered backoff on 429/5xx (Retry-After honoured);
finished chunks of images are saved as for the in-process teachers, so a rerun resumes; the API key
goes to ``--api-base``'s host only (a redirect to another origin is refused, never followed).

``--kind zero_shot`` needs the log-likelihood of whole answers, which chat completions do not return:
it is refused with a clear message (use an in-process teacher for it).
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from makd_cli.errors import MakdError
from makd_cli.teachers.base import MultimodalTeacher, yesno_layout
from makd_cli.teachers.openai_endpoint import HTTPError, OpenAIEndpoint, error_message

SCORE_QUERY = "<image>\n"  # /v1/score takes raw text: the image placeholder, then each question as an item
SCORE_ENDPOINT_CHOICES = ("auto", "off")


@dataclass
class HTTPPrepared:
    """One question set as sent: the texts after the image and the answer spellings read."""

    prompts: list[str]  # question + layout suffix: the text part of each request
    groups: list[list[str]]  # [yes spellings, no spellings], matched by token text
    layout: str
    yes_ids: list[int] = field(default_factory=list)  # the server's token ids of the single-token spellings
    no_ids: list[int] = field(default_factory=list)  # (empty when the server has no tokenize endpoint)


class ImageDataURL:
    """What DataLoader workers run: the image as a PNG data URL (picklable, no model)."""

    def __init__(self, max_side: int = 0):
        self.max_side = max_side

    def __call__(self, image) -> dict:
        from PIL import Image

        img = Image.fromarray(image) if isinstance(image, np.ndarray) else image
        img = img.convert("RGB")
        if self.max_side and max(img.size) > self.max_side:
            scale = self.max_side / max(img.size)
            img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return {"url": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), "size": img.size}


def _without_credentials(url: str) -> str:
    """``url`` without a user:password@ part (the metadata is shared; the key never goes there either)."""
    from urllib.parse import urlparse

    u = urlparse(url)
    return u._replace(netloc=u.netloc.rsplit("@", 1)[-1]).geturl() if "@" in u.netloc else url


def _probe_image(value: int):
    from PIL import Image

    return Image.new("RGB", (64, 64), (value, value, value))


class OpenAIMultimodalTeacher(OpenAIEndpoint, MultimodalTeacher):
    backend = "openai"
    dtype = "server"
    batched_images = True  # extract/image_yesno.py hands over a chunk of images at once (requests across images)

    def __init__(self, model: str, api_base: str | None = None, api_key_env: str = "OPENAI_API_KEY", *,
                 concurrency: int = 16, image_max_side: int = 0, score_endpoint: str = "auto", timeout: float = 300.0,
                 retries: int = 4, top_logprobs: int = 20):
        OpenAIEndpoint.__init__(self, model, api_base, api_key_env, timeout, retries, concurrency, flag="--mllm --backend openai")
        if image_max_side < 0:
            raise MakdError("--image-max-side must be 0 (send images as they are) or a positive number of pixels")
        if score_endpoint not in SCORE_ENDPOINT_CHOICES:
            raise MakdError(f"--score-endpoint must be {' or '.join(SCORE_ENDPOINT_CHOICES)}")
        self.image_max_side, self.top_logprobs = image_max_side, top_logprobs
        self.score_endpoint = "off" if score_endpoint == "off" else None  # None: not probed yet
        self.label_reads: Counter = Counter()  # requests per reading: logit-bias | top-logprobs | score, and floored
        self.evaluated_tokens = 0
        self._bias: dict[str, float] | None = None  # None: not looked up yet; {}: none to send
        self._biased_texts: set[str] = set()
        self._prepared: dict[tuple, HTTPPrepared] = {}

    # ---- prompts -------------------------------------------------------------------------------
    def prepare_yesno(self, questions: list[str], layout: str = "paper") -> HTTPPrepared:
        key = (tuple(questions), layout)
        if key not in self._prepared:
            lay = yesno_layout(layout)
            groups = [list(dict.fromkeys(lay.yes)), list(dict.fromkeys(lay.no))]
            prep = HTTPPrepared([q + lay.suffix for q in questions], groups, layout)
            self._look_up_answer_ids(prep)
            self._prepared[key] = prep
        return self._prepared[key]

    def _look_up_answer_ids(self, prep: HTTPPrepared) -> None:
        """The server's ids of the single-token spellings, and the logit_bias on them ({} without a tokenizer)."""
        bias, texts, ids = {}, set(), ([], [])
        for side, spellings in enumerate(prep.groups):
            for text in spellings:
                toks = self.server_token_ids(text)
                if toks is None:  # no tokenize endpoint: match texts in the top list, no bias
                    prep.yes_ids, prep.no_ids, self._bias, self._biased_texts = [], [], {}, set()
                    return
                if len(toks) == 1 and toks[0] not in ids[side]:
                    ids[side].append(toks[0])
                    bias[str(toks[0])] = 100.0
                    texts.add(text)
        if not ids[0] or not ids[1]:
            spellings = " or ".join("/".join(map(repr, g)) for g in prep.groups)
            raise MakdError(f"model {self.name} at {self.api_base}: no single token spells {spellings} on the server's "
                            "tokenizer; it cannot answer yes/no questions here")
        prep.yes_ids, prep.no_ids = ids
        if self._bias is None or self._bias:  # a server that refused the bias keeps being asked without it
            self._bias, self._biased_texts = bias, texts

    def prepare_answers(self, question: str, answers: list[str]):
        raise MakdError("--kind zero_shot scores whole answers by their log-likelihood, which an OpenAI-compatible chat "
                        "endpoint does not return; run it with an in-process teacher (--mllm MODEL.gguf --mmproj, or "
                        "a transformers model), or use --kind yesno")

    def preprocessor(self, prep: HTTPPrepared, naive: bool = False) -> ImageDataURL:
        if naive:
            raise MakdError("--backend openai has no naive path: the server runs every prompt whole")
        return ImageDataURL(self.image_max_side)

    # ---- requests ------------------------------------------------------------------------------
    def _map(self, fn, items: list) -> list:
        """``fn`` over ``items`` with ``concurrency`` in flight, results in order; on the first
        failure the requests not yet sent are cancelled."""
        if self.concurrency == 1 or len(items) == 1:
            return [fn(x) for x in items]
        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(items)))
        try:
            return list(pool.map(fn, items))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _request(self, path: str, body: dict) -> dict:
        try:
            out = self._post(path, {"model": self.model, **body})
        except HTTPError as exc:
            raise MakdError(f"{self.api_base}{path} failed: HTTP {exc.status}: {error_message(exc.body)}") from None
        if not isinstance(out, dict):
            raise self._wrong_shape(path, "not a JSON object", out)
        usage = out.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), (int, float)):
            with self._lock:
                self.evaluated_tokens += int(usage["prompt_tokens"])
        return out

    def _wrong_shape(self, path: str, what: str, out) -> MakdError:
        return MakdError(f"{self.api_base}{path} answered with a body of the wrong shape ({what}): {json.dumps(out)[:200]}; "
                         "is --api-base an OpenAI-compatible server?")

    @staticmethod
    def messages(url: str, text: str) -> list[dict]:
        """One user turn: the image first (where LLaVA, Qwen2-VL and InternVL put it), then the question."""
        return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}]}]

    def _top_logprobs(self, out: dict) -> dict[str, float]:
        """{token text: log-probability} of the first generated token, checked for shape."""
        path = "/chat/completions"
        choices = out.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise self._wrong_shape(path, "no choices", out)
        lp = choices[0].get("logprobs")
        content = lp.get("content") if isinstance(lp, dict) else None
        if not content:
            raise MakdError(f"{self.api_base}{path} returned no logprobs; MaKD extraction needs a server that gives "
                            "log-probabilities (vLLM, SGLang, llama.cpp's server, llama-cpp-python's with logits_all)")
        first = content[0]
        top = first.get("top_logprobs") if isinstance(first, dict) else None
        if not isinstance(top, list) or not top:
            raise self._wrong_shape(path, "no top_logprobs list for the first token", out)
        found: dict[str, float] = {}
        for item in top:
            tok, val = (item.get("token"), item.get("logprob")) if isinstance(item, dict) else (None, None)
            if not isinstance(tok, str) or not isinstance(val, (int, float)) or isinstance(val, bool):
                raise self._wrong_shape(path, "a top_logprobs entry without token and logprob", out)
            if math.isnan(val) or val > 1e-3:  # a log-probability lies in [-inf, 0] (a little above 0 is rounding)
                raise self._wrong_shape(path, f"the log-probability {val!r} for token {tok!r}", out)
            if math.isfinite(val):
                found[tok] = max(found.get(tok, -math.inf), min(float(val), 0.0))
        return found

    def _chat_logodds(self, job: tuple[str, str], groups: list[list[str]]) -> float:
        url, text = job
        body = {"messages": self.messages(url, text), "max_tokens": 1, "temperature": 0.0, "seed": 0,
                "logprobs": True, "top_logprobs": self.top_logprobs}
        bias = self._bias or {}
        try:
            out = self._request("/chat/completions", {**body, "logit_bias": bias} if bias else body)
        except MakdError as exc:
            if not bias or not any(s in str(exc) for s in ("logit_bias", "HTTP 400", "HTTP 422")):
                raise
            with self._lock:
                self._bias = {}  # the server takes no logit_bias: ask again without it, and from now on
            bias = {}
            out = self._request("/chat/completions", body)
        top = self._top_logprobs(out)
        found_all = all(any(s in top for s in g) for g in groups)
        exact = bool(bias) and all(t in top for t in self._biased_texts)
        with self._lock:
            self.label_reads["logit-bias" if exact else "top-logprobs"] += 1
            self.label_reads["floored"] += not found_all
        yes, no = self.label_scores(top, groups)
        return float(yes - no)

    # ---- the scoring endpoint (SGLang's /v1/score) --------------------------------------------
    def _score_body(self, url: str, prep: HTTPPrepared) -> dict:
        return {"query": SCORE_QUERY, "items": list(prep.prompts), "label_token_ids": prep.yes_ids + prep.no_ids,
                "apply_softmax": False, "item_first": False, "image_data": url}

    def _score_rows(self, out, prep: HTTPPrepared) -> np.ndarray:
        """(Q, yes + no) probabilities from a /v1/score answer, checked for shape."""
        scores = out.get("scores") if isinstance(out, dict) else None
        width = len(prep.yes_ids) + len(prep.no_ids)
        ok = (isinstance(scores, list) and len(scores) == len(prep.prompts)
              and all(isinstance(r, list) and len(r) == width for r in scores)
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0 for r in scores for v in r))
        if not ok:
            raise self._wrong_shape("/score", f"expected scores: {len(prep.prompts)} lists of {width} probabilities", out)
        return np.asarray(scores, dtype=np.float64)

    def _detect_score_endpoint(self, prep: HTTPPrepared) -> str:
        """Probe /v1/score once: "used" only if it answers in shape and its scores move with the image."""
        if not prep.yes_ids:
            return "no-token-ids"  # the endpoint takes token ids; without a tokenizer there are none
        rows = []
        for value in (0, 255):
            url = ImageDataURL()(_probe_image(value))["url"]
            try:
                out = self._post("/score", {"model": self.model, **self._score_body(url, prep)}, retries=0)
            except (HTTPError, MakdError):
                return "absent"
            try:
                rows.append(self._score_rows(out, prep))
            except MakdError:
                return "absent"
        return "used" if np.abs(rows[0] - rows[1]).max() > 1e-9 else "ignores-images"

    def _score_logodds(self, url: str, prep: HTTPPrepared) -> np.ndarray:
        p = self._score_rows(self._request("/score", self._score_body(url, prep)), prep)
        ny = len(prep.yes_ids)
        tiny = np.finfo(np.float64).tiny
        yes, no = p[:, :ny].sum(1), p[:, ny:].sum(1)
        with self._lock:
            self.label_reads["score"] += len(yes)
            self.label_reads["floored"] += int(np.sum((yes <= 0) | (no <= 0)))
        return np.log(np.maximum(yes, tiny)) - np.log(np.maximum(no, tiny))

    # ---- what extract/image_yesno.py drives ----------------------------------------------------
    def yesno_batch(self, encs: list[dict], prep: HTTPPrepared) -> np.ndarray:
        """Log-odds of every prepared question for every image of a chunk (n x Q), in order."""
        if self.score_endpoint is None:
            self.score_endpoint = self._detect_score_endpoint(prep)
        if self.score_endpoint == "used":
            return np.stack(self._map(lambda e: self._score_logodds(e["url"], prep), encs)).astype(np.float32)
        jobs = [(e["url"], text) for e in encs for text in prep.prompts]
        flat = self._map(lambda job: self._chat_logodds(job, prep.groups), jobs)
        return np.asarray(flat, dtype=np.float32).reshape(len(encs), len(prep.prompts))

    def yesno_from_encoded(self, enc: dict, prep: HTTPPrepared, batch_questions: int = 64) -> np.ndarray:
        return self.yesno_batch([enc], prep)[0]

    def yesno_logodds(self, image, questions: list[str], batch_questions: int = 64, naive: bool = False,
                      layout: str = "paper") -> np.ndarray:
        prep = self.prepare_yesno(questions, layout)
        return self.yesno_from_encoded(self.preprocessor(prep, naive)(image), prep)

    @property
    def label_probs_method(self) -> str:
        reads = self.label_reads
        if reads["score"] and not (reads["logit-bias"] or reads["top-logprobs"]):
            return "score-endpoint"
        return "logit-bias" if reads["logit-bias"] and not reads["top-logprobs"] else "top-logprobs"

    def targets_meta(self) -> dict:
        """What the targets' metadata records about this run (docs/formats.md)."""
        return {"api_base": _without_credentials(self.api_base), "scoring": "v1/score" if self.score_endpoint == "used" else "chat/completions",
                "score_endpoint": self.score_endpoint or "not-probed", "label_probs": self.label_probs_method,
                "label_probs_floored": int(self.label_reads["floored"]),
                "image_encoding": "png" + (f", longer side at most {self.image_max_side} px" if self.image_max_side else ""),
                "answer_spellings": [list(g) for g in self._prepared_groups()]}

    def _prepared_groups(self) -> list[list[str]]:
        return next(iter(self._prepared.values())).groups if self._prepared else []
