"""How often the significance tests reject a true null when images cluster by person.

Simulates test splits like CelebA's (people with several images each, labels and scores that
share a per-person effect, two models equally good on average but each better for some
people) and counts how often each test rejects at ``--alpha``: the identity-blind tests
(McNemar, Mann-Whitney) against the tests by identity (:func:`featstore.evaluate.mcnemar` /
:func:`~featstore.evaluate.auc_vs_chance` with ``groups``). A valid test rejects about
``alpha`` of the time; the printed 95% interval is the Monte-Carlo error of that rate. With
``--effect`` both alternatives hold instead, and the rates are the tests' power.

    .venv/bin/python bench/bench_identity_tests.py --people 100 --images 20 --runs 1000
    .venv/bin/python bench/bench_identity_tests.py --effect 0.5
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from featstore.evaluate import auc_vs_chance, mcnemar


def one_run(
    rng: np.random.Generator, people: int, images: int, spread: float, effect: float = 0.0
) -> dict[str, float]:
    """p-values of the four tests on one simulated test split: both nulls hold with
    ``effect=0``; otherwise the scores rise by ``effect`` on positives and model A errs
    ``effect / 10`` less often than B (what the tests should find)."""
    g = np.repeat(np.arange(people), images)
    n = g.size
    # labels and scores: each has a per-person effect, independent of each other (AUC = 0.5)
    t = (rng.normal(0, spread, people)[g] + rng.normal(0, 1, n) > 0).astype(np.int8)
    score = rng.normal(0, spread, people)[g] + rng.normal(0, 1, n) + effect * t
    # two models with the same error rate on average, each worse for some people
    err_a = np.clip(0.05 + 0.3 * rng.random(people)[g] - effect / 10, 0.0, 1.0)
    err_b = 0.05 + 0.3 * rng.random(people)[g]
    pred_a = np.where(rng.random(n) < err_a, 1 - t, t)
    pred_b = np.where(rng.random(n) < err_b, 1 - t, t)
    return {
        "mcnemar, images": mcnemar(t, pred_a, pred_b)["p_value"],
        "mcnemar, by identity": mcnemar(t, pred_a, pred_b, groups=g)["p_value"],
        "auc > 0.5, images (mann-whitney)": auc_vs_chance(t, score)["p_value"],
        "auc > 0.5, by identity (obuchowski)": auc_vs_chance(t, score, groups=g)["p_value"],
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--people", type=int, default=100)
    ap.add_argument("--images", type=int, default=20, help="images per person")
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--spread", type=float, default=1.5, help="sd of the per-person effects")
    ap.add_argument("--effect", type=float, default=0.0, help="0: both nulls true (the level)")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    rejected: dict[str, int] = {}
    for _ in range(args.runs):
        for name, p in one_run(rng, args.people, args.images, args.spread, args.effect).items():
            rejected[name] = rejected.get(name, 0) + int(p < args.alpha)
    print(
        f"{args.runs} simulated test splits, {args.people} people x {args.images} images, "
        f"per-person sd {args.spread}, "
        + ("both nulls true" if args.effect == 0 else f"effect {args.effect}")
        + f"; rejections at alpha {args.alpha}:"
    )
    for name, k in rejected.items():
        rate = k / args.runs
        half = 1.96 * math.sqrt(max(rate * (1 - rate), 1e-12) / args.runs)
        print(f"  {name:40s} {rate:6.3f}  (95% MC interval {rate - half:.3f}-{rate + half:.3f})")


if __name__ == "__main__":
    main()
