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


def test_readme_has_the_four_examples():
    blocks = _query_blocks()
    assert len(blocks) == 4
    assert "spark.sql" in blocks[0] and "read_pandas" in blocks[1] and "duckdb" in blocks[2]
    assert "polars" in blocks[3] and "pyarrow" in blocks[3]


def _run(index: int, root: Path) -> dict:
    code = _query_blocks()[index].replace('"demo/store"', repr(str(root)))
    code = code.replace(DEMO_FS, JOB_FS)
    namespace: dict = {}
    exec(compile(code, f"README block {index}", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("index", [0, 1, 2, 3])
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
    else:
        assert ns["table"].num_rows == committed
        assert dict(ns["per_split"].iter_rows()) == splits
    assert capsys.readouterr().out  # each example shows its result
