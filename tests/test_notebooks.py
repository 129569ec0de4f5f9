"""The analyst notebooks run top to bottom as shipped, with their default settings, against a
small store with results.

The kernel is this test process's own interpreter (``sys.executable`` with ipykernel), declared
by a kernel spec written to a temporary folder: nothing has to be installed by hand (no
``ipykernel install``), and a ``python3`` kernel spec elsewhere on the machine cannot be picked
up instead. Nothing is injected: each notebook runs from a copy of the repository's layout
(``<root>/notebooks/<name>.ipynb``, the kernel's working folder, as Jupyter runs it) with the
store where ``make demo`` puts it (``<root>/demo/store``), and no FEATSTORE_* variable set."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.test_report import ATTRIBUTES, MODELS, report_output, results_store

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
KERNEL = "featstore-test"


@pytest.fixture(scope="module")
def nb_store(tmp_path_factory: pytest.TempPathFactory, spark: Any) -> Path:
    return results_store(tmp_path_factory, spark)


@pytest.fixture(scope="module")
def nb_root(nb_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder laid out like the repository after ``make demo``: the store at demo/store."""
    import shutil

    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(nb_store, root / "demo" / "store")
    return root


def _kernel_dir(root: Path, env: dict[str, str]) -> Path:
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "featstore tests",
                "language": "python",
                "env": env,
            }
        )
    )
    return spec.parent


def _execute(name: str, tmp_path: Path, root: Path) -> Any:
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    assert all(
        not c.get("outputs") and c.get("execution_count") is None
        for c in nb.cells
        if c.cell_type == "code"
    ), f"{name}: commit it with outputs cleared"
    # the inline backend even when the test process runs with MPLBACKEND=Agg
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    kernels = _kernel_dir(
        tmp_path,
        {"PYTHONPATH": pythonpath, "MPLBACKEND": "module://matplotlib_inline.backend_inline"},
    )
    km = AsyncKernelManager(
        kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)])
    )
    work = root / "notebooks"  # Jupyter's kernel runs in the notebook's folder
    work.mkdir(exist_ok=True)
    nbformat.write(nb, work / f"{name}.ipynb")
    client = NotebookClient(
        nb, km=km, kernel_name=KERNEL, timeout=180, resources={"metadata": {"path": str(work)}}
    )
    # raises CellExecutionError, with the traceback, if a cell fails; cleanup_kc: shut the
    # kernel down afterwards (nbclient keeps kernels of a km it was given alive otherwise)
    client.execute(cleanup_kc=True)
    return nb


def _tagged(nb: Any, tag: str) -> list[Any]:
    cells = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
    assert cells, f"no cell tagged {tag!r}"
    return cells


def _text(cell: Any) -> str:
    parts = []
    for out in cell.outputs:
        if out.output_type == "stream":
            parts.append(out.text)
        elif "data" in out:
            parts.append(out.data.get("text/plain", ""))
    return "".join(parts)


def _has_figure(cell: Any) -> bool:
    return any(
        out.output_type in ("display_data", "execute_result") and "image/png" in out.get("data", {})
        for out in cell.outputs
    )


def test_explore_feature_store_notebook(nb_root, tmp_path, monkeypatch):
    for var in ("FEATSTORE_STORE", "FEATSTORE_FEATURE_SET", "FEATSTORE_ATTRIBUTE"):
        monkeypatch.delenv(var, raising=False)
    nb = _execute("explore_feature_store", tmp_path, nb_root)
    first = _text(nb.cells[1])
    assert f"store: {nb_root / 'demo' / 'store'}" in first  # found from notebooks/
    listing = _text(_tagged(nb, "table")[0])
    # no FEATSTORE_FEATURE_SET: the largest reduced set of at most 64 dimensions
    assert "feature set: sig-pca4\n" in listing
    for name in ("sig-pca2", "sig", "labels", "results"):
        assert name in listing
    assert "NaN" not in listing  # every table's row count (labels and results say `rows`)
    assert "300 images, dim 4" in _text(_tagged(nb, "table")[1])
    assert "sig-pca4: 60 test images x 4 dims" in _text(nb.cells[7])
    plots = _tagged(nb, "plot")
    assert len(plots) == 2 and all(_has_figure(c) for c in plots)
    probe = _text(_tagged(nb, "probe")[0])
    assert "LASSO probe on sig-pca4 for Smiling: accuracy" in probe
    accuracy = float(probe.split("accuracy ")[1].split()[0])
    assert accuracy > 0.75  # Smiling follows feature 0


@pytest.fixture(scope="module")
def compare_nb(nb_root, tmp_path_factory) -> Any:
    """compare_models.ipynb run once as shipped (its default store and feature set)."""
    with pytest.MonkeyPatch.context() as m:
        for var in ("FEATSTORE_STORE", "FEATSTORE_FEATURE_SET"):
            m.delenv(var, raising=False)
        return _execute("compare_models", tmp_path_factory.mktemp("compare-nb"), nb_root)


def test_compare_models_notebook(compare_nb):
    nb = compare_nb
    head = _text(_tagged(nb, "table")[0])
    # the report's summary set (the largest dimension)
    assert "feature set sig; training size 0, seed 0" in head
    accuracy = _text(_tagged(nb, "table")[1]).splitlines()
    assert accuracy[0].split()[:1] == ["model"] and "sig-pca" not in "".join(accuracy)
    assert "ok and 9 failed fits" in head
    (plot,) = _tagged(nb, "plot")
    assert _has_figure(plot)
    comparisons = _text(_tagged(nb, "table")[2])
    assert "p_holm" in comparisons and "lasso" in comparisons and "forest" in comparisons
    best = _text(_tagged(nb, "significance")[0]).splitlines()
    assert best[0].split() == [
        "attribute",
        "best_model",
        "best_accuracy",
        "runner_up",
        "runner_up_accuracy",
        "max_p_holm",
        "beats_all",
    ]
    assert sorted(line.split()[0] for line in best[1:]) == ATTRIBUTES
    vs_baseline = _text(_tagged(nb, "baseline")[0]).strip().splitlines()
    assert vs_baseline[0].split()[-3:] == ["p_value", "p_holm", "beats_baseline"]
    rows = {tuple(line.split()[:2]): line.split()[-1] for line in vs_baseline[1:]}
    assert set(rows) == {(a, m) for a in ATTRIBUTES for m in MODELS}
    assert rows["Smiling", "lasso"] == "True"  # Smiling follows feature 0
    summary = _text(_tagged(nb, "summary")[0]).strip().splitlines()
    assert summary[0].startswith("| attribute | feature set |") and len(summary) == 4
    full = _text(_tagged(nb, "full-table")[0])
    assert "hyperparameters" in full and "C = " in full and "max_features = " in full


def test_compare_models_notebook_reads_the_reports_holm_family(
    compare_nb, nb_store, tmp_path_factory, spark
):
    """The notebook's baseline p_holm for every model and attribute are the report's (its
    table.csv and summary.csv, written by `featstore report` of the same store), whatever
    feature set the notebook's model comparisons are on."""
    import pandas as pd

    made = report_output(tmp_path_factory, spark)
    assert made["rc"] == 0
    table = pd.read_csv(made["out"] / "table.csv").set_index(["attribute", "model"])
    summary = pd.read_csv(made["out"] / "summary.csv").set_index("attribute")
    lines = _text(_tagged(compare_nb, "baseline")[0]).strip().splitlines()
    header = lines[0].split()
    printed = {}
    for line in lines[1:]:
        cells = dict(zip(header, line.split(), strict=True))
        printed[cells["attribute"], cells["model"]] = (
            float(cells["p_value"]),
            float(cells["p_holm"]),
            cells["beats_baseline"] == "True",
        )
    assert set(printed) == set(table.index)
    for key, (p, p_holm, beats) in printed.items():  # printed to 4 decimals
        assert p == pytest.approx(table.at[key, "p_baseline"], abs=5e-5), key
        assert p_holm == pytest.approx(table.at[key, "p_baseline_holm"], abs=5e-5), key
        assert beats == bool(table.at[key, "beats_baseline"]), key
    for attribute, best in summary["best_model"].items():
        assert printed[attribute, best][1] == pytest.approx(
            summary.at[attribute, "p_baseline_holm"], abs=5e-5
        )
    # a family over all models is wider than one per model: some p_holm differ from the
    # per-model (BASELINE_FAMILY) adjustment the notebook used to print
    from featstore import evaluate
    from featstore.report import ok_rows, summary_fits
    from featstore.train.grid import read_results

    per_model = evaluate.baseline_tests(
        summary_fits(ok_rows(read_results(nb_store))), family=[*evaluate.FAMILY, "model"]
    )
    narrow = per_model.set_index(["attribute", "model"])["p_holm"]
    assert any(abs(narrow[k] - printed[k][1]) > 1e-3 for k in printed)
