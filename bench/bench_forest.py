"""Benchmark: the forest's max_features selection by out-of-bag score vs by cross-validation.

    .venv/bin/python bench/bench_forest.py [--rows 162770] [--test-rows 19962] [--dim 64]
        [--trees 50] [--n-jobs 1]

One run fits ``fit_forest`` twice on the same synthetic data (features with a linear signal, as
in bench_train.py), with the training grid's settings: candidates sqrt/0.1/0.3, bootstrap
samples of at most 20,000 rows per tree; ``selection="cv"``: 5-fold stratified CV on at most
20,000 rows then a refit on all rows (16 forests); ``selection="oob"``: one forest per candidate
on all rows, the best out-of-bag accuracy kept (3 forests). Prints the fit time of each, the
speed ratio, the chosen max_features and the test accuracy.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_rows(n: int, dim: int, seed: int) -> tuple[object, object]:
    """``n`` rows of ``dim`` standard-normal features; the label follows feature 0 plus noise
    (bench_train.py's attribute A1)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    y = ((x[:, 0] + 0.8 * rng.normal(size=n)) > 0).astype(np.int8)
    return x, y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=162_770, help="training rows")
    ap.add_argument("--test-rows", type=int, default=19_962)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--trees", type=int, default=50)
    ap.add_argument("--folds", type=int, default=5, help="CV folds (selection=cv)")
    ap.add_argument("--max-samples", type=int, default=20_000, help="rows per tree (cap)")
    ap.add_argument("--cv-max-rows", type=int, default=20_000)
    ap.add_argument("--n-jobs", type=int, default=1, help="forest threads (the grid uses 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=("cv", "oob"), help="time one selection only")
    args = ap.parse_args()

    import logging

    logging.basicConfig(level=logging.WARNING)
    from featstore.train.forest import fit_forest

    x, y = make_rows(args.rows + args.test_rows, args.dim, args.seed)
    x_tr, y_tr, x_te, y_te = x[: args.rows], y[: args.rows], x[args.rows :], y[args.rows :]
    majority = float(max(y_te.mean(), 1 - y_te.mean()))
    print(
        f"bench_forest: {args.rows} train rows x {args.dim} dims, {args.test_rows} test rows "
        f"(majority {majority:.3f}); {args.trees} trees, candidates sqrt/0.1/0.3, "
        f"max_samples={args.max_samples}, n_jobs={args.n_jobs}, {os.cpu_count()} CPUs"
    )
    times = {}
    for selection in ("cv", "oob"):
        if args.only and selection != args.only:
            continue
        r = fit_forest(
            x_tr,
            y_tr,
            x_te,
            folds=args.folds,
            max_features=("sqrt", 0.1, 0.3),
            n_estimators=args.trees,
            seed=args.seed,
            n_jobs=args.n_jobs,
            max_samples=args.max_samples,
            cv_max_rows=args.cv_max_rows,
            selection=selection,
        )
        p = r.params
        times[selection] = r.fit_seconds
        forests = p["folds"] * 3 + 1 if selection == "cv" else 3
        score = (
            f"cv accuracy {p['cv_score']:.4f} on {p['cv_rows']} rows"
            if selection == "cv"
            else f"oob accuracy {p['oob_score']:.4f}, coverage {p['oob_coverage']:.4f}"
        )
        cands = ", ".join(f"{c}: {s:.4f}" for c, s in p["candidate_scores"])
        print(
            f"  selection={selection:<3} fit {r.fit_seconds:7.1f} s  ({forests} forests)  "
            f"max_features={p['max_features']}  test accuracy {r.accuracy(y_te):.4f}  "
            f"({score}; candidates {cands})"
        )
        del r
    if len(times) == 2:
        print(f"  speed ratio cv/oob: {times['cv'] / times['oob']:.2f}x")


if __name__ == "__main__":
    main()
