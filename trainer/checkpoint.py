"""Checkpoints and the run directory.

Layout of ``OUT``::

    run.json                       {"format": "embedgeom-trainer-run", "version": 1, "latest": "checkpoints/step-…"}
    tokenizer/                     the run's tokenizer (copied into every checkpoint)
    logs/train.jsonl, train.csv    one row per logging step
    logs/eval.jsonl, eval.csv      held-out MLM loss, geometry snapshots and the collapse watch
    checkpoints/step-0000300/      a complete Hugging Face directory:
        config.json                BertForMaskedLM, "attn_implementation": "sdpa"
        model.safetensors          encoder + MLM head + (untrained) pooler
        tokenizer.json, tokenizer_config.json, vocab.txt, ...
        trainer_config.json        the resolved TrainerConfig, "format": "embedgeom-trainer-checkpoint", corpus + digest
        trainer_state.safetensors  optimizer moments, teacher, predictor, balance (tensors only)
        trainer_state.json         step, tokens seen, data position, schedule values, RNG seed, replica check
        trainer_manifest.json      the step and the sha256 and size of every other file (written last)

What counts as what in ``OUT`` (:func:`inspect_out`): a *run* has a trainer ``run.json`` and at least one
complete checkpoint (the one ``run.json`` names, else the newest complete ``checkpoints/step-*``); a *partial*
run is one that stopped before its first checkpoint — a trainer ``run.json`` naming no checkpoint, or (killed
before ``run.json`` was written) nothing but ``tokenizer/``, the trainer's log files and checkpoint temporaries.
A partial run has nothing to lose and may be overwritten (:func:`clear_partial_run` deletes only the paths above,
never anything else). A run.json naming a checkpoint that is gone, or checkpoints without a run.json, is *broken*;
any other non-empty directory is *foreign*; neither is ever written into.

Nothing is pickled: tensors go to safetensors, everything else to JSON. A checkpoint is written into
``checkpoints/.tmp-step-…`` and renamed when complete; ``run.json`` is then replaced atomically; only then are
checkpoints beyond the newest ``keep_last`` deleted. A failed write (e.g. a full disk) removes the temporary
directory and leaves the previous checkpoint and ``run.json`` untouched; the error is one line naming the path and
the errno (``ENOSPC``, ``EACCES``, ...). Temporaries a killed process left (``.tmp-step-…``, a ``.old-step-…`` whose
replacement never arrived, the write probe, ``run.json``'s temporary) are cleared when a run starts or resumes
(:func:`clear_stale_temporaries`); a ``.old-step-N`` is put back when ``step-N`` is missing.

Integrity (:func:`read_checkpoint`): a checkpoint is *damaged* when a file is missing, truncated, unreadable or
differs from the sha256 its manifest records, when ``trainer_state.json`` records another step than the directory
name, or when a weight (model or trainer state) is NaN or infinite; :class:`trainer.errors.CheckpointDamaged` names
the step and each file. Checkpoints written before manifests existed are checked for everything but the hashes.
``--resume`` continues from the newest intact checkpoint (:func:`resume_candidates`), which is also what the trainer
reports as the "last good checkpoint" (:func:`newest_intact_checkpoint`).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointDamaged, CheckpointWriteError, TrainerError, fail

RUN_FORMAT = "embedgeom-trainer-run"
STATE_FORMAT = "embedgeom-trainer-state"
FORMAT_VERSION = 1
CHECKPOINT_DIR = "checkpoints"
MODEL_FILE = "model.safetensors"
STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"
CONFIG_JSON = "trainer_config.json"
MANIFEST_JSON = "trainer_manifest.json"
MANIFEST_FORMAT = "embedgeom-trainer-manifest"
RUN_JSON = "run.json"
TOKENIZER_DIR = "tokenizer"
LOGS_DIR = "logs"
LOG_ENTRIES = ("train.jsonl", "train.csv", "eval.jsonl", "eval.csv", "tensorboard")


def checkpoint_name(step: int) -> str:
    return f"step-{step:07d}"


_STEP_DIR = re.compile(r"step-(\d+)")


def checkpoint_step(path: Path) -> int | None:
    """The step a checkpoint directory's name says (``step-0000300`` -> 300), or None for another name."""
    m = _STEP_DIR.fullmatch(Path(path).name)
    return int(m.group(1)) if m else None


_ERRNO_MEANING = {
    errno.ENOSPC: "no space left on device: the disk is full",
    errno.EDQUOT: "disk quota exceeded: the disk is full",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
}


def os_error_text(err: OSError) -> str:
    """The errno's name and meaning, e.g. ``ENOSPC, no space left on device: the disk is full``."""
    code = err.errno if isinstance(err.errno, int) else None
    meaning = _ERRNO_MEANING.get(code) if code is not None else None
    if meaning is None:
        meaning = (err.strerror or str(err) or type(err).__name__).strip()
        meaning = meaning[:1].lower() + meaning[1:]
    name = errno.errorcode.get(code) if code is not None else None
    return f"{name}, {meaning}" if name else meaning


def _write_text(path: Path, text: str) -> None:
    """Write ``text`` and fsync it (files that go into a checkpoint)."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write JSON to ``path`` via a temporary file, fsync and rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_tensors(tensors: Mapping[str, torch.Tensor], path: Path, metadata: Mapping[str, str] | None = None) -> None:
    """safetensors ``save_file`` (CPU, contiguous) then fsync."""
    from safetensors.torch import save_file

    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    try:
        save_file(cpu, str(path), metadata=dict(metadata or {}))
    except Exception as err:  # safetensors reports I/O failures as SafetensorError "... (os error N) ..."
        if isinstance(err, OSError):
            raise
        code = re.search(r"os error (\d+)", str(err))
        if code is None:
            raise
        raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(path)) from err
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())
    os.chmod(path, 0o644)


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def hf_config_dict(config: Any) -> dict[str, Any]:
    """``config.json`` content: the BertConfig, ``architectures`` and an explicit SDPA request."""
    d = config.to_dict()
    d["architectures"] = ["BertForMaskedLM"]
    d["attn_implementation"] = "sdpa"
    d.pop("_attn_implementation_internal", None)
    return d


def write_checkpoint(out_dir: Path, step: int, *, model_state: Mapping[str, torch.Tensor],
                     hf_config: Mapping[str, Any], tokenizer_dir: Path, trainer_config: Mapping[str, Any],
                     state_tensors: Mapping[str, torch.Tensor], state_meta: Mapping[str, Any]) -> Path:
    """Write checkpoint ``step`` atomically and return its directory (see the module docstring). An ``OSError``
    (full disk, permissions) removes the temporary directory and raises :class:`CheckpointWriteError`, one line
    naming the path, the errno and the checkpoint that is still intact."""
    root = out_dir / CHECKPOINT_DIR
    final = root / checkpoint_name(step)
    tmp = root / f".tmp-{checkpoint_name(step)}-{os.getpid()}"
    old = root / f".old-{checkpoint_name(step)}-{os.getpid()}"
    current = root
    try:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        current = tmp
        tmp.mkdir()
        current = tmp / "config.json"
        _write_text(current, json.dumps(dict(hf_config), indent=2, sort_keys=True) + "\n")
        current = tmp / MODEL_FILE
        save_tensors(model_state, current, {"format": "pt"})
        for f in sorted(tokenizer_dir.iterdir()):
            if f.is_file():
                current = tmp / f.name
                shutil.copy2(f, current)
        current = tmp / CONFIG_JSON
        _write_text(current, json.dumps(dict(trainer_config), indent=2) + "\n")
        current = tmp / STATE_TENSORS
        save_tensors(state_tensors, current, {"format": STATE_FORMAT})
        current = tmp / STATE_JSON
        _write_text(current, json.dumps(dict(state_meta), indent=2) + "\n")
        current = tmp / MANIFEST_JSON
        _write_text(current, json.dumps(_manifest(tmp, step), indent=2) + "\n")
        current = final
        if final.exists():
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.is_dir() and not final.exists():  # failed between the two renames: the old one goes back
            with suppress(OSError):
                os.replace(old, final)
        where = Path(err.filename) if isinstance(err.filename, (str, os.PathLike)) else current
        previous = newest_intact_checkpoint(out_dir)
        kept = f"the previous checkpoint {previous} is intact" if previous else "no intact earlier checkpoint exists"
        removed = ("its temporary directory was removed" if not tmp.exists()
                   else f"remove its temporary directory {tmp} by hand")
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            fix = "Free space or choose another --out, then resume with --resume."
        elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            fix = f"Make {root} writable or choose another --out, then resume with --resume."
        else:
            fix = "Fix the cause, then resume with --resume."
        raise CheckpointWriteError(
            f"checkpoint at step {step}: writing {final} failed at {where} ({os_error_text(err)}); {removed}; "
            f"{kept}. {fix}", previous=previous) from err
    return final


def _manifest(ckpt: Path, step: int) -> dict[str, Any]:
    """The step and the sha256 (:func:`embedgeom.storage.file_digest`) and size of every file in ``ckpt``."""
    from embedgeom.storage import file_digest

    files = {p.name: {"sha256": file_digest(p), "bytes": p.stat().st_size}
             for p in sorted(ckpt.iterdir()) if p.is_file() and p.name != MANIFEST_JSON}
    return {"format": MANIFEST_FORMAT, "version": FORMAT_VERSION, "step": step, "files": files}


def read_run_json(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / "run.json"
    if not path.is_file():
        return None
    try:
        run = json.loads(path.read_text())
    except ValueError as err:
        raise fail("out", "a readable run.json", f"{path} ({err})", "Restore it or start a new --out.") from None
    if run.get("format") != RUN_FORMAT:
        raise fail("out", f"a run.json with format {RUN_FORMAT!r}", repr(run.get("format")),
                   "This directory was not written by the trainer; choose another --out.")
    return run


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest complete checkpoint named by ``run.json`` (None when there is none)."""
    run = read_run_json(out_dir)
    if not run or not run.get("latest"):
        return None
    path = out_dir / run["latest"]
    return path if (path / STATE_JSON).is_file() else None


def list_checkpoints(out_dir: Path) -> list[Path]:
    """Complete checkpoint directories, oldest first."""
    root = out_dir / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith("step-") and (p / STATE_JSON).is_file())


def update_run_json(out_dir: Path, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``fields`` into ``run.json`` (creating it) atomically."""
    run = read_run_json(out_dir) or {}
    run.update(fields)
    run["format"], run["version"] = RUN_FORMAT, FORMAT_VERSION
    ordered = {"format": run.pop("format"), "version": run.pop("version"), **run}
    atomic_write_json(out_dir / "run.json", ordered)
    return ordered


def prune_checkpoints(out_dir: Path, keep_last: int) -> list[Path]:
    """Delete complete checkpoints beyond the newest ``keep_last`` (never the one run.json names). Checkpoints of
    a later step than the one run.json names (left by a run resumed from an older checkpoint because they were
    damaged) are neither counted nor deleted: the run replaces each when it writes that step again."""
    latest = latest_checkpoint(out_dir)
    ckpts = list_checkpoints(out_dir)
    top = checkpoint_step(latest) if latest is not None else None
    if top is not None:
        ckpts = [p for p in ckpts if (checkpoint_step(p) or 0) <= top]
    removed = []
    for p in ckpts[:-keep_last] if keep_last > 0 else []:
        if latest is not None and p.resolve() == latest.resolve():
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


def first_non_finite(tensors: Mapping[str, torch.Tensor]) -> tuple[str, int] | None:
    """The first (sorted by name) floating-point tensor holding NaN or infinite values and how many, else None.
    One host sync per device."""
    names = [n for n in sorted(tensors) if tensors[n].is_floating_point() or tensors[n].is_complex()]
    by_device: dict[torch.device, list[str]] = {}
    for n in names:
        by_device.setdefault(tensors[n].device, []).append(n)
    bad: dict[str, int] = {}
    for group in by_device.values():
        counts = torch.stack([(~torch.isfinite(tensors[n].detach())).sum() for n in group]).tolist()
        bad.update({n: int(c) for n, c in zip(group, counts, strict=True) if c})
    first = next((n for n in names if n in bad), None)
    return (first, bad[first]) if first is not None else None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def _check_manifest(ckpt: Path, step: int | None, problems: list[tuple[str, str]]) -> set[str]:
    """Compare the files with ``trainer_manifest.json`` (absent in checkpoints written before it existed: nothing
    to compare); append the problems and return the names of the files that failed."""
    from embedgeom.storage import file_digest

    path = ckpt / MANIFEST_JSON
    if not path.exists():
        return set()
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
        if manifest.get("format") != MANIFEST_FORMAT or not isinstance(files, dict):
            raise ValueError(f"not a {MANIFEST_FORMAT} file")
    except (OSError, ValueError, KeyError, TypeError) as err:
        problems.append((MANIFEST_JSON, f"unreadable ({_first_line(err)}), so the files cannot be checked"))
        return set()
    if manifest.get("step") != step:
        problems.append((MANIFEST_JSON, f"records step {manifest.get('step')}, but the directory {ckpt.name} is "
                                        f"step {step}"))
    failed = set()
    for name, entry in sorted(files.items()):
        target = ckpt / name
        if Path(name).name != name or name in ("", ".", ".."):
            problems.append((MANIFEST_JSON, f"lists {name!r}, which is not a file name"))
            continue
        try:
            want_bytes, want_sha = int(entry["bytes"]), str(entry["sha256"])
        except (KeyError, TypeError, ValueError):
            problems.append((MANIFEST_JSON, f"has no size and sha256 for {name}"))
            continue
        if not target.is_file():
            problems.append((name, f"missing (listed in {MANIFEST_JSON})"))
            failed.add(name)
            continue
        size = target.stat().st_size
        if size < want_bytes:
            problems.append((name, f"truncated or edited: {size:,} of the {want_bytes:,} bytes recorded in "
                                   f"{MANIFEST_JSON}"))
        elif size != want_bytes:
            problems.append((name, f"edited: {size:,} bytes, {want_bytes:,} recorded in {MANIFEST_JSON}"))
        elif file_digest(target) != want_sha:
            problems.append((name, f"its content differs from the sha256 recorded in {MANIFEST_JSON} (changed after "
                                   "it was written)"))
        else:
            continue
        failed.add(name)
    return failed


def read_checkpoint(ckpt: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, torch.Tensor],
                                         dict[str, Any]]:
    """(model state, trainer config dict, trainer state tensors, trainer state json) of an intact checkpoint dir.

    Raises :class:`CheckpointDamaged` (naming the step and each file) when a file is missing, truncated, unreadable
    or differs from its recorded sha256, when ``trainer_state.json`` records another step than the directory name,
    or when a model or trainer-state tensor holds NaN or infinite values (see the module docstring)."""
    ckpt = Path(ckpt)
    step = checkpoint_step(ckpt)
    problems: list[tuple[str, str]] = []
    meta: Any = None
    try:
        meta = json.loads((ckpt / STATE_JSON).read_text())
    except FileNotFoundError:
        problems.append((STATE_JSON, "missing"))
    except (OSError, ValueError) as err:
        problems.append((STATE_JSON, f"unreadable ({_first_line(err)})"))
    if meta is not None:
        recorded = meta.get("step") if isinstance(meta, dict) else None
        if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT:
            got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
            problems.append((STATE_JSON, f"format {got!r}, not {STATE_FORMAT!r} (not written by this trainer)"))
        elif isinstance(recorded, bool) or not isinstance(recorded, int):
            problems.append((STATE_JSON, f"records no step (step: {recorded!r})"))
        elif recorded != step:
            problems.append((STATE_JSON, f"records step {recorded}, but the directory {ckpt.name} is step {step}"))
    failed = _check_manifest(ckpt, step, problems)

    loaded: dict[str, Any] = {}
    for name, load in ((MODEL_FILE, load_tensors), (CONFIG_JSON, lambda p: json.loads(p.read_text())),
                       (STATE_TENSORS, load_tensors)):
        if name in failed:
            continue
        if not (ckpt / name).is_file():
            problems.append((name, "missing"))
            continue
        try:
            loaded[name] = load(ckpt / name)
        except Exception as err:  # safetensors raises its own SafetensorError for a truncated file
            problems.append((name, f"unreadable ({_first_line(err)})"))
    for name in (MODEL_FILE, STATE_TENSORS):
        bad = first_non_finite(loaded[name]) if name in loaded else None
        if bad is not None:
            problems.append((name, f"tensor {bad[0]!r} holds {bad[1]:,} non-finite value{'s' if bad[1] > 1 else ''}"
                                   " (NaN or inf)"))
    if problems:
        raise CheckpointDamaged(f"checkpoint {ckpt} is damaged: {describe_problems(problems)}", checkpoint=ckpt,
                                step=step, problems=problems)
    return loaded[MODEL_FILE], loaded[CONFIG_JSON], loaded[STATE_TENSORS], meta


def describe_problems(problems: list[tuple[str, str]]) -> str:
    """``file: reason; file: reason`` (one line)."""
    return "; ".join(f"{name}: {reason}" for name, reason in problems)


def _step_dirs(out_dir: Path) -> list[Path]:
    """``checkpoints/step-*`` directories (complete or not), newest step first."""
    root = out_dir / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    dirs = [p for p in root.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(dirs, key=lambda p: checkpoint_step(p) or 0, reverse=True)


def resume_candidates(out_dir: Path) -> list[Path]:
    """The checkpoints ``--resume`` tries, in order: every ``checkpoints/step-*`` directory, newest step first (the
    newest is the one ``run.json`` names, unless the process stopped between writing a checkpoint and updating
    ``run.json``). The first intact one is used."""
    return _step_dirs(out_dir)


def iter_intact(out_dir: Path) -> Iterator[tuple[Path, tuple | None, CheckpointDamaged | None]]:
    """``(checkpoint, state, None)`` for an intact one, ``(checkpoint, None, damage)`` for a damaged one, in the
    order of :func:`resume_candidates`."""
    for ckpt in resume_candidates(out_dir):
        try:
            yield ckpt, read_checkpoint(ckpt), None
        except CheckpointDamaged as err:
            yield ckpt, None, err


def newest_intact_checkpoint(out_dir: Path) -> Path | None:
    """The checkpoint a resumption would use (the "last good checkpoint"): the first intact one of
    :func:`resume_candidates`; never one with missing, altered or non-finite weights. None when there is none."""
    try:
        for ckpt, state, _ in iter_intact(out_dir):
            if state is not None:
                return ckpt
    except (OSError, TrainerError):
        return None
    return None


@dataclass(frozen=True)
class CheckpointRecord:
    """One checkpoint of a run as readers see it (embedgeom's analysis of a trajectory): its directory, step,
    tokens seen and the run's objective."""

    path: Path
    step: int
    tokens: int | None
    objective: str | None


def run_checkpoints(out_dir: Path) -> tuple[list[CheckpointRecord], list[str]]:
    """The reader of a run directory for other programs: its checkpoints whose ``trainer_state.json`` records
    their directory's step and whose files match ``trainer_manifest.json`` (sha256; no tensor is loaded), oldest
    first; and one line for each ``checkpoints/step-*`` left out as damaged or incomplete, naming its step and
    files. Raises :class:`TrainerError` when ``out_dir`` holds no ``run.json`` written by the trainer."""
    out_dir = Path(out_dir)
    if read_run_json(out_dir) is None:
        raise fail("run", "a trainer run directory (with run.json)", str(out_dir),
                   "Point at the --out of `embedgeom train`.")
    records, skipped = [], []
    for ckpt in reversed(_step_dirs(out_dir)):
        step = checkpoint_step(ckpt)
        problems: list[tuple[str, str]] = []
        meta: Any = None
        cfg: Any = None
        for name in (STATE_JSON, CONFIG_JSON):
            try:
                value = json.loads((ckpt / name).read_text())
            except FileNotFoundError:
                problems.append((name, "missing"))
                continue
            except (OSError, ValueError) as err:
                problems.append((name, f"unreadable ({_first_line(err)})"))
                continue
            if name == STATE_JSON:
                meta = value
            else:
                cfg = value
        if isinstance(meta, dict) and meta.get("step") != step:
            problems.append((STATE_JSON, f"records step {meta.get('step')!r}, but the directory {ckpt.name} is "
                                         f"step {step}"))
        _check_manifest(ckpt, step, problems)
        if problems or not isinstance(meta, dict):
            skipped.append(f"{ckpt.relative_to(out_dir).as_posix()} (step {step}): "
                           f"{describe_problems(problems) or 'trainer_state.json is not a record'}")
            continue
        objective = cfg.get("objective") if isinstance(cfg, dict) else None
        records.append(CheckpointRecord(ckpt, int(step or 0), meta.get("tokens_seen"),
                                        objective.get("name") if isinstance(objective, dict) else None))
    return records, skipped


def run_latest(out_dir: Path) -> Path | None:
    """The checkpoint a reader should take for "the run" (its newest intact one by :func:`run_checkpoints`);
    None when the run has none yet."""
    records, _ = run_checkpoints(out_dir)
    return records[-1].path if records else None


def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """AdamW moments keyed ``optim.<param name>.<key>`` and the JSON-able group hyper-parameters."""
    tensors: dict[str, torch.Tensor] = {}
    groups = []
    for g in optimizer.param_groups:
        groups.append({k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items() if k != "params"})
        for name, p in zip(g["names"], g["params"], strict=True):
            for key, value in optimizer.state.get(p, {}).items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim.{name}.{key}"] = value
    return tensors, {"param_groups": groups}


def load_optimizer_state(optimizer: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor],
                         meta: Mapping[str, Any]) -> None:
    """Inverse of :func:`optimizer_state`; the parameter names must match group by group."""
    saved = meta["param_groups"]
    if [g["names"] for g in saved] != [g["names"] for g in optimizer.param_groups]:
        raise TrainerError("resume: the checkpoint's optimizer holds different parameters than this model; "
                           "resume with the config the run was started with.")
    state: dict[int, dict[str, torch.Tensor]] = {}
    groups = []
    index = 0
    for g_saved, g in zip(saved, optimizer.param_groups, strict=True):
        ids = []
        for name in g["names"]:
            prefix = f"optim.{name}."
            entry = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            if entry:
                state[index] = entry
            ids.append(index)
            index += 1
        restored = {k: (tuple(v) if k == "betas" else v) for k, v in g_saved.items()}
        groups.append({**restored, "params": ids})
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# -- what an --out directory holds ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class OutState:
    """What :func:`inspect_out` found. ``kind``: ``new`` (missing or empty), ``run`` (a run with a complete
    checkpoint, ``checkpoint``), ``partial`` (a run that stopped before its first checkpoint), ``broken`` (a run
    whose checkpoint is gone) or ``foreign`` (files the trainer did not write); ``detail`` says what was seen."""

    kind: str
    checkpoint: Path | None = None
    detail: str = ""


def _own_temporary(name: str) -> bool:
    """Top-level files the trainer writes for a moment (write probe, atomic run.json)."""
    return name.startswith(".write-test-") or (name.startswith(f".{RUN_JSON}.") and name.endswith(".tmp"))


def _checkpoint_leftover(name: str) -> bool:
    """Entries of ``checkpoints/`` a killed checkpoint write leaves behind (never a complete checkpoint)."""
    return name.startswith((".tmp-step-", ".old-step-"))


def _foreign_entries(out_dir: Path) -> list[str]:
    """Paths under ``out_dir`` (relative) that a trainer run does not write."""
    foreign = []
    for p in sorted(out_dir.iterdir()):
        name = p.name
        if _own_temporary(name) or name == RUN_JSON or (name == TOKENIZER_DIR and p.is_dir()):
            continue
        if name == LOGS_DIR and p.is_dir():
            foreign += [f"{name}/{q.name}" for q in sorted(p.iterdir()) if q.name not in LOG_ENTRIES]
        elif name == CHECKPOINT_DIR and p.is_dir():
            foreign += [f"{name}/{q.name}" for q in sorted(p.iterdir()) if not _checkpoint_leftover(q.name)]
        else:
            foreign.append(name)
    return foreign


def _quote_some(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def inspect_out(out_dir: Path) -> OutState:
    """Classify ``out_dir`` for a fresh start or a resumption (see the module docstring); raises
    :class:`TrainerError` for an unreadable ``run.json`` or one the trainer did not write."""
    if not out_dir.is_dir():
        return OutState("new", detail="no such directory")
    entries = [p.name for p in out_dir.iterdir() if not _own_temporary(p.name)]
    if not entries:
        return OutState("new", detail="an empty directory")
    run = read_run_json(out_dir)
    complete = list_checkpoints(out_dir)
    if run is not None:
        ckpt = latest_checkpoint(out_dir) or (complete[-1] if complete else None)
        if ckpt is not None:
            return OutState("run", ckpt, f"checkpoint {ckpt.relative_to(out_dir).as_posix()}")
        if run.get("latest"):
            return OutState("broken", detail=f"whose run.json names {run['latest']}, which is missing or incomplete")
        return OutState("partial", detail="run.json names no checkpoint yet")
    if complete:
        return OutState("broken", detail=f"which holds {_quote_some([p.name for p in complete])} but no run.json")
    foreign = _foreign_entries(out_dir)
    if foreign or TOKENIZER_DIR not in entries:
        return OutState("foreign", detail=f"which holds {_quote_some(foreign or entries)} (no run.json)")
    return OutState("partial", detail="no run.json yet, only the trainer's tokenizer/logs")


def restore_replaced_checkpoints(out_dir: Path) -> list[str]:
    """Put back every complete ``checkpoints/.old-step-N-…`` whose ``step-N`` is missing: a process killed between
    the two renames that replace a checkpoint leaves the previous one there. Returns what was restored."""
    root = out_dir / CHECKPOINT_DIR
    done = []
    if not root.is_dir():
        return done
    for p in sorted(root.iterdir()):
        m = re.match(r"\.old-(step-\d+)-", p.name)
        if m and p.is_dir() and not p.is_symlink() and (p / STATE_JSON).is_file() and not (root / m.group(1)).exists():
            with suppress(OSError):
                os.replace(p, root / m.group(1))
                done.append(f"{CHECKPOINT_DIR}/{p.name} -> {CHECKPOINT_DIR}/{m.group(1)}")
    return done


def clear_stale_temporaries(out_dir: Path) -> list[str]:
    """Remove what a killed process left while writing (the write probe, ``run.json``'s temporary, checkpoint
    temporaries), after :func:`restore_replaced_checkpoints`. Returns the relative paths restored or removed. Only
    for a run directory (or one about to become one): call before writing."""
    if not out_dir.is_dir():
        return []
    done = restore_replaced_checkpoints(out_dir)
    for p in out_dir.iterdir():
        if _own_temporary(p.name) and (p.is_file() or p.is_symlink()):
            with suppress(OSError):
                p.unlink()
                done.append(p.name)
    root = out_dir / CHECKPOINT_DIR
    if root.is_dir():
        for p in sorted(root.iterdir()):
            if _checkpoint_leftover(p.name) and p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
                done.append(f"{CHECKPOINT_DIR}/{p.name}")
    return done


def clear_partial_run(out_dir: Path) -> None:
    """Delete what a run that stopped before its first checkpoint wrote: ``run.json``, ``tokenizer/``, the log
    files, checkpoint temporaries. Only for an ``OutState`` of kind ``partial``; nothing else is touched."""
    for name in (RUN_JSON, *(p.name for p in out_dir.iterdir() if _own_temporary(p.name))):
        (out_dir / name).unlink(missing_ok=True)
    shutil.rmtree(out_dir / TOKENIZER_DIR, ignore_errors=True)
    for sub, owned in ((LOGS_DIR, lambda n: n in LOG_ENTRIES), (CHECKPOINT_DIR, _checkpoint_leftover)):
        d = out_dir / sub
        if not d.is_dir():
            continue
        for p in d.iterdir():
            if not owned(p.name):
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink()
        if not any(d.iterdir()):
            d.rmdir()
