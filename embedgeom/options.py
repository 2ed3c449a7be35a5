"""The options analyze(), compare(), encode() and the CLI share: one parser per kind of option, each raising one
ValueError that names the option, what it expected, what it got, and the fix - before any work starts; and
:class:`AnalysisOptions`, every option of an analysis declared once (type, default, validation, help text).
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

LayerSpec = str | tuple[int, ...]


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def parse_layers(value: Any, option: str = "layers") -> LayerSpec:
    """``'all'``, an integer, a comma-separated string of integers, or a sequence of integers -> ``'all'`` or a
    tuple of ints (hidden-state indices: 0 = embeddings, -1 = last layer; range-checked against the model later)."""
    fix = "e.g. -1 (last layer), 0,3,-1, or all"
    if isinstance(value, str):
        text = value.strip()
        if text == "all":
            return "all"
        parts = [p.strip() for p in text.split(",")]
        try:
            out = tuple(int(p) for p in parts)
        except ValueError:
            raise ValueError(f"{option}: expected 'all' or comma-separated integers ({fix}), got {value!r}.") from None
    elif _is_int(value):
        out = (int(value),)
    elif isinstance(value, Sequence) and value and all(_is_int(v) for v in value):
        out = tuple(int(v) for v in value)
    else:
        raise ValueError(f"{option}: expected 'all', an integer or a list of integers ({fix}), got {value!r}.")
    if not out:
        raise ValueError(f"{option}: expected at least one layer ({fix}), got none.")
    return tuple(dict.fromkeys(out))


def check_int(value: Any, option: str, *, minimum: int, fix: str, optional: bool = False) -> int | None:
    """An integer >= ``minimum`` (``None`` allowed when ``optional``); bools and floats are refused."""
    if value is None and optional:
        return None
    if not _is_int(value) or value < minimum:
        unset = " or unset" if optional else ""
        raise ValueError(f"{option}: expected an integer >= {minimum}{unset}, got {value!r}. {fix}")
    return int(value)


def check_seed(value: Any, option: str = "seed") -> int:
    if not _is_int(value) or value < 0:
        raise ValueError(f"{option}: expected a non-negative integer, got {value!r}. Pass e.g. seed=0.")
    return int(value)


def check_confidence(value: Any, option: str = "confidence") -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
            math.isfinite(float(value)) and 0.0 < float(value) < 1.0):
        raise ValueError(f"{option}: expected a level strictly between 0 and 1, got {value!r}. Pass e.g. 0.95 for "
                         "95% intervals.")
    return float(value)


def check_groups(value: Any, option: str = "groups") -> int:
    out = check_int(value, option, minimum=2, fix="The jackknife needs at least 2 groups; the default is 20.")
    assert out is not None
    return out


def check_choice(value: Any, option: str, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{option}: expected one of {', '.join(choices)}, got {value!r}.")
    return value


def check_bool(value: Any, option: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{option}: expected True or False, got {value!r}.")
    return value


# --- the analysis options, declared once -------------------------------------------------------------------

#: The data an analysis reads when none is given (the CLI and Python share it).
DEFAULT_DATA: tuple[str, ...] = ("sample:bbc", "sample:lee")


def _opt(help: str, cli: str | None = None, *, flag: str | None = None) -> dict[str, Any]:
    """A field's declaration: its help text (the CLI shows it), the CLI parameter it comes from (``None``: the
    field's own name; ``""``: not on the CLI) and the flag users type."""
    return {"help": help, "cli": cli, "flag": flag}


@dataclass(frozen=True)
class AnalysisOptions:
    """Every option of an analysis (:func:`embedgeom.analyze`, :func:`embedgeom.analyze_checkpoints`, the models
    :func:`embedgeom.compare` analyses, and ``embedgeom analyze`` / ``compare``), declared once: its type, default,
    validation and help text live here, the CLI takes its help from here (a test checks that the two agree), and
    every saved result records :meth:`record`. Build with :meth:`create`, which validates every value and raises one
    ValueError naming the option, what it expected, what it got and the fix."""

    data: tuple[str, ...] = field(default=DEFAULT_DATA, metadata=_opt(
        "Comma-separated data specs: glue:sst2|mrpc|mnli|cola|stsb, sample:wiki|bbc|bbc-pairs|polarity|lee|wordsim|"
        "simlex, or .txt/.csv/.tsv/.jsonl paths (options after '?', e.g. file.csv?text=body&label=topic).",
        flag="--data"))
    poolings: tuple[str, ...] = field(default=("mean", "cls", "max", "attention"), metadata=_opt(
        "mean,cls,max,attention (comma-separated), 'all', or 'native' for sentence-transformers checkpoints.",
        cli="pooling", flag="--pooling"))
    layers: str | tuple[int, ...] = field(default=(-1,), metadata=_opt(
        "Hidden layer(s): -1 = last, 0 = embeddings, comma-separated, or 'all' for a layer profile.", cli="layer",
        flag="--layer"))
    max_texts: int | None = field(default=None, metadata=_opt(
        "Seeded random subset of at most N items per task (texts; pairs for pair tasks); with --protocol paper, "
        "the first N rows in order (default 2,000).", flag="--max-texts"))
    seed: int = field(default=0, metadata=_opt("Seed for subsets, jackknife groups and probe folds.",
                                               flag="--seed"))
    protocol: str = field(default="default", metadata=_opt(
        "'paper' computes what the reference study's released code computes (first 2,000 rows in order, joined "
        "pairs, no attention mask, its metrics and probes; described in embedgeom/reference/PROTOCOL.md); 'both' "
        "saves the paper numbers beside the default ones (OUT/paper).", flag="--protocol"))
    metrics: tuple[str, ...] = field(default=(), metadata=_opt(
        "Single-set metrics to measure (default: every 'set' metric of the registry).", cli=""))
    probes: bool = field(default=True, metadata=_opt("Run the linear/similarity/lexical probes.",
                                                     flag="--probes"))
    probe_c: float | str = field(default=1.0, metadata=_opt(
        "The logistic probes' C (inverse regularisation strength): a positive number, fixed (default 1.0), or "
        "'nested' to choose it inside each outer fold by an inner 3-fold stratified CV over C in {0.001, 0.01, 0.1, "
        "1, 10, 100} (the rows' method states the C used).", flag="--probe-c"))
    groups: int = field(default=20, metadata=_opt(
        "Jackknife groups for the intervals (delete-a-group; at least 2).", flag="--groups"))
    confidence: float = field(default=0.95, metadata=_opt("Confidence level of every interval, in (0, 1).",
                                                          flag="--confidence"))
    device: str = field(default="auto", metadata=_opt("auto, cpu, cuda or cuda:N.", flag="--device"))
    dtype: str = field(default="auto", metadata=_opt(
        "Autocast compute dtype: auto (bf16 where native), float32, bfloat16, float16. Pooling and results are "
        "float32 either way.", flag="--dtype"))
    batch_size: int | None = field(default=None, metadata=_opt(
        "Encode batch size (default 32 on CPU, 128 on GPU).", flag="--batch-size"))
    max_length: int | None = field(default=None, metadata=_opt(
        "Truncate texts to this many tokens (default: the model's).", flag="--max-length"))
    special_tokens: str = field(default="include", metadata=_opt(
        "Whether [CLS]/[SEP]-style special tokens take part in mean/max/attention pooling.",
        flag="--special-tokens"))
    cache: bool | str = field(default=True, metadata=_opt(
        "Embedding cache: True (the default root), False (read and write nothing), or a directory.", cli="",
        flag="--no-cache / --cache-dir"))
    glue_dir: str | None = field(default=None, metadata=_opt(
        "Read GLUE offline from this directory (the official GLUE TSV layout).", flag="--glue-dir"))
    save_embeddings: bool = field(default=True, metadata=_opt(
        "Save embeddings with --out (needed by compare).", cli="save_embeddings",
        flag="--save-embeddings / --no-embeddings"))
    postprocess: str = field(default="none", metadata=_opt(
        "Post-process the vectors before measuring, fitted on each analysed set: none, standardize, abtt:K (remove "
        "the mean and the top K principal directions) or whiten (BERT-whitening). The embedding cache keeps the raw "
        "vectors.", flag="--postprocess"))
    spill: int | None = field(default=None, metadata=_opt(
        "Encode N texts at a time and measure from vectors spilled to disk, read in row blocks: memory bounded by N "
        "and the block, not by the corpus (default: in memory; always spilled under torchrun). Same numbers up to "
        "float rounding.", flag="--spill"))
    prompt: str | None = field(default=None, metadata=_opt(
        "Text prepended to every text (e.g. 'query: '), or the name of a prompt a sentence-transformers checkpoint "
        "declares; default: the checkpoint's default prompt, if any. Recorded in the result and the cache key.",
        flag="--prompt"))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def help(cls, name: str) -> str:
        """The help text of option ``name`` (what the CLI shows)."""
        return next(f.metadata["help"] for f in fields(cls) if f.name == name)

    @classmethod
    def cli_names(cls) -> dict[str, str]:
        """option name -> the CLI parameter it comes from (options not on the CLI are left out)."""
        return {f.name: f.metadata["cli"] or f.name for f in fields(cls) if f.metadata["cli"] != ""}

    @classmethod
    def create(cls, **values: Any) -> AnalysisOptions:
        """Validated options from keyword values (unset ones take their defaults). ``poolings="all"`` (or None)
        means the four parameter-free poolings every encoder supports; ``layers`` as :func:`parse_layers`;
        ``metrics=None`` every single-set metric."""
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            raise ValueError(f"{unknown[0]}: not an analysis option; expected some of {', '.join(cls.names())}.")
        v = {**{f.name: f.default for f in fields(cls)}, **values}
        return cls(**{name: _VALIDATE.get(name, _keep)(v[name], name) for name in cls.names()})

    def replace(self, **changes: Any) -> AnalysisOptions:
        """A copy with ``changes`` applied and validated."""
        return type(self).create(**{**self.record(as_json=False), **changes})

    def record(self, *, as_json: bool = True) -> dict[str, Any]:
        """The options as saved with every result (tuples as lists when ``as_json``)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if as_json:
            out = {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
        return out


def _keep(value: Any, name: str) -> Any:
    return value


def split_names(v: Any) -> tuple[str, ...]:
    """Names given as a comma-separated string (blanks dropped) or as a sequence, as a tuple."""
    if isinstance(v, str):
        return tuple(s.strip() for s in v.split(",") if s.strip())
    return tuple(v)


def _data(value: Any, name: str) -> tuple[str, ...]:
    if value is None:
        return DEFAULT_DATA
    if not isinstance(value, (str, Sequence)) or not all(isinstance(d, str) for d in split_names(value)):
        raise ValueError(f"{name}: expected data specs as a comma-separated string or a list of strings, got "
                         f"{value!r}. Pass e.g. 'glue:sst2,sample:wiki'.")
    out = split_names(value)
    if not out:
        raise ValueError(f"{name}: expected at least one data spec (e.g. glue:sst2 or sample:wiki), got none.")
    return out


def _poolings(value: Any, name: str) -> tuple[str, ...]:
    """Names checked against the pooler registry (:mod:`embedgeom.pooling`); ``"all"`` (or None) expands to every
    registered pooler of a bidirectional encoder that needs no declaration (the four parameter-free ones unless more
    are registered); ``native`` only when named."""
    from .pooling import resolve_poolings

    if value is None:
        value = "all"
    if not isinstance(value, (str, Sequence)) or not all(isinstance(p, str) for p in split_names(value)):
        raise ValueError(f"{name}: expected pooling names (comma-separated or a list) or 'all', got {value!r}.")
    names = split_names(value)
    try:
        return resolve_poolings(names, kind="encoder", declared=True)
    except ValueError as err:
        try:  # poolings of causal models (e.g. last) are checked against the model's kind when it is loaded
            return resolve_poolings(names, kind="decoder", declared=True)
        except ValueError:
            raise ValueError(str(err).replace("poolings:", f"{name}:", 1)) from None


def _metrics(value: Any, name: str) -> tuple[str, ...]:
    from . import metrics as M

    set_metrics = M.names("set")
    out = set_metrics if value is None or value == () else split_names(value)
    for m in out:
        info = M.get_metric(m)
        if info.kind != "set":
            raise ValueError(f"{name}: expected single-set metrics {set_metrics}, got {m!r} ({info.kind}; alignment "
                             "is computed from each task's positives and cross metrics by compare()).")
    return tuple(out)


def _choice(choices: Any) -> Any:
    def check(value: Any, name: str) -> str:
        return check_choice(value, name, choices() if callable(choices) else choices)
    return check


def _protocols() -> tuple[str, ...]:
    from .reference.protocols import PROTOCOL_CHOICES

    return PROTOCOL_CHOICES


def _dtypes() -> tuple[str, ...]:
    from .loading import COMPUTE_DTYPES

    return tuple(COMPUTE_DTYPES)


def _device(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name}: expected auto, cpu, cuda or cuda:N, got {value!r}.")
    return value


def _cache(value: Any, name: str) -> bool | str:
    if isinstance(value, bool):
        return value
    if isinstance(value, (str, os.PathLike)) and str(value).strip():
        return str(value)
    raise ValueError(f"{name}: expected True, False or a cache directory, got {value!r}.")


def _probe_c(value: Any, name: str) -> float | str:
    from .probes import parse_probe_c

    return parse_probe_c(value, name)


def _postprocess(value: Any, name: str) -> str:
    from .postprocess import check_postprocess

    return check_postprocess(value, name)


def _prompt(value: Any, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"{name}: expected a text such as 'query: ' or a declared prompt's name, got {value!r}.")


def _path_or_none(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)) and str(value).strip():
        return str(value)
    raise ValueError(f"{name}: expected a directory path or None, got {value!r}.")


_VALIDATE: dict[str, Any] = {
    "data": _data, "poolings": _poolings, "layers": lambda v, n: parse_layers(v, n), "metrics": _metrics,
    "max_texts": lambda v, n: check_int(v, n, minimum=2, optional=True, fix="Omit it (--max-texts) to use every "
                                        "item."),
    "seed": lambda v, n: check_seed(v, n), "protocol": _choice(_protocols), "probes": check_bool,
    "groups": lambda v, n: check_groups(v, n), "confidence": lambda v, n: check_confidence(v, n),
    "device": _device, "dtype": _choice(_dtypes),
    "batch_size": lambda v, n: check_int(v, n, minimum=1, optional=True, fix="Omit it for the default (32 on CPU, "
                                         "128 on GPU)."),
    "max_length": lambda v, n: check_int(v, n, minimum=2, optional=True, fix="Omit it to use the model's limit."),
    "special_tokens": _choice(("include", "exclude")), "cache": _cache, "glue_dir": _path_or_none,
    "postprocess": _postprocess,
    "save_embeddings": check_bool, "probe_c": _probe_c,
    "spill": lambda v, n: check_int(v, n, minimum=1, optional=True, fix="Pass e.g. --spill 50000 (texts per chunk), "
                                    "or omit it to analyse in memory."),
    "prompt": lambda v, n: _prompt(v, n),
}


def resolve_options(options: AnalysisOptions | None, data: Any, kwargs: dict[str, Any]) -> AnalysisOptions:
    """``options`` (or the defaults) with ``data`` and the keyword options applied, validated: how every entry point
    that takes ``options=`` and keywords (:func:`embedgeom.analyze`, :func:`embedgeom.analyze_checkpoints`,
    :func:`embedgeom.analyze_embeddings`) builds its options."""
    if options is not None and not isinstance(options, AnalysisOptions):
        raise ValueError(f"options: expected an AnalysisOptions, got {type(options).__name__}. Build one with "
                         "AnalysisOptions.create(...), or pass the options as keywords.")
    changes = {**kwargs, **({"data": data} if data is not None else {})}
    return options.replace(**changes) if options is not None else AnalysisOptions.create(**changes)
