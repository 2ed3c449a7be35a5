"""A new pooler is one registration: it reaches the CLI, analyze, compare and the report with no other edit."""

from __future__ import annotations

import torch
from typer.testing import CliRunner

from embedgeom import pooling as P
from embedgeom.cli import app
from embedgeom.results import AnalysisResult, ComparisonResult

runner = CliRunner()


def _first_last(x: P.PoolInput) -> torch.Tensor:
    """Mean of the first and the last real token's states."""
    mask = x.attention_mask
    first = P.first_token_index(mask)
    last = mask.shape[1] - 1 - P.first_token_index(mask.flip(1))
    rows = torch.arange(len(mask))
    h = x.hidden.to(torch.float32)
    return (h[rows, first] + h[rows, last]) / 2


def test_a_registered_pooler_reaches_cli_analyze_compare_and_report(tiny_bert_dir, tmp_path):
    data = tmp_path / "texts.txt"
    data.write_text("\n".join(f"sentence {i} about cats and dogs number {i % 7}" for i in range(30)) + "\n")
    with P.registered_pooler("first_last", _first_last, definition="mean of the first and last real token"):
        r = runner.invoke(app, ["analyze", str(tiny_bert_dir), "--data", str(data), "--pooling", "all",
                                "--no-cache", "--no-probes", "--out", str(tmp_path / "a"), "-q"])
        assert r.exit_code == 0, r.output
        res = AnalysisResult.load(tmp_path / "a")
        assert "first_last" in {p for _, p, _ in res.measured()}  # "all" includes what is registered
        assert res.options["pooling_definitions"]["first_last"] == "mean of the first and last real token"
        r = runner.invoke(app, ["compare", str(tmp_path / "a"), "--poolings", "mean,first_last", "--out",
                                str(tmp_path / "c"), "-q"])
        assert r.exit_code == 0, r.output
        cmp = ComparisonResult.load(next(p for p in (tmp_path / "c").iterdir() if p.is_dir()))
        assert {row["pooling_b"] for row in cmp.differences} == {"first_last"}
        r = runner.invoke(app, ["report", str(tmp_path / "a"), "--out", str(tmp_path / "rep"), "--no-pdf", "-q"])
        assert r.exit_code == 0, r.output
        assert "first\\_last" in (tmp_path / "rep" / "index.md").read_text()  # Markdown-escaped name
    r = runner.invoke(app, ["analyze", str(tiny_bert_dir), "--data", str(data), "--pooling", "first_last",
                            "--no-cache"])
    assert r.exit_code != 0 and "got 'first_last'" in r.output  # unregistered again: refused in one line
