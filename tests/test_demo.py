"""The demo end to end at small settings: trains both encoders, analyses three models, compares, reports;
a second run reuses the finished training runs."""

from __future__ import annotations

import json

import matplotlib.image as mpimg

from embedgeom.demo import run_demo

SMALL = ("model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64",
         "data.vocab_size=400", "train.batch_size=8", "predictor.hidden_size=32", "predictor.heads=2")


def test_demo_small(tmp_path):
    kw = {"steps": 6, "max_texts": 60, "tasks": ("sample:polarity", "sample:lee"), "corpus": "sample:polarity",
          "train_overrides": SMALL}
    summary = run_demo(tmp_path / "demo", **kw)
    for run in summary.runs.values():
        assert json.loads((run / "run.json").read_text())["status"] == "complete"
    assert set(summary.analyses) == {"tiny-mlm", "tiny-hybrid", "minilm"}
    assert (summary.comparison / "comparison.json").is_file()
    pngs = list(summary.report.parent.glob("*.png"))
    assert len(pngs) >= 8 and all(mpimg.imread(p).std() > 0.01 for p in pngs)
    assert summary.verdict and {"task", "metric", "diff", "significant", "reading"} <= set(summary.verdict[0])
    table = summary.verdict_table()
    assert table.row_count == len(summary.verdict)
    mtimes = {k: (v / "run.json").stat().st_mtime_ns for k, v in summary.runs.items()}
    again = run_demo(tmp_path / "demo", **kw)  # finished runs are reused, not retrained
    assert {k: (v / "run.json").stat().st_mtime_ns for k, v in again.runs.items()} == mtimes
