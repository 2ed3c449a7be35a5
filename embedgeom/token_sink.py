"""The token sink: what token-level geometry keeps of the forward pass, per batch, in bounded memory.

:func:`plan_tokens` is a cheap first pass over the tokenisation (no model): every text's non-special token ids,
the text's jackknife group, the one occurrence per text sampled for the anisotropy baseline, the ids eligible for
self-similarity and MEV (at least 5 occurrences in at least 2 texts; at most ``max_ids`` of them, a seeded sample
when more are eligible) and, per kept id, the occurrences kept as rows for MEV (at most ``max_occurrences``, a
seeded sample when the id has more).

:class:`TokenSink` (the :class:`embedgeom.encoding.Sink` protocol: ``accept`` per batch, ``finish`` once) then
keeps, per requested layer and per post-processing variant (raw, and the fitted post-processing when asked):

* per text: its intra-similarity (computed within the batch that holds the text), the sum of its token norms and
  of their squares, its token count - O(n_texts);
* the sampled occurrence of each text - O(n_texts x d);
* per kept id and text group: the sum of its unit occurrence vectors, of their squared norms and their count -
  O(max_ids x groups x d), so self-similarity is exact over *all* occurrences of a kept id;
* the kept occurrence rows - O(max_ids x max_occurrences x d).

Nothing else: no token state of a batch outlives the batch, so memory does not grow with the number of tokens.
:class:`MomentSink` is the pass that fits a post-processing: per layer, float64 moments of every non-special token
state (count, mean, d x d scatter).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .metrics.jackknife import split_groups
from .metrics.tokens import MIN_OCCURRENCES, MIN_TEXTS, intra_from_sums
from .postprocess import Postprocessor


@dataclass(frozen=True)
class TokenPlan:
    """What the first pass over the tokenisation decided (see the module docstring). Token arrays are flat over
    the texts' non-special tokens in order (``offsets[i]`` is text i's first)."""

    ids: np.ndarray
    offsets: np.ndarray
    group: np.ndarray
    groups: int
    sample_ordinal: np.ndarray
    kept_ids: np.ndarray
    eligible: int
    occ_slot: np.ndarray
    occ_id: np.ndarray
    occ_text: np.ndarray
    capped_ids: int
    id_texts: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def n_texts(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_tokens(self) -> int:
        return int(self.ids.size)

    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def record(self) -> dict[str, Any]:
        return {"texts": self.n_texts, "tokens": self.n_tokens, "eligible_ids": self.eligible,
                "kept_ids": int(self.kept_ids.size), "kept_occurrences": int(self.occ_id.size),
                "ids_with_sampled_occurrences": self.capped_ids,
                "texts_with_fewer_than_2_tokens": int((self.counts() < 2).sum())}


def non_special_ids(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Each text's token ids as the forward pass sees them (special tokens added, truncated at ``max_length``),
    less the special tokens."""
    enc = tokenizer(list(texts), add_special_tokens=True, return_special_tokens_mask=True,
                    return_attention_mask=False, truncation=True, max_length=max_length)
    return [[t for t, s in zip(ids, sp, strict=True) if not s]
            for ids, sp in zip(enc["input_ids"], enc["special_tokens_mask"], strict=True)]


def plan_tokens(token_ids: Sequence[Sequence[int]], *, groups: int, seed: int, max_ids: int, max_occurrences: int,
                min_occurrences: int = MIN_OCCURRENCES, min_texts: int = MIN_TEXTS) -> TokenPlan:
    """The first pass: see the module docstring. ``token_ids``: each text's non-special token ids."""
    n = len(token_ids)
    counts = np.array([len(t) for t in token_ids], dtype=np.int64)
    if (counts == 0).any():
        first = int(np.flatnonzero(counts == 0)[0])
        raise ValueError(f"texts: expected every text to hold at least one non-special token, got text {first} "
                         "with none. Drop empty texts.")
    offsets = np.concatenate([[0], np.cumsum(counts)])
    ids = np.concatenate([np.asarray(t, dtype=np.int64) for t in token_ids])
    text_of = np.repeat(np.arange(n), counts)
    group = np.empty(n, dtype=np.int64)
    for g, members in enumerate(split_groups(n, groups, seed)):
        group[members] = g
    rng = np.random.default_rng(seed)
    sample_ordinal = (rng.random(n) * counts).astype(np.int64)
    uniq, occ_counts = np.unique(ids, return_counts=True)
    pairs = np.unique(np.stack([ids, text_of], axis=1), axis=0)
    pid, ptexts = np.unique(pairs[:, 0], return_counts=True)
    texts_per_id = np.zeros(uniq.size, dtype=np.int64)
    texts_per_id[np.searchsorted(uniq, pid)] = ptexts
    eligible = uniq[(occ_counts >= min_occurrences) & (texts_per_id >= min_texts)]
    kept = np.sort(rng.choice(eligible, size=max_ids, replace=False)) if eligible.size > max_ids else eligible
    occ_slot = np.full(ids.size, -1, dtype=np.int64)
    occ_id, occ_text, capped = [], [], 0
    positions = np.flatnonzero(np.isin(ids, kept))
    order = np.argsort(ids[positions], kind="stable")
    by_id = np.split(positions[order], np.flatnonzero(np.diff(ids[positions][order])) + 1) if positions.size else []
    slot = 0
    for pos in by_id:
        if pos.size > max_occurrences:
            pos = np.sort(rng.choice(pos, size=max_occurrences, replace=False))
            capped += 1
        occ_slot[pos] = np.arange(slot, slot + pos.size)
        slot += pos.size
        occ_id += [int(ids[pos[0]])] * pos.size
        occ_text += text_of[pos].tolist()
    return TokenPlan(ids, offsets, group, groups, sample_ordinal, kept.astype(np.int64), int(eligible.size), occ_slot,
                     np.asarray(occ_id, dtype=np.int64), np.asarray(occ_text, dtype=np.int64), capped,
                     texts_per_id)


@dataclass
class LayerState:
    """What the sink keeps of one layer under one post-processing variant (see the module docstring)."""

    intra: np.ndarray
    norm_sum: np.ndarray
    norm_m2: np.ndarray
    counts: np.ndarray
    sample: np.ndarray
    id_sums: torch.Tensor
    id_sq: torch.Tensor
    id_counts: torch.Tensor
    occ: np.ndarray

    @classmethod
    def empty(cls, plan: TokenPlan, d: int) -> LayerState:
        k, g = plan.kept_ids.size, plan.groups
        return cls(np.full(plan.n_texts, np.nan), np.zeros(plan.n_texts), np.zeros(plan.n_texts),
                   np.zeros(plan.n_texts, dtype=np.int64), np.zeros((plan.n_texts, d), dtype=np.float32),
                   torch.zeros((k * g, d), dtype=torch.float64), torch.zeros(k * g, dtype=torch.float64),
                   torch.zeros(k * g, dtype=torch.float64), np.zeros((plan.occ_id.size, d), dtype=np.float32))

    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in (self.intra, self.norm_sum, self.norm_m2, self.counts, self.sample, self.occ))
                   + sum(t.numel() * t.element_size() for t in (self.id_sums, self.id_sq, self.id_counts)))


@dataclass(frozen=True)
class _Tokens:
    """One batch's non-special tokens: their text, their ordinal within the text and the batch row they sit in."""

    text: np.ndarray
    ordinal: np.ndarray
    local: np.ndarray
    rows: np.ndarray


def _batch_tokens(batch: Any, plan: TokenPlan) -> tuple[_Tokens, torch.Tensor, torch.Tensor]:
    mask = batch.attention_mask.bool() & ~batch.special_mask.bool()
    r, p = mask.nonzero(as_tuple=True)
    ordinal = (mask.long().cumsum(dim=1) - 1)[r, p].cpu().numpy()
    local = r.cpu().numpy()
    text = np.asarray(batch.rows)[local]
    got = batch.input_ids[r, p].cpu().numpy()
    want = plan.ids[plan.offsets[text] + ordinal]
    if not np.array_equal(got, want):
        bad = int(text[np.flatnonzero(got != want)[0]])
        raise RuntimeError(f"token sink: the forward pass tokenised text {bad} differently from the token plan; the "
                           "plan's tokenisation must match the pass's (same tokenizer, max_length, right padding).")
    return _Tokens(text, ordinal, local, np.asarray(batch.rows)), r, p


class TokenSink:
    """Keeps, for each layer in ``layers`` and each variant in ``variants`` (name -> fitted
    :class:`~embedgeom.postprocess.Postprocessor` per layer, or None for the raw states), only what the token metrics
    need (see the module docstring); ``finish()`` returns ``{(layer, variant): LayerState}``."""

    attention_layers: frozenset[int] = frozenset()

    def __init__(self, plan: TokenPlan, layers: Sequence[int],
                 variants: Mapping[str, Mapping[int, Postprocessor] | None]) -> None:
        self.plan = plan
        self.layers = frozenset(int(lay) for lay in layers)
        self.variants = dict(variants)
        self._state: dict[tuple[int, str], LayerState] = {}

    def accept(self, batch: Any) -> None:
        plan = self.plan
        toks, r, p = _batch_tokens(batch, plan)
        flat = plan.offsets[toks.text] + toks.ordinal
        kidx = np.full(flat.size, -1, dtype=np.int64)
        if plan.kept_ids.size:
            at = np.minimum(np.searchsorted(plan.kept_ids, plan.ids[flat]), plan.kept_ids.size - 1)
            hit = plan.kept_ids[at] == plan.ids[flat]
            kidx[hit] = at[hit]
        slot = plan.occ_slot[flat]
        sampled = toks.ordinal == plan.sample_ordinal[toks.text]
        b = len(toks.rows)
        for layer in sorted(self.layers):
            raw = batch.hidden[layer][r, p].to("cpu", torch.float64).numpy()
            for name, fitted in self.variants.items():
                x = raw if fitted is None else fitted[layer].transform(raw).astype(np.float64)
                key = (layer, name)
                if key not in self._state:
                    self._state[key] = LayerState.empty(plan, x.shape[1])
                self._update(self._state[key], x, toks, b, kidx, slot, sampled)

    def _update(self, st: LayerState, x: np.ndarray, toks: _Tokens, b: int, kidx: np.ndarray, slot: np.ndarray,
                sampled: np.ndarray) -> None:
        plan = self.plan
        norms = np.linalg.norm(x, axis=1)
        z = x / np.where(norms > 0, norms, 1.0)[:, None]
        xt, zt, loc = torch.from_numpy(x), torch.from_numpy(z), torch.from_numpy(toks.local)
        sums = torch.zeros((b, x.shape[1]), dtype=torch.float64).index_add_(0, loc, xt).numpy()
        usums = torch.zeros((b, x.shape[1]), dtype=torch.float64).index_add_(0, loc, zt).numpy()
        counts = np.bincount(toks.local, minlength=b)
        st.intra[toks.rows] = intra_from_sums(sums, usums, counts)
        st.norm_sum[toks.rows] = np.bincount(toks.local, weights=norms, minlength=b)
        text_mean = st.norm_sum[toks.rows] / np.maximum(counts, 1)
        dev = norms - text_mean[toks.local]
        st.norm_m2[toks.rows] = np.bincount(toks.local, weights=dev * dev, minlength=b)
        st.counts[toks.rows] = counts
        st.sample[toks.text[sampled]] = x[sampled]
        m = kidx >= 0
        if m.any():
            cell = torch.from_numpy(kidx[m] * plan.groups + plan.group[toks.text[m]])
            st.id_sums.index_add_(0, cell, zt[torch.from_numpy(m)])
            st.id_sq.index_add_(0, cell, torch.from_numpy((z[m] * z[m]).sum(axis=1)))
            st.id_counts.index_add_(0, cell, torch.ones(int(m.sum()), dtype=torch.float64))
        keep = slot >= 0
        st.occ[slot[keep]] = x[keep]

    def finish(self) -> dict[tuple[int, str], LayerState]:
        return self._state


class MomentSink:
    """Float64 moments of every non-special token state per layer (count, mean, population covariance), for
    fitting a post-processing on the analysed set; ``finish()`` returns ``{layer: (n, mean, cov)}``."""

    attention_layers: frozenset[int] = frozenset()

    def __init__(self, layers: Sequence[int]) -> None:
        self.layers = frozenset(int(lay) for lay in layers)
        self._m: dict[int, list[Any]] = {}

    def accept(self, batch: Any) -> None:
        mask = batch.attention_mask.bool() & ~batch.special_mask.bool()
        for layer in self.layers:
            x = batch.hidden[layer][mask].to("cpu", torch.float64)
            if layer not in self._m:
                d = x.shape[1]
                self._m[layer] = [0, x.mean(dim=0), torch.zeros(d, dtype=torch.float64),
                                  torch.zeros(d, d, dtype=torch.float64)]
            m = self._m[layer]
            xc = x - m[1]  # about a fixed shift (the first batch's mean): no cancellation for a large shared mean
            m[0] += x.shape[0]
            m[2] += xc.sum(dim=0)
            m[3] += xc.T @ xc

    def finish(self) -> dict[int, tuple[int, np.ndarray, np.ndarray]]:
        out = {}
        for layer, (n, shift, s, scat) in self._m.items():
            mu = s / n
            cov = scat / n - torch.outer(mu, mu)
            out[layer] = (int(n), (shift + mu).numpy(), cov.numpy())
        return out
