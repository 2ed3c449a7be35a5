"""Analyse one checkpoint on the offline sample tasks, print the headline table and save the result.

    python examples/analyze_checkpoint.py [CHECKPOINT] [--max-texts 300] [--out results/minilm]

CHECKPOINT defaults to the pretrained all-MiniLM-L6-v2 shipped by the demo extra.
"""

from __future__ import annotations

import argparse

import embedgeom as eg
from embedgeom.samples import minilm_path


def main(argv: list[str] | None = None) -> eg.AnalysisResult:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("checkpoint", nargs="?", default=None)
    ap.add_argument("--data", default="sample:bbc,sample:lee")
    ap.add_argument("--max-texts", type=int, default=300)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    res = eg.analyze(args.checkpoint or minilm_path(), args.data, poolings="all", max_texts=args.max_texts)
    frame = res.to_frame()
    headline = frame[(frame.kind == "metric") & frame.name.isin(["uniformity", "alignment", "effective_rank"])]
    table = headline.pivot_table(index=["task", "pooling"], columns="name", values="value")
    print(table.round(3).to_string())
    print(f"\nmodel {res.name}: {res.checkpoint['num_parameters'] / 1e6:.1f}M parameters, hash "
          f"{res.checkpoint['content_hash'][:12]}, dtype {res.checkpoint['compute_dtype']}")
    if args.out:
        res.save(args.out)
        print(f"saved to {args.out} (embedgeom report {args.out} --out report/ draws the figures)")
    return res


if __name__ == "__main__":
    main()
