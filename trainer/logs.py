"""Run logs: ``logs/train.jsonl`` + ``logs/train.csv`` (one row per logging step, fixed columns) and
``logs/eval.jsonl`` + ``logs/eval.csv`` (held-out loss, geometry snapshot and collapse watch; the CSV has fixed
columns, the JSON lines every key), plus TensorBoard scalars when ``tensorboard`` is installed.

On resume the files are cut back to the rows at or before the checkpoint's step (a killed run may have logged
steps it never checkpointed), so the logs read as one uninterrupted run.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

TRAIN_COLUMNS_MLM: tuple[str, ...] = ("step", "epoch", "lr", "loss", "loss_mlm", "grad_norm", "mask_rate",
                                      "tokens_seen", "tokens_per_s", "elapsed_s")
TRAIN_COLUMNS_HYBRID: tuple[str, ...] = ("step", "epoch", "lr", "loss", "loss_mlm", "loss_jepa", "w_mlm", "w_jepa",
                                         "balance", "mlm_share", "ema_momentum", "target_var", "pred_var", "grad_norm",
                                         "mask_rate", "tokens_seen", "tokens_per_s", "elapsed_s")
EVAL_COLUMNS_MLM: tuple[str, ...] = ("step", "heldout_mlm_loss", "heldout_masked_tokens", "geometry_n",
                                     "geometry_dim", "geometry_effective_rank", "geometry_rankme",
                                     "geometry_stable_rank", "geometry_uniformity", "collapse")
EVAL_COLUMNS_HYBRID: tuple[str, ...] = (*EVAL_COLUMNS_MLM[:-1], "geometry_teacher_effective_rank",
                                        "geometry_teacher_rankme", "watch_pred_var", "watch_target_var",
                                        "watch_var_ratio", "watch_masked_tokens", "watch_balance", "watch_w_mlm",
                                        "watch_w_jepa", "collapse")


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf
    return value


def _truncate_jsonl(path: Path, max_step: int) -> None:
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut by the kill
        if int(row.get("step", 0)) <= max_step:
            keep.append(line)
    path.write_text("".join(f"{ln}\n" for ln in keep))


def _cell(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return ";".join(map(str, value))
    return "" if value is None else value


def _rewrite_csv(path: Path, jsonl: Path, columns: Sequence[str]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        if jsonl.is_file():
            for line in jsonl.read_text().splitlines():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                writer.writerow([_cell(row.get(c)) for c in columns])


class RunLog:
    """Appends training and evaluation rows. ``resume_step`` (None for a fresh run) truncates existing files."""

    def __init__(self, out_dir: Path, columns: Sequence[str], *, resume_step: int | None = None,
                 tensorboard: bool = True, eval_columns: Sequence[str] = EVAL_COLUMNS_MLM):
        self.dir = out_dir / "logs"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.columns = tuple(columns)
        self.eval_columns = tuple(eval_columns)
        self.train_jsonl = self.dir / "train.jsonl"
        self.train_csv = self.dir / "train.csv"
        self.eval_jsonl = self.dir / "eval.jsonl"
        self.eval_csv = self.dir / "eval.csv"
        if resume_step is None:
            for p in (self.train_jsonl, self.train_csv, self.eval_jsonl, self.eval_csv):
                p.unlink(missing_ok=True)
        else:
            _truncate_jsonl(self.train_jsonl, resume_step)
            _truncate_jsonl(self.eval_jsonl, resume_step)
        _rewrite_csv(self.train_csv, self.train_jsonl, self.columns)
        _rewrite_csv(self.eval_csv, self.eval_jsonl, self.eval_columns)
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                SummaryWriter = None
            if SummaryWriter is not None:
                self._tb = SummaryWriter(str(self.dir / "tensorboard"), purge_step=resume_step)

    def log_train(self, row: Mapping[str, Any]) -> None:
        clean = {k: _clean(v) for k, v in row.items()}
        with open(self.train_jsonl, "a") as fh:
            fh.write(json.dumps(clean) + "\n")
        with open(self.train_csv, "a", newline="") as fh:
            csv.writer(fh).writerow([clean.get(c, "") for c in self.columns])
        self._scalars("train", row)

    def log_eval(self, row: Mapping[str, Any]) -> None:
        clean = {k: _clean(v) for k, v in row.items()}
        with open(self.eval_jsonl, "a") as fh:
            fh.write(json.dumps(clean) + "\n")
        with open(self.eval_csv, "a", newline="") as fh:
            csv.writer(fh).writerow([_cell(clean.get(c)) for c in self.eval_columns])
        self._scalars("eval", row)

    def _scalars(self, prefix: str, row: Mapping[str, Any]) -> None:
        if self._tb is None:
            return
        step = int(row["step"])
        for k, v in row.items():
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                self._tb.add_scalar(f"{prefix}/{k}", v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
