"""``embedgeom demo``: the whole comparison, offline, on a CPU in a few minutes.

1. train a ``tiny`` MLM encoder and a ``tiny`` hybrid (MLM + JEPA) encoder on the sample suite's real text;
2. analyse both, and the real pretrained all-MiniLM-L6-v2 as a reference point, on the sample tasks with all
   four poolings (seeded subsets, jackknife intervals, probes);
3. compare hybrid against MLM (paired differences with intervals, CKA, k-NN overlap);
4. write a report (figures + index.md + index.html) and return a verdict table.

Re-running with the same output directory reuses what is there: finished training runs are not retrained
(their config must match), embeddings come from the cache.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .analysis import analyze
from .comparison import compare
from .report import build_report
from .results import AnalysisResult, ComparisonResult
from .samples import minilm_path
from .storage import ANALYSIS_FORMAT, COMPARISON_FORMAT, REPORT_FORMAT, prepare_output

DEMO_TASKS: tuple[str, ...] = ("sample:bbc", "sample:lee", "sample:wiki", "sample:polarity")
DEMO_CORPUS = "sample:all"
VERDICT_METRICS: tuple[tuple[str, str], ...] = (
    ("uniformity", "lower = more uniform"),
    ("effective_rank", "higher = more directions used"),
    ("alignment", "lower = closer positives"),
    ("isoscore", "higher = more isotropic"),
)


@dataclass
class DemoSummary:
    out: Path
    runs: dict[str, Path]
    analyses: dict[str, Path]
    comparison: Path
    report: Path
    verdict: list[dict[str, Any]] = field(default_factory=list)
    #: The confidence level of the comparison's intervals (as the comparison recorded it).
    confidence: float = 0.95

    def verdict_table(self) -> Any:
        """A rich Table: hybrid minus MLM for the headline metrics, per task (mean and max pooling)."""
        from rich.table import Table

        table = Table(title=f"hybrid − MLM (paired, {self.confidence * 100:.4g}% CI); * = interval excludes 0",
                      title_justify="left")
        for c in ("task", "pooling", "metric", "MLM", "hybrid", "hybrid − MLM", "reading"):
            table.add_column(c)
        for r in self.verdict:
            table.add_row(r["task"], r["pooling"], r["metric"], f"{r['mlm']:.4g}", f"{r['hybrid']:.4g}",
                          f"{r['diff']:+.3g} [{r['low']:+.3g}, {r['high']:+.3g}]{' *' if r['significant'] else ''}",
                          r["reading"])
        return table


def _finished(run_dir: Path, steps: int | None) -> bool:
    try:
        run = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return False
    done, want = run.get("step"), steps if steps is not None else run.get("total_steps")
    return (run.get("status") == "complete" and bool(run.get("latest")) and done is not None and want is not None
            and int(done) >= int(want))


def _train(objective: str, corpus: str, run_dir: Path, steps: int | None, overrides: Sequence[str], device: str,
           progress: Callable[[str, int, int], None] | None) -> Path:
    import trainer

    if _finished(run_dir, steps):
        return run_dir

    def cb(row: dict) -> None:
        if progress is not None:
            progress(f"train {objective}", int(row.get("step", 0)), int(row.get("total_steps") or steps or 1))

    resume = (run_dir / "run.json").is_file()
    trainer.run(objective, "tiny", corpus, run_dir, steps=steps, resume=resume, overrides=overrides,
                device=device, progress=cb)
    return run_dir


def _reading(metric: str, diff: float, significant: bool) -> str:
    if not significant or not math.isfinite(diff):
        return "no clear difference"
    better = {"uniformity": diff < 0, "effective_rank": diff > 0, "alignment": diff < 0, "isoscore": diff > 0}
    return "hybrid better" if better.get(metric, False) else "MLM better"


def run_demo(
    out: str | os.PathLike = "embedgeom-demo",
    *,
    steps: int | None = None,
    max_texts: int = 600,
    tasks: Sequence[str] = DEMO_TASKS,
    corpus: str = DEMO_CORPUS,
    train_overrides: Sequence[str] = (),
    device: str = "auto",
    seed: int = 0,
    reference: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
) -> DemoSummary:
    """Run the demo into ``out`` and return where everything went plus the verdict rows.

    ``steps``/``train_overrides`` tune the two training runs (tiny preset); ``max_texts`` the analysis subsets;
    ``reference=False`` skips the pretrained MiniLM reference.
    """
    out = Path(out).expanduser()
    names = ["tiny-mlm", "tiny-hybrid", *(["minilm"] if reference else [])]
    for path, fmt in ([(out / "analyses" / n, ANALYSIS_FORMAT) for n in names]
                      + [(out / "comparisons" / "tiny-mlm-vs-tiny-hybrid", COMPARISON_FORMAT),
                         (out / "report", REPORT_FORMAT)]):
        prepare_output(path, fmt, option="out")  # refused before any training when it holds anything else
    out.mkdir(parents=True, exist_ok=True)
    runs = {obj: _train(obj, corpus, out / "runs" / f"tiny-{obj}", steps, train_overrides, device, progress)
            for obj in ("mlm", "hybrid")}
    models: dict[str, Any] = {"tiny-mlm": runs["mlm"], "tiny-hybrid": runs["hybrid"]}
    if reference:
        models["minilm"] = minilm_path()
    analyses: dict[str, Path] = {}
    results: dict[str, AnalysisResult] = {}
    for name, ckpt in models.items():
        res = analyze(ckpt, list(tasks), poolings="all", max_texts=max_texts, seed=seed, device=device,
                      progress=progress, name=name)
        analyses[name] = res.save(out / "analyses" / name)
        results[name] = res
    cmp: ComparisonResult = compare(results["tiny-mlm"], results["tiny-hybrid"], seed=seed, progress=progress)
    cmp_dir = cmp.save(out / "comparisons" / "tiny-mlm-vs-tiny-hybrid")
    report = build_report(list(results.values()), out / "report", comparisons=[cmp],
                          title="embedgeom demo: tiny MLM vs tiny hybrid (MLM + JEPA), MiniLM for reference")
    verdict = []
    for r in cmp.differences:
        if r["kind"] != "metric" or r["pooling"] not in ("mean", "max"):
            continue
        for metric, _ in VERDICT_METRICS:
            if r["name"] == metric:
                verdict.append({"task": r["task"], "pooling": r["pooling"], "metric": metric, "mlm": r["value_a"],
                                "hybrid": r["value_b"], "diff": r["diff"], "low": r["low"], "high": r["high"],
                                "significant": bool(r["significant"]),
                                "reading": _reading(metric, r["diff"], bool(r["significant"]))})
    (out / "verdict.json").write_text(json.dumps(verdict, indent=1, allow_nan=True) + "\n")
    return DemoSummary(out, runs, analyses, cmp_dir, report, verdict, float(cmp.options["confidence"]))
