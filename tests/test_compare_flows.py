"""Comparisons beyond two models at one pooling: two poolings of one model, a result against itself, colliding
labels, three models, and a trainer run's checkpoints as a trajectory."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import embedgeom as eg
from embedgeom import metrics as M
from embedgeom.cli import app

runner = CliRunner()
KW = {"data": "sample:polarity,sample:lee", "max_texts": 60, "cache": False, "dtype": "float32", "device": "cpu"}


@pytest.fixture(scope="module")
def res_all(tiny_bert_dir):
    return eg.analyze(tiny_bert_dir, poolings="mean,max", name="tiny", **KW)


def test_pooling_comparison_is_paired_on_the_same_texts(res_all):
    cmp = eg.compare(res_all, poolings=("mean", "max"))
    assert cmp.options["kind"] == "poolings" and (cmp.a, cmp.b) == ("tiny:mean", "tiny:max")
    row = next(r for r in cmp.differences if r["task"] == "polarity" and r["name"] == "effective_rank")
    assert (row["pooling"], row["pooling_b"]) == ("mean", "max")
    x_mean, x_max = res_all.embedding("polarity", "mean", 2), res_all.embedding("polarity", "max", 2)
    expected = M.paired_difference("effective_rank", x_mean, x_max, groups=20, seed=0)  # b - a
    assert row["diff"] == pytest.approx(M.effective_rank(x_max) - M.effective_rank(x_mean), rel=1e-9)
    assert row["diff"] == pytest.approx(expected.value, rel=1e-9)
    assert row["low"] == pytest.approx(expected.low, rel=1e-9) and row["high"] == pytest.approx(expected.high, rel=1e-9)
    sim = next(r for r in cmp.similarity if r["task"] == "polarity" and r["name"] == "linear_cka")
    assert sim["value"] == pytest.approx(M.linear_cka(x_mean, x_max), rel=1e-9)


def test_pooling_comparison_errors(res_all):
    with pytest.raises(ValueError, match="'cls' was not measured"):
        eg.compare(res_all, poolings=("mean", "cls"))
    with pytest.raises(ValueError, match="two different poolings"):
        eg.compare(res_all, poolings=("mean", "mean"))
    # with a second result, a's first pooling is paired with b's second: the same result twice is its two poolings
    twice = eg.compare(res_all, res_all, poolings=("mean", "max"))
    once = eg.compare(res_all, poolings=("mean", "max"))
    assert [(r["name"], r["diff"]) for r in twice.differences if r["kind"] == "metric"] == [
        (r["name"], r["diff"]) for r in once.differences if r["kind"] == "metric"]


def test_a_result_compared_with_itself_is_refused(res_all, tiny_bert_dir):
    with pytest.raises(ValueError, match="same embeddings as a"):
        eg.compare(res_all, res_all)
    mean_only = eg.analyze(tiny_bert_dir, poolings="mean", **KW)  # the same model analysed twice
    with pytest.raises(ValueError, match="same embeddings as a"):
        eg.compare(res_all, mean_only)


@pytest.fixture(scope="module")
def three(tmp_path_factory, res_all):
    from tests.fixtures import make_tiny_bert

    root = tmp_path_factory.mktemp("three")
    out = [res_all]
    for seed in (5, 6):
        out.append(eg.analyze(make_tiny_bert(root / f"m{seed}", seed=seed), poolings="mean,max", name="tiny", **KW))
    for i, r in enumerate(out):
        r.save(root / f"r{i}")
    return root, out


def test_colliding_labels_are_labelled_apart(three):
    _, (a, b, _) = three
    cmp = eg.compare(a, b)
    assert (cmp.a, cmp.b) == ("tiny (a)", "tiny (b)")


def test_cli_three_models_combined_table_and_csv_with_similarity(three):
    root, results = three
    r = runner.invoke(app, ["compare", *(str(root / f"r{i}") for i in range(3))])
    assert r.exit_code == 0, r.output
    assert "all models" in r.stdout and r.stdout.count("tiny") >= 3
    r = runner.invoke(app, ["compare", *(str(root / f"r{i}") for i in range(3)), "--format", "csv"])
    assert r.exit_code == 0, r.output
    frame = pd.read_csv(io.StringIO(r.stdout))
    assert set(frame["table"]) == {"differences", "similarity", "models"}  # models: the combined table
    assert {"linear_cka", "knn_overlap"} <= set(frame.loc[frame["table"] == "similarity", "name"])
    cka = frame[(frame["table"] == "similarity") & (frame["name"] == "linear_cka") & (frame["task"] == "polarity")
                & (frame["pooling"] == "max")].iloc[0]
    xa, xb = results[0].embedding("polarity", "max", 2), results[1].embedding("polarity", "max", 2)
    assert cka["value"] == pytest.approx(M.linear_cka(xa, xb), rel=1e-6)


def test_cli_pooling_comparison(three):
    root, _ = three
    r = runner.invoke(app, ["compare", str(root / "r0"), "--poolings", "mean,max", "--format", "json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["options"]["kind"] == "poolings" and data["b"] == "tiny:max"
    r = runner.invoke(app, ["compare", str(root / "r0"), "--poolings", "mean,max"])
    assert r.exit_code == 0 and "mean→max" in r.stdout
    r = runner.invoke(app, ["compare", str(root / "r0"), str(root / "r1"), "--poolings", "mean,max", "--format",
                            "json"])
    assert r.exit_code == 0, r.output  # two models: the first's mean against the second's max
    data = json.loads(r.stdout)
    assert data["options"]["kind"] == "models" and data["b"].endswith(":max")
    r = runner.invoke(app, ["compare", str(root / "r0"), str(root / "r1"), str(root / "r2"), "--poolings", "mean,max"])
    assert r.exit_code == 1 and "expected one model with --poolings" in r.output


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    import trainer
    from tests.trainer.conftest import SMALL

    out = tmp_path_factory.mktemp("run") / "mlm"
    trainer.run("mlm", "tiny", "sample:polarity", out, steps=6, device="cpu",
                overrides=[*SMALL, "train.ckpt_every=2", "train.keep_last=10", "train.eval_every=100",
                           "train.log_every=2"])
    return out


def test_trajectory_over_checkpoints(tiny_run, tmp_path):
    results = eg.analyze_checkpoints(tiny_run, "all", data="sample:polarity", max_texts=40, poolings="mean",
                                     probes=False, cache=False, device="cpu")
    steps = [r.checkpoint["trajectory"]["step"] for r in results]
    assert steps == [2, 4, 6]
    assert [r.name for r in results] == [f"mlm@{s}" for s in steps]
    assert {r.checkpoint["trajectory"]["objective"] for r in results} == {"mlm"}
    hashes = {r.tasks["polarity"]["content_hash"] for r in results}
    assert len(hashes) == 1  # the same texts at every step
    assert len({r.checkpoint["content_hash"] for r in results}) == 3  # three different weight sets
    picked = eg.analyze_checkpoints(tiny_run, "every:2", data="sample:polarity", max_texts=40, poolings="mean",
                                    probes=False, cache=False, device="cpu")
    assert [r.checkpoint["trajectory"]["step"] for r in picked] == [2, 6]
    with pytest.raises(ValueError, match=r"steps \[5\] are not among"):
        eg.analyze_checkpoints(tiny_run, [5], data="sample:polarity")
    r = runner.invoke(app, ["analyze", str(tiny_run), "--checkpoints", "4,6", "--data", "sample:polarity",
                            "--max-texts", "40", "--pooling", "mean", "--no-probes", "--no-cache", "--out",
                            str(tmp_path / "traj"), "--format", "csv"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "traj").iterdir() if p.is_dir()) == ["step-0000004", "step-0000006"]
    loaded = eg.AnalysisResult.load(tmp_path / "traj" / "step-0000006")
    assert loaded.checkpoint["trajectory"]["step"] == 6
    frame = pd.read_csv(io.StringIO(r.stdout))
    assert set(frame["model"]) == {"mlm@4", "mlm@6"}

    rep = runner.invoke(app, ["report", str(tmp_path / "traj"), "--out", str(tmp_path / "rep"), "--no-pdf"])
    assert rep.exit_code == 0, rep.output
    assert any("trajectory" in p.name for p in (tmp_path / "rep").glob("*.png"))
    assert np.isfinite(frame.loc[frame["name"] == "uniformity", "value"]).all()


def test_short_reprs(res_all, tiny_encoder):
    text = repr(res_all)
    assert text.startswith("AnalysisResult('tiny'") and "poolings=['max', 'mean']" in text and len(text) < 300
    page = res_all._repr_html_()
    er = res_all.value("polarity", "max", 2, "effective_rank")["value"]
    assert f"{er:.4g}" in page and page.count("<tr>") == 1 + len(res_all.measured())
    cmp = eg.compare(res_all, poolings=("mean", "max"))
    assert repr(cmp).startswith("ComparisonResult('tiny:max' − 'tiny:mean'") and "significant" in repr(cmp)
    enc_text = repr(tiny_encoder)
    assert "layers=2" in enc_text and "hidden=32" in enc_text and len(enc_text) < 300
    emb = eg.encode(tiny_encoder, "one text", poolings=("mean",))
    assert repr(emb) == "Embeddings(n=1, poolings=['mean'], layers=[2], dim=[32], compute_dtype='float32')"


@pytest.fixture(scope="module")
def seed_groups(tmp_path_factory):
    from tests.fixtures import make_tiny_bert

    root = tmp_path_factory.mktemp("seeds")
    kw = {**KW, "data": "sample:polarity", "poolings": "mean", "probes": False}
    a = [eg.analyze(make_tiny_bert(root / f"a{s}", seed=s), name=f"mlm-s{s}", **kw) for s in range(3)]
    b = [eg.analyze(make_tiny_bert(root / f"b{s}", seed=10 + s, layers=1), name=f"hyb-s{s}", **kw) for s in range(3)]
    for i, r in enumerate(a + b):
        r.save(root / f"r{i}")
    return root, a, b


def test_seed_groups_give_a_between_seed_interval(seed_groups):
    from scipy.stats import t

    _, a, b = seed_groups
    cmp = eg.compare_groups(a, b)
    assert cmp.options["kind"] == "groups" and (cmp.a, cmp.b) == ("mlm-s (x3)", "hyb-s (x3)")
    row = next(r for r in cmp.differences if r["name"] == "effective_rank")
    per_seed = [next(r for r in eg.compare(x, y).differences if r["name"] == "effective_rank")["diff"]
                for x, y in zip(a, b, strict=True)]
    assert row["per_seed"] == pytest.approx(per_seed) and row["diff"] == pytest.approx(np.mean(per_seed))
    half = t.ppf(0.975, 2) * np.std(per_seed, ddof=1) / np.sqrt(3)
    mean = np.mean(per_seed)
    assert row["low"] == pytest.approx(mean - half) and row["high"] == pytest.approx(mean + half)
    assert row["seeds_agree"] == sum(np.sign(per_seed) == np.sign(np.mean(per_seed)))
    singles = [next(r for r in eg.compare(x, y).differences if r["name"] == "effective_rank")
               for x, y in zip(a, b, strict=True)]
    assert row["per_seed_a"] == pytest.approx([x.value("polarity", "mean", row["layer"], "effective_rank")["value"]
                                               for x in a])
    assert row["per_seed_low"] == pytest.approx([r["low"] for r in singles])
    assert row["per_seed_high"] == pytest.approx([r["high"] for r in singles])
    assert row["seeds_significant"] == sum(r["significant"] and np.sign(r["diff"]) == np.sign(mean) for r in singles)
    with pytest.raises(ValueError, match="as many runs as group_a"):
        eg.compare_groups(a, b[:2])


def test_seed_groups_p_values_are_the_between_seed_t_test_and_take_a_correction(seed_groups):
    from scipy.stats import ttest_1samp

    from embedgeom.multiple_testing import adjust_pvalues

    _, a, b = seed_groups
    cmp = eg.compare_groups(a, b, correction="holm")
    rows = cmp.differences
    for r in rows:  # the one-sample t-test of the per-seed differences, on seeds - 1 degrees of freedom
        assert r["df"] == 2
        if np.std(r["per_seed"]) > 0:
            assert r["p"] == pytest.approx(ttest_1samp(r["per_seed"], 0.0).pvalue, rel=1e-9)
        else:  # every seed gave the same difference (e.g. an integer rank): 0 when it is not 0, else 1
            assert r["p"] == (1.0 if r["diff"] == 0 else 0.0)
    p = np.array([r["p"] for r in rows])
    assert [r["p_adjusted"] for r in rows] == pytest.approx(adjust_pvalues(p, "holm").tolist(), rel=1e-12)
    assert [r["significant"] for r in rows] == [q < 0.05 for q in adjust_pvalues(p, "holm")]
    assert cmp.options["correction"] == "holm" and cmp.options["family_size"] == len(rows)


def test_cli_seed_groups_with_a_glob(seed_groups):
    root, _, _ = seed_groups
    r = runner.invoke(app, ["compare", "--group-a", f"{root}/r0,{root}/r1,{root}/r2",
                            "--group-b", str(root / "r[345]"), "--format", "json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["options"]["seeds"] == 3 and data["options"]["members"]["b"] == ["hyb-s0", "hyb-s1", "hyb-s2"]
    table = runner.invoke(app, ["compare", "--group-a", f"{root}/r0,{root}/r1,{root}/r2",
                                "--group-b", str(root / "r[345]"), "--correction", "bh"])
    assert table.exit_code == 0 and " of 3 " in table.stdout
    assert "correction: bh over the family = all" in table.stdout and "p (BH)" in table.stdout
    bad = runner.invoke(app, ["compare", "--group-a", str(root / "nothing*"), "--group-b", str(root / "r[345]")])
    assert bad.exit_code == 1 and "matches nothing" in bad.output


def test_a_damaged_checkpoint_is_left_out_of_a_trajectory_with_a_warning(tiny_run, tmp_path):
    import shutil

    from embedgeom.loading import CheckpointSkippedWarning, trainer_checkpoints

    run = tmp_path / "mlm"
    shutil.copytree(tiny_run, run)
    with open(run / "checkpoints" / "step-0000004" / "model.safetensors", "ab") as fh:
        fh.write(b"appended")  # no longer the file the trainer's manifest recorded
    with pytest.warns(CheckpointSkippedWarning, match=r"left out checkpoints/step-0000004 \(step 4\): "
                                                      r"model\.safetensors: edited"):
        picked = trainer_checkpoints(run, "all")
    assert [c.step for c in picked] == [2, 6]
