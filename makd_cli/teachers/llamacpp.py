"""Language teacher on llama.cpp (llama-cpp-python): chat prompts, constrained generation, and
next-token logits with KV-cache reuse of shared token prefixes.

Scoring many prompts (``score_prompts``, what extraction uses) runs on a second llama.cpp context
with several sequences in one unified KV cache: the prompts' longest common prefix is evaluated once
(sequence 0), and the rest of the prompts, merged into a prefix tree, go into one ``llama_decode``
per group, each tree token tagged with the sequence ids of every prompt that passes through it. A
token shared by many prompts is computed once, every decode carries a few hundred tokens (as fast
per token as plain prompt processing) and only each prompt's last token gets logits. Every token sees
exactly its own prompt's earlier tokens, at their own positions, so the logits are those of a
one-prompt evaluation up to float rounding.
"""

from __future__ import annotations

import ctypes
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
        self.threads = threads
        self._scorer: _TreeScorer | None = None

    # ---- prompts ---------------------------------------------------------------------------
    def chat_prompt(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """Render the model's own chat template (stored in the GGUF)."""
        if not self.template:
            text = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in messages)
            return text + ("Assistant:" if add_generation_prompt else "")
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

        def raise_exception(msg):
            raise MakdError(f"the chat template of {self.name} refused the prompt: {msg}")

        vocab = self.llm._model
        bos = vocab.token_get_text(self.llm.token_bos()) if self.llm.token_bos() >= 0 else ""
        eos = vocab.token_get_text(self.llm.token_eos()) if self.llm.token_eos() >= 0 else ""
        return env.from_string(self.template).render(
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
        if self._scorer is not None:
            self._scorer.clear()

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

    def score_prompts(self, prompts: list[list[int]], columns: list[int] | None = None, budget: int = 512) -> np.ndarray:
        """Next-token logits after each prompt (n x vocab, or n x len(columns)), prompts scored as a
        prefix tree on a multi-sequence context; see the module docstring. Results do not depend on
        anything evaluated before: the cache is cleared first."""
        if not prompts:
            return np.zeros((0, len(columns) if columns is not None else self.n_vocab))
        if self._scorer is None:
            self._scorer = _TreeScorer(self)
        return self._scorer.score(prompts, columns, budget)

    # ---- generation ------------------------------------------------------------------------
    def generate_json(self, messages: list[dict], schema: dict, seed: int, temperature: float = 0.7, max_tokens: int = 512) -> str:
        """Generate under a JSON-schema grammar: the output always parses as JSON of that shape."""
        self.llm.set_seed(seed)
        out = self.llm.create_chat_completion(
            messages, response_format={"type": "json_object", "schema": schema}, temperature=temperature,
            seed=seed, max_tokens=max_tokens,
        )
        return out["choices"][0]["message"]["content"] or ""


def _lcp(a, b) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class _TreeScorer:
    """A llama.cpp context with a unified KV cache for ``max_seq`` sequences and the tree batching."""

    def __init__(self, lm: LlamaCppLM, max_seq: int = 64):
        import llama_cpp
        from llama_cpp import _internals

        self.lm = lm
        model = lm.llm._model
        if llama_cpp.llama_model_is_recurrent(model.model) or llama_cpp.llama_model_is_hybrid(model.model):
            self.ctx = None  # recurrent state cannot be shared between sequences this way
            return
        self.max_seq = max(2, min(max_seq, int(llama_cpp.llama_max_parallel_sequences())))
        params = llama_cpp.llama_context_default_params()
        ctypes.memmove(ctypes.byref(params), ctypes.byref(lm.llm.context_params), ctypes.sizeof(params))
        self.n_ctx = int(params.n_ctx)
        params.n_seq_max = self.max_seq
        params.kv_unified = True
        params.n_batch = self.n_ctx  # one decode may hold a whole group; llama.cpp splits it into ubatches
        params.n_ubatch = min(512, self.n_ctx)
        params.n_outputs_max = 0
        import os as _os; params.flash_attn_type = int(_os.environ.get("FA", "-1"))
        try:
            self.ctx = _internals.LlamaContext(model=model, params=params, verbose=False)
        except ValueError as exc:
            raise MakdError(f"llama.cpp could not create a scoring context for {lm.name}: {exc}") from None
        self.batch = _internals.LlamaBatch(n_tokens=self.n_ctx, embd=0, n_seq_max=self.max_seq, verbose=False)
        self.n_vocab = lm.n_vocab

    def clear(self) -> None:
        if self.ctx is not None:
            self.ctx.kv_cache_clear()

    def _decode(self, nodes: list[tuple[int, int, list[int], bool]]) -> None:
        b = self.batch.batch
        for i, (tok, pos, seqs, want) in enumerate(nodes):
            b.token[i] = tok
            b.pos[i] = pos
            b.n_seq_id[i] = len(seqs)
            for k, s in enumerate(seqs):
                b.seq_id[i][k] = s
            b.logits[i] = want
        b.n_tokens = len(nodes)
        self.ctx.decode(self.batch)

    def _row(self, i: int, columns) -> np.ndarray:
        row = np.ctypeslib.as_array(self.ctx.get_logits_ith(i), shape=(self.n_vocab,))
        return (row[columns] if columns is not None else row).astype(np.float64, copy=True)

    def score(self, prompts: list[list[int]], columns, budget: int) -> np.ndarray:
        lm = self.lm
        longest = max(len(p) for p in prompts)
        if self.ctx is None:  # no shared cache for this model: one prompt at a time
            lm.reset_cache()
            return np.stack([lm.next_token_logits(p)[columns] if columns is not None else lm.next_token_logits(p) for p in prompts])
        if longest >= self.n_ctx:
            raise MakdError(f"a prompt of {longest} tokens exceeds the context of {self.n_ctx}; shorten the questions")
        columns = None if columns is None else np.asarray(columns, dtype=np.int64)
        out = np.empty((len(prompts), len(columns) if columns is not None else self.n_vocab))
        self.ctx.kv_cache_clear()
        # The common prefix of all prompts, once, in sequence 0 (every prompt keeps >= 1 own token).
        P = min(len(p) for p in prompts) - 1
        for p in prompts[1:]:
            P = min(P, _lcp(prompts[0], p))
        if P > 0:
            for lo in range(0, P, 512):
                self._decode([(t, lo + i, [0], False) for i, t in enumerate(prompts[0][lo:min(P, lo + 512)])])
            lm.evaluated_tokens += P
        budget = max(1, min(budget, self.n_ctx - P - 1))
        order = sorted(range(len(prompts)), key=lambda i: prompts[i][P:])
        group: list[int] = []
        cost, prev = 0, None
        for i in order:
            suf = prompts[i][P:]
            new = len(suf) - (_lcp(prev, suf) if prev is not None and group else 0)
            if group and (cost + new > budget or len(group) >= self.max_seq - 1):
                self._run_group(group, prompts, P, columns, out)
                group, cost, new = [], 0, len(suf)
            group.append(i)
            cost += new
            prev = suf
        if group:
            self._run_group(group, prompts, P, columns, out)
        return out

    def _run_group(self, group: list[int], prompts, P: int, columns, out: np.ndarray) -> None:
        """One decode: the group's suffixes as a prefix tree (depth-first), sequence j+1 for the j-th prompt."""
        nodes: list[tuple[int, int, list[int], bool]] = []
        stack: list[int] = []  # node index at each depth of the current path
        last_node: list[int] = []
        prev = None
        for j, i in enumerate(group):
            seq = j + 1
            if P > 0:
                self.ctx.kv_cache_seq_cp(0, seq, -1, -1)
            suf = prompts[i][P:]
            shared = _lcp(prev, suf) if prev is not None else 0
            for d in range(shared):
                nodes[stack[d]][2].append(seq)
            del stack[shared:]
            for d in range(shared, len(suf)):
                stack.append(len(nodes))
                nodes.append((suf[d], P + d, [seq], False))
            last_node.append(stack[len(suf) - 1])
            prev = suf
        for n in last_node:
            tok, pos, seqs, _ = nodes[n]
            nodes[n] = (tok, pos, seqs, True)
        self._decode(nodes)
        self.lm.evaluated_tokens += len(nodes)
        # Output rows follow batch order among the tokens that asked for logits.
        for j, n in enumerate(last_node):
            out[group[j]] = self._row(n, columns)
        for j in range(len(group)):
            self.ctx.kv_cache_seq_rm(j + 1, -1, -1)
