"""``makd extract --mllm ... --prompt-layout makd-reference``: MaKD's reference per-image prompt.

The reference (internvl_logits/simple_make_makd_logits_json.py) asks
``model.chat(tokenizer, pixel_values, "<image>\\n" + question)`` with nothing appended and takes
softmax over the first answer position's logits of ``convert_tokens_to_ids("Yes")`` and ``("No")``.
Each test builds that independently (prompt text, token ids, the forward pass) on the tiny models of
test_mllm_teacher.py / test_mllm_backends.py and checks makd sends and reads exactly that.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from makd_cli.data.base import Split, file_loader  # noqa: E402
from makd_cli.errors import MakdError  # noqa: E402
from makd_cli.extract.image_yesno import extract_image_yesno  # noqa: E402
from makd_cli.extract.run import run_extract  # noqa: E402
from makd_cli.formats.questions import Question, write_questions  # noqa: E402
from makd_cli.formats.targets import read_targets  # noqa: E402
from makd_cli.teachers import internvl_remote as ivl  # noqa: E402
from makd_cli.teachers.hf_mllm import HFMultimodalTeacher  # noqa: E402

from conftest import CLASSES, make_imagefolder  # noqa: E402
from test_mllm_backends import gguf_lm, internvl, lcpp, mmproj  # noqa: E402,F401  (fixtures)
from test_mllm_teacher import image, tiny_llava, tokenizer_object  # noqa: E402,F401  (tokenizer_object: a fixture)

QUESTIONS = ["Is there a red bird in the image?", "Does the bird have wings?", "Is it a cat?"]


def p_yes(logits: torch.Tensor, tok) -> float:
    """The reference's target: softmax over the logits of the vocabulary entries "Yes" and "No"."""
    z = torch.stack([logits[tok.convert_tokens_to_ids("Yes")], logits[tok.convert_tokens_to_ids("No")]]).double()
    return torch.softmax(z, 0)[0].item()


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


@pytest.fixture(scope="module")
def llava(tokenizer_object):
    model, proc = tiny_llava(tokenizer_object)
    return HFMultimodalTeacher(model, proc, "tiny-llava"), model, proc


def test_transformers_prompt_ids_and_answer_equal_the_reference(llava):
    teacher, model, proc = llava
    tok = proc.tokenizer
    prep = teacher.prepare_yesno(QUESTIONS, "makd-reference")
    for q, prompt, ids in zip(QUESTIONS, prep.prompts, prep.token_ids):
        # LLaVA's template writes the image as "<image>\n" before the text: "<image>\n" + question, nothing after.
        assert prompt == f"USER: <image>\n{q} ASSISTANT:"
        assert ids == tok(prompt)["input_ids"]
    assert (prep.yes_ids, prep.no_ids) == ([tok.convert_tokens_to_ids("Yes")], [tok.convert_tokens_to_ids("No")])
    paper = teacher.prepare_yesno(QUESTIONS)
    assert paper.prompts[0] == f"USER: <image>\n{QUESTIONS[0]} Answer yes or no. ASSISTANT:" and len(paper.yes_ids) > 1
    img = image(3, (40, 52))
    got = sigmoid(teacher.yesno_logodds(img, QUESTIONS, layout="makd-reference"))
    with torch.inference_mode():
        want = [p_yes(model(**proc(text=[f"USER: <image>\n{q} ASSISTANT:"], images=[img], return_tensors="pt")).logits[0, -1], tok)
                for q in QUESTIONS]
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.abs(got - sigmoid(teacher.yesno_logodds(img, QUESTIONS))).max() > 1e-4  # the layouts differ


def test_a_vocabulary_without_the_answer_entries_is_one_line(llava):
    from makd_cli.teachers.base import YesNoLayout

    teacher = llava[0]
    with pytest.raises(MakdError, match="no single token spells 'Si' or 'No' in its vocabulary") as exc:
        teacher.answer_ids(YesNoLayout("", ("Si",), ("No",), vocab_lookup=True))
    assert "\n" not in str(exc.value)


def test_extract_records_the_layout_and_reads_the_reference_tokens(llava, tmp_path):
    teacher, model, proc = llava
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"{i}.png")
        image(10 + i, (36, 44)).save(paths[-1])
    split = Split([p.name for p in paths], [0, 1], file_loader(paths))
    qs = [Question(kind="yesno", text=q.replace("bird", "<object>")) for q in QUESTIONS]
    t = extract_image_yesno(teacher, split, qs, tmp_path / "t.h5", classes=["a", "b"], object_word="bird",
                            num_workers=0, progress=False, layout="makd-reference")
    back = read_targets(tmp_path / "t.h5")
    tok = proc.tokenizer
    assert back.meta["prompt_layout"] == "makd-reference" and back.meta["answer_suffix"] == ""
    assert back.meta["yes_token_ids"] == [tok.convert_tokens_to_ids("Yes")]
    assert back.meta["no_token_ids"] == [tok.convert_tokens_to_ids("No")]
    with torch.inference_mode():
        want = [[p_yes(model(**proc(text=[f"USER: <image>\n{q} ASSISTANT:"], images=[split.load(i)], return_tensors="pt"))
                       .logits[0, -1], tok) for q in QUESTIONS] for i in range(2)]
    np.testing.assert_allclose(t.probs, want, atol=1e-5)


def test_internvl_chat_prompt_is_model_chat_of_image_newline_question(internvl):
    """InternVL's remote code: the query model.chat builds for "<image>\\n" + question, tokenized
    with the image context tokens, the vision features written at those positions."""
    t = internvl
    tok, model = t.tokenizer, t.chat_model
    prep = t.prepare_yesno(QUESTIONS, "makd-reference")
    img = image(4, (45, 70))
    pv = t.preprocessor(prep)(img)["pixel_values"]
    got = sigmoid(t.yesno_logodds(img, QUESTIONS, layout="makd-reference"))
    assert (prep.yes_ids, prep.no_ids) == ([tok.convert_tokens_to_ids("Yes")], [tok.convert_tokens_to_ids("No")])
    want = []
    for q, prompt in zip(QUESTIONS, prep.prompts):
        query = (f"<|im_start|>system\n{model.system_message}<|im_end|>\n<|im_start|>user\n<image>\n{q}<|im_end|>\n"
                 "<|im_start|>assistant\n")
        assert prompt == query.replace("<image>", "<img><IMG_CONTEXT></img>")
        ids = tok(query.replace("<image>", "<img>" + "<IMG_CONTEXT>" * model.num_image_token * pv.shape[0] + "</img>"))["input_ids"]
        with torch.inference_mode():
            ids_t = torch.tensor([ids])
            emb = model.language_model.get_input_embeddings()(ids_t)
            feats = model.extract_feature(pv)
            emb[0, ids_t[0] == tok.convert_tokens_to_ids("<IMG_CONTEXT>")] = feats.reshape(-1, feats.shape[-1])
            want.append(p_yes(model.language_model(inputs_embeds=emb).logits[0, -1], tok))
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_llamacpp_prompt_and_answer_tokens_equal_the_reference(lcpp, gguf_lm):
    """The GGUF's own chat template (transformers reading the same GGUF) on marker + "\\n" + question,
    and the vocabulary entries "Yes" / "No" as its convert_tokens_to_ids finds them."""
    pytest.importorskip("gguf")
    from transformers import AutoTokenizer

    t = lcpp
    tok = AutoTokenizer.from_pretrained(str(gguf_lm.parent), gguf_file=gguf_lm.name)
    prep = t.prepare_yesno(QUESTIONS, "makd-reference")
    for q, prompt, post in zip(QUESTIONS, prep.prompts, prep.post):
        want = tok.apply_chat_template([{"role": "user", "content": f"{t.marker}\n{q}"}], tokenize=False,
                                       add_generation_prompt=True)
        assert prompt == want
        assert post[-len(tok(want.split(t.marker)[1])["input_ids"]):] == tok(want.split(t.marker)[1])["input_ids"]
    assert (prep.yes_ids, prep.no_ids) == ([tok.convert_tokens_to_ids("Yes")], [tok.convert_tokens_to_ids("No")])
    img = image(5, (45, 70))
    cached = t.yesno_logodds(img, QUESTIONS, layout="makd-reference")
    np.testing.assert_allclose(cached, t.yesno_logodds(img, QUESTIONS, layout="makd-reference", naive=True), atol=1e-3)


@pytest.mark.parametrize("flags, message", [
    (dict(mllm="x", prompt_layout="lavid-reference"), "lavid-reference does not fit --mllm --kind yesno; it takes paper or makd-reference"),
    (dict(mllm="x", kind="zero_shot", prompt_layout="makd-reference"), "does not fit --mllm --kind zero_shot; it takes paper"),
    (dict(llm="x", prompt_layout="makd-reference"), "makd-reference does not fit --llm; it takes paper or class-last or lavid-reference"),
    (dict(teacher="random", prompt_layout="makd-reference"), "does not fit --teacher; it takes paper"),
    (dict(mllm="x", prompt_layout="reference"), "'reference' is unknown; choose paper or class-last or lavid-reference or makd-reference"),
])
def test_a_layout_that_does_not_fit_the_mode_is_one_line(tmp_path, flags, message):
    with pytest.raises(MakdError) as exc:  # refused before any model or dataset is loaded
        run_extract(output=tmp_path / "t.h5", data="nowhere", progress=False, **flags)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_cli_extract_makd_reference(llava, tmp_path, monkeypatch):
    """Through the CLI: the layout reaches the teacher (a tiny LLaVA saved to disk)."""
    from typer.testing import CliRunner

    from makd_cli.cli import app

    _, model, proc = llava
    model_dir = tmp_path / "llava"
    model.save_pretrained(model_dir)
    proc.save_pretrained(model_dir)
    data = make_imagefolder(tmp_path / "data", per_class_train=1, per_class_test=1)
    qfile = tmp_path / "q.jsonl"
    write_questions(qfile, [Question(kind="yesno", text=q) for q in QUESTIONS])
    out = tmp_path / "t.h5"
    r = CliRunner().invoke(app, ["extract", "--mllm", str(model_dir), "--data", str(data), "--questions", str(qfile),
                                 "--prompt-layout", "makd-reference", "--workers", "0", "--device", "cpu", "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    t = read_targets(out)
    assert t.meta["prompt_layout"] == "makd-reference" and t.probs.shape == (len(CLASSES), len(QUESTIONS))
