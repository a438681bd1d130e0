"""--mllm MODEL --backend openai against a real server: llama-cpp-python's own OpenAI-compatible server
(tests/llama_mtmd_server.py) with SmolLM2-135M and the tiny random mmproj of tests/test_mllm_backends.py,
on loopback. The targets through the server must match makd's in-process llama.cpp multimodal teacher
on the same images (same GGUF chat template, same pixels: the image travels as a lossless PNG).

Tolerance: |p(yes) difference| <= 5e-4 and |log-odds difference| <= 5e-3 (measured: 3.6e-5 in p over
6 images x 10 questions, bench/RESULTS.md). Why not exact: (1) the server evaluates each prompt whole
and then its last token again on its own (llama-cpp-python's generate), the in-process teacher the
image prefix once and each question's suffix on top of it: llama.cpp sums in another order for other
batch shapes (the in-process cached and naive paths are allowed 1e-3 in log-odds apart,
tests/test_mllm_backends.py); (2) llama-cpp-python reports log-probabilities before the logit_bias,
so spellings outside the top 20 (" Yes", " yes" at about e^-11 here) are not counted, where the
in-process teacher adds them (about 2e-4 relative); the metadata says so (``label_probs``:
``top-logprobs``). The server's projector runs with flash attention at mtmd's default, as in makd's
process (tests/llama_mtmd_server.py); with it switched off the vision tower moves log-probabilities
by a few 1e-2 with this random projector.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from makd_cli.errors import MakdError
from makd_cli.extract.image_yesno import extract_image_yesno
from makd_cli.formats.questions import Question

sys.path.insert(0, str(Path(__file__).parent))
from llama_mtmd_server import missing_server_module, serve  # noqa: E402

pytestmark = pytest.mark.slow
QUESTIONS = ["Is there a red <object> in the image?", "Does the <object> have wings?", "Is it a cat?"]


@pytest.fixture(scope="module")
def gguf_and_mmproj(tmp_path_factory):
    why = missing_server_module()
    if why:
        pytest.skip(f"llama-cpp-python's server needs {why} (make setup; pip install -e '.[test]')")
    from test_mllm_backends import tiny_mmproj

    from makd_cli.teachers.models import resolve_gguf

    try:
        model = resolve_gguf("smollm2-135m")
    except MakdError as exc:
        pytest.skip(str(exc))
    return model, tiny_mmproj(tmp_path_factory.mktemp("mmproj") / "mmproj-tiny.gguf", 576)


@pytest.fixture(scope="module")
def server(gguf_and_mmproj, tmp_path_factory):
    model, mmproj = gguf_and_mmproj
    with serve(model, mmproj, tmp_path_factory.mktemp("server")) as base:
        yield base


def test_targets_through_the_server_match_the_in_process_teacher(server, gguf_and_mmproj, tmp_path, monkeypatch):
    from makd_cli.data.base import Split, file_loader
    from makd_cli.teachers.backends import load_multimodal
    from test_mllm_backends import CLASSES, image

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    ids, paths, labels = [], [], []
    for i in range(5):
        p = tmp_path / "img" / CLASSES[i % 3] / f"{i:02d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        image(i, (30 + 3 * i, 44)).save(p)
        ids.append(f"{CLASSES[i % 3]}/{i:02d}.png")
        paths.append(p)
        labels.append(i % 3)
    split = Split(ids, labels, file_loader(paths))
    qs = [Question(kind="yesno", text=q) for q in QUESTIONS]
    model, mmproj = gguf_and_mmproj

    http = load_multimodal("smollm2", "openai", api_base=server, concurrency=2)
    got = extract_image_yesno(http, split, qs, tmp_path / "http.h5", classes=CLASSES, object_word="bird", num_workers=0,
                              progress=False)
    local = load_multimodal(str(model), mmproj=mmproj, threads=1)
    try:
        ref = extract_image_yesno(local, split, qs, tmp_path / "ref.h5", classes=CLASSES, object_word="bird", num_workers=0,
                                  progress=False)
    finally:
        local.close()
    assert got.teacher == "openai:smollm2" and got.probs.shape == ref.probs.shape == (5, 3)
    assert got.meta["scoring"] == "chat/completions" and got.meta["score_endpoint"] == "absent"
    assert got.meta["yes_token_ids"] == ref.meta["yes_token_ids"]  # the server's tokenizer gave the same ids
    np.testing.assert_allclose(got.probs, ref.probs, atol=5e-4)
    np.testing.assert_allclose(got.logits, ref.logits, atol=5e-3)
    assert got.meta["label_probs"] == "top-logprobs" and got.meta["label_probs_floored"] == 0  # Yes and No always listed
    assert np.abs(ref.logits).max() > 0.05 and np.ptp(ref.logits) > 0.05  # the answers are not all at 50 %


def test_the_server_sees_the_image(server, monkeypatch):
    from makd_cli.teachers.backends import load_multimodal
    from test_mllm_backends import image

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    t = load_multimodal("smollm2", "openai", api_base=server, concurrency=1)
    a = t.yesno_logodds(image(1, (45, 70)), ["Is it a cat?"])
    b = t.yesno_logodds(image(2, (70, 30)), ["Is it a cat?"])
    assert np.abs(a - b).max() > 1e-3
