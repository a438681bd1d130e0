"""The papers' own variants (issue 15): LaViD's Caltech-101 split and Waterbirds with CUB species
signatures (MaKD's reference per-image prompt: test_makd_reference_prompt.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from makd_cli.data import load_dataset
from makd_cli.data.caltech101 import lavid_partition
from makd_cli.errors import MakdError
from makd_cli.formats.targets import write_targets
from makd_cli.methods.base import Batch, MethodContext, TargetTable, fine_target_rows

from conftest import class_mcq_targets
from native_layouts import CALTECH_PER_CLASS, CALTECH_RAW, make_caltech101, make_waterbirds


# ---- LaViD's Caltech-101 split -----------------------------------------------------------------
def test_lavid_partition_of_8677_images_is_the_references_seeded_draw():
    train, test = lavid_partition(8677)
    assert (len(train), len(test)) == (4310, 4367)
    assert sorted(train + test) == list(range(8677))
    # Independently: random_split(ds, [4310, 0, 4367], generator=Generator().manual_seed(27)) is one
    # randperm of 8677 cut after 4310 entries.
    perm = torch.randperm(8677, generator=torch.Generator().manual_seed(27)).tolist()
    assert train == perm[:4310] and test == perm[4310:]
    assert lavid_partition(8677) == (train, test)  # seeded: the same every call
    other, _ = lavid_partition(8677, seed=28)
    assert set(other) != set(train)


def test_lavid_partition_of_a_partial_copy_keeps_the_proportion():
    train, test = lavid_partition(100)
    assert len(train) == round(100 * 4310 / 8677) == 50 and len(test) == 50
    assert [len(p) for p in lavid_partition(2)] == [1, 1]
    with pytest.raises(MakdError, match="cannot be split"):
        lavid_partition(1)


def test_caltech101_lavid_pools_every_class_and_ignores_the_training_seed(tmp_path):
    path = make_caltech101(tmp_path)
    a = load_dataset(f"caltech101-lavid:{path}", seed=0)
    b = load_dataset(f"caltech101-lavid:{path}", seed=5)
    n = len(CALTECH_RAW) * CALTECH_PER_CLASS
    assert (len(a.train), len(a.test)) == (6, 6)
    assert a.train.ids == b.train.ids and a.test.ids == b.test.ids
    # The pool is ordered by class, then file number; the draw picks positions in it.
    pool = [f"{c}/image_{k + 1:04d}.jpg" for c in CALTECH_RAW for k in range(CALTECH_PER_CLASS)]
    train_pos, _ = lavid_partition(n)
    assert a.train.ids == [pool[i] for i in sorted(train_pos)]
    assert a.classes == load_dataset(f"caltech101:{path}").classes  # the same 101-way head
    assert sorted(a.train.ids + a.test.ids) == sorted(pool)


# ---- Waterbirds with per-image CUB species rows ------------------------------------------------
SPECIES = ["Black footed Albatross", "Laysan Albatross", "Painted Bunting"]  # a CUB class list


def test_waterbirds_images_carry_their_cub_species(tmp_path):
    ds = load_dataset(f"waterbirds:{make_waterbirds(tmp_path)}")
    assert ds.fine_classes == ["Black footed Albatross", "Painted Bunting"]  # CUB numbering: 001 before 016
    for part in (ds.train, ds.test):
        species = [ds.fine_classes[f] for f in part.fine_labels]
        folder = [i.split("/")[0].split(".", 1)[1].replace("_", " ") for i in part.ids]
        assert species == folder
    sub = ds.train.subset([3, 0])
    assert sub.fine_labels.tolist() == [ds.train.fine_labels[3], ds.train.fine_labels[0]]


def test_waterbirds_lavid_rows_are_the_species_signatures(tmp_path):
    ds = load_dataset(f"waterbirds:{make_waterbirds(tmp_path)}")
    cub = class_mcq_targets(SPECIES, q=3, m=4)
    rows = fine_target_rows(cub, ds.classes, ds.fine_classes)
    assert rows.tolist() == [0, 2]  # Black footed Albatross, Painted Bunting in the CUB list
    ctx = MethodContext(num_classes=2, targets=cub, train_ids=ds.train.ids, train_labels=ds.train.labels,
                        target_rows=rows[ds.train.fine_labels])
    table = TargetTable(cub, ctx)
    idx = torch.arange(len(ds.train))
    got = table.lookup(Batch(images=torch.zeros(len(idx)), labels=torch.from_numpy(ds.train.labels), indices=idx))
    species_of = [SPECIES.index(ds.fine_classes[f]) for f in ds.train.fine_labels]
    want = torch.from_numpy(cub.probs[species_of].reshape(len(idx), -1))
    assert torch.equal(got, want)
    assert not torch.equal(got, torch.from_numpy(cub.probs[ds.train.labels].reshape(len(idx), -1)))
    # Targets of the dataset's own two classes stay per label; a species the targets lack is one line.
    assert fine_target_rows(class_mcq_targets(["landbird", "waterbird"]), ds.classes, ds.fine_classes) is None
    with pytest.raises(MakdError, match="lack 1 .*Painted Bunting"):
        fine_target_rows(class_mcq_targets(SPECIES[:2]), ds.classes, ds.fine_classes)


def test_train_lavid_on_waterbirds_with_cub_targets(tmp_path, monkeypatch):
    from makd_cli.methods import lavid as lavid_module
    from makd_cli.train import TrainConfig, train

    data = make_waterbirds(tmp_path / "wb")
    cub = class_mcq_targets(SPECIES, q=2, m=3)
    path = tmp_path / "cub.h5"
    write_targets(path, cub)
    seen = []
    real = lavid_module.lavid_mse

    def spy(pred, target):
        seen.append(target.detach().clone())
        return real(pred, target)

    monkeypatch.setattr(lavid_module, "lavid_mse", spy)
    result = train(TrainConfig(data=f"waterbirds:{data}", out=str(tmp_path / "run"), method="lavid", targets=str(path),
                               student="small_cnn", epochs=1, batch_size=4, lr=0.05, quiet=True, val_fraction=0.25,
                               device="cpu", image_size=16))
    assert result["epochs"] == 1
    rows = torch.cat(seen).reshape(-1, 6)
    species_rows = {tuple(cub.probs[i].reshape(-1).tolist()) for i in (0, 2)}
    assert {tuple(r.tolist()) for r in rows} == species_rows  # 6 outputs per image: a species' Q x M



def test_eval_scores_the_aux_head_against_each_images_species_row(tmp_path, monkeypatch):
    """makd eval's aspect agreement on Waterbirds trained on CUB targets: each test image against its
    species' row (the rows the student was trained to), not the row of its label (0/1: two albatrosses).
    The student's outputs are replaced by each image's species row, so the right reading is exactly 0."""
    from makd_cli.evaluate import report
    from makd_cli.train import TrainConfig, train

    data = make_waterbirds(tmp_path / "wb")
    cub = class_mcq_targets(SPECIES, q=2, m=3)
    write_targets(tmp_path / "cub.h5", cub)
    train(TrainConfig(data=f"waterbirds:{data}", out=str(tmp_path / "run"), method="lavid", targets=str(tmp_path / "cub.h5"),
                      student="small_cnn", epochs=1, batch_size=4, lr=0.05, quiet=True, val_fraction=0.25, device="cpu", image_size=16))
    real_predict = report.predict

    def species_outputs(model, part, *args, **kw):
        pred = real_predict(model, part, *args, **kw)
        species = [SPECIES.index(i.split("/")[0].split(".", 1)[1].replace("_", " ")) for i in np.asarray(part.ids)[pred["index"]]]
        pred["extra"][:, :6] = cub.probs[species].reshape(len(species), -1)  # lavid's slice: Q x M = 6
        return pred

    monkeypatch.setattr(report, "predict", species_outputs)
    ev = report.evaluate_checkpoint(str(tmp_path / "run" / "best.pt"), cache=False)
    assert ev["aspect_agreement"]["mae"] == pytest.approx(0.0, abs=1e-7)
