"""The report's prose: the notes and figure captions of index.html, as ``str.format`` templates
(the fields in braces are filled in by the sections that show them)."""

from __future__ import annotations

NO_FITS = "No successful fits."

SUMMARY_FILES_HTML = (
    '<p class="note">Files: <a href="summary.csv">summary.csv</a> · '
    '<a href="summary.md">summary.md</a> · <a href="table.csv">table.csv</a> · the results '
    'and errors tables of the store: <a href="#files">Files and errors tables</a></p>'
)
STALE = "Stale: {stale}."
SUMMARY = (
    "Successful fits at training size {train_size} ({size_text}), seed {seed}, on one "
    "feature set for every attribute (the largest dimension; chosen without looking at "
    "test accuracy, the other sets are in the accuracy-against-dimension plot). "
    "How the winner is chosen: every probe is fitted and tuned on the train "
    "split only (lasso's C by cross-validation, the forest's max_features out of bag, "
    "both by the one-standard-error rule; the dense head stops early on a held-out "
    "tenth of the training rows), then scored once on the validation split: 'best' is "
    "the probe of highest validation accuracy (selection_score; ties: lasso, forest, "
    "dense). Which split each number comes from: the accuracies, intervals and "
    "tests are on the test split, touched once, after every choice was made. What "
    "the intervals resample: 95% Wilson intervals for accuracy, widened by the "
    "design effect of the people in the test split where the store knows identities "
    "(CelebA: ~20 images per person are not 20 independent draws); the balanced "
    "accuracy and AUC intervals of the full table are bootstraps that resample people. "
    "With several seeds the cell also shows the mean ± sd of the test accuracy over "
    "them. 'Best beats all others': every McNemar test of the best model against "
    "another model is significant at {alpha} after Holm's correction across the "
    "attributes of one feature set, training size, seed and model pair; p_holm is the "
    "largest of those adjusted p-values. 'Best − runner-up': the best model's test "
    "accuracy minus the next model's, with its paired 95% bootstrap interval (both "
    "models scored on the same resampled people): how much the choice gains, and how "
    "sure that is. 'Beats baseline': the best model is more "
    "accurate than always predicting the training majority class and McNemar's test "
    "of the two on the same test images is significant at "
    "{alpha} after Holm's correction across every model and attribute of this table "
    "(one family for the report, evaluate and the notebooks). 'AUC above chance': the "
    "best model's test scores rank positives above negatives (AUC against 0.5, "
    "one-sided), Holm-corrected in the same family: McNemar against a constant "
    "has no power on rare attributes, this test has. A best model that does not beat "
    "the baseline is never reported as beating the others ('no: not above "
    "baseline'), in summary.csv too (beats_all; beats_all_models keeps the "
    "comparison alone). Where the store knows identities every test takes the person as "
    "the unit (a person's images are not independent draws): McNemar as the exact "
    "sign-flip test over people, the AUC test as Obuchowski's clustered test (never "
    "below the image-level p-value); elsewhere McNemar and Mann-Whitney over images."
)
SUMMARY_NO_FITS = "No successful fits in the results table."
POOLED = (
    "The study's question over all attributes at once: each probe against each other on "
    "{where}, every attribute's test images together. A − B: the difference of their test "
    "accuracies (the mean over the attributes of the per-attribute differences), with a paired "
    "95% bootstrap interval; p_holm: McNemar's paired test over every attribute's images, both "
    "resampling (or sign-flipping) whole people, each with all their images and attributes "
    "(whole images where identities are unknown: an image's attributes are not independent), "
    "Holm-corrected over the pairs."
)
SUMMARY_MULTICLASS_ONLY = (
    "No binary attribute fits: this store's results are multi-class (see Multi-class targets)."
)
DEGENERATE_SET = (
    "Feature set {name} is {flag}: the probes standardize it, but its "
    "results say more about the layer, pooling or weights than about "
    "the attributes."
)
OLD_FITS = (
    "{old} of {total} fits were written before featstore recorded "
    "selection_score and y_score: where a probe lacks it, 'best' falls back "
    "to test accuracy (marked 'by test: old fits') and those fits have no "
    "calibration or AUC test; `featstore train` fits them again."
)

BASES = (
    "Each conv base's scores against its cost. Accuracy and balanced accuracy: "
    "the test scores, mean over attributes at training size {train_size}, of "
    "the base's (feature set, probe) pair with the best mean validation "
    "accuracy (chosen off the test split; the test split gives the estimate). "
    "Retrieval top-5: top-5 accuracy (a neighbour shares the query's label), "
    "mean over attributes, on the base's raw feature set. Parameters "
    "and FLOPs per image of the base at its input size, and images/s of its "
    "extraction, from the feature set's manifest. Filled and joined: the "
    "Pareto front (no other base is both cheaper and more accurate). Best − this base: "
    "the test accuracy of the base of highest validation accuracy minus this base's (its "
    "chosen probe, first seed, mean over the attributes both have), with a paired 95% "
    "bootstrap interval, and McNemar's paired test over every attribute's test images (by "
    "person where identities are known, else by image), Holm-corrected over the other "
    "bases: whether the difference is real."
)

HEATMAP = (
    "Every attribute (rows) and model (columns) at {where}. Accuracy minus the "
    "majority baseline: how far a model is above always predicting the training "
    "majority class (0: no better; the baseline is high for rare attributes, where "
    "accuracy alone flatters). Balanced accuracy: the mean of the recalls of the two "
    "classes (0.5: chance, whatever the label balance). Positives: the share of test "
    "images with the attribute. Click a heading to sort."
)
TABLE = (
    "One row per attribute and model at {where} (also in table.csv); the best model "
    "of each attribute (highest validation accuracy) in bold. Validation accuracy: "
    "what the probe was chosen by. Test accuracy with its 95% Wilson interval (by "
    "identity where known); balanced accuracy and ROC AUC with 95% bootstrap intervals "
    "that resample people; Brier: the mean squared error of the test scores. p_holm vs "
    "baseline: McNemar's test against the training-majority constant; p_holm AUC vs "
    "0.5: the one-sided Mann-Whitney test of the scores; both by person where identities "
    "are known (the exact sign-flip McNemar test over people, Obuchowski's clustered AUC "
    "test) and Holm-corrected across "
    "every model and attribute of the table (the summary's family). Chosen "
    "hyper-parameters: C of the lasso (cross-validation), max_features of the forest "
    "(out of bag or cross-validated), both by the one-standard-error rule; the epochs of "
    "the dense head (early stopping on a held-out tenth of the training rows). Click a "
    "heading to sort."
)

ROC = (
    "Test ROC curves at {where}: every model of each attribute, the best "
    "model (the summary's, by validation accuracy) thick and solid, the "
    "others dashed; "
    "dotted: chance. AUC: the best model's."
)
ROC_MISSING = (
    "{missing} of {total} fits have no ROC points: fits whose test labels are "
    "of one class, or results written by a featstore that did not store them "
    "(`featstore train --overwrite` fits them again with the points)."
)

DIMENSION = (
    "Test accuracy minus the attribute's majority baseline against feature "
    "dimension at training size {train_size}, seed {seed}: one y-scale for "
    "every panel, 0 (dotted) is the baseline; feature sets of equal dimension "
    "are averaged; first panel: mean over attributes."
)
TRAIN_SIZE = (
    "Test accuracy minus the majority baseline against training rows on "
    "{feature_set} (the feature set with the most training sizes: "
    "{sizes}), mean over seeds; one y-scale for every panel, 0 "
    "(dotted) is the baseline."
)

CONFUSION = (
    "Test confusion matrices of the best model per attribute (the summary's "
    "choice, on {feature_set}): rows the true class, columns the predicted one; "
    "count and share of the true class; colour: that share."
)

CALIBRATION = (
    "Calibration of the test scores at {where}, every attribute pooled per "
    "model: the share of positives among the test images whose score fell "
    "in each tenth of [0, 1], against their mean score (dotted: perfect "
    "calibration; point size: images in the bin). Brier: the mean squared "
    "error of the scores, averaged over the attributes (lower is better; "
    "0.25 for a constant 0.5). Scores are probabilities: the lasso's and the "
    "dense head's sigmoid, the forest's share of trees."
)
CALIBRATION_NO_SCORES = (
    "No fit stores its test scores (results written before y_score existed: "
    "`featstore train` fits them again with the scores)."
)

SEEDS_ONE = (
    "Every cell was run with one seed: no spread over training draws to show (the "
    "study configs, conf/train.yaml and conf/seed_male_8k.yaml, run three)."
)
SEEDS = (
    "Cells fitted with several seeds (a new draw of the training subsample, the CV "
    "folds, the bootstrap samples and the weight initialisation each): the mean and "
    "standard deviation over the seeds. A difference between two probes smaller than "
    "these spreads is not a finding."
)

MAPS_INTRO = "{n} test images of {feature_set} (dim {dim}), coloured by {color}."
MAPS = (
    "Left: the first two principal components of the test embeddings (axes: "
    "the share of their variance each explains). Right: t-SNE (perplexity "
    "{perplexity:.0f}, on the first 50 principal components of a "
    "larger dimension); "
    "its axes have no units. Coloured by {color}."
)
MAPS_TOO_FEW = "{feature_set}: fewer than 3 images; no map."
MAPS_NONE = "No committed feature set or no labels to map."

CURVES = (
    "Loss and accuracy per epoch of the dense heads with the highest, median and "
    "lowest test accuracy in the summary; the loss panels share one y-scale, the "
    "accuracy panels another."
)
CURVES_NONE = "No dense heads with a training history in the results."

FAILED_NONE = "None: every fit in the results table succeeded."
FAILED = "{n} fit{s} failed; they are the rows with status 'error' in the results table."
FAILED_MORE = "… and {more} more."

FILES = (
    "Links are relative to this folder, so they work wherever the store and the report "
    "folder are opened together. The tables are Parquet folders: read them with DuckDB, "
    "pandas, polars, pyarrow or Spark (see the README)."
)

MULTICLASS = (
    "One multi-class probe per feature set, training size, seed and model "
    "(train.target: class). Each probe is fitted and tuned on the train split only (the "
    "multinomial lasso's C by cross-validation, the forest's max_features out of bag, both "
    "by the one-standard-error rule; the softmax head stops early on a held-out tenth of "
    "the training rows), then scored once on the validation split: 'best' is the probe of "
    "highest validation accuracy (ties: lasso, forest, dense); its test accuracy is the "
    "estimate. Test accuracy with its 95% Wilson interval (by identity where known). "
    "Balanced accuracy: the mean of the per-class recalls (1/K: chance); it and the macro-F1 "
    "with 95% percentile bootstrap intervals over the test images (whole identities where "
    "known). Majority class: "
    "the test accuracy of always predicting the training split's largest class. p_holm vs "
    "majority: McNemar's test of the probe's per-image correctness against the majority "
    "constant's (by person where identities are known), Holm-corrected over every model of one feature set, training size and "
    "seed. 'Best beats all others': every McNemar test (per-image correctness) of the best "
    "probe against another is significant at {alpha} after Holm's correction and the best "
    "beats the majority class. Also in {csv}."
)
MULTICLASS_CONFUSION = (
    "Test confusion matrices of every probe on {where}: rows the true class (its "
    "test images in brackets), columns the predicted class; colour: the share of the "
    "true class (rows normalized, so a rare class reads as clearly as a common one); "
    "text: the count."
)
MULTICLASS_RECALL = (
    "Recall of each class on {where}, with the number of test images of the class "
    "(n): under imbalance a high accuracy can hide a class the probe never finds. "
    "Dotted: the balanced accuracy (the mean of these recalls)."
)
