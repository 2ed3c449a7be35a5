"""Geometry against depth: every hidden layer from the same pass, drawn as one figure.

    python examples/layer_profile.py [--checkpoint DIR] [--max-texts 300] [--out layer_profile.png]
"""

from __future__ import annotations

import argparse

import embedgeom as eg
from embedgeom.samples import minilm_path


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--data", default="sample:wiki")
    ap.add_argument("--max-texts", type=int, default=300)
    ap.add_argument("--metric", default="effective_rank")
    ap.add_argument("--out", default="layer_profile.png")
    args = ap.parse_args(argv)

    res = eg.analyze(args.checkpoint or minilm_path(), args.data, poolings="mean", layers="all",
                     max_texts=args.max_texts, probes=False)
    task = next(iter(res.tasks))
    for t, pooling, layer in res.measured():
        row = res.value(t, pooling, layer, args.metric)
        print(f"layer {layer:2d}: {args.metric} = {row['value']:.3f} [{row['low']:.3f}, {row['high']:.3f}]")
    fig = eg.plot.layer_profile(res, task, args.metric)
    fig.savefig(args.out, dpi=150)
    print(f"figure: {args.out}")
    return args.out


if __name__ == "__main__":
    main()
