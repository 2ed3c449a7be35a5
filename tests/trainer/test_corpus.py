"""Corpus specs: samples, .txt (both layouts), .jsonl, .parquet, hf: offline, and the errors."""

from __future__ import annotations

import json

import pytest

from trainer.corpus import open_corpus
from trainer.errors import TrainerError


def test_txt_blank_line_blocks(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("first doc line one\nline two\n\n\nsecond doc\n  \nthird\n")
    assert list(open_corpus(p).documents()) == ["first doc line one\nline two", "second doc", "third"]


def test_txt_one_document_per_line(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("alpha beta\ngamma\n")
    c = open_corpus(str(p))
    assert list(c.documents()) == ["alpha beta", "gamma"]
    assert len(c.digest) == 64


def test_jsonl_and_max_documents(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text("".join(json.dumps({"text": f"doc {i}", "id": i}) + "\n" for i in range(5)) + "\n")
    assert list(open_corpus(p, max_documents=3).documents()) == ["doc 0", "doc 1", "doc 2"]
    q = tmp_path / "d.jsonl"
    q.write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(TrainerError, match="line 1: expected a string field 'text'"):
        list(open_corpus(q).documents())
    assert list(open_corpus(q, text_field="body").documents()) == ["x"]


def test_parquet(tmp_path):
    import pyarrow as pa  # a dependency of the required 'datasets' package
    import pyarrow.parquet as pq

    p = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": ["one", "", "two"], "n": [1, 2, 3]}), p)
    assert list(open_corpus(p).documents()) == ["one", "two"]


def test_sample_polarity():
    c = open_corpus("sample:polarity")
    docs = list(c.documents())
    assert len(docs) == 200 and all(isinstance(d, str) and d for d in docs)


def test_digest_changes_with_content(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("a\nb\n")
    d1 = open_corpus(p).digest
    p.write_text("a\nc\n")
    assert open_corpus(p).digest != d1


def test_hf_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TrainerError, match="corpus: expected a reachable Hugging Face hub"):
        open_corpus("hf:wikimedia/wikipedia:20231101.en")


@pytest.mark.parametrize(("spec", "match"), [
    ("sample:nope", "sample:wiki\\|bbc"),
    ("corpus.csv", "a .txt/.jsonl/.parquet file"),
    ("missing.txt", "not found"),
    ("", "Pass e.g. --corpus sample:wiki"),
    ("hf:", "hf:NAME\\[:CONFIG\\]"),
])
def test_bad_specs(spec, match):
    with pytest.raises(TrainerError, match=match):
        open_corpus(spec)


def test_same_file_by_any_path_has_one_digest_and_hf_specs_are_canonical(tmp_path, monkeypatch):
    import hashlib

    from trainer.corpus import hf_digest

    p = tmp_path / "c.jsonl"
    p.write_text(json.dumps({"text": "alpha"}) + "\n")
    (tmp_path / "link.jsonl").symlink_to(p)
    monkeypatch.chdir(tmp_path)
    digests = {open_corpus(s).digest for s in (p, str(p), "c.jsonl", "./c.jsonl", "link.jsonl", f"../{tmp_path.name}"
                                               "/c.jsonl")}
    assert len(digests) == 1
    assert open_corpus(p, max_documents=1).digest not in digests  # the cap is part of what was trained on
    # hf: identity is the canonical spec, text field and cap (unchanged for canonical specs: caches stay valid)
    assert hf_digest("org/set", None, "text", None) == hashlib.sha256(b"hf:org/set|text|None").hexdigest()
    assert hf_digest("org/set", "", "text", None) == hf_digest("org/set", None, "text", None)
    assert hf_digest("org/set", "en", "text", 100) == hashlib.sha256(b"hf:org/set:en|text|100").hexdigest()
    assert len({hf_digest("org/set", c, f, n) for c in (None, "en") for f in ("text", "body") for n in (None, 5)}) == 8
