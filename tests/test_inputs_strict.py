"""Strict, honest inputs: nothing lost, nothing invented, each case as a user meets it.

Line breaks, .jsonl text fields, label types, repeated texts with conflicting labels, paths that are not
regular files, spec options, operating-system errors (data specs), and collapsed vectors (metrics).
"""

from __future__ import annotations

import errno
import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from embedgeom import metrics as M
from embedgeom.cli import app
from embedgeom.data import DataError, class_of, load_rows, load_texts, parse_spec
from embedgeom.probes import classification_skip_reason

runner = CliRunner()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def cli_refuses(tiny_bert_dir, spec: str, *needles: str) -> str:
    """analyze exits non-zero, without a traceback, naming each needle."""
    res = runner.invoke(app, ["analyze", str(tiny_bert_dir), "--data", spec, "--no-cache", "--pooling", "mean"])
    assert res.exit_code != 0, res.output
    assert "Traceback" not in res.output
    flat = " ".join(res.output.split())  # however the error printer wraps or styles the line
    for needle in needles:
        assert needle in flat, (needle, res.output)
    return flat


# --- .txt lines: \n and \r\n only -----------------------------------------------------------------------

#: Every character str.splitlines() treats as a line break besides \n and \r\n.
OTHER_BREAKS = ("\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")


def test_txt_lines_end_only_at_newline(tmp_path):
    lines = [f"line {i}{OTHER_BREAKS[i % len(OTHER_BREAKS)]}continued" for i in range(30)]
    path = tmp_path / "notes.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ts = load_texts(str(path))
    assert ts.n == 30  # not 60: U+2028 and friends stay inside their line
    assert list(ts.texts) == lines
    assert load_rows(str(path)).texts == tuple(lines)


def test_txt_windows_line_ends_and_a_trailing_carriage_return(tmp_path):
    path = tmp_path / "win.txt"
    path.write_bytes(b"first\r\nsecond\r\nin\rside\r\nlast\r")
    assert load_rows(str(path)).texts == ("first", "second", "in\rside", "last")
    path.write_bytes(b"no final newline")
    assert load_rows(str(path)).texts == ("no final newline",)


def test_csv_records_end_only_at_line_ends(tmp_path):
    path = tmp_path / "seps.csv"
    path.write_text("text,label\n" + "".join(f"row {i}{c}tail,{i % 2}\r\n" for i, c in enumerate(OTHER_BREAKS)),
                    encoding="utf-8")
    ts = load_texts(str(path))
    assert ts.n == len(OTHER_BREAKS) and ts.texts[6] == "row 6\u2028tail"


def test_jsonl_line_separator_inside_a_string_is_one_record(tmp_path):
    path = tmp_path / "sep.jsonl"
    path.write_text('{"text": "one\u2028still one"}\n{"text": "two\u0085still two"}\r\n', encoding="utf-8")
    assert load_texts(str(path)).texts == ("one\u2028still one", "two\u0085still two")


# --- .jsonl text fields must be strings -----------------------------------------------------------------

@pytest.mark.parametrize(("value", "kind"), [(42, "a JSON number (42)"), (4.5, "a JSON number (4.5)"),
                                             ({"a": 1}, 'a JSON object ({"a": 1})'), (["a"], 'a JSON list (["a"])'),
                                             (True, "a JSON true/false"), (None, "JSON null")])
def test_jsonl_text_that_is_not_a_string_is_refused_with_file_and_line(tmp_path, value, kind):
    path = write_jsonl(tmp_path / "mixed.jsonl", [{"text": "fine"}, {"text": "also fine"}, {"text": value}])
    with pytest.raises(DataError) as err:
        load_texts(str(path))
    msg = str(err.value)
    assert f"mixed.jsonl line 3: field 'text' is {kind}, expected a text string (1 row(s) like it)" in msg
    assert "?text=COLUMN" in msg and "\n" not in msg


def test_jsonl_pair_text_that_is_not_a_string_is_refused(tmp_path):
    rows = [{"sentence1": "a", "sentence2": "b"}, {"sentence1": "c", "sentence2": 7},
            {"sentence1": "d", "sentence2": 8}]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    with pytest.raises(DataError, match=r"pairs.jsonl line 2: field 'sentence2' is a JSON number \(7\), expected a "
                                        r"text string \(2 row\(s\) like it\)"):
        load_texts(str(path))


def test_cli_refuses_a_number_as_text(tiny_bert_dir, tmp_path):
    path = write_jsonl(tmp_path / "nums.jsonl", [{"text": "a"}, {"text": 12}])
    cli_refuses(tiny_bert_dir, str(path), "nums.jsonl line 2", "'text' is a JSON number")


# --- labels: one rule ------------------------------------------------------------------------------------

def test_integral_labels_are_one_class_however_written(tmp_path):
    labels = [1, "1", 1.0, "1.0", " 1 ", "1e0", 0, "0", 0.0, "+0"]
    path = write_jsonl(tmp_path / "types.jsonl", [{"text": f"text {i}", "label": v} for i, v in enumerate(labels)])
    ts = load_texts(str(path))
    assert ts.label_names == ("0", "1")  # not '1' and 1 and 1.0 as separate classes
    assert ts.labels.tolist() == [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]
    csv = tmp_path / "types.csv"
    csv.write_text("text,label\na,1\nb,1.0\nc, 1\nd,0\n")
    assert load_texts(str(csv)).label_names == ("0", "1")


def test_class_order_is_numeric_then_names(tmp_path):
    path = write_jsonl(tmp_path / "order.jsonl",
                       [{"text": f"t{i}", "label": v} for i, v in enumerate([10, "2", 1.5, "b", "a"])])
    assert load_texts(str(path)).label_names == ("1.5", "2", "10", "a", "b")


def test_class_of_states_the_rule():
    assert class_of(1) == class_of("1") == class_of(1.0) == class_of(" 1.0 ") == 1
    assert class_of("0.5") == class_of(0.5) == 0.5 and class_of(" pos ") == "pos" and class_of("Pos") == "Pos"
    for bad, why in [(True, "true/false"), (False, "true/false"), (None, "null"), ("", "empty"), ("  ", "empty"),
                     ([1], "list"), ({"a": 1}, "object"), (float("nan"), "finite"), ("inf", "finite")]:
        with pytest.raises(ValueError, match=why):
            class_of(bad)


@pytest.mark.parametrize(("value", "why"), [(True, "a JSON true/false"), (False, "a JSON true/false"),
                                            (None, "JSON null"), ("", "empty"), ([0], "a JSON list"),
                                            ({"c": 0}, "a JSON object"), ("NaN", "not a finite number")])
def test_labels_that_are_not_classes_are_refused_with_file_line_and_count(tmp_path, value, why):
    rows = [{"text": "a", "label": 0}, {"text": "b", "label": value}, {"text": "c", "label": 1},
            {"text": "d", "label": value}]
    path = write_jsonl(tmp_path / "labels.jsonl", rows)
    with pytest.raises(DataError) as err:
        load_texts(str(path))
    msg = str(err.value)
    assert "labels.jsonl line 2: the label field 'label' is" in msg and why in msg
    assert "(a name or a number; 2 row(s) like it)" in msg and "?label=COLUMN" in msg


def test_empty_csv_label_is_refused(tmp_path):
    path = tmp_path / "gaps.csv"
    path.write_text("text,label\nhello,pos\nthere,\nfriend,neg\n")
    with pytest.raises(DataError, match=r"gaps.csv line 3: the label field 'label' is empty"):
        load_texts(str(path))


def test_cli_refuses_a_null_label(tiny_bert_dir, tmp_path):
    path = write_jsonl(tmp_path / "nulls.jsonl", [{"text": "a", "label": 1}, {"text": "b", "label": None}])
    cli_refuses(tiny_bert_dir, str(path), "nulls.jsonl line 2", "is JSON null")


def test_pair_positive_class_follows_the_same_rule(tmp_path):
    rows = [{"sentence1": f"a{i}", "sentence2": f"b{i}", "label": v} for i, v in enumerate([1, "0", 1.0, "1"])]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    ts = load_texts(f"{path}?positive=1.0")
    assert ts.pair_label_names == ("0", "1") and ts.pair_labels.tolist() == [1, 0, 1, 1] and len(ts.positives) == 3
    with pytest.raises(DataError, match=r"positive: expected one of the classes in .*pairs.jsonl \(0, 1\), got '7'"):
        load_texts(f"{path}?positive=7")
    single = write_jsonl(tmp_path / "single.jsonl", [{"text": "a", "label": 1}, {"text": "b", "label": 0}])
    with pytest.raises(DataError, match=r"positive: applies to a pair file with labels .* no text_pair column"):
        load_texts(f"{single}?positive=1")


# --- repeated texts with conflicting labels --------------------------------------------------------------

def test_conflicting_duplicates_warn_with_counts(tmp_path):
    body = "".join(f"text {i},{i % 2}\n" for i in range(20)) + "text 1,0\ntext 3,0\ntext 1,1\ntext 4,0\n"
    path = tmp_path / "dups.csv"
    path.write_text("text,label\n" + body)
    with pytest.warns(UserWarning, match=r"3 text\(s\) occur more than once \(4 repeated row\(s\) dropped\), and 2 "
                                         r"of them carry conflicting labels; each keeps the label of its first"):
        ts = load_texts(str(path))
    assert ts.n == 20 and ts.info["texts_repeated"] == 3 and ts.info["label_conflicts"] == 2
    assert ts.labels[1] == 1  # the first label kept


def test_plain_duplicates_do_not_warn(tmp_path):
    path = tmp_path / "same.csv"
    path.write_text("text,label\na,x\nb,y\na,x\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ts = load_texts(str(path))
    assert ts.n == 2 and ts.info["duplicates_removed"] == 1 and ts.info["label_conflicts"] == 0


def test_a_single_class_left_says_the_probe_cannot_run(tmp_path):
    path = tmp_path / "one.csv"
    path.write_text("text,label\nalpha,pos\nbeta,pos\nalpha,neg\n")
    with pytest.warns(UserWarning) as got:
        ts = load_texts(str(path))
    messages = [str(w.message) for w in got]
    assert any("1 of them carry conflicting labels" in m for m in messages)
    assert any("all 2 labelled texts have the one class 'pos' after 1 conflicting duplicate(s) kept their first "
               "label; the classification probe needs at least two classes and will not run" in m for m in messages)
    assert classification_skip_reason(ts.labels) is not None
    assert "cannot run on a single class" in classification_skip_reason(ts.labels)


def test_cli_shows_the_conflict_and_skipped_probe_warnings(tiny_bert_dir, tmp_path):
    words = ("the cat sat", "a dog ran", "the sun is high", "red car on the road", "a blue sky", "rain fell")
    rows = [f"{words[i % 6]} {i}" for i in range(12)]
    body = "".join(f"{t},same\n" for t in rows) + f"{rows[0]},other\n{rows[5]},other\n"
    path = tmp_path / "conflict.csv"
    path.write_text("text,label\n" + body)
    res = runner.invoke(app, ["analyze", str(tiny_bert_dir), "--data", str(path), "--no-cache", "--pooling", "mean"])
    assert res.exit_code == 0, res.output
    flat = " ".join(res.output.split())
    assert "2 text(s) occur more than once (2 repeated row(s) dropped), and 2 of them carry conflicting labels" in flat
    assert "the classification probe needs at least two classes and will not run" in flat


# --- paths and spec options ------------------------------------------------------------------------------

def test_a_directory_is_named_as_such(tmp_path, tiny_bert_dir):
    folder = tmp_path / "corpus.csv"
    folder.mkdir()
    with pytest.raises(DataError, match=r"corpus.csv is a directory, expected a file"):
        load_texts(str(folder))
    cli_refuses(tiny_bert_dir, str(folder), "is a directory, expected a file")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_fifo_is_named_as_such_and_never_opened(tmp_path, tiny_bert_dir):
    fifo = tmp_path / "stream.txt"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match=r"stream.txt is a FIFO \(named pipe\), not a regular file"):
        load_texts(str(fifo))  # would block forever if it were opened
    cli_refuses(tiny_bert_dir, str(fifo), "is a FIFO (named pipe), not a regular file")


def test_a_question_mark_in_a_file_name_is_part_of_the_name(tmp_path):
    path = tmp_path / "what?.csv"
    path.write_text("body,topic\nhello,x\nthere,y\n")
    assert parse_spec(str(path)) == (str(path), {})
    assert parse_spec(f"{path}?text=body&label=topic") == (str(path), {"text": "body", "label": "topic"})
    ts = load_texts(f"{path}?text=body&label=topic")
    assert ts.texts == ("hello", "there") and ts.label_names == ("x", "y")
    txt = tmp_path / "why?.txt"
    txt.write_text("a\nb\n")
    assert load_texts(str(txt)).texts == ("a", "b")
    with pytest.raises(DataError, match=r"neither .*nothing\?.txt nor .*nothing \(the part before '\?'\) exists"):
        load_texts(str(tmp_path / "nothing?.txt"))
    with pytest.raises(DataError, match=r"neither .*gone.csv\?text=body nor .*gone.csv \(the part before"):
        load_texts(str(tmp_path / "gone.csv?text=body"))


def test_unknown_and_repeated_options_are_refused_listing_the_valid_ones(tmp_path, tiny_bert_dir):
    path = tmp_path / "f.csv"
    path.write_text("text\na\nb\n")
    with pytest.raises(DataError, match=r"unknown option 'foo' in .*f.csv\?foo=bar': a file takes only \?text=, "
                                        r"\?text_pair=, \?label=, \?positive=, \?encoding="):
        load_texts(f"{path}?foo=bar")
    with pytest.raises(DataError, match=r"option 'text' is given twice"):
        load_texts(f"{path}?text=a&text=b")
    with pytest.raises(DataError, match=r"unknown option 'split' in 'sample:polarity\?split=train': a sample: spec "
                                        "takes no options"):
        load_texts("sample:polarity?split=train")
    with pytest.raises(DataError, match=r"a glue: spec takes only \?split="):
        load_texts("glue:sst2?text=sentence")
    cli_refuses(tiny_bert_dir, f"{path}?foo=bar", "unknown option 'foo'", "?text=", "?encoding=")


def test_os_errors_name_the_path(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("a\nb\n")
    with pytest.raises(DataError, match=r"cannot read .*plain.txt/inner.csv: .*plain.txt is a file, not a folder "
                                        r"\(ENOTDIR\)"):
        load_texts(str(plain / "inner.csv"))
    loop = tmp_path / "loop.csv"
    loop.symlink_to(loop)
    with pytest.raises(DataError, match=r"cannot read .*loop.csv: its symbolic links form a loop \(ELOOP\)"):
        load_texts(str(loop))
    broken = tmp_path / "broken.csv"
    broken.symlink_to(tmp_path / "gone.csv")
    with pytest.raises(DataError, match=r"broken.csv is a symbolic link to .*gone.csv, which does not exist"):
        load_texts(str(broken))


def test_permission_denied_names_the_path(tmp_path, monkeypatch):
    path = tmp_path / "secret.txt"
    path.write_text("a\nb\n")

    def denied(self):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)  # root reads anything, so the error is simulated
    with pytest.raises(DataError, match=r"cannot read .*secret.txt: permission denied \(EACCES\): make the file"):
        load_texts(str(path))


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads unreadable files")
def test_an_unreadable_file_names_the_path(tmp_path):
    path = tmp_path / "locked.txt"
    path.write_text("a\nb\n")
    path.chmod(0)
    try:
        with pytest.raises(DataError, match=r"cannot read .*locked.txt: permission denied \(EACCES\)"):
            load_texts(str(path))
    finally:
        path.chmod(0o600)


# --- collapsed vectors -----------------------------------------------------------------------------------

def collapsed(rng, scale=1e-9, dtype=np.float64):
    return (np.ones((50, 8)) + scale * rng.standard_normal((50, 8))).astype(dtype)


def test_collapsed_vectors_warn_in_every_public_entry_point(rng):
    x = collapsed(rng)
    calls = [lambda: M.uniformity(x), lambda: M.mean_cosine(x), lambda: M.effective_rank(x),
             lambda: M.isoscore(x), lambda: M.eigenspectrum(x), lambda: M.confidence_interval("effective_rank", x),
             lambda: M.confidence_intervals(["uniformity", "effective_rank"], x),
             lambda: M.SpectralAccumulator().update(x).compute()]
    for call in calls:
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            call()
        hits = [w for w in got if issubclass(w.category, M.CollapsedEmbeddingsWarning)]
        assert len(hits) == 1, [str(w.message) for w in got]  # once per call, not once per replicate
        assert re.search(r"x: all 50 rows are collapsed: their spread around their mean is \S+e-(09|10) of their "
                         r"norm, below 1e-06 \(float32 rounding level\)", str(hits[0].message))
        assert "Check the encoder and pooling" in str(hits[0].message)
        assert hits[0].filename == __file__  # points at the caller's line


def test_float32_rounding_level_spread_is_collapsed(rng):
    with pytest.warns(M.CollapsedEmbeddingsWarning, match="float32 rounding level"):
        M.effective_rank(collapsed(rng, 1e-7, np.float32))


def test_ordinary_and_anisotropic_vectors_do_not_warn(rng):
    x = rng.standard_normal((200, 16))
    cone = x * 0.01 + 5.0  # mean cosine near 1, yet a real spread
    with warnings.catch_warnings():
        warnings.simplefilter("error", M.CollapsedEmbeddingsWarning)
        M.confidence_intervals(["uniformity", "effective_rank"], x)
        M.confidence_intervals(["uniformity", "effective_rank"], cone)
        M.paired_difference("effective_rank", x, cone)


def test_intervals_of_identical_vectors_name_the_real_problem():
    x = np.tile(np.arange(1.0, 9.0), (50, 1))
    with pytest.warns(M.CollapsedEmbeddingsWarning, match="all 50 rows are identical"):
        ci = M.confidence_interval("uniformity", x)
    assert ci.low == ci.high
    assert "all 50 jackknife replicates equal (zero-width interval)" in ci.method
    assert "collapsed input: x: all 50 rows are identical (zero spread)" in ci.method
    with pytest.warns(M.CollapsedEmbeddingsWarning), \
            pytest.raises(ValueError, match=r"got 50 rows with zero covariance \(all identical\)"):
        M.confidence_interval("effective_rank", x)  # all 50 rows, not a replicate's 47
    with pytest.warns(M.CollapsedEmbeddingsWarning, match="x_b: all 50 rows are identical"):
        diff = M.paired_difference("uniformity", np.random.default_rng(0).standard_normal((50, 8)), x)
    assert "collapsed input: x_b" in diff.method


def test_nearly_identical_vectors_have_intervals_that_say_so(rng):
    with pytest.warns(M.CollapsedEmbeddingsWarning):
        cis = M.confidence_intervals(["uniformity", "effective_rank"], collapsed(rng))
    for ci in cis.values():
        assert "collapsed input: x: all 50 rows are collapsed" in ci.method


def test_too_few_rows_for_the_default_groups_says_it_is_the_default(rng):
    with pytest.raises(ValueError, match=r"groups: expected at most n = 3 groups \(one row each\), got 20 \(the "
                                         r"default\)\. Pass groups=3 or fewer"):
        M.confidence_interval("effective_rank", rng.standard_normal((3, 8)))


def test_a_probe_that_cannot_run_says_why_and_the_analysis_goes_on(tiny_bert_dir, tmp_path):
    import embedgeom as eg
    from embedgeom.measure import ProbeNotRunWarning

    path = tmp_path / "few.csv"
    path.write_text("text,label\n" + "".join(f"text number {i} here,{i % 2}\n" for i in range(8)))
    with pytest.warns(ProbeNotRunWarning, match=r"few: the classification probe is not run: labels: expected at "
                                                r"least 10 labelled items for 5-fold CV, got 8"):
        res = eg.analyze(tiny_bert_dir, str(path), poolings="mean", cache=False, device="cpu", dtype="float32")
    assert "got 8" in res.tasks["few"]["probes_not_run"]["classification"]
    assert not [r for r in res.probes if r["probe"] == "classification"]
    assert res.metrics  # the geometry is still measured


def test_collapsed_vector_warnings_name_the_task_pooling_and_layer(tmp_path):
    from embedgeom.data import load_texts
    from embedgeom.encoding import Embeddings
    from embedgeom.measure import Collected, measure_task
    from embedgeom.metrics import CollapsedEmbeddingsWarning
    from embedgeom.options import AnalysisOptions

    path = tmp_path / "same.txt"
    path.write_text("".join(f"row {i}\n" for i in range(12)))
    ts = load_texts(str(path))
    x = np.ones((12, 8), dtype=np.float32)  # every text at one point: collapsed to float32 rounding
    emb = Embeddings({("cls", 2): x}, n=12, num_layers=2)
    with pytest.warns(CollapsedEmbeddingsWarning, match=r"^same/cls/layer 2: "):
        measure_task("same", ts, emb, 2, AnalysisOptions.create(probes=False), None, Collected())
