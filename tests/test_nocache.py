"""``--no-cache`` / ``analyze(cache=False)`` writes nothing under the cache root: no embeddings, no cleaned
samples, no memoised content hashes."""

from __future__ import annotations

import bz2

import pytest
from typer.testing import CliRunner

import embedgeom as eg
from embedgeom import samples
from embedgeom.cli import app
from embedgeom.embedding_cache import EmbeddingCache, cache_writes, cache_writes_enabled

runner = CliRunner()

_WORDS = ("the river city market bridge winter summer music school garden history science people village road "
          "train station harbour festival library museum painter writer tower castle forest").split()


def _paragraph(seed: int) -> str:
    return " ".join(_WORDS[(seed * 7 + i * 3) % len(_WORDS)] for i in range(30)) + "."


def _page(title: str, paragraphs: list[str]) -> str:
    text = "\n\n".join(paragraphs)
    return (f"<page><title>{title}</title><ns>0</ns><id>1</id><revision><id>2</id>"
            f"<text xml:space=\"preserve\">{text}</text></revision></page>")


@pytest.fixture
def small_wiki(tmp_path, monkeypatch):
    """sample:wiki read from a six-article dump (the real one takes half a minute to clean)."""
    data = tmp_path / "gensim-data"
    data.mkdir()
    pages = [_page(f"Article {a}", [_paragraph(a * 4 + p) for p in range(4)]) for a in range(6)]
    xml = ('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">' + "".join(pages) + "</mediawiki>")
    (data / samples.WIKI_FILE).write_bytes(bz2.compress(xml.encode()))
    monkeypatch.setattr(samples, "gensim_data_dir", lambda: data)
    monkeypatch.setattr(samples, "_wiki_memo", {})
    return data


@pytest.fixture
def empty_cache_root(tmp_path, monkeypatch):
    root = tmp_path / "cache-root"
    monkeypatch.setenv("EMBEDGEOM_CACHE", str(root))
    return root


def _written(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_cli_analyze_no_cache_writes_nothing_under_the_cache_root(tiny_bert_dir, small_wiki, empty_cache_root,
                                                                  tmp_path):
    res = runner.invoke(app, ["analyze", str(tiny_bert_dir), "--data", "sample:wiki", "--no-cache", "--no-probes",
                              "--groups", "5", "--dtype", "float32", "--layer", "all", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert _written(empty_cache_root) == []
    assert (tmp_path / "o" / "result.json").is_file()  # the result itself is still saved where asked


def test_cli_analyze_with_the_cache_writes_there(tiny_bert_dir, small_wiki, empty_cache_root):
    """The control: the same command with the cache writes samples, a content hash and embeddings."""
    res = runner.invoke(app, ["analyze", str(tiny_bert_dir), "--data", "sample:wiki", "--no-probes", "--groups", "5",
                              "--dtype", "float32"])
    assert res.exit_code == 0, res.output
    tops = {p.split("/")[0] for p in _written(empty_cache_root)}
    assert tops == {"samples", "hashes", "embeddings"}


@pytest.mark.parametrize("protocol", ["default", "both"])
def test_library_analyze_cache_false_writes_nothing(tiny_bert_dir, small_wiki, empty_cache_root, protocol):
    res = eg.analyze(tiny_bert_dir, data="sample:wiki", cache=False, probes=False, groups=5, dtype="float32",
                     protocol=protocol)
    assert res.tasks and _written(empty_cache_root) == []
    assert cache_writes_enabled()  # the switch is scoped to the call


def test_cache_writes_switch_is_scoped_and_stops_embedding_puts(tmp_path):
    import numpy as np

    cache = EmbeddingCache(tmp_path / "c")
    key = EmbeddingCache.key({"k": 1})
    arr = np.ones((2, 3), dtype=np.float32)
    with cache_writes(False):
        assert not cache_writes_enabled()
        with cache_writes(True):  # an inner block cannot turn writes back on
            assert not cache_writes_enabled()
        assert cache.put(key, arr, {}) is None
    assert cache_writes_enabled()
    assert not (tmp_path / "c").exists()
    assert cache.put(key, arr, {}) is not None
    np.testing.assert_array_equal(cache.get(key), arr)
