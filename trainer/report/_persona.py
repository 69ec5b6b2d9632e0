"""The persona report: one self-contained page to read, print to PDF or forward.

The page has a header with the key facts, an overview (persona sizes, a map
of the personas, the quality scores in plain words, the privacy parameters),
for a refit or when the previous version is given what changed, and one card
per persona (share, description, traits as sentences and a feature profile
against the population). Everything comes from the signed manifest; nothing
about an individual user is in it.
"""

from __future__ import annotations

import math

import numpy as np

from edgepersona.sdk import InputError, Manifest, PersonaCard, __version__ as sdk_version
from edgepersona.trainer.report._analysis import F64, axis_phrase, centroid_map, feature_z_scores
from edgepersona.trainer.report._changes import changes_section, history_section
from edgepersona.trainer.report._charts import Bar, Bubble, bar_chart, bubble_map, diverging_bars
from edgepersona.trainer.report._html import (
    PALETTE,
    SIGMA,
    colour_slot,
    data_table,
    esc,
    facts,
    figure,
    render_page,
    section,
)
from edgepersona.trainer.report._quality import privacy_panel, quality_panel

__all__ = ["render_persona_report"]

MAX_PROFILE_FEATURES = 12  # a card's chart shows at most this many features (the strongest)


def render_persona_report(manifest: Manifest, *, previous: Manifest | None,
                          drift_markdown: str | None) -> str:
    """Render a verified manifest as a self-contained HTML report.

    The page loads nothing from the network (inline CSS, inline SVG, no
    scripts) and forbids loading anything through its Content-Security-Policy.

    Args:
        manifest: the verified manifest to report on.
        previous: the previous version's verified manifest, to show what changed.
        drift_markdown: the drift gate's report that sits beside a refit bundle.

    Returns:
        The HTML document.

    Raises:
        InputError: ``previous`` is another model or not an older version.
    """
    _check_previous(manifest, previous)
    z = feature_z_scores(manifest)
    labels = [f.display_label() for f in manifest.spec.features]
    changed = previous is not None or bool(manifest.id_map) or drift_markdown is not None
    cards = "".join(_card(manifest, card, z[card.index], labels, _axis_limit(z))
                    for card in manifest.personas)
    main = [changes_section(manifest, previous, drift_markdown)] if changed else []
    history = history_section(manifest)
    main += [history] if history else []
    main += [_overview(manifest, z, labels), section("personas", "Personas", cards)]
    nav = ([("changes", "What changed")] if changed else []) + [("history", "History")] * bool(history)
    nav += [("overview", "Overview")]
    nav += [(f"persona-{c.id}", f"{c.id} · {c.name}") for c in manifest.personas]
    return render_page(title=f"{manifest.model_id} v{manifest.version} personas",
                       header_html=_header(manifest), nav=nav, main_html="\n".join(main),
                       footer_html=_footer(manifest))


def _check_previous(manifest: Manifest, previous: Manifest | None) -> None:
    """Refuse a 'previous' bundle that is not an older version of the same model."""
    if previous is None:
        return
    if previous.model_id != manifest.model_id:
        raise InputError(f"the previous bundle is model {previous.model_id!r} but this one is"
                         f" {manifest.model_id!r}; give an older version of the same model")
    if previous.version >= manifest.version:
        raise InputError(f"the previous bundle is v{previous.version}, not older than"
                         f" v{manifest.version}; swap the two bundles?")


def _axis_limit(z: F64) -> float:
    """One z-axis range for every card (so cards compare at a glance), 1 to 4 std."""
    largest = float(np.abs(z[np.isfinite(z)]).max(initial=0.0))
    return min(4.0, max(1.0, math.ceil(largest * 2) / 2))


def _colour(card: PersonaCard) -> str:
    """The persona's colour (the same in every chart, on its card and across refits)."""
    return PALETTE[colour_slot(card.id, card.index)]


def _header(manifest: Manifest) -> str:
    """The title, one sentence of context and the key facts."""
    m, privacy = manifest.metrics, manifest.privacy
    lead = (f"{m.k} groups of users with similar behaviour, found from {m.n_users:,} users"
            f" ({manifest.lineage.get('source') or 'unnamed source'}).")
    dp = (f"ε = {privacy.epsilon:g}" + (f", δ = {privacy.delta:g}" if privacy.delta else "")
          if privacy.epsilon is not None else "no DP noise")
    items = [("Personas", str(m.k)), ("Users", f"{m.n_users:,}"), ("Version", f"v{manifest.version}"),
             ("Built", f"{manifest.created_at:%Y-%m-%d}"),
             ("Valid until", f"{manifest.expires_at:%Y-%m-%d}"), ("Differential privacy", dp),
             ("Smallest group allowed", f"{privacy.k_min} users")]
    return (f"<h1>{esc(manifest.model_id)} v{manifest.version}: {m.k} personas</h1>"
            f'<p class="lead">{esc(lead)}</p>{facts(items)}')


def _footer(manifest: Manifest) -> str:
    """Where the numbers come from."""
    return (f"<p>Generated by edgepersona {esc(sdk_version)} from the signed manifest of"
            f" {esc(manifest.model_id)} v{manifest.version}, verified before reading. Personas"
            " describe groups, never individuals: no per-user data is in this report.</p>")


def _noise_caveat(manifest: Manifest) -> str:
    """The caveat line for differentially private (noisy) counts, if any."""
    epsilon = manifest.privacy.epsilon
    if epsilon is None:
        return ""
    text = (f"Shares come from noisy counts (differential privacy, ε = {epsilon:g}): small"
            " differences between personas or versions may be noise, not behaviour.")
    return f'<p class="caveat">{esc(text)}</p>'


def _overview(manifest: Manifest, z: F64, labels: list[str]) -> str:
    """Sizes, the map, quality and privacy."""
    sizes = section("overview-sizes", "How big is each persona", _sizes(manifest), level=3,
                    css_class="panel")
    mapped = section("overview-map", "How the personas relate", _map(manifest, z, labels),
                     level=3, css_class="panel")
    quality = section("overview-quality", "How good is the split", quality_panel(manifest.metrics),
                      level=3, css_class="panel")
    privacy = section("overview-privacy", "Privacy", privacy_panel(manifest.privacy), level=3,
                      css_class="panel")
    return section("overview", "Overview", f'<div class="grid">{sizes}{quality}</div>'
                   f'<div class="wide">{mapped}</div><div class="wide">{privacy}</div>')


def _sizes(manifest: Manifest) -> str:
    """A bar per persona: its share of users."""
    n = manifest.metrics.n_users
    bars = [Bar(f"{c.id} · {c.name}", c.share, f"{c.share:.1%}", _colour(c))
            for c in manifest.personas]
    svg = bar_chart("sizes", bars, title="Share of users in each persona",
                    desc="; ".join(f"{b.label}: {b.text}" for b in bars))
    table = data_table(["persona", "share of users", "about how many users"],
                       [(b.label, b.text, f"{round(c.share * n):,}")
                        for b, c in zip(bars, manifest.personas, strict=True)], numeric=(1, 2))
    return figure(svg, f"Share of the {n:,} users in each persona.", table) + _noise_caveat(manifest)


def _map(manifest: Manifest, z: F64, labels: list[str]) -> str:
    """The personas on their two main axes of difference, sized by share."""
    shares = np.array([c.share for c in manifest.personas])
    mapped = centroid_map(z, shares)
    bubbles = [Bubble(float(x), float(y), c.share, f"{c.id} · {c.name}", _colour(c))
               for (x, y), c in zip(mapped.coords, manifest.personas, strict=True)]
    axes = []
    for axis, name in ((0, "right"), (1, "up")):
        phrase = axis_phrase(mapped.loadings[axis], labels)
        share = mapped.explained[axis]
        axes.append(f"Axis {axis + 1} ({share:.0%} of the differences)"
                    + (f": {name} = {phrase}" if phrase else ""))
    svg = bubble_map("persona-map", bubbles, x_label=axes[0], y_label=axes[1],
                     title="Map of the personas",
                     desc=(f"{len(bubbles)} personas placed by how they differ. "
                           + "; ".join(f"{b.label} at ({b.x:+.1f}, {b.y:+.1f})" for b in bubbles)))
    caption = ("Each bubble is a persona, its area its share of users. Personas close together"
               " behave alike; the cross marks the average user. The axes are the two directions"
               " in which the personas differ most (principal components of the standardised"
               f" centroids), showing {sum(mapped.explained):.0%} of their differences.")
    table = data_table(["persona", "axis 1", "axis 2", "share"],
                       [(b.label, f"{b.x:+.2f}", f"{b.y:+.2f}", f"{b.size:.1%}") for b in bubbles],
                       numeric=(1, 2, 3))
    return figure(svg, caption, table)


def _card(manifest: Manifest, card: PersonaCard, z: F64, labels: list[str], limit: float) -> str:
    """One persona: share, description, traits and the feature profile."""
    n = manifest.metrics.n_users
    share = (f'<p class="share"><strong>{card.share:.1%}</strong> of users'
             f" · about {round(card.share * n):,} of {n:,}</p>")
    traits = ("".join(f"<li>{esc(t.sentence)}</li>" for t in card.traits)
              if card.traits else "<li>No feature stands out: close to the average user.</li>")
    text = (f"{share}{_noise_caveat(manifest)}<p>{esc(card.description)}</p>"
            f'<h4>What stands out</h4><ul class="traits">{traits}</ul>')
    body = f'<div class="persona-body"><div>{text}</div><div>{_profile(card, z, labels, limit)}</div></div>'
    return (f'<article class="persona c{colour_slot(card.id, card.index)}" id="persona-{esc(card.id)}"'
            f' aria-labelledby="persona-{esc(card.id)}-h"><h3 id="persona-{esc(card.id)}-h">'
            f'<span class="pid">{esc(card.id)}</span>{esc(card.name)}</h3>{body}</article>')


def _profile(card: PersonaCard, z: F64, labels: list[str], limit: float) -> str:
    """The persona's z-score per feature as diverging bars, with its table."""
    shown = sorted(np.argsort(-np.abs(z), kind="stable")[:MAX_PROFILE_FEATURES].tolist())
    names, values = [labels[j] for j in shown], [float(z[j]) for j in shown]
    svg = diverging_bars(f"profile-{card.id}", names, values, limit=limit,
                         title=f"{card.id} {card.name}: profile against the population",
                         desc="; ".join(f"{n} {v:+.1f} standard deviations"
                                        for n, v in zip(names, values, strict=True)))
    more = (f" The {len(shown)} features where it differs most are shown."
            if len(shown) < len(labels) else "")
    caption = ("How far this persona sits from the average user on each feature, in standard"
               f" deviations ({SIGMA}): right and solid is above average, left and hatched below."
               " Every card uses the same scale." + more)
    table = data_table(["feature", f"z-score ({SIGMA})", "compared with the average user"],
                       [(n, f"{v:+.2f}", "above" if v > 0 else "below" if v < 0 else "same")
                        for n, v in zip(names, values, strict=True)], numeric=(1,))
    return "<h4>Profile against the population</h4>" + figure(svg, caption, table)
