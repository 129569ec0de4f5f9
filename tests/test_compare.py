"""The base-comparison study: the Pareto front, the command's bad input, the report section."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from featstore import store
from featstore.compare import base_table, pareto_front, topk_chance
from featstore.config import load_config, packaged_configs
from tests.conftest import JOB_FS, REPO

STUDY_BASES = (
    "vgg16",
    "resnet50",
    "mobilenetv2",
    "efficientnetb0",
    "inceptionv3",
    "xception",
    "densenet121",
)


def test_pareto_front_on_a_constructed_case():
    # cost, score: a (1, .5) and c (3, .9) are on the front; b (2, .4) is beaten by a;
    # d (3, .8) by c; e (1, .5) ties a (neither dominates); f has no cost
    cost = [1, 2, 3, 3, 1, np.nan]
    score = [0.5, 0.4, 0.9, 0.8, 0.5, 0.99]
    assert pareto_front(cost, score).tolist() == [True, False, True, False, True, False]


def test_compare_bases_yaml_is_packaged_and_lists_the_study():
    assert "compare_bases.yaml" in packaged_configs()
    cfg = load_config("compare_bases.yaml")
    assert set(STUDY_BASES) <= set(cfg.compare.bases) and cfg.reduce.dims and 5 in cfg.retrieve.k


def test_unknown_base_is_one_line_before_spark(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.cli",
            "compare",
            "--store",
            str(tmp_path / "s"),
            "--bases",
            "mobilenetv2,vgg17",
            "--set",
            "extract.weights=random",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert (
        proc.returncode,
        len(lines),
        lines[0].startswith("featstore: error: unknown model 'vgg17'"),
    ) == (2, 1, True)


@pytest.fixture(scope="module")
def two_base_store(spark, job_store, tmp_path_factory):
    """A copy of job_store (mobilenetv2 at 32x32) with the study run for a second base: the
    mobilenetv2 set, its PCA and the grid cell are resumed, efficientnetb0 is new."""
    from jobs import compare as compare_job

    root = tmp_path_factory.mktemp("compare") / "store"
    shutil.copytree(job_store, root)
    assert (
        compare_job.main(
            [
                "--store",
                str(root),
                "--bases",
                "mobilenetv2,efficientnetb0",
                "--dims",
                "4",
                "--set",
                "extract.weights=random",
                "--set",
                "extract.input_size=32x32",
                "--set",
                "extract.batch_size=8",
                "--set",
                "compare.retrieve_on=reduced",
                "--set",
                "train.attributes=Smiling,Male",
                "--set",
                "train.models=lasso",
                "--set",
                "train.folds=3",
                "--set",
                "train.save_models=true",
                "--set",
                "retrieve.backend=numpy",
                "--set",
                "retrieve.k=1,5",
            ],
            spark=spark,
        )
        == 0
    )
    return root


def test_study_records_cost_and_reads_back_per_base(two_base_store):
    from featstore.report import ok_rows

    ok = ok_rows(store.read_results(two_base_store))
    table = base_table(two_base_store, ok).set_index("base")
    assert sorted(ok["feature_set"].unique()) == sorted(
        [f"{JOB_FS}-pca4", "efficientnetb0-top_activation-avg-32x32-random0-pca4"]
    )
    manifest = store.feature_set_manifest(
        two_base_store, "efficientnetb0-top_activation-avg-32x32-random0"
    )
    assert manifest["base"]["params"] == int(table.loc["efficientnetb0", "params"]) > 0
    assert table[["flops", "images_per_second", "accuracy", "retrieval_top5"]].notna().all().all()


def test_the_bases_are_compared_with_the_best_on_the_same_test_images(two_base_store):
    """The base of highest validation accuracy is the best; the other is tested against it,
    paired, over the attributes' test images (no identities in this split's one person: each
    image is its own cluster, with all its attributes)."""
    from featstore import evaluate
    from featstore.report import ok_rows

    ok = ok_rows(store.read_results(two_base_store))
    table = base_table(two_base_store, ok).set_index("base")
    ranked = table.sort_values("selection_score", ascending=False, kind="stable")
    best, other = ranked.index
    assert table.at[best, "vs_best_gap"] == 0 and np.isnan(table.at[best, "vs_best_p"])
    pair = lambda b: ok[ok.feature_set == table.at[b, "probe"].split(" on ")[1]]  # noqa: E731
    fits = {b: pair(b).sort_values("attribute").set_index("attribute") for b in (best, other)}
    assert list(fits[best].index) == ["Male", "Smiling"] == list(fits[other].index)
    t = np.concatenate(list(fits[best]["y_true"]))
    a = np.concatenate(list(fits[best]["y_pred"]))
    b = np.concatenate(list(fits[other]["y_pred"]))
    images = np.concatenate([np.arange(len(y)) for y in fits[best]["y_true"]])
    row = table.loc[other]
    assert row.vs_best_gap == pytest.approx(np.mean(a == t) - np.mean(b == t))
    assert row.vs_best_ci_low <= row.vs_best_gap <= row.vs_best_ci_high
    want = evaluate.mcnemar(t, a, b, groups=images)
    assert row.vs_best_p == pytest.approx(want["p_value"])
    assert row.vs_best_p_holm == pytest.approx(want["p_value"])  # one other base: Holm of one
    assert row.below_best == (want["p_value"] < 0.05 and row.vs_best_gap > 0)


def test_report_has_the_which_base_section(two_base_store, tmp_path):
    from featstore.report import build_report

    rep = build_report(two_base_store, tmp_path / "report")
    page = (tmp_path / "report" / "index.html").read_text()
    section = re.search(r'<section id="bases">(.*?)</section>', page, re.S)
    assert "which_base" in rep.figures and section and "efficientnetb0" in section.group(1)
    # the feature-set list names the raw (extracted) sets too, though only their PCA sets
    # were trained on
    sets = re.search(r'<section id="feature-sets">(.*?)</section>', page, re.S).group(1)
    for name in (JOB_FS, "efficientnetb0-top_activation-avg-32x32-random0"):
        assert f"<td>{name}</td>" in sets and f"<td>{name}-pca4</td>" in sets


def test_base_plot_draws_each_scores_chance_inside_its_axis(two_base_store):
    from featstore.report import BASE_COSTS, BASE_SCORES, ok_rows, plot_bases
    from featstore.retrieval import read_retrieval

    ok = ok_rows(store.read_results(two_base_store))
    table = base_table(two_base_store, ok)
    # chance of the probes' accuracy: the mean over attributes of the majority baseline
    want = ok.groupby("attribute")["majority_baseline"].mean().mean()
    assert table["accuracy_chance"].to_numpy() == pytest.approx([want, want])
    retrieval = read_retrieval(two_base_store, f"{JOB_FS}-pca4")
    at5 = retrieval[(retrieval["k"] == 5) & (retrieval["target"] == "attribute")]
    expected = np.mean([topk_chance(c, 5) for c in at5["chance_precision"]])
    mobilenet = table.set_index("base").loc["mobilenetv2"]
    assert mobilenet["retrieval_top5_chance"] == pytest.approx(expected)
    assert 0.5 < expected < 1
    fig = plot_bases(table)
    chance = {
        "accuracy": want,
        "balanced_accuracy": 0.5,
        "retrieval_top5": float(table["retrieval_top5_chance"].mean()),
    }
    for i, (score, _) in enumerate(BASE_SCORES):
        for ax in fig.axes[i * len(BASE_COSTS) : (i + 1) * len(BASE_COSTS)]:
            dotted = [ln for ln in ax.get_lines() if ln.get_linestyle() == ":"]
            assert [ln.get_ydata()[0] for ln in dotted] == [pytest.approx(chance[score])]
            low, high = ax.get_ylim()
            assert low < chance[score] < high and low < table[score].min() <= high


def test_topk_chance_of_a_balanced_and_a_rare_attribute():
    assert topk_chance(0.5, 1) == pytest.approx(0.5)  # p = 1/2: half the items match
    assert topk_chance(0.5, 5) == pytest.approx(1 - 0.5**5)
    # p = 0.1: c = 0.82; a positive query (10%) needs one of 5 positives, a negative one of 5
    assert topk_chance(0.82, 5) == pytest.approx(0.1 * (1 - 0.9**5) + 0.9 * (1 - 0.1**5))


def test_accuracy_against_dimension_draws_one_line_per_base(two_base_store):
    from featstore.report import accuracy_panels, ok_rows

    ok = ok_rows(store.read_results(two_base_store))
    panels = accuracy_panels(ok, "dim", "feature dimension", name="dim")
    labels = [label for label, _, _ in panels.legend]
    assert "mobilenetv2" in labels and "efficientnetb0" in labels
    fig = panels.figure()
    for ax in fig.axes[: len(panels.panels)]:  # the mean panel and every attribute's
        lines = [ln for ln in ax.get_lines() if ln.get_linestyle() != ":"]
        assert sorted(ln.get_linestyle() for ln in lines) == ["-", "--"]  # lasso x 2 bases
    mean_ax = fig.axes[0]
    gains = sorted(
        float(ln.get_ydata()[0]) for ln in mean_ax.get_lines() if ln.get_linestyle() != ":"
    )
    per_base = (
        ok.assign(gain=ok["accuracy"] - ok["majority_baseline"])
        .groupby("feature_set")["gain"]
        .mean()
        .sort_values()
        .to_list()
    )
    assert gains == pytest.approx(per_base)  # not one averaged point


def test_report_of_one_base_has_no_which_base_section(job_store, tmp_path):
    from featstore.report import build_report

    build_report(job_store, tmp_path / "report")
    assert 'id="bases"' not in (tmp_path / "report" / "index.html").read_text()
