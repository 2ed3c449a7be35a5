"""Analysis protocols: our default, and the reference study's protocol reproduced by name (``paper``).

``paper`` follows ``embedgeom/reference/PROTOCOL.md`` - what the reference study's released code computes ("Predict and
Reconstruct", arXiv 2606.05173; aymen-000/predict-reconstruct-language-models at bc6dc05,
``src/scripts/representation_analysis.py``) - step by step; it is implemented in :mod:`embedgeom.reference.paper`.

* :data:`PAPER_DEVIATIONS`: every way our *default* protocol departs from the reference, one line each, phrased
  "reference: X; default: Y; why: Z".
* :data:`PAPER_PROTOCOL_DEPARTURES`: where the ``paper`` protocol itself cannot follow the reference code (its
  unseeded draws are seeded; its encoders are not public). Recorded in every paper-protocol result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ProtocolName = Literal["default", "paper"]
PROTOCOLS: tuple[str, ...] = ("default", "paper")

#: The reference study's code vs our default protocol, one line per choice that changes numbers.
PAPER_DEVIATIONS: dict[str, str] = {
    "items": "reference: the first 2,000 rows of each GLUE validation split in dataset order, duplicates kept, "
             "no shuffling (uniformity alone on a random 1,000 of them); default: every unique text, or a seeded "
             "random --max-texts subset; why: a duplicate sits at distance 0 from its copy and biases distance "
             "and rank metrics, and a split's first rows are not a random sample of it",
    "pair_text": "reference: a pair is one string '{first} [SEP] {second}' tokenised as one segment (one item "
                 "per pair; the literal [SEP] becomes BERT's separator token); default: each unique sentence is "
                 "embedded on its own, the pairs are kept for alignment and the probes; why: one vector of two "
                 "sentences measures neither sentence, and the literal '[SEP]' depends on a BERT vocabulary",
    "tokenization": "reference: max_length=128, truncation, padding='max_length' (every row 128 tokens); "
                    "default: padding to the longest item of each batch, truncation at the model's limit "
                    "(--max-length); why: with the padding mask applied, padding does not change a vector, and "
                    "the model's whole context is used",
    "attention_mask": "reference: no attention mask is passed, so every position, padding included, is attended "
                      "(pad positions are only excluded inside pooling, by input_ids == pad id); default: the "
                      "padding mask is passed to the encoder; why: attending to padding makes an item's vector "
                      "depend on how much padding it got",
    "dtype": "reference: float32 forward pass; default: --dtype auto (bfloat16 autocast where the hardware runs "
             "it natively and a precision check on the texts passes, else float32); why: speed, with the check "
             "guarding the numbers",
    "poolings": "reference: mean, max, 'weighted' (a softmax of untrained all-ones weights over non-pad "
                "positions, numerically the mean) and an untrained attention head; no CLS; default: mean, CLS, "
                "max and parameter-free attention (+ native for sentence-transformers checkpoints); why: "
                "'weighted' repeats mean, and CLS is what many encoders are trained to use",
    "attention": "reference: an untrained, unseeded head: query ~ N(0, I_D), bias-free D x D key projection with "
                 "Xavier-uniform init, score q.(W h_l)/sqrt(D) over non-pad positions, softmax, weighted sum of "
                 "the hidden states; default: the encoder's own last-layer attention from the first token, "
                 "head-averaged and renormalised over real tokens; why: a random head's weights are noise, so "
                 "its numbers change with every draw and say nothing about the encoder",
    "spectrum": "reference: eigenvalues S^2 of the centred embeddings (S from a thin SVD, not divided by n - 1), "
                "explained variance S^2 / (sum S^2 + 1e-12); default: covariance eigenvalues S^2 / (n - 1) in "
                "float64 with numerically-zero values set to 0; why: the covariance is the standard spectrum; "
                "ratios (entropy, ranks) are unchanged by the 1 / (n - 1) scale",
    "spectral_entropy": "reference: entropy (nats) of the explained variance divided by log(min(n, D)); "
                        "default: entropy in nats, unnormalised; why: the normaliser changes with the number of "
                        "items whenever n < D, so normalised values are not comparable across sample sizes",
    "effective_rank": "reference: exp(-sum p log p), p = S / (sum S + 1e-12) on the singular values, p <= 1e-12 "
                      "dropped; default: the same Roy & Vetterli definition on the singular values of the centred "
                      "data, without the epsilons, numerically-zero values dropped; why: same quantity, float64",
    "rank_90": "reference: searchsorted(cumulative explained variance, 0.90) + 1 (a component landing exactly on "
               "0.90 counts); default: rank_at_variance with the same rule and a 1e-12 tolerance, capped at the "
               "rank; why: rounding at the boundary",
    "stable_rank": "reference: sum S^2 / (S_1^2 + 1e-12); default: sum(lambda) / max(lambda) of the covariance "
                   "eigenvalues; why: the same ratio without the epsilon",
    "uniformity": "reference: log of the mean over pairs i<j of exp(-2 ||z_i - z_j||^2) on unit rows of an "
                  "unseeded random subset of min(n, 1,000) rows; default: the same quantity exact over all pairs "
                  "of the full set, with a jackknife interval; why: a subset adds sampling noise the reference "
                  "does not report",
    "alignment": "reference: 'alignment' is class-conditional: on unit rows, for each class with >= 2 members "
                 "the mean over its pairs of (||z_i - z_j||^2)^2, then the unweighted mean of the per-class means "
                 "(STS-B scores binned by numpy.digitize at 1, 2, 3, 4); default: Wang & Isola alignment "
                 "(alpha=2) over the task's positive pairs; why: the reference's number is a within-class spread, "
                 "not the alignment of positive pairs its name refers to",
    "intra_inter_ratio": "reference: mean Euclidean distance over same-class pairs / (mean over different-class "
                         "pairs + 1e-12) on unit rows, where a class with a single member is skipped (its item is "
                         "in no different-class pair); default: not reported; why: class separability is measured "
                         "by the probes, with intervals",
    "probes": "reference: semantic probe on features standardised by a StandardScaler fitted on all items before "
              "any split; LogisticRegression(C=1, saga, "
              "max_iter=500, unseeded), cv=5 without shuffling (stratified), mean of fold accuracies and of fold "
              "macro-F1, MCC from out-of-fold predictions for binary tasks only; STS-B: Ridge() (alpha=1), "
              "out-of-fold Spearman; default: scaler fitted inside each fold, LogisticRegression(C=1, lbfgs, "
              "max_iter=2000), shuffled seeded stratified 5-fold, pooled out-of-fold accuracy, macro-F1 and MCC "
              "with binomial standard errors; pair tasks from SentEval features of the two sentences; scored "
              "pairs: cosine Spearman (no training) plus RidgeCV; why: a scaler fitted on the test folds leaks, "
              "unshuffled folds follow the split's order, and saga at 500 iterations often stops unconverged",
    "token_probe": "reference: target = the most frequent token id of each item's whole text, tokenised without "
                   "special tokens and without truncation (special ids such as a pair's [SEP] not counted; ties to "
                   "the smallest id, 0 for none), items whose target occurs fewer than 5 times dropped, features "
                   "standardised by a StandardScaler fitted on the items kept, the same logistic regression with "
                   "3-fold CV, gap = semantic - token accuracy; default: a lexical probe (does each of 20 words of "
                   "mid-range document frequency occur in the text; balanced accuracy, 5-fold); why: the most "
                   "frequent token is mostly a stop word or punctuation mark",
    "uncertainty": "reference: point values only; default: jackknife intervals on every number and paired "
                   "intervals for differences; why: a difference without an interval cannot be read",
}

#: Where ``--protocol paper`` itself departs from the reference code (recorded in every paper result).
PAPER_PROTOCOL_DEPARTURES: dict[str, str] = {
    "seeded_attention_head": "the reference draws the attention head's query and key weights unseeded; here "
                             "they come from a dedicated torch.Generator seeded with the analysis seed (query "
                             "first, then key), so the numbers can be regenerated",
    "seeded_uniformity_subset": "the reference draws the uniformity subset with an unseeded permutation; here "
                                "numpy.random.default_rng(seed).permutation(n)[:1000], the same rows for every "
                                "pooling",
    "seeded_probe_solver": "the reference leaves saga's random_state unset; here random_state=seed",
    "encoders": "the study's own MLM and hybrid encoders are not public; any checkpoint stands in for them, run "
                "through its Hugging Face model with an all-ones attention mask (the equivalent of no mask)",
    "float64_metrics": "spectra, distances and uniformity are computed in float64 from the float32 embeddings "
                       "(the reference's precision for these steps is not stated); differences are at float32 "
                       "rounding level",
}


@dataclass(frozen=True)
class Protocol:
    """An analysis protocol: its name, a one-line description, how our default departs from the reference
    (``deviations``) and where the protocol itself cannot follow the reference code (``departures``)."""

    name: str
    description: str
    deviations: dict[str, str] = field(default_factory=dict)
    departures: dict[str, str] = field(default_factory=dict)


DEFAULT = Protocol("default", "embedgeom's default: unique texts, padding masked, exact metrics with intervals",
                   PAPER_DEVIATIONS)
PAPER = Protocol("paper", "the reference study's released analysis code, step by step "
                 "(embedgeom/reference/PROTOCOL.md)",
                 PAPER_DEVIATIONS, PAPER_PROTOCOL_DEPARTURES)
#: What ``analyze(protocol=...)`` accepts: a protocol, or ``both`` (the default analysis with the reference
#: protocol's analysis of the same data as its companion, ``result.paper``).
PROTOCOL_CHOICES: tuple[str, ...] = (*PROTOCOLS, "both")


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name`` (``default`` or ``paper``)."""
    if name not in PROTOCOLS:
        raise ValueError(f"protocol: expected one of {', '.join(PROTOCOLS)}, got {name!r}. Pass --protocol default "
                         "or --protocol paper.")
    return PAPER if name == "paper" else DEFAULT
