"""Nothing lost: every output directory (analyze, compare, report) is recognised by its manifest, never by file
names; anything else there is refused before any work, an output is swapped in whole (an interrupt or a full disk
leaves the previous one intact), symbolic links are resolved, never replaced; and results edited by hand are
refused on load. Each case asserts what a user sees: their file byte for byte, the exit code, one line, no
traceback."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re

import numpy as np
import pytest
from typer.testing import CliRunner

import embedgeom as eg
from embedgeom.cli import app
from embedgeom.report import build_report
from embedgeom.results import AnalysisResult, ComparisonResult, csv_safe, save_results
from embedgeom.storage import ANALYSIS_FORMAT, REPORT_FORMAT, OutputError, prepare_output

runner = CliRunner()


@pytest.fixture(scope="module")
def results(tiny_bert_dir, tmp_path_factory):
    from tests.fixtures import make_tiny_bert

    other = make_tiny_bert(tmp_path_factory.mktemp("other") / "m", seed=3)
    kw = {"data": "sample:polarity", "max_texts": 40, "poolings": "mean", "cache": False, "probes": False,
          "dtype": "float32", "device": "cpu"}
    return eg.analyze(tiny_bert_dir, name="A", **kw), eg.analyze(other, name="B", **kw)


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if the CLI starts any analysis (refusals must come before any work)."""
    def work(*args, **kwargs):
        raise AssertionError("work started before the output directory was checked")

    monkeypatch.setattr("embedgeom.analysis.analyze", work)
    monkeypatch.setattr("embedgeom.analysis.analyze_checkpoints", work)
    monkeypatch.setattr("embedgeom.report.build_report", work)


def _snapshot(d):
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _one_line_error(r):
    """The failure's one line (progress lines of the stages that ran before it aside: stderr is not a terminal
    under CliRunner, so each stage announces its start)."""
    assert r.exit_code != 0
    assert "Traceback" not in r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip() and not re.search(r": started \(\d+/\d+\)$", ln)]
    assert len(lines) == 1, r.output
    assert lines[0].startswith("error: ")
    return lines[0]


# --- the user's files are never touched -------------------------------------------------------------------

def test_analyze_out_over_a_users_result_files_is_refused_before_any_work(tiny_bert_dir, tmp_path, no_work):
    out = tmp_path / "mine"
    (out / "paper").mkdir(parents=True)
    (out / "result.json").write_text('{"my": "own notes"}')
    (out / "metrics.csv").write_text("a,b\n1,2\n")
    (out / "paper" / "draft.tex").write_text("\\section{x}")
    before = _snapshot(out)
    r = runner.invoke(app, ["analyze", str(tiny_bert_dir), "--out", str(out)])
    line = _one_line_error(r)
    assert "not part of an embedgeom output" in line and "metrics.csv" in line
    assert _snapshot(out) == before


def test_report_out_over_a_users_index_is_refused(results, tmp_path, no_work):
    results[0].save(tmp_path / "a")
    out = tmp_path / "site"
    out.mkdir()
    (out / "index.html").write_text("<html>my page</html>")
    (out / "index.md").write_text("# mine")
    before = _snapshot(out)
    r = runner.invoke(app, ["report", str(tmp_path / "a"), "--out", str(out)])
    assert "index.html" in _one_line_error(r)
    assert _snapshot(out) == before


def test_an_output_of_another_kind_is_not_replaced(results, tmp_path, no_work):
    a = results[0].save(tmp_path / "a")
    before = _snapshot(a)
    r = runner.invoke(app, ["report", str(a), "--out", str(a)])
    assert "holds an analysis result" in _one_line_error(r)
    assert _snapshot(a) == before
    with pytest.raises(OutputError, match="holds an analysis result"):
        save_results(a, {"x": results[1]})


def test_out_dot_and_its_parents_are_refused_up_front(tiny_bert_dir, tmp_path, monkeypatch, no_work):
    monkeypatch.chdir(tmp_path)
    for out in (".", str(tmp_path.parent)):
        r = runner.invoke(app, ["analyze", str(tiny_bert_dir), "--out", out])
        assert "current directory" in _one_line_error(r)


def test_a_symlinked_out_is_resolved_and_the_link_kept(results, tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    results[0].save(link)
    results[1].save(link)  # replaced in the directory the link names; the link itself stays a link
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert AnalysisResult.load(real).name == "B"
    (tmp_path / "file").write_text("precious")
    (tmp_path / "to-file").symlink_to(tmp_path / "file")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(OutputError, match="not a directory"):
        results[0].save(tmp_path / "to-file")
    with pytest.raises(OutputError, match="link to nothing"):
        results[0].save(tmp_path / "dangling")
    assert (tmp_path / "file").read_text() == "precious"
    assert (tmp_path / "to-file").is_symlink() and (tmp_path / "dangling").is_symlink()


# --- whole or nothing ---------------------------------------------------------------------------------------

def _report(results, tmp_path, out):
    results[0].save(tmp_path / "a")
    results[1].save(tmp_path / "b")
    loaded = [AnalysisResult.load(tmp_path / "a"), AnalysisResult.load(tmp_path / "b")]
    return build_report(loaded, out, formats=("png",))


@pytest.mark.parametrize("fault", ["interrupt", "disk-full"])
def test_a_report_interrupted_midway_leaves_the_previous_report_intact(results, tmp_path, monkeypatch, fault):
    from embedgeom import report as R

    out = tmp_path / "report"
    _report(results, tmp_path, out)
    before = _snapshot(out)
    assert before["index.html"].rstrip().endswith(b"</html>")
    calls = {"n": 0}
    real = R.save_figure

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # two figures of the new report are already written
            if fault == "interrupt":
                raise KeyboardInterrupt
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(R, "save_figure", failing)
    if fault == "interrupt":
        with pytest.raises(KeyboardInterrupt):
            _report(results, tmp_path, out)
    else:
        with pytest.raises(OutputError, match=r"No space left on device \(ENOSPC\).*Nothing was replaced"):
            _report(results, tmp_path, out)
    assert _snapshot(out) == before  # every PNG and index.html byte for byte
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".report.")] == []


def test_disk_full_through_the_cli_is_one_line_naming_the_path(results, tmp_path, monkeypatch):
    results[0].save(tmp_path / "a")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("embedgeom.report.save_figure", full)
    r = runner.invoke(app, ["report", str(tmp_path / "a"), "--out", str(tmp_path / "rep")])
    line = _one_line_error(r)
    assert "ENOSPC" in line and str(tmp_path / "rep") in line and "free space" in line
    assert not (tmp_path / "rep").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".rep.")] == []


def test_stale_temporaries_are_removed_and_a_moved_aside_output_restored(results, tmp_path):
    out = results[0].save(tmp_path / "res")
    # a writer killed between its two renames: the previous output moved aside, the new one never swapped in
    os.rename(out, tmp_path / ".res.999999999-0123abcd.old")
    (tmp_path / ".res.999999999-89abcdef.partial").mkdir()
    (tmp_path / ".res.999999999-89abcdef.partial" / "arrays.npz").write_bytes(b"half")
    (tmp_path / ".res.0123456789ab.partial").mkdir()  # left by an older embedgeom (no process id)
    prepare_output(tmp_path / "res", ANALYSIS_FORMAT)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]
    assert AnalysisResult.load(tmp_path / "res").name == "A"


def test_temporaries_of_a_running_writer_are_left_alone(results, tmp_path):
    busy = tmp_path / f".res.{os.getppid()}-0123abcd.partial"
    busy.mkdir()
    results[0].save(tmp_path / "res")
    assert busy.is_dir()


# --- tamper-evident results ---------------------------------------------------------------------------------

def _edit(path, fn, reseal=False):
    data = json.loads(path.read_text())
    fn(data)
    if reseal:  # a careful forger recomputes the content hash: the metric's own range still catches the value
        body = {k: v for k, v in data.items() if k != "content_hash"}
        data["content_hash"] = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"))
                                              .encode()).hexdigest()
    path.write_text(json.dumps(data))


def _set_rank(data, value):
    row = next(r for r in data["metrics"] if r["metric"] == "effective_rank")
    row["value"] = value


def test_a_hand_edited_value_is_refused(results, tmp_path):
    d = results[0].save(tmp_path / "r")
    _edit(d / "result.json", lambda data: _set_rank(data, 99.99))
    with pytest.raises(ValueError, match="changed after embedgeom wrote it"):
        AnalysisResult.load(d)
    r = runner.invoke(app, ["report", str(d), "--out", str(tmp_path / "rep")])
    assert "changed after embedgeom wrote it" in _one_line_error(r)


def test_an_impossible_value_is_refused_even_with_a_recomputed_hash(results, tmp_path):
    d = results[0].save(tmp_path / "r")
    n = next(r["n"] for r in results[0].metrics if r["metric"] == "effective_rank")
    _edit(d / "result.json", lambda data: _set_rank(data, float(n) + 50.0), reseal=True)
    with pytest.raises(ValueError, match=rf"effective_rank = {float(n) + 50.0!r} .* outside the metric's range "
                                         rf"\[1, {n - 1}\] at n = {n}"):
        AnalysisResult.load(d)


def test_edited_comparison_rows_are_refused(results, tmp_path):
    cmp = eg.compare(results[0], results[1])
    d = cmp.save(tmp_path / "c")
    assert ComparisonResult.load(d).differences == json.loads(json.dumps(cmp.differences))
    _edit(d / "comparison.json", lambda data: data["differences"][0].update(significant=True, diff=1.0))
    with pytest.raises(ValueError, match="changed after embedgeom wrote it"):
        ComparisonResult.load(d)


@pytest.mark.parametrize("drop", ["files", "content_hash"])
def test_a_current_version_result_without_its_manifest_is_refused(results, tmp_path, drop):
    d = results[0].save(tmp_path / "r")
    _edit(d / "result.json", lambda data: data.pop(drop))
    with pytest.raises(ValueError, match=f"no '{drop}' entry"):
        AnalysisResult.load(d)


def test_collections_and_reports_carry_a_manifest_over_every_file(results, tmp_path):
    saved = save_results(tmp_path / "set", {"one": results[0], "two": results[1]})
    manifest = json.loads((tmp_path / "set" / "manifest.json").read_text())
    assert manifest["format"] == "embedgeom-collection" and manifest["entries"] == ["one", "two"]
    assert set(manifest["files"]) == {p.relative_to(tmp_path / "set").as_posix()
                                      for p in (tmp_path / "set").rglob("*") if p.is_file()} - {"manifest.json"}
    assert [AnalysisResult.load(p).name for p in saved.values()] == ["A", "B"]
    save_results(tmp_path / "set", {"three": results[1]})  # an earlier set is replaced whole
    assert sorted(p.name for p in (tmp_path / "set").iterdir()) == ["manifest.json", "three"]
    out = tmp_path / "rep"
    _report(results, tmp_path, out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == REPORT_FORMAT and manifest["models"] == ["A", "B"]
    assert "index.html" in manifest["files"] and any(f.endswith(".png") for f in manifest["files"])


# --- one plain line for every error ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ["x[/b].txt", "[red]x.txt", "[bold]"])
def test_paths_with_brackets_are_printed_as_they_are(tiny_bert_dir, tmp_path, name):
    missing = tmp_path / name
    r = runner.invoke(app, ["analyze", str(tiny_bert_dir), "--data", str(missing), "--no-cache"])
    line = _one_line_error(r)
    assert str(missing) in line and "MarkupError" not in line


def test_warnings_with_brackets_are_printed_as_they_are(tiny_bert_dir, tmp_path):
    (tmp_path / "x[").mkdir()
    data = tmp_path / "x[" / "b]texts.txt"  # the path holds "[/b]", a closing markup tag
    data.write_text("\n".join(f"text number {i} with several words" for i in range(12)) + "\n")
    r = runner.invoke(app, ["analyze", str(tiny_bert_dir), "--data", str(data), "--no-cache", "--pooling", "mean",
                            "--max-length", "4", "--no-probes"])
    assert r.exit_code == 0, r.output
    assert "x[/b]texts" in r.output and "truncated" in r.output


def test_an_os_error_without_a_path_names_it():
    from embedgeom.cli import _one_line

    line = _one_line(OSError(errno.EACCES, "Permission denied", "/data/x.txt"))
    assert line == ("cannot use /data/x.txt: Permission denied (EACCES). Fix: choose a directory you can write "
                    "to.")


# --- CSV cells a spreadsheet would run --------------------------------------------------------------------

def test_csv_text_cells_that_look_like_formulas_are_escaped(results, tmp_path):
    import pandas as pd

    frame = pd.DataFrame({"model": ["=HYPERLINK(\"x\")", "+1", "@SUM(A1)", "-cmd", "plain"],
                          "value": [-1.5, 2.0, 3.0, -4.0, 5.0]})
    safe = csv_safe(frame)
    assert safe["model"].tolist() == ["'=HYPERLINK(\"x\")", "'+1", "'@SUM(A1)", "'-cmd", "plain"]
    assert safe["value"].tolist() == [-1.5, 2.0, 3.0, -4.0, 5.0]  # numbers are numbers
    res = results[0]
    hostile = AnalysisResult(res.checkpoint, res.tasks, res.options, res.metrics, res.probes, res.arrays, res.card,
                             name="=cmd|' /C calc'!A0")
    d = hostile.save(tmp_path / "h")
    table = pd.read_csv(d / "metrics.csv")
    assert set(table["model"]) == {"'=cmd|' /C calc'!A0"}
    assert AnalysisResult.load(d).name == "=cmd|' /C calc'!A0"  # the JSON keeps the name as given
    assert np.isfinite(table["value"]).any()



def test_typed_rows_name_every_field_the_rows_carry(results):
    from embedgeom.results import DifferenceRow, MetricRow, ProbeRow, SimilarityRow

    a, b = results
    cmp = eg.compare(a, b)
    for rows, typed in ((a.metrics, MetricRow), (a.probes, ProbeRow), (cmp.differences, DifferenceRow),
                        (cmp.similarity, SimilarityRow)):
        extra = {k for r in rows for k in r} - set(typed.__annotations__)
        assert not extra, f"{typed.__name__} lacks {sorted(extra)}"


def test_the_demo_refuses_a_users_report_directory_before_training(tmp_path, monkeypatch):
    from embedgeom.demo import run_demo

    (tmp_path / "demo" / "report").mkdir(parents=True)
    (tmp_path / "demo" / "report" / "index.html").write_text("mine")
    monkeypatch.setattr("embedgeom.demo._train", lambda *a, **k: pytest.fail("training started"))
    with pytest.raises(OutputError, match=r"report holds files that are not part of an embedgeom output"):
        run_demo(tmp_path / "demo")
    assert (tmp_path / "demo" / "report" / "index.html").read_text() == "mine"


def test_a_result_indexed_by_task_gives_that_tasks_rows(results):
    res = results[0]
    rows = res["polarity"]
    assert set(rows["task"]) == {"polarity"}
    assert len(rows) == len(res.metrics) + len(res.probes)  # one task here: every row
    assert rows["value"].tolist() == [r["value"] for r in res.metrics] + [r["value"] for r in res.probes]
    with pytest.raises(KeyError, match=r"'lee' is not in 'A'; it holds 'polarity'"):
        res["lee"]


def test_a_version_2_result_without_a_content_hash_is_still_read(results, tmp_path):
    """Format 2 listed file hashes but no row hash: such results (written before format 3) load; their files are
    still checked."""
    d = results[0].save(tmp_path / "r")

    def as_version_2(data):
        data.pop("content_hash")
        data["version"] = 2
        data["files"] = {k: v for k, v in data["files"].items() if "/" not in k}

    _edit(d / "result.json", as_version_2)
    assert AnalysisResult.load(d).name == "A"
    (d / "metrics.csv").write_text("edited")
    with pytest.raises(ValueError, match=r"metrics\.csv does not match"):
        AnalysisResult.load(d)
