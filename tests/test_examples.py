"""The example Makefiles: each dry-runs to the full pipeline of commands."""

import subprocess
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PAPER_DATASETS = ["cub", "cars", "pets", "flowers", "aircraft", "dtd", "caltech101", "waterbirds"]


def dry_run(folder: Path, *args) -> str:
    proc = subprocess.run(["make", "-n", "-C", str(folder), *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("name", PAPER_DATASETS)
def test_paper_makefile_dry_run(name, tmp_path):
    text = dry_run(EXAMPLES / name, f"DATA={tmp_path}", f"WORK={tmp_path / 'work'}")
    spec = f"{name}:{tmp_path}"
    assert f"makd data classes {spec}" in text
    assert "gen-questions" in text and "--kind mcq" in text and "--kind yesno" in text and "--select 50" in text
    # the papers' teachers and the references' prompts by default
    assert "gen-questions --llm Qwen/Qwen2.5-7B-Instruct --backend hf" in text
    assert "extract --llm Qwen/Qwen2.5-7B-Instruct --backend hf  --prompt-layout lavid-reference" in text
    assert f"extract --mllm internvl2-8b --trust-remote-code --prompt-layout makd-reference --data {spec}" in text
    for method in ("ce", "makd", "lavid"):
        for seed in (0, 1, 2):
            assert f"--method {method} --seed {seed}" in text
    assert "--epochs 240" in text and "results.md" in text and "--side-by-side" in text and "report.html" in text
    # both checkpoint protocols, each run in its own folder; the papers' trains on every training image
    assert f"runs/resnet18/lavid/val/seed0/" in text
    if name != "waterbirds":  # LaViD's reference chooses on Waterbirds' own validation split, not on test
        paper = "test-acc" if name == "dtd" else "test-loss"
        assert f"runs/resnet18/lavid/{paper}/seed2/ --select-by {paper} --val-fraction 0" in text
    for control in ("--control random-codes", "--control shuffled", "--control gaussian"):
        assert control in text


def test_paper_makefile_needs_data():
    proc = subprocess.run(["make", "-n", "-C", str(EXAMPLES / "cub")], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "set DATA=" in proc.stderr


def test_demo_makefile_dry_run(tmp_path):
    text = dry_run(EXAMPLES / "fashion-mnist", f"WORK={tmp_path}")
    for fragment in ("gen-questions --llm smollm2-135m", "extract --llm smollm2-135m", "--method ce", "--method lavid",
                     "--control random-codes", "--control shuffled", "inspect", "eval", "report.html"):
        assert fragment in text
    for run in ("ce", "lavid", "random-codes", "shuffled"):  # three seeds per row (issue 13)
        for seed in (0, 1, 2):
            assert f"--seed {seed}" in text and f"runs/{run}/seed{seed}" in text
    # unseen classes (issue 26): the attribute-table oracle, its two controls and the embedded model's targets, held out
    for run in ("unseen-oracle", "unseen-oracle-random-codes", "unseen-oracle-shuffled", "unseen-lavid"):
        assert f"runs/{run}/seed2" in text
    assert "--hold-out-classes 3" in text and "--targets attributes.h5" in text and "--unseen" in text


def test_paper_makefile_paper_numbers_on_the_rows(tmp_path):
    text = dry_run(EXAMPLES / "cub", f"DATA={tmp_path}", f"WORK={tmp_path / 'work'}")
    assert '--paper "lavid=70.15"' in text and '--paper "ce=63.07 (LaViD) / 53.83 (MaKD)"' in text


def test_paper_makefile_backends_are_passable(tmp_path):
    text = dry_run(EXAMPLES / "cub", f"DATA={tmp_path}", f"WORK={tmp_path / 'work'}", "GEN_LLM=gpt-4o", "GEN_BACKEND=openai",
                   "GEN_API_BASE=http://api", "TEACHER_LLM=/m/qwen7b.gguf", "TEACHER_BACKEND=llama.cpp", "PROTOCOLS=val")
    assert "gen-questions --llm gpt-4o --backend openai --api-base http://api --classes" in text
    assert "extract --llm /m/qwen7b.gguf --backend llama.cpp  --prompt-layout lavid-reference" in text
    assert "--select-by" not in text  # PROTOCOLS=val: the honest protocol alone


def fake_lavid_repo(root, name="cub200", teacher="qwen2.5-7b_chat_50-5"):
    (root / "questions" / name / "logits").mkdir(parents=True)
    (root / "questions" / name / "chat_50-5.txt").write_text("What colour is the class?\n1. red\n2. blue\n")
    (root / "questions" / name / "logits" / f"{teacher}.json").write_text("{}")
    return root


def test_paper_makefile_published_imports_questions_and_targets(tmp_path):
    repo = fake_lavid_repo(tmp_path / "lavid")
    text = dry_run(EXAMPLES / "cub", f"DATA={tmp_path}", f"WORK={tmp_path / 'work'}", f"PUBLISHED={repo}")
    work, text = tmp_path / "work", " ".join(text.replace("\\\n", " ").split())  # recipe lines joined
    assert f"makd import questions {repo}/questions/cub200/chat_50-5.txt --from lavid -o {work}/mcq.jsonl" in text
    assert (f"makd import targets {repo}/questions/cub200/logits/qwen2.5-7b_chat_50-5.json --from lavid --classes "
            f"{work}/lavid_classes.txt --questions {work}/mcq.jsonl --class-map {work}/class_map.json -o {work}/lavid_targets.h5"
            ) in text
    assert "--kind mcq" not in text and "extract --llm" not in text  # nothing generated or extracted for LaViD
    assert "--kind yesno" in text and "extract --mllm internvl2-8b" in text  # MaKD publishes no questions: generated
    assert "LaViD's published qwen2.5-7b_chat_50-5" in text


def test_paper_makefile_published_caltech_and_missing_files(tmp_path):
    repo = fake_lavid_repo(tmp_path / "lavid", "caltech101", "qwen2.5-72B_chat_50-5")
    text = dry_run(EXAMPLES / "caltech101", f"DATA={tmp_path}", f"WORK={tmp_path / 'work'}", f"PUBLISHED={repo}")
    assert "questions/caltech101/logits/qwen2.5-72B_chat_50-5.json" in text  # the one Caltech teacher LaViD publishes
    assert 'echo \'{"Faces": "face", "Faces easy": "face"' in text
    proc = subprocess.run(["make", "-n", "-C", str(EXAMPLES / "dtd"), f"DATA={tmp_path}", f"WORK={tmp_path / 'w2'}", f"PUBLISHED={repo}"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "questions/dtd/chat_50-5.txt does not exist" in proc.stderr


def test_paper_makefile_published_waterbirds_needs_cub_species(tmp_path):
    repo = fake_lavid_repo(tmp_path / "lavid", "waterbird")
    proc = subprocess.run(["make", "-n", "-C", str(EXAMPLES / "waterbirds"), f"DATA={tmp_path}", f"WORK={tmp_path / 'w'}",
                           f"PUBLISHED={repo}"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "set CUB_DATA=" in proc.stderr
    text = dry_run(EXAMPLES / "waterbirds", f"DATA={tmp_path}", f"WORK={tmp_path / 'w'}", f"PUBLISHED={repo}", "CUB_DATA=/data/cub")
    assert f"makd data classes cub:/data/cub -o {tmp_path / 'w'}/lavid_classes.txt" in text


def _help_flags(command: tuple[str, ...]) -> set[str]:
    import re

    from typer.testing import CliRunner

    from makd_cli.cli import app

    res = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*|-[a-zA-Z])\b", res.output))


def _makd_commands(text: str):
    """Every `makd SUB ...` command of a dry run, as (subcommand words, arguments)."""
    import re
    import shlex

    for line in text.replace("\\\n", " ").splitlines():
        for seg in re.split(r"[;{}|&]+", line):
            m = re.search(r"(?:/makd|makd_cli\.cli)\s+(.*)", seg)
            if m and not seg.lstrip().startswith("echo"):
                words = shlex.split(m.group(1))
                n = 2 if words[0] in ("import", "export", "data") else 1
                yield tuple(words[:n]), words[n:]


def test_every_flag_of_every_example_exists(tmp_path):
    """The examples' commands use only flags the CLI has today (flags were renamed: --warmup is --dkd-warmup)."""
    repo = tmp_path / "lavid"
    for name in ("cub200", "stanfordcars", "oxfordpets", "flowers", "fgvc_aircraft", "caltech101", "waterbird"):
        fake_lavid_repo(repo if name == "cub200" else tmp_path / f"x{name}", name)
        if name != "cub200":
            (repo / "questions" / name).parent.mkdir(exist_ok=True)
            (tmp_path / f"x{name}" / "questions" / name).rename(repo / "questions" / name)
    (repo / "questions" / "caltech101" / "logits" / "qwen2.5-7b_chat_50-5.json").rename(
        repo / "questions" / "caltech101" / "logits" / "qwen2.5-72B_chat_50-5.json")
    runs = [(name, []) for name in PAPER_DATASETS + ["coco", "lead"]] + [("lead", ["NPROC=2"]), ("fashion-mnist", [])]
    runs += [(name, [f"PUBLISHED={repo}", "CUB_DATA=/c", "MAKD_QUESTIONS=/q.txt"]) for name in PAPER_DATASETS if name != "dtd"]
    known, checked = {}, 0
    for k, (name, extra) in enumerate(runs):
        text = dry_run(EXAMPLES / name, f"DATA={tmp_path}", f"WORK={tmp_path / f'w{k}'}", "SEEDS=0", *extra)  # a seed is a seed
        for sub, args in _makd_commands(text):
            if sub not in known:
                known[sub] = _help_flags(sub)
            flags = known[sub]
            unknown = [a.split("=")[0] for a in args if a.startswith("-") and a.split("=")[0] not in flags]
            assert not unknown, f"examples/{name} {' '.join(extra)}: makd {' '.join(sub)} has no {unknown}"
            checked += 1
    assert {("train",), ("extract",), ("eval",), ("import", "questions"), ("import", "targets")} <= set(known)
    assert checked > 50


@pytest.mark.parametrize("name, lavid_name, teacher, folders, lavid_names, rows", [
    # the published Qwen2.5-72B file folds Faces/Faces_easy into "face" and drops four plurals
    ("caltech101", "caltech101", "qwen2.5-72B_chat_50-5", ["Faces", "Faces_easy", "Leopards", "Motorbikes", "accordion", "airplanes"],
     ["face", "leopard", "motorbike", "accordion", "airplane"], ["face", "face", "leopard", "motorbike", "accordion", "airplane"]),
    # torchvision's (makd's) "pink-yellow dahlia?" and "lotus" are LaViD's "pink-yellow dahlia" and "lotus lotus"
    ("flowers", "flowers", "qwen2.5-7b_chat_50-5", ["pink-yellow dahlia?", "lotus", "sweet pea"],
     ["pink-yellow dahlia", "lotus lotus", "sweet pea"], ["pink-yellow dahlia", "lotus lotus", "sweet pea"]),
])
def test_class_map_imports_lavids_names(tmp_path, name, lavid_name, teacher, folders, lavid_names, rows):
    """The example's CLASS_MAP_JSON, as its dry run writes it, imports a file with LaViD's names where
    they differ from makd's (checked on the published files): its keys are makd's class names
    ("Faces easy", not the folder's "Faces_easy")."""
    import json
    import re

    from makd_cli.formats.targets import read_targets
    from makd_cli.interop.run import ImportQuestionsConfig, ImportTargetsConfig, import_questions, import_targets

    repo = fake_lavid_repo(tmp_path / "lavid", lavid_name, teacher)
    text = dry_run(EXAMPLES / name, f"DATA={tmp_path}", f"WORK={tmp_path / 'w'}", f"PUBLISHED={repo}")
    (tmp_path / "map.json").write_text(re.search(r"echo '(\{.*?\})' > ", text).group(1))
    (tmp_path / "classes.txt").write_text("".join(f.replace("_", " ") + "\n" for f in folders))  # as makd names them
    (tmp_path / lavid_name).mkdir()
    (tmp_path / lavid_name / "q.txt").write_text("What shape is the class?\n1. round\n2. square\n")
    probs = {n: [[0.5 + k / 16, 0.5 - k / 16]] for k, n in enumerate(lavid_names)}  # exact in float32
    (tmp_path / "t.json").write_text(json.dumps(probs))
    import_questions(ImportQuestionsConfig(tmp_path / lavid_name / "q.txt", tmp_path / "q.jsonl"))
    import_targets(ImportTargetsConfig(tmp_path / "t.json", tmp_path / "t.h5", tmp_path / "classes.txt", tmp_path / "q.jsonl",
                                       class_map=tmp_path / "map.json"))
    got = read_targets(tmp_path / "t.h5")
    assert got.probs.reshape(len(rows), 2).tolist() == [probs[r][0] for r in rows]


def test_published_import_reruns_when_the_class_map_changes(tmp_path):
    """paper.mk rewrites class_map.json only when CLASS_MAP_JSON changes: a corrected map re-runs the
    import (a stale map from a failed run no longer blocks it), an unchanged one does not."""
    repo = fake_lavid_repo(tmp_path / "lavid")
    fake = tmp_path / "fakemakd"  # records its arguments and writes its output (the last argument)
    fake.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/log\nfor a; do :; done\ntouch "$a"\n')
    fake.chmod(0o755)
    work = tmp_path / "w"
    args = ["make", "-s", "-C", str(EXAMPLES / "cub"), str(work / "lavid_targets.h5"), f"MAKD={fake}", f"WORK={work}",
            f"DATA={tmp_path}", f"PUBLISHED={repo}"]

    def imports(*extra) -> int:
        subprocess.run([*args, *extra], check=True, capture_output=True, timeout=60)
        return sum(line.startswith("import targets") for line in (tmp_path / "log").read_text().splitlines())

    assert imports() == 1
    assert imports() == 1  # nothing changed: nothing re-run
    assert imports('CLASS_MAP_JSON={"a": "b"}') == 2
    assert (work / "class_map.json").read_text() == '{"a": "b"}\n'
