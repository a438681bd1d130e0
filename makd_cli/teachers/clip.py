"""CLIP as LEAD's teacher (lead-supplementary.txt): image embeddings from the image tower, one
description per class from the text tower, and per image a distribution over the classes.

``p = softmax(cos(image, description) / 0.02)`` over the C class descriptions; the normalised entropy
``H = entropy(p) / log C`` says how sure the teacher is (LEAD weights distillation by ``1 - H^2``).
Loaded with transformers' ``CLIPModel`` / ``CLIPProcessor`` from a local directory or a hub id
(the local cache first, so an offline machine never waits on the network).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from makd_cli.errors import MakdError
from makd_cli.numerics import softmax

ALIASES = {
    "clip-b16": "openai/clip-vit-base-patch16",
    "clip-b32": "openai/clip-vit-base-patch32",
    "clip-l14": "openai/clip-vit-large-patch14",
}
TEMPERATURE = 0.02  # LEAD: softmax(image . descriptions^T / 0.02)


def _pooled(out) -> torch.Tensor:
    """transformers 5 returns a model output whose ``pooler_output`` is the projection; 4.x a tensor."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class CLIPImagePreprocessor:
    """What DataLoader workers run: the image processor on one PIL image -> pixel values (1 x 3 x H x W)."""

    def __init__(self, image_processor):
        self.image_processor = image_processor

    def __call__(self, image):
        return self.image_processor(images=[image], return_tensors="pt")["pixel_values"]


class CLIPTeacher:
    backend = "clip"

    def __init__(self, model, processor, name: str, device: str = "cpu"):
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.image_processor = processor.image_processor
        self.name = name
        self.device = torch.device(device)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def context_length(self) -> int:
        """Tokens the text tower reads (77 for OpenAI's CLIP); longer descriptions are truncated."""
        limit = int(self.model.config.text_config.max_position_embeddings)
        tok_max = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(tok_max, int) and 0 < tok_max < limit:
            limit = tok_max
        return limit

    def token_counts(self, texts: list[str]) -> list[int]:
        """Untruncated length of each text in tokens, special tokens included."""
        return [len(ids) for ids in self.tokenizer(list(texts), truncation=False, verbose=False)["input_ids"]]

    @torch.no_grad()
    def encode_texts(self, texts: list[str], batch_size: int = 64) -> tuple[np.ndarray, list[int]]:
        """L2-normalised text embeddings (len(texts) x D, float32) and the indices of the texts that
        were cut at the context length."""
        if not texts:
            raise MakdError("no descriptions to encode")
        limit = self.context_length
        truncated = [i for i, n in enumerate(self.token_counts(texts)) if n > limit]
        rows = []
        for s in range(0, len(texts), batch_size):
            enc = self.tokenizer(list(texts[s:s + batch_size]), padding=True, truncation=True, max_length=limit,
                                 return_tensors="pt")
            enc = {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
            emb = _pooled(self.model.get_text_features(**enc)).float()
            rows.append(torch.nn.functional.normalize(emb, dim=-1).cpu())
        return torch.cat(rows).numpy(), truncated

    def preprocessor(self) -> CLIPImagePreprocessor:
        return CLIPImagePreprocessor(self.image_processor)

    @torch.no_grad()
    def encode_pixels(self, pixel_values: list[torch.Tensor] | torch.Tensor) -> np.ndarray:
        """L2-normalised image embeddings (n x D, float32) of preprocessed images (one forward pass)."""
        x = torch.cat(list(pixel_values)) if not isinstance(pixel_values, torch.Tensor) else pixel_values
        emb = _pooled(self.model.get_image_features(pixel_values=x.to(self.device, self.dtype))).float()
        return torch.nn.functional.normalize(emb, dim=-1).cpu().numpy()

    def input_size(self) -> tuple[int, int]:
        """(height, width) of the image tower's input (the processor's centre crop)."""
        crop = getattr(self.image_processor, "crop_size", None)
        if crop is None:
            side = int(self.model.config.vision_config.image_size)
            return side, side
        if isinstance(crop, (int, float)):
            return int(crop), int(crop)
        get = crop.get if isinstance(crop, dict) else lambda key: getattr(crop, key, None)  # dict, or transformers' SizeDict
        return int(get("height") or get("shortest_edge")), int(get("width") or get("shortest_edge"))

    @torch.no_grad()
    def encode_views(self, views: torch.Tensor, mean, std) -> torch.Tensor:
        """L2-normalised embeddings (B x D, float32, on ``views``' device) of a batch of augmented views
        that were normalised with ``mean`` / ``std`` (the student's ImageNet statistics): LEAD's online
        teacher sees the very crop the student sees. The views are brought back to [0, 1], resized to
        the tower's input when their size differs, and normalised with CLIP's own statistics."""
        x = views.float() * torch.tensor(std, device=views.device).view(1, 3, 1, 1) \
            + torch.tensor(mean, device=views.device).view(1, 3, 1, 1)
        size = self.input_size()
        if tuple(x.shape[-2:]) != size:
            x = torch.nn.functional.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        clip_mean = torch.tensor(self.image_processor.image_mean, device=x.device).view(1, 3, 1, 1)
        clip_std = torch.tensor(self.image_processor.image_std, device=x.device).view(1, 3, 1, 1)
        x = ((x - clip_mean) / clip_std).to(self.device, self.dtype)
        emb = _pooled(self.model.get_image_features(pixel_values=x)).float()
        return torch.nn.functional.normalize(emb, dim=-1).to(views.device)

    def encode_images(self, images) -> np.ndarray:
        """Embeddings of PIL images (convenience for small jobs and tests)."""
        prep = self.preprocessor()
        return self.encode_pixels([prep(im) for im in images])


def class_distribution(image_emb: np.ndarray, text_emb: np.ndarray, temperature: float = TEMPERATURE):
    """(logits = cos / temperature, probs = softmax over classes, entropy = H(p) / log C), all N-row arrays.
    Computed in float64 so that the rows sum to 1 whatever the temperature."""
    logits = image_emb.astype(np.float64) @ text_emb.astype(np.float64).T / temperature
    probs = softmax(logits, axis=1)
    C = probs.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(probs > 0, probs * np.log(np.where(probs > 0, probs, 1.0)), 0.0).sum(axis=1)
    entropy = np.clip(h / np.log(C), 0.0, 1.0) if C > 1 else np.zeros(len(probs))
    return logits, probs, entropy


def resolve_clip_id(name: str) -> str:
    return ALIASES.get(name.lower(), name)


def load_clip(name: str, device: str | None = None, dtype: torch.dtype | None = None) -> CLIPTeacher:
    """Load ``CLIPModel`` + ``CLIPProcessor`` (fp32: the towers are small and the targets exact).
    ``name``: alias (clip-b16, clip-b32, clip-l14), hub id or local directory."""
    from transformers import CLIPModel, CLIPProcessor

    from makd_cli.device import default_device
    from makd_cli.teachers.models import may_download

    repo = resolve_clip_id(name)
    device = device or default_device()
    dtype = dtype or torch.float32
    local_dir = Path(repo).expanduser().is_dir()
    if not local_dir and (repo.startswith((".", "/", "~")) or Path(repo).exists()):
        raise MakdError(f"CLIP model directory {repo} does not exist (or is not a directory)")
    if local_dir:
        repo = str(Path(repo).expanduser())
    if not local_dir and "/" not in repo:
        raise MakdError(f"unknown CLIP model {name!r}: give a hub id (org/name), a local directory or one of {', '.join(ALIASES)}")

    def load(local_only: bool):
        processor = CLIPProcessor.from_pretrained(repo, local_files_only=local_only)
        model = CLIPModel.from_pretrained(repo, dtype=dtype, local_files_only=local_only)
        return model, processor

    try:
        try:
            model, processor = load(True)
        except OSError:
            if not may_download(local_dir):
                raise
            model, processor = load(False)
    except OSError as exc:
        if local_dir:
            raise MakdError(f"CLIP directory {repo} could not be loaded: {str(exc).splitlines()[0]}") from None
        raise MakdError(
            f"CLIP model {repo} is not in the local Hugging Face cache; download it first with network access, "
            f"e.g. `huggingface-cli download {repo}`"
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MakdError(f"{repo} is not a CLIP model that transformers' CLIPModel can load ({first})") from None
    return CLIPTeacher(model.to(device), processor, repo, str(device))
