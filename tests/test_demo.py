"""`featstore demo` (README's run command) on a tiny set: every stage runs for both conv bases,
retrieval included, and the report compares the two bases."""

from __future__ import annotations

import re
from pathlib import Path

from featstore import store
from featstore.retrieval import read_retrieval
from jobs.cli import main as cli_main
from jobs.demo import DEMO_BASES


def test_demo_runs_the_whole_chain_on_two_bases(spark, tmp_path, capsys):
    out = tmp_path / "demo"
    rc = cli_main(
        [
            "demo",
            "--out",
            str(out),
            "--n",
            "150",
            "--set",
            "extract.input_size=64x64",
            "--set",
            "reduce.dims=4,8",
            "--set",
            "train.models=lasso,dense",
            "--set",
            "train.attributes=Smiling,Male",
            "--set",
            "train.train_sizes=0",
            "--set",
            "train.folds=3",
            "--set",
            "train.dense_epochs=5",
            "--set",
            "train.bootstrap=200",
        ],
        spark=spark,
    )
    assert rc == 0
    text = capsys.readouterr().out
    for stage in ("[synth   ]", "[ingest  ]", "[report  ]"):
        assert text.count(stage) == 1, stage
    for stage in ("[extract ]", "[reduce  ]", "[retrieve]", "[train   ]"):  # once per base
        lines = [line for line in text.splitlines() if line.startswith(stage)]
        assert [b for b in DEMO_BASES if any(b in line for line in lines)] == list(DEMO_BASES)
    assert "RANDOM weights" in text
    report = Path(text.split("report: ", 1)[1].split()[0])
    assert report == out / "report" / "index.html" and report.is_file()
    assert "Smiling" in text and "Male" in text  # the summary table is printed

    raw = {
        "resnet50": "resnet50-conv5_block3_out-avg-64x64-random0",
        "mobilenetv2": "mobilenetv2-out_relu-avg-64x64-random0",
    }
    assert sorted(raw) == sorted(DEMO_BASES)
    want = sorted(f"{r}{suffix}" for r in raw.values() for suffix in ("", "-pca4", "-pca8"))
    layout = store.Layout(out / "store")
    assert sorted(p.name for p in layout.features_root.iterdir()) == [
        f"{store.PARTITION}={name}" for name in want
    ]
    assert sorted(store.feature_set_names(layout.root)) == want  # all of them committed
    # retrieval on every set of both bases: test queries against train items, k = 1, 5, 10
    for name in want:
        rows = read_retrieval(str(layout.root), name)
        assert set(rows["k"]) == {1, 5, 10} and set(rows["queries"]) == {"test"}, name
    # one grid over both bases' reduced sets
    results = store.read_results(layout.root)
    assert sorted(results["feature_set"].unique()) == [w for w in want if "-pca" in w]
    # the report compares the two bases
    page = report.read_text()
    section = re.search(r'<section id="bases">(.*?)</section>', page, re.S)
    assert section and all(f"<td>{b}</td>" in section.group(1) for b in DEMO_BASES)
