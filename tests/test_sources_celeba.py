"""featstore.sources.celeba: the official CelebA annotation files and folder layout."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from featstore.errors import AnnotationError, InputError
from featstore.sources.base import CELEBA_ATTRIBUTES, STAGE_LISTING
from featstore.sources.celeba import (
    read_attributes,
    read_celeba,
    read_identity,
    read_partition,
)
from tests.realdata import REAL_CELEBA

REAL = REAL_CELEBA
REAL_PARTITION = REAL / "list_eval_partition.txt"
REAL_ATTR_HEAD = REAL / "list_attr_celeba.head20000.txt"

IDS = [f"{i:06d}.jpg" for i in range(1, 7)]  # 000001.jpg ... 000006.jpg
# The few attributes the fixture sets by hand; every other attribute is -1 except Young (1).
HAND = {
    "Male": [1, -1, 1, -1, -1, 1],
    "Smiling": [-1, -1, 1, 1, -1, -1],
    "Eyeglasses": [1, -1, -1, -1, -1, -1],
}
PARTITION = [0, 0, 0, 0, 1, 2]  # 000001-000004 train, 000005 val, 000006 test


# ------------------------------------------------------------------------------ fixture writers


@pytest.fixture(scope="module")
def jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (178, 218), (120, 90, 60)).save(buf, format="JPEG", quality=70)
    return buf.getvalue()


def attr_row(image_id: str, values: list[int]) -> str:
    # official padding: each value right-aligned in 2 columns, one space between, trailing space
    return image_id + " " + " ".join(f"{v:2d}" for v in values) + " "


def fixture_values(k: int) -> list[int]:
    """The 40 values of image IDS[k] in header order."""
    out = []
    for name in CELEBA_ATTRIBUTES:
        if name in HAND:
            out.append(HAND[name][k])
        else:
            out.append(1 if name == "Young" else -1)
    return out


def attr_text(
    ids: list[str] = IDS,
    *,
    count: str | None = None,
    eol: str = "\r\n",
    final_newline: bool = True,
    rows: list[str] | None = None,
) -> str:
    if rows is None:
        rows = [attr_row(i, fixture_values(IDS.index(i) if i in IDS else 0)) for i in ids]
    lines = [count if count is not None else str(len(rows)), " ".join(CELEBA_ATTRIBUTES) + " "]
    lines += rows
    return eol.join(lines) + (eol if final_newline else "")


def partition_text(
    pairs: list[tuple[str, int | str]] | None = None,
    *,
    eol: str = "\r\n",
    final_newline: bool = True,
) -> str:
    if pairs is None:
        pairs = list(zip(IDS, PARTITION))
    return eol.join(f"{i} {p}" for i, p in pairs) + (eol if final_newline else "")


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("ascii"))
    return path


def make_celeba(
    root: Path,
    jpeg: bytes,
    *,
    attr: str | None = None,
    partition: str | None = None,
    identity: str | None = None,
    images: list[str] = IDS,
) -> Path:
    (root / "img_align_celeba").mkdir(parents=True)
    for image_id in images:
        (root / "img_align_celeba" / image_id).write_bytes(jpeg)
    write(root / "list_attr_celeba.txt", attr if attr is not None else attr_text())
    write(
        root / "list_eval_partition.txt", partition if partition is not None else partition_text()
    )
    if identity is not None:
        write(root / "identity_CelebA.txt", identity)
    return root


def raises_at(exc: pytest.ExceptionInfo[AnnotationError], name: str, line: int | None) -> str:
    msg = str(exc.value)
    where = f"{name}:{line}:" if line is not None else f"{name}:"
    assert where in msg, msg
    assert exc.value.line == line
    return msg


# ------------------------------------------------------------------------------ real files


needs_real = pytest.mark.skipif(
    not REAL_PARTITION.is_file() or not REAL_ATTR_HEAD.is_file(),
    reason=f"real CelebA annotation files not found under {REAL}",
)


@needs_real
def test_real_partition_file_has_the_official_split_sizes():
    part = read_partition(REAL_PARTITION)
    assert len(part) == 202_599
    assert part["split"].value_counts().to_dict() == {
        "train": 162_770,
        "val": 19_867,
        "test": 19_962,
    }
    by_id = part.set_index("image_id")["split"]
    assert by_id["000001.jpg"] == "train"
    assert by_id["162770.jpg"] == "train"
    assert by_id["162771.jpg"] == "val"
    assert by_id["182637.jpg"] == "val"
    assert by_id["182638.jpg"] == "test"
    assert by_id["202599.jpg"] == "test"
    assert list(part.columns) == ["image_id", "split"]


@needs_real
def test_real_attribute_head_file_read_with_check_count_off(caplog):
    with caplog.at_level(logging.WARNING, logger="featstore.sources.celeba"):
        names, attr = read_attributes(REAL_ATTR_HEAD, check_count=False)
    assert names == list(CELEBA_ATTRIBUTES)
    assert list(attr.columns) == ["image_id", *CELEBA_ATTRIBUTES]
    assert len(attr) == 20_000
    assert attr["image_id"].iloc[0] == "000001.jpg"
    assert attr["image_id"].iloc[-1] == "020000.jpg"
    assert int(attr["Male"].sum()) == 8_431
    assert int(attr["Smiling"].sum()) == 9_587
    assert int(attr["Eyeglasses"].sum()) == 1_292
    assert all(attr[name].dtype == bool for name in CELEBA_ATTRIBUTES)
    # first row of the official file: 000001.jpg -1  1  1 -1 ... (Arched_Eyebrows, Attractive)
    first = attr.iloc[0]
    assert not first["5_o_Clock_Shadow"]
    assert first["Arched_Eyebrows"]
    assert first["Attractive"]
    assert not first["Bags_Under_Eyes"]
    assert "202599" in caplog.text and "20000" in caplog.text


@needs_real
def test_real_attribute_head_file_count_line_is_checked_by_default():
    with pytest.raises(AnnotationError) as exc:
        read_attributes(REAL_ATTR_HEAD)
    msg = raises_at(exc, "list_attr_celeba.head20000.txt", 1)
    assert "202599" in msg and "20000" in msg


@needs_real
def test_real_attribute_rows_with_a_correct_count_line_pass_the_default_check(tmp_path):
    raw = REAL_ATTR_HEAD.read_bytes()
    assert raw.startswith(b"202599\r\n")
    fixed = write_bytes(tmp_path / "list_attr_celeba.txt", b"20000\r\n" + raw[len(b"202599\r\n") :])
    _, attr = read_attributes(fixed)
    assert len(attr) == 20_000
    assert int(attr["Male"].sum()) == 8_431


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------------------ attribute file


def test_read_attributes_official_format(tmp_path):
    text = attr_text()
    assert text.startswith("6\r\n5_o_Clock_Shadow Arched_Eyebrows ")
    assert "\r\n000002.jpg -1 -1 " in text  # variable padding as in the official file
    names, attr = read_attributes(write(tmp_path / "list_attr_celeba.txt", text))
    assert names == list(CELEBA_ATTRIBUTES)
    assert attr["image_id"].tolist() == [
        "000001.jpg",
        "000002.jpg",
        "000003.jpg",
        "000004.jpg",
        "000005.jpg",
        "000006.jpg",
    ]
    assert attr["Male"].tolist() == [True, False, True, False, False, True]
    assert attr["Smiling"].tolist() == [False, False, True, True, False, False]
    assert attr["Eyeglasses"].tolist() == [True, False, False, False, False, False]
    assert attr["Young"].tolist() == [True] * 6
    assert attr["Bald"].tolist() == [False] * 6
    assert attr.drop(columns="image_id").to_numpy().sum() == 3 + 2 + 1 + 6
    assert attr["Male"].dtype == bool


@pytest.mark.parametrize("final_newline", [True, False])
def test_lf_and_crlf_give_identical_frames(tmp_path, final_newline):
    crlf = read_attributes(write(tmp_path / "crlf.txt", attr_text()))
    lf = read_attributes(
        write(tmp_path / "lf.txt", attr_text(eol="\n", final_newline=final_newline))
    )
    assert crlf[0] == lf[0]
    pd.testing.assert_frame_equal(crlf[1], lf[1])
    assert len(lf[1]) == 6 and lf[1]["image_id"].iloc[-1] == "000006.jpg"

    p_crlf = read_partition(write(tmp_path / "p_crlf.txt", partition_text()))
    p_lf = read_partition(
        write(tmp_path / "p_lf.txt", partition_text(eol="\n", final_newline=final_newline))
    )
    pd.testing.assert_frame_equal(p_crlf, p_lf)
    assert p_lf["split"].tolist() == ["train", "train", "train", "train", "val", "test"]


def test_trailing_blank_lines_are_tolerated(tmp_path):
    _, attr = read_attributes(write(tmp_path / "a.txt", attr_text() + "\r\n  \r\n"))
    assert len(attr) == 6


def _rows_with(k: int, row: str) -> list[str]:
    rows = [attr_row(i, fixture_values(n)) for n, i in enumerate(IDS)]
    rows[k] = row
    return rows


@pytest.mark.parametrize(
    ("row", "words"),
    [
        (attr_row("000004.jpg", [1] * 39), ["40 attribute values", "found 40 fields"]),
        (attr_row("000004.jpg", [1] * 41), ["40 attribute values", "found 42 fields"]),
        (attr_row("000004.jpg", [1] * 20 + [0] + [1] * 19), ["'0'", "field 22", "000004.jpg"]),
        (attr_row("000004.jpg", [-1] * 39 + [2]), ["'2'", "field 41"]),
        ("000004.jpg " + " ".join(["1"] * 39 + ["x"]), ["'x'", "field 41"]),
        ("000004.jpg " + " ".join(["1.0"] * 40), ["'1.0'", "field 2"]),
    ],
    ids=["too-few", "too-many", "zero", "two", "letter", "float"],
)
def test_bad_attribute_row_names_file_and_line(tmp_path, row, words):
    path = write(tmp_path / "list_attr_celeba.txt", attr_text(rows=_rows_with(3, row)))
    with pytest.raises(AnnotationError) as exc:
        read_attributes(path)
    msg = raises_at(exc, "list_attr_celeba.txt", 6)  # count, header, rows 1-3, then row 4
    for word in words:
        assert word in msg


def test_bad_row_is_reported_in_a_large_file_too(tmp_path):
    rows = [attr_row(f"{i:06d}.jpg", [1, -1] * 20) for i in range(1, 5001)]
    rows[4321] = attr_row("004322.jpg", [1, -1] * 19 + [1, 0])
    path = write(tmp_path / "list_attr_celeba.txt", attr_text(rows=rows))
    with pytest.raises(AnnotationError) as exc:
        read_attributes(path)
    msg = raises_at(exc, "list_attr_celeba.txt", 4324)
    assert "004322.jpg" in msg


def test_count_line_disagreeing_with_rows(tmp_path):
    path = write(tmp_path / "list_attr_celeba.txt", attr_text(count="7"))
    with pytest.raises(AnnotationError) as exc:
        read_attributes(path)
    msg = raises_at(exc, "list_attr_celeba.txt", 1)
    assert "count line says 7 rows but the file has 6" in msg
    _, attr = read_attributes(path, check_count=False)
    assert len(attr) == 6


@pytest.mark.parametrize("count", ["six", "6.0", "", "6 7"])
def test_count_line_not_an_integer(tmp_path, count):
    path = write(tmp_path / "list_attr_celeba.txt", attr_text(count=count))
    with pytest.raises(AnnotationError) as exc:
        read_attributes(path, check_count=False)
    msg = raises_at(exc, "list_attr_celeba.txt", 1)
    assert "not an integer" in msg


def test_duplicate_image_id_in_attributes(tmp_path):
    rows = _rows_with(4, attr_row("000002.jpg", [1] * 40))
    path = write(tmp_path / "list_attr_celeba.txt", attr_text(rows=rows))
    with pytest.raises(AnnotationError) as exc:
        read_attributes(path)
    msg = raises_at(exc, "list_attr_celeba.txt", 7)
    assert "duplicate image id 000002.jpg" in msg
    assert "first on line 4" in msg


def test_empty_attribute_file(tmp_path):
    with pytest.raises(AnnotationError) as exc:
        read_attributes(write(tmp_path / "list_attr_celeba.txt", ""))
    msg = raises_at(exc, "list_attr_celeba.txt", None)
    assert "empty" in msg


def test_attribute_file_with_count_line_only(tmp_path):
    with pytest.raises(AnnotationError) as exc:
        read_attributes(write(tmp_path / "list_attr_celeba.txt", "6\r\n"))
    msg = raises_at(exc, "list_attr_celeba.txt", 2)
    assert "header" in msg


def test_attribute_file_without_header_line(tmp_path):
    text = "6\r\n" + "\r\n".join(attr_row(i, fixture_values(n)) for n, i in enumerate(IDS))
    with pytest.raises(AnnotationError) as exc:
        read_attributes(write(tmp_path / "list_attr_celeba.txt", text))
    msg = raises_at(exc, "list_attr_celeba.txt", 2)
    assert "header" in msg


def test_blank_line_between_rows(tmp_path):
    rows = _rows_with(2, "   ")
    with pytest.raises(AnnotationError) as exc:
        read_attributes(write(tmp_path / "list_attr_celeba.txt", attr_text(rows=rows)))
    msg = raises_at(exc, "list_attr_celeba.txt", 5)
    assert "empty line" in msg


def test_missing_attribute_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match=r"list_attr_celeba\.txt: annotation file not found"):
        read_attributes(tmp_path / "list_attr_celeba.txt")


# ------------------------------------------------------------------------------ partition, identity


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("000001.jpg 0\r\n000002.jpg 3\r\n", 2, ["'3'", "000002.jpg", "0/1/2"]),
        ("000001.jpg 0\r\n000002.jpg -1\r\n", 2, ["'-1'"]),
        ("000001.jpg 0\r\n000002.jpg train\r\n", 2, ["'train'"]),
        ("000001.jpg 0\r\n000002.jpg 0 1\r\n000003.jpg 0", 2, ["found 3 fields"]),
        ("000001.jpg 0\r\n000002.jpg 0\r\n000003.jpg\r\n", 3, ["found 1 fields"]),
        ("000001.jpg 0\r\n000002.jpg 0\r\n000001.jpg 1", 3, ["duplicate image id 000001.jpg"]),
        ("000001.jpg 0\r\n../000002.jpg 0\r\n", 2, ["not a plain file name"]),
    ],
    ids=["three", "minus-one", "word", "too-many", "too-few", "duplicate", "path"],
)
def test_bad_partition_file(tmp_path, text, line, words):
    path = write(tmp_path / "list_eval_partition.txt", text)
    with pytest.raises(AnnotationError) as exc:
        read_partition(path)
    msg = raises_at(exc, "list_eval_partition.txt", line)
    for word in words:
        assert word in msg


def test_empty_partition_file(tmp_path):
    with pytest.raises(AnnotationError, match=r"list_eval_partition\.txt: empty file"):
        read_partition(write(tmp_path / "list_eval_partition.txt", "\r\n"))


def test_read_identity(tmp_path):
    path = write(tmp_path / "identity_CelebA.txt", "000001.jpg 2880\r\n000002.jpg 2937\r\n")
    ident = read_identity(path)
    assert ident["image_id"].tolist() == ["000001.jpg", "000002.jpg"]
    assert ident["identity"].tolist() == [2880, 2937]
    assert ident["identity"].dtype.kind == "i"

    bad = write(tmp_path / "bad.txt", "000001.jpg 2880\n000002.jpg abc\n")
    with pytest.raises(AnnotationError) as exc:
        read_identity(bad)
    assert "integer" in raises_at(exc, "bad.txt", 2)


# ------------------------------------------------------------------------------ read_celeba


def test_read_celeba(tmp_path, jpeg_bytes):
    # the partition file in another order: the listing is still ordered by image_id
    pairs = list(zip(IDS, PARTITION))[::-1]
    root = make_celeba(tmp_path / "celeba", jpeg_bytes, partition=partition_text(pairs))
    listing = read_celeba(root)

    assert listing.source == "celeba"
    assert listing.attributes == list(CELEBA_ATTRIBUTES)
    assert listing.problems == []
    assert listing.files == [
        str(root / "list_attr_celeba.txt"),
        str(root / "list_eval_partition.txt"),
    ]
    images = listing.images
    assert list(images.columns) == ["image_id", "split", "source_path"]
    assert images["image_id"].tolist() == IDS
    assert images["split"].tolist() == ["train", "train", "train", "train", "val", "test"]
    for path in images["source_path"]:
        assert os.path.isabs(path) and Path(path).is_file()
    assert images["source_path"].iloc[2] == str(root / "img_align_celeba" / "000003.jpg")

    labels = listing.labels
    assert list(labels.columns) == ["image_id", "split", *CELEBA_ATTRIBUTES]
    assert labels["image_id"].tolist() == IDS
    assert labels["split"].tolist() == images["split"].tolist()
    assert labels["Male"].tolist() == [True, False, True, False, False, True]
    assert labels["Smiling"].tolist() == [False, False, True, True, False, False]


def test_read_celeba_relative_root_gives_absolute_paths(tmp_path, jpeg_bytes, monkeypatch):
    make_celeba(tmp_path / "celeba", jpeg_bytes)
    monkeypatch.chdir(tmp_path)
    listing = read_celeba("celeba")
    assert listing.images["source_path"].iloc[0] == str(
        tmp_path / "celeba" / "img_align_celeba" / "000001.jpg"
    )


def test_listed_image_missing_on_disk_is_a_problem(tmp_path, jpeg_bytes, caplog):
    root = make_celeba(
        tmp_path / "celeba", jpeg_bytes, images=[i for i in IDS if i != "000004.jpg"]
    )
    with caplog.at_level(logging.WARNING, logger="featstore.sources.celeba"):
        listing = read_celeba(root)
    assert len(listing.problems) == 1
    problem = listing.problems[0]
    assert problem.image_id == "000004.jpg"
    assert problem.stage == STAGE_LISTING == "listing"
    assert problem.error == "listed in list_attr_celeba.txt but file missing"
    assert problem.source_path == str(root / "img_align_celeba" / "000004.jpg")
    assert problem.split == "train"
    expected = ["000001.jpg", "000002.jpg", "000003.jpg", "000005.jpg", "000006.jpg"]
    assert listing.images["image_id"].tolist() == expected
    assert listing.labels["image_id"].tolist() == expected
    assert listing.labels["Smiling"].tolist() == [False, False, True, False, False]
    assert "1 listed image(s) missing" in caplog.text


def test_image_present_but_not_listed_is_a_problem(tmp_path, jpeg_bytes):
    root = make_celeba(tmp_path / "celeba", jpeg_bytes, images=[*IDS, "000099.jpg"])
    (root / "img_align_celeba" / "notes.txt").write_text("not an image")
    (root / "img_align_celeba" / "sub").mkdir()
    listing = read_celeba(root)
    assert [(p.image_id, p.stage, p.error) for p in listing.problems] == [
        ("000099.jpg", "listing", "present but not listed in the annotation files")
    ]
    assert listing.problems[0].source_path == str(root / "img_align_celeba" / "000099.jpg")
    assert len(listing.images) == 6
    assert "000099.jpg" not in set(listing.labels["image_id"])


def test_id_in_attributes_but_not_in_partition(tmp_path, jpeg_bytes):
    pairs = list(zip(IDS, PARTITION))[:4]  # 000005.jpg and 000006.jpg missing
    root = make_celeba(tmp_path / "celeba", jpeg_bytes, partition=partition_text(pairs))
    with pytest.raises(AnnotationError) as exc:
        read_celeba(root)
    msg = raises_at(exc, "list_attr_celeba.txt", 7)  # 000005.jpg is on line 7
    assert "000005.jpg" in msg
    assert "list_eval_partition.txt" in msg
    assert "2 id(s)" in msg


def test_id_in_partition_but_not_in_attributes(tmp_path, jpeg_bytes):
    pairs = [*zip(IDS, PARTITION), ("000007.jpg", 2)]
    root = make_celeba(tmp_path / "celeba", jpeg_bytes, partition=partition_text(pairs))
    with pytest.raises(AnnotationError) as exc:
        read_celeba(root)
    msg = raises_at(exc, "list_eval_partition.txt", 7)
    assert "000007.jpg" in msg
    assert "1 id(s)" in msg


def test_identity_file(tmp_path, jpeg_bytes):
    identity = "".join(f"{i} {100 + n}\r\n" for n, i in enumerate(IDS))
    root = make_celeba(tmp_path / "celeba", jpeg_bytes, identity=identity)
    listing = read_celeba(root)
    assert listing.files[-1] == str(root / "identity_CelebA.txt")
    assert len(listing.images) == 6


def test_id_in_identity_but_in_neither_annotation_file(tmp_path, jpeg_bytes):
    identity = "".join(f"{i} 1\r\n" for i in [*IDS[:2], "000123.jpg", *IDS[2:]])
    root = make_celeba(tmp_path / "celeba", jpeg_bytes, identity=identity)
    with pytest.raises(AnnotationError) as exc:
        read_celeba(root)
    msg = raises_at(exc, "identity_CelebA.txt", 3)
    assert "000123.jpg" in msg


def test_bad_annotation_file_stops_read_celeba(tmp_path, jpeg_bytes):
    root = make_celeba(tmp_path / "celeba", jpeg_bytes, attr=attr_text(count="5"))
    with pytest.raises(AnnotationError) as exc:
        read_celeba(root)
    raises_at(exc, "list_attr_celeba.txt", 1)
    assert len(read_celeba(root, check_count=False).images) == 6


def test_empty_image_folder(tmp_path, jpeg_bytes):
    root = make_celeba(tmp_path / "celeba", jpeg_bytes, images=[])
    (root / "img_align_celeba" / "readme.txt").write_text("no images here")
    with pytest.raises(InputError) as exc:
        read_celeba(root)
    assert str(root / "img_align_celeba") in str(exc.value)
    assert "no *.jpg images" in str(exc.value)


@pytest.mark.parametrize("name", ["list_attr_celeba.txt", "list_eval_partition.txt"])
def test_missing_annotation_file(tmp_path, jpeg_bytes, name):
    root = make_celeba(tmp_path / "celeba", jpeg_bytes)
    (root / name).unlink()
    with pytest.raises(InputError) as exc:
        read_celeba(root)
    assert not isinstance(exc.value, AnnotationError)
    assert str(root / name) in str(exc.value)
    assert "not found" in str(exc.value)


def test_missing_root_and_missing_image_folder(tmp_path, jpeg_bytes):
    with pytest.raises(InputError, match="CelebA folder not found") as exc:
        read_celeba(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(exc.value)

    root = make_celeba(tmp_path / "celeba", jpeg_bytes, images=[])
    (root / "img_align_celeba").rmdir()
    with pytest.raises(InputError, match="image folder not found") as exc:
        read_celeba(root)
    assert str(root / "img_align_celeba") in str(exc.value)
