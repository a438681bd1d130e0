"""What every teacher backend offers the question generator and the extractors.

``LanguageModel``: the language-only backends (llama.cpp, transformers, OpenAI-compatible APIs).
``MultimodalTeacher``: the image-text backends ``makd extract --mllm`` drives (transformers,
llama.cpp with an mmproj, InternVL's remote code); ``extract/image_yesno.py`` uses nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from makd_cli.errors import MakdError


class LanguageModel:
    backend = "?"
    name = "?"
    evaluated_tokens = 0

    # Backends implement these.
    def chat_prompt(self, messages: list[dict], add_generation_prompt: bool = True) -> str: ...
    def tokenize(self, text: str) -> list[int]: ...
    def tokenize_plain(self, text: str) -> list[int]: ...
    def next_token_logits(self, tokens: list[int]) -> np.ndarray: ...
    def naive_next_token_logits(self, tokens: list[int]) -> np.ndarray: ...
    def reset_cache(self) -> None: ...
    def generate_json(self, messages: list[dict], schema: dict, seed: int, temperature: float = 0.7, max_tokens: int = 512) -> str: ...

    def label_token_ids(self, labels: list[str]) -> list[list[int]]:
        """Token ids of each option label as the model would emit it first after the assistant prompt.

        The bare label must be one token; a leading-space variant is added when it is one token too,
        and the label's score is the log-sum-exp over its variants (the probability of emitting it).
        """
        ids = []
        for label in labels:
            bare = self.tokenize_plain(label)
            if len(bare) != 1:
                raise MakdError(
                    f"option label {label!r} is {len(bare)} tokens for {self.name}; use single-token labels "
                    "(--labels digits or --labels letters)"
                )
            variants = [bare[0]]
            spaced = self.tokenize_plain(" " + label)
            if len(spaced) == 1 and spaced[0] != bare[0]:
                variants.append(spaced[0])
            ids.append(variants)
        flat = [v for vs in ids for v in vs]
        if len(set(flat)) != len(flat):
            raise MakdError(f"option labels {labels} share tokens for {self.name}; choose distinct labels")
        return ids


@dataclass(frozen=True)
class YesNoLayout:
    """How ``makd extract --mllm --prompt-layout`` asks a yes/no question about an image and reads the answer."""

    suffix: str  # appended to every question
    yes: tuple[str, ...]  # answer spellings whose single tokens count as "yes" (their probabilities summed)
    no: tuple[str, ...]
    vocab_lookup: bool  # the spellings are vocabulary entries (the reference's convert_tokens_to_ids), not texts to encode


YESNO_LAYOUTS = {
    # makd's default: ask for the answer, and count every single-token spelling a template may lead to.
    "paper": YesNoLayout(" Answer yes or no.", ("Yes", "yes", " Yes", " yes"), ("No", "no", " No", " no"), False),
    # MaKD's reference (internvl_logits/*make_makd_logits_json.py): "<image>\n" + the question, nothing
    # appended, and softmax over the logits of the vocabulary entries "Yes" and "No" alone.
    "makd-reference": YesNoLayout("", ("Yes",), ("No",), True),
}


def yesno_layout(name: str) -> YesNoLayout:
    if name not in YESNO_LAYOUTS:
        raise MakdError(f"--prompt-layout {name!r} does not fit --mllm; choose {' or '.join(YESNO_LAYOUTS)}")
    return YESNO_LAYOUTS[name]


class MultimodalTeacher:
    """An image-text model answering questions about one image at a time, from one cached image prefix.

    ``prepare_*`` tokenises the prompts once; ``preprocessor(prep)`` turns an image into the encoded
    inputs (it runs in DataLoader workers); ``*_from_encoded`` scores every prompt for that image.
    """

    backend = "?"
    name = "?"
    dtype = None  # the compute dtype, recorded in the targets' meta
    yes_ids: list[int] = []
    no_ids: list[int] = []

    def prepare_yesno(self, questions: list[str], layout: str = "paper"): ...
    def prepare_answers(self, question: str, answers: list[str]): ...
    def preprocessor(self, prep, naive: bool = False): ...
    def yesno_from_encoded(self, enc: dict, prep, batch_questions: int = 64) -> np.ndarray: ...
    def answer_logliks_from_encoded(self, enc: dict, prep, batch_answers: int = 32) -> np.ndarray: ...
    def yesno_logodds(self, image, questions: list[str], batch_questions: int = 64, naive: bool = False,
                      layout: str = "paper") -> np.ndarray: ...

    def close(self) -> None:
        """Free native resources (llama.cpp); the transformers teachers need nothing."""


def common_prefix_len(a, b) -> int:
    """How many leading items two token sequences share (how much of a KV cache can be reused)."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
