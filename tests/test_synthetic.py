"""featstore.sources.synthetic: official CelebA layout and formats, determinism, label sources,
errors, and that the drawn attributes (and only those) can be learnt from the pixels."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featstore.errors import InputError
from featstore.sources.base import CELEBA_ATTRIBUTES, CELEBA_IMAGE_SIZE, CELEBA_SPLIT_SIZES
from featstore.sources.synthetic import (
    MARGINAL_RATES,
    RENDERED_ATTRIBUTES,
    UNRENDERED_ATTRIBUTES,
    SynthSummary,
    generate,
)
from tests.realdata import REAL_CELEBA

REAL_DIR = REAL_CELEBA
REAL_ATTR = REAL_DIR / "list_attr_celeba.head20000.txt"
REAL_PARTITION = REAL_DIR / "list_eval_partition.txt"

# one attribute row of the official file: name, one space, first value, then " 1" / "-1" each
ATTR_ROW = re.compile(r"\d{6}\.jpg (?:1|-1)(?: (?: 1|-1)){39}")
PARTITION_ROW = re.compile(r"\d{6}\.jpg [012]")
IDENTITY_ROW = re.compile(r"\d{6}\.jpg [1-9]\d*")

needs_real = pytest.mark.skipif(
    not REAL_ATTR.is_file(), reason=f"real CelebA annotation files not found in {REAL_DIR}"
)


def read_attr(path: Path) -> tuple[list[str], np.ndarray]:
    """Image ids and the bool label matrix of a list_attr_celeba.txt (any line endings)."""
    lines = path.read_text().splitlines()[2:]
    ids = [line.split()[0] for line in lines]
    values = np.array([[v == "1" for v in line.split()[1:]] for line in lines])
    return ids, values


def col(labels: np.ndarray, name: str) -> np.ndarray:
    return labels[:, CELEBA_ATTRIBUTES.index(name)]


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    return generate(tmp_path_factory.mktemp("small") / "celeba", 60, seed=7)


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    """1000 images with the built-in label rates, two worker processes."""
    return generate(tmp_path_factory.mktemp("large") / "celeba", 1000, seed=0, workers=2)


# ---------------------------------------------------------------------------------- layout


def test_summary_describes_what_was_written(small: SynthSummary) -> None:
    assert small.n == 60
    assert sum(small.split_counts.values()) == 60
    assert set(small.split_counts) == {"train", "val", "test"}
    assert small.seconds > 0
    assert Path(small.out_dir).is_dir()


def test_images_are_numbered_rgb_jpegs_of_celeba_size(small: SynthSummary) -> None:
    img_dir = Path(small.out_dir) / "img_align_celeba"
    names = sorted(p.name for p in img_dir.iterdir())
    assert names == [f"{i:06d}.jpg" for i in range(1, 61)]
    assert CELEBA_IMAGE_SIZE == (218, 178)  # (height, width)
    for name in names:
        with Image.open(img_dir / name) as im:
            assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (178, 218))


def test_attr_file_has_official_header_crlf_and_count(small: SynthSummary) -> None:
    raw = (Path(small.out_dir) / "list_attr_celeba.txt").read_bytes()
    assert raw.endswith(b"\r\n")
    lines = raw[:-2].split(b"\r\n")
    assert not any(b"\n" in line or b"\r" in line for line in lines)  # CRLF everywhere
    assert lines[0] == b"60"
    assert lines[1] == (" ".join(CELEBA_ATTRIBUTES) + " ").encode()  # trailing space
    assert len(lines) - 2 == int(lines[0])


def test_attr_rows_are_laid_out_like_the_official_file(small: SynthSummary) -> None:
    rows = (Path(small.out_dir) / "list_attr_celeba.txt").read_text().splitlines()[2:]
    assert [r.split()[0] for r in rows] == [f"{i:06d}.jpg" for i in range(1, 61)]
    bad = [r for r in rows if not ATTR_ROW.fullmatch(r)]
    assert bad == []
    # both first-value widths occur, as in the official file (``000007.jpg 1 -1``)
    assert {r[11] for r in rows} == {"1", "-"}


@needs_real
def test_attr_row_pattern_is_the_real_files_pattern() -> None:
    raw = REAL_ATTR.read_bytes()
    lines = raw.split(b"\r\n")
    assert lines[1].endswith(b"Young ")
    rows = [line.decode() for line in lines[2:] if line]
    assert len(rows) == 20_000
    assert all(ATTR_ROW.fullmatch(r) for r in rows)


def test_partition_file_is_lf_contiguous_and_matches_summary(small: SynthSummary) -> None:
    raw = (Path(small.out_dir) / "list_eval_partition.txt").read_bytes()
    assert b"\r" not in raw
    rows = raw.decode().split("\n")
    assert len(rows) == 60  # no newline after the last row, like the official file
    assert all(PARTITION_ROW.fullmatch(r) for r in rows)
    assert [r.split()[0] for r in rows] == [f"{i:06d}.jpg" for i in range(1, 61)]
    splits = [int(r.split()[1]) for r in rows]
    assert splits == sorted(splits)  # contiguous id ranges: train, then val, then test
    counts = {name: splits.count(k) for k, name in enumerate(("train", "val", "test"))}
    assert counts == small.split_counts


@needs_real
def test_partition_file_has_the_real_files_layout(small: SynthSummary) -> None:
    real = REAL_PARTITION.read_bytes()
    ours = (Path(small.out_dir) / "list_eval_partition.txt").read_bytes()
    assert real[:11] == ours[:11] == b"000001.jpg "
    assert (b"\r" in real) == (b"\r" in ours)
    assert real.endswith(b"\n") == ours.endswith(b"\n")


def test_partition_proportions_are_official(large: SynthSummary) -> None:
    total = sum(CELEBA_SPLIT_SIZES.values())
    for split, size in CELEBA_SPLIT_SIZES.items():
        assert large.split_counts[split] / large.n == pytest.approx(size / total, abs=0.002)


@pytest.mark.parametrize(("n", "expected"), [(1, (1, 0, 0)), (3, (1, 1, 1)), (12, (10, 1, 1))])
def test_every_split_gets_an_image_once_there_are_three(
    tmp_path: Path, n: int, expected: tuple[int, int, int]
) -> None:
    summary = generate(tmp_path / "out", n, seed=1)
    rows = (tmp_path / "out" / "list_eval_partition.txt").read_text().split("\n")
    found = tuple(sum(r.endswith(f" {k}") for r in rows) for k in range(3))
    assert found == expected == tuple(summary.split_counts[s] for s in ("train", "val", "test"))


def test_identity_file_groups_images_within_splits(large: SynthSummary) -> None:
    out = Path(large.out_dir)
    raw = (out / "identity_CelebA.txt").read_bytes()
    assert b"\r" not in raw
    rows = raw.decode().split("\n")
    assert len(rows) == large.n and all(IDENTITY_ROW.fullmatch(r) for r in rows)
    ident = {r.split()[0]: int(r.split()[1]) for r in rows}
    split = dict(r.split() for r in (out / "list_eval_partition.txt").read_text().split("\n"))
    assert list(ident) == list(split)
    splits_of: dict[int, set[str]] = {}
    for image_id, person in ident.items():
        splits_of.setdefault(person, set()).add(split[image_id])
    assert all(len(s) == 1 for s in splits_of.values())  # no identity crosses splits
    sizes = np.bincount(list(ident.values()))[1:]
    assert len(splits_of) >= 3 * 3  # several identities per split ...
    assert (sizes[sizes > 0] >= 2).mean() > 0.8  # ... and several images per identity


def test_rendered_and_unrendered_attributes_partition_the_40() -> None:
    assert sorted(RENDERED_ATTRIBUTES + UNRENDERED_ATTRIBUTES) == sorted(CELEBA_ATTRIBUTES)
    assert not set(RENDERED_ATTRIBUTES) & set(UNRENDERED_ATTRIBUTES)
    assert len(RENDERED_ATTRIBUTES) >= 15
    assert "Attractive" in UNRENDERED_ATTRIBUTES
    assert list(MARGINAL_RATES) == list(CELEBA_ATTRIBUTES)


# ---------------------------------------------------------------------------- determinism


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_seed_gives_identical_files_for_any_worker_count(tmp_path: Path) -> None:
    generate(tmp_path / "a", 70, seed=5, workers=1)
    generate(tmp_path / "b", 70, seed=5, workers=2)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(a) == 70 + 3
    assert a == b


def test_different_seed_gives_different_images_and_labels(tmp_path: Path) -> None:
    generate(tmp_path / "a", 20, seed=5)
    generate(tmp_path / "b", 20, seed=6)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a["list_attr_celeba.txt"] != b["list_attr_celeba.txt"]
    images = [k for k in a if k.startswith("img_align_celeba")]
    assert sum(a[k] != b[k] for k in images) == len(images)


# ---------------------------------------------------------------------------------- labels


def test_builtin_labels_follow_marginal_rates_and_constraints(large: SynthSummary) -> None:
    _, labels = read_attr(Path(large.out_dir) / "list_attr_celeba.txt")
    for name in ("Male", "Smiling", "Young", "Wearing_Lipstick", "Attractive", "Eyeglasses"):
        assert col(labels, name).mean() == pytest.approx(MARGINAL_RATES[name], abs=0.05), name
    male = col(labels, "Male")
    facial_hair = col(labels, "Goatee") | col(labels, "Mustache")
    assert not (facial_hair & col(labels, "No_Beard")).any()
    assert not (facial_hair & ~male).any()
    assert not (col(labels, "Bald") & col(labels, "Bangs")).any()
    assert (male & col(labels, "Wearing_Lipstick")).mean() < 0.02
    assert (male & col(labels, "Heavy_Makeup")).mean() < 0.02


@needs_real
def test_labels_from_real_file_keep_the_joint_distribution(tmp_path: Path) -> None:
    generate(tmp_path / "out", 400, seed=3, labels_from=str(REAL_ATTR))
    _, ours = read_attr(tmp_path / "out" / "list_attr_celeba.txt")
    _, real = read_attr(REAL_ATTR)
    real_rows = {row.tobytes() for row in real}
    assert all(row.tobytes() in real_rows for row in ours)  # whole real rows, resampled
    # and written byte for byte as the official file writes them (same spacing, CRLF)
    real_text = {line[10:] for line in REAL_ATTR.read_bytes().split(b"\r\n")[2:]}
    our_text = (tmp_path / "out" / "list_attr_celeba.txt").read_bytes().split(b"\r\n")[2:-1]
    assert len(our_text) == 400
    assert all(line[10:] in real_text for line in our_text)
    assert len({row.tobytes() for row in ours}) > 300  # ... with replacement, not one row

    def both(m: np.ndarray, a: str, b: str) -> float:
        return float((col(m, a) & col(m, b)).mean())

    # Male & Wearing_Lipstick: independent marginals would give ~0.2; the real rate is ~0.003
    independent = col(real, "Male").mean() * col(real, "Wearing_Lipstick").mean()
    assert independent > 0.15
    assert both(ours, "Male", "Wearing_Lipstick") == pytest.approx(
        both(real, "Male", "Wearing_Lipstick"), abs=0.015
    )
    assert both(ours, "Male", "Goatee") == pytest.approx(both(real, "Male", "Goatee"), abs=0.03)
    assert col(ours, "Male").mean() == pytest.approx(col(real, "Male").mean(), abs=0.07)


# ---------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("n", [0, -3])
def test_n_below_one_is_rejected(tmp_path: Path, n: int) -> None:
    with pytest.raises(InputError, match="n must be"):
        generate(tmp_path / "out", n)
    assert not (tmp_path / "out").exists()


def test_non_empty_image_folder_is_rejected_and_left_alone(tmp_path: Path) -> None:
    img_dir = tmp_path / "out" / "img_align_celeba"
    img_dir.mkdir(parents=True)
    (img_dir / "000001.jpg").write_bytes(b"precious")
    with pytest.raises(InputError, match="already holds files"):
        generate(tmp_path / "out", 5)
    assert [p.name for p in (tmp_path / "out").rglob("*")] == ["img_align_celeba", "000001.jpg"]
    assert (img_dir / "000001.jpg").read_bytes() == b"precious"


def test_empty_image_folder_is_reused(tmp_path: Path) -> None:
    (tmp_path / "out" / "img_align_celeba").mkdir(parents=True)
    assert generate(tmp_path / "out", 4).n == 4
    assert len(list((tmp_path / "out" / "img_align_celeba").iterdir())) == 4


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "cannot read labels_from"),
        (b"3\r\nA B C \r\n000001.jpg 1 -1 1\r\n", "header lacks"),
        (b"", "count"),
        (b"2\n" + " ".join(CELEBA_ATTRIBUTES).encode() + b"\n000001.jpg" + b" 2" * 40, "not 1"),
        (b"2\n" + " ".join(CELEBA_ATTRIBUTES).encode() + b"\n000001.jpg" + b" 1" * 39, "fields"),
        (
            b"2\n"
            + " ".join(CELEBA_ATTRIBUTES).encode()
            + b"\n000001.jpg"
            + b" 1" * 40
            + b"\n000002.jpg"
            + b" 1" * 39,
            r"\.txt:4: expected 41 fields",
        ),
    ],
)
def test_bad_labels_from_file_is_rejected_before_writing(
    tmp_path: Path, content: bytes | None, match: str
) -> None:
    labels = tmp_path / "list_attr_celeba.txt"
    if content is not None:
        labels.write_bytes(content)
    with pytest.raises(InputError, match=match) as info:
        generate(tmp_path / "out", 5, labels_from=str(labels))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_bad_workers_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="workers"):
        generate(tmp_path / "out", 5, workers=0)


# ---------------------------------------------------------------------------------- signal


@pytest.fixture(scope="module")
def pixels_and_labels(large: SynthSummary) -> tuple[np.ndarray, np.ndarray]:
    """Every generated image shrunk to 26 x 32 colour pixels, and its labels."""
    out = Path(large.out_dir)
    ids, labels = read_attr(out / "list_attr_celeba.txt")
    rows = []
    for image_id in ids:
        with Image.open(out / "img_align_celeba" / image_id) as im:
            rows.append(np.asarray(im.resize((26, 32), Image.BILINEAR), dtype=np.float32).ravel())
    return np.stack(rows) / 255.0, labels


def _fit_and_score(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Accuracy, majority-class accuracy and balanced accuracy on a held-out 30%."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, balanced_accuracy_score
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    scaler = StandardScaler().fit(x_tr)
    model = LogisticRegression(C=1e-3, class_weight="balanced", max_iter=2000)
    pred = model.fit(scaler.transform(x_tr), y_tr).predict(scaler.transform(x_te))
    majority = max(y_te.mean(), 1 - y_te.mean())
    return accuracy_score(y_te, pred), majority, balanced_accuracy_score(y_te, pred)


@pytest.mark.parametrize(
    ("attribute", "common"),
    [
        ("Male", True),
        ("Smiling", True),
        ("Mouth_Slightly_Open", True),
        ("Wearing_Lipstick", True),
        ("Blond_Hair", True),
        ("Eyeglasses", False),
        ("Wearing_Hat", False),
    ],
)
def test_rendered_attribute_can_be_learnt_from_pixels(
    pixels_and_labels: tuple[np.ndarray, np.ndarray], attribute: str, common: bool
) -> None:
    assert attribute in RENDERED_ATTRIBUTES
    x, labels = pixels_and_labels
    acc, majority, balanced = _fit_and_score(x, col(labels, attribute))
    assert balanced > 0.70, (attribute, acc, majority, balanced)
    if common:  # rare attributes: the majority class is already ~94% accurate
        assert acc >= majority + 0.05, (attribute, acc, majority, balanced)


def test_unrendered_attribute_cannot_be_learnt_from_pixels(
    pixels_and_labels: tuple[np.ndarray, np.ndarray],
) -> None:
    assert "Attractive" in UNRENDERED_ATTRIBUTES
    x, labels = pixels_and_labels
    y = col(labels, "Attractive")
    assert 0.35 < y.mean() < 0.65  # a balanced label, so chance is 0.5
    acc, majority, balanced = _fit_and_score(x, y)
    assert balanced < 0.6, (acc, majority, balanced)
