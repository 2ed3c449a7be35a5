"""``python -m trainer``: the same :func:`trainer.run`, from the command line or under ``torchrun``.

    python -m trainer --objective mlm|hybrid --preset tiny|paper|base --corpus SPEC --out DIR
                      [--steps N] [--resume] [--set key=value ...] [--device auto|cpu|cuda]

Rank 0 prints one JSON line per logging step to stdout and a summary line at the end; errors are one line on
stderr with exit code 2 (bad input) or 1 (anything else); the trainer's warnings (e.g. a run killed before its
first checkpoint being replaced) are one line on stderr, ``warning: ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from .config import OBJECTIVES, PRESETS, valid_keys
from .errors import TrainerError, TrainerWarning


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer", description="Pre-train an MLM or hybrid MLM+JEPA encoder.",
                                epilog="Keys for --set: " + ", ".join(valid_keys()))
    p.add_argument("--objective", required=True, choices=OBJECTIVES)
    p.add_argument("--preset", required=True, choices=PRESETS)
    p.add_argument("--corpus", required=True, help="sample:wiki|bbc|lee|polarity|all, a .txt/.jsonl/.parquet "
                   "file, or hf:NAME[:CONFIG]")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the preset's)")
    p.add_argument("--resume", action="store_true", help="continue the newest checkpoint in --out (a run killed "
                   "before its first checkpoint starts again from step 0)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set optim.lr=3e-4 (repeatable)")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda")
    p.add_argument("--quiet", action="store_true", help="no per-step output")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from . import run

    args = build_parser().parse_args(argv)
    is_main = os.environ.get("RANK", "0") == "0"

    def progress(row: dict) -> None:
        if is_main and not args.quiet:
            print(json.dumps(row, default=str), flush=True)

    shown = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
             line: str | None = None) -> None:
        if issubclass(category, TrainerWarning):
            print(f"warning: {message}", file=sys.stderr, flush=True)
        else:
            shown(message, category, filename, lineno, file, line)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = show
            summary = run(args.objective, args.preset, args.corpus, args.out, steps=args.steps, resume=args.resume,
                          overrides=args.overrides, device=args.device, progress=progress)
    except TrainerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if is_main:
        print(json.dumps({"summary": {k: (str(v) if hasattr(v, "__fspath__") else v)
                                      for k, v in vars(summary).items()}}, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
