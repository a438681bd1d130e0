"""``makd eval`` on detectors: COCO AP through pycocotools (category and image ids, xywh boxes, annotation
ids), the box cache, the seed table and the refusals, on the COCO-format set ``test_detection`` draws."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from makd_cli.data.coco import read_coco
from makd_cli.detection.evaluate import coco_metrics
from makd_cli.errors import MakdError
from test_detection import coco_dir  # noqa: F401  (a fixture: the drawn COCO-format set)


# -- evaluation -----------------------------------------------------------------------------------------
def test_coco_ap_is_100_for_perfect_boxes_and_0_for_none(coco_dir):
    ds = read_coco(coco_dir)
    perfect = [{"image_id": ds.val.image_ids[k], "category_id": ds.category_ids[label - 1],
                "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)], "score": 1.0}
               for k in range(len(ds.val)) for (x1, y1, x2, y2), label in zip(ds.val.boxes[k].tolist(), ds.val.labels[k].tolist())]
    m = coco_metrics(ds.val, perfect)
    assert m["AP"] == m["AP50"] == m["AP75"] == 100.0
    # no detection: 0 where the split has objects, None (shown "-") for a size class without any, as with detections
    doc = json.loads(ds.val.annotation_file.read_text())
    has = {name: any(lo <= a["area"] < hi for a in doc["annotations"] if not a["iscrowd"])
           for name, lo, hi in (("APs", 0, 32**2), ("APm", 32**2, 96**2), ("APl", 96**2, math.inf))}
    assert has["APs"] and not has["APl"]
    assert coco_metrics(ds.val, []) == {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, **{k: 0.0 if v else None for k, v in has.items()}}
    assert {k: m[k] is None for k in has} == {k: not v for k, v in has.items()}
    wrong = [{**d, "category_id": ds.category_ids[(ds.category_ids.index(d["category_id"]) + 1) % 3]} for d in perfect]
    assert coco_metrics(ds.val, wrong)["AP"] == 0.0  # right boxes, wrong categories


def test_coco_ap_of_perfect_boxes_is_100_whatever_the_annotation_ids(coco_dir, tmp_path):
    shutil.copytree(coco_dir, tmp_path / "c")
    file = tmp_path / "c" / "annotations" / "instances_val2017.json"
    doc = json.loads(file.read_text())
    for k, a in enumerate(doc["annotations"]):
        a["id"] = k  # numbered from 0, as Roboflow's exports
    doc["annotations"][-1].pop("id")  # and one without an id
    file.write_text(json.dumps(doc))
    ds = read_coco(tmp_path / "c")
    perfect = [{"image_id": ds.val.image_ids[k], "category_id": ds.category_ids[label - 1],
                "bbox": [x1, y1, x2 - x1, y2 - y1], "score": 1.0}
               for k in range(len(ds.val)) for (x1, y1, x2, y2), label in zip(ds.val.boxes[k].tolist(), ds.val.labels[k].tolist())]
    assert coco_metrics(ds.val, perfect)["AP"] == 100.0


def test_detect_writes_coco_records_xywh_with_the_datasets_category_and_image_ids(coco_dir):
    from makd_cli.detection.evaluate import detect

    ds = read_coco(coco_dir)

    class GroundTruthDetector(torch.nn.Module):  # the detector's output format: xyxy boxes, labels 1..C
        def forward(self, images):
            assert len(images) <= 4
            k0 = self.seen
            self.seen += len(images)
            return [{"boxes": torch.from_numpy(ds.val.boxes[k]), "labels": torch.from_numpy(ds.val.labels[k]),
                     "scores": torch.linspace(0.9, 0.5, len(ds.val.boxes[k]))} for k in range(k0, k0 + len(images))], None

    model = GroundTruthDetector()
    model.seen = 0
    records = detect(model, ds.val, ds.category_ids, "cpu", batch_size=3)
    doc = json.loads(ds.val.annotation_file.read_text())
    expected = sorted((a["image_id"], a["category_id"], tuple(float(v) for v in a["bbox"])) for a in doc["annotations"] if not a["iscrowd"])
    assert sorted((r["image_id"], r["category_id"], tuple(r["bbox"])) for r in records) == expected
    assert {r["category_id"] for r in records} <= {1, 2, 5} and records[0]["score"] == pytest.approx(0.9)
    assert coco_metrics(ds.val, records)["AP"] == 100.0


def test_eval_cache_keeps_the_boxes_of_the_current_checkpoint_only(coco_dir, tmp_path):
    from makd_cli.detection.evaluate import _cached_detections

    ds = read_coco(coco_dir)
    ckpt = tmp_path / "last.pt"
    calls = []
    for content in (b"epoch 1", b"epoch 2", b"epoch 2"):
        ckpt.write_bytes(content)
        got = _cached_detections(str(ckpt), f"coco:{coco_dir}", ds.val, lambda: calls.append(content) or [{"n": len(calls)}])
        assert got == [{"n": len(calls)}]
    assert calls == [b"epoch 1", b"epoch 2"]  # the third read the cache
    assert len(list(tmp_path.glob(".eval-last-val2017-*.json"))) == 1


def test_eval_of_detectors_refuses_targets_and_classifiers_in_one_line(tmp_path):
    from makd_cli.evaluate.run import EvalConfig, run_eval

    torch.save({"task": "detection"}, tmp_path / "det.pt")
    torch.save({"task": None}, tmp_path / "cls.pt")
    for paths, targets, message in (([tmp_path / "det.pt"], str(tmp_path / "t.h5"), "drop --targets"),
                                    ([tmp_path / "det.pt", tmp_path / "cls.pt"], None, "on their own")):
        with pytest.raises(MakdError, match=message) as e:
            run_eval(EvalConfig(checkpoints=paths, targets=targets, device="cpu", progress=False))
        assert "\n" not in str(e.value)


def test_detection_table_averages_seeds_of_one_setting():
    from makd_cli.detection.evaluate import METRICS, detection_table

    def result(method, seed, ap, apl=None):
        return {"data": "coco:x", "student": "resnet18", "method": method, "control": None, "train_per_class": None,
                "epochs": 12, "seed": seed, "settings": {"lr": 0.02}, **{m: ap + i for i, m in enumerate(METRICS)}, "APl": apl}

    aps = [33.0, 33.5, 34.5]
    table = detection_table([result("makd", s, ap, apl=50.0 + s) for s, ap in enumerate(aps)] + [result("ce", 0, 30.0)])
    assert list(table["method"]) == ["makd", "ce"] and list(table["runs"]) == [3, 1]
    row = table.iloc[0]
    assert row["AP"] == pytest.approx(np.mean(aps)) and row["AP50"] == pytest.approx(np.mean(aps) + 1)
    assert row["AP_std"] == pytest.approx(math.sqrt(sum((a - np.mean(aps)) ** 2 for a in aps) / 3))  # population std
    assert row["APl"] == pytest.approx(51.0) and row["APl_std"] == pytest.approx(math.sqrt(2 / 3))
    assert math.isnan(table.iloc[1]["APl"]) and table.iloc[1]["AP_std"] == 0.0  # no large objects: "-"
