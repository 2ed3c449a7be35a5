"""One optimizer step of either objective, evaluation, and the trainable state — independent of corpora and run
directories (the benchmark drives it with random tokens).

Per optimizer step ``s`` with ``A`` accumulation micro-steps on ``W`` ranks, global micro-batch
``g = rank * A + a`` takes rows ``g * b .. (g + 1) * b - 1`` of the step's global batch (``b = B / (W A)``).
Everything random in a micro-step is seeded from ``(seed, s, g)``: torch's global generator (dropout) is
re-seeded with ``seed(seed, s, g, 0)`` and the masking generator with ``seed(seed, s, g, 1)``. So the run is a
pure function of the config and the step: resuming needs no RNG state, and splitting the same global batch over
more ranks or more accumulation steps reproduces the same losses up to float summation order.

Loss of a micro-batch: mean over its masked slots; the step's loss is the mean over micro-batches and ranks (the
gradient is averaged the same way, by DDP over ranks and by ``loss / A`` over micro-steps).

No host sync per step: statistics are accumulated in device tensors and read by :meth:`Engine.pop_stats`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .balance import Balance
from .distributed import DistInfo, all_reduce_, replicas_identical
from .ema import ema_momentum, ema_update
from .errors import fail
from .masking import mask_tokens, replacement_vocabulary
from .model import (
    STAT_NAMES,
    Predictor,
    Student,
    gather_slots,
    make_teacher,
    mean_pool_segments,
    packed_inputs,
    paired_parameters,
    teacher_targets,
)
from .optim import build_optimizer, lr_factor, set_lr
from .tokenizer import SpecialIds

_DROPOUT, _MASKING, _EVAL = 0, 1, 2
HostBatch = tuple[np.ndarray, np.ndarray]  # (token ids (b, L) int64, segment numbers (b, L) uint8)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from non-negative integers (numpy SeedSequence hashing)."""
    a, b = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return (int(a) << 31) ^ int(b)


class Engine:
    """Student (+ teacher, predictor, balance for ``hybrid``), AdamW, masking and the step logic.

    Every argument is explicit; :func:`trainer.loop.engine_from_config` maps a :class:`TrainerConfig` onto them.
    """

    def __init__(self, *, bert_config: Any, objective: str, special: SpecialIds, seq_len: int, global_batch: int,
                 grad_accum: int, total_steps: int, seed: int, device: torch.device, dist: DistInfo,
                 precision: str = "fp32", compile: bool = False, compile_mode: str = "",
                 mask_rate: float = 0.15, mask_prob: float = 0.8, random_prob: float = 0.1, span_length: int = 1,
                 predictor_width: int = 64, predictor_layers: int = 1, predictor_heads: int = 2,
                 predictor_mlp_ratio: int = 4, balance: str = "uncertainty", balance_init: float = 0.0,
                 balance_lr_scale: float = 1.0, jepa_loss: str = "cosine", smooth_l1_beta: float = 1.0,
                 target_layers: int = 1, ema_start: float = 0.996, ema_end: float = 1.0,
                 ema_schedule: str = "linear", lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.98),
                 eps: float = 1e-6, weight_decay: float = 0.01, warmup_steps: int = 0, lr_schedule: str = "cosine",
                 min_lr_ratio: float = 0.0, clip_grad_norm: float = 1.0):
        if objective not in ("mlm", "hybrid"):
            raise fail("objective", "mlm|hybrid", repr(objective), "Pick one of the listed objectives.")
        if precision not in ("fp32", "bf16"):
            raise fail("train.precision", "fp32|bf16 (after resolving auto)", repr(precision), "Use fp32 or bf16.")
        per_rank = global_batch // max(1, dist.world_size)
        if global_batch % (dist.world_size * grad_accum) or per_rank < grad_accum:
            raise fail("train.batch_size", f"a multiple of world size x train.grad_accum "
                       f"({dist.world_size} x {grad_accum})", str(global_batch), "Change the batch size.")
        self.objective, self.special, self.seq_len = objective, special, seq_len
        self.global_batch, self.grad_accum, self.total_steps = global_batch, grad_accum, total_steps
        self.micro_batch = global_batch // (dist.world_size * grad_accum)
        self.seed, self.device, self.dist = seed, device, dist
        self.precision = precision
        self.mask_kw = {"rate": mask_rate, "mask_prob": mask_prob, "random_prob": random_prob,
                        "span_length": span_length, "mask_id": special.mask}
        self.target_layers = target_layers
        self.ema = {"start": ema_start, "end": ema_end, "schedule": ema_schedule}
        self.lr, self.warmup, self.lr_schedule, self.min_lr_ratio = lr, warmup_steps, lr_schedule, min_lr_ratio
        self.clip = clip_grad_norm

        torch.manual_seed(derive_seed(seed, 0xC0FFEE))  # parameter init: identical on every rank
        predictor = bal = None
        if objective == "hybrid":
            predictor = Predictor(bert_config.hidden_size, width=predictor_width, layers=predictor_layers,
                                  heads=predictor_heads, mlp_ratio=predictor_mlp_ratio)
            bal = Balance(balance, balance_init)
        self.student = Student(bert_config, objective=objective, predictor=predictor, balance=bal,
                               jepa_kind=jepa_loss, smooth_l1_beta=smooth_l1_beta).to(device)
        self.teacher = make_teacher(self.student) if objective == "hybrid" else None
        self._pairs = paired_parameters(self.teacher, self.student.mlm.bert) if self.teacher is not None else None
        self.optimizer = build_optimizer(self.student.named_parameters(), lr=lr, betas=betas, eps=eps,
                                         weight_decay=weight_decay, balance_lr_scale=balance_lr_scale,
                                         fused=device.type == "cuda")
        self._trainable = [p for p in self.student.parameters() if p.requires_grad]
        if compile:
            kw = {"mode": compile_mode} if compile_mode else {}
            self.student.compile(**kw)
            if self.teacher is not None:
                self.teacher.compile(**kw)
        self.model: nn.Module = self.student
        if dist.enabled:
            import inspect

            from torch.nn.parallel import DistributedDataParallel as DDP

            # buffers (position ids) are constants: no per-forward sync (the keyword was renamed in torch 2.13)
            renamed = "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters
            no_sync = {"forward_sync_buffers": False} if renamed else {"broadcast_buffers": False}
            self.model = DDP(self.student, device_ids=[device.index] if device.type == "cuda" else None, **no_sync)
        self._replacement = replacement_vocabulary(special.vocab_size, special.all, device)
        self._specials = torch.tensor(special.all, dtype=torch.long, device=device)
        self._gen = torch.Generator(device=device)
        self._reset_stats()
        self.last_lr = lr * lr_factor(0, total_steps=total_steps, warmup_steps=warmup_steps, schedule=lr_schedule,
                                      min_ratio=min_lr_ratio)
        self.last_momentum = ema_start if objective == "hybrid" else float("nan")

    # -- helpers -----------------------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def _to_device(self, batch: HostBatch) -> tuple[torch.Tensor, torch.Tensor, Any, Any]:
        tokens, segments = batch
        ids = torch.from_numpy(np.ascontiguousarray(tokens, dtype=np.int64))
        if self.device.type == "cuda":
            ids = ids.pin_memory()
        ids = ids.to(self.device, non_blocking=True)
        mask, positions, seg = packed_inputs(segments, self.device)
        return ids, seg, mask, positions

    def _eligible(self, ids: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        return (seg > 0) & ~torch.isin(ids, self._specials)

    def _reset_stats(self) -> None:
        self._acc = torch.zeros(len(STAT_NAMES) + 2, dtype=torch.float32, device=self.device)
        self._steps = 0
        self._first_bad = torch.full((), -1, dtype=torch.long, device=self.device)

    # -- training ----------------------------------------------------------------------------------------------
    def micro_rows(self, accum_index: int) -> slice:
        """Rows of the step's global batch that this rank's micro-step ``accum_index`` trains on."""
        g = self.dist.rank * self.grad_accum + accum_index
        return slice(g * self.micro_batch, (g + 1) * self.micro_batch)

    def train_step(self, step: int, micro_batches: Sequence[HostBatch]) -> None:
        """One optimizer step at 0-based ``step`` from this rank's ``grad_accum`` micro-batches."""
        if len(micro_batches) != self.grad_accum:
            raise fail("train_step", f"{self.grad_accum} micro-batches", str(len(micro_batches)),
                       "Pass one per accumulation step.")
        self.last_lr = set_lr(self.optimizer, self.lr, lr_factor(
            step, total_steps=self.total_steps, warmup_steps=self.warmup, schedule=self.lr_schedule,
            min_ratio=self.min_lr_ratio))
        self.model.train()
        stats_sum = None
        for a, batch in enumerate(micro_batches):
            g = self.dist.rank * self.grad_accum + a
            ids, seg, mask, positions = self._to_device(batch)
            eligible = self._eligible(ids, seg)
            self._gen.manual_seed(derive_seed(self.seed, step, g, _MASKING))
            m = mask_tokens(ids, eligible, replacement_ids=self._replacement, generator=self._gen, **self.mask_kw)
            torch.manual_seed(derive_seed(self.seed, step, g, _DROPOUT))
            sync = (self.dist.enabled and a < self.grad_accum - 1 and hasattr(self.model, "no_sync"))
            with self.model.no_sync() if sync else contextlib.nullcontext():
                with self._autocast():
                    targets = None
                    if self.teacher is not None:
                        targets = teacher_targets(self.teacher, ids, mask, positions, m.positions, self.target_layers)
                    loss, stats = self.model(m.input_ids, mask, positions, m.positions, m.valid, m.labels,
                                             m.selected, targets)
                (loss / self.grad_accum).backward()
            stats = torch.cat([stats.float(), eligible.sum().float()[None]]) / self.grad_accum
            stats_sum = stats if stats_sum is None else stats_sum + stats
        norm = torch.nn.utils.clip_grad_norm_(self._trainable, self.clip if self.clip > 0 else math.inf,
                                              foreach=True)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.teacher is not None:
            self.last_momentum = ema_momentum(step, self.total_steps, **self.ema)
            ema_update(*self._pairs, self.last_momentum)
        assert stats_sum is not None
        self._acc += torch.cat([stats_sum, norm.float().reshape(1)])
        bad = ~torch.isfinite(stats_sum[0]) | ~torch.isfinite(norm)
        self._first_bad = torch.where(bad & (self._first_bad < 0), torch.full_like(self._first_bad, step),
                                      self._first_bad)
        self._steps += 1

    def first_bad_step(self) -> int:
        """Earliest step (0-based, over all ranks) whose loss or gradient norm was not finite since the last
        :meth:`pop_stats`, or -1. One host sync."""
        bad = self._first_bad.double().reshape(1)
        big = 1e15  # earliest step via a max-reduction: step s -> big - s, none -> -1
        enc = all_reduce_(torch.where(bad >= 0, big - bad, torch.full_like(bad, -1.0)), self.dist, op="max")
        first = float(enc.item())
        return int(big - first) if first >= 0 else -1

    def pop_stats(self) -> dict[str, float]:
        """Means since the last call (one host sync), averaged over ranks: losses, weights, variances, grad
        norm, mask rate; plus ``first_bad_step`` (-1 when every loss was finite). Hybrid only: ``balance`` =
        w_mlm / (w_mlm + w_jepa) (the sigmoid's w) and ``mlm_share`` = w_mlm L_mlm / (w_mlm L_mlm + w_jepa L_jepa),
        the MLM part of the weighted objective (0.5 at the uncertainty fixed point), both from the interval means."""
        first_bad = self.first_bad_step()
        acc = all_reduce_(self._acc.clone(), self.dist)
        values = (acc / max(1, self._steps) / self.dist.world_size).tolist()
        out = dict(zip(STAT_NAMES, values, strict=False))
        n = len(STAT_NAMES)
        eligible = values[n]
        out["mask_rate"] = out["masked"] / eligible if eligible > 0 else 0.0
        out["grad_norm"] = values[n + 1]
        out["first_bad_step"] = first_bad
        del out["masked"]
        if self.objective == "mlm":
            for k in ("loss_jepa", "w_mlm", "w_jepa", "target_var", "pred_var"):
                out.pop(k)
        else:
            out["balance"] = out["w_mlm"] / (out["w_mlm"] + out["w_jepa"])
            weighted_mlm, weighted_jepa = out["w_mlm"] * out["loss_mlm"], out["w_jepa"] * out["loss_jepa"]
            out["mlm_share"] = weighted_mlm / (weighted_mlm + weighted_jepa) if weighted_mlm + weighted_jepa else 0.5
            out["ema_momentum"] = self.last_momentum
        out["lr"] = self.last_lr
        self._reset_stats()
        return out

    # -- evaluation --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def heldout_mlm(self, batches: Sequence[HostBatch]) -> tuple[float, int]:
        """(token-weighted mean MLM loss, masked tokens) over ``batches`` (this rank's share; summed over ranks),
        eval mode, masks seeded by ``(seed, batch index)`` so every evaluation sees the same corruption."""
        from .objectives import mlm_loss

        self.student.eval()
        total = torch.zeros(2, dtype=torch.float64, device=self.device)
        for i, batch in enumerate(batches):
            ids, seg, mask, positions = self._to_device(batch)
            self._gen.manual_seed(derive_seed(self.seed, _EVAL, self.dist.rank, i))
            m = mask_tokens(ids, self._eligible(ids, seg), replacement_ids=self._replacement, generator=self._gen,
                            **self.mask_kw)
            with self._autocast():
                h = self.student.encode(m.input_ids, mask, positions)
                logits = self.student.mlm.cls(gather_slots(h, m.positions))
            n = m.valid.sum()
            total += torch.stack([mlm_loss(logits, m.labels.reshape(-1)).double() * n, n.double()])
        self.student.train()
        all_reduce_(total, self.dist)
        loss, count = total.tolist()
        return (loss / count if count else float("nan")), int(count)

    @torch.no_grad()
    def embed(self, batch: HostBatch) -> torch.Tensor:
        """Mean-pooled last-layer student embeddings of every segment of ``batch`` (n_segments, H) float32.

        Computed in float32 whatever the training precision: in a briefly trained, strongly anisotropic encoder
        bfloat16 rounding of the shared component exceeds the spread the geometry snapshot measures."""
        self.student.eval()
        ids, seg, mask, positions = self._to_device(batch)
        with torch.autocast(self.device.type, enabled=False):
            h = self.student.encode(ids, mask, positions)
        self.student.train()
        return mean_pool_segments(h.float(), seg)

    # -- state -------------------------------------------------------------------------------------------------
    def replica_tensors(self) -> list[torch.Tensor]:
        tensors = list(self.student.parameters())
        if self.teacher is not None:
            tensors += list(self.teacher.parameters())
        return tensors

    def replicas_identical(self) -> bool:
        return replicas_identical(self.replica_tensors(), self.dist)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Everything trained that is not in the HF checkpoint: optimizer moments, teacher, predictor, balance."""
        from .checkpoint import optimizer_state

        tensors, _ = optimizer_state(self.optimizer)
        for prefix, module in self.student.trainable_extras().items():
            tensors.update({f"{prefix}.{k}": v for k, v in module.state_dict().items()})
        if self.teacher is not None:
            tensors.update({f"teacher.{k}": v for k, v in self.teacher.state_dict().items()})
        tensors["rng.torch_cpu"] = torch.get_rng_state()
        return tensors

    def optimizer_meta(self) -> dict[str, Any]:
        from .checkpoint import optimizer_state

        return optimizer_state(self.optimizer)[1]

    def load_state(self, model_state: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor],
                   optimizer_meta: dict[str, Any]) -> None:
        """Restore weights, extras, teacher and optimizer from a checkpoint's tensors."""
        from .checkpoint import load_optimizer_state

        self.student.load_hf_state_dict({k: v.to(self.device) for k, v in model_state.items()})
        for prefix, module in self.student.trainable_extras().items():
            sub = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
            module.load_state_dict(sub)
        if self.teacher is not None:
            sub = {k[len("teacher."):]: v for k, v in tensors.items() if k.startswith("teacher.")}
            self.teacher.load_state_dict(sub)
        load_optimizer_state(self.optimizer, {k: v for k, v in tensors.items() if k.startswith("optim.")},
                             optimizer_meta)
        if "rng.torch_cpu" in tensors:
            torch.set_rng_state(tensors["rng.torch_cpu"])
