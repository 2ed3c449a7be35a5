"""Collapse watch: criteria on the evaluation rows, each warned once (:class:`trainer.CollapseWarning`).

The numbers come from the geometry snapshot of held-out text (:func:`trainer.loop._geometry`), taken at every
evaluation: ``geometry_effective_rank`` / ``geometry_rankme`` of the student's mean-pooled last-layer states
(``embedgeom.metrics.effective_rank`` on the centred, ``rankme`` on the uncentred embeddings), the teacher's
(``geometry_teacher_*``, hybrid), and ``watch_pred_var`` / ``watch_target_var`` / ``watch_var_ratio`` (hybrid:
per-feature variance of the layer-normed predictor outputs and teacher targets at fixed masked held-out slots).

Criteria (``watch.*``; a threshold of 0 turns one off; step 0 sets the reference; none is checked before
``watch.grace_steps``, by default three warm-ups, the early phase in which every run's predictor outputs the
mean target and RankMe dips):

* ``rank_drop``: student effective rank < ``rank_fraction`` x its step-0 value;
* ``rank_floor``: student effective rank < ``rank_floor``;
* ``rankme_floor``: student RankMe < ``rankme_floor``;
* ``var_ratio`` (hybrid): ``watch_var_ratio`` < ``var_ratio``;
* ``target_var_floor`` (hybrid): ``watch_target_var`` < ``target_var_floor``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .config import WatchConfig
from .errors import CollapseWarning

#: Criterion names, in the order they are checked.
CRITERIA: tuple[str, ...] = ("rank_drop", "rank_floor", "rankme_floor", "var_ratio", "target_var_floor")
HYBRID_ONLY: frozenset[str] = frozenset({"var_ratio", "target_var_floor"})

_ADVICE_ENCODER = ("early in training this is the MLM plateau, which an MLM-only run of the same settings shows too "
                   "and which a higher optim.lr shortened in the measurements; if it persists beyond it, compare "
                   "with that MLM run (trainer/README.md, Collapse watch)")
_ADVICE_JEPA = ("every measured run passed through this while its MLM was in the early plateau; it persisted where the "
                "student stayed in the plateau (the paper preset at batch 32 with a 50-step warm-up, whose MLM-only "
                "run collapses the same way) or where the EMA teacher followed the student closely (ema.start=0.99 "
                "constant): compare with an MLM-only run of the same settings, keep the teacher slow (ema.start, "
                "ema.schedule); a higher optim.lr shortened the plateau (trainer/README.md, Collapse watch)")


@dataclass(frozen=True)
class Trip:
    """One tripped criterion: where, the value, the threshold it crossed, and the warning text."""

    criterion: str
    step: int
    value: float
    threshold: float
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "value": self.value, "threshold": self.threshold, "message": self.message}


def _num(row: Mapping[str, Any], key: str) -> float | None:
    v = row.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


class CollapseWatch:
    """Checks the criteria of :class:`trainer.config.WatchConfig` on each evaluation row (rank 0).

    ``reference`` is the student's effective rank at step 0 (``rank_drop`` compares with it); ``tripped`` maps each
    criterion that has tripped to its :class:`Trip`. Both are saved in checkpoints (:meth:`state`) so a resumed run
    neither loses its reference nor warns again."""

    def __init__(self, config: WatchConfig, objective: str, *, first_step: int = 1):
        self.config, self.objective = config, objective
        #: The first step at which the criteria are checked (:meth:`WatchConfig.first_checked_step`).
        self.first_step = max(1, int(first_step))
        self.reference: float | None = None
        self.tripped: dict[str, Trip] = {}

    # -- state ---------------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"reference_effective_rank": self.reference,
                "tripped": {k: t.to_dict() for k, t in self.tripped.items()}}

    def load_state(self, state: Mapping[str, Any] | None) -> None:
        if not state:
            return
        ref = state.get("reference_effective_rank")
        self.reference = float(ref) if isinstance(ref, (int, float)) else None
        self.tripped = {k: Trip(criterion=k, step=int(v["step"]), value=float(v["value"]),
                                threshold=float(v["threshold"]), message=str(v.get("message", "")))
                        for k, v in (state.get("tripped") or {}).items() if k in CRITERIA}

    def summary(self) -> dict[str, Any]:
        """For ``TrainSummary.watch`` / ``run.json``: the thresholds, the reference and what tripped."""
        c = self.config
        thresholds = {"rank_fraction": c.rank_fraction, "rank_floor": c.rank_floor, "rankme_floor": c.rankme_floor}
        if self.objective == "hybrid":
            thresholds.update(var_ratio=c.var_ratio, target_var_floor=c.target_var_floor)
        return {"thresholds": thresholds, "checked_from_step": self.first_step,
                "reference_effective_rank": self.reference,
                "tripped": {k: t.to_dict() for k, t in self.tripped.items()}}

    # -- checking --------------------------------------------------------------------------------------------------
    def check(self, step: int, row: Mapping[str, Any]) -> list[Trip]:
        """Check ``row`` (an evaluation row with the geometry snapshot) at ``step``; warn once for each criterion
        that trips for the first time and return those trips. Step 0 only records the reference."""
        if not self.config.enabled:
            return []
        rank = _num(row, "geometry_effective_rank")
        if step == 0:
            if rank is not None:
                self.reference = rank
            return []
        if step < self.first_step:
            return []
        new = []
        for name in CRITERIA:
            if name in self.tripped or (name in HYBRID_ONLY and self.objective != "hybrid"):
                continue
            trip = self._criterion(name, step, row)
            if trip is not None:
                self.tripped[name] = trip
                new.append(trip)
                warnings.warn(trip.message, CollapseWarning, stacklevel=4)
        return new

    def _criterion(self, name: str, step: int, row: Mapping[str, Any]) -> Trip | None:
        c = self.config
        rank, rankme = _num(row, "geometry_effective_rank"), _num(row, "geometry_rankme")
        ratio, target = _num(row, "watch_var_ratio"), _num(row, "watch_target_var")
        pred = _num(row, "watch_pred_var")
        where = f"collapse watch ({name}) at step {step}:"
        if name == "rank_drop" and c.rank_fraction > 0 and rank is not None and self.reference:
            limit = c.rank_fraction * self.reference
            if rank < limit:
                return Trip(name, step, rank, limit,
                            f"{where} the student's effective rank of mean-pooled held-out texts is {rank:.4g}, "
                            f"{rank / self.reference:.2f} of its step-0 value {self.reference:.4g} (below "
                            f"watch.rank_fraction={c.rank_fraction:g} x {self.reference:.4g} = {limit:.4g}): the "
                            f"sentence embeddings are losing directions (dimensional collapse); {_ADVICE_ENCODER}.")
        elif name == "rank_floor" and c.rank_floor > 0 and rank is not None and rank < c.rank_floor:
            return Trip(name, step, rank, c.rank_floor,
                        f"{where} the student's effective rank of mean-pooled held-out texts is {rank:.4g}, below "
                        f"watch.rank_floor={c.rank_floor:g}: the embeddings vary along about one direction; "
                        f"{_ADVICE_ENCODER}.")
        elif name == "rankme_floor" and c.rankme_floor > 0 and rankme is not None and rankme < c.rankme_floor:
            return Trip(name, step, rankme, c.rankme_floor,
                        f"{where} the student's RankMe of mean-pooled held-out texts is {rankme:.4g}, below "
                        f"watch.rankme_floor={c.rankme_floor:g}: one shared component dominates every text's "
                        f"embedding (all texts nearly the same vector); {_ADVICE_ENCODER}.")
        elif name == "var_ratio" and c.var_ratio > 0 and ratio is not None and ratio < c.var_ratio:
            return Trip(name, step, ratio, c.var_ratio,
                        f"{where} the predictor's outputs vary {ratio:.3g} as much as the teacher targets over "
                        f"masked held-out tokens (pred_var {pred:.3g} / target_var {target:.3g}; below "
                        f"watch.var_ratio={c.var_ratio:g}): the predictor outputs about the mean target instead "
                        f"of using context; {_ADVICE_JEPA}.")
        elif name == "target_var_floor" and c.target_var_floor > 0 and target is not None \
                and target < c.target_var_floor:
            return Trip(name, step, target, c.target_var_floor,
                        f"{where} the teacher targets' per-feature variance over masked held-out tokens is "
                        f"{target:.3g} (about 1 when spread; below watch.target_var_floor={c.target_var_floor:g}): "
                        f"the teacher gives every token nearly the same vector (it followed the student into the "
                        f"MLM plateau or a collapse), so the JEPA loss is trivially small and carries no signal; "
                        f"{_ADVICE_JEPA}.")
        return None
