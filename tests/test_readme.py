"""README's "Querying the store" examples run as written against a store the real jobs built
(bad images included, so every errors table has rows or exists), and each returns exactly the
committed rows: the counts the manifests declare, read back by Spark SQL, pandas, pyarrow,
DuckDB (by glob, with and without hive partitioning) and polars."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from featstore import store
from tests.conftest import JOB_FS

README = Path(__file__).resolve().parents[1] / "README.md"
DEMO_FS = "resnet50-conv5_block3_out-avg-112x96-random0"


def _query_blocks() -> list[str]:
    text = README.read_text()
    section = text.split("## Querying the store", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_has_the_six_examples():
    blocks = _query_blocks()
    assert len(blocks) == 6
    assert "spark.sql" in blocks[0] and "read_pandas" in blocks[1] and "duckdb" in blocks[2]
    assert "polars" in blocks[3] and "pyarrow" in blocks[3]
    assert "array_cosine_similarity" in blocks[4] and "USING (image_id, split)" in blocks[4]
    assert ".arr.to_struct()" in blocks[5] and "np.linalg.norm" in blocks[5]


def _run(index: int, root: Path) -> dict:
    code = _query_blocks()[index].replace('"demo/store"', repr(str(root)))
    code = code.replace(DEMO_FS, JOB_FS)
    namespace: dict = {}
    exec(compile(code, f"README block {index}", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("index", [0, 1, 2, 3, 4, 5])
def test_readme_query_example_returns_the_committed_rows(spark, job_store, index, capsys):
    fs = store.feature_set_manifest(job_store, JOB_FS)
    committed = fs["counts"]["ok"]
    splits = fs["counts"]["splits"]
    assert store.read_manifest(store.Layout(job_store), "images")["counts"]["errors"] == 2
    ns = _run(index, job_store)
    if index == 0:
        rows = ns["counts"].collect()
        assert sum(r.n for r in rows) == committed and {r.dim for r in rows} == {1280.0}
        per_set = {r.feature_set: r["count"] for r in ns["every_set"].collect()}
        assert per_set == {JOB_FS: committed, f"{JOB_FS}-pca4": committed}
    elif index == 1:
        assert ns["df"].shape == (splits["train"], 5) and ns["X"].shape == (splits["test"], 1280)
        assert len(ns["plain"]) == committed
    elif index == 2:
        assert sum(n for _, _, n in ns["rows"]) == committed
        assert {s for s, _, _ in ns["rows"]} == set(splits)
        assert ns["plain"] == [(committed,)]
        assert sorted(i for i, _, _ in ns["errors"]) == ["000007.jpg", "000011.jpg"]
    elif index == 3:
        assert ns["table"].num_rows == committed
        assert ns["table"].schema.field("embedding").type == store.embedding_type(1280)
        assert dict(ns["per_split"].iter_rows()) == splits
    elif index == 4:
        _check_neighbours(job_store, ns["neighbours"], ns["by_path"])
    else:
        _check_polars_and_numpy(job_store, ns, splits)
    assert capsys.readouterr().out  # each example shows its result


def _train_ids(root: Path) -> set[str]:
    return set(
        store.read_arrow(root, JOB_FS, splits=["train"], attributes=[])["image_id"].to_pylist()
    )


def _check_neighbours(root: Path, neighbours: list, by_path: list) -> None:
    """Five train images, most similar first, with their Smiling label; the read_parquet form
    (FLOAT[] lists, list_cosine_similarity) names the same five."""
    assert len(neighbours) == 5
    ids = [i for i, _, _ in neighbours]
    assert set(ids) <= _train_ids(root) and len(set(ids)) == 5
    sims = [s for _, _, s in neighbours]
    assert sims == sorted(sims, reverse=True) and all(-1.0 <= s <= 1.0 + 1e-6 for s in sims)
    labels = store.read_arrow(root, JOB_FS, attributes=["Smiling"])
    smiling = dict(zip(labels["image_id"].to_pylist(), labels["Smiling"].to_pylist(), strict=True))
    assert [s for _, s, _ in neighbours] == [smiling[i] for i in ids]
    assert [i for (i,) in by_path] == ids


def _check_polars_and_numpy(root: Path, ns: dict, splits: dict) -> None:
    import numpy as np

    train = ns["train"]
    assert train.height == splits["train"] and set(train["split"]) == {"train"}
    assert ns["X"].shape == (splits["train"], 1280) and ns["X"].dtype == np.float32
    means = ns["means"]  # one row per class: Smiling, then 1280 mean columns
    assert means.shape == (2, 1281) and means["Smiling"].to_list() == [False, True]
    x, y, _ = store.load_xy(root, JOB_FS, "Smiling", "train")
    np.testing.assert_allclose(means.row(1)[1:], x[y == 1].mean(axis=0), rtol=1e-4, atol=1e-6)
    # the numpy neighbours are DuckDB's (README's block before this one)
    duck = _run(4, root)["neighbours"]
    assert list(train["image_id"].to_numpy()[ns["nearest"]]) == [i for i, _, _ in duck]
