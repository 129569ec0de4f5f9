"""featstore.sources.folder: one sub-folder per class, seeded stratified split."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from featstore.errors import InputError
from featstore.sources.folder import read_folder, split_counts

# class -> file names; "bird" has exactly 3 images, the smallest class that gets every split
TREE = {
    "cat": [f"cat{i:02d}.jpg" for i in range(10)],
    "dog": ["d1.png", "d2.PNG", "d3.jpeg", "d4.jpg", "d5.JPG"],
    "bird": ["b1.jpg", "b2.jpg", "b3.jpg"],
}


@pytest.fixture(scope="module")
def jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (178, 218), (30, 60, 90)).save(buf, format="JPEG", quality=70)
    return buf.getvalue()


def make_tree(root: Path, jpeg: bytes, tree: dict[str, list[str]] = TREE) -> Path:
    for name, files in tree.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for f in files:
            (root / name / f).write_bytes(jpeg)
    return root


def split_of(listing) -> dict[str, str]:
    return dict(zip(listing.images["image_id"], listing.images["split"]))


def test_read_folder_listing(tmp_path, jpeg_bytes):
    root = make_tree(tmp_path / "imgs", jpeg_bytes)
    listing = read_folder(root)

    assert listing.source == "folder"
    assert listing.attributes == ["bird", "cat", "dog"]
    assert listing.problems == []
    images = listing.images
    assert list(images.columns) == ["image_id", "split", "source_path"]
    assert len(images) == 18
    assert images["image_id"].is_monotonic_increasing
    assert images["image_id"].iloc[0] == "bird/b1.jpg"
    assert images["image_id"].iloc[-1] == "dog/d5.JPG"
    assert set(images["image_id"]) >= {"dog/d1.png", "dog/d2.PNG", "dog/d3.jpeg", "cat/cat09.jpg"}
    row = images.set_index("image_id").loc["dog/d3.jpeg"]
    assert row["source_path"] == str(root / "dog" / "d3.jpeg")
    assert all(os.path.isabs(p) and Path(p).is_file() for p in images["source_path"])

    labels = listing.labels
    assert list(labels.columns) == ["image_id", "split", "class", "bird", "cat", "dog"]
    # the class as one column too (the folder name): what train.target: class fits
    assert (labels["class"] == labels["image_id"].str.split("/").str[0]).all()
    assert labels["image_id"].tolist() == images["image_id"].tolist()
    assert labels["split"].tolist() == images["split"].tolist()
    assert labels[["bird", "cat", "dog"]].dtypes.tolist() == [bool, bool, bool]
    assert labels[["bird", "cat", "dog"]].sum().tolist() == [3, 10, 5]
    assert labels[["bird", "cat", "dog"]].sum(axis=1).eq(1).all()  # one-hot
    one = labels.set_index("image_id").loc["cat/cat04.jpg"]
    assert (one["bird"], one["cat"], one["dog"]) == (False, True, False)


def test_split_is_stratified(tmp_path, jpeg_bytes):
    listing = read_folder(make_tree(tmp_path / "imgs", jpeg_bytes), seed=3)
    labels = listing.labels
    table = pd.crosstab(labels["split"], labels[["bird", "cat", "dog"]].idxmax(axis=1))
    assert table.loc["train"].to_dict() == {"bird": 1, "cat": 8, "dog": 3}
    assert table.loc["val"].to_dict() == {"bird": 1, "cat": 1, "dog": 1}
    assert table.loc["test"].to_dict() == {"bird": 1, "cat": 1, "dog": 1}


def test_split_counts():
    assert split_counts(10, (0.8, 0.1, 0.1)) == (8, 1, 1)
    assert split_counts(3, (0.8, 0.1, 0.1)) == (1, 1, 1)
    assert split_counts(5, (0.8, 0.1, 0.1)) == (3, 1, 1)
    assert split_counts(2, (0.8, 0.1, 0.1)) == (2, 0, 0)
    assert split_counts(1, (0.8, 0.1, 0.1)) == (1, 0, 0)
    assert split_counts(1000, (0.8, 0.1, 0.1)) == (800, 100, 100)
    assert split_counts(7, (0.5, 0.5, 0.0)) == (4, 3, 0)
    assert split_counts(11, (1 / 3, 1 / 3, 1 / 3)) == (4, 4, 3)


def test_same_seed_same_split_and_different_seed_different_split(tmp_path, jpeg_bytes):
    root = make_tree(tmp_path / "imgs", jpeg_bytes)
    a = read_folder(root, seed=7)
    b = read_folder(root, seed=7)
    pd.testing.assert_frame_equal(a.images, b.images)
    pd.testing.assert_frame_equal(a.labels, b.labels)

    c = read_folder(root, seed=8)
    assert split_of(a) != split_of(c)
    assert sorted(split_of(a)) == sorted(split_of(c))  # same images, other assignment
    # the stratified counts do not depend on the seed
    assert a.images["split"].value_counts().to_dict() == {"train": 12, "val": 3, "test": 3}
    assert c.images["split"].value_counts().to_dict() == {"train": 12, "val": 3, "test": 3}


def test_split_of_a_class_does_not_depend_on_other_classes(tmp_path, jpeg_bytes):
    full = read_folder(make_tree(tmp_path / "a", jpeg_bytes), seed=5)
    only_cat = read_folder(make_tree(tmp_path / "b", jpeg_bytes, {"cat": TREE["cat"]}), seed=5)
    cat_full = {k: v for k, v in split_of(full).items() if k.startswith("cat/")}
    assert cat_full == split_of(only_cat)


def test_small_class_and_fractions_with_a_zero(tmp_path, jpeg_bytes):
    tree = {"a": ["1.jpg", "2.jpg"], "b": [f"{i}.png" for i in range(6)]}
    root = make_tree(tmp_path / "imgs", jpeg_bytes, tree)
    listing = read_folder(root, fractions=(0.5, 0.5, 0.0))
    counts = listing.images.groupby(listing.images["image_id"].str[0])["split"].value_counts()
    assert counts.to_dict() == {
        ("a", "train"): 1,
        ("a", "val"): 1,
        ("b", "train"): 3,
        ("b", "val"): 3,
    }


def test_other_files_are_ignored_and_counted(tmp_path, jpeg_bytes, caplog):
    root = make_tree(tmp_path / "imgs", jpeg_bytes)
    (root / "cat" / "notes.txt").write_text("x")
    (root / "cat" / "labels.csv").write_text("x")
    (root / "dog" / ".DS_Store").write_bytes(b"x")
    (root / "dog" / "nested").mkdir()
    (root / ".hidden_class").mkdir()
    (root / "README.md").write_text("x")
    with caplog.at_level(logging.INFO, logger="featstore.sources.folder"):
        listing = read_folder(root)
    assert len(listing.images) == 18
    assert listing.attributes == ["bird", "cat", "dog"]
    assert "ignored 3 file(s) without an image extension" in caplog.text
    assert "1 nested folder(s)" in caplog.text


def test_extensions_option(tmp_path, jpeg_bytes):
    tree = {"a": ["1.png", "2.bmp", "3.BMP"], "b": ["4.bmp", "5.jpg"]}
    root = make_tree(tmp_path / "imgs", jpeg_bytes, tree)
    listing = read_folder(root, extensions=("bmp",))
    assert listing.images["image_id"].tolist() == ["a/2.bmp", "a/3.BMP", "b/4.bmp"]
    assert listing.labels["a"].tolist() == [True, True, False]
    assert read_folder(root).images["image_id"].tolist() == ["a/1.png", "b/5.jpg"]


def test_missing_root(tmp_path):
    with pytest.raises(InputError, match="image folder not found") as exc:
        read_folder(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(exc.value)


def test_empty_root(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty folder") as exc:
        read_folder(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(exc.value)


def test_root_with_files_but_no_class_folders(tmp_path, jpeg_bytes):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.jpg").write_bytes(jpeg_bytes)
    with pytest.raises(InputError, match="no class sub-folders") as exc:
        read_folder(tmp_path / "flat")
    assert str(tmp_path / "flat") in str(exc.value)


def test_class_folder_without_images(tmp_path, jpeg_bytes):
    root = make_tree(tmp_path / "imgs", jpeg_bytes)
    (root / "fish").mkdir()
    (root / "fish" / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="class folder has no images") as exc:
        read_folder(root)
    assert str(root / "fish") in str(exc.value)


@pytest.mark.parametrize(
    "fractions",
    [(0.8, 0.1), (0.8, 0.1, 0.2), (0.9, 0.2, -0.1), (0.0, 0.5, 0.5), (float("nan"), 0.5, 0.5)],
    ids=["two", "sum", "negative", "no-train", "nan"],
)
def test_bad_fractions(tmp_path, jpeg_bytes, fractions):
    root = make_tree(tmp_path / "imgs", jpeg_bytes)
    with pytest.raises(InputError, match="fraction"):
        read_folder(root, fractions=fractions)


@pytest.mark.parametrize("seed", [-1, 1.5, "0"])
def test_bad_seed(tmp_path, jpeg_bytes, seed):
    root = make_tree(tmp_path / "imgs", jpeg_bytes)
    with pytest.raises(InputError, match="seed"):
        read_folder(root, seed=seed)
