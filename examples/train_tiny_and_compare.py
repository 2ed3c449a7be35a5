"""Pre-train a tiny MLM and a tiny hybrid (MLM + JEPA) encoder on the same text, then compare their geometry.

    python examples/train_tiny_and_compare.py [--steps 300] [--out runs/example] [--corpus sample:wiki]

On a laptop CPU the default takes a few minutes; `--steps 20` is a smoke run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import embedgeom as eg
import trainer


def main(argv: list[str] | None = None) -> eg.ComparisonResult:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--out", default="runs/example")
    ap.add_argument("--corpus", default="sample:wiki")
    ap.add_argument("--data", default="sample:lee,sample:polarity")
    ap.add_argument("--max-texts", type=int, default=300)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="trainer override key=value")
    args = ap.parse_args(argv)

    results = {}
    for objective in ("mlm", "hybrid"):
        summary = trainer.run(objective, "tiny", args.corpus, Path(args.out) / objective, steps=args.steps,
                              overrides=args.overrides)
        print(f"{objective}: {summary.steps} steps, final losses {summary.final_losses}")
        results[objective] = eg.analyze(summary.final_checkpoint, args.data, max_texts=args.max_texts)
    cmp = eg.compare(results["mlm"], results["hybrid"])
    frame = cmp.to_frame()
    print(frame[frame.kind == "metric"][["task", "pooling", "name", "value_a", "value_b", "diff", "significant"]]
          .to_string(index=False))
    return cmp


if __name__ == "__main__":
    main()
