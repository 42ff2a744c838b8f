"""Time `tagger_eval.scoring.threshold_metrics` on a run of Danbooru's size: `python benchmarks/metrics_speed.py`.

Builds a random sparse run (30,000 posts x 10,000 tags by default): Zipf-like tag frequencies, about 30 truth tags
and 150 stored probabilities per post (a tagger storing everything above a floor), four rating tags with one true
rating per post, then times each metric and prints seconds. Target: everything in a few seconds on 2 cores.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from tagger_eval.scoring.threshold_metrics import (
    PredictionSet,
    average_precision,
    best_score_threshold,
    pr_breakeven,
    scores_at,
    subset_mask,
    tagger_metrics,
)
from tagger_eval.tags import CHARACTER, GENERAL, RATING


def random_run(n_posts: int, n_tags: int, truth_per_post: int, stored_per_post: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    n_ratings = 4
    categories = np.where(rng.random(n_tags) < 0.15, CHARACTER, GENERAL)
    categories[:n_ratings] = RATING
    tags = tuple(["rating:general", "rating:sensitive", "rating:questionable", "rating:explicit"][:n_ratings]) + tuple(
        f"tag_{i}" for i in range(n_ratings, n_tags)
    )
    n_plain = n_tags - n_ratings

    def unique(keys: np.ndarray) -> np.ndarray:  # sort-based: faster than np.unique's hashing here
        keys = np.sort(keys, axis=None)
        return keys[np.concatenate(([True], keys[1:] != keys[:-1]))]

    def draw(per_post: int) -> np.ndarray:
        """About `per_post` distinct non-rating tags per post, popularity ~ 1 / rank**0.9 (index = rank)."""
        size = (n_posts, int(per_post * 1.12))
        # Inverse CDF of the continuous power law x**-0.9 on [1, n_plain + 1).
        u = rng.random(size)
        tag = n_ratings + (((n_plain + 1) ** 0.1 - 1) * u + 1) ** 10 - 1
        tag = np.minimum(tag.astype(np.int64), n_tags - 1)
        return unique(np.arange(n_posts, dtype=np.int64)[:, None] * n_tags + tag)

    true_keys = draw(truth_per_post - 1)  # and one rating
    candidates = draw(stored_per_post - 4 - truth_per_post // 2)  # plus the ratings and most of the truth
    # Stored: the candidates plus 90% of the truth (the rest is missed below the floor), plus every rating.
    hit = rng.random(true_keys.size) < 0.9
    rating_true = rng.integers(0, n_ratings, n_posts)
    rating_keys = np.arange(n_posts, dtype=np.int64)[:, None] * n_tags + np.arange(n_ratings)
    stored_keys = np.concatenate((unique(np.concatenate((candidates, true_keys[hit]))), rating_keys.ravel()))
    true_keys = np.concatenate((true_keys, np.arange(n_posts, dtype=np.int64) * n_tags + rating_true))
    is_true = np.isin(stored_keys, true_keys)
    prob = np.where(is_true, rng.beta(4, 2, stored_keys.size), rng.beta(1, 12, stored_keys.size))
    prob = np.clip(prob, 0.01, 1.0).astype(np.float32)  # float32 sigmoid outputs: nearly all distinct
    order = rng.permutation(stored_keys.size)
    stored_keys, prob = stored_keys[order], prob[order]
    ps = PredictionSet(
        n_posts=n_posts,
        tags=tags,
        categories=categories,
        pred_post=(stored_keys // n_tags).astype(np.int32),
        pred_tag=(stored_keys % n_tags).astype(np.int32),
        pred_prob=prob,
        true_post=(true_keys // n_tags).astype(np.int32),
        true_tag=(true_keys % n_tags).astype(np.int32),
        frequency_rank=np.arange(n_tags),
    )
    truth_sizes = np.bincount(ps.true_post, minlength=n_posts)
    return ps, truth_sizes


def timed(label: str, call: Callable[[], object]) -> object:
    start = time.perf_counter()
    result = call()
    print(f"{label:<40} {time.perf_counter() - start:8.3f} s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=30_000)
    parser.add_argument("--tags", type=int, default=10_000)
    parser.add_argument("--truth-per-post", type=int, default=30)
    parser.add_argument("--stored-per-post", type=int, default=150)
    args = parser.parse_args()
    start = time.perf_counter()
    ps, truth_sizes = random_run(args.posts, args.tags, args.truth_per_post, args.stored_per_post)
    print(
        f"built {ps.n_posts} posts x {len(ps.tags)} tags: {ps.pred_prob.size} stored probabilities, "
        f"{ps.true_post.size} truth pairs; per post {ps.pred_prob.size / ps.n_posts:.0f} stored, "
        f"{ps.true_post.size / ps.n_posts:.0f} true ({time.perf_counter() - start:.1f} s)"
    )
    mask = subset_mask(ps, "all")
    timed("scores_at(0.35, all)", lambda: scores_at(ps, 0.35, mask))
    timed("pr_breakeven(all, micro)", lambda: pr_breakeven(ps, mask, "micro"))
    timed("pr_breakeven(all, macro)", lambda: pr_breakeven(ps, mask, "macro"))
    timed("average_precision(all)", lambda: average_precision(ps, mask))
    timed("best_score_threshold", lambda: best_score_threshold(ps, truth_sizes))
    result = timed("tagger_metrics (everything, 5 subsets)", lambda: tagger_metrics(ps, truth_sizes, 0.35))
    best = result["best_score_threshold"]
    print(
        f"micro P=R threshold {result['all']['micro']['pr_threshold']:.4f} (F1 {result['all']['micro']['f1']:.4f}), "
        f"micro AP {result['all']['average_precision']['micro']:.4f}, "
        f"best seed-score threshold {best['threshold']:.4f} (mean {best['mean_score']:.4f})"
    )


if __name__ == "__main__":
    main()
