"""Comparisons a reader can act on: which side is better, from each metric's registered direction, only where the
paired interval excludes 0."""

from __future__ import annotations

import math

import pytest
from typer.testing import CliRunner

from embedgeom.cli import app
from embedgeom.comparison import better_side

runner = CliRunner()


def _row(name, diff, significant=True, kind="metric"):
    return {"name": name, "diff": diff, "significant": significant, "kind": kind}


@pytest.mark.parametrize(("row", "side"), [
    (_row("uniformity", -0.2), "b"),              # lower uniformity = more uniform: b better
    (_row("uniformity", 0.2), "a"),
    (_row("effective_rank", 5.0), "b"),           # higher is better
    (_row("effective_rank", -5.0), "a"),
    (_row("alignment", -0.1), "b"),               # closer positives
    (_row("alpha_req", 0.3), None),               # no better direction
    (_row("effective_rank", 5.0, significant=False), None),
    (_row("effective_rank", math.nan), None),
    (_row("linear:accuracy", -0.05, kind="probe"), "a"),
    (_row("cosine:spearman", 0.05, kind="probe"), "b"),
    (_row("lexical:balanced_accuracy", 0.05, kind="probe"), None),
    (_row("gap:semantic_minus_lexical", 0.05, kind="probe"), None),
])
def test_better_side_follows_the_registered_direction(row, side):
    assert better_side(row) == side


def test_cli_comparison_table_names_the_better_model(analysed, tmp_path):
    from embedgeom import metrics as M

    a, b = analysed
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    r = runner.invoke(app, ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--significant"],
                      env={"COLUMNS": "400"})
    assert r.exit_code == 0, r.output
    assert "better" in r.stdout
    from embedgeom.comparison import compare

    cmp = compare(a, b)
    shown = [row for row in cmp.differences if row["significant"] and row["kind"] == "metric"
             and M.REGISTRY[row["name"]].higher_is_better is not None]
    assert shown, "the fixture's models should differ significantly somewhere"
    for row in shown:  # the winner by our own arithmetic: sign of b - a against the direction
        winner = cmp.b if (row["diff"] > 0) == M.REGISTRY[row["name"]].higher_is_better else cmp.a
        line = next(ln for ln in r.stdout.splitlines()
                    if f" {row['name']} " in ln and f" {row['task']} " in f" {ln} " and row["pooling"] in ln
                    and f" {row['layer']} " in ln)
        assert line.rstrip(" │").endswith(winner)  # the last column of the row
