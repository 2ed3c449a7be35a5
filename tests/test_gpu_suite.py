"""The one-command GPU suite (tests/benchmarks/gpu_suite.py): its smoke mode end to end on the CPU, and how it
reports a stage that fails, runs out of time or cannot run.

The suite lives with the benchmarks (outside the default test run), so it is loaded and run from there by path.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SUITE_PY = REPO / "tests" / "benchmarks" / "gpu_suite.py"
STAGES = ("setup", "metrics", "encode", "distributed", "trainer", "study-prepare", "study-train", "study-analysis")


def _load_suite() -> Any:
    spec = importlib.util.spec_from_file_location("gpu_suite_under_test", SUITE_PY)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def suite_mod() -> Any:
    return _load_suite()


def _non_finite(obj: Any, path: str = "", skip: tuple[str, ...] = ()) -> tuple[list[str], int]:
    """(paths of non-finite numbers, how many numbers were seen) in a JSON value."""
    bad, seen = [], 0
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in skip:
                continue
            b, s = _non_finite(v, f"{path}.{k}", skip)
            bad += b
            seen += s
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            b, s = _non_finite(v, f"{path}[{i}]", skip)
            bad += b
            seen += s
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        seen = 1
        if not math.isfinite(obj):
            bad = [path]
    return bad, seen


def _run(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SUITE_PY), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def test_smoke_runs_every_stage_end_to_end(tmp_path):
    out = tmp_path / "out"
    before = [(p, p.stat().st_mtime_ns) for p in sorted(REPO.glob("reports/*/*_gpu.*"))]
    t0 = time.monotonic()
    done = _run(["--smoke", "--out", str(out)])
    wall = time.monotonic() - t0
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "gpu-study" / "suite.json").read_text())
    assert summary["smoke"] is True
    assert [s["name"] for s in summary["stages"]] == list(STAGES)
    assert {s["name"]: s["status"] for s in summary["stages"]} == dict.fromkeys(STAGES, "ok"), summary["stages"]
    assert "| study-analysis | ok |" in (out / "gpu-study" / "suite.md").read_text()

    # the three benchmark reports, complete, with finite numbers (peak GPU memory is NaN on a CPU by design)
    for name, key_numbers in {
        "metrics_gpu": [("gpu", "uniformity_value"), ("gpu", "streaming_effective_rank"), ("cpu", "value_ours")],
        "encode_gpu": [("cpu", "ours_texts_per_s"), ("cpu", "st_texts_per_s"),
                       ("bert_base_seq128_fp32_sequences_per_s",)],
        "trainer_gpu": [("sizing", "tokens_per_s", "mlm"), ("sizing", "tokens_per_s", "hybrid")],
        "distributed_gpu": [("one_process_s",), ("torchrun_2_s",), ("max_metric_relative_difference",)],
    }.items():
        payload = json.loads((out / "benchmarks" / f"{name}.json").read_text())
        assert payload["complete"] is True, name
        assert (out / "benchmarks" / f"{name}.md").read_text().startswith("#"), name
        bad, seen = _non_finite(payload, skip=("peak_memory_gib",))
        assert not bad and seen > 5, (name, bad)
        for keys in key_numbers:
            value = payload
            for k in keys:
                value = value[k]
            assert isinstance(value, float) and math.isfinite(value), (name, keys, value)
    dist = json.loads((out / "benchmarks" / "distributed_gpu.json").read_text())
    assert dist["within_1e-6"] is True and dist["probes_equal"] is True and dist["processes"] == 2
    trainer = json.loads((out / "benchmarks" / "trainer_gpu.json").read_text())
    assert {r["variant"] for r in trainer["results"]} >= {"hf_BertForMaskedLM_eager", "ours_mlm_eager",
                                                            "ours_hybrid_eager"}

    # the study: sized from the trainer benchmark's rates (capped at the smoke's 4 steps), trained, analysed
    sizing = summary["study_sizing"]
    assert sizing["tokens_per_s"] == pytest.approx(trainer["sizing"]["tokens_per_s"])
    assert sizing["steps"] == 4 and sizing["runs"]["mlm"]["status"] == "complete"
    assert sizing["runs"]["hybrid"]["status"] == "complete"
    for objective in ("mlm", "hybrid"):
        rows = list(csv.DictReader((out / "gpu-study" / "training" / objective / "train.csv").open()))
        assert len(rows) == 4 and all(math.isfinite(float(r["loss_mlm"])) for r in rows)
    study = out / "gpu-study"
    for rel in ("tables/tables.md", "report/index.md", "report/index.html", "report-trajectory/index.md"):
        assert (study / rel).is_file() and (study / rel).stat().st_size > 0, rel
    for table in ("differences.csv", "differences-paper-protocol.csv"):
        diffs = list(csv.DictReader((study / "tables" / table).open()))
        values = [float(r["diff"]) for r in diffs if r.get("diff") not in (None, "")]
        assert values and all(math.isfinite(v) for v in values), table
    # nothing was written into the repository's reports/
    assert [(p, p.stat().st_mtime_ns) for p in sorted(REPO.glob("reports/*/*_gpu.*"))] == before
    assert not (REPO / "reports" / "gpu-study" / "suite.json").exists() or \
        json.loads((REPO / "reports" / "gpu-study" / "suite.json").read_text())["smoke"] is False
    print(f"smoke suite: {wall:.0f} s")


def test_a_failing_stage_is_reported_with_its_error(tmp_path):
    """A command that fails (here the trainer, on a corpus that does not exist) in a subprocess: the stage is
    'failed' with the command's own error line, the suite says so on stderr and exits 1; what depends on it is
    skipped with the reason."""
    out = tmp_path / "out"
    done = _run(["--smoke", "--isolation", "subprocess", "--stages", "study-prepare,study-train", "--out", str(out),
                 "--corpus", str(tmp_path / "no-such-corpus.txt")], timeout=300)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    stages = {s["name"]: s for s in json.loads((out / "gpu-study" / "suite.json").read_text())["stages"]}
    prep = stages["study-prepare"]
    assert prep["status"] == "failed"
    assert "exit code 2" in prep["error"] and "no-such-corpus.txt" in prep["error"]
    assert stages["study-train"]["status"] == "skipped"
    assert "needs study-prepare, which is failed" in stages["study-train"]["notes"][0]
    assert "[gpu-suite] study-prepare: failed" in done.stderr
    assert "study-prepare" in (out / "gpu-study" / "suite.md").read_text()


def _ctx(suite_mod, tmp_path, budget_s: float) -> Any:
    return suite_mod.Context(mode=suite_mod.SMOKE, out=tmp_path, runs=tmp_path / "runs",
                             run=suite_mod.Runner(in_process=True, log_dir=tmp_path / "logs", env={}),
                             deadline=time.monotonic() + budget_s)


def test_runner_reports_failures_timeouts_and_skips(suite_mod, tmp_path, capsys):
    m = suite_mod
    seen: dict[str, float] = {}
    summaries: list[list[str]] = []

    def ok(ctx, timeout_s, res):
        seen[res.name] = timeout_s
        res.outputs.append("x.json")

    def boom(ctx, timeout_s, res):
        raise m.StageFailed("the command said: error: broken")

    def bug(ctx, timeout_s, res):
        raise ZeroDivisionError("division by zero")

    def overran(ctx, timeout_s, res):
        res.outputs.append("partial.json")
        raise m.StageTimeout("stopped after 3 s")

    def overran_empty(ctx, timeout_s, res):
        raise m.StageTimeout("stopped after 3 s")

    def slow(ctx, timeout_s, res):  # eats the budget: later stages must be skipped or trimmed, with a note
        ctx.deadline -= 1000

    stages = [
        (m.StageSpec("a", 10, 0, ""), ok),
        (m.StageSpec("b", 10, 0, ""), boom),
        (m.StageSpec("c", 10, 0, ""), bug),
        (m.StageSpec("d", 10, 0, ""), overran),
        (m.StageSpec("e", 10, 0, ""), overran_empty),
        (m.StageSpec("elastic", math.inf, 5, ""), ok),
        (m.StageSpec("f", 30, 0, ""), slow),
        (m.StageSpec("g", 10, 5, ""), ok),
    ]
    ctx = _ctx(m, tmp_path, 200)
    suite = m.Suite(ctx, stages, budget_s=200,
                    summary=lambda s: summaries.append([r.status for r in s.results]))
    rc = suite.run()
    status = {r.name: r for r in suite.results}
    assert rc == 1
    assert status["a"].status == "ok" and seen["a"] == pytest.approx(10, abs=0.5)
    assert status["b"].status == "failed" and "error: broken" in status["b"].error
    assert status["c"].status == "failed" and "ZeroDivisionError" in status["c"].error
    assert status["d"].status == "partial" and status["d"].outputs == ["partial.json"]
    assert status["e"].status == "failed" and "nothing was written" in status["e"].error
    # the elastic stage gets what is left minus the later stages' budgets (30 + 10)
    assert seen["elastic"] == pytest.approx(200 - 40, abs=2)
    assert status["g"].status == "skipped" and "needs at least 5 s" in status["g"].notes[0]
    # the summary is written before the first stage and after every stage
    assert len(summaries) == len(stages) + 1 and summaries[0] == ["pending"] * len(stages)
    err = capsys.readouterr().err
    for name in ("b", "c", "d", "e", "g"):
        assert f"[gpu-suite] {name}: " in err


def test_dependent_stage_is_skipped_with_the_reason(suite_mod, tmp_path):
    m = suite_mod

    def fail(ctx, timeout_s, res):
        raise m.StageFailed("no")

    def never(ctx, timeout_s, res):
        raise AssertionError("must not run")

    suite = m.Suite(_ctx(m, tmp_path, 100), [(m.StageSpec("study-train", math.inf, 0, ""), fail),
                                             (m.StageSpec("study-analysis", 50, 0, ""), never)], budget_s=100)
    assert suite.run() == 1
    assert suite.results[1].status == "skipped"
    assert suite.results[1].notes == ["needs study-train, which is failed"]


def test_study_is_sized_from_the_measured_rates(suite_mod):
    plan = suite_mod.size_study({"mlm": 4e5, "hybrid": 3e5}, seconds=200, tokens_per_step=32768, overhead_s=20,
                                min_steps=200, max_steps=None, safety=0.85)
    per_step = 32768 / (4e5 * 0.85) + 32768 / (3e5 * 0.85)
    assert plan["steps"] == math.floor(160 / per_step) and plan["enough"]
    assert plan["tokens_per_objective"] == plan["steps"] * 32768
    short = suite_mod.size_study({"mlm": 4e5, "hybrid": 3e5}, seconds=60, tokens_per_step=32768, overhead_s=20,
                                 min_steps=200, max_steps=None)
    assert not short["enough"]
    capped = suite_mod.size_study({"mlm": 1e3, "hybrid": 1e3}, seconds=1000, tokens_per_step=256, overhead_s=0,
                                  min_steps=2, max_steps=4)
    assert capped["steps"] == 4 and capped["steps_that_fit"] > 4


def test_smoke_never_writes_into_reports(suite_mod, capsys):
    target = REPO / "reports" / "gpu-suite-smoke-test"
    assert suite_mod.main(["--smoke", "--out", str(target)]) == 2
    assert not target.exists()
    assert "never writes into reports/" in capsys.readouterr().err


def test_real_run_without_cuda_fails_early_in_one_line(suite_mod, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(suite_mod, "_cuda_check", lambda: (False, "torch.cuda.is_available() is False"))
    assert suite_mod.main(["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no CUDA device" in err[0] and "--smoke" in err[0]
    assert not (tmp_path / "out").exists()


def test_setup_installs_what_is_missing_and_reports_what_stays_missing(suite_mod, tmp_path, monkeypatch):
    """On a bare machine without an index: the full install fails, the package goes in without its dependencies,
    then each missing sample-suite package is tried; what stays missing is reported (the stages needing it fail)."""
    m = suite_mod
    answers = iter([["gensim", "embedgeom console script"], ["gensim"], ["gensim"]])
    monkeypatch.setattr(m, "_missing_packages", lambda *, in_process: next(answers))
    calls: list[list[str]] = []

    def fake_run(argv, **kwargs):
        what = argv[10:]  # after: python -m pip install --disable-pip-version-check -q --retries 1 --timeout 10
        calls.append(what)
        rc = 0 if "--no-deps" in what else 1
        return subprocess.CompletedProcess(argv, rc, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(m.subprocess, "run", fake_run)
    ctx = m.Context(mode=m.REAL, out=tmp_path, runs=tmp_path / "runs",
                    run=m.Runner(in_process=False, log_dir=tmp_path / "logs", env={}), deadline=time.monotonic() + 60)
    res = m.StageResult("setup")
    m.stage_setup(ctx, 60, res)
    assert calls == [["-e", ".[test,demo]"], ["--no-deps", "--no-build-isolation", "-e", "."], ["gensim"]]
    assert res.status == "partial"
    assert any("failed: ERROR: No matching distribution found" in n for n in res.notes)
    assert "still missing" in res.notes[-1] and "gensim" in res.notes[-1]
