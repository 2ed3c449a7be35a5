"""The reference study's analysis protocol, to the letter: ``--protocol paper``.

This module implements ``embedgeom/reference/PROTOCOL.md`` (what the reference study's released code,
``src/scripts/representation_analysis.py`` of aymen-000/predict-reconstruct-language-models at bc6dc05, computes)
for any :class:`~embedgeom.loading.Encoder`, independently of the rest of embedgeom's pipeline:

* items: the first ``max_samples`` (2,000) rows of the source in its own order, duplicates kept; a pair is one
  string ``"{a} [SEP] {b}"`` (:func:`paper_items`);
* tokenisation: ``max_length=128, truncation=True, padding="max_length"``, one segment; forward pass of the
  encoder's underlying Hugging Face model in float32 (autocast off) with an all-ones attention mask - the
  Hugging Face equivalent of passing no mask, so padding is attended - under ``torch.inference_mode``; the last
  layer's hidden states; pad positions are where ``input_ids == pad id`` (0 when the tokenizer has none)
  (:func:`paper_embed`). A sentence-transformers checkpoint's own pooling is not used;
* poolings ``mean``, ``max``, ``weighted`` (softmax of all-ones weights over non-pad positions, i.e. the mean,
  computed for real) and ``attention`` (an untrained head: :class:`ReferenceAttentionHead`);
* metrics on the float32 pooled embeddings Z, spectra computed in float64 from the float32 Z
  (:func:`paper_metrics`): spectral entropy, effective rank, rank_90, stable rank, uniformity on a random
  1,000-row subset, class-conditional "alignment", intra/inter class distance ratio (a one-member class takes
  part in no between-class pair);
* probes (:mod:`embedgeom.reference.paper_probes`); the token probe's targets come from each item's whole
  text, tokenised without special tokens and without truncation, not from the padded 128-token input.

The reference leaves some draws unseeded; here each is seeded from the analysis ``seed`` and recorded (attention
query and key from a dedicated ``torch.Generator``, never the global RNG; the uniformity subset from
``numpy.random.default_rng(seed)``; the saga solver's ``random_state``). Every departure from the reference code
is named in the task card's ``deviations`` (see :data:`embedgeom.reference.protocols.PAPER_PROTOCOL_DEPARTURES`).
The library never prints; convergence warnings of the probes are counted in the card, not shown.
"""

from __future__ import annotations

import math
import numbers
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch

from ..data import RawRows, load_rows
from .protocols import PAPER_PROTOCOL_DEPARTURES

PAPER_MAX_SAMPLES = 2000
PAPER_MAX_LENGTH = 128
UNIFORMITY_SUBSET = 1000
#: numpy.digitize bins that turn STS-B scores (0-5) into classes 0..4 for the class-based metrics.
REGRESSION_BINS: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0)
REFERENCE_SEP = "[SEP]"
PAPER_POOLINGS: tuple[str, ...] = ("mean", "max", "weighted", "attention")
PAPER_METRICS: tuple[str, ...] = ("spectral_entropy", "effective_rank", "rank_90", "stable_rank", "uniformity",
                                  "alignment_class_conditional", "intra_inter_ratio", "intra_class_distance",
                                  "inter_class_distance")
METHOD = "reference protocol (embedgeom/reference/PROTOCOL.md)"
EPS = 1e-12
Progress = Callable[[int, int], None]


def _check_int(value: Any, name: str, minimum: int, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}. {fix}")
    return int(value)


# --- items ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PaperItems:
    """The items the reference protocol embeds: one text per item (a pair joined into one string), in source
    order, duplicates kept; ``labels`` are class ids (int64) or raw regression scores (float64, binned only
    inside the class-based metrics)."""

    spec: str
    name: str
    description: str
    texts: tuple[str, ...]
    labels: np.ndarray | None
    task: Literal["classification", "regression"] | None
    label_names: tuple[str, ...] | None
    pair: bool
    separator: str | None
    n_source: int
    rule: str
    split: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    #: Pair sources: the (first, second) sentences of each item, so the joining string can be changed.
    raw_pairs: tuple[tuple[str, str], ...] | None = field(default=None, repr=False)

    @property
    def n(self) -> int:
        return len(self.texts)

    def with_separator(self, separator: str) -> PaperItems:
        """The same items with pairs joined by ``separator`` (single-text items are returned unchanged)."""
        if not isinstance(separator, str) or not separator.strip():
            raise ValueError(f"separator: expected the string that joins a pair, such as '[SEP]', got "
                             f"{separator!r}. Pass paper_separator(tokenizer)[0].")
        if self.raw_pairs is None or separator == self.separator:
            return self
        return replace(self, texts=tuple(f"{a} {separator} {b}" for a, b in self.raw_pairs), separator=separator)

    def card(self) -> dict[str, Any]:
        return {"spec": self.spec, "name": self.name, "description": self.description, "split": self.split,
                "n_items": self.n, "n_source_rows": self.n_source, "item_rule": self.rule,
                "pair_joining": f"'{{first}} {self.separator} {{second}}' as one string, one segment"
                if self.pair else None,
                "labels": None if self.labels is None else
                ("regression scores" if self.task == "regression" else "classes"),
                "label_names": list(self.label_names) if self.label_names else None, **self.info}


def paper_separator(tokenizer: Any) -> tuple[str, str | None]:
    """The string that joins a pair, and a deviation note when it is not the reference's literal ``[SEP]``.

    The reference joins with the literal text ``[SEP]``, which a BERT tokenizer turns into its separator token.
    A tokenizer whose separator is another string (``</s>``, ...) gets its own ``sep_token`` instead, recorded
    as a named deviation; one without a separator keeps the literal ``[SEP]`` (also recorded)."""
    sep = getattr(tokenizer, "sep_token", None)
    if sep == REFERENCE_SEP:
        return REFERENCE_SEP, None
    if sep:
        return str(sep), (f"pairs joined with this tokenizer's separator {sep!r} instead of the literal "
                          f"'{REFERENCE_SEP}' (which this tokenizer would not read as its separator token)")
    return REFERENCE_SEP, ("this tokenizer has no separator token: pairs are joined with the literal text "
                           f"'{REFERENCE_SEP}', which it tokenises as ordinary text")


def paper_items(spec: str, *, max_samples: int = PAPER_MAX_SAMPLES, glue_dir: str | os.PathLike | None = None,
                separator: str = REFERENCE_SEP) -> PaperItems:
    """The first ``max_samples`` rows of ``spec`` in source order, duplicates kept (the reference protocol).

    ``spec``: ``glue:TASK`` (the ``datasets`` copy, or ``glue_dir`` in the official TSV layout), ``sample:NAME``
    or a file, as in :func:`embedgeom.data.load_texts`. A pair row becomes ``f"{a} {separator} {b}"``.
    Blank lines of a .txt file are not rows (every other source's rows are taken as they are).
    """
    max_samples = _check_int(max_samples, "max_samples", 2, "The reference uses max_samples=2000.")
    if not isinstance(separator, str) or not separator.strip():
        raise ValueError(f"separator: expected the string that joins a pair, such as '[SEP]', got {separator!r}. "
                         "Omit it for the reference's '[SEP]'.")
    rows: RawRows = load_rows(spec, glue_dir=glue_dir)
    texts, pairs, labels = list(rows.texts), rows.text_pairs, rows.labels
    rule_extra = ""
    if rows.source == "txt":
        keep = [i for i, t in enumerate(texts) if t.strip()]
        if len(keep) != len(texts):
            rule_extra = f"; {len(texts) - len(keep)} blank line(s) of the .txt file are not rows"
        texts = [texts[i] for i in keep]
    n_source = len(texts)
    k = min(max_samples, n_source)
    if k < 2:
        raise ValueError(f"spec: expected a source with at least 2 rows, got {k} in {spec!r}. Pass a larger data "
                         "set.")
    raw_pairs = None if pairs is None else tuple(zip(texts[:k], pairs[:k], strict=True))
    texts = texts[:k] if raw_pairs is None else [f"{a} {separator} {b}" for a, b in raw_pairs]
    rule = (f"the first {k} of {n_source} rows in source order (max_samples={max_samples}), no shuffling, "
            f"duplicates kept{rule_extra}")
    return PaperItems(rows.spec, rows.name, rows.description, tuple(texts),
                      None if labels is None else labels[:k].copy(), rows.task if labels is not None else None,
                      rows.label_names, pairs is not None, separator if pairs is not None else None, n_source, rule,
                      rows.split, {"source": rows.source, "max_samples": max_samples, **rows.info}, raw_pairs)


# --- tokenisation, forward pass, poolings ----------------------------------------------------------------

def pad_id_of(tokenizer: Any) -> int:
    """The pad id used for pooling masks: the tokenizer's pad id, 0 when it has none (the reference default)."""
    pid = getattr(tokenizer, "pad_token_id", None)
    return 0 if pid is None else int(pid)


def paper_tokenize(tokenizer: Any, texts: Sequence[str], *, max_length: int = PAPER_MAX_LENGTH) -> torch.Tensor:
    """``input_ids`` (n, max_length) int64: ``truncation=True, padding="max_length"``, each text one segment."""
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"texts: expected a list of strings, got {type(texts).__name__}. Pass e.g. items.texts.")
    if getattr(tokenizer, "pad_token", None) is None:
        raise ValueError("tokenizer: expected a tokenizer with a pad token (the reference pads every item to "
                         f"{max_length} tokens), got one without. Set tokenizer.pad_token before the analysis.")
    enc = tokenizer(list(texts), max_length=max_length, truncation=True, padding="max_length",
                    return_tensors="pt")
    return enc["input_ids"].to(torch.int64)


class ReferenceAttentionHead:
    """The reference's untrained attention pooling, seeded: a query ``q ~ N(0, I_D)`` and a bias-free D x D key
    projection ``W`` with Xavier-uniform initialisation, drawn in that order from a dedicated
    ``torch.Generator`` seeded with ``seed`` (the global RNG is not touched). For hidden states ``h`` (b, L, D):
    ``score_l = q . (W h_l) / sqrt(D)``, pad positions set to -inf, softmax over positions, output
    ``sum_l softmax_l h_l`` (a weighted sum of the hidden states, not of the keys)."""

    def __init__(self, dim: int, seed: int = 0) -> None:
        dim = _check_int(dim, "dim", 1, "Pass the encoder's hidden size.")
        seed = _check_int(seed, "seed", 0, "Pass e.g. seed=0.")
        gen = torch.Generator(device="cpu").manual_seed(seed)
        self.dim, self.seed = dim, seed
        self.query = torch.randn(dim, generator=gen, dtype=torch.float32)
        self.key_weight = torch.nn.init.xavier_uniform_(torch.empty(dim, dim, dtype=torch.float32), generator=gen)
        self.fingerprint = f"paper-reference-attention-head(d={dim},seed={seed},query=randn,key=xavier_uniform)"

    def describe(self) -> dict[str, Any]:
        return {"seed": self.seed, "dim": self.dim,
                "draws": "query = torch.randn(D), then key weight = xavier_uniform_(empty(D, D)), from one "
                         "torch.Generator(cpu).manual_seed(seed)",
                "score": "q . (W h_l) / sqrt(D), pads -inf, softmax over positions; output sum_l a_l h_l"}

    def pool(self, hidden: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """Pool ``hidden`` (b, L, D) float32 with ``pad`` (b, L) True at pad positions -> (b, D)."""
        q = self.query.to(hidden.device)
        w = self.key_weight.to(hidden.device)
        keys = hidden @ w.T  # nn.Linear(D, D, bias=False)
        scores = (keys @ q) / math.sqrt(self.dim)
        att = scores.masked_fill(pad, float("-inf")).softmax(dim=1)
        return (att.unsqueeze(-1) * hidden).sum(dim=1)


def paper_pool(hidden: torch.Tensor, pad: torch.Tensor, head: ReferenceAttentionHead | None = None
               ) -> dict[str, torch.Tensor]:
    """The reference poolings of ``hidden`` (b, L, D) float32 with ``pad`` (b, L) True at pad positions:
    ``mean`` (count clamped >= 1), ``max`` (pads -inf), ``weighted`` (softmax of all-ones weights over non-pad
    positions: the mean, computed as the reference computes it) and, with ``head``, ``attention``."""
    if hidden.ndim != 3 or pad.shape != hidden.shape[:2]:
        raise ValueError(f"hidden/pad: expected hidden (b, L, D) and pad (b, L), got {tuple(hidden.shape)} and "
                         f"{tuple(pad.shape)}.")
    keep = (~pad).to(hidden.dtype).unsqueeze(-1)
    out = {"mean": (hidden * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0),
           "max": hidden.masked_fill(pad.unsqueeze(-1), float("-inf")).max(dim=1).values}
    weights = torch.ones(hidden.shape[1], dtype=hidden.dtype, device=hidden.device)  # untrained, all ones
    w = weights.expand(hidden.shape[0], -1).masked_fill(pad, float("-inf")).softmax(dim=1)
    out["weighted"] = (w.unsqueeze(-1) * hidden).sum(dim=1)
    if head is not None:
        out["attention"] = head.pool(hidden, pad)
    return out


@dataclass(frozen=True)
class PaperEmbeddings:
    """Pooled float32 embeddings per pooling, the token ids they came from, and how they were made."""

    vectors: dict[str, np.ndarray]
    input_ids: np.ndarray
    pad_id: int
    head: ReferenceAttentionHead
    meta: dict[str, Any]


def _check_encoder(encoder: Any) -> None:
    model = getattr(encoder, "model", None)
    if model is None or getattr(encoder, "tokenizer", None) is None:
        raise ValueError(f"encoder: expected an embedgeom Encoder (embedgeom.load_encoder), got "
                         f"{type(encoder).__name__}. Load it with embedgeom.load_encoder(path).")
    dtypes = {p.dtype for p in model.parameters()}
    if dtypes - {torch.float32}:
        raise ValueError(f"encoder: expected float32 weights (the reference runs in float32), got "
                         f"{sorted(str(d) for d in dtypes)}. Load it with embedgeom.load_encoder(path) (weights are "
                         "kept in float32).")


def paper_max_length(encoder: Any) -> tuple[int, str | None]:
    """The reference's 128 tokens, or the model's own limit when it has fewer position embeddings (then with a
    note naming the departure, recorded in the result's deviations)."""
    positions = getattr(encoder.model.config, "max_position_embeddings", None)
    if positions is None or positions >= PAPER_MAX_LENGTH:
        return PAPER_MAX_LENGTH, None
    return int(positions), (f"this model has {positions} position embeddings, so items are truncated and padded to "
                            f"{positions} tokens instead of the reference's {PAPER_MAX_LENGTH}")


def paper_embed(encoder: Any, texts: Sequence[str], *, seed: int = 0, batch_size: int | None = None,
                progress: Progress | None = None) -> PaperEmbeddings:
    """Embed ``texts`` the reference way: 128-token single-segment inputs (fewer only for a model with fewer
    positions, see :func:`paper_max_length`), float32 forward of the encoder's
    Hugging Face model with an all-ones attention mask (padding attended), last layer, then :func:`paper_pool`
    with a :class:`ReferenceAttentionHead` seeded by ``seed``. ``progress(done, total)`` after each batch."""
    _check_encoder(encoder)
    seed = _check_int(seed, "seed", 0, "Pass e.g. seed=0.")
    dev = torch.device(encoder.device)
    bs = _check_int(batch_size, "batch_size", 1, "Omit it for the default (64 on CPU, 256 on GPU).") \
        if batch_size is not None else (256 if dev.type == "cuda" else 64)
    max_length, _ = paper_max_length(encoder)
    ids = paper_tokenize(encoder.tokenizer, texts, max_length=max_length)
    pad_id = pad_id_of(encoder.tokenizer)
    head = ReferenceAttentionHead(int(encoder.model.config.hidden_size), seed)
    model = encoder.model
    chunks: dict[str, list[np.ndarray]] = {p: [] for p in PAPER_POOLINGS}
    n = len(ids)
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")  # true float32 matmuls (no TF32), restored below
    try:
        with torch.inference_mode(), torch.autocast(device_type=dev.type, enabled=False):
            for start in range(0, n, bs):
                batch = ids[start:start + bs].to(dev)
                out = model(input_ids=batch, attention_mask=torch.ones_like(batch))
                hidden = out.last_hidden_state.to(torch.float32)
                for p, v in paper_pool(hidden, batch == pad_id, head).items():
                    chunks[p].append(v.float().cpu().numpy())
                if progress is not None:
                    progress(min(start + bs, n), n)
    finally:
        torch.set_float32_matmul_precision(precision)
    vectors = {p: np.concatenate(v).astype(np.float32, copy=False) for p, v in chunks.items()}
    meta = {"max_length": max_length, "truncation": True, "padding": "max_length", "segments": 1,
            "attention_mask": "all ones (padding attended; the Hugging Face equivalent of passing no mask)",
            "dtype": "float32 (autocast off, float32 matmul precision 'highest': no TF32)",
            "layer": "last (last_hidden_state)", "pad_id": pad_id,
            "pad_rule": "input_ids == pad_id", "batch_size": bs, "device": str(dev),
            "model_class": type(model).__name__}
    return PaperEmbeddings(vectors, ids.numpy(), pad_id, head, meta)


# --- metrics --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PaperSpectrum:
    """Singular values S of the column-centred Z (thin SVD, float64), eigenvalues S**2 (not divided by n - 1)
    and explained variance S**2 / (sum S**2 + 1e-12)."""

    singular_values: np.ndarray
    eigenvalues: np.ndarray
    explained: np.ndarray


def _as_matrix(z: Any, name: str = "z") -> np.ndarray:
    if isinstance(z, torch.Tensor):
        z = z.detach().cpu().numpy()
    x = np.asarray(z)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise ValueError(f"{name}: expected a 2-D array of embeddings with at least 2 rows, got shape {x.shape}. "
                         "Pass the (n, D) pooled embeddings.")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: expected finite values, got NaN or inf. Check the encoder's outputs.")
    return x


def paper_spectrum(z: Any) -> PaperSpectrum:
    """The reference spectrum of ``z`` (n, D), computed in float64 from the given values."""
    x = _as_matrix(z)
    s = np.linalg.svd(x - x.mean(axis=0), full_matrices=False, compute_uv=False)
    ev = s ** 2
    return PaperSpectrum(s, ev, ev / (ev.sum() + EPS))


def spectral_entropy_of(sp: PaperSpectrum) -> float:
    """Natural-log entropy of the explained variance (0 log 0 = 0) / log(number of singular values) =
    log(min(n, D)). NaN when min(n, D) = 1."""
    p = sp.explained[sp.explained > 0]
    m = len(sp.singular_values)
    return float(-(p * np.log(p)).sum() / math.log(m)) if m > 1 else math.nan


def effective_rank_of(sp: PaperSpectrum) -> float:
    """exp(-sum p log p) with p = S / (sum S + 1e-12) on the singular values, entries <= 1e-12 dropped."""
    p = sp.singular_values / (sp.singular_values.sum() + EPS)
    p = p[p > EPS]
    return float(math.exp(-(p * np.log(p)).sum()))


def rank_at_explained(explained: np.ndarray, q: float = 0.90) -> int:
    """``numpy.searchsorted(cumsum(explained), q) + 1`` (side="left"): the number of leading components whose
    cumulative explained variance first reaches ``q`` (a component landing exactly on ``q`` counts)."""
    return int(np.searchsorted(np.cumsum(np.asarray(explained, dtype=np.float64)), q)) + 1


def stable_rank_of(sp: PaperSpectrum) -> float:
    """sum S**2 / (S_1**2 + 1e-12)."""
    return float(sp.eigenvalues.sum() / (sp.eigenvalues[0] + EPS))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + EPS)


def uniformity_subset(n: int, seed: int, size: int = UNIFORMITY_SUBSET) -> np.ndarray:
    """Row indices used for uniformity: the first min(n, size) of ``numpy.random.default_rng(seed).permutation(n)``."""
    return np.random.default_rng(seed).permutation(n)[:min(n, size)]


def paper_uniformity(z: Any, *, seed: int = 0) -> tuple[float, int]:
    """log(mean_{i<j} exp(-2 ||z_i - z_j||^2) + 1e-12) over unit rows (norm + 1e-12) of a seeded random subset
    of min(n, 1000) rows (:func:`uniformity_subset`); float64. Returns (value, rows used)."""
    from scipy.spatial.distance import pdist

    x = _unit(_as_matrix(z))
    idx = uniformity_subset(len(x), _check_int(seed, "seed", 0, "Pass e.g. seed=0."))
    d2 = pdist(x[idx], "sqeuclidean")
    return float(np.log(np.exp(-2.0 * d2).mean() + EPS)), len(idx)


def paper_classes(labels: Any, task: str | None) -> np.ndarray:
    """Classes for the class-based metrics: class ids as given, or regression scores binned with
    ``numpy.digitize(score, [1, 2, 3, 4])`` (< 1 -> 0, [1, 2) -> 1, ..., >= 4 -> 4)."""
    y = np.asarray(labels)
    if task == "regression":
        return np.digitize(y.astype(np.float64), REGRESSION_BINS).astype(np.int64)
    return y.astype(np.int64)


def _check_classes(x: np.ndarray, classes: Any) -> np.ndarray:
    c = np.asarray(classes)
    if c.ndim != 1 or len(c) != len(x):
        raise ValueError(f"classes: expected one class per row ({len(x)}), got shape {c.shape}. Pass "
                         "paper_classes(labels, task).")
    return c


def class_conditional_alignment(z: Any, classes: Any) -> float:
    """The reference's "alignment": on unit rows, for each class with >= 2 members the mean over its pairs i<j
    of (||z_i - z_j||^2)^2; then the unweighted mean of those per-class means. NaN when no class has 2 members."""
    from scipy.spatial.distance import pdist

    x = _unit(_as_matrix(z))
    c = _check_classes(x, classes)
    means = [float((pdist(x[c == k], "sqeuclidean") ** 2).mean()) for k in np.unique(c) if (c == k).sum() >= 2]
    return float(np.mean(means)) if means else math.nan


def class_distances(z: Any, classes: Any) -> tuple[float, float, float]:
    """(intra, inter, ratio) on unit rows, as the reference code computes them: the mean Euclidean distance over
    same-class pairs i<j; the mean over between-class pairs - pairs i<j of items from two different classes that
    each have at least 2 members (the reference skips a one-member class, so its item is in no pair); and
    intra / (inter + 1e-12). NaN where a kind of pair does not exist."""
    from scipy.spatial.distance import pdist

    x = _unit(_as_matrix(z))
    c = _check_classes(x, classes)
    _, inverse, sizes = np.unique(c, return_inverse=True, return_counts=True)
    counted = sizes[inverse] >= 2  # rows of classes with at least 2 members
    d = pdist(x, "euclidean")
    i, j = np.triu_indices(len(x), k=1)  # pdist's condensed order
    same = c[i] == c[j]
    between = ~same & counted[i] & counted[j]
    intra = float(d[same].mean()) if same.any() else math.nan
    inter = float(d[between].mean()) if between.any() else math.nan
    return intra, inter, intra / (inter + EPS) if same.any() and between.any() else math.nan


def paper_metrics(z: Any, classes: Any | None = None, *, seed: int = 0
                  ) -> tuple[dict[str, tuple[float, int]], dict[str, str], PaperSpectrum]:
    """Every reference metric of ``z``: ({metric: (value, n)}, {metric: why NaN}, spectrum). ``classes``:
    :func:`paper_classes` of the items' labels, or None (class metrics NaN)."""
    x = _as_matrix(z)
    n = len(x)
    sp = paper_spectrum(x)
    out: dict[str, tuple[float, int]] = {}
    why: dict[str, str] = {}
    if sp.eigenvalues.sum() > 0:
        out["spectral_entropy"] = (spectral_entropy_of(sp), n)
        out["effective_rank"] = (effective_rank_of(sp), n)
        out["rank_90"] = (float(rank_at_explained(sp.explained)), n)
        out["stable_rank"] = (stable_rank_of(sp), n)
        if len(sp.singular_values) == 1:
            why["spectral_entropy"] = "min(n, D) = 1: log(min(n, D)) = 0"
    else:
        for m in ("spectral_entropy", "effective_rank", "rank_90", "stable_rank"):
            out[m] = (math.nan, n)
            why[m] = "the embeddings have zero variance (every row equal)"
    out["uniformity"] = paper_uniformity(x, seed=seed)
    class_metrics = ("alignment_class_conditional", "intra_inter_ratio", "intra_class_distance",
                     "inter_class_distance")
    if classes is None:
        for m in class_metrics:
            out[m] = (math.nan, n)
            why[m] = "the source has no labels"
        return out, why, sp
    c = _check_classes(x, classes)
    out["alignment_class_conditional"] = (class_conditional_alignment(x, c), n)
    if math.isnan(out["alignment_class_conditional"][0]):
        why["alignment_class_conditional"] = "no class has 2 or more items"
    intra, inter, ratio = class_distances(x, c)
    out["intra_class_distance"], out["inter_class_distance"], out["intra_inter_ratio"] = (intra, n), (inter, n), \
        (ratio, n)
    if math.isnan(intra):
        why["intra_class_distance"] = why["intra_inter_ratio"] = "no class has 2 or more items"
    if math.isnan(inter):
        names, sizes = np.unique(c, return_counts=True)
        size_of = dict(zip(names.tolist(), sizes.tolist(), strict=True))
        why["inter_class_distance"] = why["intra_inter_ratio"] = (
            f"fewer than 2 classes with 2 or more items (class sizes {size_of}; the reference counts no pair of a "
            "one-member class)")
    return out, why, sp


# --- one task end to end --------------------------------------------------------------------------------

@dataclass(frozen=True)
class PaperTaskResult:
    """One task under the reference protocol: ``card`` (JSON-able), tidy ``metric_rows`` and ``probe_rows``
    (same keys as :class:`~embedgeom.results.AnalysisResult` rows), and ``arrays`` keyed like
    :func:`embedgeom.results.array_key`: ``emb|task|pooling|layer`` (float32 (n, D)), ``spectrum|task|pooling|layer``
    (eigenvalues S**2, float64, descending), ``struct|task|labels`` (raw labels), ``struct|task|classes`` (classes
    used by the class metrics) and ``struct|task|token_targets`` (the token probe's targets - each item's most
    frequent token over its whole text, without special tokens or truncation - before the >= 5 filter)."""

    name: str
    card: dict[str, Any]
    metric_rows: list[dict[str, Any]]
    probe_rows: list[dict[str, Any]]
    arrays: dict[str, np.ndarray]


def analyze_paper_task(encoder: Any, spec: str | PaperItems, *, max_samples: int = PAPER_MAX_SAMPLES,
                       seed: int = 0, glue_dir: str | os.PathLike | None = None, batch_size: int | None = None,
                       progress: Progress | None = None, task: str | None = None, probes: bool = True,
                       prompt: str | None = None) -> PaperTaskResult:
    """Run the reference protocol (``embedgeom/reference/PROTOCOL.md``) on one data spec with ``encoder``.

    ``spec``: a data spec (read with :func:`paper_items`, ``max_samples`` and ``glue_dir``), or items already
    read by :func:`paper_items` (then ``max_samples``/``glue_dir`` are not used; pairs are re-joined with the
    tokenizer's separator when it is not ``[SEP]``). ``seed`` seeds every draw the reference leaves unseeded
    (attention head, uniformity subset, saga solver). ``task`` renames the task in rows and array keys (default:
    the data source's name). ``progress(done, total)`` is called after each forward batch. ``probes=False``
    skips the probes (no probe rows). ``prompt``: as for :func:`embedgeom.encode` (a text or a declared prompt's
    name; None: the checkpoint's default prompt, if any), prepended to every item before tokenisation, as the
    default protocol does; the token probe's targets stay the items' own words. Metric rows carry
    stderr/low/high/confidence NaN and replicates 0 (the
    reference reports point values only); NaN values are explained in ``card["undefined"]``.
    """
    from .paper_probes import paper_token_targets

    if task is not None and (not isinstance(task, str) or not task.strip()):
        raise ValueError(f"task: expected a non-empty task name, got {task!r}. Omit it to use the source's name.")
    _check_encoder(encoder)
    seed = _check_int(seed, "seed", 0, "Pass e.g. seed=0.")
    if not isinstance(probes, bool):
        raise ValueError(f"probes: expected True or False, got {probes!r}.")
    sep, sep_note = paper_separator(encoder.tokenizer)
    if isinstance(spec, PaperItems):
        items = spec.with_separator(sep)
        max_samples = items.info.get("max_samples", max_samples)
    else:
        items = paper_items(spec, max_samples=max_samples, glue_dir=glue_dir, separator=sep)
    name = task.strip() if task else items.name
    from ..encoding import resolve_prompt

    prompt_text, prompt_name = resolve_prompt(encoder, prompt)
    texts = tuple(prompt_text + t for t in items.texts) if prompt_text else items.texts
    emb = paper_embed(encoder, texts, seed=seed, batch_size=batch_size, progress=progress)
    run = _PaperRun(name, items, emb, int(encoder.num_layers),
                    None if items.labels is None else paper_classes(items.labels, items.task),
                    paper_token_targets(encoder.tokenizer, items.texts), seed, probes)
    max_length, length_note = paper_max_length(encoder)
    measured = _paper_measure(run)
    card = _paper_card(run, measured, max_samples, max_length, sep, _paper_deviations(run, length_note, sep_note))
    if prompt_text:
        card["prompt"] = {"text": prompt_text, "name": prompt_name}
    return PaperTaskResult(name, card, measured.metric_rows, measured.probe_rows, measured.arrays)


@dataclass(frozen=True)
class _PaperRun:
    """One task under the reference protocol, embedded: its name, items and embeddings, the layer, the classes of
    the class metrics (None without labels), the token probe's targets, the seed, and whether probes run."""

    name: str
    items: PaperItems
    emb: PaperEmbeddings
    layer: int
    classes: np.ndarray | None
    targets: np.ndarray
    seed: int
    probes: bool


@dataclass
class _PaperMeasured:
    """A task's rows and arrays, with why values are undefined and how many probe warnings were counted."""

    metric_rows: list[dict[str, Any]] = field(default_factory=list)
    probe_rows: list[dict[str, Any]] = field(default_factory=list)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    undefined: dict[str, str] = field(default_factory=dict)
    warn_counts: dict[str, dict[str, int]] = field(default_factory=dict)


def _paper_deviations(run: _PaperRun, length_note: str | None, sep_note: str | None) -> dict[str, str]:
    """Where this task departs from the reference: the protocol's own departures, then this model's and source's."""
    items, name = run.items, run.name
    deviations = dict(PAPER_PROTOCOL_DEPARTURES)
    if length_note:
        deviations["max_length"] = length_note
    if items.pair and sep_note:
        deviations["separator"] = sep_note
    if not items.spec.startswith("glue:"):
        deviations["source"] = (f"{items.spec} is not one of the reference's GLUE validation splits; its rows are "
                                "taken by the same rule")
    elif items.split not in ("validation", "validation_matched"):
        deviations["split"] = f"the reference reads the validation split (MNLI: matched); this is {items.split}"
    if items.task == "regression" and items.name != "stsb" and items.labels is not None:
        lo, hi = float(items.labels.min()), float(items.labels.max())
        deviations["regression_bins"] = (f"the reference bins STS-B's 0-5 scores at 1, 2, 3, 4; {name}'s scores "
                                         f"(range {lo:g}..{hi:g}) are binned the same way, unchanged")
    return deviations


def _paper_measure(run: _PaperRun) -> _PaperMeasured:
    """Per pooling: the metrics (point values), embeddings, spectrum and probes; then the structure arrays."""
    from ..results import array_key
    from .paper_probes import paper_probe_scores

    out = _PaperMeasured()
    name, layer = run.name, run.layer
    for pooling in PAPER_POOLINGS:
        z = run.emb.vectors[pooling]
        values, why, sp = paper_metrics(z, run.classes, seed=run.seed)
        base = {"task": name, "pooling": pooling, "layer": layer}
        for metric in PAPER_METRICS:
            value, n = values[metric]
            out.metric_rows.append({**base, "metric": metric, "value": value, "stderr": math.nan, "low": math.nan,
                                    "high": math.nan, "n": n, "confidence": math.nan, "method": METHOD,
                                    "replicates": 0})
        out.undefined.update({f"{pooling}:{m}": r for m, r in why.items()})
        out.arrays[array_key("emb", name, pooling, layer)] = z
        out.arrays[array_key("spectrum", name, pooling, layer)] = sp.eigenvalues
        if not run.probes:
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            scores, probe_why = paper_probe_scores(z, run.items.labels, run.items.task, run.targets, seed=run.seed)
        counts: dict[str, int] = {}
        for w in caught:
            counts[w.category.__name__] = counts.get(w.category.__name__, 0) + 1
        out.warn_counts[pooling] = counts
        out.undefined.update({f"{pooling}:{k}": r for k, r in probe_why.items()})
        out.probe_rows += [{**base, "probe": probe, "metric": metric, "value": value, "stderr": math.nan, "n": n,
                            "method": METHOD} for probe, metric, value, n in scores]
    if run.items.labels is not None:
        out.arrays[array_key("struct", name, "labels")] = run.items.labels
        assert run.classes is not None
        out.arrays[array_key("struct", name, "classes")] = run.classes
    out.arrays[array_key("struct", name, "token_targets")] = run.targets
    return out


def _paper_card(run: _PaperRun, measured: _PaperMeasured, max_samples: int, max_length: int, sep: str,
                deviations: dict[str, str]) -> dict[str, Any]:
    """The task's card: the source, every protocol choice as applied, the seeds, what is undefined and why, and
    the deviations from the reference."""
    from .paper_probes import PROBE_SETTINGS

    items, emb, seed = run.items, run.emb, run.seed
    return {"protocol": "paper", "reference": "embedgeom/reference/PROTOCOL.md (describes aymen-000/"
            "predict-reconstruct-language-models @bc6dc05, src/scripts/representation_analysis.py)",
            **items.card(), "task": run.name,
            "max_samples": max_samples, "max_length": max_length, "dtype": "float32", "separator": sep,
            "tokenization": {k: emb.meta[k] for k in (
                "max_length", "truncation", "padding", "segments")},
            "forward": {k: emb.meta[k] for k in ("attention_mask", "dtype", "layer", "pad_id", "pad_rule",
                                                 "batch_size", "device", "model_class")},
            "layer": run.layer, "poolings": list(PAPER_POOLINGS),
            "class_rule": None if run.classes is None else (
                "regression scores binned with numpy.digitize(score, [1, 2, 3, 4])" if items.task == "regression"
                else "the labels"),
            "class_pairs": None if run.classes is None else (
                "intra: same-class pairs i<j; inter: pairs of items from two different classes that each have at "
                "least 2 members (a one-member class is skipped, as in the reference code)"),
            "spectra": "float64 SVD of the column-centred float32 embeddings; eigenvalues S**2",
            "uniformity": f"seeded subset of min(n, {UNIFORMITY_SUBSET}) rows: "
                          f"numpy.random.default_rng({seed}).permutation(n)[:{UNIFORMITY_SUBSET}], same rows for "
                          "every pooling; float64",
            "seeds": {"attention_head": seed, "uniformity_subset": seed, "probe_solver_random_state": seed},
            "attention_head": emb.head.describe(),
            "probes": PROBE_SETTINGS if run.probes else "skipped (probes=False)",
            "probe_warnings": {"counts": measured.warn_counts, "note": "counted, not shown: saga with max_iter=500 "
                               "usually stops before converging, as in the reference (which showed them)"},
            "undefined": measured.undefined, "deviations": deviations}
