"""The collapse watch: its numbers reach the eval logs, run.json and the summary for both objectives (no teacher or
predictor numbers for MLM), each criterion warns exactly once with its numbers, the state survives --resume, and the
criteria themselves on synthetic rows."""

from __future__ import annotations

import csv
import json
import re
import warnings
from pathlib import Path

import pytest
import torch

import trainer
import trainer.model as model_mod
from trainer import CollapseWarning, TrainerError
from trainer.config import RUNTIME_FIELDS, WatchConfig, resolve_config, valid_keys
from trainer.logs import EVAL_COLUMNS_HYBRID, EVAL_COLUMNS_MLM
from trainer.watch import CRITERIA, CollapseWatch

from .conftest import SMALL, read_jsonl

STUDENT = ("geometry_effective_rank", "geometry_rankme", "geometry_stable_rank", "geometry_uniformity")
TEACHER = ("geometry_teacher_effective_rank", "geometry_teacher_rankme")
PREDICTOR = ("watch_pred_var", "watch_target_var", "watch_var_ratio", "watch_balance", "watch_w_mlm",
             "watch_w_jepa")
#: Thresholds that cannot trip, so a test sees only the criterion it forces.
QUIET = ("watch.rank_fraction=0", "watch.rank_floor=0", "watch.rankme_floor=0", "watch.var_ratio=0",
         "watch.target_var_floor=0", "watch.grace_steps=0")


def _run(objective: str, corpus: Path, out: Path, *overrides: str, steps: int = 4, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = trainer.run(objective, "tiny", corpus, out, steps=steps, device="cpu",
                        overrides=[*SMALL, "train.eval_every=2", *overrides], **kw)
    return s, [w for w in caught if issubclass(w.category, CollapseWarning)]


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_hybrid_watch_numbers_in_eval_logs_run_json_and_summary(corpus_file, tmp_path):
    out = tmp_path / "run"
    s, _ = _run("hybrid", corpus_file, out)
    evals = read_jsonl(out / "logs" / "eval.jsonl")
    assert [e["step"] for e in evals] == [0, 2, 4]  # every evaluation, not only geometry steps
    for e in evals:
        for key in (*STUDENT, *TEACHER, *PREDICTOR):
            assert isinstance(e[key], float) and e[key] == e[key], key
        assert 1.0 <= e["geometry_rankme"] <= e["geometry_dim"]
        assert 1.0 <= e["geometry_teacher_effective_rank"] <= e["geometry_dim"]
        assert e["watch_var_ratio"] == pytest.approx(e["watch_pred_var"] / e["watch_target_var"])
        assert e["watch_balance"] == pytest.approx(e["watch_w_mlm"] / (e["watch_w_mlm"] + e["watch_w_jepa"]))
        assert e["watch_masked_tokens"] > 0
    # at step 0 the teacher is the student
    assert evals[0]["geometry_teacher_effective_rank"] == pytest.approx(evals[0]["geometry_effective_rank"], rel=1e-5)
    assert evals[0]["watch_balance"] == 0.5
    rows = _csv(out / "logs" / "eval.csv")
    assert tuple(rows[0]) == EVAL_COLUMNS_HYBRID and [r["step"] for r in rows] == ["0", "2", "4"]
    assert float(rows[-1]["watch_var_ratio"]) == pytest.approx(evals[-1]["watch_var_ratio"])
    latest = s.watch["latest"]
    assert latest["watch_var_ratio"] == pytest.approx(evals[-1]["watch_var_ratio"])
    assert latest["geometry_teacher_rankme"] == pytest.approx(evals[-1]["geometry_teacher_rankme"])
    assert s.watch["reference_effective_rank"] == pytest.approx(evals[0]["geometry_effective_rank"])
    assert set(s.watch["thresholds"]) == {"rank_fraction", "rank_floor", "rankme_floor", "var_ratio",
                                          "target_var_floor"}
    assert s.geometry["watch_var_ratio"] == latest["watch_var_ratio"]
    run = json.loads((out / "run.json").read_text())
    assert run["watch"]["latest"] == pytest.approx(latest) and run["logs"]["eval_csv"] == "logs/eval.csv"


def test_mlm_watch_has_student_numbers_only(corpus_file, tmp_path):
    out = tmp_path / "run"
    s, _ = _run("mlm", corpus_file, out)
    evals = read_jsonl(out / "logs" / "eval.jsonl")
    assert [e["step"] for e in evals] == [0, 2, 4]
    for e in evals:
        assert all(isinstance(e[k], float) for k in STUDENT)
        assert not [k for k in e if "teacher" in k or k.startswith("watch_")]
    assert tuple(_csv(out / "logs" / "eval.csv")[0]) == EVAL_COLUMNS_MLM
    assert not [c for c in EVAL_COLUMNS_MLM if "teacher" in c or c.startswith("watch_")]
    for d in (s.watch["latest"], json.loads((out / "run.json").read_text())["watch"]["latest"], s.geometry):
        assert set(STUDENT) <= set(d) and not [k for k in d if "teacher" in k or k.startswith("watch_")]
    assert set(s.watch["thresholds"]) == {"rank_fraction", "rank_floor", "rankme_floor"}


def test_a_forced_criterion_warns_exactly_once_with_its_numbers(corpus_file, tmp_path):
    out = tmp_path / "run"
    s, caught = _run("mlm", corpus_file, out, *QUIET, "watch.rankme_floor=1e6", "train.eval_every=1", steps=4)
    assert len(caught) == 1  # trips at steps 1, 2, 3 and 4; warned at the first
    msg = str(caught[0].message)
    evals = read_jsonl(out / "logs" / "eval.jsonl")
    value = evals[1]["geometry_rankme"]
    assert msg.startswith("collapse watch (rankme_floor) at step 1:") and "\n" not in msg
    assert f"{value:.4g}" in msg and "watch.rankme_floor=1e+06" in msg
    assert [e.get("collapse") for e in evals] == [None, ["rankme_floor"], None, None, None]
    assert _csv(out / "logs" / "eval.csv")[1]["collapse"] == "rankme_floor"
    trip = s.watch["tripped"]["rankme_floor"]
    assert trip["step"] == 1 and trip["value"] == pytest.approx(value) and trip["threshold"] == 1e6
    assert list(s.watch["tripped"]) == ["rankme_floor"]
    assert json.loads((out / "run.json").read_text())["watch"]["tripped"]["rankme_floor"]["step"] == 1


def test_a_collapsed_predictor_trips_the_variance_ratio(corpus_file, tmp_path, monkeypatch):
    """A predictor that outputs the same vector for every token: zero variance against spread targets."""
    real = model_mod.Predictor.forward

    def constant(self, hidden, is_target, mask):
        out = real(self, hidden, is_target, mask)
        return out.mean(dim=(0, 1), keepdim=True).expand_as(out)

    monkeypatch.setattr(model_mod.Predictor, "forward", constant)
    out = tmp_path / "run"
    s, caught = _run("hybrid", corpus_file, out, *QUIET, "watch.var_ratio=0.1", steps=4)
    evals = read_jsonl(out / "logs" / "eval.jsonl")
    assert all(e["watch_var_ratio"] < 1e-6 and e["watch_target_var"] > 0.1 for e in evals)
    assert len(caught) == 1
    msg = str(caught[0].message)
    assert msg.startswith("collapse watch (var_ratio) at step 2: the predictor's outputs vary")
    assert "watch.var_ratio=0.1" in msg and f"target_var {evals[1]['watch_target_var']:.3g}" in msg
    assert list(s.watch["tripped"]) == ["var_ratio"]  # step 0 is never checked, although it is below too


class Interrupted(Exception):
    pass


def test_tripped_criteria_survive_resume_without_warning_again(corpus_file, tmp_path):
    out = tmp_path / "run"
    forced = (*QUIET, "watch.rankme_floor=1e6", "train.ckpt_every=2", "train.log_every=1")

    def stop_at_5(row):
        if row["step"] == 5:
            raise Interrupted

    with pytest.raises(Interrupted):
        _run("mlm", corpus_file, out, *forced, steps=8, progress=stop_at_5)
    # the thresholds are runtime fields: the resumption may change them (here a second criterion trips)
    s, again = _run("mlm", corpus_file, out, *forced, "watch.rank_floor=1e6", steps=8, resume=True)
    assert s.resumed_from == 4
    assert [str(w.message).split(")")[0] for w in again] == ["collapse watch (rank_floor"]
    assert s.watch["tripped"]["rankme_floor"]["step"] == 2 and s.watch["tripped"]["rank_floor"]["step"] == 6
    evals = read_jsonl(out / "logs" / "eval.jsonl")
    assert [e["step"] for e in evals] == [0, 2, 4, 6, 8]
    assert s.watch["reference_effective_rank"] == pytest.approx(evals[0]["geometry_effective_rank"])
    assert [e.get("collapse") for e in evals] == [None, ["rankme_floor"], None, ["rank_floor"], None]


def test_criteria_wait_for_the_grace_period(corpus_file, tmp_path):
    """Default grace: three warm-ups (SMALL warms up for 2 steps -> checked from step 6)."""
    forced = (*QUIET[:-1], "watch.rankme_floor=1e6")
    s, caught = _run("mlm", corpus_file, tmp_path / "a", *forced, steps=8)
    assert [str(w.message).split(":")[0] for w in caught] == ["collapse watch (rankme_floor) at step 6"]
    assert s.watch["checked_from_step"] == 6
    s, caught = _run("mlm", corpus_file, tmp_path / "b", *forced, "watch.grace_steps=3", steps=8)
    assert s.watch["tripped"]["rankme_floor"]["step"] == 4 and len(caught) == 1
    assert WatchConfig().first_checked_step(2500) == 7500 and WatchConfig(grace_steps=0).first_checked_step(50) == 1


def test_watch_off_keeps_the_geometry_cadence_and_never_warns(corpus_file, tmp_path):
    out = tmp_path / "run"
    s, caught = _run("hybrid", corpus_file, out, "watch.enabled=false", "watch.rankme_floor=1e6",
                     "train.geometry_every=4", steps=4)
    evals = read_jsonl(out / "logs" / "eval.jsonl")
    assert [("geometry_rankme" in e) for e in evals] == [True, False, True]
    assert caught == [] and s.watch["tripped"] == {} and s.watch["enabled"] is False


def test_the_command_line_prints_a_collapse_warning_as_one_line_even_when_quiet(corpus_file, tmp_path, capsys):
    from trainer.cli import main

    argv = ["--objective", "hybrid", "--corpus", str(corpus_file), "--out", str(tmp_path / "run"), "--steps", "2",
            "--device", "cpu", "--quiet", "--format", "json"]
    for item in (*SMALL, *QUIET, "watch.rankme_floor=1e6", "train.eval_every=1"):
        argv += ["--set", item]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    (line,) = err.strip().splitlines()
    assert line.startswith("warning: collapse watch (rankme_floor) at step 1: the student's RankMe")
    summary = json.loads(out.strip().splitlines()[-1])["summary"]
    assert list(summary["watch"]["tripped"]) == ["rankme_floor"]
    assert "watch_var_ratio" in summary["watch"]["latest"]


# -- the criteria on synthetic rows ------------------------------------------------------------------------------

def _row(rank=50.0, rankme=10.0, ratio=0.5, target=0.8):
    return {"geometry_effective_rank": rank, "geometry_rankme": rankme, "watch_var_ratio": ratio,
            "watch_pred_var": ratio * target, "watch_target_var": target}


@pytest.mark.parametrize(("criterion", "row"), [
    ("rank_drop", _row(rank=34.0)),          # below 0.35 x 100
    ("rank_floor", _row(rank=1.5)),
    ("rankme_floor", _row(rankme=1.2)),
    ("var_ratio", _row(ratio=0.05)),
    ("target_var_floor", _row(target=0.005)),
])
def test_each_criterion_trips_once_and_names_its_threshold(criterion, row):
    watch = CollapseWatch(WatchConfig(rank_floor=2.0), "hybrid")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert watch.check(0, _row(rank=100.0)) == []  # the reference
        trips = watch.check(100, row)
        assert watch.check(200, row) == []
    tripped = [t.criterion for t in trips]
    expected = {criterion} | ({"rank_drop"} if criterion == "rank_floor" else set())
    assert set(tripped) == expected and len(caught) == len(tripped)
    trip = next(t for t in trips if t.criterion == criterion)
    assert trip.step == 100 and f"collapse watch ({criterion}) at step 100" in trip.message
    field = "rank_fraction" if criterion == "rank_drop" else criterion
    assert f"watch.{field}=" in trip.message
    assert all(issubclass(w.category, CollapseWarning) for w in caught)


def test_step_zero_is_never_checked_and_mlm_skips_the_hybrid_criteria():
    watch = CollapseWatch(WatchConfig(), "mlm")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert watch.check(0, _row(rank=1.0, rankme=1.0, ratio=0.0, target=0.0)) == []
        assert watch.reference == 1.0
        trips = watch.check(10, _row(rank=50.0, rankme=10.0, ratio=0.0, target=0.0))
    assert trips == []  # var_ratio / target_var_floor are hybrid criteria
    off = CollapseWatch(WatchConfig(enabled=False), "hybrid")
    assert off.check(0, _row()) == [] and off.check(10, _row(rank=0.5, ratio=0.0)) == [] and off.reference is None


def test_watch_state_round_trip():
    a = CollapseWatch(WatchConfig(), "hybrid")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a.check(0, _row(rank=80.0))
        a.check(5, _row(ratio=0.01))
    b = CollapseWatch(WatchConfig(), "hybrid")
    b.load_state(json.loads(json.dumps(a.state())))
    assert b.reference == 80.0 and list(b.tripped) == ["var_ratio"] and b.tripped["var_ratio"].step == 5
    assert b.summary() == a.summary()


def test_watch_config_fields_are_runtime_and_validated():
    assert {k for k in valid_keys() if k.startswith("watch.")} <= RUNTIME_FIELDS
    assert set(CRITERIA) == {"rank_drop", "rank_floor", "rankme_floor", "var_ratio", "target_var_floor"}
    for bad, match in (("watch.rank_fraction=1.5", "watch.rank_fraction: expected a fraction in"),
                       ("watch.var_ratio=-1", "watch.var_ratio: expected a number >= 0"),
                       ("watch.batches=0", "watch.batches: expected an integer >= 1")):
        with pytest.raises(TrainerError, match=re.escape(match)):
            resolve_config("hybrid", "tiny", [bad])


def test_jepa_variances_of_a_constant_predictor_are_zero_against_the_targets():
    import numpy as np

    from trainer.distributed import DistInfo
    from trainer.engine import engine_from_config
    from trainer.tokenizer import SpecialIds

    c = resolve_config("hybrid", "tiny", list(SMALL))
    special = SpecialIds(pad=0, cls=2, sep=3, mask=4, all=(0, 1, 2, 3, 4), vocab_size=60)
    engine = engine_from_config(c, special, device=torch.device("cpu"), dist=DistInfo())
    rng = np.random.default_rng(0)
    tokens = rng.integers(5, 60, size=(8, 32)).astype(np.int64)
    tokens[:, 0], tokens[:, -1] = 2, 3
    batch = (tokens, np.ones((8, 32), dtype=np.uint8))
    pred_var, target_var, n = engine.jepa_variances([batch])
    assert n > 0 and pred_var > 0 and target_var > 0.5
    torch.nn.init.zeros_(engine.student.predictor.out.weight)  # every output = the bias: no variance
    pred_var, _, _ = engine.jepa_variances([batch])
    assert pred_var == pytest.approx(0.0, abs=1e-6)
    assert engine.student.training  # left in training mode
