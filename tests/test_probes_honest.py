"""Honest probes: every probe row states its chance level and flags a score below it (with a warning and a CLI
marker); the logistic probe's C is stated (fixed) or chosen by nested CV; a numeric target on single texts is a
regression probe; ``?task=`` and ``?header=none&columns=`` file options; results saved before chance levels load.

References are closed forms, hand cases and plain scikit-learn / scipy computations."""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm, spearmanr
from typer.testing import CliRunner

from embedgeom.cli import app
from embedgeom.data import DataError, load_rows, load_texts
from embedgeom.probes import (
    C_GRID,
    ProbeScore,
    chance_levels,
    classification_probe,
    classification_skip_reason,
    cosine_similarity_probe,
    lexical_probe,
    parse_probe_c,
    regression_probe,
    ridge_probe,
)

runner = CliRunner()


def twins(k: int, d: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """2k near-identical vectors in k twin pairs with opposite labels (which twin is 1 is random): the twin left
    in the training folds leaks the opposite label, so the probe scores well below chance."""
    centres = rng.standard_normal((k, d))
    x = np.repeat(centres, 2, axis=0) + 0.01 * rng.standard_normal((2 * k, d))
    first = rng.integers(0, 2, k)
    y = np.stack([first, 1 - first], axis=1).ravel()
    return x, y


def write_twins_csv(path: Path, k: int = 30, seed: int = 0) -> Path:
    """Texts in twin pairs that differ in their last word ('red' or 'blue'), with opposite labels; which twin is
    1 is random, so the last word says nothing about the label and only the leak through the folds remains."""
    from tests.fixtures import WORDS

    rng = np.random.default_rng(seed)
    words = [w for w in WORDS if len(w) > 2]
    lines = []
    for _ in range(k):
        base = " ".join(rng.choice(words, 4, replace=False))
        label = int(rng.integers(0, 2))
        lines += [f"{base} red,{label}", f"{base} blue,{1 - label}"]
    path.write_text("text,label\n" + "\n".join(lines) + "\n")
    return path


# --- chance levels ---------------------------------------------------------------------------------------------

def test_chance_levels_by_hand_and_against_constant_predictors():
    from sklearn.metrics import f1_score, matthews_corrcoef

    y = np.array([0, 0, 0, 1])
    got = chance_levels(y, positive=1)
    assert got["accuracy"] == 0.75
    assert got["macro_f1"] == pytest.approx(3 / 7)  # 2p/(1+p)/K with p = 3/4, K = 2
    assert got["macro_f1"] == pytest.approx(f1_score(y, np.zeros(4, dtype=int), average="macro"))
    assert got["f1"] == pytest.approx(0.4)  # always 'positive': 2q/(1+q) with q = 1/4
    assert got["f1"] == pytest.approx(f1_score(y, np.ones(4, dtype=int)))
    assert got["mcc"] == 0.0 == matthews_corrcoef(y, np.zeros(4, dtype=int))
    three = chance_levels(np.repeat([0, 1, 2], [60, 30, 30]))
    assert three["accuracy"] == 0.5 and three["macro_f1"] == pytest.approx(2 / 9) and "f1" not in three
    with pytest.raises(ValueError, match=r"^y: expected a non-empty 1-D array"):
        chance_levels(np.array([]))


def test_classification_rows_carry_the_chance_of_their_scored_items(rng):
    y = np.repeat([0, 1, 2], [60, 30, 30])
    x = rng.standard_normal((120, 8)) * 0.1 + np.eye(8)[y] * 5
    rows = {s.metric: s for s in classification_probe(x, y)}
    assert rows["accuracy"].chance == 0.5
    assert rows["macro_f1"].chance == pytest.approx(2 / 9)
    assert rows["mcc"].chance == 0.0
    assert not any(s.below_chance() for s in rows.values())
    # pair features on dense pairs: straddling pairs are not scored, and chance is that of the scored ones
    from itertools import combinations

    from embedgeom.probes import pair_features

    pairs = np.array(list(combinations(range(30), 2)))
    z = rng.standard_normal((30, 6))
    labels = (rng.random(len(pairs)) < 0.3).astype(int)
    got = {s.metric: s for s in classification_probe(pair_features(z[pairs[:, 0]], z[pairs[:, 1]]), labels,
                                                     pairs=pairs, positive=1)}
    scored = labels[np.isfinite(got["accuracy"].per_item)]
    assert len(scored) < len(labels)
    share = np.bincount(scored).max() / len(scored)
    assert got["accuracy"].chance == pytest.approx(share)
    q = scored.mean()
    assert got["f1"].chance == pytest.approx(2 * q / (1 + q))


def test_similarity_regression_and_lexical_probes_state_their_chance(rng):
    u, v = rng.standard_normal((2, 40, 4))
    assert cosine_similarity_probe(u, v, rng.standard_normal(40)).chance == 0.0
    assert ridge_probe(rng.standard_normal((40, 3)), rng.standard_normal(40)).chance == 0.0
    assert [s.chance for s in regression_probe(rng.standard_normal((40, 3)), rng.standard_normal(40))] == [0, 0]
    texts = [" ".join(w for w in ("alpha", "beta", "gamma") if rng.random() < 0.5) + " filler" for _ in range(60)]
    assert lexical_probe(rng.standard_normal((60, 3)), texts).chance == 0.5


def test_below_chance_is_the_upper_end_of_the_normal_interval():
    s = ProbeScore("linear", "accuracy", 0.4, 0.05, 100, "", chance=0.5)
    assert 0.4 + norm.ppf(0.975) * 0.05 < 0.5 < 0.4 + norm.ppf(0.995) * 0.05  # 0.498 and 0.529
    assert s.below_chance(0.95) and not s.below_chance(0.99)
    assert not ProbeScore("linear", "macro_f1", 0.1, math.nan, 100, "", chance=0.5).below_chance()
    assert not ProbeScore("gap", "semantic_minus_lexical", -0.9, 0.01, 100, "").below_chance()  # no chance level
    with pytest.raises(ValueError, match=r"^confidence: expected a level strictly between 0 and 1"):
        s.below_chance(1.0)


def test_a_leaking_probe_scores_below_chance_and_is_flagged(rng):
    x, y = twins(40, 64, rng)
    acc = classification_probe(x, y)[0]
    assert acc.chance == 0.5 and acc.value < 0.3
    assert acc.below_chance(0.95)


def test_measure_warns_once_per_below_chance_row_naming_the_set(tmp_path):
    from embedgeom.encoding import Embeddings
    from embedgeom.measure import Collected, ProbeBelowChanceWarning, measure_task
    from embedgeom.options import AnalysisOptions

    rng = np.random.default_rng(0)
    x, y = twins(40, 64, rng)
    path = tmp_path / "leak.csv"
    words = ("red", "blue", "green", "cat", "dog", "sun")
    path.write_text("text,label\n" + "".join(f"{words[i % 6]} {words[i // 6 % 6]} {i},{int(v)}\n"
                                             for i, v in enumerate(y)))
    ts = load_texts(str(path))
    emb = Embeddings({("mean", 2): x.astype(np.float32)}, n=len(y), num_layers=2)
    out = Collected()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        measure_task("leak", ts, emb, 2, AnalysisOptions.create(), None, out)
    below = [w for w in caught if issubclass(w.category, ProbeBelowChanceWarning)]
    flagged = [r for r in out.probe_rows if r["below_chance"]]
    assert [(r["probe"], r["metric"]) for r in flagged] == [("linear", "accuracy")]
    assert len(below) == 1
    row = flagged[0]
    upper = row["value"] + norm.ppf(0.975) * row["stderr"]
    assert str(below[0].message) == (
        f"leak/mean/layer 2: the linear probe's accuracy is {row['value']:.4g} (upper end of its 95% interval "
        f"{upper:.4g}), below chance 0.5 (what a label-blind predictor scores on the same 80 items). A probe below "
        "chance usually means a label leak through the folds (e.g. duplicates with opposite labels), a collapsed "
        "embedding, or too few items; do not read it as a difference between models.")
    every = {(r["probe"], r["metric"]): r for r in out.probe_rows}
    assert every[("linear", "macro_f1")]["chance"] == pytest.approx(2 * 0.5 / 1.5 / 2)
    assert math.isnan(every[("gap", "semantic_minus_lexical")]["chance"])
    assert all("chance" in r and isinstance(r["below_chance"], bool) for r in out.probe_rows)


@pytest.fixture(scope="module")
def leak_and_easy(tmp_path_factory):
    """A twins file (below chance) and a file whose label is its last word (far above chance)."""
    root = tmp_path_factory.mktemp("honest")
    leak = write_twins_csv(root / "twins.csv")
    easy = root / "easy.csv"
    text = leak.read_text().splitlines()[1:]
    easy.write_text("text,label\n" + "".join(f"{t.rsplit(',', 1)[0]},{int(t.split(',')[0].endswith('red'))}\n"
                                             for t in text))
    return leak, easy


def test_analysis_rows_frames_and_saved_results_carry_chance(tiny_bert_dir, leak_and_easy, tmp_path):
    import embedgeom as eg
    from embedgeom.measure import ProbeBelowChanceWarning

    leak, easy = leak_and_easy
    with pytest.warns(ProbeBelowChanceWarning, match=r"^twins/mean/layer 2: the linear probe's accuracy is "):
        res = eg.analyze(tiny_bert_dir, [str(leak), str(easy)], poolings="mean", cache=False, device="cpu",
                         dtype="float32")
    frame = res["twins"]
    probe = frame[frame["kind"] == "probe"].set_index("name")
    assert probe.loc["linear:accuracy", "chance"] == 0.5 and bool(probe.loc["linear:accuracy", "below_chance"])
    assert probe.loc["linear:mcc", "chance"] == 0.0 and probe.loc["lexical:balanced_accuracy", "chance"] == 0.5
    easy_rows = res["easy"]
    acc = easy_rows[easy_rows["name"] == "linear:accuracy"].iloc[0]
    assert acc["value"] > 0.9 and acc["chance"] == 0.5 and not acc["below_chance"]
    assert "chance" in res.to_frame().columns
    res.save(tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "result.json").read_text())
    assert all("chance" in r and "below_chance" in r for r in saved["probes"])
    back = eg.AnalysisResult.load(tmp_path / "out")
    assert [r["below_chance"] for r in back.probes] == [r["below_chance"] for r in res.probes]


def test_cli_table_states_chance_and_marks_a_probe_below_it(tiny_bert_dir, leak_and_easy):
    leak, easy = leak_and_easy
    res = runner.invoke(app, ["analyze", str(tiny_bert_dir), "--data", f"{leak},{easy}", "--pooling", "mean",
                              "--no-cache", "--dtype", "float32"])
    assert res.exit_code == 0, res.output
    out = " ".join(res.stdout.split())
    assert "probe (chance)" in out
    assert re.search(r"linear accuracy 0\.\d+ \(below chance 0\.50\)", out), res.stdout
    assert re.search(r"linear accuracy (1|0\.9\d*) \(chance 0\.50\)", out), res.stdout
    assert "below chance 0.5 (what a label-blind predictor scores" in " ".join(res.output.split())


# --- the logistic probe's C --------------------------------------------------------------------------------

def test_fixed_c_is_stated_and_matches_plain_sklearn(rng):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.repeat([0, 1], 40)
    x = rng.standard_normal((80, 6)) + 0.8 * y[:, None]
    for c in (1.0, 0.05):
        acc = classification_probe(x, y, seed=3, c=c)[0]
        ref = cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000)), x, y,
                                cv=StratifiedKFold(5, shuffle=True, random_state=3))
        assert acc.value == pytest.approx(np.mean(ref == y))
        assert f"logistic regression C={c:g} fixed" in acc.method


def test_nested_c_is_chosen_inside_each_outer_fold_only(rng):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.repeat([0, 1, 2], 30)
    x = rng.standard_normal((90, 10)) + 0.7 * np.eye(10)[y]
    acc = classification_probe(x, y, seed=1, c="nested")[0]
    pred = np.empty(90, dtype=int)
    chosen = []
    for train, test in StratifiedKFold(5, shuffle=True, random_state=1).split(x, y):
        search = GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
                              {"logisticregression__C": list(C_GRID)},
                              cv=StratifiedKFold(3, shuffle=True, random_state=1)).fit(x[train], y[train])
        chosen.append(search.best_params_["logisticregression__C"])
        pred[test] = search.predict(x[test])
    assert acc.value == pytest.approx(np.mean(pred == y))
    assert "C by nested CV over C in {0.001, 0.01, 0.1, 1, 10, 100}, 3-fold inner stratified CV" in acc.method
    assert f"(chosen per outer fold: {', '.join(f'{c:g}' for c in chosen)})" in acc.method


def test_probe_c_option_is_validated_recorded_and_stated_in_every_row(tmp_path):
    from embedgeom.encoding import Embeddings
    from embedgeom.measure import Collected, measure_task
    from embedgeom.options import AnalysisOptions

    assert AnalysisOptions().probe_c == 1.0
    assert AnalysisOptions.create(probe_c="nested").probe_c == "nested"
    assert AnalysisOptions.create(probe_c="0.5").probe_c == 0.5 == parse_probe_c(0.5)
    assert AnalysisOptions.create(probe_c="nested").record()["probe_c"] == "nested"
    for bad in ("big", -1, 0, True, math.inf, None):
        with pytest.raises(ValueError, match=r"^probe_c: expected a positive (finite )?number or 'nested', got "
                                             r".*--probe-c nested\.$") as err:
            AnalysisOptions.create(probe_c=bad)
        assert "\n" not in str(err.value)
    rng = np.random.default_rng(2)
    y = np.repeat([0, 1], 20)
    path = tmp_path / "c.csv"
    path.write_text("text,label\n" + "".join(f"text {i},{v}\n" for i, v in enumerate(y)))
    emb = Embeddings({("mean", 1): (rng.standard_normal((40, 5)) + y[:, None]).astype(np.float32)}, n=40,
                     num_layers=1)
    out = Collected()
    measure_task("c", load_texts(str(path)), emb, 1, AnalysisOptions.create(probe_c=0.25), None, out)
    linear = [r for r in out.probe_rows if r["probe"] == "linear"]
    assert linear and all("logistic regression C=0.25 fixed" in r["method"] for r in linear)


# --- numeric targets on single texts: regression -------------------------------------------------------------

def _score_file(path: Path, n: int = 100, seed: int = 0) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(seed)
    from tests.fixtures import WORDS

    scores = np.round(rng.uniform(0, 5, n), 3)
    while len(np.unique(scores)) < n:
        scores = np.round(rng.uniform(0, 5, n), 3)
    texts = [" ".join(rng.choice(WORDS, 6)) + f" {i}" for i in range(n)]
    path.write_text("text,score\n" + "".join(f"{t},{s}\n" for t, s in zip(texts, scores, strict=True)))
    return path, scores


def test_a_numeric_score_on_single_texts_is_a_regression_target(tmp_path):
    path, scores = _score_file(tmp_path / "scored.csv")
    ts = load_texts(str(path))
    assert ts.label_task == "regression" and ts.labels.dtype == np.float64
    np.testing.assert_array_equal(ts.labels, scores)
    assert ts.label_names is None and ts.card()["label_task"] == "regression"
    assert load_rows(str(path)).task == "regression"
    from embedgeom.measure import probes_not_run

    assert probes_not_run(ts) == {}


def test_the_regression_probe_matches_plain_ridgecv_and_spearmanr(tiny_bert_dir, tmp_path):
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import r2_score
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import embedgeom as eg

    path, scores = _score_file(tmp_path / "scored.csv")
    res = eg.analyze(tiny_bert_dir, str(path), poolings="mean", cache=False, device="cpu", dtype="float32", seed=4)
    layer = res.measured()[0][2]
    x = res.embedding("scored", "mean", layer).astype(np.float64)
    pred = cross_val_predict(make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13))), x, scores,
                             cv=KFold(5, shuffle=True, random_state=4))
    rows = {(r["probe"], r["metric"]): r for r in res.probes}
    assert ("linear", "accuracy") not in rows  # no classification probe on 100 'classes'
    assert rows[("ridge", "spearman")]["value"] == pytest.approx(spearmanr(pred, scores).statistic, abs=1e-10)
    assert rows[("ridge", "r2")]["value"] == pytest.approx(r2_score(scores, pred), abs=1e-10)
    assert rows[("ridge", "spearman")]["chance"] == 0.0 == rows[("ridge", "r2")]["chance"]
    assert rows[("ridge", "spearman")]["stderr"] > 0 and rows[("ridge", "r2")]["n"] == 100
    items = res.arrays[f"items|scored|mean|{layer}|ridge|spearman"]
    np.testing.assert_allclose(items, pred, rtol=1e-10)
    assert res.structure("scored", "labels").tolist() == scores.tolist()


def test_regression_probe_refuses_what_it_cannot_fit(rng):
    with pytest.raises(ValueError, match=r"^scores: expected scores that vary, got the one value 2"):
        regression_probe(rng.standard_normal((20, 3)), np.full(20, 2.0))
    with pytest.raises(ValueError, match=r"^scores: expected at least 10 scored items"):
        regression_probe(rng.standard_normal((6, 3)), np.arange(6.0))


def test_task_option_overrides_the_rule(tmp_path):
    path, _ = _score_file(tmp_path / "scored.csv")
    forced = load_texts(f"{path}?task=classification")
    assert forced.label_task == "classification" and len(forced.label_names) == 100
    why = classification_skip_reason(forced.labels)
    assert "100 classes over 100 items" in why and "?task=regression" in why
    small = tmp_path / "small.csv"
    small.write_text("text,label\n" + "".join(f"text {i},{i % 4}\n" for i in range(40)))
    assert load_texts(str(small)).label_task == "classification"
    as_scores = load_texts(f"{small}?task=regression")
    assert as_scores.label_task == "regression" and as_scores.labels.tolist() == [float(i % 4) for i in range(40)]
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("text,text_pair,label\n" + "".join(f"a {i},b {i},{i % 20 / 4}\n" for i in range(40)))
    assert load_texts(str(pairs)).pair_task == "regression"
    assert load_texts(f"{pairs}?task=classification").pair_task == "classification"


@pytest.mark.parametrize(("content", "query", "match"), [
    ("text,label\na,1\nb,2\n", "?task=ordinal",
     r"^task: expected classification or regression, got 'ordinal' in .*: pass .*\?task=regression for numeric "),
    ("text,label\na,1\nb,pos\n", "?task=regression",
     r"^task: regression needs numeric labels, but .* line 3 has label = 'pos': remove \?task=regression"),
    ("text\na\nb\n", "?task=regression", r"^task: applies to a file with a label column, but .* has none"),
])
def test_task_option_misuse_is_refused_in_one_line(tmp_path, content, query, match):
    path = tmp_path / "f.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=match) as err:
        load_texts(f"{path}{query}")
    assert "\n" not in str(err.value)


# --- delimited files without a header row ---------------------------------------------------------------------

def test_a_headerless_tsv_names_its_columns(tmp_path):
    path = tmp_path / "plain.tsv"
    path.write_text("the cat sat\t1\na dog ran\t0\nthe sun\t1\n")
    ts = load_texts(f"{path}?header=none&columns=text,label")
    assert ts.texts == ("the cat sat", "a dog ran", "the sun")  # the first row is data, not a header
    assert ts.labels.tolist() == [1, 0, 1] and ts.label_names == ("0", "1")
    assert "no header row" in ts.description
    other = load_texts(f"{path}?header=none&columns=body,topic&text=body&label=topic")
    assert other.texts == ts.texts and other.labels.tolist() == [1, 0, 1]
    headed = tmp_path / "headed.csv"
    headed.write_text("text\nx\ny\n")
    assert load_texts(f"{headed}?header=first").texts == ("x", "y")  # the default, stated: row 1 names columns


@pytest.mark.parametrize(("suffix", "content", "query", "match"), [
    (".tsv", "a\t1\n", "?header=none", r"^header: .* has no header row \(\?header=none\), so its columns need names, "
                                      r"got none: pass .*\?header=none&columns=text,label"),
    (".tsv", "a\t1\n", "?columns=text,label", r"^columns: names the columns of a file without a header row, but "),
    (".tsv", "a\t1\n", "?header=no&columns=text,label", r"^header: expected first or none, got 'no'"),
    (".tsv", "a\t1\n", "?header=none&columns=text,text", r"^columns: the name 'text' is given twice"),
    (".tsv", "a\t1\nb\n", "?header=none&columns=text,label",
     r"^data: .* line 2 has 1 field\(s\) but \?columns= names 2 \(text, label\)"),
    (".jsonl", '{"text": "a"}\n', "?header=none&columns=text", r"^header: applies to a \.csv or \.tsv file"),
])
def test_header_option_misuse_is_refused_in_one_line(tmp_path, suffix, content, query, match):
    path = tmp_path / f"f{suffix}"
    path.write_text(content)
    with pytest.raises(DataError, match=match) as err:
        load_texts(f"{path}{query}")
    assert "\n" not in str(err.value)


# --- results saved before chance levels ---------------------------------------------------------------------

def test_a_result_saved_without_chance_still_loads(tmp_path):
    import embedgeom as eg

    probes = [{"task": "t", "pooling": "mean", "layer": 2, "probe": "linear", "metric": "accuracy", "value": 0.42,
               "stderr": 0.035, "n": 200, "method": "5-fold CV out-of-fold predictions"}]
    metrics = [{"task": "t", "pooling": "mean", "layer": 2, "metric": "uniformity", "value": -1.0, "stderr": 0.1,
                "low": -1.2, "high": -0.8, "n": 200, "confidence": 0.95, "method": "exact", "replicates": 200}]
    old = eg.AnalysisResult({"spec": "old-model"}, {"t": {"n_items": 200}}, {"confidence": 0.95}, metrics, probes)
    old.save(tmp_path / "old")
    raw = json.loads((tmp_path / "old" / "result.json").read_text())
    assert "chance" not in raw["probes"][0]  # written as results were before the chance column
    back = eg.AnalysisResult.load(tmp_path / "old")
    row = back.probes[0]
    assert math.isnan(row["chance"]) and row["below_chance"] is False and row["value"] == 0.42
    frame = back.to_frame()
    assert "chance" in frame.columns and "below_chance" in frame.columns
