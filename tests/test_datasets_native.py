"""The fine-grained dataset readers on miniature copies of their native layouts."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from makd_cli.data import DATASETS, load_dataset
from makd_cli.data.cub import clean_class_name
from makd_cli.errors import MakdError

from native_layouts import (
    BUILDERS,
    EXPECTED,
    MINI_PER_CLASS,
    make_caltech101,
    make_cars,
    make_cub,
    make_dtd,
    make_mini_imagenet,
    make_pets,
    make_waterbirds,
)

NAMES = sorted(BUILDERS)


def _load(name: str, path: Path, **kw):
    if kw:
        return DATASETS.get(name)(path, **kw)
    return load_dataset(f"{name}:{path}")


@pytest.mark.parametrize("name", NAMES)
def test_reader_finds_classes_splits_and_rgb_images(tmp_path, name):
    path = BUILDERS[name](tmp_path)
    ds = _load(name, path)
    classes, n_train, n_test = EXPECTED[name]
    assert ds.name == name
    assert ds.classes == classes
    assert (len(ds.train), len(ds.test)) == (n_train, n_test)
    for split in (ds.train, ds.test):
        assert set(split.labels.tolist()) == set(range(len(classes)))  # every class in both splits
        assert len(set(split.ids)) == len(split.ids) and all(isinstance(i, str) for i in split.ids)
        assert not any(i.startswith("/") or "\\" in i for i in split.ids)
        for i in (0, len(split) - 1):
            im = split.load(i)
            assert im.mode == "RGB" and im.size == (8, 8)
    assert not set(ds.train.ids) & set(ds.test.ids)
    again = _load(name, path)  # ids and labels are stable between reads
    assert again.train.ids == ds.train.ids and again.test.ids == ds.test.ids
    assert again.train.labels.tolist() == ds.train.labels.tolist()


@pytest.mark.parametrize("name", NAMES)
def test_missing_or_empty_folder_is_one_line_makd_error(tmp_path, name):
    with pytest.raises(MakdError, match="does not exist") as e:
        _load(name, tmp_path / "nowhere")
    assert "\n" not in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MakdError, match="expected|has no|lacks") as e:
        _load(name, tmp_path / "empty")
    assert "\n" not in str(e.value)
    with pytest.raises(MakdError, match="needs a path"):
        load_dataset(name)


def test_cub_ids_labels_and_class_names(tmp_path):
    ds = _load("cub", make_cub(tmp_path))
    assert clean_class_name("001.Black_footed_Albatross") == "Black footed Albatross"
    assert ds.train.ids[:2] == [
        "images/001.Black_footed_Albatross/Black_Footed_Albatross_0001_101.jpg",
        "images/001.Black_footed_Albatross/Black_Footed_Albatross_0002_102.jpg",
    ]
    assert ds.train.labels.tolist() == [0, 0, 1, 1, 2, 2] and ds.test.labels.tolist() == [0, 1, 2]
    assert ds.test.ids[2] == "images/003.Sooty_Albatross/Sooty_Albatross_0003_109.jpg"
    assert ds.group_names == [] and ds.train.groups is None
    assert _load("cub", tmp_path).train.ids == ds.train.ids  # the folder holding CUB_200_2011/ works too


def test_cub_missing_image_or_list(tmp_path):
    folder = make_cub(tmp_path)
    (folder / "images" / "001.Black_footed_Albatross" / "Black_Footed_Albatross_0001_101.jpg").unlink()
    with pytest.raises(MakdError, match="is missing"):
        _load("cub", folder)
    (folder / "train_test_split.txt").unlink()
    with pytest.raises(MakdError, match="train_test_split.txt"):
        _load("cub", folder)


def test_cars_reads_mat_files_from_any_folder_name(tmp_path):
    ds = _load("cars", make_cars(tmp_path / "a"))
    assert ds.train.ids[:3] == ["cars_train/00001.jpg", "cars_train/00002.jpg", "cars_train/00003.jpg"]
    assert ds.train.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert ds.test.ids == ["cars_test/00001.jpg", "cars_test/00002.jpg", "cars_test/00003.jpg"]
    assert ds.test.labels.tolist() == [0, 1, 2]
    assert _load("cars", tmp_path / "a" / "stanford_cars").test.ids == ds.test.ids
    other = make_cars(tmp_path / "b", folder_name="my cars")  # not torchvision's folder name
    assert _load("cars", other).train.ids == ds.train.ids
    (other / "cars_test_annos_withlabels.mat").unlink()
    with pytest.raises(MakdError, match="cars_test_annos_withlabels.mat"):
        _load("cars", other)


def test_pets_names_labels_and_grayscale_image(tmp_path):
    root = make_pets(tmp_path)
    ds = _load("pets", root / "oxford-iiit-pet")
    assert ds.classes == ["Abyssinian", "American Bulldog", "Great Pyrenees"]
    assert ds.train.ids[0] == "images/Abyssinian_1.jpg" and ds.test.ids == [
        "images/Abyssinian_3.jpg", "images/american_bulldog_3.jpg", "images/great_pyrenees_3.jpg"]
    assert ds.train.load(0).mode == "RGB"  # stored as grayscale


def test_flowers_train_is_trnid_and_valid(tmp_path):
    ds = _load("flowers", BUILDERS["flowers"](tmp_path) / "flowers-102")
    assert ds.train.ids == [f"jpg/image_{n:05d}.jpg" for n in (1, 4, 7, 2, 5, 8)]
    assert ds.train.labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert ds.test.ids == [f"jpg/image_{n:05d}.jpg" for n in (3, 6, 9)]


def test_aircraft_variant_names_with_spaces_and_slashes(tmp_path):
    ds = _load("aircraft", BUILDERS["aircraft"](tmp_path))
    assert ds.classes == ["707-320", "Cessna 172", "F-16A/B"]
    assert ds.train.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert ds.test.ids == ["data/images/1000003.jpg", "data/images/1000006.jpg", "data/images/1000009.jpg"]


def test_dtd_train_is_train_plus_val_of_partition_1_in_either_layout(tmp_path):
    tv = _load("dtd", make_dtd(tmp_path / "tv"))
    plain = _load("dtd", make_dtd(tmp_path / "plain", torchvision_layout=False))
    assert tv.train.ids == plain.train.ids and tv.test.ids == plain.test.ids
    assert tv.train.ids[:3] == ["images/banded/banded_0001.jpg", "images/bubbly/bubbly_0001.jpg",
                                "images/zigzagged/zigzagged_0001.jpg"]
    assert tv.train.ids[3] == "images/banded/banded_0002.jpg"  # val1 follows train1
    assert tv.test.ids == [f"images/{t}/{t}_0003.jpg" for t in ("banded", "bubbly", "zigzagged")]
    assert tv.test.labels.tolist() == [0, 1, 2]


def test_caltech101_seeded_stratified_split_without_background(tmp_path):
    folder = make_caltech101(tmp_path)
    ds = _load("caltech101", folder, seed=0)
    assert "BACKGROUND Google" not in ds.classes and not any("BACKGROUND" in i for i in ds.train.ids + ds.test.ids)
    assert np.bincount(ds.test.labels).tolist() == [1, 1, 1]  # fewer than 31 images: one stays test
    small = _load("caltech101", folder, seed=0, train_per_class=2)
    assert np.bincount(small.train.labels).tolist() == [2, 2, 2] and len(small.test) == 6
    assert _load("caltech101", folder, seed=0, train_per_class=2).train.ids == small.train.ids
    seeds = {tuple(_load("caltech101", folder, seed=s, train_per_class=2).train.ids) for s in range(6)}
    assert len(seeds) > 1
    assert _load("caltech101", folder / "101_ObjectCategories").test.ids == ds.test.ids
    # A copy without the background folder, with a stray file, still reads.
    shutil.rmtree(folder / "101_ObjectCategories" / "BACKGROUND_Google")
    (folder / "101_ObjectCategories" / ".DS_Store").write_text("x")
    assert _load("caltech101", folder).test.ids == ds.test.ids
    (folder / "101_ObjectCategories" / "accordion" / "image_0002.jpg").unlink()
    with pytest.raises(MakdError, match="numbered"):
        _load("caltech101", folder)


def test_waterbirds_groups_and_splits(tmp_path):
    folder = make_waterbirds(tmp_path)
    ds = _load("waterbirds", tmp_path)  # the folder holding waterbird_complete95_forest2water2/
    assert ds.group_names == ["landbird on land", "landbird on water", "waterbird on land", "waterbird on water"]
    assert ds.train.labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert ds.train.groups.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert ds.test.groups.tolist() == [0, 1, 2, 3] and ds.test.labels.tolist() == [0, 0, 1, 1]
    with open(folder / "metadata.csv") as fh:
        val = {r["img_filename"] for r in csv.DictReader(fh) if r["split"] == "1"}
    assert len(val) == 4 and not val & set(ds.train.ids + ds.test.ids)
    sub = ds.test.subset([3, 0])
    assert sub.groups.tolist() == [3, 0]
    text = (folder / "metadata.csv").read_text().replace("place,", "where,", 1)
    (folder / "metadata.csv").write_text(text)
    with pytest.raises(MakdError, match="place"):
        _load("waterbirds", folder)


def test_mini_imagenet_pools_csvs_and_splits_per_class(tmp_path):
    folder = make_mini_imagenet(tmp_path, with_words=True)
    ds = _load("mini-imagenet", folder, seed=3)
    assert ds.classes == ["house finch", "robin", "triceratops"]  # first name of words.txt
    assert np.bincount(ds.test.labels).tolist() == [1, 1, 1]
    assert np.bincount(ds.train.labels).tolist() == [MINI_PER_CLASS - 1] * 3
    assert _load("mini-imagenet", folder, seed=3).test.ids == ds.test.ids
    assert all(i.startswith("images/n0") for i in ds.train.ids)
    half = _load("mini-imagenet", folder, seed=3, test_fraction=0.5)
    assert np.bincount(half.test.labels).tolist() == [3, 3, 3]
    (folder / "test.csv").unlink()  # any subset of the csv files is pooled
    assert len(_load("mini-imagenet", folder).classes) == 2
    shutil.rmtree(folder / "images")
    with pytest.raises(MakdError, match="images/"):
        _load("mini-imagenet", folder)
