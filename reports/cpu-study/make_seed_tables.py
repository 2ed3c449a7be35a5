"""Tables of the three-seed CPU study, from the group comparisons written by seeds.sh.

Reads the `embedgeom compare --group-a ... --group-b ...` results (default protocol, and the reference protocol's
geometry without probes) and writes tables/seeds.md: for every direction the reference study reports, in how many
of the seeds it holds, each seed's paired difference with its text-sampling interval, and the mean over seeds with
its between-seed t-interval (which includes training variation). Every number comes from the comparison files.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from make_tables import fmt  # the CPU study's number format (same directory)

from embedgeom.results import ComparisonResult

TASK_ORDER = ("polarity", "lee", "bbc", "wiki")
POOLING_ORDER = ("mean", "max", "attention", "cls")


def signed(v: float, nd: int = 3) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:+.{nd}g}"


def interval(low: float, high: float) -> str:
    return f"[{signed(low)}, {signed(high)}]" if math.isfinite(low) and math.isfinite(high) else "(no interval)"


def ordered(rows: list[dict]) -> list[dict]:
    def key(r: dict) -> tuple:
        t = TASK_ORDER.index(r["task"]) if r["task"] in TASK_ORDER else len(TASK_ORDER)
        p = POOLING_ORDER.index(r["pooling"]) if r["pooling"] in POOLING_ORDER else len(POOLING_ORDER)
        return t, r["task"], p, r["pooling"]
    return sorted(rows, key=key)


def holds(values: list[float], direction: int) -> int:
    """Seeds whose difference has the stated sign (+1: b above a, -1: b below a)."""
    return sum(1 for v in values if math.isfinite(v) and (v > 0 if direction > 0 else v < 0))


def significant_in_direction(row: dict, direction: int) -> int:
    """Seeds whose text-sampling interval lies wholly on the stated side of 0."""
    lows, highs = row.get("per_seed_low", []), row.get("per_seed_high", [])
    return sum(1 for lo, hi in zip(lows, highs, strict=True)
               if (lo > 0 if direction > 0 else hi < 0))


#: The reference protocol's "weighted" pooling equals its mean pooling (see embedgeom.reference.paper): not counted
#: twice.
SKIPPED_POOLINGS = ("weighted",)


def difference_table(cmp: ComparisonResult, metric: str, direction: int) -> tuple[str, int, int, int]:
    """One row per (task, pooling) of ``metric``: values, per-seed differences with their text-sampling intervals
    (where the protocol has them), the between-seed mean and interval, and "holds in k of K". Returns the table, the
    cells, the cells where the direction holds in every seed, and those whose between-seed interval also excludes 0
    on the stated side."""
    rows = ordered([r for r in cmp.differences if r["name"] == metric and r["pooling"] not in SKIPPED_POOLINGS])
    k = int(cmp.options["seeds"])
    texts = any(math.isfinite(lo) for r in rows for lo in r["per_seed_low"])
    per_head = "per seed: diff [text-sampling 95% CI]" if texts else "per seed: diff (point values)"
    out = [f"| task | pooling | {cmp.a} | {cmp.b} | {per_head} | mean diff [between-seed 95% CI] | holds in |"
           + (" significant in |" if texts else ""), "|---|---|---|---|---|---|---|" + ("---|" if texts else "")]
    every = firm = 0
    for r in rows:
        per = "; ".join(f"{signed(d)} {interval(lo, hi)}" if texts else signed(d) for d, lo, hi in
                        zip(r["per_seed"], r["per_seed_low"], r["per_seed_high"], strict=True))
        n_hold = holds(r["per_seed"], direction)
        every += n_hold == k
        firm += n_hold == k and bool(r["significant"])
        star = " *" if r["significant"] else ""
        out.append(f"| {r['task']} | {r['pooling']} | {fmt(r['value_a'])} | {fmt(r['value_b'])} | {per} | "
                   f"{signed(r['diff'])} {interval(r['low'], r['high'])}{star} | {n_hold} of {k} |"
                   + (f" {significant_in_direction(r, direction)} of {k} |" if texts else ""))
    return "\n".join(out), len(rows), every, firm


def pooling_rank_table(cmp: ComparisonResult, high: str = "max", low: str = "mean") -> tuple[str, int, int]:
    """Within each model and seed: is the effective rank under ``high`` pooling above that under ``low``?"""
    by = {(r["task"], r["pooling"]): r for r in cmp.differences if r["name"] == "effective_rank"}
    k = int(cmp.options["seeds"])
    out = [f"| task | model | effective rank {low} (per seed) | effective rank {high} (per seed) | holds in |",
           "|---|---|---|---|---|"]
    cells = every = 0
    for task in sorted({t for t, _ in by}, key=lambda t: TASK_ORDER.index(t) if t in TASK_ORDER else 99):
        if (task, high) not in by or (task, low) not in by:
            continue
        for side, label in (("a", cmp.a), ("b", cmp.b)):
            lo_vals, hi_vals = by[task, low][f"per_seed_{side}"], by[task, high][f"per_seed_{side}"]
            n_hold = sum(h > lo for h, lo in zip(hi_vals, lo_vals, strict=True))
            cells += 1
            every += n_hold == k
            out.append(f"| {task} | {label} | {', '.join(fmt(v) for v in lo_vals)} | "
                       f"{', '.join(fmt(v) for v in hi_vals)} | {n_hold} of {k} |")
    return "\n".join(out), cells, every


SECTIONS = (
    ("uniformity", -1, "Hybrid more uniform (uniformity lower; the reference: every task and pooling)"),
    ("effective_rank", +1, "Effective rank, hybrid − MLM (the reference: about equal; counted here as 'hybrid higher')"),
    ("alignment", -1, "Alignment of positive pairs (lower = closer; counted as 'hybrid closer')"),
    ("linear:accuracy", +1, "Linear probe accuracy (counted as 'hybrid higher')"),
    ("cosine:spearman", +1, "Cosine similarity vs human scores, Spearman (counted as 'hybrid higher')"),
    ("ridge:spearman", +1, "Ridge probe on pair features, Spearman (counted as 'hybrid higher')"),
)

PAPER_SECTIONS = (
    ("uniformity", -1, "Hybrid more uniform (uniformity lower)"),
    ("effective_rank", +1, "Effective rank, hybrid − MLM (counted as 'hybrid higher')"),
)


def protocol_block(cmp: ComparisonResult, sections: tuple, heading: str) -> list[str]:
    k = int(cmp.options["seeds"])
    intro = [f"## {heading}", "",
             f"Groups: {cmp.a} = {', '.join(cmp.options['members']['a'])}; {cmp.b} = "
             f"{', '.join(cmp.options['members']['b'])} (paired by seed). diff = {cmp.b} − {cmp.a}. "
             f"'holds in' counts the seeds whose difference has the stated sign; 'significant in' those whose "
             f"text-sampling interval also excludes 0 on that side; * = the between-seed interval excludes 0.", ""]
    parts: list[str] = []
    summary = []
    for metric, direction, title in sections:
        table, cells, every, firm = difference_table(cmp, metric, direction)
        if not cells:
            continue
        parts += [f"### {title}", "", table, ""]
        summary.append(f"| {title} | {every} of {cells} | {firm} of {cells} |")
    table, cells, every = pooling_rank_table(cmp)
    if cells:
        title = "Max pooling has a higher effective rank than mean pooling (the reference: every task and model)"
        parts += [f"### {title}", "", table, ""]
        summary.append(f"| {title} (task x model) | {every} of {cells} | – |")
    head = [f"| direction | cells where it holds in all {k} seeds | ... and the between-seed interval excludes 0 |",
            "|---|---|---|", *summary, ""]
    return intro + head + parts


def training_table(runs: Path) -> list[str]:
    """Per seed and objective, from each run's logs/eval.jsonl and run.json: held-out MLM loss, the collapse watch's
    numbers at the first and the last evaluation, and the criteria that tripped."""
    out = ["## Training, per seed (collapse watch numbers from each run's logs/eval.jsonl and run.json)", "",
           "| seed | objective | held-out MLM loss (end) | effective rank step 0 → end (min) | RankMe end | "
           "var ratio end (min after grace) | target var end | teacher effective rank end | watch tripped |",
           "|---|---|---|---|---|---|---|---|---|"]
    for seed_dir in sorted(runs.glob("seed*")):
        for objective in ("mlm", "hybrid"):
            run = seed_dir / objective
            if not (run / "run.json").exists():
                continue
            rows = [json.loads(line) for line in (run / "logs" / "eval.jsonl").read_text().splitlines() if line]
            watch = json.loads((run / "run.json").read_text()).get("watch", {})
            first, end = rows[0], rows[-1]
            ranks = [r["geometry_effective_rank"] for r in rows]
            after = [r["watch_var_ratio"] for r in rows
                     if "watch_var_ratio" in r and r["step"] >= watch.get("checked_from_step", 0)]
            ratio = (f"{fmt(end['watch_var_ratio'])} ({fmt(min(after))})" if after else "–")
            tripped = ", ".join(f"{k} at {v['step']}" if isinstance(v, dict) and "step" in v else str(k)
                                for k, v in watch.get("tripped", {}).items()) or "none"
            out.append(f"| {seed_dir.name.removeprefix('seed')} | {objective} | {fmt(end['heldout_mlm_loss'], 4)} | "
                       f"{fmt(first['geometry_effective_rank'])} → {fmt(end['geometry_effective_rank'])} "
                       f"({fmt(min(ranks))}) | {fmt(end['geometry_rankme'])} | {ratio} | "
                       f"{fmt(end.get('watch_target_var', math.nan))} | "
                       f"{fmt(end.get('geometry_teacher_effective_rank', math.nan))} | {tripped} |")
    return [*out, ""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--comparison", type=Path, required=True, help="group comparison, default protocol")
    ap.add_argument("--paper-comparison", type=Path, help="group comparison, reference protocol (no probes)")
    ap.add_argument("--runs", type=Path, help="the seed runs (RUNS/seed*/{mlm,hybrid}) for the training table")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    cmp = ComparisonResult.load(args.comparison)
    lines = ["# CPU study at three seeds: tables", "",
             "Generated by `make_seed_tables.py` from the group comparisons `seeds.sh` writes; last layer; "
             "values are means over seeds.", ""]
    lines += protocol_block(cmp, SECTIONS, "Default protocol")
    if args.paper_comparison:
        lines += protocol_block(ComparisonResult.load(args.paper_comparison), PAPER_SECTIONS,
                                "Reference protocol (geometry; point values per seed, so only between-seed intervals; its "
                                "'weighted' pooling equals mean pooling and is not counted again)")
    if args.runs:
        lines += training_table(args.runs)
    (args.out / "tables").mkdir(parents=True, exist_ok=True)
    (args.out / "tables" / "seeds.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
