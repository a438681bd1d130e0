"""--init reference|timm, --test-resize, MaKD's top-1 over all outputs, --class-names lavid, the description importers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from makd_cli.cli import app
from makd_cli.errors import MakdError
from makd_cli.students.build import build_student

runner = CliRunner()


def test_init_reference_keeps_bn_scales_and_default_aux_rows():
    torch.manual_seed(0)
    timm_net = build_student("resnet18", 5, extra_dim=7, image_size=32, init="timm")
    ref = build_student("resnet18", 5, extra_dim=7, image_size=32, init="reference")
    last_bn = lambda net: [b.bn2.weight for layer in (net.backbone.layer1, net.backbone.layer4) for b in layer]  # noqa: E731
    assert all(not w.any() for w in last_bn(timm_net))  # timm zero-inits each residual block's last BN scale
    assert all(bool((w == 1).all()) for w in last_bn(ref))  # the references: nn.BatchNorm2d's 1
    assert not timm_net.fc.weight[5:].any() and not timm_net.fc.bias[5:].any()
    aux = ref.fc.weight[5:]
    bound = 1 / ref.fc.in_features ** 0.5  # nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert aux.abs().max() <= bound and aux.abs().max() > bound / 2 and ref.fc.bias[5:].abs().max() > 0
    with pytest.raises(MakdError, match="--init"):
        build_student("resnet18", 5, init="kaiming")


def test_test_resize():
    from makd_cli.data.transforms import eval_transform

    sizes = lambda tf: [getattr(t, "size", None) for t in tf.transforms[:2]]  # noqa: E731
    assert sizes(eval_transform(224)) == [256, (224, 224)]
    assert sizes(eval_transform(224, resize=224)) == [224, (224, 224)]


def test_top1_all_outputs_differs_from_the_class_head():
    from makd_cli.evaluate.report import top1_all_outputs

    logits = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    extra = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 0.0]])  # the second image's largest output is an aspect
    labels = np.array([0, 1, 0])
    assert top1_all_outputs(logits, extra, labels) == pytest.approx(200 / 3)
    assert (logits.argmax(1) == labels).mean() == 1.0


def test_eval_shows_both_makd_accuracies(tiny_data, tmp_path):
    from conftest import CLASSES

    from makd_cli.formats.targets import Targets, write_targets
    from makd_cli.train import TrainConfig, train

    write_targets(tmp_path / "cls.h5", Targets("class_yesno", CLASSES, ["q1", "q2"], [[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]]))
    train(TrainConfig(data=str(tiny_data), out=str(tmp_path / "m"), method="makd", targets=str(tmp_path / "cls.h5"),
                      student="small_cnn", epochs=2, batch_size=8, lr=0.05, quiet=True, init="reference"))
    best = tmp_path / "m" / "best.pt"
    r = runner.invoke(app, ["eval", str(best), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)["results"][0]
    assert res["top1_all_outputs"] <= res["top1"]
    # an aspect output larger than every class logit: MaKD's scoring counts the image wrong, the class head does not
    ckpt = torch.load(best, weights_only=False)
    ckpt["model"]["fc.bias"][3:] = 1e4
    torch.save(ckpt, best)
    r = runner.invoke(app, ["eval", str(best), "--json"])
    res = json.loads(r.output)["results"][0]
    assert res["top1_all_outputs"] == 0.0 and res["top1"] > 0
    r = runner.invoke(app, ["eval", str(best), "--format", "markdown"])
    head, _, row = [ln for ln in r.output.splitlines() if ln.startswith("|")][:3]
    cells = dict(zip([c.strip() for c in head.split("|")], [c.strip() for c in row.split("|")]))
    assert cells["top-1 (all outputs)"] == "0.00" and float(cells["top-1"]) > 0
    assert runner.invoke(app, ["eval", str(best)]).exit_code == 0  # the terminal table has the column too (width permitting)


def test_class_names_lavid():
    from makd_cli.recipes.class_names import prompt_names

    assert prompt_names("lavid", ["Abyssinian", "Bengal"], "pets") == ["abyssinian", "bengal"]
    assert prompt_names("lavid", ["Faces", "Faces easy", "Leopards"], "caltech101") == ["face", "face", "leopard"]
    assert prompt_names("lavid", ["Abyssinian", "Bengal"]) == ["abyssinian", "bengal"]  # the list found by its names
    assert prompt_names("folder", ["Abyssinian"]) == ["Abyssinian"]
    with pytest.raises(MakdError, match="publishes no class list"):
        prompt_names("makd", ["a"])
    with pytest.raises(MakdError, match="match none"):
        prompt_names("lavid", ["no such class"])


LEAD_CSV = ('class name,description\r\nBlack footed Albatross,"The Black-footed Albatross has a dark brown body, long wings."\r\n'
            'Laysan Albatross,"White body, dark back."\r\n')


def test_lead_pp_descriptions_round_trip(tmp_path):
    src = tmp_path / "output_bird.csv"
    src.write_bytes(LEAD_CSV.encode())
    classes = tmp_path / "classes.txt"
    classes.write_text("Black_footed_Albatross\nLaysan_Albatross\n")
    r = runner.invoke(app, ["import", "descriptions", str(src), "-o", str(tmp_path / "d.jsonl"), "--classes", str(classes)])
    assert r.exit_code == 0, r.output
    from makd_cli.formats.questions import read_questions

    qs = read_questions(tmp_path / "d.jsonl", kind="description")
    assert [q.class_name for q in qs] == ["Black_footed_Albatross", "Laysan_Albatross"]
    assert qs[1].text == "White body, dark back."
    r = runner.invoke(app, ["export", "descriptions", str(tmp_path / "d.jsonl"), "-o", str(tmp_path / "back.csv")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "back.csv").read_bytes() == LEAD_CSV.encode()


@pytest.mark.parametrize("fmt", ["dclip", "labo"])
def test_concept_json_round_trip_and_questions(tmp_path, fmt):
    data = {"blue jay": ["blue feathers", "a crest on the head"], "cardinal": ["red feathers", "a crest on the head"]}
    src = tmp_path / "c.json"
    src.write_text(json.dumps(data))
    r = runner.invoke(app, ["import", "descriptions", str(src), "--from", fmt, "-o", str(tmp_path / "d.jsonl")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["export", "descriptions", str(tmp_path / "d.jsonl"), "--to", fmt, "-o", str(tmp_path / "back.json")])
    assert json.loads((tmp_path / "back.json").read_text()) == data
    r = runner.invoke(app, ["import", "descriptions", str(src), "--from", fmt, "--as", "questions", "-o", str(tmp_path / "q.jsonl")])
    from makd_cli.formats.questions import read_questions

    qs = read_questions(tmp_path / "q.jsonl", kind="yesno")
    assert len(qs) == 3 and all("<object>" in q.text for q in qs)  # the shared concept once


@pytest.mark.parametrize("text, message", [("a,b\r\nx,y\r\n", "first line must be"), ("class name,description\r\nx\r\n", "two fields")])
def test_bad_lead_file_is_one_line(tmp_path, text, message):
    from makd_cli.cli import main

    src = tmp_path / "bad.csv"
    src.write_text(text)
    with pytest.raises(SystemExit) as e:
        main(["import", "descriptions", str(src), "-o", str(tmp_path / "d.jsonl")])
    assert e.value.code == 2
    r = runner.invoke(app, ["import", "descriptions", str(src), "-o", str(tmp_path / "d.jsonl")])
    assert message in str(r.exception)


def test_three_key_updates_are_one_with_momentum_cubed():
    from torch import nn

    from makd_cli.train.moco import momentum_update

    torch.manual_seed(0)
    q, k3, k1 = nn.Linear(4, 3), nn.Linear(4, 3), nn.Linear(4, 3)
    k1.load_state_dict(k3.state_dict())
    for _ in range(3):  # LEAD++: three forward passes per step, each updating the key encoder (--moco-key-updates 3)
        momentum_update(q, k3, 0.9)
    momentum_update(q, k1, 0.9 ** 3)
    assert torch.allclose(k3.weight, k1.weight, atol=1e-6)


def test_side_by_side_has_the_all_outputs_column():
    from makd_cli.evaluate.protocols import side_by_side_markdown
    from makd_cli.evaluate.report import comparison_table

    def result(method, seed, top1, every=None):
        r = {"data": "cars", "student": "resnet18", "method": method, "control": None, "train_per_class": None, "epochs": 240,
             "selected_by": "test-acc", "seed": seed, "settings": {}, "top1": top1, "top5": 99.0, "mean_per_class": top1,
             "aspect_agreement": None}
        return {**r, "top1_all_outputs": every} if every is not None else r

    table = comparison_table([result("ce", 0, 70.0), result("makd", 0, 80.0, 79.0), result("makd", 1, 82.0, 80.0)])
    text = side_by_side_markdown(table, {"makd": "83.38"})
    head, _, ce, makd = [ln for ln in text.splitlines() if ln.startswith("|")]
    assert "top-1 (all outputs), test-acc" in head
    assert ce.split(" | ")[-2] == "-" and "79.50 ± 0.50 (2)" in makd and "81.00 ± 1.00 (2)" in makd


def test_pretrained_torchvision_reads_the_hub_cache_only(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(MakdError, match="not in the torch hub cache"):
        build_student("resnet18", 3, pretrained="torchvision")
    (tmp_path / "checkpoints").mkdir()
    state = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(state, tmp_path / "checkpoints" / "resnet18-5c106cde.pth")  # the old file name (LEAD++, LaViD)
    net = build_student("resnet18", 3, pretrained="torchvision", init="reference")
    assert torch.equal(net.backbone.conv1.weight, state["conv1.weight"])  # timm's ResNet has torchvision's layer names
    assert torch.equal(net.backbone.layer4[1].bn2.weight, state["layer4.1.bn2.weight"])
