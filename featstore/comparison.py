"""The base-comparison study read back from the store (no stage's code: the store's tables only).

:func:`base_table` reads the outcome of ``featstore compare`` (featstore/compare.py) back from the
store: one row per base with its cost (parameters and FLOPs per image from the extract manifest,
measured extraction images/s) and its scores (mean probe accuracy and balanced accuracy over
attributes, retrieval top-5); :func:`pareto_front` marks the bases no other base beats on both
cost and score. The report's "Which conv base" section (featstore/report/) plots them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from featstore import store
from featstore.errors import StoreError

#: the retrieval row the study reads: k and target
RETRIEVAL_K = 5
RETRIEVAL_TARGET = "mean"
#: the retrieval tables' ids: ``retrieval/<feature set>`` (featstore.retrieval writes them)
RETRIEVAL_TABLE = "retrieval"

#: Columns of :func:`base_table`, in order.
BASE_COLUMNS: list[str] = [
    "base",
    "input_hw",
    "params",
    "flops",
    "images_per_second",
    "accuracy",
    "balanced_accuracy",
    "probe",
    "chosen_by",
    "selection_score",
    "retrieval_top5",
    "accuracy_chance",
    "retrieval_top5_chance",
    "vs_best_gap",
    "vs_best_ci_low",
    "vs_best_ci_high",
    "vs_best_p",
    "vs_best_p_holm",
    "below_best",
]

#: Resamples of the paired bootstrap interval of a base's gap to the best base.
BASE_GAP_BOOT = 1000
#: Significance level of the tests against the best base (Holm over the other bases).
BASE_ALPHA = 0.05


def pareto_front(cost: Sequence[float], score: Sequence[float]) -> np.ndarray:
    """Boolean mask of the points on the Pareto front when a lower ``cost`` and a higher
    ``score`` are better: a point is on it when no other point has a cost <= and a score >=
    with at least one strictly better. Points with a NaN cost or score are never on it (and
    never dominate)."""
    c = np.asarray(cost, dtype=float)
    s = np.asarray(score, dtype=float)
    if c.shape != s.shape or c.ndim != 1:
        raise ValueError(f"cost and score must be 1-d of one length, got {c.shape}, {s.shape}")
    valid = ~(np.isnan(c) | np.isnan(s))
    front = valid.copy()
    for i in np.flatnonzero(valid):
        others = valid & (c <= c[i]) & (s >= s[i]) & ((c < c[i]) | (s > s[i]))
        if others.any():
            front[i] = False
    return front


def base_of(store_path: str | Any, name: str) -> tuple[str, dict[str, Any]] | None:
    """(conv base, the extract manifest) a feature set comes from: itself, or the source of a
    reduced set. None when no committed manifest says."""
    seen: set[str] = set()
    while name not in seen:
        seen.add(name)
        try:
            m = store.feature_set_manifest(store_path, name)
        except StoreError:
            return None
        source = m.get("source") if isinstance(m.get("source"), dict) else None
        if m.get("reducer") and source and source.get("name"):
            name = source["name"]
            continue
        return (str(m["model"]), m) if m.get("model") else None
    return None


def _is_reduced(store_path: str | Any, name: str) -> bool:
    try:
        return bool(store.feature_set_manifest(store_path, name).get("reducer"))
    except StoreError:
        return False


def _retrieval_rows(store_path: str | Any) -> pd.DataFrame:
    frames = [
        store.read_retrieval(store_path, t["id"].partition("/")[2])
        for t in store.list_tables(store_path)
        if t["id"].startswith(f"{RETRIEVAL_TABLE}/")
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def topk_chance(chance_precision: float, k: int) -> float:
    """Top-k accuracy of k items drawn at random (with replacement) for one binary attribute,
    from its ``chance_precision`` c = p² + (1 - p)² (p: the share of positives among the items):
    p (1 - (1 - p)^k) + (1 - p) (1 - p^k)."""
    c = min(1.0, max(0.5, float(chance_precision)))
    p = (1.0 - np.sqrt(2.0 * c - 1.0)) / 2.0
    return float(p * (1 - (1 - p) ** k) + (1 - p) * (1 - p**k))


def retrieval_chance(store_path: str | Any, row: pd.Series) -> float:
    """The chance level of a ``mean`` retrieval row's top-k accuracy: the mean over its
    attribute rows (same run: feature set, queries, items, metric, k) of :func:`topk_chance`."""
    ret = _retrieval_rows(store_path)
    same = ret[
        (ret["feature_set"] == row["feature_set"])
        & (ret["queries"] == row["queries"])
        & (ret["items"] == row["items"])
        & (ret["metric"] == row["metric"])
        & (ret["k"] == row["k"])
        & (ret["target"] == "attribute")
        & ret["chance_precision"].notna()
    ]
    if same.empty:
        return float("nan")
    return float(np.mean([topk_chance(c, int(row["k"])) for c in same["chance_precision"]]))


def _base_costs(
    store_path: str | Any, sets: set[str]
) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """``(feature set -> its conv base, base -> its cost columns)`` of the named feature sets
    (the first set of a base, by name, gives its costs)."""
    owner: dict[str, str] = {}
    costs: dict[str, dict[str, Any]] = {}
    for name in sorted(sets):
        found = base_of(store_path, name)
        if found is None:
            continue
        b, m = found
        owner[name] = b
        cost = m.get("base") if isinstance(m.get("base"), dict) else {}
        timing = m.get("timing") if isinstance(m.get("timing"), dict) else {}
        costs.setdefault(
            b,
            {
                "params": cost.get("params"),
                "flops": cost.get("flops"),
                "images_per_second": timing.get("images_per_second"),
                "input_hw": "x".join(map(str, m.get("input_hw") or [])),
            },
        )
    return owner, costs


def _probe_scores(mine: pd.DataFrame) -> dict[str, Any]:
    """The columns of one base's best (feature set, probe) pair: by mean ``selection_score``
    (test accuracy for fits written before it), its mean test scores, and the chance level."""
    per = mine.groupby(["feature_set", "model"], as_index=False).agg(
        accuracy=("accuracy", "mean"),
        balanced_accuracy=("balanced_accuracy", "mean"),
        selection_score=("selection_score", "mean"),
        unselected=("selection_score", lambda v: int(v.isna().sum())),
    )
    by = "selection_score" if (per["unselected"] == 0).all() else "accuracy"
    best = per.sort_values([by, "feature_set", "model"], ascending=[False, True, True]).iloc[0]
    return {
        "accuracy": float(best["accuracy"]),
        "balanced_accuracy": float(best["balanced_accuracy"]),
        "selection_score": float(best["selection_score"]),
        "chosen_by": "validation accuracy"
        if by == "selection_score"
        else "test accuracy (fits without selection_score)",
        "probe": f"{best['model']} on {best['feature_set']}",
        "_pair": (best["feature_set"], best["model"]),
        "accuracy_chance": float(mine.groupby("attribute")["majority_baseline"].mean().mean()),
    }


def _retrieval_scores(store_path: str | Any, mine_ret: pd.DataFrame) -> dict[str, Any]:
    """``retrieval_top5`` and its chance level of one base's retrieval rows: its raw feature
    set's (when only reduced sets were searched: the largest one's); {} when none."""
    raw = [n for n in mine_ret["feature_set"].unique() if not _is_reduced(store_path, n)]
    r = mine_ret[mine_ret["feature_set"].isin(raw)]
    if r.empty and not mine_ret.empty:  # only reduced sets were searched: the largest
        dims = mine_ret.groupby("feature_set")["dim"].first().sort_values()
        r = mine_ret[mine_ret["feature_set"] == dims.index[-1]]
    if not len(r):
        return {}
    return {
        "retrieval_top5": float(r["top_k_accuracy"].mean()),
        "retrieval_top5_chance": float(
            np.mean([retrieval_chance(store_path, t) for _, t in r.iterrows()])
        ),
    }


def _first_seed_fits(mine: pd.DataFrame, pair: tuple[str, str]) -> dict[str, Any]:
    """``{attribute: results row}`` of one (feature set, probe) pair, its first seed."""
    fs, model = pair
    rows = mine[(mine["feature_set"] == fs) & (mine["model"] == model)]
    rows = rows.sort_values(["attribute", "seed"], kind="stable").drop_duplicates("attribute")
    return {str(r.attribute): r for r in rows.itertuples(index=False)}


def _against_best(rows: list[dict[str, Any]], ok: pd.DataFrame) -> None:
    """Fill the ``vs_best_*`` columns of ``rows`` (see :func:`base_table`)."""
    from featstore import evaluate

    chosen = [r for r in rows if "_pair" in r]
    for r in rows:
        pair = r.pop("_pair", None)
        r["_fits"] = _first_seed_fits(ok, pair) if pair is not None else None
    scored = [r for r in chosen if not pd.isna(r["selection_score"])]
    if len(chosen) < 2 or len(scored) < len(chosen):  # no best chosen off the test split
        for r in rows:
            r.pop("_fits")
        return
    best = sorted(chosen, key=lambda r: (-r["selection_score"], r["base"]))[0]
    best.update(vs_best_gap=0.0)
    tested = []
    for r in chosen:
        pooled = (
            None
            if r is best
            else evaluate.pooled_difference(best["_fits"], r["_fits"], n_boot=BASE_GAP_BOOT)
        )
        if pooled is None:
            continue
        r.update(
            vs_best_gap=pooled["gap"],
            vs_best_ci_low=pooled["gap_ci_low"],
            vs_best_ci_high=pooled["gap_ci_high"],
            vs_best_p=pooled["p_value"],
        )
        tested.append(r)
    for r, p_holm in zip(tested, evaluate.holm([r["vs_best_p"] for r in tested]), strict=True):
        r.update(
            vs_best_p_holm=p_holm, below_best=bool(p_holm < BASE_ALPHA and r["vs_best_gap"] > 0)
        )
    for r in rows:
        r.pop("_fits")


def base_table(store_path: str | Any, ok: pd.DataFrame) -> pd.DataFrame:
    """One row per conv base found in ``ok`` (the successful results rows) or in the retrieval
    tables: ``base``, ``params``, ``flops``, ``images_per_second`` (extract manifest); the
    (feature set, probe) pair of the base with the best mean ``selection_score`` over attributes
    and seeds (validation accuracy: chosen off the test split; fits written before
    ``selection_score`` fall back to test accuracy, said in ``chosen_by``) in ``probe``, and THAT
    pair's mean test ``accuracy`` and ``balanced_accuracy`` as the estimate; and the
    ``retrieval_top5`` (top-5 accuracy, mean over attributes) of the base's raw feature set
    (fixed in advance: the best over the reduced sets would be chosen on the test queries).
    Only the fits at the largest training size count (the summary's). Their chance levels:
    ``accuracy_chance`` (the mean over attributes of the majority baseline) and
    ``retrieval_top5_chance`` (:func:`retrieval_chance`; balanced accuracy's is 0.5).

    Whether the differences are real (:func:`_against_best`): the best base is the one of
    highest ``selection_score`` (off the test split); every other base's chosen pair is compared
    with the best's on the same test images and attributes (the first seed of each):
    ``vs_best_gap`` (the best's test accuracy minus this base's, mean over the attributes both
    have), its paired 95% bootstrap interval ``vs_best_ci_low`` / ``vs_best_ci_high`` and the
    paired test ``vs_best_p`` (McNemar over every attribute's test images, by person where the
    results carry identities, by image otherwise: an image's attributes are not independent),
    ``vs_best_p_holm`` (Holm over the other bases) and ``below_best`` (``vs_best_p_holm`` <
    0.05 with a positive gap). The best base's own row has ``vs_best_gap`` 0 and no test."""
    sets = set(ok["feature_set"].dropna().unique()) if not ok.empty else set()
    ret = _retrieval_rows(store_path)
    if not ret.empty:
        ret = ret[(ret["k"] == RETRIEVAL_K) & (ret["target"] == RETRIEVAL_TARGET)]
        sets |= set(ret["feature_set"].unique())
    owner, costs = _base_costs(store_path, sets)
    if not ok.empty:  # the summary's training size: the one with the most training rows
        sizes = ok.groupby("train_size")["n_train"].median().sort_values(kind="stable")
        ok = ok[ok["train_size"] == sizes.index[-1]]
    rows = []
    for b in sorted(costs):
        row: dict[str, Any] = {
            "base": b,
            **costs[b],
            "accuracy": np.nan,
            "balanced_accuracy": np.nan,
            "probe": "",
            "chosen_by": "",
            "selection_score": np.nan,
            "retrieval_top5": np.nan,
            "accuracy_chance": np.nan,
            "retrieval_top5_chance": np.nan,
            **dict.fromkeys(BASE_COLUMNS[BASE_COLUMNS.index("vs_best_gap") :], np.nan),
        }
        mine = ok[ok["feature_set"].map(owner.get) == b] if not ok.empty else ok
        if not mine.empty:
            row.update(_probe_scores(mine))
        if not ret.empty:
            mine_ret = ret[(ret["feature_set"].map(owner.get) == b) & ret["top_k_accuracy"].notna()]
            row.update(_retrieval_scores(store_path, mine_ret))
        rows.append(row)
    _against_best(rows, ok)
    out = pd.DataFrame(rows, columns=BASE_COLUMNS)
    for c in ("params", "flops", "images_per_second"):
        out[c] = pd.to_numeric(out[c], errors="coerce").astype(float)
    return out
