"""Recipes (--recipe, --config, --dry-run): each paper's recipe against a table written from its reference code."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from makd_cli.cli import app

runner = CliRunner()
ROW = re.compile(r"^\s+(--?[\w-]+)\s+(.+?)\s+\[([^\]]+)\]")


def dry_run(*args: str) -> dict:
    r = runner.invoke(app, [*args, "--dry-run"])
    assert r.exit_code == 0, r.output
    rows = {}
    for line in r.output.splitlines()[1:]:
        m = ROW.match(line)
        assert m, line
        rows[m.group(1)] = (json.loads(m.group(2)), m.group(3))
    return rows


def recipe_values(rows: dict, source_prefix: str = "recipe") -> dict:
    return {flag: value for flag, (value, source) in rows.items() if source.startswith(source_prefix)}


# MaKD: github taegyeong-lee/MaKD-Multi-aspect-knowledge-distillation-with-Large-Language-Model
MAKD_TRAIN = {
    "--method": "makd",            # configs/fine_grained/makd.yaml:15
    "--student": "resnet18",       # the paper's Table 1 (the yaml's :17 names MobileNetV1)
    "--epochs": 240,               # configs/fine_grained/makd.yaml:20
    "--batch-size": 16,            # configs/fine_grained/makd.yaml:19
    "--lr": 0.01,                  # configs/fine_grained/makd.yaml:21
    "--momentum": 0.9,             # configs/fine_grained/makd.yaml:22
    "--weight-decay": 1e-4,        # mdistiller/engine/cfg.py:51
    "--aux-weight": 4.0,           # configs/fine_grained/makd.yaml:28
    "--aspect-loss": "bce",        # mdistiller/distillers/MaKD.py:7
    "--select-by": "test-acc",     # mdistiller/engine/trainer.py:267
    "--val-fraction": 0.0,         # tools/our_train.py:69
    "--image-size": 224,           # tools/our_train.py:65
    "--test-resize": 224,          # tools/our_train.py:67
    "--init": "reference",         # mdistiller/models/imagenet/resnet.py:116-122
}
# LaViD: github lliangthomas/lavid
LAVID_TRAIN = {
    "--method": "lavid",           # README.md:36
    "--student": "resnet18",       # README.md:34
    "--epochs": 240,               # utils.py:123
    "--batch-size": 16,            # utils.py:122
    "--lr": 0.01,                  # utils.py:121
    "--momentum": 0.9,             # lavid/models/distill_models.py:135
    "--weight-decay": 5e-4,        # utils.py:125
    "--select-by": "test-loss",    # train.py:162-163
    "--select-every": 5,           # train.py:175
    "--val-fraction": 0.0,         # utils.py:70
    "--image-size": 224,           # lavid/data/base_dataset.py:62
    "--test-resize": 256,          # lavid/data/base_dataset.py:72
    "--init": "reference",         # lavid/models/resnet.py:136
}
LAVID_LAMBDA = {"cub": 40.0, "caltech101": 20.0, "flowers": 50.0, "aircraft": 50.0, "pets": 50.0, "cars": 40.0}  # lavid.txt Table 1
# LEAD++: github HuiGuanLab/LEAD-pp
LEAD_TRAIN = {
    "--method": "lead-ssl",        # main.py
    "--student": "resnet50",       # main.py:127
    "--pretrained": "torchvision",  # main.py:56 (resnet50-19c8e357.pth)
    "--epochs": 100,               # run_train.sh:19
    "--batch-size": 64,            # run_train.sh:18
    "--lr": 0.02,                  # run_train.sh:17
    "--weight-decay": 5e-4,        # run_train.sh:20
    "--moco-temperature": 0.27,    # run_train.sh:21
    "--moco-momentum": 0.999,      # run_train.sh:22
    "--moco-key-updates": 3,       # main.py:189-191, models.py:191
    "--moco-queue": 65536,         # main.py:46
    "--moco-dim": 512,             # main.py:45
    "--lead-kl-weight": 20.0,      # run_train.sh:24
    "--lead-teacher": "online",    # main.py
    "--init": "reference",         # resnet.py:109
}


def test_makd_recipe_is_the_reference_code(tmp_path):
    rows = dry_run("train", "--data", "fashion-mnist", "-o", str(tmp_path / "r"), "--recipe", "makd")
    assert recipe_values(rows) == MAKD_TRAIN
    assert rows["--data"] == ("fashion-mnist", "flag") and rows["--seed"] == (0, "default")


@pytest.mark.parametrize("dataset", sorted(LAVID_LAMBDA))
def test_lavid_recipe_per_dataset(tmp_path, dataset):
    rows = dry_run("train", "--data", f"{dataset}:{tmp_path}", "-o", str(tmp_path / "r"), "--recipe", "lavid")
    assert recipe_values(rows) == {**LAVID_TRAIN, "--aux-weight": LAVID_LAMBDA[dataset]}
    assert rows["--aux-weight"][1] == f"recipe lavid-{dataset}"


def test_lavid_waterbirds_chooses_on_validation(tmp_path):
    rows = dry_run("train", "--data", f"waterbirds:{tmp_path}", "-o", str(tmp_path / "r"), "--recipe", "lavid")
    # utils.py:76-82: Waterbirds' val loader is its own val split; train.py:175 checks every 5 epochs
    assert recipe_values(rows) == {**LAVID_TRAIN, "--aux-weight": 40.0, "--select-by": "val", "--val-fraction": 0.1}


def test_lead_recipe_is_the_public_code(tmp_path):
    rows = dry_run("train", "--data", "fashion-mnist", "-o", str(tmp_path / "r"), "--recipe", "lead")
    assert recipe_values(rows) == LEAD_TRAIN


def test_recipes_for_extract_and_gen_questions(tmp_path):
    rows = dry_run("extract", "-o", str(tmp_path / "t.h5"), "--recipe", "lavid")
    assert recipe_values(rows) == {"--llm": "Qwen/Qwen2.5-7B-Instruct", "--backend": "hf", "--prompt-layout": "lavid-reference",
                                   "--labels": "digits", "--temperature": 1.0, "--class-names": "lavid"}
    rows = dry_run("extract", "-o", str(tmp_path / "t.h5"), "--recipe", "makd")
    assert recipe_values(rows) == {"--mllm": "internvl2.5-8b", "--kind": "yesno", "--prompt-layout": "makd-reference",
                                   "--trust-remote-code": True}
    rows = dry_run("gen-questions", "--classes", "c.txt", "-o", "q.jsonl", "--recipe", "makd")
    assert recipe_values(rows) == {"--kind": "yesno", "-n": 100, "--select": 50}  # makd.txt:153; README.md:48, makd.yaml:26
    rows = dry_run("gen-questions", "--classes", "c.txt", "-o", "q.jsonl", "--recipe", "lavid")
    assert recipe_values(rows) == {"--kind": "mcq", "-n": 50, "--options": 5, "--class-names": "lavid"}


def test_dry_run_lists_every_setting_with_its_source(tmp_path):
    rows = dry_run("train", "--data", "fashion-mnist", "-o", str(tmp_path / "r"), "--recipe", "makd", "--epochs", "3")
    assert rows["--epochs"] == (3, "flag")  # the command line wins over the recipe
    assert {s for _, s in rows.values()} == {"flag", "recipe makd", "default"}
    assert "--dkd-beta" not in rows and "--aspect-loss" in rows  # the chosen method's options only
    assert not (tmp_path / "r").exists()  # nothing ran
    r = runner.invoke(app, ["extract", "-o", "t.h5", "--recipe", "lavid", "--dry-run"])
    line = next(ln for ln in r.output.splitlines() if "--class-names" in ln)
    assert "lavid/extract/llm_logits.py:41" in line  # each recipe value shows its reference (the extract table's own)


def test_config_file_wins_over_recipe_and_loses_to_flags(tmp_path):
    conf = tmp_path / "my.toml"
    conf.write_text('weight-decay = 5e-4  # the paper\n[train]\nkd-temperature = 4\nselect-by = "val"\n')
    rows = dry_run("train", "--data", "fashion-mnist", "-o", str(tmp_path / "r"), "--recipe", "makd", "--config", str(conf),
                   "--method", "makd+kd", "--select-by=test-loss")
    assert rows["--weight-decay"] == (5e-4, f"config {conf}")
    assert rows["--kd-temperature"] == (4.0, f"config {conf}")
    assert rows["--select-by"] == ("test-loss", "flag")
    assert rows["--aux-weight"] == (4.0, "recipe makd")


@pytest.mark.parametrize("text, message", [
    ("no-such-flag = 1\n", "has no flag --no-such-flag"),
    ("weight-decay = \n", "is not valid TOML"),
    ("[evaluate]\nx = 1\n", "is not a command"),
])
def test_bad_config_is_one_line(tmp_path, text, message):
    from makd_cli.cli import main

    conf = tmp_path / "bad.toml"
    conf.write_text(text)
    r = runner.invoke(app, ["train", "--data", "fashion-mnist", "-o", str(tmp_path / "r"), "--config", str(conf), "--dry-run"])
    assert r.exit_code != 0 and message in str(r.exception or r.output)
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", "fashion-mnist", "-o", str(tmp_path / "r"), "--config", str(conf), "--dry-run"])
    assert e.value.code == 2


def test_unknown_recipe_and_help(tmp_path):
    r = runner.invoke(app, ["train", "--data", "x", "-o", "y", "--recipe", "nope", "--dry-run"])
    assert r.exit_code != 0 and "recipes: lavid" in str(r.exception)
    r = runner.invoke(app, ["train", "--help"])
    assert "--recipe" in r.output and "--dry-run" in r.output


def test_train_records_settings_and_sources(tiny_data, tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text("[train]\nepochs = 1\nstudent = \"small_cnn\"\nbatch-size = 8\n")
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", "--data", str(tiny_data), "-o", str(out), "--config", str(conf), "--quiet", "--init", "reference"])
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "settings.json").read_text())
    assert rec["format_version"] == 1 and rec["command"] == "train" and rec["config"] == str(conf)
    assert rec["settings"]["--epochs"] == {"value": 1, "source": f"config {conf}"}
    assert rec["settings"]["--init"] == {"value": "reference", "source": "flag"}
    assert rec["settings"]["--lr"]["source"] == "default"
    from makd_cli.formats.checkpoint import load_checkpoint

    assert load_checkpoint(out / "best.pt")["config"]["init"] == "reference"
