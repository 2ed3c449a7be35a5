"""Plain helpers shared by test modules (fixtures live in conftest.py): small real models built on the fly (no
hub: a tiny BERT with its own WordPiece vocabulary), analyses of two tiny BERTs, and results derived from them
(subsets, stand-ins for other models, comparisons, reference-protocol companions) for figure and report tests."""

from __future__ import annotations

import copy
import functools
import math
from pathlib import Path

import numpy as np
import torch
from scipy.special import gammaln, ive

from embedgeom.results import AnalysisResult, ComparisonResult

WORDS = ("the a an and or of to in on at is was are were be been it this that with for as by from cat dog "
         "mat sat ran fast slow big small red blue green house tree car road city river sky sun moon star good "
         "bad happy sad film movie story plot actor music song game team win lose play work time day night "
         "year new old long short high low first last hello world sentence token text words more many much "
         "than one two three four five six seven eight nine ten").split()


def write_vocab(path: Path) -> Path:
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *chars, *[f"##{c}" for c in chars]]
    path.write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    return path


def bert_tokenizer(vocab: Path, **kwargs):
    """A WordPiece BERT tokenizer over the vocabulary file ``vocab`` (transformers 5 takes ``vocab=``; 4.x's fast
    class takes ``vocab_file=`` - given the other keyword, each silently builds a 5-token vocabulary)."""
    import inspect

    import transformers

    cls = getattr(transformers, "BertTokenizerFast", None) or transformers.BertTokenizer
    key = "vocab" if "vocab" in inspect.signature(cls.__init__).parameters else "vocab_file"
    tok = cls(**{key: str(vocab)}, **kwargs)
    assert len(tok.get_vocab()) > 5, "the tokenizer did not read its vocabulary"
    return tok


def make_tiny_bert(directory: Path, *, layers: int = 2, hidden: int = 32, heads: int = 4, seed: int = 0,
                   max_positions: int = 64) -> Path:
    """Save a randomly initialised (seeded) BertModel + BertTokenizerFast to ``directory``."""
    from transformers import BertConfig, BertModel

    directory.mkdir(parents=True, exist_ok=True)
    vocab = write_vocab(directory / "vocab_src.txt")
    tok = bert_tokenizer(vocab, do_lower_case=True, model_max_length=max_positions)
    cfg = BertConfig(vocab_size=len(tok.get_vocab()), hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=heads, intermediate_size=4 * hidden, max_position_embeddings=max_positions,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(seed)
    model = BertModel(cfg)
    model.save_pretrained(directory, safe_serialization=True)
    tok.save_pretrained(directory)
    (directory / "vocab_src.txt").unlink()
    return directory


# --- results for figure and report tests ---------------------------------------------------------------------

@functools.cache
def analyse_pair(dir_a: str, dir_b: str) -> tuple[AnalysisResult, AnalysisResult]:
    """Two analyses (names tiny-a, tiny-b) of the tiny BERTs in ``dir_a`` and ``dir_b`` on lee and polarity, every
    pooling, every layer; probes on tiny-a's lee only (they are the slow part). Cached per pair of paths."""
    import embedgeom as eg

    kw = {"max_texts": 40, "layers": "all", "cache": False}
    enc = eg.load_encoder(dir_a, device="cpu", dtype="float32")
    a = eg.analyze(enc, ["sample:lee"], name="tiny-a", **kw)  # probes (the slow part) on lee only
    a_pol = eg.analyze(enc, ["sample:polarity"], name="tiny-a", probes=False, **kw)
    a.tasks.update(a_pol.tasks)
    a.metrics += a_pol.metrics
    a.arrays.update(a_pol.arrays)
    b = eg.analyze(eg.load_encoder(dir_b, device="cpu", dtype="float32"), ["sample:lee", "sample:polarity"],
                   name="tiny-b", probes=False, **kw)
    return a, b


def subset(res: AnalysisResult, *, poolings=None, layers=None, tasks=None, name=None) -> AnalysisResult:
    """What ``analyze`` would have returned with fewer poolings / layers / tasks."""
    def keep(t, p, lay):
        return ((tasks is None or t in tasks) and (poolings is None or p in poolings)
                and (layers is None or int(lay) in layers))

    out = copy.copy(res)
    out.metrics = [dict(r) for r in res.metrics if keep(r["task"], r["pooling"], r["layer"])]
    out.probes = [dict(r) for r in res.probes if keep(r["task"], r["pooling"], r["layer"])]
    arrays = {}
    for k, v in res.arrays.items():
        parts = k.split("|")
        if parts[0] == "struct":
            if tasks is None or parts[1] in tasks:
                arrays[k] = v
        elif keep(parts[1], parts[2], parts[3]):
            arrays[k] = v
    out.arrays = arrays
    out.tasks = {t: c for t, c in res.tasks.items() if tasks is None or t in tasks}
    out.checkpoint = dict(res.checkpoint)
    if name:
        out.name = name
    return out


def shifted(res: AnalysisResult, factor: float, name: str, **checkpoint) -> AnalysisResult:
    """A stand-in for another model: every value scaled by ``factor`` (intervals with it)."""
    out = subset(res, name=name)
    for r in out.metrics:
        for k in ("value", "low", "high"):
            r[k] = r[k] * factor
        r["stderr"] = r["stderr"] * abs(factor)
    out.checkpoint.update(checkpoint)
    return out


def fake_compare(a: AnalysisResult, b: AnalysisResult, *, options=None) -> ComparisonResult:
    """Rows shaped like compare()'s for two models: diff = b - a with a symmetric interval; two rows in three
    significant (the interval excludes 0)."""
    rows = []
    for r in a.metrics:
        t, p, lay = r["task"], r["pooling"], int(r["layer"])
        try:
            other = b.value(t, p, lay, r["metric"])
        except KeyError:
            continue
        if not (math.isfinite(r["value"]) and math.isfinite(other["value"])):
            continue
        diff = other["value"] - r["value"]
        se = abs(diff) / 2.5 if len(rows) % 3 else abs(diff) * 2 + 1e-9
        rows.append({"task": t, "pooling": p, "layer": lay, "pooling_b": p, "layer_b": lay, "kind": "metric",
                     "name": r["metric"], "value_a": r["value"], "value_b": other["value"], "diff": diff,
                     "stderr": se, "low": diff - 1.96 * se, "high": diff + 1.96 * se,
                     "significant": bool(abs(diff) > 1.96 * se), "n": r["n"], "method": "test"})
    opts = {"confidence": 0.95, "direction": "diff = b - a (second minus first)", "kind": "models", **(options or {})}
    return ComparisonResult(a.name, b.name, rows, [], opts)


def paper_companion(res: AnalysisResult) -> AnalysisResult:
    """A reference-protocol result shaped like ``--protocol paper``'s: its own metric names and poolings, point
    values without intervals, probes semantic/token/gap."""
    names = {"spectral_entropy": "spectral_entropy", "effective_rank": "effective_rank", "rank_at_variance": "rank_90",
             "stable_rank": "stable_rank", "uniformity": "uniformity"}
    last = res.checkpoint["num_layers"]
    metrics, probes, arrays = [], [], {}
    for t in res.tasks:
        for p, src in (("mean", "mean"), ("max", "max"), ("weighted", "mean"), ("attention", "attention")):
            if f"spectrum|{t}|{src}|{last}" not in res.arrays:
                continue
            for r in res.metrics:
                if (r["task"], r["pooling"], int(r["layer"])) == (t, src, last) and r["metric"] in names:
                    metrics.append({"task": t, "pooling": p, "layer": last, "metric": names[r["metric"]],
                                    "value": r["value"] * 1.01, "stderr": math.nan, "low": math.nan,
                                    "high": math.nan, "n": r["n"], "confidence": math.nan, "method": "reference",
                                    "replicates": 0})
            for m, v in (("alignment_class_conditional", 0.42), ("intra_inter_ratio", 0.9)):
                metrics.append({"task": t, "pooling": p, "layer": last, "metric": m, "value": v, "stderr": math.nan,
                                "low": math.nan, "high": math.nan, "n": 40, "confidence": math.nan,
                                "method": "reference", "replicates": 0})
            for probe, metric, v in (("semantic", "accuracy", 0.61), ("token", "accuracy", 0.3),
                                     ("gap", "semantic_minus_token", 0.31)):
                probes.append({"task": t, "pooling": p, "layer": last, "probe": probe, "metric": metric, "value": v,
                               "stderr": math.nan, "n": 40, "method": "reference"})
            arrays[f"spectrum|{t}|{p}|{last}"] = res.arrays[f"spectrum|{t}|{src}|{last}"]
    tasks = {t: {"protocol": "paper", "description": c.get("description"), "dtype": "float32"}
             for t, c in res.tasks.items()}
    return AnalysisResult(dict(res.checkpoint), tasks, {"protocol": "paper"}, metrics, probes, arrays, {},
                          f"{res.name} (reference protocol)")


def axes_with_data(fig) -> list:
    """Main Axes (secondary axes aside), asserting each draws a line, collection or patch with finite data."""
    axes = [a for a in fig.axes if type(a).__name__ != "SecondaryAxis"]
    assert axes
    for ax in axes:
        lines = [ln for ln in ax.lines if np.isfinite(np.asarray(ln.get_ydata(), dtype=float)).any()]
        colls = [c for c in ax.collections if len(c.get_offsets()) or any(len(p.vertices) for p in c.get_paths())]
        patches = [p for p in ax.patches if (type(p).__name__ == "Rectangle" and np.isfinite(p.get_height()))
                   or (type(p).__name__ == "StepPatch" and np.isfinite(p.get_data()[0]).any())]
        assert lines or colls or patches, f"empty axes: {ax.get_title()!r}"
    return axes

def random_rotation(d: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def sphere_uniformity(d: int, t: float) -> float:
    """Population uniformity of the uniform distribution on S^{d-1} (closed form via Bessel I).

    u = z.z' has E[e^{k u}] = Gamma(d/2) (2/k)^{d/2-1} I_{d/2-1}(k); here k = 2t and ||z-z'||^2 = 2 - 2u.
    """
    k, nu = 2.0 * t, d / 2.0 - 1.0
    return -2.0 * t + gammaln(d / 2.0) + nu * math.log(2.0 / k) + math.log(ive(nu, k)) + k
