"""Trainer configuration: frozen dataclasses, the three presets, and ``section.field=value`` overrides.

A run is fully described by a :class:`TrainerConfig` (sections ``model``, ``data``, ``mask``, ``objective``,
``predictor``, ``ema``, ``optim``, ``train``, ``watch``). :func:`resolve_config` builds it from a preset, the objective
and command-line overrides; the resolved config is saved with every checkpoint (``trainer_config.json``) and
compared field by field on ``--resume``.

Presets (every value can be overridden):

* ``tiny``  — CPU demo and tests: 2 layers, d=128, 2 heads, FFN 512, 64 tokens, WordPiece vocab 8192 trained on
  the corpus, batch 32, 300 steps, lr 1e-3, no dropout.
* ``paper`` — the reference study's encoder: 6 layers, d=512, 8 heads, FFN 2048, 128 tokens, vocab 30522
  (~35M parameters with embeddings), batch 256, lr 5e-4, 50k steps, dropout 0.1. The study's exact schedule is
  not published with its tables; these are standard values for a model of this size.
* ``base``  — BERT-base: 12 layers, d=768, 12 heads, FFN 3072, vocab 30522, 128 tokens, batch 256, lr 2e-4;
  a one-layer predictor (width 384), so the hybrid step stays near 3/4 of the MLM step's throughput (the teacher
  forward alone costs ~1/4 of a student forward + backward).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, get_args, get_origin

from .errors import TrainerError, fail

Objective = Literal["mlm", "hybrid"]
Preset = Literal["tiny", "paper", "base"]
OBJECTIVES: tuple[str, ...] = get_args(Objective)
PRESETS: tuple[str, ...] = get_args(Preset)

Balance = Literal["uncertainty", "sigmoid"]
JepaLoss = Literal["cosine", "smooth_l1", "mse"]
EmaSchedule = Literal["linear", "cosine", "constant"]
LrSchedule = Literal["cosine", "linear", "constant"]
Precision = Literal["auto", "fp32", "bf16"]

CONFIG_FORMAT = "embedgeom-trainer-checkpoint"
CONFIG_VERSION = 1


@dataclass(frozen=True)
class ModelConfig:
    """The BERT encoder (``transformers.BertConfig`` fields; the vocabulary size comes from the tokenizer)."""

    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int = 512
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    #: Position embeddings; 0 = ``data.seq_len`` (positions beyond the training length would stay untrained).
    max_position_embeddings: int = 0


@dataclass(frozen=True)
class DataConfig:
    """Corpus -> tokenizer -> packed fixed-length rows (see :mod:`trainer.data`)."""

    seq_len: int = 64
    #: ``"wordpiece"``: train a BERT WordPiece tokenizer on the training split (offline default);
    #: anything else is an HF tokenizer path or hub id for ``AutoTokenizer.from_pretrained``.
    tokenizer: str = "wordpiece"
    vocab_size: int = 8192
    lowercase: bool = True
    #: Fraction of *documents* held out (every round(1/holdout)-th document, starting with the first).
    holdout: float = 0.05
    #: Shortest document piece started at the end of a partly filled row (shorter tails -> padding).
    min_piece: int = 8
    #: Read at most this many documents (0 = all); for ``hf:`` streams.
    max_documents: int = 0
    #: Train the WordPiece tokenizer on at most this many training documents (0 = all).
    tokenizer_documents: int = 200_000
    text_field: str = "text"
    #: Where tokenised corpora are cached ("" = ``$EMBEDGEOM_CACHE``/trainer, see ``embedgeom.storage.cache_root``).
    cache_dir: str = ""


@dataclass(frozen=True)
class MaskConfig:
    """MLM corruption (see :func:`trainer.masking.mask_tokens`)."""

    rate: float = 0.15
    #: Of the selected tokens: this share -> [MASK], ``random_prob`` -> a random token, the rest unchanged.
    mask_prob: float = 0.8
    random_prob: float = 0.1
    #: 1 = independent tokens; > 1 = contiguous spans of this length (span/block targets for the hybrid).
    span_length: int = 1


@dataclass(frozen=True)
class ObjectiveConfig:
    """Which objective, and the hybrid's JEPA loss and balance. ``name`` is set by the ``objective`` argument."""

    name: Objective = "mlm"
    #: ``uncertainty``: L = exp(-s1) L_mlm + s1 + exp(-s2) L_jepa + s2 (Kendall et al. 2018);
    #: ``sigmoid``: L = w L_mlm + (1 - w) L_jepa, w = sigmoid(theta) (the reference study).
    balance: Balance = "uncertainty"
    #: Initial theta (sigmoid) or initial s1 = s2 (uncertainty); 0 = equal weights.
    balance_init: float = 0.0
    #: Learning rate of the balance scalars relative to ``optim.lr`` (a scalar under Adam moves ~lr per step).
    balance_lr_scale: float = 1.0
    loss: JepaLoss = "cosine"
    smooth_l1_beta: float = 1.0
    #: Targets: parameter-free layer norm of each of the teacher's top K layers, averaged (data2vec); 1 = last.
    target_layers: int = 1


@dataclass(frozen=True)
class PredictorConfig:
    """The hybrid's predictor: a small pre-LN transformer over the student's last hidden states."""

    layers: int = 1
    #: Width; 0 = half the encoder's hidden size.
    hidden_size: int = 0
    #: Attention heads; 0 = width // 32 (at least 1).
    heads: int = 0
    mlp_ratio: int = 4

    def width_and_heads(self, encoder_hidden_size: int) -> tuple[int, int]:
        """(width, heads) after the 0 = automatic rules, for an encoder of ``encoder_hidden_size``."""
        width = self.hidden_size or max(1, encoder_hidden_size // 2)
        return width, self.heads or max(1, width // 32)


@dataclass(frozen=True)
class EmaConfig:
    """Teacher momentum tau(step): teacher <- tau teacher + (1 - tau) student after every optimizer step."""

    start: float = 0.996
    end: float = 1.0
    schedule: EmaSchedule = "linear"


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up then cosine/linear decay to ``min_lr_ratio * lr``; global-norm clipping."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    weight_decay: float = 0.01
    warmup_steps: int = 30
    schedule: LrSchedule = "cosine"
    min_lr_ratio: float = 0.0
    #: Clip the global gradient norm to this value (0 = no clipping; the norm is still logged).
    clip_grad_norm: float = 1.0


@dataclass(frozen=True)
class TrainConfig:
    """Loop, batch, precision, logging, evaluation and checkpoint cadence."""

    steps: int = 300
    #: Global batch in sequences per optimizer step (split over ranks and accumulation micro-steps).
    batch_size: int = 32
    grad_accum: int = 1
    seed: int = 0
    #: ``auto`` = bf16 autocast on a CUDA device that supports it, else fp32.
    precision: Precision = "auto"
    compile: bool = False
    #: ``torch.compile`` mode when ``compile`` is on (e.g. ``max-autotune-no-cudagraphs``; "" = torch's default).
    compile_mode: str = ""
    log_every: int = 10
    #: Held-out MLM loss every this many steps (0 = only at the end).
    eval_every: int = 100
    eval_batches: int = 4
    #: Geometry snapshot (effective rank, RankMe, uniformity of mean-pooled held-out texts); 0 = with every eval.
    #: With ``watch.enabled`` it is taken at every evaluation as well (the collapse watch reads it).
    geometry_every: int = 0
    geometry_texts: int = 256
    ckpt_every: int = 100
    keep_last: int = 3
    #: Stop after this step of the schedule, with an evaluation and a checkpoint (0 = train to ``steps``): the
    #: learning-rate and EMA schedules still span ``steps``, ``run.json`` says ``"stopped"`` and ``--resume``
    #: continues on the same curve (with a later or no ``stop_after``). For training in chunks.
    stop_after: int = 0


@dataclass(frozen=True)
class WatchConfig:
    """Collapse watch: at every evaluation (``train.eval_every``, step 0 and the end) the geometry snapshot of
    held-out text gives the student's (and the hybrid teacher's) effective rank and RankMe of mean-pooled
    last-layer states, and the hybrid's predictor/target variance ratio at fixed masked slots. Each criterion
    below warns once (:class:`trainer.CollapseWarning`) the first time it trips at or after the grace period
    (``grace_steps``); a threshold of 0 turns one off. None of these fields changes training (they may differ
    on ``--resume``)."""

    #: Compute the watch numbers (and the geometry snapshot they come from) at every evaluation.
    enabled: bool = True
    #: ``rank_drop``: the student's effective rank fell below this fraction of its step-0 value.
    rank_fraction: float = 0.35
    #: ``rank_floor``: the student's effective rank fell below this absolute value.
    rank_floor: float = 2.0
    #: ``rankme_floor``: the student's RankMe (uncentred spectrum) fell below this value.
    rankme_floor: float = 1.5
    #: ``var_ratio`` (hybrid): predictor-output variance / teacher-target variance fell below this.
    var_ratio: float = 0.1
    #: ``target_var_floor`` (hybrid): the teacher targets' per-feature variance over masked tokens fell below this.
    target_var_floor: float = 0.01
    #: Criteria are checked from this step on; -1 = three times ``optim.warmup_steps``. Early in training
    #: every run passes through a phase where the predictor outputs the mean target (variance ratio ~1e-3) and
    #: RankMe dips, which healthy runs leave within about 3 warm-ups (measured: trainer/README.md).
    grace_steps: int = -1
    #: Held-out batches (``train.batch_size`` rows each; at least one micro-batch) for the variance ratio.
    batches: int = 1

    def first_checked_step(self, warmup_steps: int) -> int:
        """The first step at which the criteria are checked (``grace_steps``, -1 = 3 x ``warmup_steps``; never 0)."""
        return max(1, 3 * warmup_steps if self.grace_steps < 0 else self.grace_steps)


@dataclass(frozen=True)
class TrainerConfig:
    """Everything that defines a training run."""

    preset: Preset = "tiny"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready nested dict (tuples become lists)."""
        return _jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainerConfig:
        """Inverse of :meth:`to_dict`; unknown sections/keys raise :class:`TrainerError`."""
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in ("format", "version", "corpus", "corpus_digest"):
                continue
            if key not in _SECTIONS and key != "preset":
                raise fail("trainer config", f"keys from {sorted((*_SECTIONS, 'preset'))}", repr(key),
                           "The file was not written by this trainer version.")
            if key == "preset":
                kwargs[key] = value
                continue
            section_cls = _SECTIONS[key]
            sub = {}
            for name, raw in value.items():
                hint = _hints(section_cls).get(name)
                if hint is None:
                    raise fail(f"trainer config {key}", f"a field of {sorted(_hints(section_cls))}", repr(name),
                               "The file was not written by this trainer version.")
                sub[name] = tuple(raw) if isinstance(raw, list) else raw
            kwargs[key] = section_cls(**sub)
        return cls(**kwargs)


_SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "mask": MaskConfig,
    "objective": ObjectiveConfig,
    "predictor": PredictorConfig,
    "ema": EmaConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
    "watch": WatchConfig,
}

#: Fields that may differ between a run and its resumption: they do not change the numbers of training.
RUNTIME_FIELDS: frozenset[str] = frozenset({
    "data.cache_dir",
    "train.log_every", "train.eval_every", "train.eval_batches", "train.geometry_every", "train.geometry_texts",
    "train.ckpt_every", "train.keep_last", "train.compile", "train.compile_mode", "train.stop_after",
    *(f"watch.{f.name}" for f in fields(WatchConfig)),
})


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _preset_values(preset: str) -> dict[str, dict[str, Any]]:
    if preset == "tiny":
        return {"objective": {"balance_lr_scale": 10.0}}
    if preset == "paper":
        return {
            "model": {"hidden_size": 512, "num_layers": 6, "num_heads": 8, "intermediate_size": 2048,
                      "hidden_dropout": 0.1, "attention_dropout": 0.1},
            "data": {"vocab_size": 30522, "seq_len": 128},
            "predictor": {"layers": 2, "hidden_size": 256, "heads": 4},
            "optim": {"lr": 5e-4, "warmup_steps": 2500},
            "train": {"steps": 50_000, "batch_size": 256, "log_every": 50, "eval_every": 1000, "ckpt_every": 5000,
                      "eval_batches": 8, "geometry_texts": 1024},
        }
    if preset == "base":
        return {
            "model": {"hidden_size": 768, "num_layers": 12, "num_heads": 12, "intermediate_size": 3072,
                      "hidden_dropout": 0.1, "attention_dropout": 0.1},
            "data": {"vocab_size": 30522, "seq_len": 128},
            "predictor": {"layers": 1, "hidden_size": 384, "heads": 6},
            "optim": {"lr": 2e-4, "warmup_steps": 5000},
            "train": {"steps": 100_000, "batch_size": 256, "log_every": 50, "eval_every": 2000, "ckpt_every": 5000,
                      "eval_batches": 8, "geometry_texts": 1024},
        }
    raise fail("preset", f"one of {'|'.join(PRESETS)}", repr(preset), "Pick one of the listed presets.")


def preset_config(preset: str, objective: str = "mlm") -> TrainerConfig:
    """The preset's config for ``objective`` (``mlm`` or ``hybrid``), before overrides."""
    if objective not in OBJECTIVES:
        raise fail("objective", f"one of {'|'.join(OBJECTIVES)}", repr(objective), "Pick one of the listed objectives.")
    values = _preset_values(preset)
    sections = {}
    for name, cls in _SECTIONS.items():
        sections[name] = cls(**values.get(name, {}))
    sections["objective"] = replace(sections["objective"], name=objective)
    return TrainerConfig(preset=preset, **sections)  # type: ignore[arg-type]


def valid_keys() -> list[str]:
    """Every overridable ``section.field`` key."""
    return [f"{s}.{f.name}" for s, cls in _SECTIONS.items() for f in fields(cls)
            if (s, f.name) != ("objective", "name")]


def _parse_value(key: str, hint: Any, raw: str) -> Any:
    text = raw.strip()
    origin = get_origin(hint)
    if origin is Literal:
        choices = get_args(hint)
        if text not in choices:
            raise fail(key, f"one of {'|'.join(map(str, choices))}", repr(raw), f"Use e.g. {key}={choices[0]}.")
        return text
    if hint is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise fail(key, "a boolean (true/false)", repr(raw), f"Use {key}=true or {key}=false.")
    if hint is int:
        try:
            return int(text.replace("_", ""))
        except ValueError:
            try:
                as_float = float(text)
            except ValueError:
                as_float = math.nan
            if math.isfinite(as_float) and as_float == int(as_float):
                return int(as_float)
            raise fail(key, "an integer", repr(raw), f"Use e.g. {key}=8.") from None
    if hint is float:
        try:
            return float(text)
        except ValueError:
            raise fail(key, "a number", repr(raw), f"Use e.g. {key}=0.001.") from None
    if hint is str:
        return text
    if origin is tuple:
        parts = [p for p in text.strip("()[]").split(",") if p.strip()]
        args = get_args(hint)
        if len(parts) != len(args):
            raise fail(key, f"{len(args)} comma-separated numbers", repr(raw), f"Use e.g. {key}=0.9,0.98.")
        return tuple(_parse_value(key, a, p) for a, p in zip(args, parts, strict=True))
    raise TrainerError(f"{key}: this field cannot be set from the command line.")  # pragma: no cover


def apply_overrides(config: TrainerConfig, overrides: Sequence[str]) -> TrainerConfig:
    """Apply ``["section.field=value", ...]`` with type checks; unknown keys list the valid ones."""
    if isinstance(overrides, str):
        raise fail("overrides", "a sequence of 'section.field=value' strings", "a single string",
                   f"Wrap it in a list: [{overrides!r}].")
    sections = {name: getattr(config, name) for name in _SECTIONS}
    for item in overrides:
        if not isinstance(item, str) or "=" not in item:
            raise fail("override", "'section.field=value' (e.g. optim.lr=3e-4)", repr(item),
                       "Write the key, '=', then the value.")
        key, _, raw = item.partition("=")
        key = key.strip()
        section, _, name = key.partition(".")
        hints = _hints(_SECTIONS[section]) if section in _SECTIONS else {}
        if key == "objective.name":
            raise fail("override objective.name", "the objective to come from the objective argument",
                       repr(item), "Use --objective mlm|hybrid instead.")
        if name not in hints:
            close = difflib.get_close_matches(key, valid_keys(), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise TrainerError(f"override {key!r}: unknown key.{hint} Valid keys: {', '.join(valid_keys())}.")
        sections[section] = replace(sections[section], **{name: _parse_value(key, hints[name], raw)})
    return replace(config, **sections)


def _check(cond: bool, key: str, expected: str, got: Any, fix: str) -> None:
    if not cond:
        raise fail(key, expected, repr(got), fix)


def validate_config(c: TrainerConfig) -> TrainerConfig:
    """Range checks across fields; raises :class:`TrainerError` naming the field. Returns ``c``."""
    m, d, k, o, p, e, op, t = c.model, c.data, c.mask, c.objective, c.predictor, c.ema, c.optim, c.train
    for key, value in (("model.hidden_size", m.hidden_size), ("model.num_layers", m.num_layers),
                       ("model.num_heads", m.num_heads), ("model.intermediate_size", m.intermediate_size),
                       ("train.steps", t.steps), ("train.batch_size", t.batch_size),
                       ("train.grad_accum", t.grad_accum), ("train.log_every", t.log_every),
                       ("train.ckpt_every", t.ckpt_every), ("train.keep_last", t.keep_last),
                       ("train.eval_batches", t.eval_batches), ("predictor.mlp_ratio", p.mlp_ratio),
                       ("mask.span_length", k.span_length), ("data.min_piece", d.min_piece),
                       ("objective.target_layers", o.target_layers)):
        _check(value >= 1, key, "an integer >= 1", value, f"Set {key} to a positive value.")
    for key, value in (("train.eval_every", t.eval_every), ("train.geometry_every", t.geometry_every),
                       ("optim.warmup_steps", op.warmup_steps), ("data.max_documents", d.max_documents),
                       ("data.tokenizer_documents", d.tokenizer_documents), ("predictor.layers", p.layers),
                       ("predictor.hidden_size", p.hidden_size), ("predictor.heads", p.heads),
                       ("model.max_position_embeddings", m.max_position_embeddings), ("train.seed", t.seed),
                       ("train.stop_after", t.stop_after)):
        _check(value >= 0, key, "an integer >= 0", value, f"Set {key} to 0 or more.")
    _check(m.hidden_size % m.num_heads == 0, "model.hidden_size",
           f"a multiple of model.num_heads ({m.num_heads})", m.hidden_size, "Change one of the two.")
    _check(8 <= d.seq_len <= 8192, "data.seq_len", "an integer in [8, 8192]", d.seq_len, "Use e.g. 128.")
    _check(d.min_piece < d.seq_len - 2, "data.min_piece", f"less than data.seq_len - 2 ({d.seq_len - 2})",
           d.min_piece, "Lower data.min_piece.")
    max_pos = m.max_position_embeddings or d.seq_len
    _check(max_pos >= d.seq_len, "model.max_position_embeddings", f">= data.seq_len ({d.seq_len}) or 0", max_pos,
           "Use 0 (= data.seq_len).")
    _check(d.vocab_size >= 64, "data.vocab_size", "an integer >= 64", d.vocab_size, "Use e.g. 8192.")
    _check(0.0 < d.holdout <= 0.5, "data.holdout", "a fraction in (0, 0.5]", d.holdout, "Use e.g. 0.05.")
    _check(0.0 < k.rate < 1.0, "mask.rate", "a fraction in (0, 1)", k.rate, "Use e.g. 0.15.")
    _check(k.mask_prob >= 0.0 and k.random_prob >= 0.0 and k.mask_prob + k.random_prob <= 1.0,
           "mask.mask_prob + mask.random_prob", "two non-negative shares summing to <= 1",
           (k.mask_prob, k.random_prob), "Use e.g. 0.8 and 0.1 (the rest stays unchanged).")
    _check(o.target_layers <= m.num_layers, "objective.target_layers", f"<= model.num_layers ({m.num_layers})",
           o.target_layers, "Average fewer layers.")
    _check(o.smooth_l1_beta > 0, "objective.smooth_l1_beta", "a number > 0", o.smooth_l1_beta, "Use e.g. 1.0.")
    _check(math.isfinite(o.balance_init) and abs(o.balance_init) <= 20, "objective.balance_init",
           "a number in [-20, 20]", o.balance_init, "Use 0 for equal weights.")
    _check(o.balance_lr_scale >= 0, "objective.balance_lr_scale", "a number >= 0", o.balance_lr_scale,
           "Use 0 to freeze the balance at its initial value.")
    width, heads = p.width_and_heads(m.hidden_size)
    _check(width % heads == 0, "predictor.hidden_size", f"a multiple of predictor.heads ({heads})", width,
           "Change predictor.hidden_size or predictor.heads.")
    _check(0.0 <= e.start <= e.end <= 1.0, "ema.start/ema.end", "0 <= start <= end <= 1", (e.start, e.end),
           "Use e.g. ema.start=0.996 ema.end=1.0.")
    _check(math.isfinite(op.lr) and op.lr > 0, "optim.lr", "a finite number > 0", op.lr, "Use e.g. 1e-3.")
    _check(all(0.0 <= b < 1.0 for b in op.betas), "optim.betas", "two numbers in [0, 1)", op.betas,
           "Use e.g. 0.9,0.98.")
    _check(op.eps > 0, "optim.eps", "a number > 0", op.eps, "Use e.g. 1e-6.")
    _check(op.weight_decay >= 0, "optim.weight_decay", "a number >= 0", op.weight_decay, "Use e.g. 0.01.")
    _check(0.0 <= op.min_lr_ratio <= 1.0, "optim.min_lr_ratio", "a fraction in [0, 1]", op.min_lr_ratio, "Use 0.")
    _check(op.clip_grad_norm >= 0, "optim.clip_grad_norm", "a number >= 0 (0 = off)", op.clip_grad_norm,
           "Use e.g. 1.0.")
    _check(t.batch_size % t.grad_accum == 0, "train.batch_size",
           f"a multiple of train.grad_accum ({t.grad_accum})", t.batch_size, "Change one of the two.")
    _check(t.geometry_texts >= 8, "train.geometry_texts", "an integer >= 8", t.geometry_texts, "Use e.g. 256.")
    w = c.watch
    _check(0.0 <= w.rank_fraction < 1.0, "watch.rank_fraction", "a fraction in [0, 1) (0 = off)", w.rank_fraction,
           "Use e.g. 0.25.")
    for key, value in (("watch.rank_floor", w.rank_floor), ("watch.rankme_floor", w.rankme_floor),
                       ("watch.var_ratio", w.var_ratio), ("watch.target_var_floor", w.target_var_floor)):
        _check(math.isfinite(value) and value >= 0.0, key, "a number >= 0 (0 = off)", value,
               f"Use 0 to turn {key} off.")
    _check(w.batches >= 1, "watch.batches", "an integer >= 1", w.batches, "Use e.g. 1.")
    _check(w.grace_steps >= -1, "watch.grace_steps", "an integer >= -1 (-1 = 3 x optim.warmup_steps)",
           w.grace_steps, "Use -1, or 0 to check from the first evaluation.")
    return c


def resolve_config(objective: str, preset: str, overrides: Sequence[str] = (), *, steps: int | None = None
                   ) -> TrainerConfig:
    """Preset + objective + overrides (+ ``steps``), validated."""
    config = apply_overrides(preset_config(preset, objective), overrides)
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise fail("steps", "a positive integer", repr(steps), "Pass e.g. steps=300 (or None for the preset's).")
        config = replace(config, train=replace(config.train, steps=steps))
    return validate_config(config)


def config_differences(saved: TrainerConfig, current: TrainerConfig) -> list[str]:
    """``"key: saved -> current"`` for every field that changes the numbers of training (not RUNTIME_FIELDS)."""
    a, b = _flatten(saved.to_dict()), _flatten(current.to_dict())
    out = []
    for key in sorted(set(a) | set(b)):
        if key in RUNTIME_FIELDS:
            continue
        if a.get(key) != b.get(key):
            out.append(f"{key}: {a.get(key)!r} -> {b.get(key)!r}")
    return out


def overrides_for(config: TrainerConfig) -> list[str]:
    """The ``section.field=value`` overrides that rebuild ``config`` from its preset for its objective:
    ``resolve_config(config.objective.name, config.preset, overrides_for(config)) == config``. For rebuilding a
    run's command line from a checkpoint's ``trainer_config.json`` (``--resume`` needs the run's settings)."""
    preset = _flatten(preset_config(config.preset, config.objective.name).to_dict())
    out = []
    for key, value in _flatten(config.to_dict()).items():
        if key == "objective.name" or preset.get(key) == value:
            continue
        out.append(f"{key}={_override_text(value)}")
    return out


def _override_text(value: Any) -> str:
    """``value`` as :func:`apply_overrides` reads it back (booleans lower-case, tuples comma-separated)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(_override_text(v) for v in value)
    return str(value)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def precision_for(precision: str, device_type: str, bf16_supported: bool) -> str:
    """``auto`` -> ``bf16`` on CUDA with bf16 support, else ``fp32``; explicit values pass through."""
    if precision == "auto":
        return "bf16" if device_type == "cuda" and bf16_supported else "fp32"
    return precision
