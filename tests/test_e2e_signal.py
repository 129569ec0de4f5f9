"""The chain on a synthetic store: images -> ingest -> extract -> train. Rendered attributes are
learned from CNN features; an attribute whose labels are independent of the images is not."""

from __future__ import annotations

import pytest

from featstore.sources.synthetic import RENDERED_ATTRIBUTES, UNRENDERED_ATTRIBUTES, generate
from featstore.train.grid import read_results
from jobs import extract as extract_job
from jobs import ingest as ingest_job
from jobs import train as train_job


@pytest.fixture(scope="module")
def synthetic_store(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    generate(root / "celeba", 500, seed=1, workers=2)
    st = root / "store"
    assert ingest_job.main(["--store", str(st), "--path", str(root / "celeba")], spark=spark) == 0
    # random weights (no downloads here) still give features that carry the drawn attributes
    assert extract_job.main(["--store", str(st), "--model", "resnet50", "--input-size", "64x64",
                             "--weights", "random", "--feature-set", "r50", "--batch-size", "50"],
                            spark=spark) == 0
    return st


def test_rendered_attributes_beat_baseline_independent_one_does_not(spark, synthetic_store):
    assert {"Smiling", "Male"} <= set(RENDERED_ATTRIBUTES)
    assert "Attractive" in UNRENDERED_ATTRIBUTES
    rc = train_job.main(["--store", str(synthetic_store), "--feature-sets", "r50",
                         "--attributes", "Smiling,Male,Attractive", "--models", "lasso",
                         "--set", "train.folds=3", "--set", "train.lasso_cs=6",
                         "--set", "train.bootstrap=500"], spark=spark)
    assert rc == 0
    res = read_results(synthetic_store).set_index("attribute")
    assert (res.status == "ok").all() and (res.n_test > 40).all()
    for attr in ("Smiling", "Male"):
        row = res.loc[attr]
        # clearly above: the whole 95% bootstrap interval lies above the majority baseline
        assert row.ci_low > row.majority_baseline, (attr, row.accuracy, row.majority_baseline)
    noise = res.loc["Attractive"]
    assert noise.ci_low <= noise.majority_baseline
