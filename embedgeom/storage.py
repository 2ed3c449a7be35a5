"""Where embedgeom writes: the cache root, atomic file writes, safe file names, writability checks, and
atomic result directories with content hashes.

* :func:`cache_root`: where derived files go (cleaned samples, embeddings, tokenised corpora, hashes).
* :func:`atomic_write_text`: a file written beside its target and renamed into place.

* :func:`safe_name` turns any label that came from data (a task name, a model label) into a plain file name:
  no separators, no ``..``, no leading dot, bounded length; nothing derived from data can point outside the
  directory it is joined to (:func:`inside` checks that once more where a path is built).
* :func:`check_writable` tells, before any work starts, whether an output directory can be created and written.
* :func:`write_output` writes an output directory (an analysis, a comparison, a set of results, a report) whole
  or not at all: it is built in a fresh sibling directory and swapped in by renames, so an interrupt, a kill or a
  full disk leaves the previous output intact and nothing half-written. Its manifest (:func:`write_manifest`)
  records the sha256 of every file and of its own rows; :func:`check_manifest` is what ``load`` checks.
* :func:`prepare_output` decides, before any work, whether a directory may receive an output: only an empty
  directory or an earlier output of the same kind - recognised by its manifest, never by file names - is
  replaced; anything else is refused, a symbolic link is resolved (never replaced), ``.`` is refused, and what an
  interrupted write left behind is recovered or removed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: Subdirectory of an analysis that holds its reference-protocol companion (``analyze --protocol both``).
PAPER_DIR = "paper"
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


# --- outputs: recognised by their manifest, built beside the target, swapped in whole -----------------------

#: The format tags that mark a manifest as embedgeom's (and the kind of output each names).
ANALYSIS_FORMAT = "embedgeom-analysis"
COMPARISON_FORMAT = "embedgeom-comparison"
COLLECTION_FORMAT = "embedgeom-collection"
REPORT_FORMAT = "embedgeom-report"
TOKENS_FORMAT = "embedgeom-tokens"
OUTPUT_FORMATS = {ANALYSIS_FORMAT: "an analysis result (analyze --out)",
                  TOKENS_FORMAT: "a token-geometry result (tokens --out)",
                  COMPARISON_FORMAT: "a comparison (compare --out)",
                  COLLECTION_FORMAT: "a set of results (analyze --checkpoints --out, compare --out)",
                  REPORT_FORMAT: "a report (report --out)"}
#: The file names a manifest can have; which one an output uses is fixed by its kind.
MANIFEST_NAMES = {ANALYSIS_FORMAT: "result.json", COMPARISON_FORMAT: "comparison.json",
                  COLLECTION_FORMAT: "manifest.json", REPORT_FORMAT: "manifest.json", TOKENS_FORMAT: "tokens.json"}
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?:(?P<pid>\d+)-)?[0-9a-f]{8,12}\.(?P<kind>partial|old)$")
_OS_FIXES = {errno.ENOSPC: "free space on that device or choose another directory",
             errno.EDQUOT: "free space within your quota or choose another directory",
             errno.EACCES: "choose a directory you can write to",
             errno.EPERM: "choose a directory you can write to",
             errno.EROFS: "the file system is read-only; choose another directory",
             errno.ENOTDIR: "a component of the path is a file, not a directory; choose another path",
             errno.ELOOP: "the path contains a symbolic-link loop; choose another path",
             errno.ENAMETOOLONG: "choose a shorter path"}


class OutputError(ValueError):
    """An output directory that embedgeom refuses to write, or a write that failed (nothing was replaced)."""


def os_error_line(err: OSError, path: Any, doing: str = "write") -> str:
    """One line for an OS error: what, which path, the errno's name and meaning, and the fix."""
    where = err.filename if err.filename is not None else path
    code = errno.errorcode.get(err.errno or 0, "")
    what = err.strerror or str(err) or type(err).__name__
    fix = _OS_FIXES.get(err.errno or 0, "check the path and its permissions")
    return f"cannot {doing} {where}: {what}{f' ({code})' if code else ''}. Fix: {fix}."


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _canonical_hash(content: dict[str, Any]) -> str:
    body = {k: v for k, v in content.items() if k != "content_hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, allow_nan=True, separators=(",", ":"))
                          .encode("utf-8")).hexdigest()


def tree_digests(directory: Path, *, exclude: str = "") -> dict[str, str]:
    """sha256 of every regular file under ``directory`` (recursively), keyed by its relative POSIX path."""
    return {f.relative_to(directory).as_posix(): file_digest(f) for f in sorted(directory.rglob("*"))
            if f.is_file() and not f.is_symlink() and f.relative_to(directory).as_posix() != exclude}


def write_manifest(directory: Path, name: str, content: dict[str, Any]) -> dict[str, Any]:
    """Write ``content`` as the manifest ``directory/name``: it gains ``files`` (the sha256 of every other file in
    the tree) and ``content_hash`` (the sha256 of its own canonical JSON, rows included), so a file swapped in from
    another run or a value edited by hand is detected on load (:func:`check_manifest`). Returns what was written."""
    text = json.dumps({**content, "files": tree_digests(directory, exclude=name)}, default=_json_default,
                      allow_nan=True)
    sealed = json.loads(text)  # the hash is of what a reader will parse, not of the Python objects
    sealed["content_hash"] = _canonical_hash(sealed)
    (directory / name).write_text(json.dumps(sealed, indent=1, allow_nan=True) + "\n", encoding="utf-8")
    return sealed


def check_manifest(path: Path, data: dict[str, Any], *, require: tuple[str, ...], fix: str) -> None:
    """Refuse a manifest whose rows were edited after writing or whose files do not match it. ``require``: the
    entries its format version promises (``files`` from version 2 of results, ``content_hash`` from version 3);
    older versions are read without the checks they predate."""
    for key in require:
        if key not in data:
            raise ValueError(f"result: {path} has no {key!r} entry, which its format version requires: it was "
                             f"not written by embedgeom or was edited. Fix: {fix}.")
    if "content_hash" in data and data["content_hash"] != _canonical_hash(data):
        raise ValueError(f"result: {path} was changed after embedgeom wrote it (its content hash differs): its "
                         f"numbers cannot be trusted. Fix: {fix}.")
    files = data.get("files")
    if files is not None and not isinstance(files, dict):
        raise ValueError(f"result: {path} has a malformed 'files' entry. Fix: {fix}.")
    verify_files(path.parent, path.name, files)


def verify_files(d: Path, manifest: str, files: dict[str, str] | None) -> None:
    """Check every file a manifest lists (relative paths, no ``..``) against its sha256."""
    for name, digest in (files or {}).items():
        parts = str(name).split("/")
        if any(p != safe_name(p, default="") or not p for p in parts):
            raise ValueError(f"result: {d / manifest} lists {name!r}, which is not a plain relative path. Re-run "
                             "the command that wrote it.")
        path = d.joinpath(*parts)
        if not path.is_file():
            raise ValueError(f"result: {path} is missing but {d / manifest} lists it. The directory is incomplete; "
                             "re-run the command that wrote it.")
        if file_digest(path) != digest:
            raise ValueError(f"result: {path} does not match {d / manifest} (content hash differs): the directory "
                             "mixes files of two runs or a file was edited. Re-run the command that wrote it.")


def read_output_manifest(d: Path) -> tuple[str, dict[str, Any]] | None:
    """The (name, content) of ``d``'s embedgeom manifest, recognised by its format tag - never by file names
    alone; None when ``d`` holds none."""
    for fmt, name in MANIFEST_NAMES.items():
        p = d / name
        if not p.is_file() or p.is_symlink():
            continue
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        if isinstance(data, dict) and data.get("format") == fmt and isinstance(data.get("files"), dict):
            return name, data
    return None


def _entries(d: Path) -> list[str]:
    """Every non-directory entry and every empty directory under ``d``, as relative POSIX paths (symbolic links
    are entries, never followed)."""
    out: list[str] = []
    for root, dirs, files in os.walk(d, followlinks=False):
        rel = Path(root).relative_to(d)
        out += [(rel / f).as_posix() for f in files]
        out += [(rel / x).as_posix() for x in dirs if (Path(root) / x).is_symlink()]
        if not dirs and not files and Path(root) != d:
            out.append(rel.as_posix() + "/")
    return sorted(out)


def foreign_entries(d: Path) -> list[str]:
    """Entries of directory ``d`` that no embedgeom output accounts for: all of them when ``d`` holds no
    manifest; otherwise those its manifest does not list (a subdirectory that is itself a complete embedgeom
    output counts as listed)."""
    found = read_output_manifest(d)
    if found is None:
        return _entries(d)
    name, data = found
    listed = set(data["files"]) | {name}
    own_subdirs = {c.name for c in d.iterdir() if c.is_dir() and not c.is_symlink()
                   and read_output_manifest(c) is not None and not foreign_entries(c)}
    return [e for e in _entries(d) if e not in listed and e.split("/")[0] not in own_subdirs]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _recover(d: Path) -> None:
    """Finish what an interrupted write of ``d`` left: a previous output moved aside (``.old``) and never
    replaced is put back; temporary siblings of writers that are no longer running are removed."""
    if not d.parent.is_dir():
        return
    for sib in sorted(d.parent.iterdir()):
        m = _TEMP.match(sib.name)
        if m is None or m["name"] != d.name or not sib.is_dir() or sib.is_symlink():
            continue
        if m["pid"] is not None and int(m["pid"]) != os.getpid() and _alive(int(m["pid"])):
            continue
        if m["kind"] == "old" and not d.exists():
            os.rename(sib, d)
        else:
            shutil.rmtree(sib, ignore_errors=True)


def prepare_output(path: str | os.PathLike, fmt: str, option: str = "--out") -> Path:
    """Check, before any work, that ``path`` can receive an output of format ``fmt``; return the directory to
    write (a symbolic link is resolved to the directory it names, never replaced).

    Refused with one line: a path that is a file, a dangling link or a link loop, the current directory or one
    holding it (an output is swapped in whole), a directory that holds anything an embedgeom output of the same
    kind does not account for, and an unwritable location. An interrupted earlier write is recovered first."""
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"fmt: expected one of {tuple(OUTPUT_FORMATS)}, got {fmt!r}.")
    p = Path(path).expanduser()
    if p.is_symlink():
        try:
            p = p.resolve(strict=True)
        except (OSError, RuntimeError):
            raise OutputError(f"{option}: {path} is a symbolic link to nothing, or a link loop. Fix: point "
                              f"{option} at a real directory.") from None
        if not p.is_dir():
            raise OutputError(f"{option}: {path} links to {p}, which is not a directory. Fix: choose a "
                              "directory.")
    p = Path(os.path.abspath(p))
    here = Path.cwd().resolve()
    if p.resolve() == here or p.resolve() in here.parents:
        raise OutputError(f"{option}: {path} is the current directory or holds it; an output replaces its "
                          f"directory whole. Fix: name a subdirectory, e.g. {option} results.")
    check_writable(p, option)
    check_writable(p.parent, option)  # the output is built beside its target and renamed into place
    _recover(p)
    if p.is_dir():
        found = read_output_manifest(p)
        if found is not None and found[1]["format"] != fmt:
            raise OutputError(f"{option}: {path} holds {OUTPUT_FORMATS[found[1]['format']]}; writing "
                              f"{OUTPUT_FORMATS[fmt]} there would destroy it. Fix: choose another {option}.")
        foreign = foreign_entries(p)
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise OutputError(f"{option}: {path} holds files that are not part of an embedgeom output ({shown}); "
                              f"embedgeom replaces only what it wrote. Fix: choose a new or empty directory.")
    return p


def write_output(path: str | os.PathLike, fmt: str, build: Callable[[Path], Any], *, option: str = "out") -> Path:
    """Write an output of format ``fmt`` to directory ``path``, whole or not at all.

    ``build(tmp)`` writes every file, its manifest included (:func:`write_manifest`), into ``tmp``, a fresh
    sibling of the target; the target is then replaced by two renames. Any failure (an error, an interrupt, a
    full disk) removes ``tmp`` and leaves the previous output as it was; a kill between the two renames is
    recovered by the next write (:func:`prepare_output`). Returns the directory written."""
    d = prepare_output(path, fmt, option)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp, old = d.parent / f".{d.name}.{tag}.partial", d.parent / f".{d.name}.{tag}.old"
    try:
        d.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        build(tmp)
        if d.exists():
            os.rename(d, old)
        os.rename(tmp, d)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not d.exists():
            os.rename(old, d)
        if isinstance(err, OSError):
            raise OutputError(f"{option}: {os_error_line(err, d)} Nothing was replaced.") from None
        raise
    shutil.rmtree(old, ignore_errors=True)
    return d
