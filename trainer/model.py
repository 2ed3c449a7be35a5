"""The encoder (a ``transformers`` BertForMaskedLM with SDPA attention), the hybrid's predictor, the student that
computes both losses from one forward, the EMA teacher, and the packed-batch -> model-input conversion.

* Attention: SDPA. A batch whose rows each hold one segment without padding runs with no mask (the flash
  kernel on GPU); otherwise a boolean (B, 1, L, L) mask lets a token attend only to tokens of its own segment
  (so padding is never attended to and packed documents never see each other), and position ids restart at 0
  in every segment.
* MLM head: BERT's transform + decoder (tied to the word embeddings), applied only at the gathered slots.
* The saved model also contains BERT's pooler (``bert.pooler``, initialised like BERT and never trained: no
  objective uses it) so ``AutoModel.from_pretrained`` finds every weight it expects.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .balance import Balance
from .config import ModelConfig
from .errors import fail
from .masking import MaskedBatch
from .objectives import jepa_loss, layer_norm_targets, masked_feature_variance, mlm_loss


class StepStats(NamedTuple):
    """Statistics of one student forward (:meth:`Student.forward`): detached 0-d tensors that stay on the device,
    so a training step needs no host sync; the engine accumulates them and reads them once per logging step."""

    #: The optimised objective (``loss_mlm`` for ``mlm``; the balanced sum for ``hybrid``).
    loss: torch.Tensor
    loss_mlm: torch.Tensor
    #: 0 for ``mlm``.
    loss_jepa: torch.Tensor
    #: Effective weights of the two losses (1 and 0 for ``mlm``).
    w_mlm: torch.Tensor
    w_jepa: torch.Tensor
    #: Collapse watch: per-feature variance of the layer-normed targets / predictions over the masked tokens
    #: (0 for ``mlm``).
    target_var: torch.Tensor
    pred_var: torch.Tensor
    #: Number of masked (valid) slots in the micro-batch.
    masked: torch.Tensor

    def as_vector(self) -> torch.Tensor:
        """The fields as one float32 vector, in field order (for accumulation without a host sync)."""
        return torch.stack([t.float() for t in self])


@dataclass(frozen=True)
class PackedBatch:
    """A packed host batch on the device (:func:`packed_batch`): the clean token ids and their layout."""

    #: (B, L) long: the clean token ids.
    input_ids: torch.Tensor
    #: (B, L): each token's segment number within its row (0 = padding).
    segments: torch.Tensor
    #: (B, 1, L, L) bool, True where two tokens share a segment; None when every row is one segment without
    #: padding (then SDPA runs without a mask).
    attention_mask: torch.Tensor | None
    #: (B, L) long: the encoder's position ids, restarting at 0 in every segment; None = 0 .. L-1 in every row.
    position_ids: torch.Tensor | None


def bert_config(*, vocab_size: int, hidden_size: int, num_layers: int, num_heads: int, intermediate_size: int,
                max_position_embeddings: int, hidden_dropout: float, attention_dropout: float, hidden_act: str,
                layer_norm_eps: float, initializer_range: float, pad_token_id: int) -> Any:
    """A ``BertConfig`` requesting SDPA attention."""
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                      num_attention_heads=num_heads, intermediate_size=intermediate_size,
                      hidden_dropout_prob=hidden_dropout, attention_probs_dropout_prob=attention_dropout,
                      hidden_act=hidden_act, layer_norm_eps=layer_norm_eps, initializer_range=initializer_range,
                      max_position_embeddings=max_position_embeddings, pad_token_id=pad_token_id,
                      type_vocab_size=2, attn_implementation="sdpa")


def bert_config_for(model: ModelConfig, *, seq_len: int, vocab_size: int, pad_token_id: int) -> Any:
    """The ``BertConfig`` of the ``model`` section for rows of ``seq_len`` tokens (``model.max_position_embeddings``
    0 = ``seq_len``) and the tokenizer's vocabulary size and padding id."""
    return bert_config(vocab_size=vocab_size, hidden_size=model.hidden_size, num_layers=model.num_layers,
                       num_heads=model.num_heads, intermediate_size=model.intermediate_size,
                       max_position_embeddings=model.max_position_embeddings or seq_len,
                       hidden_dropout=model.hidden_dropout, attention_dropout=model.attention_dropout,
                       hidden_act=model.hidden_act, layer_norm_eps=model.layer_norm_eps,
                       initializer_range=model.initializer_range, pad_token_id=pad_token_id)


def packed_inputs(segments: np.ndarray, device: torch.device | str
                  ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
    """From host segment numbers (B, L) (0 = padding): (attention mask (B, 1, L, L) bool or None, position ids
    (B, L) or None, segments on ``device``). Decided on the host, so no device sync: ``None, None`` when every
    row is one segment without padding."""
    if not isinstance(segments, np.ndarray) or segments.ndim != 2:
        raise fail("segments", "a 2-D numpy array (rows, seq_len) of segment numbers",
                   f"{type(segments).__name__} {getattr(segments, 'shape', '')}", "Pass PackedSplit.take(...)[1].")
    seg = torch.from_numpy(np.ascontiguousarray(segments))
    seg_dev = seg.to(device, non_blocking=True)
    if segments.size and segments.min() == 1 and segments.max() == 1:
        return None, None, seg_dev
    s = seg_dev.long()
    mask = (s[:, None, :, None] == s[:, None, None, :])
    idx = torch.arange(s.shape[1], device=s.device).expand_as(s)
    starts = torch.where(torch.ne(s, F.pad(s[:, :-1], (1, 0), value=-1)), idx, torch.zeros_like(idx))
    positions = idx - torch.cummax(starts, dim=1).values
    return mask, positions, seg_dev


def packed_batch(tokens: np.ndarray, segments: np.ndarray, device: torch.device) -> PackedBatch:
    """Host token ids and segment numbers (B, L) -> :class:`PackedBatch` on ``device`` (pinned, non-blocking
    copies on CUDA; no device sync)."""
    ids = torch.from_numpy(np.ascontiguousarray(tokens, dtype=np.int64))
    if device.type == "cuda":
        ids = ids.pin_memory()
    ids = ids.to(device, non_blocking=True)
    mask, positions, seg = packed_inputs(segments, device)
    return PackedBatch(input_ids=ids, segments=seg, attention_mask=mask, position_ids=positions)


class _PredictorBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, mlp_ratio * width)
        self.fc2 = nn.Linear(mlp_ratio * width, width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.proj(att.transpose(1, 2).reshape(b, n, d))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class Predictor(nn.Module):
    """Pre-LN transformer from the student's last hidden states (B, L, H) to predicted teacher targets (B, L, H).

    Input projection H -> width, plus a learned embedding added at the target positions (so the predictor knows
    where it is asked to predict, including the unchanged 10%); ``layers`` blocks with SDPA under the same
    segment mask as the encoder; final LayerNorm and projection width -> H.
    """

    def __init__(self, hidden_size: int, *, width: int, layers: int, heads: int, mlp_ratio: int = 4):
        super().__init__()
        if width % heads:
            raise fail("predictor.hidden_size", f"a multiple of predictor.heads ({heads})", str(width),
                       "Change one of the two.")
        self.inp = nn.Linear(hidden_size, width)
        self.target_embed = nn.Parameter(torch.zeros(width))
        self.blocks = nn.ModuleList([_PredictorBlock(width, heads, mlp_ratio) for _ in range(layers)])
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, hidden_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.target_embed, std=0.02)

    def forward(self, hidden: torch.Tensor, is_target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = self.inp(hidden) + is_target[..., None].to(hidden.dtype) * self.target_embed.to(hidden.dtype)
        for block in self.blocks:
            x = block(x, mask)
        return self.out(self.norm(x))


def gather_slots(h: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """Hidden states (B, L, D) at the sequence indices ``slots`` (B, K) -> (B * K, D)."""
    idx = slots[..., None].expand(-1, -1, h.shape[-1])
    return torch.gather(h, 1, idx).reshape(-1, h.shape[-1])


class Student(nn.Module):
    """The trained model: ``mlm`` (BertForMaskedLM: ``mlm.bert`` encoder + ``mlm.cls`` head), and for the hybrid a
    ``predictor`` and the ``balance``. ``pooler`` is BERT's pooler, kept only for the saved checkpoint."""

    def __init__(self, config: Any, *, objective: str, predictor: Predictor | None = None,
                 balance: Balance | None = None, jepa_kind: str = "cosine", smooth_l1_beta: float = 1.0):
        super().__init__()
        from transformers import BertForMaskedLM
        from transformers.models.bert.modeling_bert import BertPooler

        if objective not in ("mlm", "hybrid"):
            raise fail("objective", "mlm|hybrid", repr(objective), "Pick one of the listed objectives.")
        if objective == "hybrid" and (predictor is None or balance is None):
            raise fail("Student", "a predictor and a balance for the hybrid objective", "None", "Pass both.")
        self.objective, self.jepa_kind, self.smooth_l1_beta = objective, jepa_kind, smooth_l1_beta
        self.mlm = BertForMaskedLM(config)
        self.pooler = BertPooler(config)
        nn.init.normal_(self.pooler.dense.weight, std=config.initializer_range)
        nn.init.zeros_(self.pooler.dense.bias)
        self.pooler.requires_grad_(False)
        self.predictor = predictor
        self.balance = balance

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
               position_ids: torch.Tensor | None) -> torch.Tensor:
        """Last hidden states (B, L, H)."""
        return self.mlm.bert(input_ids=input_ids, attention_mask=attention_mask,
                             position_ids=position_ids).last_hidden_state

    def forward(self, masked: MaskedBatch, attention_mask: torch.Tensor | None, position_ids: torch.Tensor | None,
                targets: torch.Tensor | None = None) -> tuple[torch.Tensor, StepStats]:
        """One student forward on the corrupted ids ``masked.input_ids`` laid out by ``attention_mask`` and
        ``position_ids`` (:class:`PackedBatch`); ``targets`` are the teacher's (hybrid only). Returns the total
        loss and the step's :class:`StepStats`."""
        h = self.encode(masked.input_ids, attention_mask, position_ids)
        logits = self.mlm.cls(gather_slots(h, masked.slots))
        l_mlm = mlm_loss(logits, masked.labels.reshape(-1))
        flat_valid = masked.valid.reshape(-1)
        n_masked = flat_valid.sum().float()
        if self.objective == "mlm":
            zero = l_mlm.detach() * 0
            return l_mlm, StepStats(loss=l_mlm.detach(), loss_mlm=l_mlm.detach(), loss_jepa=zero, w_mlm=zero + 1,
                                    w_jepa=zero, target_var=zero, pred_var=zero, masked=n_masked)
        pred = gather_slots(self.predictor(h, masked.selected, attention_mask), masked.slots)
        l_jepa = jepa_loss(pred, targets, flat_valid, kind=self.jepa_kind, beta=self.smooth_l1_beta)
        total, w_mlm, w_jepa = self.balance(l_mlm, l_jepa)
        return total, StepStats(loss=total.detach(), loss_mlm=l_mlm.detach(), loss_jepa=l_jepa.detach(),
                                w_mlm=w_mlm, w_jepa=w_jepa,
                                target_var=masked_feature_variance(targets, flat_valid).detach(),
                                pred_var=masked_feature_variance(pred.detach(), flat_valid), masked=n_masked)

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """The BertForMaskedLM state dict (tied copies dropped, as ``save_pretrained`` does) plus the pooler,
        detached, contiguous, on the CPU."""
        out: dict[str, torch.Tensor] = {}
        seen: set[int] = set()
        for name, t in self.mlm.state_dict().items():
            ptr = t.data_ptr()
            if ptr in seen:
                continue
            seen.add(ptr)
            out[name] = t.detach().to("cpu", copy=True).contiguous()
        for name, t in self.pooler.state_dict().items():
            out[f"bert.pooler.{name}"] = t.detach().to("cpu", copy=True).contiguous()
        return out

    def load_hf_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`hf_state_dict` (strict about everything but the tied copies)."""
        pooler = {k[len("bert.pooler."):]: v for k, v in state.items() if k.startswith("bert.pooler.")}
        rest = {k: v for k, v in state.items() if not k.startswith("bert.pooler.")}
        result = self.mlm.load_state_dict(rest, strict=False)
        tied = {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}
        missing = [k for k in result.missing_keys if k not in tied]
        if missing or result.unexpected_keys:
            raise fail("checkpoint weights", "a BertForMaskedLM state dict of this config",
                       f"missing {missing[:5]}, unexpected {list(result.unexpected_keys)[:5]}",
                       "Resume with the config the checkpoint was written with.")
        self.pooler.load_state_dict(pooler)
        self.mlm.tie_weights()

    def trainable_extras(self) -> dict[str, nn.Module]:
        """Trained modules that are not part of the HF checkpoint (saved in the trainer state)."""
        return {k: m for k, m in (("predictor", self.predictor), ("balance", self.balance)) if m is not None}


def make_teacher(student: Student) -> nn.Module:
    """A frozen copy of the student's encoder (``BertModel``, eval mode: no dropout)."""
    teacher = copy.deepcopy(student.mlm.bert)
    teacher.requires_grad_(False)
    return teacher.eval()


def teacher_targets(teacher: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                    position_ids: torch.Tensor | None, slots: torch.Tensor, top_k: int) -> torch.Tensor:
    """Teacher targets on the clean ids at the gathered ``slots`` (sequence indices, :class:`MaskedBatch`):
    (B * K, H) float32 (see objectives). Runs under ``torch.inference_mode``; the small result is cloned into a
    normal tensor for the loss."""
    with torch.inference_mode():
        out = teacher(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                      output_hidden_states=top_k > 1)
        layers = [out.last_hidden_state] if top_k == 1 else list(out.hidden_states[-top_k:])
        targets = layer_norm_targets([gather_slots(h, slots) for h in layers])
    return targets.clone()


def paired_parameters(teacher: nn.Module, encoder: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(teacher params, student encoder params) matched by name."""
    t = dict(teacher.named_parameters())
    s = dict(encoder.named_parameters())
    if set(t) != set(s):
        raise fail("teacher", "the same parameters as the student encoder", f"{sorted(set(t) ^ set(s))[:5]} differ",
                   "Rebuild the teacher from the student.")
    names = sorted(t)
    return [t[n] for n in names], [s[n] for n in names]


def mean_pool_segments(hidden: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` (B, L, H) over the real tokens (including [CLS]/[SEP]) of every segment: (n_segments,
    H) float32, rows in (row, segment) order. Padding (segment 0) is excluded."""
    if hidden.ndim != 3 or segments.shape != hidden.shape[:2]:
        raise fail("mean_pool_segments", "hidden (B, L, H) and segments (B, L)",
                   f"{tuple(hidden.shape)} and {tuple(segments.shape)}", "Pass the encoder output and its segments.")
    b, _, d = hidden.shape
    seg = segments.long()
    per_row = int(seg.max().item()) if seg.numel() else 0
    if per_row == 0:
        return hidden.new_zeros((0, d), dtype=torch.float32)
    flat = (torch.arange(b, device=seg.device)[:, None] * per_row + seg - 1).reshape(-1)
    real = seg.reshape(-1) > 0
    sums = torch.zeros(b * per_row, d, dtype=torch.float32, device=hidden.device)
    sums.index_add_(0, flat[real], hidden.reshape(-1, d)[real].float())
    counts = torch.zeros(b * per_row, dtype=torch.float32, device=hidden.device)
    counts.index_add_(0, flat[real], torch.ones_like(flat[real], dtype=torch.float32))
    keep = counts > 0
    return sums[keep] / counts[keep, None]
