"""The ``embedgeom`` command line: analyze, compare, report, train, demo, metrics.

Results go to stdout; progress bars, warnings and errors to stderr. Any failure exits non-zero with one
clear line (set EMBEDGEOM_DEBUG=1 for the traceback).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from .options import AnalysisOptions

app = typer.Typer(
    name="embedgeom",
    help="Measure the geometry of text-encoder embedding spaces, compare checkpoints with confidence intervals, "
         "draw report figures, and pre-train MLM / hybrid MLM+JEPA encoders.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _out() -> Console:
    """Console on the *current* stdout (piped output gets wide tables instead of rich's 80 columns)."""
    tty = sys.stdout.isatty()
    return Console(file=sys.stdout, width=None if tty else int(os.environ.get("COLUMNS", 200)), markup=False)


def _err() -> Console:
    # an error or warning stays one line; text that came from data or paths is never read as markup
    return Console(file=sys.stderr, soft_wrap=True, markup=False)

HEADLINE = {"uniformity": "uniformity", "alignment": "alignment", "effective_rank": "eff. rank", "rankme": "RankMe",
            "isoscore": "IsoScore", "alpha_req": "α-ReQ", "mean_cosine": "mean cos"}


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


class Protocol(str, Enum):
    default = "default"
    paper = "paper"
    both = "both"


class SpecialTokens(str, Enum):
    include = "include"
    exclude = "exclude"


# --- shared plumbing ------------------------------------------------------------------------------------

def _fail(message: str, code: int = 1, hint: str = "") -> None:
    """Print ``error: message`` as one plain line on stderr (never parsed as markup) and exit with ``code``."""
    _err().print(Text.assemble(("error:", "bold red"), " ", " ".join(str(message).split()),
                               (f"  {hint}" if hint else "", "dim")), highlight=False)
    raise typer.Exit(code)


#: -q: errors only; default: progress bars on a terminal, stage lines (with timings) otherwise; -v: both.
_VERBOSITY = {"level": 0}


def _set_verbosity(verbose: bool, quiet: bool) -> None:
    if verbose and quiet:
        _fail("--verbose, --quiet: expected at most one of them, got both.")
    _VERBOSITY["level"] = -1 if quiet else (1 if verbose else 0)


def _saved(message: str) -> None:
    """Where results went, on stderr; nothing under -q (errors only)."""
    if _VERBOSITY["level"] >= 0:
        _err().print(message, highlight=False)


def _one_line(err: BaseException) -> str:
    """The first line of an error's message; an OS error names its path, the errno and the fix."""
    if isinstance(err, OSError) and err.errno is not None:
        from .storage import os_error_line

        doing = "write" if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS) else "use"
        return os_error_line(err, "(path not reported)", doing)
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


@contextmanager
def _guard() -> Iterator[None]:
    """One clear line (and a non-zero exit) for any failure; the traceback only with EMBEDGEOM_DEBUG=1."""
    def show(message, category, filename, lineno, file=None, line=None):
        if _VERBOSITY["level"] >= 0:
            _err().print(Text.assemble(("warning:", "yellow"), " ", " ".join(str(message).split())),
                         highlight=False)

    old = warnings.showwarning
    warnings.showwarning = show
    try:
        yield
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as err:
        if os.environ.get("EMBEDGEOM_DEBUG"):
            raise
        _fail(_one_line(err), hint="(EMBEDGEOM_DEBUG=1 for the traceback)")
    finally:
        warnings.showwarning = old


@contextmanager
def _progress(threads: str | None = None) -> Iterator[Callable[[str, int, int], None]]:
    """Progress on stderr for a block of work run with ``threads`` CPU threads (--threads: ``auto`` or N, see
    :func:`embedgeom.threads.limit_threads`; None: the thread pools as they are); yields a
    ``callback(stage, done, total)``. Rich bars when stderr is a terminal (or
    EMBEDGEOM_PROGRESS=1); when it is not (CI logs, nohup, pipes), or with -v, plain lines
    (:class:`~embedgeom.progress.ProgressLines`): one when a stage starts, at most one every
    EMBEDGEOM_PROGRESS_INTERVAL seconds (default 10) with done/total, percent, rate and ETA, one when it ends with
    its duration; nothing with -q."""
    from .progress import ProgressLines
    from .threads import check_threads, limit_threads

    if threads is not None:
        check_threads(threads, "--threads")  # one line before any work
    level = _VERBOSITY["level"]
    bars_on = level >= 0 and (_err().is_terminal or os.environ.get("EMBEDGEOM_PROGRESS") == "1")
    lines_on = level > 0 or (level == 0 and not bars_on)
    try:
        lines = ProgressLines(lambda line: _err().print(line, highlight=False)) if lines_on else None
    except ValueError as err:  # a bad EMBEDGEOM_PROGRESS_INTERVAL, before any work
        _fail(str(err))
    bars = Progress(TextColumn("{task.description:<28}", markup=False), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=_err(), transient=False, disable=not bars_on)
    tasks: dict[str, Any] = {}

    def callback(stage: str, done: int, total: int) -> None:
        if bars_on:
            if stage not in tasks:
                tasks[stage] = bars.add_task(stage[:28], total=max(total, 1))
            bars.update(tasks[stage], completed=done, total=max(total, 1))
        if lines is not None:
            lines(stage, done, total)

    with bars, (limit_threads(threads) if threads is not None else contextlib.nullcontext()):
        yield callback


def _fmt(v: Any, half: Any = None) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    s = f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
    if half is not None and isinstance(half, (int, float)) and math.isfinite(half) and half > 0:
        s += f" ±{half:.2g}"
    return s


def _half(row: dict) -> float:
    lo, hi, v = row.get("low"), row.get("high"), row.get("value")
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return math.nan
    return max(v - lo, hi - v)


def _cells(metrics: Iterable[str], lookup: Callable[[str], dict]) -> list[str]:
    """One table cell per metric: value ± half-width of its interval (``lookup(metric)`` gives its row), or – where
    it was not measured (KeyError)."""
    cells = []
    for m in metrics:
        try:
            row = lookup(m)
        except KeyError:
            cells.append("–")
            continue
        cells.append(_fmt(row["value"], _half(row)))
    return cells


def _token_row(res: Any, task: str, layer: int, variant: str, metric: str) -> dict:
    return res.value(task, layer, metric, variant)


def _metric_cells(res: Any, task: str, pooling: str, layer: int, metrics: list[str]) -> list[str]:
    return _cells(metrics, lambda m: res.value(task, pooling, layer, m))


def _ci(options: Any) -> str:
    """The interval label for results made at ``options['confidence']`` (e.g. "95% CI", "90% CI")."""
    conf = (options or {}).get("confidence")
    return f"{float(conf) * 100:.4g}% CI" if isinstance(conf, (int, float)) else "CI"


def _measured(card: dict[str, Any]) -> str:
    """What a task's header must say beside n: its pairs (and how many there were before a subsample) and how many
    texts were truncated at what length."""
    out = ""
    sub = card.get("subsample") or {}
    n_pairs = card.get("n_pairs") or 0
    if n_pairs:
        out += f", {n_pairs:,} pairs"
        if sub:
            out += f" (a seeded subsample of {sub.get('n_before'):,})"
    elif sub:
        out += f" (a seeded subsample of {sub.get('n_before'):,})"
    enc = card.get("encode") or {}
    if enc.get("truncated"):
        out += f"; {enc['truncated']:,} truncated at {enc.get('max_length')} tokens"
    return out


def _one_process(command: str) -> None:
    """Commands other than analyze run in one process: under torchrun every rank would repeat the work and write."""
    from .distributed import launched

    if launched():
        _fail(f"{command}: runs in one process; launch it without torchrun (torchrun shards `embedgeom analyze`).")


def _print_analysis(res: Any) -> None:
    measured = {r["metric"] for r in res.metrics}
    cols = [m for m in HEADLINE if m in measured]
    for task, card in res.tasks.items():
        proto = "reference protocol, point values" if res.options.get("protocol") == "paper" else _ci(res.options)
        table = Table(title=f"{res.name} · {task} (n={card.get('n_items')} {card.get('items')}{_measured(card)}; "
                            f"{proto})", title_justify="left")
        table.add_column("pooling")
        table.add_column("layer", justify="right")
        for c in cols:
            table.add_column(HEADLINE[c], justify="right")
        table.add_column("probe (chance)", justify="right")
        for t, pooling, layer in res.measured():
            if t != task:
                continue
            cells: list[str | Text] = [*_metric_cells(res, task, pooling, layer, cols)]
            probe = next((r for r in res.probes if (r["task"], r["pooling"], int(r["layer"])) == (task, pooling, layer)
                          and r["metric"] in ("accuracy", "spearman")), None)
            if probe is None:
                cells.append("–")
            else:  # chance: what a label-blind predictor scores on the same items; a value below it is marked
                chance = probe.get("chance")
                cell = Text(f"{probe['probe']} {probe['metric']} {_fmt(probe['value'])}")
                if isinstance(chance, (int, float)) and math.isfinite(chance):  # older results record none
                    if probe.get("below_chance"):
                        cell.append(f" (below chance {chance:.2f})", style="bold red")
                    else:
                        cell.append(f" (chance {chance:.2f})")
                cells.append(cell)
            table.add_row(pooling, str(layer), *cells)
        _out().print(table)


def _expand_group(spec: str) -> list[str]:
    import glob

    out: list[str] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        matches = sorted(glob.glob(os.path.expanduser(part))) if any(c in part for c in "*?[") else [part]
        if not matches:
            _fail(f"--group-a/--group-b: the pattern {part!r} matches nothing. Check the path or quote the glob.")
        out += matches
    return out


def _compare_groups(models: list[str], group_a: str | None, group_b: str | None, kw: dict[str, Any],
                    out: Path | None, fmt: Format, significant: bool, threads: str | None = None,
                    correction: str = "none") -> None:
    if models or group_a is None or group_b is None:
        _fail("--group-a, --group-b: expected both seed groups and no positional models, e.g. --group-a "
              "runs/mlm-s0,runs/mlm-s1,runs/mlm-s2 --group-b runs/hybrid-s0,runs/hybrid-s1,runs/hybrid-s2.")
    from .results import csv_safe, save_results
    from .seed_groups import compare_groups
    from .storage import COLLECTION_FORMAT, prepare_output, safe_name

    if out is not None:
        prepare_output(out, COLLECTION_FORMAT)
    shared = {k: kw.pop(k) for k in ("groups", "seed", "confidence")}
    with _progress(threads) as cb:
        cmp = compare_groups(_expand_group(group_a), _expand_group(group_b), progress=cb, correction=correction,
                             **shared, **kw)
    if out is not None:
        saved = save_results(out, {f"{safe_name(cmp.a, default='a')}-vs-{safe_name(cmp.b, default='b')}": cmp})
        _saved(f"saved to {next(iter(saved.values()))}")
    if fmt is Format.json:
        _emit_json({"a": cmp.a, "b": cmp.b, "options": cmp.options, "differences": cmp.differences,
                    "similarity": cmp.similarity})
    elif fmt is Format.csv:
        csv_safe(cmp.to_frame()).to_csv(sys.stdout, index=False)
    else:
        ci = _ci(cmp.options)
        _print_header([f"{cmp.b} − {cmp.a}: mean over {cmp.options['seeds']} seeds of the per-seed paired "
                       f"differences, between-seed {ci} (Student-t on seeds − 1 df); holds = seeds with the mean's "
                       "sign (with a per-seed interval excluding 0, uncorrected)", *_n_d_lines(cmp),
                       _significance_line(cmp)])
        table = Table(title=f"{cmp.b} − {cmp.a} (seed groups)", title_justify="left")
        padj = _p_adjusted_column(cmp)
        for c in ("task", "pooling", "layer", "metric", "a", "b", "b − a", ci, "p", *padj, "holds", ""):
            table.add_column(c, justify="left" if c in ("task", "pooling", "metric", "") else "right")
        for r in cmp.differences:
            if significant and not r["significant"]:
                continue
            table.add_row(r["task"], r["pooling"], str(r["layer"]), r["name"], _fmt(r["value_a"]),
                          _fmt(r["value_b"]), _fmt(r["diff"]), f"[{_fmt(r['low'])}, {_fmt(r['high'])}]",
                          _fmt_p(r.get("p")), *([_fmt_p(r.get("p_adjusted"))] if padj else []),
                          f"{r['seeds_agree']} of {r['seeds']} ({r['seeds_significant']})",
                          "*" if r["significant"] else "")
        _out().print(table)


def _pair_label(r: dict, key: str) -> str:
    a, b = r.get(key), r.get(f"{key}_b", r.get(key))
    return str(a) if a == b else f"{a}→{b}"


def _print_header(lines: list[str]) -> None:
    """Lines above a table, never wrapped (a header a test or a reader greps stays on its line)."""
    for line in lines:
        _out().print(line, highlight=False, soft_wrap=True)


def _fmt_p(p: Any) -> str:
    """A p-value: 2 significant digits, '<1e-4' below that, '–' when there is none."""
    if not isinstance(p, (int, float)) or not math.isfinite(p):
        return "–"
    return "<1e-4" if p < 1e-4 else f"{p:.2g}"


def _p_adjusted_column(cmp: Any) -> list[str]:
    """The adjusted-p column's header, when the comparison used a correction."""
    corr = cmp.options.get("correction", "none")
    return [f"p ({ {'holm': 'Holm', 'bh': 'BH'}.get(corr, corr)})"] if corr not in (None, "none") else []


def _significance_line(cmp: Any) -> str:
    """What '*' means in a comparison table: the correction, alpha and the family (all rows of this comparison)."""
    opts = cmp.options
    if opts.get("protocol") == "paper":
        return "reference protocol: point values, no intervals, no p-values, nothing starred"
    corr, m = opts.get("correction", "none"), opts.get("family_size")
    alpha = opts.get("alpha", 1.0 - float(opts.get("confidence", 0.95)))
    family = f"the family = all {m} rows of this comparison with a p-value" if m is not None else "all rows"
    p_def = "p: two-sided, from the Student-t reference of each row's interval (t = diff / s.e. on its df)"
    if corr in (None, "none"):
        return (f"* = interval excludes 0 (p < {alpha:.3g}); correction: none over {family}, so about "
                f"{alpha:.0%} of true-zero differences are starred by chance (--correction holm|bh adjusts); "
                f"{p_def}")
    what = {"holm": "Holm-adjusted p (family-wise error rate)",
            "bh": "Benjamini–Hochberg-adjusted p (false discovery rate)"}.get(corr, f"{corr}-adjusted p")
    return (f"* = {what} < {alpha:.3g}; correction: {corr} over {family}; intervals are per row (unadjusted); "
            f"{p_def}")


def _n_d_lines(cmp: Any) -> list[str]:
    """n per task and the embedding dimension d of each side (per side only when they differ)."""
    n = cmp.options.get("n") or {}
    lines = []
    if n:
        lines.append("n: " + ", ".join(f"{t} {v}" for t, v in n.items()) + " items per task (the same texts on "
                     "both sides; probe rows: items or pairs scored)")
    dims = sorted({(r["d_a"], r["d_b"]) for r in cmp.differences if "d_a" in r and "d_b" in r})
    if dims and all(da == db for da, db in dims):
        lines.append(f"d: {', '.join(str(da) for da, _ in dims)} (both sides)")
    elif dims:
        lines.append(f"d: {cmp.a} {', '.join(str(da) for da, _ in dims)}, {cmp.b} "
                     f"{', '.join(str(db) for _, db in dims)}: differs, so the rank metrics, spectral entropy and "
                     "α-ReQ partly measure d; uniformity, alignment and mean cosine are comparable across d")
    return lines


def _print_comparison(cmp: Any, only_significant: bool) -> None:
    ci = _ci(cmp.options)
    _print_header([f"{cmp.b} − {cmp.a}: paired differences b − a on the same texts, {ci}", *_n_d_lines(cmp),
                   _significance_line(cmp),
                   "better: by each metric's direction, only for starred rows (– otherwise, or where no direction "
                   "applies)"])
    table = Table(title=f"{cmp.b} − {cmp.a} (paired)", title_justify="left")
    from .comparison import better_side

    padj = _p_adjusted_column(cmp)
    for c in ("task", "pooling", "layer", "metric", "a", "b", "b − a", ci, "p", *padj, "", "better"):
        table.add_column(c, justify="right" if c in ("layer", "a", "b", "b − a", ci, "p", *padj) else "left")
    names = {"a": cmp.a, "b": cmp.b}
    for r in cmp.differences:
        if only_significant and not r["significant"]:
            continue
        side = better_side(r)
        table.add_row(r["task"], _pair_label(r, "pooling"), _pair_label(r, "layer"), r["name"], _fmt(r["value_a"]),
                      _fmt(r["value_b"]), _fmt(r["diff"]), f"[{_fmt(r['low'])}, {_fmt(r['high'])}]",
                      _fmt_p(r.get("p")), *([_fmt_p(r.get("p_adjusted"))] if padj else []),
                      "*" if r["significant"] else "", names[side] if side else "–")
    _out().print(table)
    sim = Table(title=f"similarity of {cmp.a} and {cmp.b} on the same texts", title_justify="left")
    for c in ("task", "pooling", "layer", "measure", "value", ci):
        sim.add_column(c)
    for r in cmp.similarity:
        sim.add_row(r["task"], _pair_label(r, "pooling"), _pair_label(r, "layer"), r["name"], _fmt(r["value"]),
                    f"[{_fmt(r['low'])}, {_fmt(r['high'])}]")
    _out().print(sim)


def _print_models_table(frame: Any) -> None:
    """One table per (task, pooling): a row per model at its last measured layer, the headline metrics and the task
    probes' scores as columns (value ± half-width of its interval), with n and d; ``frame`` is
    :func:`embedgeom.comparison.models_table`'s."""
    from scipy.stats import norm

    if frame.empty:
        return
    metrics = [m for m in HEADLINE if m in frame.columns]
    for (task, pooling), part in frame.groupby(["task", "pooling"], sort=False):
        part = part.dropna(axis=1, how="all")
        probes = [c for c in part.columns if ":" in c and not c.endswith(("_low", "_high", "_n", "_chance"))]
        confs = sorted({float(c) for c in part["confidence"]})
        cis = ", ".join(f"{c * 100:.4g}% CI" for c in confs)
        zs = ", ".join(f"{norm.ppf(0.5 + c / 2):.3g}" for c in confs)
        ns, ds = sorted(set(part["n"].dropna().astype(int))), sorted(set(part["d"].dropna().astype(int)))
        layers = ", ".join(map(str, dict.fromkeys(part["layer"])))
        header = [f"{task} · {pooling} · each model's last measured layer ({layers}): all models; metrics: "
                  f"value ± half-width of the {cis}"
                  + (f"; probes: value ± {zs} s.e. (normal)" if probes else ""),
                  f"n: {ns[0]} items" if len(ns) == 1 else f"n: differs between models ({', '.join(map(str, ns))}; "
                  "see the n column): rank metrics and α-ReQ are not comparable",
                  f"d: {ds[0]}" if len(ds) == 1 else f"d: differs between models ({', '.join(map(str, ds))}; see "
                  "the d column): rank metrics and α-ReQ are not comparable; uniformity, alignment, mean cosine are "
                  "comparable"]
        _print_header(header)
        table = Table(title=f"{task} · {pooling}: all models", title_justify="left")
        table.add_column("model")
        table.add_column("n", justify="right")
        table.add_column("d", justify="right")
        cols = [m for m in metrics if m in part.columns]
        for c in cols:
            table.add_column(HEADLINE[c], justify="right")
        for c in probes:
            probe_n = set(part.get(f"{c}_n", []).dropna().astype(int)) if f"{c}_n" in part else set()
            chance = set(part[f"{c}_chance"].dropna()) if f"{c}_chance" in part else set()
            label = c.replace(":", " ")
            label += f" (n={probe_n.pop()})" if len(probe_n) == 1 else ""
            label += f" (chance {_fmt(float(chance.pop()))})" if len(chance) == 1 else ""
            table.add_column(label, justify="right")
        for r in part.to_dict("records"):
            cells = [str(r["model"]), _fmt(r.get("n")), _fmt(r.get("d"))]
            for c in cols + probes:
                v = r.get(c)
                half = max(v - r.get(f"{c}_low", math.nan), r.get(f"{c}_high", math.nan) - v) if v is not None else None
                cells.append(_fmt(v, half))
            table.add_row(*cells)
        _out().print(table)


def _emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o),
                                allow_nan=True) + "\n")


def _analysis_options(params: dict[str, Any]) -> dict[str, Any]:
    """The analysis options among a command's parameters (``locals()`` of analyze/compare), keyed as
    :class:`~embedgeom.options.AnalysisOptions` names them: each field's CLI parameter (``AnalysisOptions.cli_names``)
    plus the cache from --no-cache / --cache-dir. Validated by ``AnalysisOptions.create`` where they are used."""
    from .options import parse_layers

    out = {name: params[cli] for name, cli in AnalysisOptions.cli_names().items() if cli in params}
    out = {k: v.value if isinstance(v, Enum) else v for k, v in out.items()}
    if "layers" in out:
        out["layers"] = parse_layers(out["layers"], "--layer")
    if params.get("no_cache"):
        out["cache"] = False
    elif params.get("cache_dir"):
        out["cache"] = str(params["cache_dir"])
    return out


# option declarations shared by analyze and compare
_H = AnalysisOptions.help
DataOpt = Annotated[str, typer.Option("--data", "-d", help=_H("data"))]
PoolOpt = Annotated[str, typer.Option("--pooling", "-p", help=_H("poolings"))]
LayerOpt = Annotated[str, typer.Option("--layer", "-l", help=_H("layers"))]
MaxOpt = Annotated[int | None, typer.Option("--max-texts", "-n", help=_H("max_texts"))]
SeedOpt = Annotated[int, typer.Option(help=_H("seed"))]
ProtoOpt = Annotated[Protocol, typer.Option(help=_H("protocol"))]
DeviceOpt = Annotated[str, typer.Option(help=_H("device"))]
DtypeOpt = Annotated[str, typer.Option(help=_H("dtype"))]
BatchOpt = Annotated[int | None, typer.Option(help=_H("batch_size"))]
MaxLenOpt = Annotated[int | None, typer.Option(help=_H("max_length"))]
SpecialOpt = Annotated[SpecialTokens, typer.Option(help=_H("special_tokens"))]
GlueOpt = Annotated[Path | None, typer.Option(help=_H("glue_dir"))]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Do not read or write the embedding cache (nothing is "
                                          "written under the cache root).")]
CacheDirOpt = Annotated[Path | None, typer.Option(help="Embedding cache directory (default $EMBEDGEOM_CACHE or "
                                                  "~/.cache/embedgeom).")]
GroupsOpt = Annotated[int, typer.Option(help=_H("groups"))]
ConfOpt = Annotated[float, typer.Option(help=_H("confidence"))]
PostOpt = Annotated[str, typer.Option("--postprocess", help=_H("postprocess"))]
PromptOpt = Annotated[str | None, typer.Option("--prompt", help=_H("prompt"))]
ThreadsOpt = Annotated[str, typer.Option(help="CPU threads for torch and the BLAS/OpenMP pools while the command "
                                         "works: a positive integer, or auto (one per usable CPU that other work "
                                         "does not keep busy, at least 1). Changes speed, not results (float "
                                         "rounding aside).")]
#: The CLI's defaults are the options' own (one default data set for the CLI and Python).
_D = AnalysisOptions()
DEFAULT_DATA_SPEC = ",".join(_D.data)
FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="stdout format: table, json or csv.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Stage lines with timings on stderr (besides the "
                                          "progress bars on a terminal).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Nothing on stderr but errors (no progress, no "
                                        "warnings).")]


@app.command()
def analyze(
    checkpoint: Annotated[str | None, typer.Argument(help="HF model dir, sentence-transformers dir, trainer "
                                                     "run/checkpoint dir, or hub id (or none, with --embeddings).")
                          ] = None,
    data: DataOpt = DEFAULT_DATA_SPEC,
    pooling: PoolOpt = "all",
    layer: LayerOpt = "-1",
    max_texts: MaxOpt = None,
    seed: SeedOpt = _D.seed,
    protocol: ProtoOpt = Protocol.default,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    batch_size: BatchOpt = None,
    max_length: MaxLenOpt = None,
    special_tokens: SpecialOpt = SpecialTokens.include,
    glue_dir: GlueOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Save the full result (JSON, CSV, arrays) "
                                             "here.")] = None,
    fmt: FormatOpt = Format.table,
    no_cache: NoCacheOpt = False,
    cache_dir: CacheDirOpt = None,
    probes: Annotated[bool, typer.Option(help=_H("probes"))] = _D.probes,
    save_embeddings: Annotated[bool, typer.Option("--save-embeddings/--no-embeddings",
                                                  help=_H("save_embeddings"))] = _D.save_embeddings,
    groups: GroupsOpt = _D.groups,
    confidence: ConfOpt = _D.confidence,
    postprocess: PostOpt = _D.postprocess,
    spill: Annotated[int | None, typer.Option(help=_H("spill"))] = _D.spill,
    probe_c: Annotated[str, typer.Option("--probe-c", help=_H("probe_c"))] = _D.probe_c,
    prompt: PromptOpt = _D.prompt,
    embeddings: Annotated[Path | None, typer.Option(
        "--embeddings", help="Analyse precomputed vectors instead of a model: a .npy (memory-mapped), .safetensors "
        "or .parquet file, one row per item.")] = None,
    embeddings_key: Annotated[str | None, typer.Option(
        help="With --embeddings: the tensor (safetensors) or column (parquet) holding the vectors.")] = None,
    labels: Annotated[Path | None, typer.Option(
        help="With --embeddings: one class per row (.npy of integers, or .txt with one label per line).")] = None,
    pairs: Annotated[Path | None, typer.Option(
        help="With --embeddings: an (m, 2) .npy of row indices (positive pairs, or scored with --scores).")] = None,
    scores: Annotated[Path | None, typer.Option(
        help="With --embeddings and --pairs: one similarity score per pair (.npy).")] = None,
    name: Annotated[str | None, typer.Option(help="The model's label in tables, comparisons and figures "
                                             "(default: the checkpoint's directory name).")] = None,
    checkpoints: Annotated[str | None, typer.Option(help="For a trainer run directory: analyse its checkpoints "
                                                    "(all, every:K, last, or steps like 500,1000) on the same texts; "
                                                    "one result per step under --out/step-NNNNNNN.")] = None,
    threads: ThreadsOpt = "auto",

    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Measure one checkpoint: every geometry metric with a jackknife interval (--confidence), per task, pooling and
    layer.

    Example: [bold]embedgeom analyze ckpt/ --pooling max --data glue:sst2 --glue-dir ~/glue[/]
    """
    params = dict(locals())  # the analysis options are taken from here by name (AnalysisOptions.cli_names)
    _set_verbosity(verbose, quiet)
    with _guard():
        from .analysis import analyze as run
        from .analysis import analyze_checkpoints
        from .distributed import process_group
        from .results import save_results
        from .storage import ANALYSIS_FORMAT, COLLECTION_FORMAT, prepare_output

        _check_input(checkpoint, embeddings, checkpoints, {"--embeddings-key": embeddings_key, "--labels": labels,
                                                           "--pairs": pairs, "--scores": scores})
        if out is not None:  # refused before any work when it holds anything but an earlier output of this kind
            prepare_output(out, COLLECTION_FORMAT if checkpoints is not None else ANALYSIS_FORMAT)
        kw = _analysis_options(params)
        with process_group(device) as ranks:  # under torchrun: one process of several; only rank 0 reports
            if not ranks.main:
                _set_verbosity(False, True)
            if checkpoints is not None:
                with _progress(threads) as cb:
                    results = analyze_checkpoints(checkpoint, checkpoints, name=name, progress=cb, **kw)
                if not ranks.main:
                    return
                if out is not None:
                    save_results(out, {f"step-{r.checkpoint['trajectory']['step']:07d}": r for r in results},
                                 embeddings=save_embeddings)
                    _saved(f"saved {len(results)} results to {out}")
                _emit_results(results, fmt)
                return
            with _progress(threads) as cb:
                if embeddings is not None:
                    from .vectors import analyze_embeddings

                    res = analyze_embeddings(embeddings, labels=labels, pairs=pairs, scores=scores,
                                             key=embeddings_key, name=name, progress=cb,
                                             distributed=ranks.world > 1, **_vector_options(kw))
                else:
                    res = run(checkpoint, progress=cb, name=name, **kw)
            if not ranks.main:
                return
            if out is not None:
                res.save(out, embeddings=save_embeddings)
                _saved(f"saved to {out}")
            _emit_results([res], fmt)


def _check_input(checkpoint: str | None, embeddings: Path | None, checkpoints: str | None,
                 vector_options: dict[str, Any]) -> None:
    """Exactly one of CKPT and --embeddings; the options that only apply to precomputed vectors only with them."""
    if checkpoint is None and embeddings is None:
        raise ValueError("CKPT: expected a checkpoint to analyse (or --embeddings FILE for precomputed vectors), got "
                         "neither. Example: embedgeom analyze path/to/model --data sample:bbc")
    if checkpoint is not None and embeddings is not None:
        raise ValueError(f"CKPT: expected a checkpoint or --embeddings, got both ({checkpoint!r} and "
                         f"{str(embeddings)!r}). Analyse them in two runs.")
    if embeddings is not None and checkpoints is not None:
        raise ValueError("--checkpoints: applies to a trainer run directory, not to --embeddings. Remove it.")
    given = [flag for flag, v in vector_options.items() if v is not None]
    if embeddings is None and given:
        raise ValueError(f"{given[0]}: applies only to precomputed vectors (--embeddings FILE). Remove it, or give "
                         "the labels of a model's texts through --data.")


def _vector_options(kw: dict[str, Any]) -> dict[str, Any]:
    """The analysis options that apply to precomputed vectors (those describing how a model embeds texts left out)."""
    from .vectors import NOT_APPLICABLE

    return {k: v for k, v in kw.items() if k not in NOT_APPLICABLE}


def _emit_results(results: list, fmt: Format) -> None:
    """Analyses to stdout: JSON (one object, or a list for a trajectory), one CSV table, or rich tables."""
    if fmt is Format.json:
        objs = [{"name": r.name, "checkpoint": r.checkpoint, "tasks": r.tasks, "options": r.options, "card": r.card,
                 "metrics": r.metrics, "probes": r.probes,
                 **({"paper": {"metrics": r.paper.metrics, "probes": r.paper.probes, "tasks": r.paper.tasks,
                               "options": r.paper.options}} if r.paper is not None else {})} for r in results]
        _emit_json(objs[0] if len(objs) == 1 else objs)
    elif fmt is Format.csv:
        import pandas as pd

        from .results import csv_safe

        frames = [r.to_frame() for r in results] + [r.paper.to_frame().assign(protocol="paper")
                                                    for r in results if r.paper is not None]
        csv_safe(pd.concat(frames, ignore_index=True)).to_csv(sys.stdout, index=False)
    else:
        for r in results:
            _print_analysis(r)
            if r.paper is not None:
                _print_analysis(r.paper)


class CorrectionChoice(str, Enum):
    none = "none"
    holm = "holm"
    bh = "bh"


#: The per-layer columns of the ``tokens`` table.
TOKEN_HEADLINE = {"intra_similarity": "intra", "self_similarity": "self", "adjusted_self_similarity": "self − aniso",
                  "mev": "MEV", "anisotropy": "aniso", "rogue_share": "rogue share", "token_uniformity": "uniformity",
                  "token_effective_rank": "eff. rank", "token_norm": "norm"}


@app.command()
def tokens(
    models: Annotated[list[str], typer.Argument(help="Checkpoints or saved token results (tokens --out); with two or "
                                                "more, each is also compared with the first on the same texts.")],
    data: DataOpt = DEFAULT_DATA_SPEC,
    layer: Annotated[str, typer.Option("--layer", "-l", help="Hidden layer(s): all (default), -1 = last, 0 = "
                                       "embeddings, comma-separated.")] = "all",
    max_texts: Annotated[int | None, typer.Option("--max-texts", "-n", help="Seeded random subset of at most N texts "
                                                  "per task (default: every text).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the text subset, the jackknife groups, the one occurrence "
                                      "sampled per text and the kept ids and occurrences.")] = 0,
    postprocess: PostOpt = _D.postprocess,
    max_ids: Annotated[int, typer.Option(help="At most this many token ids (5+ occurrences in 2+ texts; a seeded "
                                         "sample when more) for self-similarity and MEV.")] = 200,
    max_occurrences: Annotated[int, typer.Option(help="MEV: at most this many seeded occurrences per id.")] = 50,
    device: DeviceOpt = "auto",
    dtype: Annotated[str, typer.Option(help="Compute dtype of the forward pass (default float32: bf16 rounding can "
                                       "exceed the spread of anisotropic token states).")] = "float32",
    batch_size: BatchOpt = None,
    max_length: MaxLenOpt = None,
    glue_dir: GlueOpt = None,
    groups: GroupsOpt = _D.groups,
    confidence: ConfOpt = _D.confidence,
    name: Annotated[str | None, typer.Option(help="The model's label (one model only).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Save the result here (with several models: each "
                                             "result and each comparison in a subdirectory).")] = None,
    report_dir: Annotated[Path | None, typer.Option("--report", help="Write the token report (layer curves, rogue "
                                                    "dimensions, tables, comparisons) here.")] = None,
    fmt: FormatOpt = Format.table,
    threads: ThreadsOpt = "auto",
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Token-level geometry per layer: intra- and self-similarity, MEV, the anisotropy baseline and the adjusted
    forms, rogue dimensions, token uniformity and effective rank, with jackknife intervals over texts.

    Example: [bold]embedgeom tokens ckpt/ --data sample:lee --layer all --postprocess standardize[/]
    """
    _set_verbosity(verbose, quiet)
    _one_process("tokens")
    with _guard():
        from .storage import COLLECTION_FORMAT, REPORT_FORMAT, TOKENS_FORMAT, prepare_output
        from .token_results import TokenGeometryResult, compare_tokens, save_token_results
        from .tokens import TokenOptions, token_geometry

        if name is not None and len(models) != 1:
            _fail(f"--name: expected one model to label, got {len(models)}.")
        opts = TokenOptions.create(data=data, layers=layer, max_texts=max_texts, seed=seed, postprocess=postprocess,
                                   max_ids=max_ids, max_occurrences=max_occurrences, groups=groups,
                                   confidence=confidence, device=device, dtype=dtype, batch_size=batch_size,
                                   max_length=max_length, glue_dir=glue_dir)
        if out is not None:
            prepare_output(out, TOKENS_FORMAT if len(models) == 1 else COLLECTION_FORMAT)
        if report_dir is not None:
            prepare_output(report_dir, REPORT_FORMAT, "--report")
        results = []
        with _progress(threads) as cb:
            for m in models:
                saved = Path(m).expanduser() / "tokens.json"
                results.append(TokenGeometryResult.load(saved.parent) if saved.is_file()
                               else token_geometry(m, options=opts, name=name, progress=cb))
        comparisons = [compare_tokens(results[0], r, confidence=confidence) for r in results[1:]]
        if out is not None:
            if len(results) == 1:
                results[0].save(out)
            else:
                save_token_results(out, results, comparisons)
            _saved(f"saved to {out}")
        if report_dir is not None:
            from .token_figures import build_token_report

            index = build_token_report(results, report_dir, comparisons=comparisons)
            _saved(f"report written to {index}")
        _emit_tokens(results, comparisons, fmt)


def _emit_tokens(results: list, comparisons: list, fmt: Format) -> None:
    """Token results (and comparisons) to stdout: JSON, one CSV table, or one rich table per model, task and
    post-processing (rows: layers) and one per comparison."""
    if fmt is Format.json:
        objs = [{"name": r.name, "checkpoint": r.checkpoint, "tasks": r.tasks, "options": r.options,
                 "metrics": r.metrics} for r in results]
        body: Any = objs[0] if len(objs) == 1 else objs
        if comparisons:
            body = {"results": objs, "comparisons": [{"a": c.a, "b": c.b, "options": c.options,
                                                      "differences": c.differences} for c in comparisons]}
        _emit_json(body)
        return
    if fmt is Format.csv:
        import pandas as pd

        from .results import csv_safe

        frames = [r.to_frame().assign(table="metrics") for r in results]
        frames += [c.to_frame().assign(table="differences") for c in comparisons]
        csv_safe(pd.concat(frames, ignore_index=True)).to_csv(sys.stdout, index=False)
        return
    for res in results:
        for task, card in res.tasks.items():
            for variant in res.postprocessings():
                plan = card.get("plan", {})
                table = Table(title=f"{res.name} · {task} ({plan.get('texts')} texts, {plan.get('tokens')} tokens, "
                                    f"{plan.get('kept_ids')} ids; {'raw' if variant == 'none' else 'after ' + variant};"
                                    f" {_ci(res.options)}, jackknife over texts)", title_justify="left")
                table.add_column("layer", justify="right")
                for c in TOKEN_HEADLINE.values():
                    table.add_column(c, justify="right")
                for layer in res.layers():
                    cells = _cells(TOKEN_HEADLINE, functools.partial(_token_row, res, task, layer, variant))
                    table.add_row(str(layer), *cells)
                _out().print(table)
    for cmp in comparisons:
        ci = _ci(cmp.options)
        table = Table(title=f"{cmp.b} − {cmp.a}: token geometry, paired on the same texts ({ci}; * = interval "
                            "excludes 0)", title_justify="left")
        for c in ("task", "layer", "postprocess", "metric", "a", "b", "b − a", ci, ""):
            table.add_column(c, justify="right" if c in ("layer", "a", "b", "b − a", ci) else "left")
        for r in cmp.differences:
            table.add_row(r["task"], str(r["layer"]), r["postprocess"], r["name"], _fmt(r["value_a"]),
                          _fmt(r["value_b"]), _fmt(r["diff"]), f"[{_fmt(r['low'])}, {_fmt(r['high'])}]",
                          "*" if r["significant"] else "")
        _out().print(table)


@app.command()
def compare(
    models: Annotated[list[str] | None, typer.Argument(help="Checkpoints or saved analysis dirs (analyze --out): two "
                                                       "or more (the first is the reference every other is compared "
                                                       "with), or one with --poolings.")] = None,
    poolings: Annotated[str | None, typer.Option("--poolings", help="Compare two poolings of one model on the same "
                                                 "texts, e.g. mean,max (gives max − mean); with two models, the "
                                                 "first's pooling against the second's (e.g. mean,last for an "
                                                 "encoder against a decoder-only model).")] = None,
    group_a: Annotated[str | None, typer.Option("--group-a", help="Seed group A: comma-separated runs/analysis dirs "
                                                "or a quoted glob ('runs/mlm-seed*'), paired by position with "
                                                "--group-b; gives per-seed differences and a between-seed interval."
                                                )] = None,
    group_b: Annotated[str | None, typer.Option("--group-b", help="Seed group B (same seeds, same order).")] = None,
    data: DataOpt = DEFAULT_DATA_SPEC,
    pooling: PoolOpt = "all",
    layer: LayerOpt = "-1",
    max_texts: MaxOpt = None,
    seed: SeedOpt = _D.seed,
    protocol: ProtoOpt = Protocol.default,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    batch_size: BatchOpt = None,
    max_length: MaxLenOpt = None,
    special_tokens: SpecialOpt = SpecialTokens.include,
    glue_dir: GlueOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Save each comparison under DIR/<a>-vs-<b>/.")] = None,
    fmt: FormatOpt = Format.table,
    significant: Annotated[bool, typer.Option("--significant", help="Table: only significant differences "
                                              "(interval excludes 0, or adjusted p < 1 − confidence under "
                                              "--correction).")] = False,
    correction: Annotated[CorrectionChoice, typer.Option("--correction", help="Multiple-comparison correction of "
                                                         "the p-values over the family = all difference rows of one "
                                                         "comparison: none, holm (family-wise error) or bh "
                                                         "(Benjamini–Hochberg false discovery rate); '*' and "
                                                         "'better' follow the adjusted p.")] = CorrectionChoice.none,
    no_cache: NoCacheOpt = False,
    cache_dir: CacheDirOpt = None,
    groups: GroupsOpt = _D.groups,
    confidence: ConfOpt = _D.confidence,
    postprocess: PostOpt = _D.postprocess,
    prompt: PromptOpt = _D.prompt,
    threads: ThreadsOpt = "auto",

    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Paired differences (b − a, second minus first) with intervals (--confidence) on the same texts, plus CKA and k-NN
    overlap; with three or more models also one combined table per task and pooling (a row per model: headline
    metrics and task-probe scores with intervals, n and d). Each row's p-value comes from its interval's t reference;
    --correction holm|bh adjusts them over the rows of one comparison.

    Checkpoints are analysed first (with the analysis options given); saved analysis dirs are used as they are.
    """
    params = dict(locals())  # the analysis options are taken from here by name (AnalysisOptions.cli_names)
    _set_verbosity(verbose, quiet)
    _one_process("compare")
    models = models or []
    with _guard():
        if group_a is not None or group_b is not None:
            _compare_groups(models, group_a, group_b, _analysis_options(params), out, fmt, significant, threads,
                            correction.value)
            return
        if poolings is None and len(models) < 2:
            _fail(f"models: expected at least two checkpoints or analysis dirs (or one with --poolings), got "
                  f"{len(models)}.")
        if poolings is not None and len(models) > 2:
            _fail(f"models: expected one model with --poolings (its two poolings are compared) or two (the first's "
                  f"pooling against the second's), got {len(models)}.")
        from .analysis import resolve_result
        from .comparison import compare as run
        from .results import csv_safe, save_results
        from .storage import COLLECTION_FORMAT, prepare_output, safe_name

        if out is not None:
            prepare_output(out, COLLECTION_FORMAT)
        kw = _analysis_options(params)
        common = {"groups": groups, "seed": seed, "confidence": confidence, "correction": correction.value}
        with _progress(threads) as cb:
            results = [resolve_result(m, progress=cb, **kw) for m in models]
            if poolings is not None:  # two poolings of one model, or a's pooling against b's
                comparisons = [run(results[0], results[1] if len(results) == 2 else None, poolings=poolings,
                                   progress=cb, **common)]
            else:
                comparisons = [run(results[0], r, progress=cb, **common) for r in results[1:]]
        if out is not None:
            named = {}
            for k, cmp in enumerate(comparisons):
                stem = f"{safe_name(cmp.a, default='a')}-vs-{safe_name(cmp.b, default='b')}"
                named[stem if stem not in named else f"{stem}-{k + 1}"] = cmp
            for target in save_results(out, named).values():
                _saved(f"saved to {target}")
        models_frame = None
        if len(results) > 2:  # the combined table (a row per model and task/pooling), in every format
            from .comparison import models_table

            models_frame = models_table(results)
        if fmt is Format.json:
            objs = [{"a": c.a, "b": c.b, "options": c.options, "differences": c.differences,
                     "similarity": c.similarity} for c in comparisons]
            if models_frame is None:
                _emit_json(objs[0] if len(objs) == 1 else objs)
            else:  # three or more models: the pairwise comparisons and the combined table
                _emit_json({"comparisons": objs, "models": models_frame.to_dict("records"),
                            "models_probe_interval": models_frame.attrs.get("probe_interval")})
        elif fmt is Format.csv:
            import pandas as pd

            frames = [f.assign(table=which) for c in comparisons for which in ("differences", "similarity")
                      for f in [c.to_frame(which)]]
            if models_frame is not None:
                frames.append(models_frame.assign(table="models"))
            csv_safe(pd.concat(frames, ignore_index=True)).to_csv(sys.stdout, index=False)
        else:
            for cmp in comparisons:
                _print_comparison(cmp, significant)
            if models_frame is not None:
                _print_models_table(models_frame)


#: The report's figure names for --help (embedgeom.report.REPORT_FIGURES, kept equal by a test; listed here so
#: that the CLI starts without importing numpy).
REPORT_FIGURE_NAMES = ("eigenspectrum", "alignment-uniformity", "metric-by-pooling", "cosines", "probes",
                       "layer-profile", "trajectory", "differences")


@app.command()
def report(
    results: Annotated[list[Path], typer.Argument(help="Saved analysis dirs (analyze --out) and, optionally, "
                                                 "comparison dirs (compare --out); a directory of such dirs (analyze "
                                                 "--checkpoints --out, compare A B C --out) counts as each.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Report directory (figures, index.md, index.html).")],
    title: Annotated[str, typer.Option(help="Report title.")] = "embedgeom report",
    pdf: Annotated[bool, typer.Option(help="Also write PDF versions of every figure.")] = True,
    tasks: Annotated[str | None, typer.Option("--tasks", help="Tasks to report, comma-separated (default: every "
                                              "task the results hold).")] = None,
    layers: Annotated[str | None, typer.Option("--layers", help="Layers to report, comma-separated: all (default), "
                                               "last (= -1, each model's last layer), an index k >= 0, or -k (the "
                                               "k-th layer from each model's end).")] = None,
    figures: Annotated[str | None, typer.Option("--figures", help="Figures to draw, comma-separated (default: all; "
                                                "tables are always written): " + ", ".join(REPORT_FIGURE_NAMES)
                                                + ".")] = None,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Figures (PNG, PDF) and an index.md + self-contained index.html tabulating the numbers beside them; --tasks,
    --layers and --figures choose what is drawn (an unknown name is refused, listing the valid ones)."""
    _set_verbosity(verbose, quiet)
    _one_process("report")
    with _guard():
        from .report import build_report
        from .results import AnalysisResult, ComparisonResult
        from .storage import REPORT_FORMAT, prepare_output

        prepare_output(out, REPORT_FORMAT)  # before any work: never over a user's own files
        analyses, comparisons, token_results, token_comparisons = [], [], [], []

        def add(p: Path) -> bool:
            if (p / "comparison.json").is_file():
                cmp = ComparisonResult.load(p)
                (token_comparisons if cmp.options.get("kind") == "tokens" else comparisons).append(cmp)
            elif (p / "result.json").is_file():
                analyses.append(AnalysisResult.load(p))
            elif (p / "tokens.json").is_file():
                from .token_results import TokenGeometryResult

                token_results.append(TokenGeometryResult.load(p))
            else:
                return False
            return True

        for p in results:
            # a directory of results (analyze --checkpoints --out, compare A B C --out) counts as each of them
            if not add(p) and not (p.is_dir() and sum(add(c) for c in sorted(p.iterdir()) if c.is_dir())):
                _fail(f"results: {p} holds neither result.json (analyze --out), tokens.json (tokens --out) nor "
                      "comparison.json (compare --out), nor directories that do.")
        if token_results and analyses:
            _fail("results: expected sentence analyses (analyze --out) or token results (tokens --out), got both. "
                  "Write one report of each: embedgeom report ANALYSES --out A; embedgeom report TOKENS --out B.")
        if token_results:
            if tasks is not None or layers is not None or figures is not None:
                _fail("--tasks/--layers/--figures: apply to reports of sentence analyses; a token report draws every "
                      "task and layer. Remove them.")
            from .token_figures import build_token_report

            index = build_token_report(token_results, out, comparisons=token_comparisons, title=title,
                                       formats=("png", "pdf") if pdf else ("png",))
            _out().print(f"report written to {index}", highlight=False)
            return
        if not analyses:
            _fail("results: expected at least one analysis directory (analyze --out), got only comparisons.")
        index = build_report(analyses, out, comparisons=comparisons, title=title,
                             formats=("png", "pdf") if pdf else ("png",), tasks=tasks, layers=layers,
                             figures=figures)
        _out().print(f"report written to {index} (and {index.with_suffix('.html')})", highlight=False)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, add_help_option=False)
def train(ctx: typer.Context) -> None:
    """Pre-train an MLM or hybrid MLM+JEPA encoder with the bundled trainer: the options of python -m trainer,
    listed by 'embedgeom train --help' (multi-GPU: torchrun ... -m trainer with the same options)."""
    from trainer.cli import main as train_main

    code = train_main(ctx.args, prog="embedgeom train")
    if code:
        raise typer.Exit(code)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where the demo writes its runs, analyses and report.")] =
    Path("embedgeom-demo"),
    steps: Annotated[int | None, typer.Option(help="Training steps per encoder (default: the demo's).")] = None,
    max_texts: Annotated[int, typer.Option(help="Items per analysis task.")] = 600,
    device: DeviceOpt = "auto",
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """End to end, offline: train tiny MLM and hybrid encoders on real text, analyse them and the pretrained
    MiniLM on the sample tasks with all four poolings, compare, and write a report."""
    _set_verbosity(verbose, quiet)
    _one_process("demo")
    with _guard():
        from .demo import run_demo

        with _progress() as cb:
            summary = run_demo(out, steps=steps, max_texts=max_texts, device=device, progress=cb)
        _out().print(summary.verdict_table())
        _out().print(f"report: {summary.report}")


@app.command(name="metrics")
def list_metrics(verbose: VerboseOpt = False, quiet: QuietOpt = False) -> None:
    """List every registered metric: kind, direction, definition and reference."""
    _set_verbosity(verbose, quiet)
    from .metrics import REGISTRY, TOKEN_METRICS

    table = Table(title="embedgeom metrics", title_justify="left")
    for c in ("name", "kind", "better", "definition", "reference"):
        table.add_column(c)
    for name, info in [*REGISTRY.items(), *TOKEN_METRICS.items()]:  # token metrics: embedgeom tokens
        better = {True: "higher", False: "lower", None: "–"}[info.higher_is_better]
        table.add_row(name, info.kind, better, info.description, info.reference.split(",")[0])
    _out().print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
