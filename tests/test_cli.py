"""The CLI through typer's CliRunner: analyze, compare, report, metrics; formats, files, exit codes."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from embedgeom.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_bert_dir, minilm_dir):
    root = tmp_path_factory.mktemp("cli")
    args = ["--data", "sample:polarity,sample:lee", "--max-texts", "80", "--pooling", "mean,cls", "--no-cache",
            "--dtype", "float32"]
    a = runner.invoke(app, ["analyze", str(minilm_dir), *args, "--out", str(root / "a"), "--format", "json",
                            "--name", "MiniLM"])
    assert a.exit_code == 0, a.output
    b = runner.invoke(app, ["analyze", str(tiny_bert_dir), *args, "--out", str(root / "b")])
    assert b.exit_code == 0, b.output
    return root, a.stdout


def test_analyze_json_is_parseable_and_complete(saved):
    root, stdout = saved
    data = json.loads(stdout)
    assert data["checkpoint"]["model_type"] == "bert"
    assert data["name"] == "MiniLM"
    from embedgeom.results import AnalysisResult

    assert AnalysisResult.load(root / "a").name == "MiniLM"  # the label survives save/load
    assert {r["metric"] for r in data["metrics"]} >= {"uniformity", "effective_rank", "alignment"}
    assert (root / "a" / "result.json").is_file() and (root / "a" / "arrays.npz").is_file()


def test_analyze_table_and_csv(tiny_bert_dir):
    res = runner.invoke(app, ["analyze", str(tiny_bert_dir), "--data", "sample:polarity", "--max-texts", "40",
                              "--pooling", "max", "--no-probes", "--no-cache"])
    assert res.exit_code == 0, res.output
    assert "uniformity" in res.stdout and "max" in res.stdout
    csv = runner.invoke(app, ["analyze", str(tiny_bert_dir), "--data", "sample:polarity", "--max-texts", "40",
                              "--pooling", "max", "--no-probes", "--no-cache", "--format", "csv"])
    assert csv.exit_code == 0
    header = csv.stdout.splitlines()[0].split(",")
    assert header[:6] == ["model", "task", "pooling", "layer", "kind", "name"]


def test_compare_saved_dirs(saved):
    root, _ = saved
    res = runner.invoke(app, ["compare", str(root / "a"), str(root / "b"), "--out", str(root / "cmp"),
                              "--format", "json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["differences"] and data["similarity"]
    assert any(r["significant"] for r in data["differences"])
    table = runner.invoke(app, ["compare", str(root / "a"), str(root / "b"), "--significant"])
    assert table.exit_code == 0 and "*" in table.stdout


def test_report_writes_valid_non_blank_pngs(saved):
    import matplotlib.image as mpimg

    root, _ = saved
    made = runner.invoke(app, ["compare", str(root / "a"), str(root / "b"), "--out", str(root / "cmp-report"),
                               "--format", "csv"])
    assert made.exit_code == 0, made.output
    cmp_dirs = [p for p in (root / "cmp-report").iterdir() if p.is_dir()]
    assert len(cmp_dirs) == 1
    res = runner.invoke(app, ["report", str(root / "a"), str(root / "b"), *map(str, cmp_dirs), "--out",
                              str(root / "report")])
    assert res.exit_code == 0, res.output
    pngs = sorted((root / "report").glob("*.png"))
    assert len(pngs) >= 8
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        img = mpimg.imread(png)
        assert img.std() > 0.01, png.name  # not blank
        assert png.with_suffix(".pdf").is_file()
    index = (root / "report" / "index.md").read_text()
    assert "polarity" in index and "![" in index
    assert "data:image/png;base64," in (root / "report" / "index.html").read_text()


def test_errors_are_one_line_with_nonzero_exit(tmp_path):
    res = runner.invoke(app, ["analyze", str(tmp_path / "missing")])
    assert res.exit_code != 0
    assert "does not exist" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["report", str(tmp_path), "--out", str(tmp_path / "r")])
    assert res.exit_code != 0 and "result.json" in res.output
    res = runner.invoke(app, ["compare", str(tmp_path)])
    assert res.exit_code != 0 and "at least two" in res.output


def test_metrics_listing_and_help():
    res = runner.invoke(app, ["metrics"])
    assert res.exit_code == 0 and "effective_rank" in res.stdout and "Roy & Vetterli" in res.stdout
    help_ = runner.invoke(app, ["analyze", "--help"])
    assert help_.exit_code == 0 and "--pooling" in help_.stdout and "--protocol" in help_.stdout
    from embedgeom.metrics import REGISTRY

    assert all(name in res.stdout for name in REGISTRY)  # every registered metric is listed


def test_verbosity_flags(tiny_bert_dir, tmp_path):
    args = ["analyze", str(tiny_bert_dir), "--data", "sample:polarity", "--max-texts", "30", "--pooling", "mean",
            "--no-probes", "--no-cache", "--format", "csv"]
    plain = runner.invoke(app, args)  # stderr is not a terminal here: one line per finished stage, with its time
    assert plain.exit_code == 0, plain.output
    assert "encode sample:polarity: 30 done in" in plain.stderr and " s" in plain.stderr
    quiet = runner.invoke(app, [*args, "-q"])
    assert quiet.exit_code == 0 and quiet.stderr.strip() == "" and quiet.stdout == plain.stdout
    verbose = runner.invoke(app, [*args, "--verbose"])
    assert verbose.exit_code == 0 and "done in" in verbose.stderr
    saved = runner.invoke(app, [*args, "--out", str(tmp_path / "r")])
    assert saved.exit_code == 0 and f"saved to {tmp_path / 'r'}" in saved.stderr
    quiet_saved = runner.invoke(app, [*args, "--out", str(tmp_path / "q"), "-q"])
    assert quiet_saved.exit_code == 0 and quiet_saved.stderr.strip() == "" and (tmp_path / "q" / "result.json").exists()
    both = runner.invoke(app, [*args, "-q", "-v"])
    assert both.exit_code == 1 and "expected at most one of them" in both.output
    for cmd in ("compare", "report", "train", "demo", "metrics"):
        help_ = runner.invoke(app, [cmd, "--help"])
        assert "--quiet" in help_.stdout and "--verbose" in help_.stdout, cmd


def test_train_command_writes_a_loadable_run(tmp_path):
    import embedgeom as eg

    small = ["model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64",
             "data.vocab_size=400", "train.batch_size=8"]
    args = ["train", "--objective", "mlm", "--corpus", "sample:polarity", "--out", str(tmp_path / "run"),
            "--steps", "4"]
    for s in small:
        args += ["--set", s]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "trained 4 steps" in res.stdout
    enc = eg.load_encoder(tmp_path / "run", dtype="float32")
    assert enc.kind == "trainer" and enc.num_layers == 1
    bad = runner.invoke(app, ["train", "--objective", "mlm", "--corpus", "sample:polarity", "--out",
                              str(tmp_path / "x"), "--set", "model.nope=1"])
    assert bad.exit_code != 0 and "model.nope" in bad.output


def test_the_table_header_says_what_was_measured(tiny_bert_dir, tmp_path):
    res = runner.invoke(app, ["analyze", str(tiny_bert_dir), "--data", "sample:lee", "--max-texts", "300",
                              "--pooling", "mean", "--no-probes", "--no-cache", "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    saved = json.loads((tmp_path / "r" / "result.json").read_text())
    task = saved["tasks"]["lee"]
    truncated = task["encode"]["truncated"]
    assert truncated > 0  # the tiny model reads 64 tokens; Lee's documents are longer
    header = " ".join(res.stdout.split())
    assert f"n={task['n_items']} texts, 300 pairs (a seeded subsample of 1,225)" in header
    assert f"{truncated} truncated at 64 tokens" in header
