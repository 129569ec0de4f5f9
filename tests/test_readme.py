"""README's "Querying the store" examples run as written (against a small store)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.storefakes import make_store

README = Path(__file__).resolve().parents[1] / "README.md"
DEMO_FS = "resnet50-conv5_block3_out-avg-112x96-random0"


def _query_blocks() -> list[str]:
    text = README.read_text()
    section = text.split("## Querying the store", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_has_the_three_examples():
    blocks = _query_blocks()
    assert len(blocks) == 3
    assert "spark.sql" in blocks[0] and "read_pandas" in blocks[1] and "duckdb" in blocks[2]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_readme_query_example_runs(spark, tmp_path, index, capsys):
    root = tmp_path / "store"
    make_store(root, n=24, dim=4, name=DEMO_FS)
    # the toy store has Smiling and Male; the DuckDB example groups by Eyeglasses
    code = _query_blocks()[index].replace('"demo/store"', repr(str(root)))
    code = code.replace("Eyeglasses", "Male")
    namespace: dict = {}
    exec(compile(code, f"README block {index}", "exec"), namespace)
    if index == 0:
        rows = namespace["counts"].collect()
        assert sum(r.n for r in rows) == 24 and {r.dim for r in rows} == {4.0}
    elif index == 1:
        assert namespace["df"].shape[1] == 5 and namespace["X"].shape[1] == 4
        assert len(namespace["plain"]) == 24
    else:
        assert sum(n for _, _, n in namespace["rows"]) == 24
    assert capsys.readouterr().out  # each example shows its result
