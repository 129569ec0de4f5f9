"""jobs/ingest.py on generated CelebA-format sets: the tables it writes, errors, exit codes."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from chispa import assert_df_equality
from PIL import Image
from pyspark.sql.types import IntegerType, StringType, StructField, StructType

from featstore import store
from featstore.sources.synthetic import generate
from jobs import ingest as ingest_job
from jobs.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]
N = 24


@pytest.fixture(scope="module")
def celeba_src(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("src") / "celeba"
    generate(out, N, seed=3)
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _ingest(spark, store_dir: Path, src: Path, *extra: str) -> int:
    return ingest_job.main(["--store", str(store_dir), "--path", str(src), *extra], spark=spark)


def test_ingest_writes_images_and_labels(spark, celeba_src, tmp_path):
    st = tmp_path / "store"
    assert _ingest(spark, st, celeba_src) == 0

    images = spark.read.parquet(str(st / "images"))
    got = images.select("image_id", "split", "width", "height").filter("image_id <= '000003.jpg'")
    schema = StructType(
        [
            StructField("image_id", StringType(), False),
            StructField("split", StringType(), False),
            StructField("width", IntegerType(), False),
            StructField("height", IntegerType(), False),
        ]
    )
    expected = spark.createDataFrame(
        [
            ("000001.jpg", "train", 178, 218),
            ("000002.jpg", "train", 178, 218),
            ("000003.jpg", "train", 178, 218),
        ],
        schema,
    )
    assert_df_equality(
        got, expected, ignore_row_order=True, ignore_nullable=True, ignore_column_order=True
    )
    assert images.count() == N
    # the bytes stored are the file's bytes
    row = images.filter("image_id = '000007.jpg'").select("content", "source_path").first()
    assert bytes(row.content) == (celeba_src / "img_align_celeba" / "000007.jpg").read_bytes()
    assert row.source_path.endswith("img_align_celeba/000007.jpg")
    # partitioned by split, as the partition file says (official proportions: last ids are test)
    splits = {r.split: r["count"] for r in images.groupBy("split").count().collect()}
    part = (celeba_src / "list_eval_partition.txt").read_text().split()
    want = {"0": 0, "1": 0, "2": 0}
    for code in part[1::2]:
        want[code] += 1
    assert splits == {"train": want["0"], "val": want["1"], "test": want["2"]}
    # the data folder holds only its Parquet data (no manifest, errors, _SUCCESS or .crc)
    assert sorted(p.name for p in (st / "images").iterdir()) == [
        "split=test",
        "split=train",
        "split=val",
    ]
    assert all(p.suffix == ".parquet" for p in (st / "images").rglob("*") if p.is_file())
    assert (st / "errors" / "images").is_dir()  # the errors table exists, even empty


def test_labels_table_matches_attribute_file(spark, celeba_src, tmp_path):
    st = tmp_path / "store"
    assert _ingest(spark, st, celeba_src) == 0
    labels = pq.read_table(st / "labels").to_pandas().set_index("image_id")
    assert labels.shape == (N, 43)  # split, identity, class (null: CelebA has none) + 40 attributes
    assert labels["class"].isna().all()
    ident = dict(
        line.split() for line in (celeba_src / "identity_CelebA.txt").read_text().splitlines()
    )
    assert {i: str(v) for i, v in labels["identity"].items()} == ident
    lines = (celeba_src / "list_attr_celeba.txt").read_bytes().split(b"\r\n")
    names = lines[1].decode().split()
    for line in lines[2:5]:
        image_id, *values = line.decode().split()
        row = labels.loc[image_id]
        assert [bool(row[a]) for a in names] == [v == "1" for v in values]
    manifest = store.read_manifest(store.Layout(st), "labels")
    assert manifest["attributes"] == names and manifest["schema_version"] == store.SCHEMA_VERSION


def _bad_jpegs(img_dir: Path) -> None:
    good = (img_dir / "000002.jpg").read_bytes()
    (img_dir / "000002.jpg").write_bytes(good[: len(good) // 2])  # truncated
    (img_dir / "000003.jpg").write_bytes(b"")  # empty
    buf = io.BytesIO()
    Image.new("RGB", (178, 218), "red").save(buf, "PNG")
    (img_dir / "000004.jpg").write_bytes(buf.getvalue())  # PNG in a .jpg: converted, not an error
    (img_dir / "000005.jpg").write_bytes(b"this is not an image at all" * 10)  # garbage
    (img_dir / "000006.jpg").unlink()  # listed but missing
    shutil.copy(img_dir / "000001.jpg", img_dir / "999999.jpg")  # present but not listed


def test_bad_images_go_to_errors_table_and_counts_add_up(spark, celeba_src, tmp_path):
    src = _copy(celeba_src, tmp_path / "src")
    _bad_jpegs(src / "img_align_celeba")
    st = tmp_path / "store"
    assert _ingest(spark, st, src) == 1  # finished, with per-image errors recorded

    errors = store.read_errors(st, "images").to_pandas().set_index("image_id")
    assert sorted(errors.index) == [
        "000002.jpg",
        "000003.jpg",
        "000005.jpg",
        "000006.jpg",
        "999999.jpg",
    ]
    assert "truncated" in errors.loc["000002.jpg", "error"]
    assert errors.loc["000003.jpg", "error"] == "empty content"
    assert "not an image" in errors.loc["000005.jpg", "error"]
    assert errors.loc["000006.jpg", "stage"] == "listing"
    assert errors.loc["999999.jpg", "stage"] == "listing"
    assert errors.loc["000002.jpg", "stage"] == "decode"

    images = spark.read.parquet(str(st / "images"))
    assert images.count() == N - 4
    assert images.filter("image_id in ('000002.jpg','000006.jpg','999999.jpg')").count() == 0
    png = images.filter("image_id = '000004.jpg'").select("content", "width", "height").first()
    with Image.open(io.BytesIO(bytes(png.content))) as stored:  # the PNG, stored as a JPEG
        assert (stored.format, stored.size, (png.width, png.height)) == (
            "JPEG",
            (178, 218),
            (178, 218),
        )
    manifest = store.read_manifest(store.Layout(st), "images")
    c = manifest["counts"]
    assert (c["ok"], c["errors"], c["listed"]) == (N - 4, 5, N - 1)
    assert c["ok"] + c["errors"] == N + 1  # every file seen: 24 listed + 1 unlisted
    labels = pq.read_table(st / "labels").to_pandas()
    assert len(labels) == N - 4 and "000002.jpg" not in set(labels["image_id"])


def test_bad_annotation_stops_before_writing(spark, celeba_src, tmp_path, capsys):
    src = _copy(celeba_src, tmp_path / "src")
    attr = src / "list_attr_celeba.txt"
    lines = attr.read_bytes().split(b"\r\n")
    lines[5] = lines[5].replace(b" 1", b" 0", 1) if b" 1" in lines[5] else lines[5] + b"  0"
    attr.write_bytes(b"\r\n".join(lines))
    st = tmp_path / "store"
    assert _ingest(spark, st, src) == 2
    err = capsys.readouterr().err
    assert "list_attr_celeba.txt:6" in err
    assert not st.exists() or not any(st.iterdir())


def test_rerun_is_idempotent_and_overwrite_rebuilds(spark, celeba_src, tmp_path, capsys):
    st = tmp_path / "store"
    capsys.readouterr()
    assert _ingest(spark, st, celeba_src) == 0
    timing = re.search(
        r"^ingest time: read listing [\d.]+ s \(\d+%\), read\+validate\+write "
        r"images \(Spark\) [\d.]+ s \(\d+%\), labels\+errors\+commit [\d.]+ s "
        r"\(\d+%\) of ([\d.]+) s$",
        capsys.readouterr().out,
        re.M,
    )
    assert timing and float(timing.group(1)) > 0
    first = store.read_manifest(store.Layout(st), "images")
    files = sorted(p.relative_to(st) for p in st.rglob("*.parquet"))
    everything = sorted(p.relative_to(st) for p in st.rglob("*"))
    capsys.readouterr()
    # --dry-run on a store that holds this input: nothing to do (and nothing written)
    assert _ingest(None, st, celeba_src, "--dry-run") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"dry run: already ingested (this input): nothing to do -> {st}"
    assert f"input:       fingerprint {first['input_fingerprint'][:12]}" in out
    assert not any(ln.startswith("writes:") for ln in out)
    # with --overwrite: what it would rebuild
    assert _ingest(None, st, celeba_src, "--dry-run", "--overwrite") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"dry run: nothing was run or written -> {st}"
    assert any(ln.endswith("--overwrite: replaces the store's tables") for ln in out)
    assert sorted(p.relative_to(st) for p in st.rglob("*")) == everything
    assert _ingest(spark, st, celeba_src) == 0
    assert "already ingested" in capsys.readouterr().out
    assert store.read_manifest(store.Layout(st), "images") == first
    assert sorted(p.relative_to(st) for p in st.rglob("*.parquet")) == files

    assert _ingest(spark, st, celeba_src, "--overwrite") == 0
    again = spark.read.parquet(str(st / "images"))
    assert again.count() == N
    assert again.select("image_id").distinct().count() == N
    assert not any(store.Layout(st).staging.iterdir())


def _no_spark(monkeypatch) -> None:
    """A dry run that started Spark or ran the ingest would fail here."""

    def refuse(*args, **kwargs):
        raise AssertionError("--dry-run started Spark or ran the ingest")

    monkeypatch.setattr(ingest_job, "SparkProvider", refuse)
    monkeypatch.setattr("featstore.ingest.run_ingest", refuse)


def test_dry_run_prints_the_plan_and_writes_nothing(celeba_src, tmp_path, capsys, monkeypatch):
    _no_spark(monkeypatch)
    src = _copy(celeba_src, tmp_path / "src")
    (src / "img_align_celeba" / "000006.jpg").unlink()  # listed but missing: a problem
    st = tmp_path / "store"
    capsys.readouterr()
    assert _ingest(None, st, src, "--dry-run") == 0
    out = capsys.readouterr().out.splitlines()
    part = (src / "list_eval_partition.txt").read_text().split()
    codes = dict(zip(part[0::2], part[1::2]))
    del codes["000006.jpg"]
    want = {
        s: list(codes.values()).count(c) for s, c in (("train", "0"), ("val", "1"), ("test", "2"))
    }
    splits = ", ".join(f"{s} {n}" for s, n in want.items() if n)
    assert out[0] == f"source:      celeba {src.resolve()}"
    assert out[1] == f"store:       {st} (new)"
    assert out[2] == (
        f"images:      {N - 1} listed ({splits}); 1 missing or unlisted (-> the errors table)"
    )
    assert out[3] == "attributes:  40; identity column: yes; class column: no (null)"
    assert re.fullmatch(r"input:       fingerprint [0-9a-f]{12}", out[4])
    assert out[5] == f"writes:      {st / 'images'} (by split, at most 20,000 rows a file)"
    assert out[6] == f"{'':13}{st / 'labels'} (a row per image that decodes: {N - 1} at most)"
    assert out[7] == f"dry run: nothing was run or written -> {st}"
    assert len(out) == 8
    assert not st.exists()  # no store folder, no images table


def test_dry_run_of_a_folder_set_and_of_bad_input(tmp_path, capsys, monkeypatch):
    _no_spark(monkeypatch)
    root = tmp_path / "flowers"
    for cls in ("daisy", "rose"):
        (root / cls).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (20, 10), "red").save(root / cls / f"{i}.jpg")
    st = tmp_path / "store"
    st.mkdir()
    capsys.readouterr()
    rc = ingest_job.main(
        ["--store", str(st), "--source", "folder", "--path", str(root), "--dry-run"]
    )
    assert rc == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == f"store:       {st}"
    from featstore.sources.folder import read_folder

    split = read_folder(root).images["split"]  # the listing's split: seeded, stratified
    want = ", ".join(f"{s} {(split == s).sum()}" for s in ("train", "val", "test"))
    assert out[2] == f"images:      10 listed ({want})"
    assert out[3] == "attributes:  2; identity column: no (null); class column: yes"
    assert out[-1] == f"dry run: nothing was run or written -> {st}"
    assert not (st / "images").exists() and not any(st.iterdir())
    # bad input: the same one line and exit 2 as without --dry-run
    assert _ingest(None, st, tmp_path / "nowhere", "--dry-run") == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = [ln for ln in captured.err.splitlines() if ln.startswith("featstore: error:")]
    assert "nowhere" in line


def test_folder_source(spark, tmp_path):
    root = tmp_path / "flowers"
    for cls, colour in (("daisy", "white"), ("rose", "red"), ("tulip", "yellow")):
        (root / cls).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (40, 30), colour).save(root / cls / f"{i}.jpg")
    st = tmp_path / "store"
    rc = ingest_job.main(
        ["--store", str(st), "--source", "folder", "--path", str(root)], spark=spark
    )
    assert rc == 0
    labels = pq.read_table(st / "labels").to_pandas()
    assert list(labels.columns) == [
        "image_id",
        "split",
        "identity",
        "class",
        "daisy",
        "rose",
        "tulip",
    ]
    assert len(labels) == 18
    assert labels["identity"].isna().all()  # a folder has no people
    assert (labels["class"] == labels["image_id"].str.split("/").str[0]).all()
    assert labels.loc[
        labels.image_id == "rose/3.jpg", ["daisy", "rose", "tulip"]
    ].values.tolist() == [[False, True, False]]
    images = spark.read.parquet(str(st / "images"))
    assert images.filter("width = 40 and height = 30").count() == 18


def test_ls_and_describe(spark, celeba_src, tmp_path, capsys):
    st = tmp_path / "store"
    assert _ingest(spark, st, celeba_src) == 0
    capsys.readouterr()
    assert cli_main(["ls", str(st)]) == 0
    out = capsys.readouterr().out
    assert "images" in out and f"{N} rows" in out and "labels" in out
    assert cli_main(["describe", str(st), "images", "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["counts"]["ok"] == N and manifest["source"] == "celeba"
    assert cli_main(["describe", str(st), "nope"]) == 2
    assert "no committed table or feature set 'nope'" in capsys.readouterr().err


def test_script_exit_code_for_missing_source(tmp_path):
    """`python jobs/ingest.py` as spark-submit would run it: one clear line, exit 2, no Spark."""
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "jobs" / "ingest.py"),
            "--store",
            str(tmp_path / "s"),
            "--path",
            str(tmp_path / "nowhere"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("featstore: error:")]
    assert len(lines) == 1 and "nowhere" in lines[0]
    assert not (tmp_path / "s").exists()
