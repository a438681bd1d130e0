"""A Hugging Face multimodal LLM as a per-image yes/no teacher (MaKD section 3.2).

For every image and aspect question the model sees its chat prompt (image, question + " Answer yes or
no.", generation prompt) and we read the first answer token's logits: q = softmax(z_yes, z_no)[yes].
``layout="makd-reference"`` asks the question with nothing appended and reads the vocabulary entries
"Yes" and "No" alone, as MaKD's reference code does (``teachers/base.YESNO_LAYOUTS``).

Speed: every prompt of one image shares everything up to and including the image tokens, so the
vision encoder and that prefix run once, and the Q question suffixes run as one padded batch against
the prefix's KV cache (expanded along the batch dimension). Suffixes are *left*-padded inside the
sequence (prefix | pads | suffix) so the last position is real for every row and the model only needs
``logits_to_keep=1``; explicit position ids skip the pads, so each row sees exactly the positions it
would have in a one-prompt forward. ``naive=True`` runs one full forward per image and question, as
the reference code does, for benchmarks and exactness tests.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from makd_cli.device import default_device
from makd_cli.errors import MakdError
from makd_cli.registry import Registry
from makd_cli.teachers.base import YESNO_LAYOUTS, MultimodalTeacher, YesNoLayout, common_prefix_len, yesno_layout
from makd_cli.teachers.models import may_download

ALIASES = {
    "internvl2-1b": "OpenGVLab/InternVL2-1B",
    "internvl2-2b": "OpenGVLab/InternVL2-2B",
    "internvl2-8b": "OpenGVLab/InternVL2-8B",
    "internvl2.5-1b": "OpenGVLab/InternVL2_5-1B",
    "internvl2.5-2b": "OpenGVLab/InternVL2_5-2B",
    "internvl2.5-8b": "OpenGVLab/InternVL2_5-8B",
    # Checkpoints already converted to transformers' native InternVL classes (no remote code).
    "internvl3-1b": "OpenGVLab/InternVL3-1B-hf",
    "internvl3-2b": "OpenGVLab/InternVL3-2B-hf",
    "internvl3-8b": "OpenGVLab/InternVL3-8B-hf",
    "llava-1.5-7b": "llava-hf/llava-1.5-7b-hf",
    "llava-next-34b": "llava-hf/llava-v1.6-34b-hf",
    "qwen2-vl-2b": "Qwen/Qwen2-VL-2B-Instruct",
    "qwen2-vl-7b": "Qwen/Qwen2-VL-7B-Instruct",
    "smolvlm": "HuggingFaceTB/SmolVLM-Instruct",
}
YESNO_SUFFIX = YESNO_LAYOUTS["paper"].suffix
ZERO_SHOT_QUESTION = "What is in this image? Answer with the class name."
# Word-start markers of byte-level BPE (GPT-2, Qwen) and SentencePiece (Llama) vocabularies.
_SPACE_MARKS = ("Ġ", "▁")


def answer_token_ids(tokenizer, words) -> list[int]:
    """Ids of every spelling in ``words`` that the tokenizer writes as one token."""
    ids: list[int] = []
    vocab = tokenizer.get_vocab()
    for w in words:
        enc = tokenizer.encode(w, add_special_tokens=False)
        # SentencePiece may encode " Yes" as [word-start, "Yes"]: keep only true single tokens.
        if len(enc) == 1 and enc[0] not in ids:
            ids.append(enc[0])
        if w.startswith(" "):
            for mark in _SPACE_MARKS:
                i = vocab.get(mark + w[1:])
                if i is not None and i not in ids:
                    ids.append(i)
    return ids


def _image_span(ids: list[int], text_ids: list[int]) -> tuple[int, int]:
    """(a, s) with ids == text_ids[:a] + expansion + text_ids[s:]: where the processor put the image
    tokens into a prompt that the plain tokenizer wrote with one placeholder."""
    a = common_prefix_len(ids, text_ids)
    b, lim = 0, min(len(ids), len(text_ids)) - a
    while b < lim and ids[-1 - b] == text_ids[-1 - b]:
        b += 1
    return a, len(text_ids) - b


@dataclass
class Prepared:
    """Prompts for one question set: text-only token ids and how many leading tokens all share."""

    prompts: list[str]
    token_ids: list[list[int]]  # the image placeholder unexpanded, as the processor's tokenizer writes it
    cut: int  # leading text tokens shared by every prompt (they go into the cached prefix)
    checked: bool = False  # _check_splicing passed (run lazily: the naive path does not need it)
    yes_ids: list[int] = field(default_factory=list)  # yes/no questions: the answer tokens read (log-sum-exp each)
    no_ids: list[int] = field(default_factory=list)


class ImagePreprocessor:
    """What DataLoader workers run: the processor on (image, first prompt). Holds no model, so
    workers stay light under any start method."""

    def __init__(self, processor, prompt: str, naive: bool):
        self.processor, self.prompt, self.naive = processor, prompt, naive

    def __call__(self, image):
        if self.naive:  # the naive path processes every prompt itself
            return {"image": image}
        return dict(self.processor(text=[self.prompt], images=[image], return_tensors="pt"))


class HFMultimodalTeacher(MultimodalTeacher):
    backend = "transformers"

    def __init__(self, model, processor, name: str):
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.name = name
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.yes_ids, self.no_ids = self.answer_ids(YESNO_LAYOUTS["paper"])
        self._keep_arg = "logits_to_keep" in inspect.signature(model.forward).parameters
        self._pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self._prepared: dict[tuple, Prepared] = {}

    # ---- prompts -------------------------------------------------------------------------------
    def prompt(self, user_text: str, answer: str | None = None) -> str:
        """The model's own chat template: image first (where LLaVA, Qwen2-VL and InternVL put it)."""
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": user_text}]}]
        if getattr(self.processor, "chat_template", None) is None:
            raise MakdError(f"model {self.name} has no chat template in its processor; use an instruction-tuned checkpoint")
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if answer is None:
            return text
        # Score the answer as the template writes a finished assistant turn (with its end-of-turn
        # token, so "cat" is not rewarded for being the start of "catfish").
        done = self.processor.apply_chat_template(
            messages + [{"role": "assistant", "content": [{"type": "text", "text": answer}]}], tokenize=False
        )
        if done.startswith(text) and answer in done[len(text):]:
            return done
        return text + ("" if text[-1:].isspace() else " ") + answer

    def answer_ids(self, layout: YesNoLayout) -> tuple[list[int], list[int]]:
        """The yes and the no token ids a layout reads: single-token spellings, or vocabulary entries."""
        if layout.vocab_lookup:
            vocab = self.tokenizer.get_vocab()
            yes, no = ([vocab[w] for w in words if w in vocab] for words in (layout.yes, layout.no))
        else:
            yes, no = answer_token_ids(self.tokenizer, layout.yes), answer_token_ids(self.tokenizer, layout.no)
        if not yes or not no:
            spellings = " or ".join("/".join(map(repr, words)) for words in (layout.yes, layout.no))
            raise MakdError(f"model {self.name}: no single token spells {spellings} in its vocabulary; "
                            "it cannot answer yes/no questions here")
        return yes, no

    def prepare(self, prompts: list[str], max_cut: int | None = None, answers=((), ())) -> Prepared:
        key = (tuple(prompts), max_cut, answers)
        if key not in self._prepared:
            ids = [self.tokenizer(p)["input_ids"] for p in prompts]
            cut = min(len(t) for t in ids) - 1  # every suffix keeps at least one token
            for t in ids[1:]:
                cut = min(cut, common_prefix_len(ids[0], t))
            if max_cut is not None:
                cut = min(cut, max_cut)
            self._prepared[key] = Prepared(list(prompts), ids, cut, yes_ids=list(answers[0]), no_ids=list(answers[1]))
        return self._prepared[key]

    def _check_splicing(self, prep: Prepared) -> None:
        """Once per question set, on a blank image: the processor's ids of every prompt must equal
        its text-only ids with the first prompt's image tokens spliced in, which the cached path assumes."""
        prompts, ids = prep.prompts, prep.token_ids
        blank = Image.new("RGB", (224, 224), (127, 127, 127))
        full0 = self.processor(text=[prompts[0]], images=[blank])["input_ids"][0]
        a, s = _image_span(list(full0), ids[0])
        expansion = list(full0[a : len(full0) - (len(ids[0]) - s)])
        for p, t in zip(prompts[1:], ids[1:]):
            if list(self.processor(text=[p], images=[blank])["input_ids"][0]) != t[:a] + expansion + t[s:]:
                raise MakdError(f"model {self.name}: its processor tokenizes prompts in a way the cached-prefix path "
                                "cannot reproduce; use the naive path (one forward per question)")
        prep.checked = True

    def prepare_yesno(self, questions: list[str], layout: str = "paper") -> Prepared:
        lay = yesno_layout(layout)
        yes, no = self.answer_ids(lay)
        return self.prepare([self.prompt(q + lay.suffix) for q in questions], answers=(tuple(yes), tuple(no)))

    def prepare_answers(self, question: str, answers: list[str]) -> Prepared:
        # The cached prefix stops at the end of the question prompt so that every answer token,
        # the first one included, is scored from logits we compute.
        base = len(self.tokenizer(self.prompt(question))["input_ids"])
        return self.prepare([self.prompt(question, a) for a in answers], max_cut=base)

    def preprocessor(self, prep: Prepared, naive: bool = False) -> ImagePreprocessor:
        return ImagePreprocessor(self.processor, prep.prompts[0], naive)

    # ---- forward passes ------------------------------------------------------------------------
    def _to_device(self, enc: dict) -> dict:
        out = {}
        for k, v in enc.items():
            if torch.is_tensor(v):
                v = v.to(self.device, dtype=self.dtype if v.is_floating_point() else None)
            out[k] = v
        return out

    def _forward(self, keep_last: bool, **kw):
        if keep_last and self._keep_arg:
            return self.model(**kw, logits_to_keep=1)
        return self.model(**kw)

    def _prefix(self, enc: dict, prep: Prepared):
        """Run the shared prefix (image included) once; return its cache, length, last logits and
        the M-RoPE offset (Qwen2-VL numbers text after an image from the image grid, not the index)."""
        if not prep.checked:
            self._check_splicing(prep)
        ids0 = enc["input_ids"][0].tolist()
        t0 = prep.token_ids[0]
        _, s = _image_span(ids0, t0)
        if prep.cut < s:  # the image tokens must lie in the shared prefix
            raise MakdError(f"model {self.name}: the prompts differ before the image; cannot share the image prefix")
        P = len(ids0) - len(t0) + prep.cut
        n = len(ids0)
        kw = {}
        for k, v in enc.items():
            if torch.is_tensor(v) and v.ndim == 2 and tuple(v.shape) == (1, n) and not v.is_floating_point():
                v = v[:, :P]  # token-aligned extras (attention_mask, mm_token_type_ids)
            kw[k] = v
        kw = self._to_device(kw)
        core = getattr(self.model, "model", None)
        if core is not None and hasattr(core, "rope_deltas"):
            core.rope_deltas = None  # never reuse the previous image's offset
        out = self._forward(True, **kw, use_cache=True)
        delta = getattr(core, "rope_deltas", None) if core is not None else None
        return out.past_key_values, P, out.logits[0, -1].float(), delta

    @staticmethod
    def _expand_cache(cache, B: int):
        """The prefix cache viewed B times along the batch (no copy: the next update concatenates)."""
        layers = getattr(cache, "layers", None)
        if layers is None or any(type(x).__name__ not in ("DynamicLayer", "DynamicSlidingWindowLayer") for x in layers):
            new = copy.deepcopy(cache)
            new.batch_repeat_interleave(B)
            return new
        new = copy.copy(cache)
        new.layers = []
        for layer in layers:
            lay = copy.copy(layer)
            if getattr(layer, "is_initialized", False) and layer.keys.numel():
                lay.keys = layer.keys.expand(B, *layer.keys.shape[1:])
                lay.values = layer.values.expand(B, *layer.values.shape[1:])
            new.layers.append(lay)
        return new

    def _suffix(self, cache, P: int, delta, suffixes: list[list[int]], last_only: bool) -> torch.Tensor:
        """Logits of a batch of suffixes after the cached prefix: B x V (last position, suffixes
        left-padded) or B x S x V (every position, right-padded)."""
        B, S = len(suffixes), max(len(s) for s in suffixes)
        ids = torch.full((B, S), self._pad_id, dtype=torch.long)
        mask = torch.zeros((B, P + S), dtype=torch.long)
        mask[:, :P] = 1
        for i, s in enumerate(suffixes):
            lo = S - len(s) if last_only else 0
            ids[i, lo : lo + len(s)] = torch.tensor(s)
            mask[i, P + lo : P + lo + len(s)] = 1
        # Positions continue from the prefix and skip the pads: row i sees what a lone prompt sees.
        pos = P + (mask[:, P:].cumsum(-1) - 1).clamp(min=0)
        pos = pos.to(self.device)
        if delta is not None:
            pos = (pos + delta.to(self.device).reshape(-1)[:1]).unsqueeze(0).expand(3, B, S)
        out = self._forward(
            last_only,
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=pos,
            past_key_values=self._expand_cache(cache, B),
            use_cache=True,
        )
        return out.logits[:, -1].float() if last_only else out.logits.float()

    @staticmethod
    def _yesno(last: torch.Tensor, prep: Prepared) -> torch.Tensor:
        # z_yes = logsumexp over the single-token spellings of "yes" (same for "no"): a model may
        # answer "Yes" or "yes" or " Yes" depending on its template, and summing the
        # probabilities of all spellings counts them as one answer; when one spelling dominates
        # this equals the paper's single-token logit (makd-reference reads that one token alone).
        z_yes = torch.logsumexp(last[..., prep.yes_ids], dim=-1)
        z_no = torch.logsumexp(last[..., prep.no_ids], dim=-1)
        return z_yes - z_no

    @torch.inference_mode()
    def yesno_from_encoded(self, enc: dict, prep: Prepared, batch_questions: int = 64) -> np.ndarray:
        """Log-odds z_yes - z_no for every prepared question (Q,), from a preprocessor output."""
        if "image" in enc:
            return self.yesno_naive(enc["image"], prep)
        cache, P, _, delta = self._prefix(enc, prep)
        suffixes = [t[prep.cut :] for t in prep.token_ids]
        out = np.zeros(len(suffixes), dtype=np.float32)
        order = np.argsort([len(s) for s in suffixes], kind="stable")  # similar lengths pad less
        for lo in range(0, len(order), batch_questions):
            idx = order[lo : lo + batch_questions]
            last = self._suffix(cache, P, delta, [suffixes[i] for i in idx], last_only=True)
            out[idx] = self._yesno(last, prep).cpu().numpy()
        return out

    @torch.inference_mode()
    def yesno_naive(self, image, prep: Prepared) -> np.ndarray:
        """The reference loop: one full forward (vision encoder included) per question."""
        out = []
        for p in prep.prompts:
            enc = self._to_device(dict(self.processor(text=[p], images=[image], return_tensors="pt")))
            out.append(self._yesno(self._forward(True, **enc).logits[0, -1].float(), prep).item())
        return np.asarray(out, dtype=np.float32)

    def yesno_logodds(self, image, questions: list[str], batch_questions: int = 64, naive: bool = False,
                      layout: str = "paper") -> np.ndarray:
        """Convenience for one PIL image and plain question texts."""
        prep = self.prepare_yesno(questions, layout)
        return self.yesno_from_encoded(self.preprocessor(prep, naive)(image), prep, batch_questions)

    @torch.inference_mode()
    def answer_logliks_from_encoded(self, enc: dict, prep: Prepared, batch_answers: int = 32) -> np.ndarray:
        """Sum of log-probabilities of each prepared answer's tokens after the question (A,)."""
        if "image" in enc:
            return self.answer_logliks_naive(enc["image"], prep)
        cache, P, last, delta = self._prefix(enc, prep)
        first = torch.log_softmax(last, -1)
        answers = [t[prep.cut :] for t in prep.token_ids]
        out = np.zeros(len(answers), dtype=np.float32)
        for lo in range(0, len(answers), batch_answers):
            chunk = answers[lo : lo + batch_answers]
            logp = torch.log_softmax(self._suffix(cache, P, delta, chunk, last_only=False), -1)
            for j, a in enumerate(chunk):
                # Token k of the answer is predicted at position k - 1 (the prefix's last for k = 0).
                rest = logp[j, torch.arange(len(a) - 1), torch.tensor(a[1:], dtype=torch.long)].sum() if len(a) > 1 else 0.0
                out[lo + j] = float(first[a[0]] + rest)
        return out

    @torch.inference_mode()
    def answer_logliks_naive(self, image, prep: Prepared) -> np.ndarray:
        out = []
        for p, t in zip(prep.prompts, prep.token_ids):
            n = len(t) - prep.cut
            enc = self._to_device(dict(self.processor(text=[p], images=[image], return_tensors="pt")))
            logp = torch.log_softmax(self._forward(False, **enc).logits[0, -n - 1 : -1].float(), -1)
            out.append(logp.gather(1, enc["input_ids"][0, -n:, None]).sum().item())
        return np.asarray(out, dtype=np.float32)


def resolve_model_id(name: str) -> str:
    return ALIASES.get(name.lower(), name)


# Loaders of models whose own (remote) code runs them, by the config's model_type: an adapter module
# registers itself (teachers/internvl_remote.py: internvl_chat), imported by name on first use, so this
# module, which the adapters build on, never imports them.
REMOTE_CODE_LOADERS: Registry = Registry("remote-code multimodal loader", modules=("makd_cli.teachers.internvl_remote",))


def load_mllm(name: str, device: str | None = None, trust_remote_code: bool = False, dtype: torch.dtype | None = None,
              mmproj=None, threads: int | None = None):
    """Load a transformers image-text-to-text model and its processor: bf16 on CUDA, fp32 on CPU.

    ``name`` is an alias (see ``ALIASES``), a hub id or a local directory. The local cache is
    tried first so that an offline machine never waits on the network. GGUF models are another
    backend's (``teachers/backends/llamacpp.py``; ``teachers.backends.load_multimodal`` picks the
    backend); an original InternVL2/2.5 checkpoint (``internvl_chat``) with ``trust_remote_code``
    goes through ``teachers/internvl_remote.py`` (GPU-only, untested on real weights).
    """
    if mmproj is not None:
        raise MakdError(f"--mmproj goes with a GGUF --mllm (a .gguf language model for llama.cpp); {name} is a "
                        "transformers model and brings its own vision tower")
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    repo = resolve_model_id(name)
    device = device or default_device()
    dtype = dtype or (torch.bfloat16 if str(device).startswith("cuda") else torch.float32)
    local_dir = Path(repo).is_dir()
    if not local_dir and "/" not in repo:
        raise MakdError(f"unknown model {name!r}: give a hub id (org/name), a local directory or one of {', '.join(ALIASES)}")

    def load(local_only: bool):
        kw = dict(trust_remote_code=trust_remote_code, local_files_only=local_only)
        config = AutoConfig.from_pretrained(repo, **kw)  # first: it says whether remote code is needed
        model_type = getattr(config, "model_type", None)
        if trust_remote_code and model_type in REMOTE_CODE_LOADERS:  # internvl_chat: teachers/internvl_remote.py
            return REMOTE_CODE_LOADERS.get(model_type)(repo, config, device=device, dtype=dtype, local_files_only=local_only)
        remote = "AutoModelForImageTextToText" in (getattr(config, "auto_map", None) or {})
        if not remote and type(config) not in AutoModelForImageTextToText._model_mapping:
            raise ValueError("Unrecognized configuration class")
        processor = AutoProcessor.from_pretrained(repo, **kw)
        model = AutoModelForImageTextToText.from_pretrained(repo, config=config, dtype=dtype, **kw)
        return HFMultimodalTeacher(model.to(device), processor, repo)

    try:
        try:
            teacher = load(True)
        except OSError:
            if not may_download(local_dir):
                raise
            teacher = load(False)
    except ValueError as exc:
        msg = str(exc)
        if "trust_remote_code" in msg:
            raise MakdError(f"model {repo} ships its own code; pass --trust-remote-code if you trust its authors") from None
        if "Unrecognized configuration class" in msg or "Unrecognized model" in msg:
            raise MakdError(
                f"model {repo} is not an image-text-to-text model that transformers can load natively "
                "(original InternVL2/2.5 checkpoints are remote-code chat models: pass --trust-remote-code, or use "
                "a converted '-hf' checkpoint, e.g. internvl3-1b)"
            ) from None
        raise
    except OSError as exc:
        if local_dir:
            raise MakdError(f"model directory {repo} could not be loaded: {str(exc).splitlines()[0]}") from None
        raise MakdError(
            f"model {repo} is not in the local Hugging Face cache; download it first with network access, "
            f"e.g. `huggingface-cli download {repo}`"
        ) from None
    return teacher
