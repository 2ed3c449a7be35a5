"""Replay a trainer run from one of its checkpoints and take one loss spike apart.

Copies checkpoint ``--from-step`` of ``--run`` into ``--out`` (a fresh run directory), resumes it with the run's own
settings (the learning-rate schedule, masks and dropout are functions of the step, so the replay repeats the run
exactly), and around the update at 0-based step ``--step`` (logged as step ``--step + 1``) prints, as JSON lines:

* ``batch``: the batch's loss as trained (same mask, same dropout), without dropout, with three other dropout
  draws, with another mask, its median row and its five worst rows (is it the data, the mask or dropout?);
* ``carry``: the previous step's batch re-scored after the previous update (did that update raise the loss of
  every batch?) and this batch re-scored after this update;
* ``revert``: for the update just before ``--step``, the loss change on its own batch when each parameter group's
  update alone is undone, with the group's largest relative update ||delta W|| / ||W|| (which update did it?).

Needs only the run directory and its corpus; prints nothing else on stdout. Used by ``reports/trainer-spike/run.sh``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

import torch

import trainer
from trainer import engine as E
from trainer.config import TrainerConfig, overrides_for


def emit(kind: str, **values) -> None:
    sys.stdout.write(json.dumps({"kind": kind, **values}) + "\n")
    sys.stdout.flush()


def prepare(run: Path, step: int, out: Path) -> dict:
    """A run directory holding only ``run``'s checkpoint at ``step``; returns the original run.json."""
    meta = json.loads((run / "run.json").read_text())
    ckpt = f"checkpoints/step-{step:07d}"
    if not (run / ckpt).is_dir():
        raise SystemExit(f"error: --from-step: {run / ckpt} does not exist; pick a step from {meta['checkpoints']}.")
    if out.exists():
        shutil.rmtree(out)
    (out / "checkpoints").mkdir(parents=True)
    shutil.copytree(run / ckpt, out / ckpt)
    shutil.copytree(run / "tokenizer", out / "tokenizer")
    shutil.copytree(run / "logs", out / "logs")
    (out / "run.json").write_text(json.dumps({**meta, "latest": ckpt, "checkpoints": [ckpt], "step": step,
                                              "status": "running"}, indent=1))
    return meta


def scored(engine, masked, batch, *, train: bool, seed: int | None = None) -> float:
    engine.step_module.train(train)
    if seed is not None:
        torch.manual_seed(seed)
    with torch.no_grad():
        return float(engine.step_module(masked, batch.attention_mask, batch.position_ids, None)[0])


def masked_batch(engine, host_batch, step: int, mask_seed: int | None = None):
    batch = engine._to_device(host_batch)
    engine._gen.manual_seed(E.derive_seed(engine.seed, step, 0, E._MASKING) if mask_seed is None else mask_seed)
    return batch, engine._mask(batch, engine._eligible(batch))


def rows_of(x, i: int, n: int):
    return dataclasses.replace(x, **{f.name: getattr(x, f.name)[i:i + 1] for f in dataclasses.fields(x)
                                     if isinstance(getattr(x, f.name), torch.Tensor)
                                     and getattr(x, f.name).shape[:1] == (n,)})


def batch_report(engine, host_batch, step: int) -> None:
    batch, masked = masked_batch(engine, host_batch, step)
    drop = E.derive_seed(engine.seed, step, 0, E._DROPOUT)
    _, other = masked_batch(engine, host_batch, step, mask_seed=12345)
    n = masked.input_ids.shape[0]
    per_row = [scored(engine, rows_of(masked, i, n), rows_of(batch, i, n), train=True, seed=drop) for i in range(n)]
    emit("batch", step=step, logged_step=step + 1, as_trained=scored(engine, masked, batch, train=True, seed=drop),
         no_dropout=scored(engine, masked, batch, train=False),
         other_dropout=[scored(engine, masked, batch, train=True, seed=drop + k) for k in (1, 2, 3)],
         other_mask=scored(engine, other, batch, train=False), median_row=sorted(per_row)[n // 2],
         worst_rows=sorted(((v, i) for i, v in enumerate(per_row)), reverse=True)[:5])


def group_of(name: str) -> str:
    parts = name.split(".")
    if "embeddings" in parts:
        return ".".join(parts[:parts.index("embeddings") + 2])
    if "layer" in parts:
        i = parts.index("layer")
        return f"layer{parts[i + 1]}." + ".".join(p for p in parts[i + 2:i + 4] if not p.isdigit())
    return ".".join(parts[:3])


def revert_report(engine, host_batch, step: int, train_step) -> None:
    """Run the update of ``step`` and undo each parameter group's part of it in turn."""
    batch, masked = masked_batch(engine, host_batch, step)
    named = [(n, p) for n, p in engine.step_module.named_parameters() if p.requires_grad]
    before = {n: p.detach().clone() for n, p in named}
    loss_before = scored(engine, masked, batch, train=False)
    train_step(engine, step, [host_batch])
    after = {n: p.detach().clone() for n, p in named}
    loss_after = scored(engine, masked, batch, train=False)
    groups: dict[str, list[str]] = {}
    for n, _ in named:
        groups.setdefault(group_of(n), []).append(n)
    params = dict(named)
    rows = []
    for g, names in groups.items():
        with torch.no_grad():
            for n in names:
                params[n].copy_(before[n])
            change = scored(engine, masked, batch, train=False) - loss_after
            for n in names:
                params[n].copy_(after[n])
        rel = max(float((after[n] - before[n]).norm() / (before[n].norm() + 1e-12)) for n in names)
        rows.append({"group": g, "loss_change_if_undone": change, "max_relative_update": rel})
    rows.sort(key=lambda r: r["loss_change_if_undone"])
    emit("revert", step=step, loss_before_update=loss_before, loss_after_update=loss_after, groups=rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="the trainer run directory")
    ap.add_argument("--from-step", type=int, required=True, help="the checkpoint to replay from")
    ap.add_argument("--step", type=int, required=True, help="0-based step of the spike (logged step - 1)")
    ap.add_argument("--out", type=Path, required=True, help="replay directory (replaced)")
    args = ap.parse_args()
    if not args.from_step <= args.step - 1:
        raise SystemExit("error: --step: expected at least --from-step + 1 (the update before it is replayed).")
    meta = prepare(args.run, args.from_step, args.out)
    saved = TrainerConfig.from_dict(json.loads(
        (args.run / "checkpoints" / f"step-{args.from_step:07d}" / "trainer_config.json").read_text()))
    original = E.Engine.train_step
    seen: dict[int, object] = {}  # the previous step's batch, re-scored after its update

    def hooked(engine, step, micro_batches):
        seen.pop(step - 2, None)
        seen[step] = micro_batches[0]
        if step == args.step - 1:
            revert_report(engine, micro_batches[0], step, original)
            return None
        if step == args.step:
            prev, prev_masked = masked_batch(engine, seen[step - 1], step - 1)
            emit("carry", batch_of_step=step - 1, after_update_of_step=step - 1,
                 loss=scored(engine, prev_masked, prev, train=False))
        if step in (args.step, args.step + 1):
            batch_report(engine, micro_batches[0], step)
        if step == args.step + 1:
            cur, cur_masked = masked_batch(engine, seen[step - 1], step - 1)
            emit("carry", batch_of_step=step - 1, after_update_of_step=step - 1,
                 loss=scored(engine, cur_masked, cur, train=False))
            raise SystemExit(0)
        return original(engine, step, micro_batches)

    E.Engine.train_step = hooked
    trainer.run(meta["objective"], meta["preset"], meta["corpus"], args.out, steps=meta["total_steps"], resume=True,
                device="cpu", overrides=[*overrides_for(saved), "train.eval_every=0", "train.ckpt_every=1000000",
                                         "train.log_every=1"])


if __name__ == "__main__":
    main()
