"""Geometry metrics on embeddings you already have (any (n, d) numpy array or torch tensor).

    python examples/metrics_on_your_embeddings.py [--n 3000] [--d 256]

Replace the synthetic `x` below with your own embeddings (one row per text).
"""

from __future__ import annotations

import argparse

import numpy as np

from embedgeom import metrics as M


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--d", type=int, default=256)
    args = ap.parse_args(argv)

    rng = np.random.default_rng(0)
    # an anisotropic point cloud: a common direction plus a decaying spectrum, like many text encoders
    x = rng.standard_normal((args.n, args.d)) * np.arange(1, args.d + 1) ** -0.6 + 0.8
    y = x + 0.05 * rng.standard_normal(x.shape)  # "positives": a slightly perturbed copy of each row

    print(f"n = {args.n}, d = {args.d}")
    for name in ("uniformity", "mean_cosine", "effective_rank", "rankme", "isoscore", "alpha_req"):
        ci = M.confidence_interval(name, x)
        print(f"{name:>15}: {ci.value:9.4f}  {ci.confidence * 100:.4g}% CI [{ci.low:.4f}, {ci.high:.4f}]  "
              f"({ci.method})")
    print(f"{'alignment':>15}: {M.alignment(x, y):9.4f}  (positives = perturbed copies)")
    fit = M.alpha_req(x)
    print(f"power law: alpha = {fit.alpha:.3f} over ranks {fit.window}, R^2 = {fit.r2:.3f}")

    # the same spectral numbers from a stream of batches, in O(d^2) memory
    acc = M.SpectralAccumulator()
    for batch in np.array_split(x, 10):
        acc.update(batch)
    streamed = acc.compute()
    print(f"streamed effective rank {streamed['effective_rank']:.4f} == batch {M.effective_rank(x):.4f}")

    # a second "model" on the same texts: paired difference with its interval
    squashed = x * np.r_[np.ones(16), np.full(args.d - 16, 0.3)]
    diff = M.paired_difference("effective_rank", x, squashed)
    print(f"effective rank, model B - model A: {diff.value:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}] "
          f"significant={diff.significant}")
    print(f"linear CKA(A, B) = {M.linear_cka(x, squashed):.4f}, 10-NN overlap = {M.knn_overlap(x, squashed):.3f}")
    return {"streamed": streamed["effective_rank"], "batch": M.effective_rank(x), "diff": diff.value}


if __name__ == "__main__":
    main()
