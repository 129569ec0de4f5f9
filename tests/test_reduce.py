"""jobs/reduce.py: PCA feature sets equal scikit-learn's PCA, bad input writes nothing, re-runs
skip. The source feature set is written directly with pyarrow (no CNN needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.decomposition import PCA

from featstore import store
from featstore.reduce import PCA_FILE, load_projection
from jobs import reduce as reduce_job

REPO = Path(__file__).resolve().parents[1]
SOURCE = "synthnet-block9-avg"
D = 64
SPLITS = {"train": 200, "val": 50, "test": 50}
DIMS = (3, 8, 20)
# Output floats are float32 from a float64 computation; the reference is sklearn in float64.
# Allowed difference per component: 1e-4 of that component's standard deviation on train.
RTOL_SCALE = 1e-4


def _embeddings(n: int, seed: int) -> np.ndarray:
    """Low-rank structure (10 factors of well-separated scales), small noise, a large offset."""
    rng = np.random.default_rng(seed)
    loadings = np.linalg.qr(rng.normal(size=(D, 10)))[0]
    scales = 12.0 * 0.7 ** np.arange(10)
    x = (rng.normal(size=(n, 10)) * scales) @ loadings.T + 0.05 * rng.normal(size=(n, D))
    return (x + rng.uniform(50, 150, size=D)).astype(np.float32)


def write_source(
    store_dir: Path,
    name: str = SOURCE,
    splits: dict[str, int] | None = None,
    *,
    manifest_ok: int | None = None,
    commit: bool = True,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """A feature set as extract writes it, through the store's writer: features/feature_set=
    <name>/split=<s>/part-*.parquet + manifest (unless ``commit`` is False: the writer fails
    before its commit). ``manifest_ok``: a manifest edited afterwards to declare that many rows
    (a damaged table). Returns {split: embeddings, split + "_ids": image ids}."""
    splits = SPLITS if splits is None else splits
    writer = store.TableWriter(store.Layout(store_dir), store.features_id(name))
    writer.__enter__()
    table_dir = writer.data
    x = _embeddings(sum(splits.values()), seed)
    out: dict[str, np.ndarray] = {}
    start = 0
    for split, n in splits.items():
        ids = np.array([f"{split}-{i:05d}.jpg" for i in range(n)])
        xs = x[start : start + n]
        start += n
        out[split], out[f"{split}_ids"] = xs, ids
        part = table_dir / f"split={split}"
        part.mkdir(parents=True)
        half = n // 2  # two files per split
        for j, (a, b) in enumerate(((0, half), (half, n))):
            table = pa.Table.from_pydict(
                {
                    "image_id": ids[a:b].tolist(),
                    "split": [split] * (b - a),
                    "embedding": list(xs[a:b]),
                },
                schema=store.FEATURES_SCHEMA,
            )
            pq.write_table(table.drop(["split"]), part / f"part-{j:05d}.parquet")
    if not commit:
        writer.__exit__(RuntimeError, RuntimeError("killed"), None)
        return out
    store.write_errors(writer.errors, [])
    writer.commit(
        store.base_manifest(
            "features",
            name=name,
            run_key=f"key-{name}-{seed}",
            model="synthnet",
            layers=["block9"],
            pooling="avg",
            weights={"source": "random", "sha256": None},
            dim=D,
            counts={"ok": sum(splits.values()), "errors": 0},
            input={"table": "images", "fingerprint": "f00"},
        )
    )
    writer.__exit__(None, None, None)
    if manifest_ok is not None:
        path = store.Layout(store_dir).manifest_path(store.features_id(name))
        m = json.loads(path.read_text())
        m["counts"]["ok"] = manifest_ok
        path.write_text(json.dumps(m))
    return out


def _read_set(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (image_ids, embeddings)} from the Parquet files the job wrote, sorted by id."""
    table = pq.read_table(path).to_pandas()
    table["split"] = table["split"].astype(str)
    out = {}
    for split, part in table.groupby("split"):
        part = part.sort_values("image_id")
        out[split] = (part["image_id"].to_numpy(), np.stack(part["embedding"].to_numpy()))
    return out


def _listing(store_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(store_dir)) for p in store_dir.rglob("*"))


@pytest.fixture(scope="module")
def reduced(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("reduce") / "store"
    data = write_source(root)
    rc = reduce_job.main(
        ["--store", str(root), "--feature-set", SOURCE, "--dims", ",".join(map(str, DIMS))],
        spark=spark,
    )
    assert rc == 0
    return root, data


@pytest.mark.parametrize("k", DIMS)
def test_reduced_features_equal_sklearn_pca_on_all_splits(reduced, k):
    root, data = reduced
    reference = PCA(n_components=k, svd_solver="full").fit(data["train"].astype(np.float64))
    got = _read_set(store.Layout(root).features(f"{SOURCE}-pca{k}"))
    assert sorted(got) == sorted(SPLITS)
    scale = reference.transform(data["train"].astype(np.float64)).std(axis=0)
    for split, n in SPLITS.items():
        ids, z = got[split]
        assert z.dtype == np.float32 and z.shape == (n, k)
        order = np.argsort(data[f"{split}_ids"])
        assert (ids == data[f"{split}_ids"][order]).all()
        expected = reference.transform(data[split][order].astype(np.float64))
        for j in range(k):  # per component, up to sign
            sign = 1.0 if np.dot(z[:, j], expected[:, j]) >= 0 else -1.0
            np.testing.assert_allclose(
                sign * z[:, j],
                expected[:, j],
                rtol=0,
                atol=RTOL_SCALE * scale[j],
                err_msg=f"pca{k} component {j} on {split}",
            )


@pytest.mark.parametrize("k", DIMS)
def test_manifest_and_projection_file(reduced, k):
    root, data = reduced
    reference = PCA(n_components=k, svd_solver="full").fit(data["train"].astype(np.float64))
    table_dir = store.Layout(root).features(f"{SOURCE}-pca{k}")
    m = store.feature_set_manifest(root, f"{SOURCE}-pca{k}")
    assert m["reducer"] == "pca" and m["dim"] == k and m["fit_split"] == "train"
    assert m["n_fit"] == SPLITS["train"]
    assert m["source"]["name"] == SOURCE and m["source"]["run_key"] == f"key-{SOURCE}-0"
    assert m["model"] == "synthnet" and m["layers"] == ["block9"] and m["pooling"] == "avg"
    assert m["counts"] == {"ok": sum(SPLITS.values()), "errors": 0, "splits": SPLITS}
    np.testing.assert_allclose(
        m["explained_variance_ratio"], reference.explained_variance_ratio_, rtol=1e-9, atol=1e-12
    )
    assert m["explained_variance_ratio_sum"] == pytest.approx(
        reference.explained_variance_ratio_.sum(), rel=1e-9
    )
    # the saved projection reproduces the stored features on new data (here: the test split)
    proj = load_projection(root, f"{SOURCE}-pca{k}")
    assert proj.components.shape == (k, D)
    # sign convention: the largest-|value| loading of every component is positive
    assert (proj.components[np.arange(k), np.abs(proj.components).argmax(axis=1)] > 0).all()
    ids, z = _read_set(table_dir)["test"]
    by_id = dict(zip(data["test_ids"], data["test"], strict=True))
    np.testing.assert_allclose(
        proj.transform(np.stack([by_id[i] for i in ids])),
        z,
        rtol=0,
        atol=1e-5 * float(np.abs(z).max()),
    )


def test_listing_shows_the_new_sets(reduced):
    root, _ = reduced
    names = [t["name"] for t in store.list_tables(root) if t["kind"] == "features"]
    assert names == sorted([SOURCE, *(f"{SOURCE}-pca{k}" for k in DIMS)])
    assert not list(store.Layout(root).staging.iterdir())


def _no_spark(monkeypatch) -> None:
    """A dry run that started Spark or ran the reduction would fail here."""

    def refuse(*args, **kwargs):
        raise AssertionError("--dry-run started Spark or ran the reduction")

    monkeypatch.setattr(reduce_job, "SparkProvider", refuse)
    monkeypatch.setattr("featstore.reduce.run_reduce", refuse)


def test_dry_run_shows_the_plan_and_writes_nothing(reduced, capsys, monkeypatch):
    """On the store the real job reduced (``reduced``): the source's rows per split, the sets
    to write and those committed (skipped), the fit rows, and not a file changed."""
    root, _ = reduced
    _no_spark(monkeypatch)
    before, tables = _listing(root), store.list_tables(root)
    splits = store.rows_per_split(store.feature_set_manifest(root, SOURCE)["files"])
    assert splits == SPLITS  # the manifest's counts: what the dry run shows
    rows = sum(SPLITS.values())
    head = [
        f"store:       {root}",
        f"source:      {SOURCE} ({D} floats; {rows} rows: "
        + ", ".join(f"{s} {n}" for s, n in splits.items())
        + ")",
        f"fit:         PCA on the {SPLITS['train']} train rows; every split is projected",
    ]

    def skipped(k: int) -> str:
        m = store.feature_set_manifest(root, f"{SOURCE}-pca{k}")
        return (
            f"{SOURCE}-pca{k} ({k} floats): skip: already committed from this source, explained "
            f"variance {100 * m['explained_variance_ratio_sum']:.1f}% (--overwrite recomputes it)"
        )

    args = ["--store", str(root), "--feature-set", SOURCE, "--dry-run"]
    capsys.readouterr()
    assert reduce_job.main([*args, "--dims", "8,20,30"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        *head,
        f"sets:        {skipped(8)}",
        f"{'':13}{skipped(20)}",
        f"{'':13}{SOURCE}-pca30 (30 floats): write {rows} rows",
        f"writes:      {root / 'features'} (feature_set={SOURCE}-pca<k>, k=30)",
        f"dry run: nothing was run or written -> {root}",
    ]
    # every set committed with these settings: nothing to do
    assert reduce_job.main([*args, "--dims", ",".join(map(str, DIMS))]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[3:] == [
        f"sets:        {skipped(DIMS[0])}",
        *(f"{'':13}{skipped(k)}" for k in DIMS[1:]),
        f"dry run: already reduced (these sets, this source): nothing to do -> {root}",
    ]
    # --overwrite: the committed set would be recomputed and replaced
    assert reduce_job.main([*args, "--dims", "8", "--overwrite"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert (
        out[3]
        == f"sets:        {SOURCE}-pca8 (8 floats): write {rows} rows; replaces the committed set"
    )
    assert out[-1] == f"dry run: nothing was run or written -> {root}"
    # bad input: the same one line and exit 2 as without --dry-run
    assert reduce_job.main([*args, "--dims", "8,65"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = [ln for ln in captured.err.splitlines() if ln.startswith("featstore:")]
    assert "larger than the embedding dimension 64" in line
    assert _listing(root) == before and store.list_tables(root) == tables


def test_rerun_skips_committed_sets_and_overwrite_recomputes(spark, tmp_path, capsys):
    root = tmp_path / "store"
    write_source(root, seed=1)
    args = ["--store", str(root), "--feature-set", SOURCE, "--dims", "2,4"]
    assert reduce_job.main(args, spark=spark) == 0
    created = {k: store.feature_set_manifest(root, f"{SOURCE}-pca{k}")["created"] for k in (2, 4)}
    first = pq.read_table(store.Layout(root).features(f"{SOURCE}-pca4")).sort_by("image_id")
    capsys.readouterr()
    assert reduce_job.main(args, spark=None) == 0  # nothing to do: no Spark session needed
    out = capsys.readouterr().out
    assert out.startswith("already reduced") and out.count("(already committed)") == 2
    # one more dimension: only that set is written, the others are left as they are
    assert reduce_job.main([*args[:-1], "2,4,6"], spark=spark) == 0
    for k in (2, 4):
        m = store.feature_set_manifest(root, f"{SOURCE}-pca{k}")
        assert m["created"] == created[k]
    m6 = store.feature_set_manifest(root, f"{SOURCE}-pca6")
    assert m6["dim"] == 6
    six = pq.read_table(store.Layout(root).features(f"{SOURCE}-pca6")).sort_by("image_id")
    np.testing.assert_allclose(
        np.stack(six["embedding"].to_numpy(zero_copy_only=False))[:, :4],
        np.stack(first["embedding"].to_numpy(zero_copy_only=False)),
        rtol=0,
        atol=1e-5,
    )  # nested: pca6 starts with pca4
    assert reduce_job.main([*args, "--overwrite"], spark=spark) == 0
    assert store.feature_set_manifest(root, f"{SOURCE}-pca4")["run_key"] == m6["run_key"]
    second = pq.read_table(store.Layout(root).features(f"{SOURCE}-pca4")).sort_by("image_id")
    assert second["image_id"].equals(first["image_id"])
    np.testing.assert_allclose(
        np.stack(second["embedding"].to_numpy(zero_copy_only=False)),
        np.stack(first["embedding"].to_numpy(zero_copy_only=False)),
        rtol=0,
        atol=1e-5,
    )
    # a reduced set is a feature set like any other: it can be reduced again
    assert (
        reduce_job.main(
            ["--store", str(root), "--feature-set", f"{SOURCE}-pca6", "--dims", "2"], spark=spark
        )
        == 0
    )
    m = store.feature_set_manifest(root, f"{SOURCE}-pca6-pca2")
    assert m["source"]["name"] == f"{SOURCE}-pca6" and m["dim"] == 2 and m["model"] == "synthnet"
    assert m["explained_variance_ratio_sum"] > m6["explained_variance_ratio"][0]


def _bad_source(kind: str, root: Path) -> tuple[list[str], str]:
    """Arguments and expected message of one kind of bad input."""
    if kind == "dim-too-large":
        write_source(root)
        return ["--dims", "8,65"], "larger than the embedding dimension 64"
    if kind == "dim-zero":
        write_source(root)
        return ["--dims", "0,8"], "dimension 0 is < 1"
    if kind == "dim-over-train-rows":
        write_source(root, splits={"train": 10, "val": 5})
        return ["--dims", "4,11"], "larger than the 10 train rows"
    if kind == "count-mismatch":
        write_source(root, manifest_ok=299)
        return [], "counts say 299 rows, its files hold 300"
    if kind == "uncommitted":
        write_source(root, commit=False)
        return [], f"no committed feature set {SOURCE!r}"
    if kind == "unknown-set":
        write_source(root)
        return ["--feature-set", "nope"], f"no committed feature set 'nope' (committed: {SOURCE})"
    if kind == "no-train-rows":
        write_source(root, splits={"val": 20, "test": 20})
        return ["--dims", "2"], "'train' split, which has 0 rows"
    if kind == "unknown-store":
        return ["--store", str(root.parent / "no-such-store")], "no such store folder"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "dim-too-large",
        "dim-zero",
        "dim-over-train-rows",
        "count-mismatch",
        "uncommitted",
        "unknown-set",
        "no-train-rows",
        "unknown-store",
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(spark, tmp_path, capsys, kind):
    root = tmp_path / "store"
    extra, message = _bad_source(kind, root)
    before = _listing(tmp_path)
    rc = reduce_job.main(["--store", str(root), "--feature-set", SOURCE, *extra], spark=spark)
    assert rc == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("featstore:")]
    assert len(lines) == 1 and message in lines[0], lines
    assert _listing(tmp_path) == before


def test_script_entry_point_reports_bad_input(tmp_path):
    """``python jobs/reduce.py`` (what spark-submit runs): bad input -> exit 2 before Spark."""
    root = tmp_path / "store"
    write_source(root)
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "jobs" / "reduce.py"),
            "--store",
            str(root),
            "--feature-set",
            SOURCE,
            "--dims",
            "128",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("featstore: error: ")
    layout = store.Layout(root)
    assert "128" in proc.stderr and not list(layout.staging.iterdir())
    assert store.feature_set_manifest(root, SOURCE)["dim"] == D
    assert not list(layout.features_root.glob("*-pca*"))
    assert PCA_FILE not in [p.name for p in layout.table_meta(f"features/{SOURCE}").iterdir()]
