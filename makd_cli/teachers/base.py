"""What every language-model backend offers the question generator and the extractor."""

from __future__ import annotations

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
