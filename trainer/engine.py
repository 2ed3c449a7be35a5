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

No host sync per step: every forward's :class:`trainer.model.StepStats` (device tensors) is accumulated on the
device and read once per logging step by :meth:`Engine.pop_stats`.
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
from .config import (
    OBJECTIVES,
    EmaConfig,
    MaskConfig,
    ModelConfig,
    ObjectiveConfig,
    OptimConfig,
    PredictorConfig,
    TrainConfig,
    TrainerConfig,
    precision_for,
)
from .distributed import DistInfo, all_reduce_, replicas_identical
from .ema import ema_momentum, ema_update
from .errors import fail
from .masking import MaskedBatch, mask_tokens, replacement_vocabulary
from .model import (
    PackedBatch,
    Predictor,
    StepStats,
    Student,
    bert_config_for,
    gather_slots,
    make_teacher,
    mean_pool_segments,
    packed_batch,
    paired_parameters,
    teacher_targets,
)
from .optim import build_optimizer, lr_factor, set_lr
from .tokenizer import SpecialIds

_DROPOUT, _MASKING, _EVAL = 0, 1, 2
HostBatch = tuple[np.ndarray, np.ndarray]  # (token ids (b, L) int64, segment numbers (b, L) uint8)
#: What the engine accumulates per optimizer step between two :meth:`Engine.pop_stats` calls, in this order.
_ACCUMULATED: tuple[str, ...] = (*StepStats._fields, "eligible", "grad_norm")


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from non-negative integers (numpy SeedSequence hashing)."""
    a, b = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return (int(a) << 31) ^ int(b)


def engine_from_config(config: TrainerConfig, special: SpecialIds, *, device: torch.device, dist: DistInfo
                       ) -> Engine:
    """The engine of a run: the sections of ``config`` it needs plus what the config does not hold (the
    tokenizer's special ids, the device, the process group)."""
    return Engine(model=config.model, seq_len=config.data.seq_len, mask=config.mask, objective=config.objective,
                  predictor=config.predictor, ema=config.ema, optim=config.optim, train=config.train,
                  special=special, device=device, dist=dist)


class Engine:
    """Student (+ teacher, predictor, balance for ``hybrid``), AdamW, masking and the step logic.

    Built from the typed config sections (:func:`engine_from_config` picks them from a :class:`TrainerConfig`);
    this constructor is the one place where their fields reach the components: ``model`` (+ ``seq_len``) the
    encoder's ``BertConfig``; ``predictor`` the hybrid's predictor; ``objective`` the objective, JEPA loss and
    balance (and the balance's learning-rate scale); ``optim`` AdamW, the learning-rate schedule and clipping;
    ``ema`` the teacher's momentum schedule; ``mask`` the corruption; ``train`` the batch split, step count,
    seed, precision and ``torch.compile``. The sections are kept as attributes (``mask``, ``objective``,
    ``ema``, ``optim``) and read where they are used.
    """

    def __init__(self, *, model: ModelConfig, seq_len: int, mask: MaskConfig, objective: ObjectiveConfig,
                 predictor: PredictorConfig, ema: EmaConfig, optim: OptimConfig, train: TrainConfig,
                 special: SpecialIds, device: torch.device, dist: DistInfo):
        if objective.name not in OBJECTIVES:
            raise fail("objective", "|".join(OBJECTIVES), repr(objective.name), "Pick one of the listed objectives.")
        precision = precision_for(train.precision, device.type,
                                  device.type == "cuda" and torch.cuda.is_bf16_supported())
        if precision not in ("fp32", "bf16"):
            raise fail("train.precision", "fp32|bf16 (after resolving auto)", repr(precision), "Use fp32 or bf16.")
        global_batch, grad_accum = train.batch_size, train.grad_accum
        per_rank = global_batch // max(1, dist.world_size)
        if global_batch % (dist.world_size * grad_accum) or per_rank < grad_accum:
            raise fail("train.batch_size", f"a multiple of world size x train.grad_accum "
                       f"({dist.world_size} x {grad_accum})", str(global_batch), "Change the batch size.")
        self.mask, self.objective, self.ema, self.optim = mask, objective, ema, optim
        self.special, self.seq_len = special, seq_len
        self.global_batch, self.grad_accum, self.total_steps = global_batch, grad_accum, train.steps
        self.micro_batch = global_batch // (dist.world_size * grad_accum)
        self.seed, self.device, self.dist = train.seed, device, dist
        self.precision = precision

        torch.manual_seed(derive_seed(train.seed, 0xC0FFEE))  # parameter init: identical on every rank
        hf = bert_config_for(model, seq_len=seq_len, vocab_size=special.vocab_size, pad_token_id=special.pad)
        predictor_net = bal = None
        if objective.name == "hybrid":
            width, heads = predictor.width_and_heads(model.hidden_size)
            predictor_net = Predictor(model.hidden_size, width=width, layers=predictor.layers, heads=heads,
                                      mlp_ratio=predictor.mlp_ratio)
            bal = Balance(objective.balance, objective.balance_init)
        self.student = Student(hf, objective=objective.name, predictor=predictor_net, balance=bal,
                               jepa_kind=objective.loss, smooth_l1_beta=objective.smooth_l1_beta).to(device)
        self.teacher = make_teacher(self.student) if objective.name == "hybrid" else None
        self._pairs = paired_parameters(self.teacher, self.student.mlm.bert) if self.teacher is not None else None
        self.optimizer = build_optimizer(self.student.named_parameters(), lr=optim.lr, betas=tuple(optim.betas),
                                         eps=optim.eps, weight_decay=optim.weight_decay,
                                         balance_lr_scale=objective.balance_lr_scale, fused=device.type == "cuda")
        self._trainable = [p for p in self.student.parameters() if p.requires_grad]
        if train.compile:
            kw = {"mode": train.compile_mode} if train.compile_mode else {}
            self.student.compile(**kw)
            if self.teacher is not None:
                self.teacher.compile(**kw)
        #: What a training forward calls: the student, wrapped in DDP under torchrun.
        self.step_module: nn.Module = self.student
        if dist.enabled:
            import inspect

            from torch.nn.parallel import DistributedDataParallel as DDP

            # buffers (position ids) are constants: no per-forward sync (the keyword was renamed in torch 2.13)
            renamed = "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters
            no_sync = {"forward_sync_buffers": False} if renamed else {"broadcast_buffers": False}
            self.step_module = DDP(self.student, device_ids=[device.index] if device.type == "cuda" else None,
                                   **no_sync)
        self._replacement = replacement_vocabulary(special.vocab_size, special.all, device)
        self._specials = torch.tensor(special.all, dtype=torch.long, device=device)
        self._gen = torch.Generator(device=device)
        self._reset_stats()
        self.last_lr = optim.lr * self._lr_factor(0)
        self.last_momentum = ema.start if objective.name == "hybrid" else float("nan")

    # -- helpers -----------------------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def _lr_factor(self, step: int) -> float:
        o = self.optim
        return lr_factor(step, total_steps=self.total_steps, warmup_steps=o.warmup_steps, schedule=o.schedule,
                         min_ratio=o.min_lr_ratio)

    def _to_device(self, batch: HostBatch) -> PackedBatch:
        tokens, segments = batch
        return packed_batch(tokens, segments, self.device)

    def _eligible(self, batch: PackedBatch) -> torch.Tensor:
        return (batch.segments > 0) & ~torch.isin(batch.input_ids, self._specials)

    def _mask(self, batch: PackedBatch, eligible: torch.Tensor) -> MaskedBatch:
        """Corrupt ``batch`` with the ``mask`` section's settings, drawing from ``self._gen`` (seeded by the
        caller)."""
        k = self.mask
        return mask_tokens(batch.input_ids, eligible, rate=k.rate, mask_prob=k.mask_prob, random_prob=k.random_prob,
                           span_length=k.span_length, mask_id=self.special.mask, replacement_ids=self._replacement,
                           generator=self._gen)

    def _reset_stats(self) -> None:
        self._acc = torch.zeros(len(_ACCUMULATED), dtype=torch.float32, device=self.device)
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
        self.last_lr = set_lr(self.optimizer, self.optim.lr, self._lr_factor(step))
        self.step_module.train()
        step_sum = None  # this step's StepStats vector + eligible tokens, averaged over micro-batches
        for a, host_batch in enumerate(micro_batches):
            g = self.dist.rank * self.grad_accum + a
            batch = self._to_device(host_batch)
            eligible = self._eligible(batch)
            self._gen.manual_seed(derive_seed(self.seed, step, g, _MASKING))
            masked = self._mask(batch, eligible)
            torch.manual_seed(derive_seed(self.seed, step, g, _DROPOUT))
            sync = (self.dist.enabled and a < self.grad_accum - 1 and hasattr(self.step_module, "no_sync"))
            with self.step_module.no_sync() if sync else contextlib.nullcontext():
                with self._autocast():
                    targets = None
                    if self.teacher is not None:
                        targets = teacher_targets(self.teacher, batch.input_ids, batch.attention_mask,
                                                  batch.position_ids, masked.slots, self.objective.target_layers)
                    loss, stats = self.step_module(masked, batch.attention_mask, batch.position_ids, targets)
                (loss / self.grad_accum).backward()
            micro = torch.cat([stats.as_vector(), eligible.sum().float()[None]]) / self.grad_accum
            step_sum = micro if step_sum is None else step_sum + micro
        clip = self.optim.clip_grad_norm
        norm = torch.nn.utils.clip_grad_norm_(self._trainable, clip if clip > 0 else math.inf, foreach=True)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.teacher is not None:
            e = self.ema
            self.last_momentum = ema_momentum(step, self.total_steps, start=e.start, end=e.end, schedule=e.schedule)
            ema_update(*self._pairs, self.last_momentum)
        assert step_sum is not None
        self._acc += torch.cat([step_sum, norm.float().reshape(1)])
        loss_index = StepStats._fields.index("loss")
        bad = ~torch.isfinite(step_sum[loss_index]) | ~torch.isfinite(norm)
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
        out = dict(zip(_ACCUMULATED, (acc / max(1, self._steps) / self.dist.world_size).tolist(), strict=True))
        masked, eligible, grad_norm = out.pop("masked"), out.pop("eligible"), out.pop("grad_norm")
        out["mask_rate"] = masked / eligible if eligible > 0 else 0.0
        out["grad_norm"] = grad_norm
        out["first_bad_step"] = first_bad
        if self.objective.name == "mlm":
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
        for i, host_batch in enumerate(batches):
            batch = self._to_device(host_batch)
            self._gen.manual_seed(derive_seed(self.seed, _EVAL, self.dist.rank, i))
            masked = self._mask(batch, self._eligible(batch))
            with self._autocast():
                h = self.student.encode(masked.input_ids, batch.attention_mask, batch.position_ids)
                logits = self.student.mlm.cls(gather_slots(h, masked.slots))
            n = masked.valid.sum()
            total += torch.stack([mlm_loss(logits, masked.labels.reshape(-1)).double() * n, n.double()])
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
        packed = self._to_device(batch)
        with torch.autocast(self.device.type, enabled=False):
            h = self.student.encode(packed.input_ids, packed.attention_mask, packed.position_ids)
        self.student.train()
        return mean_pool_segments(h.float(), packed.segments)

    @torch.no_grad()
    def embed_teacher(self, batch: HostBatch) -> torch.Tensor:
        """As :meth:`embed`, from the hybrid's EMA teacher (clean text, float32). Raises for ``mlm``."""
        if self.teacher is None:
            raise fail("embed_teacher", "a hybrid engine (with a teacher)", "an mlm engine", "Use embed().")
        packed = self._to_device(batch)
        with torch.autocast(self.device.type, enabled=False):
            h = self.teacher(input_ids=packed.input_ids, attention_mask=packed.attention_mask,
                             position_ids=packed.position_ids).last_hidden_state
        return mean_pool_segments(h.float(), packed.segments)

    @torch.no_grad()
    def jepa_variances(self, batches: Sequence[HostBatch]) -> tuple[float, float, int]:
        """Collapse watch, hybrid only: ``(pred_var, target_var, n)`` = per-feature variance over the ``n`` masked
        slots of ``batches`` (the held-out batches, with :meth:`heldout_mlm`'s fixed masks) of the predictor's
        outputs and of the teacher's targets, each row first layer-normed without parameters (scale-free, as the
        training rows' ``pred_var``/``target_var``), averaged over features. Eval mode, float32, no grad."""
        from .objectives import masked_feature_variance

        if self.teacher is None or self.student.predictor is None:
            raise fail("jepa_variances", "a hybrid engine", "an mlm engine", "Only the hybrid has a predictor.")
        self.student.eval()
        preds, targets, valid = [], [], []
        try:
            for i, host_batch in enumerate(batches):
                batch = self._to_device(host_batch)
                self._gen.manual_seed(derive_seed(self.seed, _EVAL, self.dist.rank, i))
                masked = self._mask(batch, self._eligible(batch))
                with torch.autocast(self.device.type, enabled=False):
                    h = self.student.encode(masked.input_ids, batch.attention_mask, batch.position_ids)
                    preds.append(gather_slots(self.student.predictor(h, masked.selected, batch.attention_mask),
                                              masked.slots).float())
                    targets.append(teacher_targets(self.teacher, batch.input_ids, batch.attention_mask,
                                                   batch.position_ids, masked.slots, self.objective.target_layers))
                valid.append(masked.valid.reshape(-1))
        finally:
            self.student.train()
        if not valid:
            return float("nan"), float("nan"), 0
        ok = torch.cat(valid)
        n = int(ok.sum().item())
        return (float(masked_feature_variance(torch.cat(preds), ok)),
                float(masked_feature_variance(torch.cat(targets), ok)), n)

    def balance_weights(self) -> tuple[float, float] | None:
        """The hybrid's current ``(w_mlm, w_jepa)``; None for ``mlm``."""
        return self.student.balance.weights() if self.student.balance is not None else None

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
