"""Shared fixtures: a tiny ImageFolder dataset, class lists, questions and targets built in code."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("OMP_NUM_THREADS", "2")

pytest_plugins = ["llama_guard", "pytester"]  # llama_guard: a crashing llama.cpp fails its tests, not the run

from makd_cli.formats.questions import Question, write_questions  # noqa: E402
from makd_cli.formats.targets import Targets, write_targets  # noqa: E402

CLASSES = ["blue dot", "green bar", "red square"]  # sorted: ImageFolder orders class folders by name


def _draw(label: int, rng: np.random.Generator, size: int = 16) -> Image.Image:
    img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
    name = CLASSES[label]
    if name == "red square":
        img[3:13, 3:13, 0] = 220
    elif name == "green bar":
        img[:, 6:10, 1] = 220
    else:
        img[6:10, 6:10, 2] = 250
    return Image.fromarray(img)


def make_imagefolder(root: Path, per_class_train: int = 12, per_class_test: int = 4, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class_train), ("test", per_class_test)):
        for c, name in enumerate(CLASSES):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                _draw(c, rng).save(d / f"{i:03d}.png")
    return root


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    return make_imagefolder(tmp_path / "shapes")


@pytest.fixture
def classes_file(tmp_path) -> Path:
    p = tmp_path / "classes.txt"
    p.write_text("\n".join(CLASSES) + "\n")
    return p


def mcq_questions(q: int = 3, m: int = 4) -> list[Question]:
    return [Question("mcq", f"Question {i}: what is the main colour of the <object>?", [f"colour {i}-{j}" for j in range(m)])
            for i in range(q)]


@pytest.fixture
def questions_file(tmp_path) -> Path:
    p = tmp_path / "questions.jsonl"
    write_questions(p, mcq_questions())
    return p


def class_mcq_targets(classes=CLASSES, q: int = 3, m: int = 4, seed: int = 0) -> Targets:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((len(classes), q, m)) * 2
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    return Targets("class_mcq", list(classes), [q_.id for q_ in mcq_questions(q, m)], p, z, teacher="test",
                   option_labels=[str(i + 1) for i in range(m)])


@pytest.fixture
def mcq_targets_file(tmp_path) -> Path:
    p = tmp_path / "targets.h5"
    write_targets(p, class_mcq_targets())
    return p


@pytest.fixture
def stopped_after_epoch(monkeypatch):
    """``with stopped_after_epoch(N): train(...)``: the run stops as a kill would, right after epoch N's
    end-of-epoch report (its checkpoint written); the ``with`` expects that stop, and the report is
    restored afterwards, so the next ``train(..., resume=True)`` runs normally. Every task's progress
    report is a ``TrainProgress`` (classification, lead-ssl, detection)."""
    from makd_cli.train.progress import TrainProgress

    real_end = TrainProgress.end_epoch

    @contextmanager
    def stopped(epoch: int):
        def end_then_stop(self, record):
            real_end(self, record)
            if record["epoch"] == epoch:
                raise KeyboardInterrupt

        monkeypatch.setattr(TrainProgress, "end_epoch", end_then_stop)
        try:
            with pytest.raises(KeyboardInterrupt):
                yield
        finally:
            monkeypatch.setattr(TrainProgress, "end_epoch", real_end)

    return stopped
