"""Figures from Python: ``eg.plot.<name>(results, task, pooling=..., layer=...)`` returns a matplotlib Figure.

``results``: one :class:`~embedgeom.results.AnalysisResult` or a list of them (one colour per model).
``pooling``: a pooling name, a list of them, or ``None`` for every pooling the results hold (a panel each, or
series told apart by line style / marker). ``layer``: ``None`` for the last layer each result measured, ``-1``
for each model's last layer (other negative indices count from it), ``k >= 0`` for hidden layer ``k``
(0 = embedding output). A task, pooling, layer or metric the results do not hold raises one ``ValueError``
listing what is present; a figure with no data to draw raises :class:`NothingToDraw` (a ``ValueError``) saying
why. Pass ``ax=`` to draw into an existing Axes. Every point estimate carries its interval, labelled with the
confidence level the analysis or comparison recorded (``options['confidence']``, e.g. "90% CI"); probe scores
carry ±1.96 standard errors.

Titles are one line; legends sit outside the axes and name, for every model, the layer drawn (of how many) and
the number of texts n, e.g. ``tiny: layer 2 of 2, n = 42``. Models of different depth are matched by each
model's own last layer (``layer=-1`` / ``None``: "last layer (2 of 2; 6 of 6)") or by an index the label states
("layer 2 by index (2 of 2; 2 of 6)"). Drawing results of different n or embedding dimension d together warns
with :class:`IncomparableResultsWarning`, saying which numbers are and are not comparable.

Example::

    import embedgeom as eg
    res = eg.analyze("ckpt/", data=["sample:lee"], poolings="all")
    fig = eg.plot.alignment_uniformity([res], "lee", pooling="max", layer=-1)
    fig.savefig("au.png")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from . import figures as _F
from .figures import IncomparableResultsWarning, NothingToDraw
from .results import AnalysisResult, ComparisonResult

__all__ = ["IncomparableResultsWarning", "NothingToDraw", "alignment_uniformity", "cosine_histogram", "differences",
           "eigenspectrum", "layer_profile", "metric_by_pooling", "probes", "trajectory"]

Results = AnalysisResult | Sequence[AnalysisResult]
Poolings = str | Sequence[str] | None


def alignment_uniformity(results: Results, task: str, *, pooling: Poolings = None, layer: int | None = None,
                         ax: Any = None, trajectory: Sequence[AnalysisResult] | Mapping[str, Sequence[AnalysisResult]]
                         | None = None) -> Any:
    """Alignment vs uniformity, one point per model and pooling with intervals on both axes (lower-left is
    better); uniformity per model when the task has no positive pairs. ``trajectory``: checkpoints of a run
    (or ``{run: results}``) drawn as arrows.

    Example::

        fig = eg.plot.alignment_uniformity([mlm, hybrid], "lee", pooling="max", layer=-1)
    """
    return _F.alignment_uniformity_figure(results, task, pooling=pooling, layer=layer, ax=ax, trajectory=trajectory)


def eigenspectrum(results: Results, task: str, *, pooling: Poolings = None, layer: int | None = None, ax: Any = None,
                  fit: bool = True) -> Any:
    """Normalised covariance eigenspectra (λ_k / Σλ) on log-log axes, one line per model, with the alpha-ReQ
    power-law fit dashed; a panel per pooling.

    Example::

        fig = eg.plot.eigenspectrum(res, "wiki", pooling=["mean", "max"])
    """
    return _F.eigenspectrum_figure(results, task, pooling, layer, ax=ax, fit=fit)


def metric_by_pooling(results: Results, task: str, metric: str = "effective_rank", *, pooling: Poolings = None,
                      layer: int | None = None, ax: Any = None) -> Any:
    """One metric per pooling, a bar per model with its interval.

    Example::

        fig = eg.plot.metric_by_pooling([a, b], "wiki", "uniformity", layer=-1)
    """
    return _F.metric_by_pooling_figure(results, task, metric, pooling=pooling, layer=layer, ax=ax)


def layer_profile(results: Results, task: str, metric: str | Sequence[str] | None = None, *,
                  pooling: Poolings = None, ax: Any = None, layer_match: str = "index") -> Any:
    """Metrics against layer, one line per model with its interval band; ``metric=None``: effective rank,
    uniformity, alignment, RankMe, IsoScore and mean cosine (those measured), a panel each, a row per pooling.
    ``layer_match="index"``: x = layer index (0 = embedding output); ``"depth"``: x = layer / the model's last
    layer, so models of different depth meet at their last layers (the x label says which). Needs an analysis
    with ``layers="all"`` (or several).

    Example::

        res = eg.analyze("ckpt/", "sample:wiki", poolings="max", layers="all")
        fig = eg.plot.layer_profile(res, "wiki", pooling="max")
        fig = eg.plot.layer_profile([tiny, minilm], "wiki", "effective_rank", layer_match="depth")
    """
    return _F.layer_profile_figure(results, task, metric, pooling=pooling, ax=ax, layer_match=layer_match)


def cosine_histogram(results: Results, task: str, *, pooling: Poolings = None, layer: int | None = None,
                     ax: Any = None) -> Any:
    """Density of pairwise cosine similarities, a step line per model, a panel per pooling, drawn on the range
    the counts occupy (one bin of margin; the x label states it and the stored bins).

    Example::

        fig = eg.plot.cosine_histogram(res, "wiki", pooling="cls", layer=-1)
    """
    return _F.cosine_histogram_figure(results, task, pooling, layer=layer, ax=ax)


def probes(results: Results, task: str | Sequence[str] | None = None, *, pooling: Poolings = None,
           layer: int | None = None, ax: Any = None) -> Any:
    """Each task's headline probe score (accuracy for classification, Spearman for similarity, ...) per
    pooling, a bar per model with ±1.96 s.e. and a dashed chance line where the probe row records ``chance``;
    ``task=None``: every task with probes.

    Example::

        fig = eg.plot.probes([a, b], "polarity", pooling="max")
    """
    return _F.probe_figure(results, task=task, pooling=pooling, layer=layer, ax=ax)


def differences(comparison: ComparisonResult, task: str, *, pooling: Poolings = None, layer: int | None = None,
                metric: str | Sequence[str] | None = None, ax: Any = None) -> Any:
    """Paired differences of a comparison, diff = b − a (second minus first), in each metric's own units with
    its interval: a panel per metric and probe (``metric``: one or several; ``None``: all), its title naming the
    better direction, a row per pooling (per pooling pair for a comparison of two poolings); filled where
    significant, coloured by the side it favours. ``layer=None``: the deepest compared; ``ax=`` draws one metric.

    Example::

        cmp = eg.compare(mlm, hybrid)
        fig = eg.plot.differences(cmp, "lee", pooling="max")
        fig = eg.plot.differences(cmp, "lee", metric="uniformity")
    """
    return _F.difference_figure(comparison, task, pooling=pooling, layer=layer, metric=metric, ax=ax)


def trajectory(results: Results | Mapping[str, Sequence[AnalysisResult]], task: str, *, pooling: Poolings = None,
               layer: int | None = None, metric: str | Sequence[str] | None = None, ax: Any = None) -> Any:
    """Metrics against training step for the checkpoints of trainer runs (``checkpoint['trajectory']``: run,
    step, tokens, objective), runs overlaid, interval bands; a panel per metric (uniformity, alignment,
    effective rank, RankMe, IsoScore by default), a row per pooling; tokens seen on a top axis when known.

    Example::

        ckpts = [eg.AnalysisResult.load(d) for d in ("res/mlm-100", "res/mlm-200", "res/hyb-100", "res/hyb-200")]
        fig = eg.plot.trajectory(ckpts, "lee", pooling="mean")
    """
    return _F.trajectory_figure(results, task, pooling=pooling, layer=layer, metric=metric, ax=ax)
