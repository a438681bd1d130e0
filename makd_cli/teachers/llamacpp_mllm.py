"""A GGUF language model + mmproj vision projector on llama.cpp as the per-image yes/no teacher
(MaKD section 3.2), for machines without a GPU.

llama-cpp-python's multimodal library (mtmd, the successor of llava/clip) turns the prompt and the
image into chunks: text tokens, the image's embeddings (vision tower + projector), text tokens.
Every prompt of one image shares its chat header, the image and usually the first text tokens after
it, so that prefix is evaluated once (the image encoded once) and kept in the KV cache; each
question's suffix is then decoded from position ``P`` after the prefix, and the cache is cut back to
``P`` (``llama_memory_seq_rm``) before the next question. Only the last position's logits are read:
q = softmax(z_yes, z_no)[yes], where z_yes is the logsumexp over the single-token spellings of
Yes/yes/ Yes/ yes (and likewise for no). One sequence, one question at a time: the KV cells of a
prompt sit where a fresh evaluation puts them, so cached answers equal the naive loop's (see
``teachers/llamacpp.py`` on why batching prompts as parallel sequences moves quantized results).

The teacher offers the interface ``extract/image_yesno.py`` drives (``prepare_yesno``,
``preprocessor``, ``yesno_from_encoded``, ``yesno_naive``; and the zero-shot ``prepare_answers`` /
``answer_logliks_from_encoded``), so ``makd extract --mllm model.gguf --mmproj mmproj.gguf`` runs the
same extraction as the transformers teacher. ``naive=True`` re-evaluates every prompt from scratch
(image included) through mtmd's own helper, for benchmarks and exactness tests.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from makd_cli.errors import MakdError
from makd_cli.teachers.base import YESNO_LAYOUTS, MultimodalTeacher, YesNoLayout, yesno_layout
from makd_cli.teachers.models import GGUF_ALIASES, is_gguf

_TEXT, _IMAGE = 0, 1  # MTMD_INPUT_CHUNK_TYPE_*


def is_gguf_spec(name: str) -> bool:
    """Whether ``--mllm name`` means a llama.cpp GGUF language model rather than a transformers one."""
    if name in GGUF_ALIASES or name.lower().endswith(".gguf"):
        return True
    p = Path(name).expanduser()
    try:
        return p.is_file() and is_gguf(p)
    except OSError:
        return False


def _import_mtmd():
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        raise MakdError("llama-cpp-python is not installed; run `make setup` or `pip install llama-cpp-python`") from None
    try:
        import llama_cpp.mtmd_cpp as mtmd
    except (ImportError, OSError, AttributeError) as exc:
        raise MakdError(f"this llama-cpp-python has no multimodal (mtmd) library ({type(exc).__name__}); "
                        "install a recent llama-cpp-python (0.3.10 or later)") from None
    return mtmd


@dataclass
class LlamaPrepared:
    """Prompts for one question set, tokenized around the image once (on a blank picture)."""

    prompts: list[str]
    pre: list[int]  # text tokens before the image (shared by every prompt)
    post: list[list[int]]  # each prompt's text tokens after the image
    cut: int  # leading post-image tokens shared by every prompt (they go into the cached prefix)
    yes_ids: list[int] = field(default_factory=list)  # yes/no questions: the answer tokens read (log-sum-exp each)
    no_ids: list[int] = field(default_factory=list)


class RGBPreprocessor:
    """What DataLoader workers run: decode to an RGB uint8 array (no model; picklable). The image's
    embedding needs the model's projector, so it happens in the main process, once per image."""

    def __init__(self, naive: bool):
        self.naive = naive

    def __call__(self, image):
        rgb = _rgb(image)
        return {"image": rgb} if self.naive else {"rgb": rgb}


def _rgb(image) -> np.ndarray:
    if isinstance(image, np.ndarray):
        a = image
    else:
        a = np.asarray(image.convert("RGB"))
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise MakdError(f"expected an RGB uint8 image, got an array of shape {a.shape} and type {a.dtype}")
    return np.ascontiguousarray(a)


class LlamaCppMultimodalTeacher(MultimodalTeacher):
    backend = "llama.cpp"

    def __init__(self, model: str, mmproj, *, n_ctx: int = 4096, threads: int | None = None, seed: int = 0,
                 use_gpu: bool = False):
        mmproj = Path(mmproj).expanduser()
        if not mmproj.is_file():
            raise MakdError(f"--mmproj {mmproj}: no such file (give the vision projector .gguf that goes with the model)")
        if not is_gguf(mmproj):
            raise MakdError(f"--mmproj {mmproj} is not a GGUF file; give an mmproj .gguf for llama.cpp")
        mtmd = _import_mtmd()
        from llama_cpp import _logger

        # Route mtmd/clip's logging through llama-cpp-python's logger (errors only unless verbose).
        mtmd.mtmd_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
        mtmd.mtmd_helper_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
        from makd_cli.teachers.llamacpp import LlamaCppLM

        threads = threads or max(1, os.cpu_count() or 2)
        self.lm = LlamaCppLM(model, n_ctx=n_ctx, threads=threads, seed=seed)
        self.llm = self.lm.llm
        self.mtmd = mtmd
        self.mmproj = mmproj
        params = mtmd.mtmd_context_params_default()
        params.use_gpu = bool(use_gpu)
        params.print_timings = False
        params.n_threads = threads
        params.warmup = False
        ctx = mtmd.mtmd_init_from_file(str(mmproj).encode(), self.llm.model, params)
        if not ctx:
            raise MakdError(
                f"llama.cpp could not load the projector {mmproj.name} for {self.lm.name}: an mmproj only fits the "
                f"language model it was made for (its projection size must equal the model's embedding size, "
                f"{self.llm.n_embd()})"
            )
        self.ctx = ctx

        def free():
            if self.ctx:
                mtmd.mtmd_free(self.ctx)
                self.ctx = None

        self.llm._stack.callback(free)  # freed before the model it points into
        if not mtmd.mtmd_support_vision(ctx):
            raise MakdError(f"{mmproj.name} has no vision encoder (an audio-only projector?); give an image mmproj")
        self.marker = mtmd.mtmd_default_marker().decode("utf-8")
        self.name = f"{self.lm.name}+{mmproj.name}"
        self.dtype = "gguf"
        self.n_vocab = self.llm.n_vocab()
        self._vocab: dict[str, int] | None = None  # token text -> id, built on first vocab lookup
        self.yes_ids, self.no_ids = self.answer_ids(YESNO_LAYOUTS["paper"])
        vocab = self.llm._model
        self._bos_text = vocab.token_get_text(self.llm.token_bos()) if self.llm.token_bos() >= 0 else None
        self._prepared: dict[tuple, LlamaPrepared] = {}
        self.evaluated_tokens = 0  # text tokens run through the model (speed reports)
        self.encoded_images = 0

    def close(self) -> None:
        self.llm.close()

    def answer_ids(self, layout: YesNoLayout) -> tuple[list[int], list[int]]:
        """The yes and the no token ids a layout reads: single-token spellings, or vocabulary entries
        (the token whose text is exactly "Yes", as transformers' convert_tokens_to_ids finds it)."""
        def ids_of(words) -> list[int]:
            ids: list[int] = []
            for w in words:
                if layout.vocab_lookup:
                    found = self._vocab_id(w)
                    enc = [] if found is None else [found]
                else:
                    enc = self.lm.tokenize_plain(w)
                if len(enc) == 1 and enc[0] not in ids:
                    ids.append(enc[0])
            return ids

        yes, no = ids_of(layout.yes), ids_of(layout.no)
        if not yes or not no:
            spellings = " or ".join("/".join(map(repr, words)) for words in (layout.yes, layout.no))
            raise MakdError(f"model {self.lm.name}: no single token spells {spellings} in its vocabulary; "
                            "it cannot answer yes/no questions here")
        return yes, no

    def _vocab_id(self, text: str) -> int | None:
        if self._vocab is None:
            model = self.llm._model
            self._vocab = {}
            for i in range(self.n_vocab):
                self._vocab.setdefault(model.token_get_text(i), i)
        return self._vocab.get(text)

    # ---- prompts -------------------------------------------------------------------------------
    def prompt(self, user_text: str, answer: str | None = None) -> str:
        """The model's own chat template (from the GGUF), the image marker first in the user turn."""
        messages = [{"role": "user", "content": f"{self.marker}\n{user_text}"}]
        text = self.lm.chat_prompt(messages, add_generation_prompt=True)
        if self.marker not in text:
            raise MakdError(f"the chat template of {self.lm.name} dropped the image marker; cannot place the image")
        if answer is None:
            return text
        done = self.lm.chat_prompt(messages + [{"role": "assistant", "content": answer}], add_generation_prompt=False)
        if done.startswith(text) and answer in done[len(text):]:
            return done
        return text + ("" if text[-1:].isspace() else " ") + answer

    def _bitmap(self, rgb: np.ndarray):
        h, w = rgb.shape[:2]
        bm = self.mtmd.mtmd_bitmap_init(w, h, rgb.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)))
        if not bm:
            raise MakdError(f"llama.cpp could not take an image of {w}x{h} pixels")
        return bm

    def _tokenize(self, text: str, rgb: np.ndarray):
        """mtmd chunks of one prompt with one image: (handle to free, [(type, tokens | chunk)])."""
        m = self.mtmd
        it = m.mtmd_input_text()
        raw = text.encode("utf-8")
        it.text, it.text_len = raw, len(raw)
        # Templates that write the BOS token themselves must not get a second one.
        it.add_special = not (self._bos_text and text.startswith(self._bos_text))
        it.parse_special = True
        bm = self._bitmap(rgb)
        chunks = m.mtmd_input_chunks_init()
        try:
            arr = (m.mtmd_bitmap_p_ctypes * 1)(bm)
            rc = m.mtmd_tokenize(self.ctx, chunks, ctypes.byref(it), arr, 1)
            if rc != 0:
                raise MakdError(f"llama.cpp could not tokenize the prompt with its image (mtmd_tokenize error {rc}); "
                                "the prompt must hold the image marker exactly once")
            out = []
            for i in range(m.mtmd_input_chunks_size(chunks)):
                c = m.mtmd_input_chunks_get(chunks, i)
                kind = m.mtmd_input_chunk_get_type(c)
                if kind == _TEXT:
                    n = ctypes.c_size_t()
                    ptr = m.mtmd_input_chunk_get_tokens_text(c, ctypes.byref(n))
                    out.append((_TEXT, [ptr[j] for j in range(n.value)]))
                elif kind == _IMAGE:
                    out.append((_IMAGE, c))
                else:
                    raise MakdError("the prompt holds a non-image media chunk; only images are supported")
        except BaseException:
            m.mtmd_input_chunks_free(chunks)
            raise
        finally:
            m.mtmd_bitmap_free(bm)
        return chunks, out

    @staticmethod
    def _split(parts) -> tuple[list[int], object, list[int]]:
        """(text before the image, the image chunk, text after it) of a one-image prompt."""
        kinds = [k for k, _ in parts]
        if kinds.count(_IMAGE) != 1:
            raise MakdError(f"a prompt must hold exactly one image, got {kinds.count(_IMAGE)}")
        i = kinds.index(_IMAGE)
        before = [t for k, toks in parts[:i] for t in toks]
        after = [t for k, toks in parts[i + 1:] for t in toks]
        return before, parts[i][1], after

    def _structure(self, prompt: str) -> tuple[list[int], list[int]]:
        blank = np.full((64, 64, 3), 127, np.uint8)
        chunks, parts = self._tokenize(prompt, blank)
        try:
            pre, _, post = self._split(parts)
        finally:
            self.mtmd.mtmd_input_chunks_free(chunks)
        return pre, post

    def prepare(self, prompts: list[str], max_cut: int | None = None, answers=((), ())) -> LlamaPrepared:
        key = (tuple(prompts), max_cut, answers)
        if key not in self._prepared:
            pres, posts = zip(*(self._structure(p) for p in prompts))
            if any(p != pres[0] for p in pres[1:]):
                raise MakdError(f"model {self.lm.name}: the prompts differ before the image; cannot share the image prefix")
            if any(not p for p in posts):
                raise MakdError("every prompt needs text after the image")
            cut = min(len(p) for p in posts) - 1  # every suffix keeps at least one token
            for p in posts[1:]:
                n = 0
                while n < cut and p[n] == posts[0][n]:
                    n += 1
                cut = n
            if max_cut is not None:
                cut = min(cut, max_cut)
            self._prepared[key] = LlamaPrepared(list(prompts), list(pres[0]), [list(p) for p in posts], cut,
                                                yes_ids=list(answers[0]), no_ids=list(answers[1]))
        return self._prepared[key]

    def prepare_yesno(self, questions: list[str], layout: str = "paper") -> LlamaPrepared:
        lay = yesno_layout(layout)
        yes, no = self.answer_ids(lay)
        return self.prepare([self.prompt(q + lay.suffix) for q in questions], answers=(tuple(yes), tuple(no)))

    def prepare_answers(self, question: str, answers: list[str]) -> LlamaPrepared:
        # The cached prefix stops at the end of the question prompt so that every answer token,
        # the first one included, is scored from logits we compute.
        base = len(self._structure(self.prompt(question))[1])
        return self.prepare([self.prompt(question, a) for a in answers], max_cut=base)

    def preprocessor(self, prep: LlamaPrepared, naive: bool = False) -> RGBPreprocessor:
        return RGBPreprocessor(naive)

    # ---- evaluation ----------------------------------------------------------------------------
    def _clear(self) -> None:
        self.llm._ctx.kv_cache_clear()
        self.llm.n_tokens = 0  # llama-cpp-python's own bookkeeping: nothing of ours is reusable by it

    def _decode(self, tokens: list[int], n_past: int, all_logits: bool = False) -> np.ndarray:
        """Decode ``tokens`` at positions n_past.. of sequence 0, after dropping whatever the cache
        holds from n_past on (the previous question's suffix); logits of every token (T x V) or of
        the last one (V)."""
        llm = self.llm
        if n_past + len(tokens) > llm.n_ctx():
            raise MakdError(f"a prompt of {n_past + len(tokens)} positions exceeds the context of {llm.n_ctx()}; "
                            "shorten the questions or use a smaller image setting")
        llm._ctx.kv_cache_seq_rm(0, n_past, -1)
        rows = []
        for lo in range(0, len(tokens), llm.n_batch):
            part = tokens[lo : lo + llm.n_batch]
            llm._batch.set_batch(batch=part, n_past=n_past + lo, logits_all=all_logits)
            try:
                llm._ctx.decode(llm._batch)
            except RuntimeError as exc:
                raise MakdError(f"llama.cpp failed to evaluate the prompt ({exc})") from None
            n_out = len(part) if all_logits else 1
            rows.append(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_out, self.n_vocab)).astype(np.float64))
        self.evaluated_tokens += len(tokens)
        out = np.concatenate(rows)
        return out if all_logits else out[-1]

    def _eval_image(self, chunk, n_past: int) -> int:
        m = self.mtmd
        n = m.mtmd_input_chunk_get_n_tokens(chunk)
        if n_past + n >= self.llm.n_ctx():
            raise MakdError(f"the image takes {n} positions, more than the context of {self.llm.n_ctx()} allows")
        new_n_past = ctypes.c_int32(0)
        rc = m.mtmd_helper_eval_chunk_single(self.ctx, self.llm._ctx.ctx, chunk, n_past, 0, self.llm.n_batch, False,
                                             ctypes.byref(new_n_past))
        if rc != 0:
            raise MakdError(f"llama.cpp failed to encode or decode the image (error {rc})")
        self.encoded_images += 1
        return new_n_past.value

    def _prefix(self, rgb: np.ndarray, prep: LlamaPrepared):
        """Evaluate the shared prefix (header, image, shared text) into an empty cache: (P, last logits)."""
        chunks, parts = self._tokenize(prep.prompts[0], rgb)
        n_past, last = 0, None
        try:
            pre, image, post = self._split(parts)
            if pre != prep.pre or post != prep.post[0]:
                raise MakdError(f"model {self.lm.name}: the prompt's text tokens change with the image; use the naive path")
            self._clear()
            if pre:
                self._decode(pre, 0)
                n_past = len(pre)
            n_past = self._eval_image(image, n_past)  # may count fewer positions than tokens (M-RoPE models)
        finally:
            self.mtmd.mtmd_input_chunks_free(chunks)
        if prep.cut:
            last = self._decode(prep.post[0][: prep.cut], n_past)
            n_past += prep.cut
        return n_past, last

    def yesno_from_encoded(self, enc: dict, prep: LlamaPrepared, batch_questions: int = 64) -> np.ndarray:
        """Log-odds z_yes - z_no for every prepared question (Q,). ``batch_questions`` is unused: the
        suffixes run one after another on the one cached sequence."""
        if "image" in enc:
            return self.yesno_naive(enc["image"], prep)
        P, _ = self._prefix(enc["rgb"], prep)
        out = np.zeros(len(prep.post), dtype=np.float32)
        for i, post in enumerate(prep.post):  # each suffix replaces the previous one after position P
            out[i] = self._yesno(self._decode(post[prep.cut :], P), prep)
        return out

    @staticmethod
    def _yesno(last: np.ndarray, prep: LlamaPrepared) -> float:
        # Spellings summed as probabilities: logsumexp of their logits (see hf_mllm._yesno).
        return float(np.logaddexp.reduce(last[prep.yes_ids]) - np.logaddexp.reduce(last[prep.no_ids]))

    def yesno_naive(self, image, prep: LlamaPrepared) -> np.ndarray:
        """The reference loop: every prompt evaluated from an empty cache by mtmd's own helper,
        the image encoded again each time."""
        rgb = _rgb(image)
        m = self.mtmd
        out = []
        for p in prep.prompts:
            chunks, _ = self._tokenize(p, rgb)
            try:
                self._clear()
                new_n_past = ctypes.c_int32(0)
                rc = m.mtmd_helper_eval_chunks(self.ctx, self.llm._ctx.ctx, chunks, 0, 0, self.llm.n_batch, True,
                                               ctypes.byref(new_n_past))
                if rc != 0:
                    raise MakdError(f"llama.cpp failed to evaluate a prompt with its image (error {rc})")
                self.encoded_images += 1
                last = np.ctypeslib.as_array(self.llm._ctx.get_logits_ith(-1), shape=(self.n_vocab,)).astype(np.float64)
            finally:
                m.mtmd_input_chunks_free(chunks)
            out.append(self._yesno(last, prep))
        return np.asarray(out, dtype=np.float32)

    def yesno_logodds(self, image, questions: list[str], batch_questions: int = 64, naive: bool = False,
                      layout: str = "paper") -> np.ndarray:
        """Convenience for one PIL image and plain question texts."""
        prep = self.prepare_yesno(questions, layout)
        return self.yesno_from_encoded(self.preprocessor(prep, naive)(image), prep, batch_questions)

    # ---- zero-shot class scores ----------------------------------------------------------------
    @staticmethod
    def _loglik(first_logits: np.ndarray, rows: np.ndarray, answer: list[int]) -> float:
        """Sum of log p(answer tokens): token 0 from ``first_logits``, token k from row k - 1."""
        def logp(z, t):
            return float(z[t] - np.logaddexp.reduce(z))

        return logp(first_logits, answer[0]) + sum(logp(rows[k - 1], answer[k]) for k in range(1, len(answer)))

    def answer_logliks_from_encoded(self, enc: dict, prep: LlamaPrepared, batch_answers: int = 32) -> np.ndarray:
        """Sum of log-probabilities of each prepared answer's tokens after the question (A,)."""
        if "image" in enc:
            return self.answer_logliks_naive(enc["image"], prep)
        P, last = self._prefix(enc["rgb"], prep)
        if last is None:
            raise MakdError(f"model {self.lm.name}: no question text after the image; cannot score answers")
        out = np.zeros(len(prep.post), dtype=np.float32)
        for i, post in enumerate(prep.post):
            answer = post[prep.cut :]
            rows = self._decode(answer, P, all_logits=True)
            out[i] = self._loglik(last, rows, answer)
        return out

    def answer_logliks_naive(self, image, prep: LlamaPrepared) -> np.ndarray:
        rgb = _rgb(image)
        out = []
        for p, post in zip(prep.prompts, prep.post):
            chunks, parts = self._tokenize(p, rgb)
            try:
                pre, img, after = self._split(parts)
                self._clear()
                n_past = 0
                if pre:
                    self._decode(pre, 0)
                    n_past = len(pre)
                n_past = self._eval_image(img, n_past)
            finally:
                self.mtmd.mtmd_input_chunks_free(chunks)
            rows = self._decode(after, n_past, all_logits=True)
            n = len(post) - prep.cut
            if n >= len(after):
                raise MakdError(f"model {self.lm.name}: no question text after the image; cannot score answers")
            answer = after[-n:]
            out.append(self._loglik(rows[-n - 1], rows[-n:], answer))
        return np.asarray(out, dtype=np.float32)


def load_llamacpp_mllm(model: str, mmproj=None, *, threads: int | None = None, device: str | None = None,
                       n_ctx: int = 4096) -> LlamaCppMultimodalTeacher:
    """``--mllm X.gguf --mmproj Y.gguf``: llama.cpp on the CPU (or the GPU of a CUDA build of
    llama-cpp-python for the projector; the language model's layers stay where LlamaCppLM puts them)."""
    if mmproj is None:
        raise MakdError(f"--mllm {model} is a GGUF language model for llama.cpp: give its vision projector with "
                        "--mmproj PATH (the mmproj .gguf made for that model)")
    use_gpu = device is not None and str(device).startswith("cuda")
    return LlamaCppMultimodalTeacher(model, mmproj, n_ctx=n_ctx, threads=threads, use_gpu=use_gpu)
