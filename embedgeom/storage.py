"""Where embedgeom writes: the cache root, atomic file writes, safe file names, writability checks, and
atomic result directories with content hashes.

* :func:`cache_root`: where derived files go (cleaned samples, embeddings, tokenised corpora, hashes).
* :func:`atomic_write_text`: a file written beside its target and renamed into place.

* :func:`safe_name` turns any label that came from data (a task name, a model label) into a plain file name:
  no separators, no ``..``, no leading dot, bounded length; nothing derived from data can point outside the
  directory it is joined to (:func:`inside` checks that once more where a path is built).
* :func:`check_writable` tells, before any work starts, whether an output directory can be created and written.
* :func:`write_result_dir` writes a result directory atomically: every file goes into a fresh sibling directory,
  the manifest (``result.json`` / ``comparison.json``) records the sha256 of each file, and the directory is
  swapped into place by renames. A reader sees the old result, the new one, or (for an instant, or after a kill
  between the two renames) none - never files of two runs mixed. :func:`verify_files` is what ``load`` checks.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Subdirectory of an analysis that holds its reference-protocol companion (``analyze --protocol both``).
PAPER_DIR = "paper"
#: Entries a result directory may hold (a previous result's are replaced as a whole; anything else is kept).
RESULT_FILES = ("result.json", "comparison.json", "arrays.npz", "metrics.csv", "metrics.parquet",
                "differences.csv", "differences.parquet", "similarity.csv", "similarity.parquet", PAPER_DIR)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def cache_root() -> Path:
    """``$EMBEDGEOM_CACHE`` if set, else ``$XDG_CACHE_HOME/embedgeom``, else ``~/.cache/embedgeom``."""
    env = os.environ.get("EMBEDGEOM_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "embedgeom"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to a unique temporary file beside ``path`` and rename it into place: readers never see a
    partial file, and concurrent writers (threads or processes) never share a temporary name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def safe_name(label: Any, *, default: str = "item", max_length: int = 60) -> str:
    """``label`` as a file-name component: characters outside ``A-Za-z0-9._-`` become ``-``, runs of dots
    collapse, no leading dot or dash; ``default`` when nothing is left."""
    s = _UNSAFE.sub("-", str(label))
    s = re.sub(r"\.{2,}", ".", s).strip(".-")[:max_length].strip(".-")
    return s or default


def unique_name(name: str, used: set[str]) -> str:
    """``name``, or ``name-2``, ``name-3``, ... whichever is not in ``used`` yet (and record it there)."""
    out, k = name, 2
    while out in used:
        out, k = f"{name}-{k}", k + 1
    used.add(out)
    return out


def inside(root: Path, name: str) -> Path:
    """``root / name``, refusing any result that would leave ``root`` (defence in depth behind :func:`safe_name`)."""
    path = (root / name).resolve()
    if path.parent != root.resolve():
        raise ValueError(f"out: refusing to write {name!r} outside {root}: names derived from data must be plain "
                         "file names.")
    return root / name


def display_path(spec: Any) -> str:
    """How a checkpoint path is shown in reports: relative to the working directory when inside it; the part after
    ``site-packages/`` for a model shipped in a Python package; otherwise the last two components. Never a
    machine's absolute path."""
    text = str(spec)
    p = Path(text)
    if not p.is_absolute():
        return text
    with contextlib.suppress(ValueError):
        return str(p.relative_to(Path.cwd()))
    if "site-packages" in p.parts:
        return "/".join(p.parts[p.parts.index("site-packages") + 1:])
    return "/".join(p.parts[-2:])


def check_writable(path: str | os.PathLike, option: str = "--out") -> Path:
    """Raise one clear ValueError, before any work, if directory ``path`` cannot be created and written."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise ValueError(f"{option}: expected a directory, got the existing file {p}. Choose another {option}.")
    anchor = p
    while not anchor.exists():
        if anchor.parent == anchor:
            break
        anchor = anchor.parent
    if not anchor.is_dir():
        raise ValueError(f"{option}: cannot create {p}: {anchor} is a file, not a directory. Choose another "
                         f"{option}.")
    try:
        fd, probe = tempfile.mkstemp(dir=anchor, prefix=".embedgeom-write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(f"{option}: cannot write in {anchor} ({err.strerror or err}). Choose a writable "
                         f"{option}.") from None
    return p


def file_digest(path: Path, prefix: bytes = b"") -> str:
    """sha256 of ``prefix`` followed by a file's bytes, read in 4 MiB blocks (the one file digest of embedgeom and
    its trainer)."""
    h = hashlib.sha256(prefix)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _check_target(d: Path, manifest: str) -> None:
    if d.exists() and not d.is_dir():
        raise ValueError(f"out: expected a directory, got the existing file {d}. Choose another directory.")
    if d.is_dir():
        entries = [e.name for e in d.iterdir()]
        if entries and not any(m in entries for m in ("result.json", "comparison.json")):
            shown = ", ".join(sorted(entries)[:3])
            raise ValueError(f"out: {d} exists and holds files that are not an embedgeom result ({shown}"
                             f"{', ...' if len(entries) > 3 else ''}). Choose a new or empty directory.")


def write_result_dir(directory: str | os.PathLike, manifest: str,
                     write: Callable[[Path], dict[str, Any]], dump: Callable[[Path, dict[str, Any]], None]) -> Path:
    """Atomically (re)place the result directory ``directory``.

    ``write(tmp)`` writes the data files into ``tmp`` and returns the manifest dict; the sha256 of every file it
    wrote is added under ``"files"`` and ``dump(path, manifest)`` writes it as ``manifest``. An existing result in
    ``directory`` is replaced as a whole; files in it that are not result files are carried over; a directory that
    holds anything else is refused.
    """
    d = Path(directory).expanduser()
    _check_target(d, manifest)
    d.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:12]
    tmp = d.parent / f".{d.name}.{tag}.partial"
    tmp.mkdir()
    old = None
    try:
        content = write(tmp)
        content["files"] = {f.name: file_digest(f) for f in sorted(tmp.iterdir()) if f.is_file()}
        dump(tmp / manifest, content)
        if d.exists():
            old = d.parent / f".{d.name}.{tag}.old"
            os.rename(d, old)
        os.rename(tmp, d)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not d.exists():
            os.rename(old, d)
        raise
    if old is not None:
        for entry in old.iterdir():  # the user's own files in a result directory survive the replacement
            if entry.name not in RESULT_FILES and not (d / entry.name).exists():
                with contextlib.suppress(OSError):
                    os.rename(entry, d / entry.name)
        shutil.rmtree(old, ignore_errors=True)
    return d


def verify_files(d: Path, manifest: str, files: dict[str, str] | None) -> None:
    """Check every file a manifest lists against its sha256 (manifests written before hashes existed list none)."""
    for name, digest in (files or {}).items():
        path = d / safe_name(name)
        if not path.is_file():
            raise ValueError(f"result: {path} is missing but {d / manifest} lists it. The directory is incomplete; "
                             "re-run the command that wrote it.")
        if file_digest(path) != digest:
            raise ValueError(f"result: {path} does not match {d / manifest} (content hash differs): the directory "
                             "mixes files of two runs. Re-run the command that wrote it.")
