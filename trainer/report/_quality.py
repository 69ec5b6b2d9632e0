"""Quality scores and privacy parameters, each said in one plain sentence."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from edgepersona.sdk.protocol.manifest import Metrics, Privacy
from edgepersona.trainer.report._html import MINUS, callout, esc

__all__ = ["privacy_panel", "quality_panel"]


@dataclass(frozen=True)
class _Score:
    """How to name, explain and judge one quality score."""

    name: str
    explained: str
    verdict: Callable[[float], str]


def _silhouette(value: float) -> str:
    """Usual reading of a silhouette score."""
    return "clear split" if value >= 0.5 else "reasonable split" if value >= 0.25 else "personas overlap"


def _davies_bouldin(value: float) -> str:
    """Usual reading of a Davies-Bouldin index (lower is better)."""
    return "well apart" if value < 1.0 else "some overlap" if value < 2.0 else "personas overlap"


def _stability(value: float) -> str:
    """Usual reading of a stability ARI."""
    return "stable" if value >= 0.8 else "fairly stable" if value >= 0.5 else "unstable"


_SCORES = {
    "silhouette": _Score("Silhouette", "how clearly users belong to their own persona rather than"
                         f" the next closest one, from {MINUS}1 to 1; above 0.5 is a clear split, below"
                         " 0.25 the personas overlap.", _silhouette),
    "davies_bouldin": _Score("Davies\u2013Bouldin", "how spread out personas are compared with the"
                             " distance between them; 0 is best, below 1 the personas are well"
                             " apart.", _davies_bouldin),
    "stability_ari": _Score("Stability (ARI)", "how closely the same personas come back when the"
                            " fit is repeated on resampled users; 1 is identical, above 0.8 is"
                            " stable.", _stability),
}


def quality_panel(metrics: Metrics) -> str:
    """The three quality scores with a verdict in words and what each means.

    Args:
        metrics: the manifest's training metrics.

    Returns:
        The markup.
    """
    values = {"silhouette": metrics.silhouette, "davies_bouldin": metrics.davies_bouldin,
              "stability_ari": metrics.stability_ari}
    items = []
    for key, value in values.items():
        score = _SCORES[key]
        shown = (f'<span class="value">{value:.2f}</span> ({esc(score.verdict(value))})'
                 if value is not None else '<span class="value">not computed</span>')
        items.append(f"<li><strong>{esc(score.name)}</strong>: {shown}<br>"
                     f'<span class="muted">{esc(score.explained[:1].upper() + score.explained[1:])}'
                     "</span></li>")
    note = ""
    if all(v is None for v in values.values()):
        note = callout("note", "This version was refitted from the collector's per-persona"
                       " aggregates, which keep no per-user rows, so these scores cannot be"
                       " computed. See what changed since the previous version instead.",
                       label="Not computed")
    chosen = f'<p class="muted">Number of personas: {esc(metrics.k_selection)}.</p>'
    bad = sum(metrics.bad_rows.values())
    skipped = (f'<p class="muted">{bad:,} bad input rows were skipped'
               f" ({esc(', '.join(f'{k}: {v:,}' for k, v in sorted(metrics.bad_rows.items())))}).</p>"
               if bad else "")
    return f'{note}<ul class="metrics">{"".join(items)}</ul>{chosen}{skipped}'


def privacy_panel(privacy: Privacy) -> str:
    """The release's privacy parameters as sentences.

    Args:
        privacy: the manifest's privacy parameters.

    Returns:
        The markup.
    """
    if privacy.epsilon is not None:
        dp = (f"Differential privacy: ε = {privacy.epsilon:g}"
              + (f", δ = {privacy.delta:g}" if privacy.delta is not None else "")
              + (f" ({privacy.mechanism})" if privacy.mechanism else "")
              + ". Counts and averages carry calibrated noise, so no single user can be told apart.")
    else:
        dp = ("No differential privacy noise was added: shares and averages are exact for the"
              " users the model was fitted on.")
    bounds = {"declared": "Feature bounds were declared by a person, not read from the data.",
              "coarse": "Feature bounds are round numbers chosen near noisy quantiles of the data"
                        " (a coarse grid), so they reveal no individual's value.",
              "data": "Feature bounds were derived from the data itself, which leaks a little"
                      " about extreme users; declare them for a private release.",
              "mixed": "Some feature bounds were derived from the data itself; declare them all"
                       " for a private release."}[privacy.bounds_source]
    lines = [dp, f"Every persona holds at least {privacy.k_min} users (k-min).", bounds]
    lines += [f"Withheld or merged: {s}" for s in privacy.suppressed]
    lines += list(privacy.notes)
    return '<ul class="metrics">' + "".join(f"<li>{esc(line)}</li>" for line in lines) + "</ul>"
