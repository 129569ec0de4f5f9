"""Evaluation of binary classifiers on the test split, and sound comparisons between them.

Pure numpy / scipy / pandas (scikit-learn only for ROC AUC): no Spark, no Keras, so the same code
serves ``jobs/train.py``, ``jobs/report.py`` and the notebooks. Every name below is imported from
here (``from featstore.evaluate import ...``); the modules are :mod:`.binary` (one classifier),
:mod:`.intervals` (bootstrap and Wilson intervals), :mod:`.calibration`, :mod:`.significance`
(McNemar, Mann-Whitney, Holm), :mod:`.tables` (the study's tables) and :mod:`.inputs` (the
input checks they share).

What is here and why:

* :func:`metrics` -- the usual scores of one classifier on one attribute, with the confusion
  matrix and the *majority-class baseline*. The honest baseline is the accuracy on the test split
  of always predicting the majority class **of the training split** (:func:`majority_baseline`);
  without ``y_train`` the dict falls back to the test majority, which is optimistic and is marked
  as such in ``baseline_source``.
* :func:`bootstrap_ci` -- bootstrap confidence interval (percentile, or BCa for independent
  images) of accuracy, error rate, balanced accuracy, F1 or ROC AUC, resampling the test images
  -- or, with ``groups`` (the identity of each image), whole clusters: CelebA has ~20 images per
  person, and images of one person are not independent. :func:`class_bootstrap_ci`: the same
  resamples for a K-class model's accuracy, balanced accuracy or macro-F1.
* :func:`accuracy_ci` -- Wilson interval for accuracy, widened by the design effect of clusters.
* :func:`paired_difference_ci` -- paired bootstrap interval of the difference between two models
  on the same test set (same resamples for both).
* :func:`auc_vs_chance` -- one-sided Mann-Whitney test of AUC > 0.5: a test against chance that
  keeps its power under class imbalance, where McNemar against the majority constant has none.
* :func:`brier_score`, :func:`calibration_table` -- calibration of positive-class probabilities.
* :func:`roc_points` -- the ROC curve's vertices, thinned to a bounded number (what the results
  table stores per fit, for the report's ROC plots).
* :func:`mcnemar` -- the paired test of two classifiers on the same test images (statsmodels'
  conventions). Paired, because both models see the same images: an unpaired test of two
  accuracies would ignore that their errors are correlated and lose most of its power.
* :func:`holm` -- Holm-Bonferroni step-down adjustment (family-wise error rate);
  :func:`holm_by_family` applies it within the one family rule, :data:`FAMILY`.
* :func:`beats_baseline` -- McNemar of a model against the constant majority predictor.
* :func:`compare_models` / :func:`best_model_table` -- the study's tables over a results frame;
  the best model is chosen by ``selection_score`` (off the test split) where fits carry it.
* :func:`pooled_difference` / :func:`pooled_comparisons` -- two models (or bases) over all
  their attributes at once, on the same test images: the accuracy gap with a paired interval and
  McNemar, resampling whole people (each with all their images and attributes).
* :func:`baseline_tests` -- :func:`beats_baseline` for every row of a results frame, with the
  train-majority class recovered from the row's ``majority_baseline``, and
  :func:`auc_vs_chance` where the row has ``y_score``, both Holm-corrected over :data:`FAMILY`.

Labels and predictions are 1-D arrays of 0/1 (bool, any integer dtype, or floats that are exactly
0.0 / 1.0); anything else raises one precise ``ValueError``.
"""

from __future__ import annotations

from featstore.evaluate.binary import ROC_POINTS, majority_baseline, metrics, roc_points
from featstore.evaluate.calibration import CALIBRATION_COLUMNS, brier_score, calibration_table
from featstore.evaluate.intervals import (
    CLASS_STATS,
    PAIRED_STATS,
    STATS,
    accuracy_ci,
    bootstrap_ci,
    class_bootstrap_ci,
    paired_difference_ci,
)
from featstore.evaluate.significance import (
    FAMILY,
    auc_vs_chance,
    beats_baseline,
    holm,
    holm_by_family,
    mcnemar,
)
from featstore.evaluate.tables import (
    BASELINE_COLUMNS,
    BASELINE_FAMILY,
    BEST_COLUMNS,
    CHOSEN_BY_SELECTION,
    CHOSEN_BY_TEST,
    COMPARISON_COLUMNS,
    COMPARISON_FAMILY,
    GROUP_KEYS,
    MODEL_ORDER,
    POOLED_COLUMNS,
    baseline_tests,
    best_model_table,
    compare_models,
    pooled_comparisons,
    pooled_difference,
)

__all__ = [
    "BASELINE_COLUMNS",
    "BASELINE_FAMILY",
    "BEST_COLUMNS",
    "CALIBRATION_COLUMNS",
    "CHOSEN_BY_SELECTION",
    "CHOSEN_BY_TEST",
    "CLASS_STATS",
    "COMPARISON_COLUMNS",
    "COMPARISON_FAMILY",
    "FAMILY",
    "GROUP_KEYS",
    "MODEL_ORDER",
    "PAIRED_STATS",
    "POOLED_COLUMNS",
    "ROC_POINTS",
    "STATS",
    "accuracy_ci",
    "auc_vs_chance",
    "baseline_tests",
    "beats_baseline",
    "best_model_table",
    "bootstrap_ci",
    "brier_score",
    "calibration_table",
    "class_bootstrap_ci",
    "compare_models",
    "holm",
    "holm_by_family",
    "majority_baseline",
    "mcnemar",
    "metrics",
    "paired_difference_ci",
    "pooled_comparisons",
    "pooled_difference",
    "roc_points",
]
