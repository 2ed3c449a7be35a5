"""Corpus specs -> documents.

* ``sample:wiki|bbc|lee|polarity|all`` — the offline sample suite (:func:`embedgeom.samples.sample_documents`).
* a local ``.txt`` file — if it contains a blank line, documents are the blank-line-separated blocks (line breaks
  inside a block are kept); otherwise every non-empty line is a document.
* a local ``.jsonl`` file — one JSON object per line with a ``data.text_field`` ("text") string.
* ``.txt`` and ``.jsonl`` are decoded strictly, as ``embedgeom analyze`` reads its data files: UTF-8 by default (a
  byte-order mark is dropped), another encoding with ``?encoding=NAME`` after the path (``notes.txt?encoding=cp1252``).
  The whole file is checked when the corpus is opened, before any work: a byte that does not decode is reported
  with the file, its line and byte offset, and the fix. A non-default encoding is part of the corpus digest.
* a local ``.parquet`` file — the ``data.text_field`` ("text") column (needs pyarrow).
* ``hf:NAME[:CONFIG]`` — a Hugging Face ``datasets`` dataset, split ``train``, streamed (needs the hub: offline
  it fails with a clear error). ``data.max_documents`` caps how many documents are read.

A :class:`Corpus` carries a content digest, which is what identifies the corpus of a run (``--resume`` compares
it, not the spelling of the path): sha256 of the file bytes plus format, text field and document cap (local
files: a relative path, an absolute path or a symlink to the same bytes give the same digest; any edit changes
it), of the documents (samples), or of the dataset name, config, text field and document cap (``hf:``, whose
content cannot be hashed before streaming it — so a dataset re-published on the hub under the same name and
config is not detected; pin a local copy when that matters).
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from urllib.parse import parse_qsl

from .errors import TrainerError, fail

SAMPLE_NAMES: tuple[str, ...] = ("wiki", "bbc", "lee", "polarity", "all")
FILE_SUFFIXES: tuple[str, ...] = (".txt", ".jsonl", ".parquet")
_SPEC_HELP = ("sample:wiki|bbc|lee|polarity|all, a .txt/.jsonl/.parquet file, or hf:NAME[:CONFIG] "
              "(e.g. hf:wikimedia/wikipedia:20231101.en)")


@dataclass(frozen=True)
class Corpus:
    """A readable corpus: ``documents()`` yields each document's text, in a fixed order."""

    spec: str
    digest: str
    documents: Callable[[], Iterator[str]]


def open_corpus(spec: str | os.PathLike, *, text_field: str = "text", max_documents: int = 0) -> Corpus:
    """Resolve a corpus spec (see the module docstring); raises :class:`TrainerError` on a bad spec."""
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise fail("corpus", _SPEC_HELP, repr(spec), "Pass e.g. --corpus sample:wiki.")
    cap = max_documents if max_documents > 0 else None
    if spec.startswith("sample:"):
        return _sample_corpus(spec, cap)
    if spec.startswith("hf:"):
        return _hf_corpus(spec, text_field, cap)
    base, options = _split_options(spec)
    path = Path(base).expanduser()
    if path.suffix.lower() not in FILE_SUFFIXES:
        raise fail("corpus", _SPEC_HELP, repr(spec), "Use one of the listed forms (file suffix decides the format).")
    if not path.is_file():
        raise fail("corpus", "an existing file", f"{spec!r} (not found)", "Check the path.")
    suffix = path.suffix.lower()
    codec = _codec(options, suffix, spec)
    extra = f"{suffix}|{text_field}|{max_documents}" + ("" if codec == "utf-8" else f"|encoding={codec}")
    digest = _file_digest(path, extra=extra)
    if suffix != ".parquet":
        check_encoding(path, codec, base)
    if suffix == ".txt":
        reader = lambda: _txt_documents(path, codec)  # noqa: E731
    elif suffix == ".jsonl":
        reader = lambda: _jsonl_documents(path, text_field, codec)  # noqa: E731
    else:
        reader = lambda: _parquet_documents(path, text_field)  # noqa: E731
    return Corpus(spec, digest, lambda: islice(reader(), cap))


def _split_options(spec: str) -> tuple[str, dict[str, str]]:
    """``PATH?encoding=NAME`` -> (``PATH``, ``{"encoding": NAME}``); a spec naming an existing file is taken whole
    (a file name may contain ``?``)."""
    if "?" not in spec or Path(spec).expanduser().is_file():
        return spec, {}
    base, query = spec.split("?", 1)
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - {"encoding"})
    if unknown or not query:
        raise fail("corpus", "PATH or PATH?encoding=NAME", repr(spec),
                   f"The only option of a corpus file is encoding (got {', '.join(unknown) or 'an empty query'}).")
    return base, options


def _codec(options: dict[str, str], suffix: str, spec: str) -> str:
    """The canonical codec name of ``?encoding=`` (default utf-8); refused for .parquet (Arrow text is Unicode)."""
    if "encoding" not in options:
        return "utf-8"
    if suffix == ".parquet":
        raise fail("corpus", "?encoding= only on a .txt or .jsonl file", repr(spec),
                   "Parquet stores Unicode text; drop ?encoding=.")
    try:
        return codecs.lookup(options["encoding"]).name
    except LookupError:
        raise fail("corpus", "an encoding Python knows after ?encoding=", f"{options['encoding']!r} in {spec!r}",
                   "Pass a codec name such as utf-8, cp1252 or latin-1.") from None


def _python_codec(codec: str) -> str:
    """utf-8 reads as utf-8-sig: a byte-order mark is dropped, as analyze does."""
    return "utf-8-sig" if codec == "utf-8" else codec


def check_encoding(path: Path, codec: str, base: str) -> None:
    """Decode ``path`` strictly with ``codec`` in one streaming pass; the first byte that does not decode raises
    :class:`TrainerError` naming the file, the line, the byte offset and the fix (``?encoding=``)."""
    decoder = codecs.getincrementaldecoder(_python_codec(codec))("strict")
    offset, lines = 0, 1
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            pending = decoder.getstate()[0]
            try:
                decoder.decode(block)
            except UnicodeDecodeError as err:
                data = pending + block
                at = offset - len(pending) + err.start
                line = lines + data[:err.start].count(b"\n") - pending.count(b"\n")
                raise _decode_error(path, codec, base, data[err.start], at, line) from None
            offset += len(block)
            lines += block.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as err:
            data = err.object
            raise _decode_error(path, codec, base, data[err.start], offset - len(data) + err.start,
                                lines - data[err.start:].count(b"\n")) from None


def _decode_error(path: Path, codec: str, base: str, byte: int, offset: int, line: int) -> TrainerError:
    other = "cp1252" if codec == "utf-8" else "utf-8"
    label = "UTF-8" if codec == "utf-8" else codec
    return TrainerError(f"corpus: {path} is not {label} (invalid byte 0x{byte:02x} at line {line}, byte offset "
                        f"{offset:,}): pass --corpus '{base}?encoding={other}' (or the file's encoding), or convert "
                        "the file to UTF-8.")


def _sample_corpus(spec: str, cap: int | None) -> Corpus:
    from embedgeom.samples import SampleSuiteMissing, sample_documents

    name = spec.split(":", 1)[1]
    if name not in SAMPLE_NAMES:
        raise fail("corpus", f"sample:{'|'.join(SAMPLE_NAMES)}", repr(spec), "Pick one of the listed samples.")
    try:
        docs = sample_documents(name)[:cap]
    except SampleSuiteMissing as err:
        raise TrainerError(f"corpus {spec!r}: {err}") from None
    h = hashlib.sha256()
    for d in docs:
        h.update(d.encode("utf-8", "replace"))
        h.update(b"\x00")
    return Corpus(spec, h.hexdigest(), lambda: iter(docs))


def _file_digest(path: Path, extra: str) -> str:
    """sha256 of ``extra`` then the file's bytes (:func:`embedgeom.storage.file_digest`)."""
    from embedgeom.storage import file_digest

    return file_digest(path, prefix=extra.encode())


def _txt_documents(path: Path, codec: str = "utf-8") -> Iterator[str]:
    text = path.read_bytes().decode(_python_codec(codec))
    if re.search(r"\n[ \t\r]*\n", text):
        for block in re.split(r"\n[ \t\r]*\n", text):
            block = block.strip()
            if block:
                yield block
    else:
        for line in text.splitlines():
            line = line.strip()
            if line:
                yield line


def _jsonl_documents(path: Path, text_field: str, codec: str = "utf-8") -> Iterator[str]:
    with open(path, encoding=_python_codec(codec), newline=None) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise fail(f"corpus {path.name} line {lineno}", "a JSON object", f"invalid JSON ({err.msg})",
                           "Fix or remove that line.") from None
            text = obj.get(text_field) if isinstance(obj, dict) else None
            if not isinstance(text, str):
                raise fail(f"corpus {path.name} line {lineno}", f"a string field {text_field!r}",
                           f"{type(text).__name__ if text is not None else 'no such field'}",
                           "Set data.text_field to the field that holds the text.")
            if text.strip():
                yield text


def _parquet_documents(path: Path, text_field: str) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise fail("corpus", "pyarrow to read .parquet", "pyarrow is not installed", "pip install pyarrow") from None
    pf = pq.ParquetFile(path)
    if text_field not in pf.schema_arrow.names:
        raise fail(f"corpus {path.name}", f"a column {text_field!r}", f"columns {pf.schema_arrow.names}",
                   "Set data.text_field to the text column.")
    for batch in pf.iter_batches(columns=[text_field], batch_size=4096):
        for text in batch.column(0).to_pylist():
            if isinstance(text, str) and text.strip():
                yield text


def _hf_corpus(spec: str, text_field: str, cap: int | None) -> Corpus:
    parts = spec[3:].split(":")
    if not parts[0] or len(parts) > 2:
        raise fail("corpus", "hf:NAME[:CONFIG]", repr(spec), "Use e.g. hf:wikimedia/wikipedia:20231101.en.")
    name, config = parts[0], (parts[1] if len(parts) == 2 and parts[1] else None)
    offline = any(os.environ.get(v, "").lower() in ("1", "true", "yes")
                  for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))
    if offline:
        raise fail("corpus", "a reachable Hugging Face hub for hf: specs", f"{spec!r} with HF_HUB_OFFLINE set",
                   "Use a local .txt/.jsonl/.parquet file or sample:wiki offline.")
    try:
        import datasets
    except ImportError:
        raise fail("corpus", "the 'datasets' package for hf: specs", "it is not installed",
                   "pip install datasets, or use a local file.") from None
    try:
        stream = datasets.load_dataset(name, config, split="train", streaming=True)
    except Exception as err:  # network, missing dataset, bad config: all reported the same way
        first = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise fail("corpus", "a dataset streamable from the Hugging Face hub", f"{spec!r} ({first})",
                   "Check the name/config and the network, or use a local file offline.") from None

    def documents() -> Iterator[str]:
        for row in islice(stream, cap):
            text = row.get(text_field)
            if not isinstance(text, str):
                raise fail(f"corpus {spec}", f"a string field {text_field!r}", f"fields {sorted(row)}",
                           "Set data.text_field.")
            if text.strip():
                yield text

    return Corpus(spec, hf_digest(name, config, text_field, cap), documents)


def hf_digest(name: str, config: str | None, text_field: str, cap: int | None) -> str:
    """The identity of an ``hf:`` corpus: its canonical spec (``hf:NAME`` or ``hf:NAME:CONFIG``, so ``hf:x:`` is
    ``hf:x``), text field and document cap — not its content, which is only known after streaming it."""
    canonical = f"hf:{name}:{config}" if config else f"hf:{name}"
    return hashlib.sha256(f"{canonical}|{text_field}|{cap}".encode()).hexdigest()
