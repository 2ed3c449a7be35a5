"""Which pooling gives the most uniform / highest-rank embeddings? One encoder pass gives all four poolings;
paired differences between poolings are valid because every pooling embeds the same texts.

    python examples/compare_poolings.py [--checkpoint DIR] [--data sample:wiki] [--max-texts 400]
"""

from __future__ import annotations

import argparse

import embedgeom as eg
from embedgeom import metrics as M
from embedgeom.data import load_texts
from embedgeom.samples import minilm_path


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--data", default="sample:wiki")
    ap.add_argument("--max-texts", type=int, default=400)
    args = ap.parse_args(argv)

    enc = eg.load_encoder(args.checkpoint or minilm_path())
    texts = list(load_texts(args.data, max_texts=args.max_texts).texts)
    emb = eg.encode(enc, texts, poolings=("mean", "cls", "max", "attention"))  # one forward pass per batch
    out = {}
    for pooling in emb.poolings:
        cis = M.confidence_intervals(["uniformity", "effective_rank"], emb.get(pooling))
        out[pooling] = {k: v.value for k, v in cis.items()}
        u, r = cis["uniformity"], cis["effective_rank"]
        print(f"{pooling:>9}: uniformity {u.value:7.3f} ± {u.high - u.value:.3f}   "
              f"effective rank {r.value:7.1f} ± {r.high - r.value:.1f}")
    d = M.paired_difference("uniformity", emb.get("mean"), emb.get("max"))  # b - a: max minus mean
    print(f"uniformity(max) - uniformity(mean) = {d.value:+.3f} [{d.low:+.3f}, {d.high:+.3f}], n = {d.n}")
    return out


if __name__ == "__main__":
    main()
