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
directory and leaves the previous checkpoint and ``run.json`` untouched.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointWriteError, TrainerError, fail

RUN_FORMAT = "embedgeom-trainer-run"
STATE_FORMAT = "embedgeom-trainer-state"
FORMAT_VERSION = 1
CHECKPOINT_DIR = "checkpoints"
MODEL_FILE = "model.safetensors"
STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"
CONFIG_JSON = "trainer_config.json"
RUN_JSON = "run.json"
TOKENIZER_DIR = "tokenizer"
LOGS_DIR = "logs"
LOG_ENTRIES = ("train.jsonl", "train.csv", "eval.jsonl", "eval.csv", "tensorboard")


def checkpoint_name(step: int) -> str:
    return f"step-{step:07d}"


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
    save_file(cpu, str(path), metadata=dict(metadata or {}))
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
    """Write checkpoint ``step`` atomically and return its directory (see the module docstring)."""
    root = out_dir / CHECKPOINT_DIR
    final = root / checkpoint_name(step)
    tmp = root / f".tmp-{checkpoint_name(step)}-{os.getpid()}"
    previous = latest_checkpoint(out_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        (tmp / "config.json").write_text(json.dumps(dict(hf_config), indent=2, sort_keys=True) + "\n")
        save_tensors(model_state, tmp / MODEL_FILE, {"format": "pt"})
        for f in sorted(tokenizer_dir.iterdir()):
            if f.is_file():
                shutil.copy2(f, tmp / f.name)
        (tmp / CONFIG_JSON).write_text(json.dumps(dict(trainer_config), indent=2) + "\n")
        save_tensors(state_tensors, tmp / STATE_TENSORS, {"format": STATE_FORMAT})
        (tmp / STATE_JSON).write_text(json.dumps(dict(state_meta), indent=2) + "\n")
        if final.exists():
            old = root / f".old-{checkpoint_name(step)}-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        reason = "the disk is full" if err.errno in (errno.ENOSPC, errno.EDQUOT) else (err.strerror or str(err))
        kept = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"
        raise CheckpointWriteError(
            f"checkpoint at step {step}: writing {final} failed ({reason}); {kept}. Free space or choose another "
            "--out, then resume with --resume.", previous=previous) from err
    return final


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
    """Delete complete checkpoints beyond the newest ``keep_last`` (never the one run.json names)."""
    latest = latest_checkpoint(out_dir)
    ckpts = list_checkpoints(out_dir)
    removed = []
    for p in ckpts[:-keep_last] if keep_last > 0 else []:
        if latest is not None and p.resolve() == latest.resolve():
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


def read_checkpoint(ckpt: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, torch.Tensor],
                                         dict[str, Any]]:
    """(model state, trainer config dict, trainer state tensors, trainer state json) of a checkpoint dir."""
    try:
        model = load_tensors(ckpt / MODEL_FILE)
        config = json.loads((ckpt / CONFIG_JSON).read_text())
        tensors = load_tensors(ckpt / STATE_TENSORS)
        meta = json.loads((ckpt / STATE_JSON).read_text())
    except (OSError, ValueError) as err:
        raise fail("resume", "a complete checkpoint", f"{ckpt} ({err})",
                   "Point run.json's 'latest' at an intact checkpoint or start a new run.") from None
    if meta.get("format") != STATE_FORMAT:
        raise fail("resume", f"trainer state format {STATE_FORMAT!r}", repr(meta.get("format")),
                   "The checkpoint was not written by this trainer.")
    return model, config, tensors, meta


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
