"""Language teacher on llama.cpp (llama-cpp-python): chat prompts, constrained generation, and
next-token logits with KV-cache reuse of the longest shared token prefix.

Why one sequence and no multi-prompt batches: with a quantized model, llama.cpp's result for a token
depends on which KV cells hold its context (the attention's SIMD sums group cells by index), and a
small rounding change is amplified by the 8-bit activation quantization of the next layers; prompts
batched as parallel sequences sharing a prefix in one unified cache moved SmolLM2-135M Q4_1's label
probabilities by up to 0.008 (and flash attention by as much). Re-using the cache of one sequence
keeps every prompt's cells where a fresh evaluation puts them, so cached logits equal the naive
loop's bit for bit; on a CPU a decode of ten tokens runs nearly as many tokens per second as one of
five hundred, so little speed is lost.
"""

from __future__ import annotations

import os

import numpy as np

from makd_cli.errors import MakdError
from makd_cli.teachers.base import LanguageModel
from makd_cli.teachers.models import resolve_gguf


def _import_llama():
    try:
        from llama_cpp import Llama
    except ImportError:
        raise MakdError("llama-cpp-python is not installed; run `make setup` or `pip install llama-cpp-python`") from None
    return Llama


class LlamaCppLM(LanguageModel):
    backend = "llama.cpp"

    def __init__(self, spec: str, n_ctx: int = 4096, threads: int | None = None, seed: int = 0, logits_all: bool = False):
        self.spec = spec
        self.path = resolve_gguf(spec)
        Llama = _import_llama()
        threads = threads or max(1, (os.cpu_count() or 2))
        try:
            self.llm = Llama(str(self.path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, seed=seed,
                             logits_all=logits_all, verbose=False, n_batch=512)
        except (ValueError, RuntimeError) as exc:
            raise MakdError(f"llama.cpp could not load {self.path}: {exc}") from None
        self.n_vocab = self.llm.n_vocab()
        self.template = self.llm.metadata.get("tokenizer.chat_template")
        self.evaluated_tokens = 0  # tokens actually run through the model (for speed reports)
        self.name = self.path.name
        self._compiled = None  # the chat template, compiled on first use

    # ---- prompts ---------------------------------------------------------------------------
    def chat_prompt(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """Render the model's own chat template (stored in the GGUF)."""
        if not self.template:
            text = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in messages)
            return text + ("Assistant:" if add_generation_prompt else "")
        if self._compiled is None:  # compiling the template costs more than rendering it: once
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
            self._compiled = env.from_string(self.template)

        def raise_exception(msg):
            raise MakdError(f"the chat template of {self.name} refused the prompt: {msg}")

        vocab = self.llm._model
        bos = vocab.token_get_text(self.llm.token_bos()) if self.llm.token_bos() >= 0 else ""
        eos = vocab.token_get_text(self.llm.token_eos()) if self.llm.token_eos() >= 0 else ""
        return self._compiled.render(
            messages=messages, add_generation_prompt=add_generation_prompt, bos_token=bos, eos_token=eos,
            raise_exception=raise_exception,
        )

    def tokenize(self, text: str, add_bos: bool | None = None) -> list[int]:
        if add_bos is None:
            # Templates that write the BOS token themselves must not get a second one.
            bos_text = self.llm._model.token_get_text(self.llm.token_bos()) if self.llm.token_bos() >= 0 else None
            add_bos = not (bos_text and text.startswith(bos_text))
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def tokenize_plain(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def reset_cache(self) -> None:
        self.llm.reset()

    # ---- scoring ---------------------------------------------------------------------------
    def next_token_logits(self, tokens: list[int]) -> np.ndarray:
        """Logits of the token after ``tokens``, re-using the KV cache of the longest common prefix."""
        llm = self.llm
        if len(tokens) >= llm.n_ctx():
            raise MakdError(f"a prompt of {len(tokens)} tokens exceeds the context of {llm.n_ctx()}; shorten the questions")
        cached = llm.input_ids[: llm.n_tokens]
        common = 0
        limit = min(len(cached), len(tokens) - 1)  # always evaluate at least the last token
        while common < limit and cached[common] == tokens[common]:
            common += 1
        llm.n_tokens = common
        llm.eval(tokens[common:])
        self.evaluated_tokens += len(tokens) - common
        return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(self.n_vocab,)).astype(np.float64, copy=True)

    def naive_next_token_logits(self, tokens: list[int]) -> np.ndarray:
        """The reference way: a fresh evaluation of the whole prompt (benchmark and exactness checks)."""
        self.llm.reset()
        self.llm.eval(tokens)
        self.evaluated_tokens += len(tokens)
        if self.llm._logits_all:
            return np.array(self.llm.scores[len(tokens) - 1], dtype=np.float64)
        return np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(self.n_vocab,)).astype(np.float64, copy=True)

    # ---- generation ------------------------------------------------------------------------
    def generate_json(self, messages: list[dict], schema: dict, seed: int, temperature: float = 0.7, max_tokens: int = 512) -> str:
        """Generate under a JSON-schema grammar: the output always parses as JSON of that shape."""
        self.llm.set_seed(seed)
        out = self.llm.create_chat_completion(
            messages, response_format={"type": "json_object", "schema": schema}, temperature=temperature,
            seed=seed, max_tokens=max_tokens,
        )
        return out["choices"][0]["message"]["content"] or ""
