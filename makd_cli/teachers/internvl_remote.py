"""InternVL2 / InternVL2.5 original checkpoints (remote-code ``internvl_chat`` models, loaded with
``--trust-remote-code``) as the per-image yes/no teacher (MaKD section 3.2).

GPU-ONLY PATH, NOT TESTED ON REAL WEIGHTS: the checkpoints are 1-8B parameters (hours per thousand
images on a CPU) and cannot be downloaded here; the unit tests run this adapter on a tiny stand-in
model with the same interface (tiling, prompt assembly, image-token expansion, cached prefix equal
to the one-prompt reference). Converted ``-hf`` checkpoints (InternVL3-*-hf) load natively through
``hf_mllm`` instead and need no remote code.

What the model's own code does, and what this adapter reproduces (read from the public
``modeling_internvl_chat.py``, ``conversation.py`` and the model cards):

* images are cut into 448 px tiles: the tile grid (i x j, min_dynamic_patch <= i*j <=
  max_dynamic_patch) whose aspect ratio is closest to the image's, plus a 448 px thumbnail of the
  whole image when there is more than one tile; bicubic resizes, ImageNet mean/std normalisation;
* ``model.extract_feature(pixel_values)`` gives ``num_image_token`` (256) embeddings per tile
  (ViT, pixel shuffle, MLP projector);
* ``model.chat`` writes the question as ``"<image>\\n" + question`` into the model's conversation
  template (``model.template``: Hermes-2, internlm2-chat, phi3-chat or internvl2_5, with
  ``model.system_message``), replaces ``<image>`` by ``<img>`` + ``<IMG_CONTEXT>`` x
  (num_image_token x tiles) + ``</img>``, tokenizes the query and overwrites the input embeddings
  at the ``<IMG_CONTEXT>`` positions (``img_context_token_id``) with the vision features.

The cached scheme is the transformers teacher's: vision features once per image, the shared
prefix (header, image, shared question text) through ``model.language_model`` once with the
features spliced into its input embeddings, then the question suffixes as one left-padded batch
against the prefix's KV cache expanded along the batch, reading ``logits_to_keep=1``.
``naive=True`` rebuilds every prompt as ``model.chat`` does and runs it whole (vision included).
"""

from __future__ import annotations

import copy
import sys

import numpy as np
import torch
from PIL import Image

from makd_cli.errors import MakdError
from makd_cli.teachers.hf_mllm import REMOTE_CODE_LOADERS, HFMultimodalTeacher, Prepared

IMG_START, IMG_END, IMG_CONTEXT = "<img>", "</img>", "<IMG_CONTEXT>"
PLACEHOLDER = IMG_START + IMG_CONTEXT + IMG_END  # the image in a prompt before expansion to its tiles
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---- image tiling ------------------------------------------------------------------------------
def tile_grids(min_num: int = 1, max_num: int = 12) -> list[tuple[int, int]]:
    """Candidate (columns, rows) grids, fewest tiles first (the order the reference iterates in)."""
    grids = {(i, j) for n in range(min_num, max_num + 1) for i in range(1, n + 1) for j in range(1, n + 1)
             if min_num <= i * j <= max_num}
    return sorted(grids, key=lambda g: g[0] * g[1])


def closest_grid(width: int, height: int, grids: list[tuple[int, int]], tile: int) -> tuple[int, int]:
    """The grid whose aspect ratio is closest to the image's; on a tie the larger grid wins when the
    image has more than half the pixels that grid's tiles hold."""
    aspect = width / height
    best, best_diff = (1, 1), float("inf")
    for g in grids:
        diff = abs(aspect - g[0] / g[1])
        if diff < best_diff:
            best, best_diff = g, diff
        elif diff == best_diff and width * height > 0.5 * tile * tile * g[0] * g[1]:
            best = g
    return best


def dynamic_tiles(image: Image.Image, tile: int = 448, min_num: int = 1, max_num: int = 12,
                  use_thumbnail: bool = True) -> list[Image.Image]:
    """The image resized to the closest grid of ``tile``-pixel squares, cut row by row, and a
    thumbnail of the whole image appended when there is more than one tile."""
    w, h = image.size
    cols, rows = closest_grid(w, h, tile_grids(min_num, max_num), tile)
    resized = image.resize((cols * tile, rows * tile), Image.BICUBIC)
    tiles = [resized.crop((c * tile, r * tile, (c + 1) * tile, (r + 1) * tile)) for r in range(rows) for c in range(cols)]
    if use_thumbnail and len(tiles) > 1:
        tiles.append(image.resize((tile, tile), Image.BICUBIC))
    return tiles


def tiles_to_pixels(tiles: list[Image.Image], tile: int) -> torch.Tensor:
    """n x 3 x tile x tile float32, scaled to [0, 1] and normalised with ImageNet's mean and std."""
    arrs = []
    for t in tiles:
        if t.size != (tile, tile):
            t = t.resize((tile, tile), Image.BICUBIC)
        arrs.append(np.asarray(t, dtype=np.float32) / 255.0)
    x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


class InternVLPreprocessor:
    """What DataLoader workers run: tiles and normalised pixels (no model; picklable)."""

    def __init__(self, tile: int, min_num: int, max_num: int, use_thumbnail: bool, naive: bool):
        self.tile, self.min_num, self.max_num, self.use_thumbnail, self.naive = tile, min_num, max_num, use_thumbnail, naive

    def pixels(self, image) -> torch.Tensor:
        image = image.convert("RGB")
        return tiles_to_pixels(dynamic_tiles(image, self.tile, self.min_num, self.max_num, self.use_thumbnail), self.tile)

    def __call__(self, image):
        if self.naive:
            return {"image": image}
        return {"pixel_values": self.pixels(image)}


# ---- prompts -----------------------------------------------------------------------------------
def expand_image(prompt: str, num_image_token: int, n_tiles: int) -> str:
    """The placeholder ``<img><IMG_CONTEXT></img>`` as ``model.chat`` writes it for ``n_tiles`` tiles."""
    if prompt.count(PLACEHOLDER) != 1:
        raise MakdError("an InternVL prompt must hold the image placeholder exactly once")
    return prompt.replace(PLACEHOLDER, IMG_START + IMG_CONTEXT * (num_image_token * n_tiles) + IMG_END, 1)


def expand_ids(ids: list[int], context_id: int, n: int) -> list[int]:
    """Token ids with the one ``<IMG_CONTEXT>`` of the placeholder repeated ``n`` times."""
    if ids.count(context_id) != 1:
        raise MakdError(f"expected one image context token in the prompt, found {ids.count(context_id)}")
    a = ids.index(context_id)
    return ids[:a] + [context_id] * n + ids[a + 1 :]


def conversation_template(model):
    """A fresh copy of the model's conversation template with the model's system message, as
    ``model.chat`` builds it (``get_conv_template(model.template)`` from the model's own code)."""
    module = sys.modules.get(type(model).__module__)
    get = getattr(module, "get_conv_template", None)
    if get is not None and getattr(model, "template", None):
        conv = get(model.template)
    elif getattr(model, "conv_template", None) is not None:
        conv = copy.deepcopy(model.conv_template)
        conv.messages = []
    else:
        raise MakdError("this InternVL model has no conversation template (conv_template); is it an internvl_chat checkpoint?")
    if getattr(model, "system_message", None) is not None:
        conv.system_message = model.system_message
    return conv


class InternVLChatTeacher(HFMultimodalTeacher):
    """The remote-code InternVLChatModel behind the transformers teacher's interface. GPU-only in
    practice; see the module docstring for what is and is not tested."""

    def __init__(self, model, tokenizer, name: str):
        lm = getattr(model, "language_model", None)
        if lm is None or not hasattr(model, "extract_feature"):
            raise MakdError(f"model {name} is not an InternVL chat model (no language_model / extract_feature)")
        super().__init__(lm, tokenizer, name)  # yes/no token ids, logits_to_keep, pad id: from the LLM
        self.chat_model = model.eval()
        self.context_id = tokenizer.convert_tokens_to_ids(IMG_CONTEXT)
        if self.context_id is None or self.context_id == getattr(tokenizer, "unk_token_id", None):
            raise MakdError(f"model {name}: its tokenizer has no {IMG_CONTEXT} token")
        model.img_context_token_id = self.context_id  # what the model's own generate() expects
        self.num_image_token = int(model.num_image_token)
        cfg = model.config
        vision = getattr(cfg, "vision_config", None)
        self.tile = int(getattr(cfg, "force_image_size", None) or getattr(vision, "image_size", 448))
        dynamic = getattr(cfg, "dynamic_image_size", True)
        self.min_num = int(getattr(cfg, "min_dynamic_patch", 1)) if dynamic else 1
        self.max_num = int(getattr(cfg, "max_dynamic_patch", 12)) if dynamic else 1
        self.use_thumbnail = bool(getattr(cfg, "use_thumbnail", True)) and dynamic
        self.dtype = next(model.parameters()).dtype

    # ---- prompts -------------------------------------------------------------------------------
    def prompt(self, user_text: str, answer: str | None = None) -> str:
        """The model.chat prompt with the unexpanded image placeholder (expanded per image). With
        ``prepare_yesno(..., "makd-reference")`` the user text is the bare question: the prompt MaKD's
        reference code builds with ``model.chat(tokenizer, pixel_values, "<image>\\n" + question)``."""
        def render(ans):
            conv = conversation_template(self.chat_model)
            conv.append_message(conv.roles[0], "<image>\n" + user_text)
            conv.append_message(conv.roles[1], ans)
            return conv.get_prompt().replace("<image>", PLACEHOLDER, 1)

        text = render(None)
        if answer is None:
            return text
        done = render(answer)
        if done.startswith(text) and answer in done[len(text):]:
            return done
        return text + answer

    def _check_splicing(self, prep: Prepared) -> None:
        """The tokenizer must write the expanded prompt as the placeholder's ids with the context token
        repeated (InternVL's image tokens are special tokens, so text never merges across them)."""
        for p, t in zip(prep.prompts, prep.token_ids):
            full = self.tokenizer(expand_image(p, self.num_image_token, 2))["input_ids"]
            if list(full) != expand_ids(t, self.context_id, 2 * self.num_image_token):
                raise MakdError(f"model {self.name}: its tokenizer writes the image tokens in a way the cached-prefix "
                                "path cannot reproduce; use the naive path (one forward per question)")
        prep.checked = True

    def preprocessor(self, prep: Prepared, naive: bool = False) -> InternVLPreprocessor:
        return InternVLPreprocessor(self.tile, self.min_num, self.max_num, self.use_thumbnail, naive)

    # ---- forward passes ------------------------------------------------------------------------
    def _vision(self, pixel_values: torch.Tensor) -> torch.Tensor:
        feats = self.chat_model.extract_feature(pixel_values.to(self.device, dtype=self.dtype))
        return feats.reshape(-1, feats.shape[-1])

    def _embeds(self, ids: list[int], feats: torch.Tensor) -> torch.Tensor:
        """Input embeddings of ``ids`` with the vision features written at the context positions."""
        t = torch.tensor([ids], dtype=torch.long, device=self.device)
        emb = self.model.get_input_embeddings()(t)
        sel = t[0] == self.context_id
        if int(sel.sum()) != feats.shape[0]:
            raise MakdError(f"model {self.name}: {int(sel.sum())} image context tokens for {feats.shape[0]} image features")
        emb[0, sel] = feats.to(emb.dtype)
        return emb

    def _prefix(self, enc: dict, prep: Prepared):
        if not prep.checked:
            self._check_splicing(prep)
        pv = enc["pixel_values"]
        t0 = prep.token_ids[0]
        a = t0.index(self.context_id)
        if prep.cut <= a:  # the image tokens must lie in the shared prefix
            raise MakdError(f"model {self.name}: the prompts differ before the image; cannot share the image prefix")
        ids = expand_ids(t0[: prep.cut], self.context_id, self.num_image_token * pv.shape[0])
        out = self._forward(True, inputs_embeds=self._embeds(ids, self._vision(pv)), use_cache=True)
        return out.past_key_values, len(ids), out.logits[0, -1].float(), None

    @staticmethod
    def _expand_cache(cache, B: int):
        if isinstance(cache, (tuple, list)):  # legacy tuples from older remote language-model code
            return tuple(tuple(x.expand(B, *x.shape[1:]) for x in layer) for layer in cache)
        return HFMultimodalTeacher._expand_cache(cache, B)

    def _full(self, image, prompt: str) -> tuple[list[int], torch.Tensor]:
        """One prompt as model.chat builds it: (ids of the expanded query, input embeddings)."""
        pv = self.preprocessor(None).pixels(image)
        ids = list(self.tokenizer(expand_image(prompt, self.num_image_token, pv.shape[0]))["input_ids"])
        return ids, self._embeds(ids, self._vision(pv))

    @torch.inference_mode()
    def yesno_naive(self, image, prep: Prepared) -> np.ndarray:
        """The reference loop: every prompt tokenized expanded and run whole, vision included."""
        out = []
        for p in prep.prompts:
            _, emb = self._full(image, p)
            out.append(self._yesno(self._forward(True, inputs_embeds=emb).logits[0, -1].float(), prep).item())
        return np.asarray(out, dtype=np.float32)

    @torch.inference_mode()
    def answer_logliks_naive(self, image, prep: Prepared) -> np.ndarray:
        out = []
        for p, t in zip(prep.prompts, prep.token_ids):
            n = len(t) - prep.cut
            ids, emb = self._full(image, p)
            logp = torch.log_softmax(self._forward(False, inputs_embeds=emb).logits[0, -n - 1 : -1].float(), -1)
            target = torch.tensor(ids[-n:], device=logp.device)
            out.append(logp.gather(1, target[:, None]).sum().item())
        return np.asarray(out, dtype=np.float32)


def load_internvl_chat(repo: str, config, *, device: str, dtype: torch.dtype, local_files_only: bool) -> InternVLChatTeacher:
    """Load an original InternVL2/2.5 checkpoint with its own code (the caller checked
    ``trust_remote_code``). GPU-only in practice and untested on real weights."""
    from transformers import AutoModel, AutoTokenizer

    import transformers

    kw = dict(trust_remote_code=True, local_files_only=local_files_only)
    try:
        tokenizer = AutoTokenizer.from_pretrained(repo, use_fast=False, **kw)  # the model cards' choice
        model = AutoModel.from_pretrained(repo, config=config, dtype=dtype, low_cpu_mem_usage=True, **kw)
    except (ImportError, AttributeError, TypeError, NameError, KeyError) as exc:
        # OSError (files missing locally) and ValueError pass through: load_mllm handles those.
        first = (str(exc).splitlines() or [""])[0]
        raise MakdError(f"the remote code of {repo} failed under transformers {transformers.__version__} "
                        f"({type(exc).__name__}: {first}); use a converted '-hf' checkpoint (e.g. internvl3-1b) "
                        "or a transformers version that the model card names") from None
    return InternVLChatTeacher(model.to(device).eval(), tokenizer, repo)


# looked up at call time, so a test can stub load_internvl_chat
REMOTE_CODE_LOADERS.add("internvl_chat", lambda *args, **kw: load_internvl_chat(*args, **kw),
                        "InternVL2/2.5 original checkpoints (model.chat's prompt; GPU-only, untested on real weights)")
