"""Token-level geometry end to end on a real forward pass of a tiny BERT: the metrics equal a plain numpy computation
from Hugging Face hidden states, the jackknife replicates equal recomputation with each group of texts deleted, the
post-processing is fitted on all token states, results save/load, two models compare paired on the same texts, the
sink's memory is bounded by what it keeps, and the CLI and the report show it."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from typer.testing import CliRunner

import embedgeom as eg
from embedgeom.cli import app
from embedgeom.data import load_texts
from embedgeom.token_sink import LayerState, TokenSink, non_special_ids, plan_tokens
from tests.fixtures import WORDS

GROUPS = 4


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    rng = np.random.default_rng(7)
    common = WORDS[:12]  # frequent words: eligible ids in many texts
    lines = [" ".join(rng.choice(common if k % 2 else WORDS, size=int(rng.integers(6, 14)))) for k in range(26)]
    lines.append("hello")  # a text of one token: no intra-similarity of its own
    path = tmp_path_factory.mktemp("tok-data") / "texts.txt"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def hf_states(tiny_bert_dir, text_file):
    """Per text: its non-special token ids and every layer's hidden states of those tokens, from Hugging Face
    directly (one text at a time, no padding)."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    model = AutoModel.from_pretrained(tiny_bert_dir, attn_implementation="eager").eval()
    texts = list(load_texts(text_file).texts)
    out = []
    for t in texts:
        enc = tok(t, return_tensors="pt", return_special_tokens_mask=True)
        keep = ~enc["special_tokens_mask"][0].bool()
        with torch.no_grad():
            hs = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                       output_hidden_states=True).hidden_states
        out.append((enc["input_ids"][0][keep].numpy(), [h[0][keep].double().numpy() for h in hs]))
    return texts, out


@pytest.fixture(scope="module")
def result(tiny_encoder, text_file):
    return eg.token_geometry(tiny_encoder, text_file, groups=GROUPS, max_ids=1000, max_occurrences=1000,
                             postprocess="standardize", name="tiny")


def _cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _numpy_metrics(states, layer, keep_texts=None):
    """intra-similarity, self-similarity and MEV by their definitions, from per-text (ids, states)."""
    keep_texts = range(len(states)) if keep_texts is None else keep_texts
    intra = []
    for i in keep_texts:
        x = states[i][1][layer]
        if len(x) >= 2:
            m = x.mean(axis=0)
            intra.append(np.mean([_cos(r, m) for r in x]))
    ids = np.concatenate([states[i][0] for i in range(len(states))])
    text = np.concatenate([np.full(len(states[i][0]), i) for i in range(len(states))])
    rows = np.concatenate([states[i][1][layer] for i in range(len(states))])
    eligible = [t for t in np.unique(ids) if (ids == t).sum() >= 5 and len(np.unique(text[ids == t])) >= 2]
    kept = np.isin(text, list(keep_texts))
    ss, mev = [], []
    for t in eligible:
        occ = rows[(ids == t) & kept]
        if len(occ) < 2:
            continue
        ss.append(np.mean([_cos(a, b) for a, b in itertools.combinations(occ, 2)]))
        mev.append(PCA(n_components=1).fit(occ).explained_variance_ratio_[0])
    return float(np.mean(intra)), float(np.mean(ss)), float(np.mean(mev)), len(eligible)


def test_metrics_equal_numpy_from_hugging_face_hidden_states(result, hf_states, tiny_encoder):
    _texts, states = hf_states
    assert result.layers() == list(range(tiny_encoder.num_layers + 1))
    plan = plan_tokens([s[0].tolist() for s in states], groups=GROUPS, seed=0, max_ids=1000, max_occurrences=1000)
    for layer in result.layers():
        intra, ss, mev, n_ids = _numpy_metrics(states, layer)
        assert result.value("texts", layer, "intra_similarity")["value"] == pytest.approx(intra, abs=1e-5)
        assert result.value("texts", layer, "self_similarity")["value"] == pytest.approx(ss, abs=1e-5)
        assert result.value("texts", layer, "mev")["value"] == pytest.approx(mev, abs=1e-5)
        assert result.value("texts", layer, "self_similarity")["n"] == n_ids
        sample = np.stack([states[i][1][layer][plan.sample_ordinal[i]] for i in range(len(states))])
        aniso = np.mean([_cos(a, b) for a, b in itertools.permutations(sample, 2)])
        assert result.value("texts", layer, "anisotropy")["value"] == pytest.approx(aniso, abs=1e-5)
        adj = result.value("texts", layer, "adjusted_self_similarity")["value"]
        assert adj == pytest.approx(ss - aniso, abs=1e-5)
        norms = np.concatenate([np.linalg.norm(s[1][layer], axis=1) for s in states])
        assert result.value("texts", layer, "token_norm")["value"] == pytest.approx(norms.mean(), rel=1e-5)
        assert result.value("texts", layer, "token_norm_std")["value"] == pytest.approx(norms.std(), abs=1e-5)


def test_intervals_are_the_jackknife_over_groups_of_texts(result, hf_states):
    _texts, states = hf_states
    plan = plan_tokens([s[0].tolist() for s in states], groups=GROUPS, seed=0, max_ids=1000, max_occurrences=1000)
    layer = 1
    reps = {m: result.replicates("texts", layer, m) for m in ("intra_similarity", "self_similarity", "mev")}
    for g in range(GROUPS):
        keep = [i for i in range(len(states)) if plan.group[i] != g]
        intra, ss, mev, _ = _numpy_metrics(states, layer, keep)
        assert reps["intra_similarity"][g] == pytest.approx(intra, abs=1e-5)
        assert reps["self_similarity"][g] == pytest.approx(ss, abs=1e-5)
        assert reps["mev"][g] == pytest.approx(mev, abs=1e-5)
    row = result.value("texts", layer, "self_similarity")
    r = reps["self_similarity"]
    se = np.sqrt((GROUPS - 1) / GROUPS * ((r - r.mean()) ** 2).sum())
    assert row["stderr"] == pytest.approx(se) and row["replicates"] == GROUPS
    assert row["low"] < row["value"] < row["high"]
    assert "delete-a-group jackknife over texts (4 groups)" in row["method"]
    assert "exact over all pairs of all occurrences" in row["method"]


def test_postprocessing_is_fitted_on_all_token_states_and_reported_beside_the_raw(result, hf_states):
    _texts, states = hf_states
    assert result.postprocessings() == ["none", "standardize"]
    assert result.options["postprocess"] == "standardize"
    plan = plan_tokens([s[0].tolist() for s in states], groups=GROUPS, seed=0, max_ids=1000, max_occurrences=1000)
    layer = 2
    every = np.concatenate([s[1][layer] for s in states])
    std = (every - every.mean(0)) / every.std(0)  # standardised over every non-special token of the texts
    offsets = np.concatenate([[0], np.cumsum([len(s[0]) for s in states])])
    sample = std[offsets[:-1] + plan.sample_ordinal]
    aniso = np.mean([_cos(a, b) for a, b in itertools.permutations(sample, 2)])
    assert result.value("texts", layer, "anisotropy", "standardize")["value"] == pytest.approx(aniso, abs=1e-5)
    frame = result.to_frame()
    assert set(frame["postprocess"]) == {"none", "standardize"}
    assert len(frame[frame.postprocess == "none"]) == len(frame[frame.postprocess == "standardize"])


def test_frame_save_load_and_refusals(result, tmp_path):
    frame = result.to_frame()
    assert list(frame.columns[:13]) == ["model", "task", "layer", "postprocess", "metric", "value", "stderr", "low",
                                        "high", "n", "confidence", "method", "replicates"]
    assert set(frame["metric"]) == set(eg.metrics.TOKEN_METRICS)
    rogue = frame[(frame.metric == "rogue_share") & (frame.layer == 1) & (frame.postprocess == "none")].iloc[0]
    shares = result.rogue_shares("texts", 1)
    top = [int(i) for i in rogue["dimensions"].split()]
    assert top == list(np.argsort(-shares, kind="stable")[:3])
    assert rogue["value"] == pytest.approx(shares[top].sum())
    out = result.save(tmp_path / "tok")
    back = eg.TokenGeometryResult.load(out)
    assert back.metrics == json.loads(json.dumps(result.metrics))
    np.testing.assert_array_equal(back.replicates("texts", 1, "mev"), result.replicates("texts", 1, "mev"))
    data = json.loads((out / "tokens.json").read_text())
    data["metrics"][0]["value"] = 0.123
    (out / "tokens.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="changed after embedgeom wrote it"):
        eg.TokenGeometryResult.load(out)
    with pytest.raises(FileNotFoundError, match="tokens --out"):
        eg.TokenGeometryResult.load(tmp_path / "nothing")


def test_compare_two_models_paired_on_the_same_texts(result, tiny_encoder, text_file, tmp_path_factory):
    from tests.fixtures import make_tiny_bert

    other_dir = make_tiny_bert(tmp_path_factory.mktemp("tok-other"), seed=3)
    other = eg.token_geometry(other_dir, text_file, groups=GROUPS, max_ids=1000, max_occurrences=1000,
                              postprocess="standardize", device="cpu", name="other")
    cmp = eg.compare_tokens(result, other)
    assert cmp.options["kind"] == "tokens" and cmp.a == "tiny" and cmp.b == "other"
    row = next(r for r in cmp.differences if (r["layer"], r["name"], r["postprocess"]) == (2, "mev", "none"))
    want = other.value("texts", 2, "mev")["value"] - result.value("texts", 2, "mev")["value"]
    assert row["diff"] == pytest.approx(want)
    d = other.replicates("texts", 2, "mev") - result.replicates("texts", 2, "mev")
    assert row["stderr"] == pytest.approx(np.sqrt((GROUPS - 1) / GROUPS * ((d - d.mean()) ** 2).sum()))
    assert row["significant"] == (not row["low"] <= 0 <= row["high"])
    same = eg.compare_tokens(result, result)
    assert all(r["diff"] == 0 and r["stderr"] == 0 for r in same.differences if np.isfinite(r["diff"]))
    fewer = eg.token_geometry(tiny_encoder, text_file, groups=GROUPS, max_texts=10, layers=-1)
    with pytest.raises(ValueError, match="holds other texts than in a"):
        eg.compare_tokens(result, fewer)


def test_the_sink_keeps_only_what_the_metrics_need(tiny_encoder, text_file):
    texts = list(load_texts(text_file).texts)
    ids = non_special_ids(tiny_encoder.tokenizer, texts, tiny_encoder.max_length)
    plan = plan_tokens(ids, groups=3, seed=0, max_ids=2, max_occurrences=4)
    assert plan.kept_ids.size == 2 and plan.eligible > 2  # a seeded sample of the eligible ids
    assert plan.occ_id.size == 8 and plan.capped_ids == 2
    sink = TokenSink(plan, [0, 2], {"none": None})
    (states,), _ = eg.encoding.forward_to_sinks(tiny_encoder, texts, [sink], batch_size=5)
    assert set(states) == {(0, "none"), (2, "none")}
    st: LayerState = states[(2, "none")]
    d = 32
    assert st.sample.shape == (len(texts), d) and st.occ.shape == (8, d)
    assert st.id_sums.shape == (2 * 3, d)
    n_tokens = plan.n_tokens
    assert st.nbytes() < n_tokens * d * 4  # less than the token states of one layer
    # every occurrence of a kept id is summed (exact self-similarity), only the sampled ones are kept as rows
    assert int(st.id_counts.sum()) == int(np.isin(plan.ids, plan.kept_ids).sum())


@pytest.mark.parametrize(("kw", "match"), [
    ({"postprocess": "abtt:0"}, r"^postprocess: expected none, standardize, abtt:K"),
    ({"max_ids": 0}, r"^max_ids: expected an integer >= 1"),
    ({"layers": "last"}, r"^layers: expected 'all' or comma-separated integers"),
    ({"groups": 1}, r"^groups: expected an integer >= 2"),
    ({"colour": 1}, r"^colour: not a token-analysis option"),
])
def test_options_are_validated_before_any_work(kw, match):
    with pytest.raises(ValueError, match=match):
        eg.token_geometry("no/such/checkpoint", "sample:lee", **kw)


def test_cli_tokens_table_csv_out_and_report(tiny_bert_dir, text_file, tmp_path):
    runner = CliRunner()
    out, rep = tmp_path / "tok", tmp_path / "rep"
    res = runner.invoke(app, ["tokens", str(tiny_bert_dir), "--data", text_file, "--layer", "0,-1", "--groups", "3",
                              "--postprocess", "abtt:1", "--device", "cpu", "--out", str(out), "--report", str(rep),
                              "--format", "csv", "-q"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].startswith("model,task,layer,postprocess,metric,value,stderr,low,high,n")
    assert any(",abtt:1,anisotropy," in line for line in lines) and any(",none,mev," in line for line in lines)
    saved = eg.TokenGeometryResult.load(out)
    assert saved.layers() == [0, 2] and saved.options["postprocess"] == "abtt:1"
    index = (rep / "index.md").read_text()
    assert "Layer curves (raw)" in index and "Layer curves (after abtt:1)" in index and "Rogue dimensions" in index
    for link in [p.split("](")[1].rstrip(")") for p in index.split("![")[1:]]:
        assert (rep / link.split(")")[0]).is_file()
    table = runner.invoke(app, ["tokens", str(out), str(out), "-q"])
    assert table.exit_code == 0, table.output
    assert "intra" in table.stdout and "self − aniso" in table.stdout and "paired on the same texts" in table.stdout
    bad = runner.invoke(app, ["tokens", str(tiny_bert_dir), "--data", text_file, "--postprocess", "pca"])
    assert bad.exit_code != 0 and "postprocess: expected none, standardize, abtt:K" in bad.output
    # `embedgeom report` takes saved token results too (and refuses mixing them with sentence analyses)
    rep2 = tmp_path / "rep2"
    made = runner.invoke(app, ["report", str(out), "--out", str(rep2), "--no-pdf", "-q"])
    assert made.exit_code == 0, made.output
    assert "Layer curves (raw)" in (rep2 / "index.md").read_text()
    chosen = runner.invoke(app, ["report", str(out), "--out", str(tmp_path / "rep3"), "--layers", "last"])
    assert chosen.exit_code != 0 and "a token report draws every task and layer" in chosen.output


def test_metrics_command_lists_the_token_metrics():
    res = CliRunner().invoke(app, ["metrics"])
    assert res.exit_code == 0
    for name in eg.metrics.TOKEN_METRICS:
        assert name in res.stdout


def test_figures_draw_what_the_result_holds(result):
    from embedgeom import token_figures as F

    fig = F.layer_curves([result], "texts")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["self-similarity", "self-similarity − anisotropy", "intra-similarity",
                      "anisotropy (mean cosine)", "MEV"]
    line = fig.axes[4].get_lines()[0]
    assert list(line.get_xdata()) == result.layers()
    assert list(line.get_ydata()) == [result.value("texts", lay, "mev")["value"] for lay in result.layers()]
    bars = F.rogue_bars(result, "texts", layer=1)
    labels = [t.get_text() for t in bars.axes[0].get_xticklabels()][:3]
    assert labels == [str(i) for i in result.value("texts", 1, "rogue_share")["dimensions"]]
    before_after = F.postprocess_effect(result, "texts")
    assert [t.get_text() for t in before_after.axes[0].get_legend().get_texts()] == ["raw", "standardize"]
    with pytest.raises(ValueError, match="task: expected one of"):
        F.layer_curves([result], "wiki")


def test_pretrained_minilm_last_layer_equals_numpy(minilm_dir):
    from transformers import AutoModel, AutoTokenizer

    res = eg.token_geometry(minilm_dir, "sample:polarity", max_texts=30, layers=-1, groups=3, max_ids=1000,
                            max_occurrences=1000, device="cpu")
    tok = AutoTokenizer.from_pretrained(minilm_dir)
    model = AutoModel.from_pretrained(minilm_dir).eval()
    states = []
    for t in load_texts("sample:polarity", max_texts=30).texts:
        enc = tok(t, return_tensors="pt", return_special_tokens_mask=True, truncation=True, max_length=256)
        keep = ~enc["special_tokens_mask"][0].bool()
        with torch.no_grad():
            h = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        states.append((enc["input_ids"][0][keep].numpy(), [h[0][keep].double().numpy()]))
    intra, ss, mev, n_ids = _numpy_metrics(states, 0)
    last = res.layers()[-1]
    assert last == 6 and n_ids > 5
    assert res.value("polarity", last, "intra_similarity")["value"] == pytest.approx(intra, abs=1e-5)
    assert res.value("polarity", last, "self_similarity")["value"] == pytest.approx(ss, abs=1e-5)
    assert res.value("polarity", last, "mev")["value"] == pytest.approx(mev, abs=1e-5)
