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
import os
from pathlib import Path

import numpy as np

from makd_cli.errors import MakdError
from makd_cli.teachers.base import LanguageModel, common_prefix_len
from makd_cli.teachers.models import hub_reachable


_lcp = common_prefix_len  # how much of the KV cache a new prompt can reuse


def _offline() -> bool:
    return any(os.environ.get(v, "0").lower() not in ("0", "", "false", "no") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


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

    def __init__(self, spec: str, device: str = "auto", seed: int = 0, dtype=None, model=None, tokenizer=None):
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
        head = self.model.get_output_embeddings()
        self.n_vocab = int(head.weight.shape[0]) if head is not None else int(self.model.config.vocab_size)
        self._keep_arg = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        bos = self.tok.bos_token_id
        probe = self.tok("a")["input_ids"]
        self._adds_bos = bos is not None and len(probe) > 0 and probe[0] == bos
        self._cache = None
        self._cache_ids: list[int] = []

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
                if _offline() or not hub_reachable():
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
            kw["past_key_values"] = cache
        if keep_last and self._keep_arg:
            kw["logits_to_keep"] = 1
        with torch.inference_mode():
            return self.model(**kw)

    def next_token_logits(self, tokens: list[int]) -> np.ndarray:
        """Logits after ``tokens``, re-using the cache of the longest prefix shared with the last call."""
        from transformers import DynamicCache

        tokens = list(tokens)
        common = min(_lcp(self._cache_ids, tokens), len(tokens) - 1)  # always run at least the last token
        if self._cache is None or common == 0:
            self._cache, common = DynamicCache(), 0
        elif common < len(self._cache_ids):
            self._cache.crop(-(len(self._cache_ids) - common))  # negative: remove that many (all versions)
        out = self._forward(tokens[common:], cache=self._cache)
        self._cache = out.past_key_values
        self._cache_ids = tokens
        self.evaluated_tokens += len(tokens) - common
        return out.logits[0, -1].float().cpu().numpy().astype(np.float64)

    def naive_next_token_logits(self, tokens: list[int]) -> np.ndarray:
        """The reference: one full forward of the whole prompt, logits at every position."""
        out = self._forward(list(tokens), cache=None, keep_last=False)
        self.evaluated_tokens += len(tokens)
        return out.logits[0, -1].float().cpu().numpy().astype(np.float64)

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
