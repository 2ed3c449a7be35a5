"""The trainer's one command line: ``python -m trainer`` (also under ``torchrun``) and ``embedgeom train``, which
hands its arguments unchanged to :func:`main` (``main(args, prog="embedgeom train")``).

    python -m trainer --objective mlm|hybrid --corpus SPEC --out DIR [--preset tiny|paper|base] [--steps N]
                      [--resume] [--set section.field=value ...] [--device auto|cpu|cuda|cuda:N]
                      [-q | -v] [--format text|json]

Streams (rank 0 only under torchrun; the other ranks print errors and warnings only):

* stdout, the result. ``--format text`` (default): one line, ``trained N steps in S s (T tokens/s); final
  checkpoint: PATH``. ``--format json``: one JSON object per logged step, then ``{"summary": {...}}`` (every field
  of :class:`trainer.TrainSummary`) as the last line.
* stderr, progress: with ``--format text`` a progress bar when stderr is a terminal, otherwise one line per
  logged step (``step N/TOTAL loss_mlm=... loss_jepa=... lr=...``); ``-v`` gives both, ``-q`` neither. With
  ``--format json`` the JSON lines are the progress: ``-q`` drops them (the summary stays) and ``-v`` adds the
  stderr lines.
* stderr, warnings: one line each, ``warning: ...``. The trainer's own (:class:`trainer.TrainerWarning`, e.g. a run
  stopped before its first checkpoint being replaced) are shown even with ``-q``; other libraries' are not.
* stderr, errors: one line, ``error: ...``.

Exit codes: 0 done (also ``--help``); 2 bad input (an unknown or malformed option, a bad value, a refused
``--out`` or ``--resume``: every :class:`trainer.TrainerError`); 1 any other failure (``EMBEDGEOM_DEBUG=1``
re-raises it with its traceback); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from .config import OBJECTIVES, PRESETS, valid_keys
from .errors import TrainerError, TrainerWarning

PROG = "python -m trainer"
FORMATS: tuple[str, ...] = ("text", "json")
#: Logged values shown in a progress line (when present).
PROGRESS_KEYS: tuple[str, ...] = ("loss_mlm", "loss_jepa", "lr")


class _Parser(argparse.ArgumentParser):
    """argparse that raises a one-line :class:`TrainerError` instead of printing the usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise TrainerError(f"{message} (see '{self.prog} --help').")


def _epilog() -> str:
    paragraphs = [
        "Output: the result on stdout (text: 'trained N steps in S s (T tokens/s); final checkpoint: PATH', N = the "
        "steps this call trained; json: "
        "one JSON object per logged step, then {\"summary\": {...}}); progress, warnings and errors on stderr (a "
        "progress bar on a terminal, else one line per logged step). Under torchrun only rank 0 prints results and "
        "progress.",
        "Exit codes: 0 done; 2 bad input (one line 'error: ...'); 1 any other failure (EMBEDGEOM_DEBUG=1 shows the "
        "traceback); 130 interrupted.",
        "Multi-GPU: torchrun --nproc_per_node N -m trainer with the same options (train.batch_size is global).",
        "Keys for --set (see trainer/config.py for each field's meaning): " + ", ".join(valid_keys()) + ".",
    ]
    return "\n\n".join(textwrap.fill(p, width=100, break_on_hyphens=False) for p in paragraphs)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The parser of every option (``prog`` names the command in the usage and error lines)."""
    description = ("Pre-train a BERT encoder with masked language modelling (mlm) or MLM + JEPA latent prediction "
                   "(hybrid); every checkpoint is a Hugging Face model directory.")
    p = _Parser(prog=prog, description=textwrap.fill(description, width=100), epilog=_epilog(),
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--objective", required=True, choices=OBJECTIVES,
                   help="mlm, or hybrid (MLM + JEPA: EMA teacher, predictor, learnable balance). Required.")
    p.add_argument("--corpus", required=True, metavar="SPEC",
                   help="sample:wiki|bbc|lee|polarity|all (offline samples), a .txt/.jsonl/.parquet file (.txt and "
                   ".jsonl are strict UTF-8; FILE?encoding=NAME reads another encoding), or hf:NAME[:CONFIG] (a "
                   "Hugging Face dataset, online). Required.")
    p.add_argument("-o", "--out", required=True, metavar="DIR",
                   help="Run directory (checkpoints, logs, run.json): new or empty, or a run to --resume. Required.")
    p.add_argument("--preset", default="tiny", choices=PRESETS,
                   help="tiny (CPU, seconds per step), paper (6 x 512, ~35M params) or base (BERT-base). "
                   "Default: tiny.")
    p.add_argument("--steps", type=int, default=None, metavar="N",
                   help="Optimizer steps (overrides train.steps). Default: the preset's.")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=False,
                   help="Continue the newest intact checkpoint in --out on the same loss curve (a damaged newer one "
                   "is named in a warning and skipped; a run stopped before its first checkpoint starts again from "
                   "step 0). Default: off.")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="Override a config field, e.g. --set optim.lr=3e-4 (repeatable; type-checked; the keys are "
                   "listed below).")
    p.add_argument("--device", default="auto",
                   help="auto (cuda when available, else mps, else cpu), cpu, cuda or cuda:N. Default: auto.")
    p.add_argument("--format", default="text", choices=FORMATS,
                   help="stdout: text (one summary line) or json (one JSON object per logged step, then the "
                   "summary). Default: text.")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="No progress (with --format json: no per-step lines); only errors and the trainer's "
                   "warnings on stderr.")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="A progress line per logged step on stderr, besides the progress bar on a terminal.")
    return p


def _info(row: dict[str, Any]) -> str:
    return " ".join(f"{k}={row[k]:.3g}" for k in PROGRESS_KEYS if isinstance(row.get(k), (int, float)))


class Progress:
    """The ``progress`` callback of :func:`trainer.run` for the command line (see the module docstring).

    ``level``: -1 quiet, 0 default, 1 verbose; ``terminal``: whether stderr is a terminal (None = ask rich).
    Use as a context manager around the run, so the progress bar is closed before the result is printed."""

    def __init__(self, *, level: int, fmt: str, title: str, total: int | None, terminal: bool | None = None):
        from rich.console import Console

        console = Console(file=sys.stderr, soft_wrap=True, force_terminal=terminal)
        self.json_rows = fmt == "json" and level >= 0
        self.bar_on = fmt == "text" and level >= 0 and console.is_terminal
        self.lines_on = level > 0 or (fmt == "text" and level == 0 and not self.bar_on)
        self.console = console
        self._bar: Any = None
        if self.bar_on:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as Bars

            self._bar = Bars(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                             TextColumn("{task.fields[info]}"), console=console)
            self._task = self._bar.add_task(title, total=total, info="")

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def __call__(self, row: dict[str, Any]) -> None:
        if self.json_rows:
            print(json.dumps(row, default=str), flush=True)
        step, total, info = row.get("step", 0), row.get("total_steps"), _info(row)
        if self._bar is not None:
            self._bar.update(self._task, completed=step, total=total, info=info)
        if self.lines_on:
            line = f"step {step}/{total if total is not None else '?'} {info}".rstrip()
            if self._bar is not None:
                self._bar.console.print(line, highlight=False, markup=False)
            else:
                print(line, file=sys.stderr, flush=True)


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _show_warnings(level: int) -> Callable[..., None]:
    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
             line: str | None = None) -> None:
        if issubclass(category, TrainerWarning) or level >= 0:
            print(f"warning: {_one_line(message) if isinstance(message, Warning) else message}", file=sys.stderr,
                  flush=True)

    return show


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    """Run the command line on ``argv`` (default: ``sys.argv[1:]``) and return the exit code; never calls
    ``sys.exit`` (``--help`` prints the help on stdout and returns 0). See the module docstring for the streams."""
    parser = build_parser(prog)
    try:
        args = parser.parse_args(None if argv is None else list(argv))
        if args.quiet and args.verbose:
            raise TrainerError("--verbose, --quiet: expected at most one of them, got both.")
    except TrainerError as err:
        print(f"error: {_one_line(err)}", file=sys.stderr, flush=True)
        return 2
    except SystemExit as done:  # --help
        return done.code if isinstance(done.code, int) else 0

    from . import run

    is_main = os.environ.get("RANK", "0") == "0"
    level = -1 if args.quiet else (1 if args.verbose else 0)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warnings(level)
            progress = Progress(level=level if is_main else -1, fmt=args.format, total=args.steps,
                                title=f"train {args.objective}/{args.preset}")
            with progress:
                summary = run(args.objective, args.preset, args.corpus, args.out, steps=args.steps,
                              resume=args.resume, overrides=args.overrides, device=args.device, progress=progress)
    except TrainerError as err:
        print(f"error: {_one_line(err)}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr, flush=True)
        return 130
    except Exception as err:
        if os.environ.get("EMBEDGEOM_DEBUG"):
            raise
        print(f"error: {_one_line(err)} (EMBEDGEOM_DEBUG=1 for the traceback)", file=sys.stderr, flush=True)
        return 1
    if is_main:
        if args.format == "json":
            fields = {k: (str(v) if hasattr(v, "__fspath__") else v) for k, v in vars(summary).items()}
            print(json.dumps({"summary": fields}, default=str), flush=True)
        else:
            trained = summary.steps - (summary.resumed_from or 0)  # by this call: 0 when resuming a finished run
            print(f"trained {trained} steps in {summary.wall_seconds:.0f} s ({summary.tokens_per_s:.0f} "
                  f"tokens/s); final checkpoint: {summary.final_checkpoint}", flush=True)
    return 0
