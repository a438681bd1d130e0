"""Language teacher on transformers (``--backend hf``): any causal LM with a chat template, from a
local folder or a Hugging Face hub id (bf16 on CUDA, float32 on CPU).

Scoring: ``next_token_logits`` keeps one ``DynamicCache`` and the ids it holds; a new prompt crops
the cache to the longest common prefix and runs only the rest, asking for the last position's
logits alone (``logits_to_keep=1``). ``naive_next_token_logits`` is the reference: one full forward
of the whole prompt with logits at every position, as the papers' code does.

Generation: sampling with the given seed, stopped as soon as a complete JSON object has been
written. There is no grammar here; the output is forced to start like the schema's first required
field (``{"question": "``), which keeps small models on track, and ``questions.validate`` does the rest.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np

from makd_cli.errors import MakdError
from makd_cli.teachers.base import LanguageModel, common_prefix_len
from makd_cli.teachers.models import hub_offline, hub_reachable


def _returned_cache(out, given):
    """The cache a forward returned (named ``cache`` from transformers 5.x, ``past_key_values`` before)."""
    got = getattr(out, "cache", None)
    if got is None:
        got = getattr(out, "past_key_values", None)
    return given if got is None else got


def json_closed(text: str) -> bool:
    """True once ``text`` holds a complete top-level JSON object (braces inside strings ignored)."""
    depth, in_str, esc, opened = 0, False, False, False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch == "{":
            depth += 1
            opened = True
        elif ch == "}":
            depth -= 1
            if opened and depth == 0:
                return True
    return False


def json_prefix(schema: dict) -> str:
    """The start every valid answer shares: the first required property's key (and its quote for a string)."""
    req = schema.get("required") or []
    if not req:
        return ""
    prop = (schema.get("properties") or {}).get(req[0], {})
    start = {"string": '"', "array": "["}.get(prop.get("type"), "")
    return '{"' + req[0] + '": ' + start


class HFCausalLM(LanguageModel):
    backend = "hf"

    def __init__(self, spec: str, device: str = "auto", seed: int = 0, dtype=None, model=None, tokenizer=None,
                 batch_size: int = 0):
        import torch

        self.torch = torch
        if device in (None, "auto"):
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.spec = spec
        if model is None or tokenizer is None:
            model, tokenizer = self._load(spec)
        self.model = model.to(self.device).eval()
        self.tok = tokenizer
        self.name = Path(spec).name if Path(spec).is_dir() else spec
        self.seed = seed
        self.evaluated_tokens = 0
        self.padded_tokens = 0
        head = self.model.get_output_embeddings()
        self.n_vocab = int(head.weight.shape[0]) if head is not None else int(self.model.config.vocab_size)
        params = inspect.signature(self.model.forward).parameters
        self._keep_arg = "logits_to_keep" in params
        self._cache_arg = "cache" if "cache" in params else "past_key_values"  # renamed in transformers 5.x
        bos = self.tok.bos_token_id
        probe = self.tok("a")["input_ids"]
        self._adds_bos = bos is not None and len(probe) > 0 and probe[0] == bos
        self._cache = None
        self._cache_ids: list[int] = []
        if batch_size < 0:
            raise MakdError("--batch-size must be 0 (automatic) or a number of prompts per forward pass")
        self.batch_size = batch_size
        # A packed chunk needs an attention mask of any shape: sdpa and eager take one, flash-attention does not.
        self.packs = batch_size != 1 and getattr(self.model.config, "_attn_implementation", "eager") in ("sdpa", "eager")

    # ---- loading ---------------------------------------------------------------------------
    def _load(self, spec: str):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        local_dir = Path(spec).expanduser().is_dir()
        repo = str(Path(spec).expanduser()) if local_dir else spec
        if not local_dir and ("/" not in spec or Path(spec).suffix in (".gguf", ".bin", ".safetensors")):
            raise MakdError(f"--backend hf needs a transformers model folder or a hub id (org/name); got {spec!r}"
                            + (" (a .gguf file needs --backend llama.cpp)" if spec.endswith(".gguf") else ""))

        def load(local_only: bool):
            tok = AutoTokenizer.from_pretrained(repo, local_files_only=local_only)
            model = AutoModelForCausalLM.from_pretrained(repo, dtype=self.dtype, local_files_only=local_only)
            return model, tok

        try:
            try:
                return load(True)
            except OSError:
                if local_dir:
                    raise
                if hub_offline() or not hub_reachable():
                    raise MakdError(
                        f"model {spec} is not in the local Hugging Face cache and the hub cannot be reached "
                        f"(offline); download it first on a connected machine (`huggingface-cli download {spec}`) "
                        "and copy the cache, or pass a local model folder"
                    ) from None
                return load(False)
        except OSError as exc:
            where = f"model folder {repo}" if local_dir else f"model {spec}"
            raise MakdError(f"{where} could not be loaded as a causal LM: {str(exc).splitlines()[0]}") from None
        except ValueError as exc:
            raise MakdError(f"model {spec} is not a causal language model transformers can load: {str(exc).splitlines()[0]}") from None

    # ---- prompts ---------------------------------------------------------------------------
    def chat_prompt(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        if getattr(self.tok, "chat_template", None):
            return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        text = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in messages)
        return text + ("Assistant:" if add_generation_prompt else "")

    def tokenize(self, text: str, add_bos: bool | None = None) -> list[int]:
        ids = self.tok(text, add_special_tokens=False)["input_ids"]
        if add_bos is None:
            # Templates that write the BOS token themselves must not get a second one.
            add_bos = self._adds_bos and not (self.tok.bos_token and text.startswith(self.tok.bos_token))
        return ([self.tok.bos_token_id] if add_bos else []) + list(ids)

    def tokenize_plain(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def reset_cache(self) -> None:
        self._cache = None
        self._cache_ids = []

    # ---- scoring ---------------------------------------------------------------------------
    def _forward(self, ids: list[int], cache=None, keep_last: bool = True):
        torch = self.torch
        kw = {"input_ids": torch.tensor([ids], dtype=torch.long, device=self.device), "use_cache": cache is not None}
        if cache is not None:
            kw[self._cache_arg] = cache
        if keep_last and self._keep_arg:
            kw["logits_to_keep"] = 1
        with torch.inference_mode():
            return self.model(**kw)

    def next_token_logits(self, tokens: list[int]) -> np.ndarray:
        """Logits after ``tokens``, re-using the cache of the longest prefix shared with the last call."""
        from transformers import DynamicCache

        tokens = list(tokens)
        common = min(common_prefix_len(self._cache_ids, tokens), len(tokens) - 1)  # always run at least the last token
        if self._cache is None or common == 0:
            self._cache, common = DynamicCache(), 0
        elif common < len(self._cache_ids):
            self._cache.crop(-(len(self._cache_ids) - common))  # negative: remove that many (all versions)
        out = self._forward(tokens[common:], cache=self._cache)
        self._cache = _returned_cache(out, self._cache)
        self._cache_ids = tokens
        self.evaluated_tokens += len(tokens) - common
        return out.logits[0, -1].float().cpu().numpy().astype(np.float64)

    def naive_next_token_logits(self, tokens: list[int]) -> np.ndarray:
        """The reference: one full forward of the whole prompt, logits at every position."""
        out = self._forward(list(tokens), cache=None, keep_last=False)
        self.evaluated_tokens += len(tokens)
        return out.logits[0, -1].float().cpu().numpy().astype(np.float64)

    # ---- many prompts per forward (teachers/prefix_pack.py) -------------------------------------
    def _budgets(self) -> tuple[int, int]:
        """(tree nodes per row, padded tokens per forward) when --batch-size is 0. On a CPU, rows of
        512 nodes and forwards of 4096 tokens were the fastest tried (SmolLM2-135M; the A/B is in
        bench/RESULTS.md); a GPU takes forwards as large as half its free memory holds: the KV cache
        and activations per token, plus each row's mask and attention scores."""
        if self.device.type != "cuda":
            return 512, 4096
        cfg = self.model.config
        torch = self.torch
        free, _ = torch.cuda.mem_get_info(self.device)
        size = torch.finfo(self.dtype).bits // 8
        hidden = int(getattr(cfg, "hidden_size", 4096))
        layers = int(getattr(cfg, "num_hidden_layers", 32))
        heads = int(getattr(cfg, "num_attention_heads", 32))
        kv_heads = int(getattr(cfg, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(cfg, "head_dim", None) or hidden // heads)
        inter = int(getattr(cfg, "intermediate_size", 4 * hidden))
        row = 512
        per_token = size * (2 * layers * kv_heads * head_dim + 8 * hidden + 3 * inter + 3 * heads * row)
        n = 1024
        while n < 65536 and 2 * n * per_token <= free // 2:
            n *= 2
        return row, n

    def _head(self):
        """The decoder and a function from its last hidden states to logits at given token ids,
        or None when this model's output layer is not a plain linear map (then prompts run one
        at a time). Computing only the label columns saves the vocabulary-wide projection."""
        torch = self.torch
        base, head, cfg = self.model.base_model, self.model.get_output_embeddings(), self.model.config
        if base is self.model or not isinstance(head, torch.nn.Linear):
            return None
        cap, scale = getattr(cfg, "final_logit_softcapping", None), getattr(cfg, "logit_scale", None)

        def logits(hidden, cols):
            z = hidden @ head.weight[cols].T
            if head.bias is not None:
                z = z + head.bias[cols]
            if scale:
                z = z * scale
            if cap:
                z = torch.tanh(z / cap) * cap
            return z

        return base, logits

    def score_prompts(self, prompts: list[list[int]], columns: list[int]) -> np.ndarray:
        """Next-token logits at ``columns`` after each prompt (n x len(columns), float64), the prompts
        in sorted token order: packed many per forward (``prefix_pack``), or one at a time through
        the prefix cache when ``--batch-size 1`` or the model cannot take a packed forward. Starts
        from an empty cache, so the result never depends on what ran before."""
        from makd_cli.teachers.prefix_pack import pack, plan_forwards, shared_prefix_len

        self.reset_cache()
        order = sorted(range(len(prompts)), key=lambda k: prompts[k])
        out = np.empty((len(prompts), len(columns)))
        head = self._head() if self.packs else None
        if head is None:
            for i in order:
                out[i] = self.next_token_logits(prompts[i])[columns]
            return out
        row_nodes, forward_nodes = self._budgets() if self.batch_size == 0 else (None, None)
        cols = self.torch.tensor(columns, dtype=self.torch.long, device=self.device)
        for rows in plan_forwards(prompts, order, row_nodes, forward_nodes, self.batch_size or None):
            members = [m for r in rows for m in r]
            shared = shared_prefix_len(prompts, members)
            out[members] = self._packed_logits([pack(prompts, r, shared) for r in rows], prompts[members[0]][:shared], head, cols)
        self.reset_cache()
        return out

    def _packed_logits(self, rows, prefix: list[int], head, cols) -> np.ndarray:
        """One forward of packed rows below the cached ``prefix``; logits at ``cols`` for every
        member of every row, in row order."""
        import copy

        torch = self.torch
        base, logits_at = head
        self._cache_prefix(prefix)
        shared, width, dev = len(prefix), max(len(r.tokens) for r in rows), self.device
        ids = np.zeros((len(rows), width), dtype=np.int64)
        pos = np.full((len(rows), width), shared, dtype=np.int64)
        visible = np.zeros((len(rows), width, shared + width), dtype=bool)
        visible[:, :, :shared] = True
        for k, r in enumerate(rows):
            n = len(r.tokens)
            ids[k, :n], pos[k, :n] = r.tokens, r.positions
            visible[k, :n, shared:shared + n] = r.visible()
            visible[k, np.arange(n, width), shared + np.arange(n, width)] = True  # padding sees itself: no empty row
        mask = torch.zeros(visible.shape, dtype=self.dtype)
        mask.masked_fill_(torch.from_numpy(~visible), torch.finfo(self.dtype).min)
        cache = None
        if shared:
            cache = copy.deepcopy(self._cache)  # the prefix's cache, repeated over the rows; the original stays one sequence
            if len(rows) > 1:
                cache.batch_repeat_interleave(len(rows))
        kw = {"input_ids": torch.from_numpy(ids).to(dev), "position_ids": torch.from_numpy(pos).to(dev),
              "attention_mask": mask[:, None].to(dev), "use_cache": shared > 0}
        if cache is not None:
            kw[self._cache_arg] = cache
        with torch.inference_mode():
            hidden = base(**kw).last_hidden_state
            which = [(k, j) for k, r in enumerate(rows) for j in r.last_node]
            picked = hidden[torch.tensor([k for k, _ in which], device=dev), torch.tensor([j for _, j in which], device=dev)]
            z = logits_at(picked, cols)
        self.evaluated_tokens += sum(len(r.tokens) for r in rows)
        self.padded_tokens += len(rows) * width  # what the forward computed, padding included (benchmarks)
        return z.float().cpu().numpy().astype(np.float64)

    def _cache_prefix(self, prefix: list[int]) -> None:
        """Make the one-sequence cache hold exactly ``prefix`` (re-using what it already holds)."""
        from transformers import DynamicCache

        if not prefix:
            return
        common = common_prefix_len(self._cache_ids, prefix) if self._cache is not None else 0
        if common == 0:
            self._cache = DynamicCache()
        elif common < len(self._cache_ids):
            self._cache.crop(-(len(self._cache_ids) - common))  # negative: remove that many
        if common < len(prefix):
            out = self._forward(prefix[common:], cache=self._cache)
            self._cache = _returned_cache(out, self._cache)
            self.evaluated_tokens += len(prefix) - common
        self._cache_ids = list(prefix)

    # ---- generation ------------------------------------------------------------------------
    def generate_json(self, messages: list[dict], schema: dict, seed: int, temperature: float = 0.7, max_tokens: int = 512) -> str:
        torch = self.torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        prefix = json_prefix(schema)
        ids = self.tokenize(self.chat_prompt(messages) + prefix)
        tok = self.tok
        start = len(ids)

        class _Closed(StoppingCriteria):
            def __call__(self, input_ids, scores, **kw):
                return json_closed(prefix + tok.decode(input_ids[0, start:], skip_special_tokens=True))

        torch.manual_seed(seed)
        if self.device.type == "cuda":
            torch.cuda.manual_seed_all(seed)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        kw = dict(max_new_tokens=max_tokens, stopping_criteria=StoppingCriteriaList([_Closed()]), pad_token_id=pad)
        if temperature > 0:
            kw.update(do_sample=True, temperature=temperature, top_p=0.95, top_k=0)
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            input_ids = torch.tensor([ids], dtype=torch.long, device=self.device)
            out = self.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **kw)
        self.evaluated_tokens += int(out.shape[1])
        return prefix + tok.decode(out[0, start:], skip_special_tokens=True)
