"""`featstore demo` (README's run command) on a tiny set: every stage runs and the report exists."""

from __future__ import annotations

from pathlib import Path

from featstore import store
from jobs.cli import main as cli_main


def test_demo_runs_the_whole_chain(spark, tmp_path, capsys):
    out = tmp_path / "demo"
    rc = cli_main(["demo", "--out", str(out), "--n", "150",
                   "--set", "extract.input_size=64x64", "--set", "reduce.dims=4,8",
                   "--set", "train.models=lasso,dense", "--set", "train.attributes=Smiling,Male",
                   "--set", "train.train_sizes=0", "--set", "train.folds=3",
                   "--set", "train.dense_epochs=5", "--set", "train.bootstrap=200"], spark=spark)
    assert rc == 0
    text = capsys.readouterr().out
    for stage in ("[synth   ]", "[ingest  ]", "[extract ]", "[reduce  ]", "[train   ]",
                  "[report  ]"):
        assert stage in text, stage
    assert "RANDOM weights" in text
    report = Path(text.split("report: ", 1)[1].split()[0])
    assert report == out / "report" / "index.html" and report.is_file()
    assert "Smiling" in text and "Male" in text  # the summary table is printed
    want = ["resnet50-conv5_block3_out-avg-64x64-random0",
            "resnet50-conv5_block3_out-avg-64x64-random0-pca4",
            "resnet50-conv5_block3_out-avg-64x64-random0-pca8"]
    layout = store.Layout(out / "store")
    assert sorted(p.name for p in layout.features_root.iterdir()) == [
        f"{store.PARTITION}={name}" for name in want]
    assert sorted(store.feature_set_names(layout.root)) == want  # all of them committed
