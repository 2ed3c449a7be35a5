"""Progress lines at a steady cadence when stderr is not a terminal (embedgeom.progress.ProgressLines, the CLI's
plain-line mode, EMBEDGEOM_PROGRESS_INTERVAL) and the thread setting (embedgeom.threads, --threads)."""

from __future__ import annotations

import json
import re

import pytest
import torch
from threadpoolctl import threadpool_info
from typer.testing import CliRunner

from embedgeom import pooling as P
from embedgeom.cli import app
from embedgeom.progress import DEFAULT_INTERVAL, INTERVAL_ENV, ProgressLines, progress_interval
from embedgeom.threads import auto_threads, check_threads, current_threads, limit_threads, usable_cpus

runner = CliRunner()


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _feed(lines: list[str], *, interval: float, n: int, step: float, stage: str = "encode x") -> FakeClock:
    """``n`` per-batch calls of one stage, ``step`` seconds apart on a fake clock, then its end."""
    clock = FakeClock()
    prog = ProgressLines(lines.append, interval=interval, clock=clock)
    prog(stage, 0, n)
    for done in range(1, n):
        clock.now += step
        prog(stage, done, n)
    clock.now += step
    prog(stage, n, n)
    return clock


def test_steady_lines_with_done_total_rate_and_eta_never_one_per_batch():
    lines: list[str] = []
    _feed(lines, interval=10.0, n=800, step=0.125)  # 800 batches over 100 s
    assert lines[0] == "encode x: started (0/800)"
    assert lines[-1] == "encode x: 800 done in 100.0 s (8.0/s)"
    middle = lines[1:-1]
    assert len(middle) == 9  # at t = 10, 20, ..., 90 s: one per interval, not one per batch
    # the first at t = 10 s: 80 done -> 8.0/s, 720 left -> 90 s
    assert middle[0] == "encode x: 80/800 (10%), 10 s elapsed, 8.0/s, ETA 1 min 30 s"
    done = [int(re.search(r": (\d+)/800 ", m).group(1)) for m in middle]
    assert done == [80 * k for k in range(1, 10)]  # never silent for longer than the interval
    assert all(re.search(r"\(\d+%\), .* elapsed, 8\.0/s, ETA ", m) for m in middle)


def test_a_fast_stage_gives_a_start_and_an_end_line_only():
    lines: list[str] = []
    _feed(lines, interval=10.0, n=64, step=0.0078125)
    assert lines == ["encode x: started (0/64)", "encode x: 64 done in 0.5 s (128.0/s)"]


def test_a_stage_reported_seldom_still_gets_a_line_whenever_the_interval_has_passed():
    lines: list[str] = []
    _feed(lines, interval=5.0, n=4, step=30.0, stage="probes bbc")  # one probe every 30 s
    assert lines == ["probes bbc: started (0/4)",
                     "probes bbc: 1/4 (25%), 30 s elapsed, 30.0 s each, ETA 1 min 30 s",
                     "probes bbc: 2/4 (50%), 1 min 00 s elapsed, 30.0 s each, ETA 1 min 00 s",
                     "probes bbc: 3/4 (75%), 1 min 30 s elapsed, 30.0 s each, ETA 30 s",
                     "probes bbc: 4 done in 120.0 s (30.0 s each)"]


def test_repeated_end_calls_write_nothing_and_a_finished_stage_can_start_again():
    lines: list[str] = []
    clock = FakeClock()
    prog = ProgressLines(lines.append, interval=1.0, clock=clock)
    prog("load a", 0, 1)
    clock.now = 2.0
    prog("load a", 1, 1)
    prog("load a", 1, 1)
    assert lines == ["load a: started (0/1)", "load a: 1 done in 2.0 s"]
    prog("load a", 0, 1)  # the same stage name again (e.g. the next checkpoint of a trajectory)
    clock.now = 2.5
    prog("load a", 1, 1)
    assert lines[2:] == ["load a: started (0/1)", "load a: 1 done in 0.5 s"]


def test_the_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(INTERVAL_ENV, raising=False)
    assert progress_interval() == DEFAULT_INTERVAL == 10.0
    monkeypatch.setenv(INTERVAL_ENV, "2.5")
    assert progress_interval() == 2.5 and ProgressLines(print).interval == 2.5
    for bad in ("0", "-1", "x", "nan", "inf"):
        monkeypatch.setenv(INTERVAL_ENV, bad)
        with pytest.raises(ValueError, match=rf"^{INTERVAL_ENV}: expected a number of seconds > 0, got '{bad}'"):
            progress_interval()
    with pytest.raises(ValueError, match=r"^interval: expected a number of seconds > 0, got 0"):
        ProgressLines(print, interval=0)
    with pytest.raises(ValueError, match=r"^write: expected a callable"):
        ProgressLines("stderr", interval=1.0)


CLI_ARGS = ["analyze", "--data", "sample:polarity", "--max-texts", "30", "--pooling", "mean", "--no-probes",
            "--no-cache", "--batch-size", "2", "--format", "csv"]


def test_cli_on_a_non_terminal_stderr_gives_steady_lines_not_a_flood(tiny_bert_dir, monkeypatch):
    args = [CLI_ARGS[0], str(tiny_bert_dir), *CLI_ARGS[1:]]  # 15 batches of 2 texts
    monkeypatch.setenv(INTERVAL_ENV, "3600")  # a long interval: the start and the end of each stage only
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    enc = [line for line in res.stderr.splitlines() if line.startswith("encode sample:polarity")]
    assert enc[0] == "encode sample:polarity: started (0/30)" or enc[0] == "encode sample:polarity: started (2/30)"
    assert len(enc) == 2 and re.fullmatch(r"encode sample:polarity: 30 done in [\d.]+ s \([\d.]+/s\)", enc[1])
    monkeypatch.setenv(INTERVAL_ENV, "1e-9")  # an interval shorter than a batch: a line per batch, as asked
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    mid = [line for line in res.stderr.splitlines() if re.match(r"encode sample:polarity: \d+/30 \(", line)]
    assert [int(re.search(r": (\d+)/30", m).group(1)) for m in mid] == list(range(2, 30, 2))  # after "started (0/30)"
    assert all(re.search(r"\(\d+%\), \d+ s elapsed, ([\d.]+/s|[\d.]+ s each), ETA \d+ s$", m) for m in mid)
    assert "metrics polarity: started (0/1)" in res.stderr


def test_cli_refuses_a_bad_interval_in_one_line(tiny_bert_dir, monkeypatch):
    monkeypatch.setenv(INTERVAL_ENV, "soon")
    res = runner.invoke(app, [CLI_ARGS[0], str(tiny_bert_dir), *CLI_ARGS[1:]])
    assert res.exit_code == 1
    assert res.stderr.strip() == (f"error: {INTERVAL_ENV}: expected a number of seconds > 0, got 'soon'. Set e.g. "
                                  f"{INTERVAL_ENV}=10.")


# --- threads ----------------------------------------------------------------------------------------------------

def test_limit_threads_sets_torch_and_the_blas_pools_and_restores_them():
    before = current_threads()
    assert before["torch"] == torch.get_num_threads()
    with limit_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
        assert all(lib["num_threads"] == 1 for lib in threadpool_info())  # numpy/scipy BLAS, every OpenMP
    assert current_threads() == before
    with pytest.raises(RuntimeError), limit_threads(1):
        raise RuntimeError("work failed")
    assert current_threads() == before  # restored when the block raises


@pytest.mark.parametrize(("load", "want"), [(0.0, 2), (0.4, 2), (0.6, 1), (1.0, 1), (8.0, 1)])
def test_auto_is_the_usable_cpus_other_work_leaves_free(monkeypatch, load, want):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    monkeypatch.setattr("os.getloadavg", lambda: (load, 0.0, 0.0))
    assert usable_cpus() == 2 and auto_threads() == want == check_threads("auto") == check_threads(None)


def test_auto_on_a_big_host_is_capped_by_the_processs_cpus(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(4)), raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    monkeypatch.setattr("os.getloadavg", lambda: (30.0, 0.0, 0.0))  # 34 host CPUs idle, 4 ours
    assert auto_threads() == 4


def test_check_threads():
    assert 1 <= check_threads("auto") <= usable_cpus()
    assert check_threads(3) == 3 and check_threads("2") == 2
    for bad in (0, -1, "x", 1.5, True, "0"):
        with pytest.raises(ValueError, match=r"^threads: expected a positive integer or 'auto', got "):
            check_threads(bad)


def _threads_seen(args: list[str]) -> tuple[list[int], str]:
    """Run the CLI with a registered pooler that records torch's thread count in the forward pass."""
    seen: list[int] = []

    def mean_seeing_threads(x: P.PoolInput) -> torch.Tensor:
        seen.append(torch.get_num_threads())
        return P.mean_pool(x.hidden, x.attention_mask)

    with P.registered_pooler("mean_seeing_threads", mean_seeing_threads, definition="mean pooling, recording the "
                             "thread count"):
        res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    return seen, res.stdout


def test_cli_threads_applies_during_the_run_restores_after_and_changes_no_number(tiny_bert_dir):
    before = torch.get_num_threads()
    args = ["analyze", str(tiny_bert_dir), "--data", "sample:polarity", "--max-texts", "40", "--pooling",
            "mean_seeing_threads,max", "--layer", "-1", "--no-cache", "--format", "json", "-q"]
    seen1, out1 = _threads_seen([*args, "--threads", "1"])
    assert seen1 and set(seen1) == {1} and torch.get_num_threads() == before
    seen2, out2 = _threads_seen([*args, "--threads", "2"])
    assert set(seen2) == {2} and torch.get_num_threads() == before
    one, two = json.loads(out1), json.loads(out2)
    assert one["metrics"] == two["metrics"] and one["probes"] == two["probes"]  # every number, probes included
    assert len(one["metrics"]) > 10 and len(one["probes"]) > 0
    assert "threads" not in one["options"]  # a runtime setting: not recorded, not in the cache key


@pytest.mark.parametrize("bad", ["0", "-1", "x"])
@pytest.mark.parametrize("command", ["analyze", "compare"])
def test_cli_refuses_a_bad_thread_count_in_one_line(tiny_bert_dir, command, bad):
    models = [str(tiny_bert_dir)] * (1 if command == "analyze" else 2)
    res = runner.invoke(app, [command, *models, "--threads", bad, "--no-cache"])
    assert res.exit_code == 1
    assert res.stderr.strip().startswith(f"error: --threads: expected a positive integer or 'auto', got '{bad}'.")
    assert len(res.stderr.strip().splitlines()) == 1
