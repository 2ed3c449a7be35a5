"""``run()``: config -> tokenizer -> packed data -> engine -> training loop with logs, evaluation, geometry
snapshots and checkpoints; ``--resume`` continues from the newest intact checkpoint on the same loss curve (a
damaged newer one is named in a :class:`trainer.errors.DamagedCheckpointWarning`).

Cadence (``completed`` = optimizer steps done): a log row every ``train.log_every`` steps; held-out MLM loss
every ``train.eval_every`` steps and a geometry snapshot every ``train.geometry_every`` (0 = with every eval),
both also at step 0 of a fresh run and at the end; with ``watch.enabled`` (default) the snapshot is also taken at
every evaluation and the collapse watch (:mod:`trainer.watch`) checks it; a checkpoint every ``train.ckpt_every``
steps and at the end.
Non-finite losses are detected at every log, eval and checkpoint step, non-finite weights at every checkpoint step
(a checkpoint is never written from a diverged state); either stops the run with
:class:`trainer.errors.TrainingDiverged`, naming the last good (newest intact) checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import (
    CHECKPOINT_DIR,
    FORMAT_VERSION,
    RUN_JSON,
    STATE_FORMAT,
    TOKENIZER_DIR,
    checkpoint_step,
    clear_partial_run,
    clear_stale_temporaries,
    describe_problems,
    first_non_finite,
    hf_config_dict,
    inspect_out,
    iter_intact,
    latest_checkpoint,
    newest_intact_checkpoint,
    os_error_text,
    prune_checkpoints,
    read_run_json,
    restore_replaced_checkpoints,
    update_run_json,
    write_checkpoint,
)
from .config import (
    CONFIG_FORMAT,
    CONFIG_VERSION,
    TrainerConfig,
    config_differences,
    resolve_config,
)
from .data import PackedData, RowSampler, check_sizes, data_key, holdout_every, prepare_data
from .distributed import DistInfo, barrier, init_from_env, shutdown
from .engine import Engine, engine_from_config
from .errors import (
    CheckpointDamaged,
    CheckpointWriteError,
    DamagedCheckpointWarning,
    PartialRunWarning,
    TrainerError,
    TrainerWarning,
    TrainingDiverged,
    fail,
)
from .logs import EVAL_COLUMNS_HYBRID, EVAL_COLUMNS_MLM, TRAIN_COLUMNS_HYBRID, TRAIN_COLUMNS_MLM, RunLog
from .summary import TrainSummary
from .tokenizer import encoder_for, load_tokenizer, save_tokenizer, special_ids, tokenizer_digest
from .watch import CollapseWatch


def training_device(device: str | torch.device) -> torch.device:
    """:func:`embedgeom.devices.resolve_device` (the one resolver), its errors raised as :class:`TrainerError`."""
    from embedgeom.devices import resolve_device as resolve

    try:
        return resolve(device)
    except ValueError as err:
        raise TrainerError(str(err)) from None


# -- run directory ----------------------------------------------------------------------------------------------

def _prepare_out(out: Path, *, resume: bool, dist: DistInfo) -> Path | None:
    """Check ``out`` for a fresh run or a resumption; returns the checkpoint to resume from (or None).

    A run that stopped before its first checkpoint has nothing to lose: it is overwritten, with a
    :class:`PartialRunWarning`, with or without ``resume``. A directory holding files the trainer did not write is
    refused either way, and nothing in it is deleted."""
    if out.exists() and not out.is_dir():
        raise fail("out", "a directory", f"{str(out)!r}, which is a file", "Choose another --out.")
    if dist.is_main and (out / RUN_JSON).is_file():
        with suppress(TrainerError):  # a trainer run killed between the two renames replacing a checkpoint
            if read_run_json(out) is not None:
                restore_replaced_checkpoints(out)
    barrier(dist)
    state = inspect_out(out)
    barrier(dist)  # every rank has looked before rank 0 changes anything
    name = "resume" if resume else "out"
    if state.kind == "broken":
        raise fail(name, "a run directory with an intact checkpoint", f"{str(out)!r}, {state.detail}",
                   "Restore the checkpoint (or run.json), or start a new run in another --out.")
    if state.kind == "foreign":
        if resume:
            raise fail("resume", "an --out holding a run with at least one checkpoint",
                       f"{str(out)!r}, {state.detail}", "Point --out at the run to continue.")
        raise fail("out", "a new or empty directory (or a trainer run)", f"{str(out)!r}, {state.detail}",
                   "Choose another --out (the trainer never deletes files it did not write).")
    if state.kind == "run":
        if not resume:
            raise fail("out", "a new or empty directory", f"{str(out)!r}, which already holds a run (run.json, "
                       f"{state.detail})", "Pass --resume to continue it, or choose another --out.")
        if dist.is_main:  # half-written checkpoints and temporaries of a killed process
            clear_stale_temporaries(out)
        barrier(dist)
        return state.checkpoint
    if state.kind == "new" and resume:
        raise fail("resume", "an --out holding a run with at least one checkpoint", f"{str(out)!r} ({state.detail})",
                   "Point --out at the run to continue, or start it without --resume.")
    if state.kind == "partial" and dist.is_main:
        if resume:
            warnings.warn(f"resume: {str(out)!r} holds a run that stopped before its first checkpoint "
                          f"({state.detail}), so there is nothing to resume; starting it again from step 0.",
                          PartialRunWarning, stacklevel=5)
        else:
            warnings.warn(f"out: {str(out)!r} holds a run that stopped before its first checkpoint "
                          f"({state.detail}); it has nothing to lose, so a new run replaces it.",
                          PartialRunWarning, stacklevel=5)
        clear_partial_run(out)
    if dist.is_main:
        clear_stale_temporaries(out)
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / f".write-test-{os.getpid()}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as err:
            raise fail("out", "a writable directory", f"{str(out)!r} ({err.strerror or err})",
                       "Choose a directory you can write to.") from None
    return None


def _cache_dir(config: TrainerConfig) -> Path:
    if config.data.cache_dir:
        return Path(config.data.cache_dir).expanduser()
    from embedgeom.storage import cache_root

    return cache_root() / "trainer"


def _training_documents(corpus: Any, holdout: float, cap: int) -> Any:
    every = holdout_every(holdout)
    n = 0
    for i, doc in enumerate(corpus.documents()):
        if i % every == 0:
            continue
        if cap and n >= cap:
            return
        n += 1
        yield doc


def _wordpiece_dir(config: TrainerConfig, corpus: Any) -> Path:
    """Train (once, cached under a lock) the corpus's WordPiece tokenizer and return its directory."""
    import hashlib

    from filelock import FileLock

    from .tokenizer import train_wordpiece

    d = config.data
    key = hashlib.sha256(f"wp1|{corpus.digest}|{d.vocab_size}|{d.lowercase}|{d.holdout!r}|{d.tokenizer_documents}|"
                         f"{d.seq_len}".encode()).hexdigest()[:24]
    base = _cache_dir(config) / "tokenizers"
    base.mkdir(parents=True, exist_ok=True)
    final = base / key
    with FileLock(str(base / f"{key}.lock")):
        if not (final / "tokenizer.json").is_file():
            tok = train_wordpiece(_training_documents(corpus, d.holdout, d.tokenizer_documents),
                                  vocab_size=d.vocab_size, lowercase=d.lowercase, model_max_length=d.seq_len)
            tmp = base / f".{key}.{os.getpid()}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            save_tokenizer(tok, tmp)
            os.replace(tmp, final)
    return final


def _setup_tokenizer(config: TrainerConfig, corpus: Any, out: Path, *, resume: bool, dist: DistInfo) -> Any:
    """The run's tokenizer, always loaded back from ``OUT/tokenizer`` (so a resumption sees identical files)."""
    run_dir = out / TOKENIZER_DIR
    if not resume and dist.is_main:
        if config.data.tokenizer == "wordpiece":
            src = _wordpiece_dir(config, corpus)
            shutil.rmtree(run_dir, ignore_errors=True)
            shutil.copytree(src, run_dir)
        else:
            tok = load_tokenizer(config.data.tokenizer)
            tok.model_max_length = min(int(getattr(tok, "model_max_length", 10**9) or 10**9),
                                       config.model.max_position_embeddings or config.data.seq_len)
            save_tokenizer(tok, run_dir)
    barrier(dist)
    if not (run_dir / "tokenizer_config.json").is_file():
        raise fail("resume", f"the run's tokenizer in {run_dir}", "no tokenizer files",
                   "The run directory is incomplete; start a new run.")
    return load_tokenizer(run_dir)


# -- evaluation -------------------------------------------------------------------------------------------------

def _eval_batches(data: PackedData, engine: Engine, n_batches: int, dist: DistInfo) -> list[tuple[np.ndarray, ...]]:
    rows = min(data.heldout.rows, n_batches * engine.global_batch)
    b = engine.micro_batch
    out = []
    for i, start in enumerate(range(0, rows, b)):
        if i % dist.world_size == dist.rank:
            out.append(data.heldout.take(np.arange(start, min(rows, start + b))))
    return out


def _geometry(engine: Engine, data: PackedData, n_texts: int, watch_batches: Sequence[tuple[np.ndarray, ...]] = ()
              ) -> dict[str, Any]:
    """The geometry snapshot, which the collapse watch reads: effective rank, RankMe, stable rank and uniformity of
    the student's mean-pooled last-layer states of up to ``n_texts`` held-out texts (each packed segment is one text),
    float32; for the hybrid also the teacher's effective rank and RankMe on the same texts, the predictor/target
    variances on ``watch_batches`` (:meth:`Engine.jepa_variances`) and the current balance."""
    from embedgeom import metrics as M

    hybrid = engine.teacher is not None
    chunks, teacher_chunks, have, start = [], [], 0, 0
    while have < n_texts and start < data.heldout.rows:
        rows = np.arange(start, min(data.heldout.rows, start + engine.micro_batch))
        batch = data.heldout.take(rows)
        emb = engine.embed(batch)
        chunks.append(emb)
        if hybrid:
            teacher_chunks.append(engine.embed_teacher(batch))
        have += emb.shape[0]
        start = int(rows[-1]) + 1
    x = torch.cat(chunks)[:n_texts].cpu() if chunks else torch.zeros(0, 1)
    row: dict[str, Any] = {"geometry_n": int(x.shape[0]), "geometry_dim": int(x.shape[1])}
    notes = []
    if x.shape[0] < 8:
        notes.append(f"only {x.shape[0]} held-out texts (need 8)")
    else:
        encoders = [("geometry", x)]
        if hybrid:
            encoders.append(("geometry_teacher", torch.cat(teacher_chunks)[:n_texts].cpu()))
        for prefix, emb in encoders:
            student_only = (("stable_rank", M.stable_rank), ("uniformity", M.uniformity))
            for name, fn in (("effective_rank", M.effective_rank), ("rankme", M.rankme),
                             *(student_only if prefix == "geometry" else ())):
                try:
                    row[f"{prefix}_{name}"] = float(fn(emb))
                except ValueError as err:  # e.g. a collapsed encoder: every text the same vector
                    notes.append(f"{prefix}_{name}: {err}")
    if hybrid:
        if watch_batches:
            pred_var, target_var, n = engine.jepa_variances(watch_batches)
            row.update(watch_pred_var=pred_var, watch_target_var=target_var,
                       watch_var_ratio=pred_var / target_var if target_var > 0 else float("nan"),
                       watch_masked_tokens=n)
        weights = engine.balance_weights()
        if weights is not None:
            w_mlm, w_jepa = weights
            row.update(watch_balance=w_mlm / (w_mlm + w_jepa), watch_w_mlm=w_mlm, watch_w_jepa=w_jepa)
    if notes:
        row["geometry_note"] = "; ".join(notes)
    return row


# -- the run ----------------------------------------------------------------------------------------------------

def run(objective: str, preset: str, corpus: str | os.PathLike, out: str | os.PathLike, *, steps: int | None = None,
        resume: bool = False, overrides: Sequence[str] = (), device: str = "auto",
        progress: Callable[[dict], None] | None = None) -> TrainSummary:
    """Train ``objective`` (``mlm`` or ``hybrid``) from ``preset`` (``tiny``, ``paper``, ``base``) on ``corpus``
    into the run directory ``out`` (see :mod:`trainer.checkpoint` for its layout).

    ``overrides`` are ``"section.field=value"`` strings; ``steps`` overrides ``train.steps``; ``resume``
    continues the newest checkpoint in ``out`` (the config must match, apart from logging/checkpoint cadence, and
    the corpus content must be the same — its digest, however its path is spelled); a run in ``out`` that stopped
    before its first checkpoint is replaced by a new one, with or without ``resume``, with a
    :class:`trainer.PartialRunWarning`;
    ``progress`` is called on rank 0 with every logged row. Raises :class:`TrainerError` on bad input.
    Under torchrun (``WORLD_SIZE`` > 1) joins the process group and trains with DDP; rank 0 writes.
    """
    t_start = time.perf_counter()
    if not isinstance(out, (str, os.PathLike)) or not str(out):
        raise fail("out", "a directory path", repr(out), "Pass e.g. --out runs/tiny-mlm.")
    if not isinstance(resume, bool):
        raise fail("resume", "True or False", repr(resume), "Pass resume=True to continue a run.")
    if progress is not None and not callable(progress):
        raise fail("progress", "a callable taking the logged dict, or None", type(progress).__name__, "Pass None.")
    config = resolve_config(objective, preset, overrides, steps=steps)
    dev = training_device(device)
    info = init_from_env(dev.type)
    if info.enabled and dev.type == "cuda":
        dev = torch.device("cuda", info.local_rank)
    try:
        return _run(config, corpus, Path(out), resume=resume, device=dev, dist=info, progress=progress,
                    t_start=t_start)
    finally:
        shutdown(info)


def _short(digest: str) -> str:
    return digest[:12]


def _rel(path: Path, out: Path) -> str:
    try:
        return path.relative_to(out).as_posix()
    except ValueError:
        return str(path)


def _damage_text(damage: CheckpointDamaged, out: Path) -> str:
    return f"{_rel(damage.checkpoint, out)} (step {damage.step}) is damaged ({describe_problems(damage.problems)})"


def _intact_checkpoint(out: Path, dist: DistInfo) -> tuple[Path, tuple]:
    """The newest intact checkpoint of ``out`` and its state (:func:`trainer.checkpoint.iter_intact`): a warning
    names every damaged one passed over and the one used; none intact is one :class:`TrainerError`."""
    damaged: list[CheckpointDamaged] = []
    for ckpt, state, damage in iter_intact(out):
        if damage is not None:
            damaged.append(damage)
            continue
        if damaged and dist.is_main:
            plural = len(damaged) > 1
            warnings.warn(
                f"resume: {'; '.join(_damage_text(d, out) for d in damaged)}; continuing from the newest intact "
                f"checkpoint, {_rel(ckpt, out)} (step {checkpoint_step(ckpt)}). The damaged checkpoint"
                f"{'s stay' if plural else ' stays'} in place, unused, until the run writes "
                f"{'those steps' if plural else 'that step'} again.", DamagedCheckpointWarning, stacklevel=6)
        return ckpt, state
    listed = "; ".join(_damage_text(d, out) for d in damaged) or "no checkpoint directory"
    raise TrainerError(f"resume: expected an intact checkpoint in {str(out)!r}, got none: {listed}. Restore a "
                       "checkpoint from a backup, or start a new run in another --out.")


def _resume_state(config: TrainerConfig, corpus: Any, out: Path, dist: DistInfo) -> tuple[Path, tuple]:
    """Read the newest intact checkpoint (:func:`_intact_checkpoint`) and refuse it when the corpus content or the
    config that changes the numbers differs. The corpus is identified by its content digest
    (:attr:`trainer.corpus.Corpus.digest`), not by how its path is spelled."""
    ckpt, state = _intact_checkpoint(out, dist)
    saved = state[1]
    diffs = config_differences(TrainerConfig.from_dict(saved), config)
    saved_world = state[3].get("world_size", 1)
    if saved_world != dist.world_size:
        diffs.append(f"world_size: {saved_world} -> {dist.world_size}")
    old = saved.get("corpus_digest")
    if old is not None and old != corpus.digest:
        if not diffs:
            raise fail("corpus", f"the corpus {str(out)!r} was trained on (sha256 {_short(old)}..., given as "
                       f"{saved.get('corpus')!r})", f"{corpus.spec!r} with sha256 {_short(corpus.digest)}... "
                       "(its content differs)", "Restore the original corpus to resume, or start a new run in "
                       "another --out.")
        diffs.insert(0, f"corpus sha256: {_short(old)}... -> {_short(corpus.digest)}...")
    if diffs:
        raise TrainerError(f"resume: {out} was trained with a different config ({'; '.join(diffs)}). Resume with "
                           "the original settings, or start a new --out.")
    return ckpt, state


def _check_legacy_corpus(out: Path, config: TrainerConfig, corpus: Any, tokenizer: Any) -> None:
    """A checkpoint written before corpus digests were saved: compare the packed-data cache key recorded in
    run.json (it covers the corpus digest) with the current corpus's, or warn that the content is unverified."""
    d = config.data
    cache = ((read_run_json(out) or {}).get("data") or {}).get("cache")
    if not cache:
        warnings.warn(f"resume: the checkpoint in {str(out)!r} records no corpus digest, so the content of "
                      f"{corpus.spec!r} cannot be checked against the run's; make sure it is unchanged.",
                      TrainerWarning, stacklevel=5)
        return
    key = data_key(corpus_digest=corpus.digest, tokenizer_digest=tokenizer_digest(tokenizer), seq_len=d.seq_len,
                   holdout=d.holdout, min_piece=d.min_piece)
    if Path(cache).name != key:
        raise fail("corpus", f"the corpus {str(out)!r} was trained on (packed-data key {Path(cache).name}, which "
                   "covers its sha256)", f"{corpus.spec!r} with sha256 {_short(corpus.digest)}... (key {key}: "
                   "its content differs)", "Restore the original corpus to resume, or start a new run in another "
                   "--out.")


def _run(config: TrainerConfig, corpus_spec: str | os.PathLike, out: Path, *, resume: bool, device: torch.device,
         dist: DistInfo, progress: Callable[[dict], None] | None, t_start: float) -> TrainSummary:
    from .corpus import open_corpus

    t, d = config.train, config.data
    spec = os.fspath(corpus_spec) if isinstance(corpus_spec, os.PathLike) else corpus_spec
    resume_from = _prepare_out(out, resume=resume, dist=dist)
    corpus = open_corpus(spec, text_field=d.text_field, max_documents=d.max_documents)
    ckpt_state = None
    if resume_from is not None:
        resume_from, ckpt_state = _resume_state(config, corpus, out, dist)
    if resume_from is None and next(iter(corpus.documents()), None) is None:
        raise fail("corpus", f"at least {t.batch_size * (d.seq_len - 2):,} training tokens (one batch of "
                   f"train.batch_size {t.batch_size} rows x {d.seq_len - 2} tokens) plus held-out text",
                   f"{spec!r} with 0 tokens in 0 documents", "Check the corpus is not empty.")
    tokenizer = _setup_tokenizer(config, corpus, out, resume=resume_from is not None, dist=dist)
    if ckpt_state is not None and "corpus_digest" not in ckpt_state[1]:
        _check_legacy_corpus(out, config, corpus, tokenizer)
    special = special_ids(tokenizer)
    data = prepare_data(corpus.documents, encoder_for(tokenizer), _cache_dir(config), corpus_spec=spec,
                        corpus_digest=corpus.digest, tokenizer_digest=tokenizer_digest(tokenizer),
                        seq_len=d.seq_len, cls_id=special.cls, sep_id=special.sep, pad_id=special.pad,
                        vocab_size=special.vocab_size, holdout=d.holdout, min_piece=d.min_piece)
    check_sizes(data, corpus=spec, batch_size=t.batch_size, seq_len=d.seq_len)
    engine = engine_from_config(config, special, device=device, dist=dist)
    session = _Session(config, spec, corpus.digest, out, data, engine, dist, progress)
    if ckpt_state is not None:
        session.restore(ckpt_state, resume_from)
    session.write_run_json(device, fresh=ckpt_state is None)
    return session.train(t_start, device)


class _Session:
    """The state of one ``run`` call: counters, logs, evaluation, checkpoints and the loop."""

    def __init__(self, config: TrainerConfig, spec: str, corpus_digest: str, out: Path, data: PackedData,
                 engine: Engine, dist: DistInfo, progress: Callable[[dict], None] | None):
        self.config, self.t, self.spec, self.out = config, config.train, spec, out
        self.corpus_digest = corpus_digest
        self.resumed_from: Path | None = None
        self.data, self.engine, self.dist, self.progress = data, engine, dist, progress
        self.sampler = RowSampler(data.train.rows, global_batch=self.t.batch_size, seed=self.t.seed)
        self.start_step, self.tokens_seen, self.seconds_before = 0, 0, 0.0
        self.resumed = False
        self.last_row: dict[str, Any] = {}
        self.latest_eval: dict[str, Any] = {}
        self.geometry: dict[str, Any] = {}
        self.eval_batches = _eval_batches(data, engine, self.t.eval_batches, dist)
        # the variance-ratio batches: computed by rank 0 alone, so not split over ranks
        self.watch_batches = (_eval_batches(data, engine, config.watch.batches, DistInfo())
                              if config.objective.name == "hybrid" and config.watch.enabled else [])
        self.watch = CollapseWatch(config.watch, config.objective.name,
                                   first_step=config.watch.first_checked_step(config.optim.warmup_steps))
        self.trainer_config = {"format": CONFIG_FORMAT, "version": CONFIG_VERSION, **config.to_dict(), "corpus": spec,
                               "corpus_digest": corpus_digest}
        self.hf_config = hf_config_dict(engine.student.mlm.config)
        self.log: RunLog | None = None
        self.t_loop = time.perf_counter()

    def restore(self, state: tuple, checkpoint: Path) -> None:
        model_state, _, tensors, meta = state
        self.resumed_from = checkpoint
        self.engine.load_state(model_state, tensors, meta["optimizer"])
        self.start_step, self.tokens_seen = int(meta["step"]), int(meta["tokens_seen"])
        self.seconds_before = float(meta.get("train_seconds", 0.0))
        self.last_row = dict(meta.get("last_log", {}))
        self.latest_eval = dict(meta.get("last_eval", {}))
        self.geometry = {k: v for k, v in self.latest_eval.items() if k.startswith(("geometry_", "watch_"))}
        self.watch.load_state(meta.get("watch") or self._legacy_watch_state())
        self.resumed = True

    def _legacy_watch_state(self) -> dict[str, Any] | None:
        """A checkpoint written before the collapse watch: its step-0 effective rank from ``logs/eval.jsonl``."""
        path = self.out / "logs" / "eval.jsonl"
        if not path.is_file():
            return None
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if row.get("step") == 0 and isinstance(row.get("geometry_effective_rank"), (int, float)):
                return {"reference_effective_rank": row["geometry_effective_rank"]}
        return None

    def write_run_json(self, device: torch.device, *, fresh: bool) -> None:
        hybrid = self.config.objective.name == "hybrid"
        columns = TRAIN_COLUMNS_HYBRID if hybrid else TRAIN_COLUMNS_MLM
        if not self.dist.is_main:
            return
        self.log = RunLog(self.out, columns, resume_step=None if fresh else self.start_step,
                          eval_columns=EVAL_COLUMNS_HYBRID if hybrid else EVAL_COLUMNS_MLM)
        data = self.data
        latest = (self.resumed_from.relative_to(self.out).as_posix() if self.resumed_from is not None
                  else (read_run_json(self.out) or {}).get("latest"))
        update_run_json(self.out, {
            "latest": latest, "objective": self.config.objective.name,
            "preset": self.config.preset, "corpus": self.spec, "corpus_digest": self.corpus_digest,
            "total_steps": self.t.steps,
            "world_size": self.dist.world_size, "device": device.type, "precision": self.engine.precision,
            "tokenizer": TOKENIZER_DIR,
            "logs": {"train": "logs/train.jsonl", "train_csv": "logs/train.csv", "eval": "logs/eval.jsonl",
                     "eval_csv": "logs/eval.csv"},
            "data": {"cache": str(data.directory), "train_rows": data.train.rows, "heldout_rows": data.heldout.rows,
                     "train_tokens": data.train.stats.tokens, "heldout_tokens": data.heldout.stats.tokens},
            "status": "running", **({"created": time.strftime("%Y-%m-%dT%H:%M:%S")} if fresh else {}),
        })

    # -- evaluation and safety -----------------------------------------------------------------------------------
    def evaluate(self, step: int, with_geometry: bool) -> None:
        loss, n = self.engine.heldout_mlm(self.eval_batches)
        row: dict[str, Any] = {"step": step, "heldout_mlm_loss": loss, "heldout_masked_tokens": n}
        if with_geometry and self.dist.is_main:
            self.geometry = _geometry(self.engine, self.data, self.t.geometry_texts, self.watch_batches)
            row.update(self.geometry)
            trips = self.watch.check(step, row)
            if trips:
                row["collapse"] = [t.criterion for t in trips]
        self.latest_eval = {k: v for k, v in row.items() if k not in ("step", "collapse")}
        if self.log is not None:
            self.log.log_eval(row)
        if with_geometry and self.dist.is_main:
            update_run_json(self.out, {"watch": self.watch_summary()})

    def watch_summary(self) -> dict[str, Any]:
        """The collapse watch for ``run.json`` and :class:`TrainSummary`: the latest numbers (with their step),
        the thresholds, the step-0 reference and every criterion that tripped."""
        latest = {k: v for k, v in self.geometry.items() if k.startswith(("geometry_", "watch_"))}
        return {"enabled": self.config.watch.enabled, "latest": latest, **self.watch.summary()}

    def check_finite(self, stats: dict[str, float] | None) -> None:
        bad = stats["first_bad_step"] if stats is not None else self.engine.first_bad_step()
        if bad < 0:
            return
        last = newest_intact_checkpoint(self.out)
        now = {k: v for k, v in (stats or {}).items() if k.startswith(("loss", "grad_norm"))}
        prev = {k: v for k, v in self.last_row.items() if k.startswith("loss")}
        raise TrainingDiverged(
            f"training diverged: non-finite loss at step {bad + 1} (averages since the last log: "
            f"{_fmt(now) or 'n/a'}; last logged at step {self.last_row.get('step', 'none')}: {_fmt(prev) or 'n/a'}); "
            f"last good checkpoint: {last if last else 'none'}. Lower optim.lr (now {self.config.optim.lr:g}) or "
            "keep optim.clip_grad_norm > 0, then start again or --resume from that checkpoint.",
            step=bad + 1, last_checkpoint=last, losses={**prev, **now})

    def log_step(self, completed: int, stats: dict[str, float], now: float, since: tuple[float, int]) -> None:
        t_prev, tokens_prev = since
        self.last_row = {"step": completed, "total_steps": self.t.steps, "epoch": self.sampler.epoch(completed),
                         **{k: v for k, v in stats.items() if k != "first_bad_step"},
                         "tokens_seen": self.tokens_seen,
                         "tokens_per_s": (self.tokens_seen - tokens_prev) / max(now - t_prev, 1e-9),
                         "elapsed_s": self.seconds_before + now - self.t_loop}
        if self.log is not None:
            self.log.log_train(self.last_row)

    # -- checkpoints -----------------------------------------------------------------------------------------------
    def checkpoint(self, completed: int) -> Path | None:
        identical = self.engine.replicas_identical()
        if not identical:
            raise TrainerError(f"DDP replicas diverged at step {completed}: the ranks hold different weights. "
                               "Check that every rank runs the same code and data.")
        self.check_weights(completed)  # every rank: the replicas are identical, so all stop together
        if not self.dist.is_main:
            return None
        engine, t, out = self.engine, self.t, self.out
        state_meta = {
            "format": STATE_FORMAT, "version": FORMAT_VERSION, "step": completed, "tokens_seen": self.tokens_seen,
            "data_position": completed * t.batch_size, "epoch": self.sampler.epoch(completed),
            "world_size": self.dist.world_size, "global_batch": t.batch_size, "seed": t.seed,
            "lr": engine.last_lr, "ema_momentum": engine.last_momentum if engine.teacher is not None else None,
            "optimizer": engine.optimizer_meta(),
            "rng": {"scheme": "every micro-step reseeds from (train.seed, step, global micro-batch)", "seed": t.seed},
            "replicas_identical": identical, "last_log": self.last_row, "last_eval": self.latest_eval,
            "watch": self.watch.state(),
            "train_seconds": self.seconds_before + (time.perf_counter() - self.t_loop),
        }
        path = write_checkpoint(out, completed, model_state=engine.student.hf_state_dict(), hf_config=self.hf_config,
                                tokenizer_dir=out / TOKENIZER_DIR, trainer_config=self.trainer_config,
                                state_tensors=engine.state_tensors(), state_meta=state_meta)
        rel = path.relative_to(out).as_posix()
        try:
            listed = [c for c in (read_run_json(out) or {}).get("checkpoints", []) if c != rel]
            update_run_json(out, {"latest": rel, "step": completed, "tokens_seen": self.tokens_seen,
                                  "checkpoints": [*listed, rel], "updated": time.strftime("%Y-%m-%dT%H:%M:%S")})
            removed = {p.relative_to(out).as_posix() for p in prune_checkpoints(out, t.keep_last)}
            if removed:
                listed = (read_run_json(out) or {}).get("checkpoints", [])
                update_run_json(out, {"checkpoints": [c for c in listed if c not in removed]})
        except OSError as err:
            where = err.filename if isinstance(err.filename, (str, os.PathLike)) else out / RUN_JSON
            raise CheckpointWriteError(
                f"checkpoint at step {completed}: {path} is complete, but updating {where} failed "
                f"({os_error_text(err)}); --resume finds the checkpoint. Free space or fix the permissions of "
                f"{str(out)!r}, then resume with --resume.", previous=path) from err
        return path

    def check_weights(self, completed: int) -> None:
        """Refuse to checkpoint non-finite weights (model, teacher, predictor, balance or optimizer moments): a
        checkpoint is never written from a broken state, so the last good checkpoint stays the newest one."""
        bad = first_non_finite({**self.engine.student.state_dict(), **self.engine.state_tensors()})
        if bad is None:
            return
        last = newest_intact_checkpoint(self.out)
        raise TrainingDiverged(
            f"training diverged: at step {completed} the weights hold non-finite values ({bad[0]!r}: {bad[1]:,} "
            f"NaN or inf) though the logged losses were finite, so no checkpoint was written for step {completed}; "
            f"last good checkpoint: {last if last else 'none'}. Lower optim.lr (now {self.config.optim.lr:g}) or "
            "keep optim.clip_grad_norm > 0, then start again or --resume from that checkpoint.",
            step=completed, last_checkpoint=last, losses={k: v for k, v in self.last_row.items()
                                                          if k.startswith("loss")})

    # -- the loop ------------------------------------------------------------------------------------------------
    def train(self, t_start: float, device: torch.device) -> TrainSummary:
        t, engine = self.t, self.engine
        self.t_loop = time.perf_counter()
        if not self.resumed:
            self.evaluate(0, True)
        since = (time.perf_counter(), self.tokens_seen)
        tokens_start = self.tokens_seen
        final_ckpt = self.resumed_from
        geo_every = t.geometry_every or t.eval_every
        watch_on = self.config.watch.enabled
        end = min(t.steps, t.stop_after) if t.stop_after else t.steps
        try:
            for step in range(self.start_step, end):
                rows = self.sampler.rows_for_step(step)
                engine.train_step(step, [self.data.train.take(rows[engine.micro_rows(a)])
                                         for a in range(t.grad_accum)])
                self.tokens_seen += int(np.count_nonzero(self.data.train.segments[np.sort(rows)]))
                completed = step + 1
                last = completed == end
                is_log = completed % t.log_every == 0 or last
                is_eval = (t.eval_every > 0 and completed % t.eval_every == 0) or last
                is_geo = (geo_every > 0 and completed % geo_every == 0) or last or (watch_on and is_eval)
                is_ckpt = completed % t.ckpt_every == 0 or last
                if is_log:
                    stats = engine.pop_stats()
                    self.check_finite(stats)
                    now = time.perf_counter()
                    self.log_step(completed, stats, now, since)
                    since = (now, self.tokens_seen)
                elif is_eval or is_geo or is_ckpt:
                    self.check_finite(None)
                if is_eval or is_geo:
                    self.evaluate(completed, is_geo)
                if is_log and self.progress is not None and self.dist.is_main:
                    self.progress({**self.last_row, "objective": self.config.objective.name, **self.latest_eval})
                if is_ckpt:
                    final_ckpt = self.checkpoint(completed) or final_ckpt
        finally:
            if self.log is not None:
                self.log.close()
        loop_seconds = time.perf_counter() - self.t_loop
        reached = max(self.start_step, end)
        if self.dist.is_main:
            update_run_json(self.out, {"status": "complete" if reached >= t.steps else "stopped"})
        losses = {k: float(v) for k, v in self.last_row.items() if k.startswith("loss")}
        if "heldout_mlm_loss" in self.latest_eval:
            losses["heldout_mlm_loss"] = float(self.latest_eval["heldout_mlm_loss"])
        trained = self.tokens_seen - tokens_start
        return TrainSummary(
            out_dir=self.out, final_checkpoint=final_ckpt or latest_checkpoint(self.out) or self.out / CHECKPOINT_DIR,
            objective=self.config.objective.name, preset=self.config.preset, steps=reached,
            tokens_seen=self.tokens_seen, final_losses=losses, wall_seconds=time.perf_counter() - t_start,
            tokens_per_s=trained / loop_seconds if loop_seconds > 0 and trained else 0.0,
            resumed_from=self.start_step if self.resumed else None, geometry=self.geometry,
            world_size=self.dist.world_size, device=str(device),
            watch=self.watch_summary() if self.dist.is_main else {})


def _fmt(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
