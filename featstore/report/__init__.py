"""The HTML report of a store's results table: summary, heatmap, full table, plots, manifests.

:func:`build_report` writes into ``out_dir``:

* ``index.html`` -- one self-contained page: inline CSS, a few lines of inline JavaScript (the
  sortable tables), every plot a PNG embedded as a ``data:image/png;base64`` URI; nothing is
  loaded from anywhere else. Its only links are relative: to the files below and to the store's
  results and errors tables (``../store/errors/images/`` when the report sits beside the store),
  so they work wherever the store and the report folder are opened together;
* ``summary.csv`` -- the summary table, one row per attribute, machine-readable;
* ``summary.md`` -- the same table formatted for a terminal, a pull request or a wiki;
* ``table.csv`` -- the full table, one row per attribute and model (:func:`full_table`).

What the summary compares (one row per attribute):

* Only fits with ``status == "ok"``. One *group* of fits: the training size with the most
  training rows (``train_size`` 0, the whole train split, when it was run) and the smallest seed.
  One feature set for every attribute, fixed without looking at test accuracy: the one of the
  largest dimension (or ``summary_feature_set``). Choosing per attribute the set that scored
  best on the test split would select on the test split and bias accuracies and significance
  upwards; the other feature sets are in the accuracy-against-dimension plot.
  :func:`summary_fits` returns these fits; the heatmap, the full table, the ROC curves and the
  baseline tests are about the same fits.
* Per model: test accuracy with its 95% Wilson interval (the ``ci_low`` / ``ci_high`` the grid
  stored; widened by the design effect of the test split's people where identities are known);
  the validation accuracy it was chosen by (``selection_score``); the training-majority
  baseline; with several seeds of the cell, the mean and sd of the test accuracy over them.
* The best model is the argmax of ``selection_score`` (validation accuracy; ties: lasso, forest,
  dense), :func:`featstore.evaluate.best_model_table`; its test accuracy is the estimate.
  Results written before ``selection_score`` existed fall back to test accuracy (``chosen_by``
  says so; the page lists them).
* ``beats_all_models``: the best model is more accurate than every other model and each of those
  pairwise McNemar tests is significant after Holm's correction at 0.05, the Holm family being
  all attributes of one (feature set, training size, seed, model pair), as in
  :func:`featstore.evaluate.compare_models`. ``max_p_holm`` is the largest of those p-values.
  ``beats_all``: the same, and the best model beats the baseline (the guard the page shows).
* Every test is by person where the results carry identities (``groups``): McNemar as the exact
  sign-flip test over people, the AUC test as Obuchowski's (:mod:`featstore.evaluate.significance`).
* ``beats_baseline``: the best model is more accurate than the training-majority baseline
  (``majority_baseline``, the test accuracy of always predicting the majority class of the
  training rows) and McNemar's test of the best model against that constant predictor, on the
  same test images, is significant after Holm's correction at 0.05 (``p_baseline`` raw,
  ``p_baseline_holm`` adjusted), the Holm family being every model of every attribute of the
  summary (one feature set, training size, seed: :data:`featstore.evaluate.FAMILY`, defined
  once). ``beats_chance``: the best model's AUC is above 0.5 (one-sided Mann-Whitney,
  ``p_auc_holm`` in the same family), the test with power on rare attributes.
  :func:`baseline_family` computes both; the report and notebooks/compare_models.ipynb call it.
* The verdict column "best beats all others" of index.html / summary.md (``verdict`` in
  summary.csv) reads "yes" only for a best model that beats all others *and* the baseline.

For many attributes and imbalanced labels: an attribute x model heatmap of accuracy minus the
majority baseline and of balanced accuracy; the full sortable table (accuracy with its CI, the
gain over the baseline, balanced accuracy, F1, ROC AUC, the share of positives, the chosen
hyper-parameter and the baseline test per attribute and model); the chosen hyper-parameters per
model (:func:`chosen_hyperparameters`: C of the lasso, max_features of the forest, the epochs
the dense head kept); ROC curves of every model per attribute, the best one drawn thick (from
the ROC points the grid stores per fit, ``roc_fpr`` / ``roc_tpr``; results written before
those existed have none, and the report says so).

The plots are small multiples drawn one PNG per panel, laid out by the page in a grid, with
their titles as HTML text above each panel (so titles wrap and never overlap, whatever their
length), and one HTML legend per figure: accuracy minus the majority baseline against feature
dimension and against the number of training rows (one shared y-scale over the panels of a
figure; 0 is the baseline), the ROC curves, the confusion matrix of the best model per
attribute, PCA (axes labelled with their share of the variance) and t-SNE maps of one feature
set's test embeddings (at most :data:`MAX_MAP_POINTS`, a seeded sample), and the training
curves of a few dense heads: those with the highest, median and lowest test accuracy in the
summary group (loss panels share one y-scale, accuracy panels another).

No Spark: the results table and the feature sets are read with pyarrow. Figures are drawn on
matplotlib ``Figure`` objects with the Agg canvas, without ``pyplot``: there is no global figure
registry to close and no backend switch, so the ``plot_*`` functions are safe to call from a
notebook (where a returned ``Figure`` displays inline; :meth:`Panels.figure` draws a set of
panels as one figure) and from threads.

The package: ``tables`` (the statistics tables), ``plots`` and ``maps`` (the matplotlib panels),
``html`` (the page's HTML, CSS and JavaScript), ``captions`` (its prose), ``context`` (what every
section reads: :class:`ReportContext`), ``sections`` (the sections of index.html, in order, each
rendering itself from the context), ``multiclass`` (the multi-class section) and ``build``
(:func:`build_report`: a loop over the sections); this module re-exports their public names.
"""

from __future__ import annotations

from featstore.report.build import ReportSummary, build_report
from featstore.report.context import ReportContext
from featstore.report.html import full_table_html, heatmap_html
from featstore.report.maps import (
    MAX_MAP_POINTS,
    embed_2d,
    map_panels,
    map_points,
    pca_2d,
    plot_map,
    tsne_perplexity,
)
from featstore.report.plots import (
    BASE_CHANCE,
    BASE_COSTS,
    BASE_SCORES,
    GAIN_LABEL,
    MAX_CURVES,
    SOURCE_STYLES,
    Panel,
    Panels,
    accuracy_panels,
    calibration_panels,
    confusion_panels,
    curve_panels,
    plot_accuracy_vs_dim,
    plot_accuracy_vs_train_size,
    plot_bases,
    plot_confusions,
    plot_curves,
    png_bytes,
    representative_curves,
    roc_panels,
)
from featstore.report.sections import MAX_FAILED_ROWS, SECTIONS, Section
from featstore.report.tables import (
    ALPHA,
    FULL_COLUMNS,
    MODEL_ORDER,
    baseline_family,
    chosen_hyperparameters,
    display_rows,
    full_table,
    hyperparameter_summary,
    hyperparameter_text,
    manifest_rows,
    ok_rows,
    order_models,
    replaced_rows,
    seed_spread,
    seed_table,
    summary_feature_set,
    summary_fits,
    summary_group,
    summary_table,
    to_markdown,
)

__all__ = [
    "ALPHA",
    "BASE_CHANCE",
    "BASE_COSTS",
    "BASE_SCORES",
    "FULL_COLUMNS",
    "GAIN_LABEL",
    "MAX_CURVES",
    "MAX_FAILED_ROWS",
    "MAX_MAP_POINTS",
    "MODEL_ORDER",
    "SECTIONS",
    "SOURCE_STYLES",
    "Panel",
    "Panels",
    "ReportContext",
    "ReportSummary",
    "Section",
    "accuracy_panels",
    "baseline_family",
    "build_report",
    "calibration_panels",
    "chosen_hyperparameters",
    "confusion_panels",
    "curve_panels",
    "display_rows",
    "embed_2d",
    "full_table",
    "full_table_html",
    "heatmap_html",
    "hyperparameter_summary",
    "hyperparameter_text",
    "manifest_rows",
    "map_panels",
    "map_points",
    "ok_rows",
    "order_models",
    "pca_2d",
    "plot_accuracy_vs_dim",
    "plot_accuracy_vs_train_size",
    "plot_bases",
    "plot_confusions",
    "plot_curves",
    "plot_map",
    "png_bytes",
    "replaced_rows",
    "representative_curves",
    "roc_panels",
    "seed_spread",
    "seed_table",
    "summary_feature_set",
    "summary_fits",
    "summary_group",
    "summary_table",
    "to_markdown",
    "tsne_perplexity",
]
