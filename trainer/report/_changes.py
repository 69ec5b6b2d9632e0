"""The persona report's "what changed" and "history" sections: ids kept, moves, shares, the gate.

The history comes from the signed manifest itself: every refit appends its
round (version, contributions, each persona's share and move) to
``lineage.history``, so one bundle shows where each persona has been.
"""

from __future__ import annotations

from edgepersona.sdk import Manifest
from edgepersona.trainer.release.refit_drift import recorded_history
from edgepersona.trainer.report._analysis import (
    DriftSummary,
    PersonaChange,
    VersionChanges,
    compare_versions,
    parse_drift_markdown,
)
from edgepersona.trainer.report._charts import Bar, Change, bar_chart, dumbbell_chart
from edgepersona.trainer.report._html import PALETTE, callout, colour_slot, data_table, esc, figure, section

__all__ = ["changes_section", "history_section"]

MOVE_EXPLAINED = ("A move of 100% means the persona's centre moved as far as two typical"
                  " personas of the previous version are apart.")


def changes_section(manifest: Manifest, previous: Manifest | None,
                    drift_markdown: str | None) -> str:
    """The section comparing this version with the previous one.

    Args:
        manifest: this version.
        previous: the previous version, when known.
        drift_markdown: the drift gate's report, when found beside the bundle.

    Returns:
        The section markup.
    """
    before = previous.version if previous else _previous_version(manifest)
    drift = parse_drift_markdown(drift_markdown) if drift_markdown else None
    parts = [_drift_verdict(drift)] if drift else []
    if previous is not None:
        changes = compare_versions(previous, manifest)
        parts += [_lineage_note(changes), _charts(manifest, changes, drift), _gone(changes, manifest)]
    elif manifest.id_map:
        parts.append(_ids_only(manifest))
    if drift is not None and drift.rows:
        table = data_table(drift.headers, drift.rows, caption="The drift gate's table")
        parts.append(f"<details><summary>Show the drift gate's table</summary>{table}</details>")
    return section("changes", f"What changed since v{before}", "".join(parts))


def _previous_version(manifest: Manifest) -> str:
    """The previous version number, as the refit recorded it in the lineage."""
    recorded = manifest.lineage.get("previous_version")
    return str(recorded) if recorded is not None else str(manifest.version - 1)


def _drift_verdict(drift: DriftSummary) -> str:
    """The gate's verdict in words, with where it came from."""
    threshold = f" (threshold {drift.threshold:.0%})" if drift.threshold is not None else ""
    source = (" Read from the drift report beside the bundle; that file is not covered by the"
              " bundle's signature.")
    if drift.needs_review:
        return callout("warning", f"{drift.verdict}{threshold}. The collector does not serve this"
                       " version until a person approves it (edgepersona approve)." + source,
                       label="Drift gate")
    verdict = drift.verdict or "no verdict found"
    return callout("ok", f"{verdict}{threshold}." + source, label="Drift gate")


def _lineage_note(changes: VersionChanges) -> str:
    """How this version's personas relate to the previous version's."""
    kept = sum(r.previous_id == r.persona_id for r in changes.rows)
    if changes.carried_ids:
        text = (f"v{changes.after} is a refit of v{changes.before}: {kept} of"
                f" {len(changes.rows) + len(changes.gone)} persona ids carried over, so a persona"
                " keeps its id and its users keep their persona.")
        return f"<p>{esc(text)}</p>"
    if not changes.comparable:
        return callout("warning", f"v{changes.after} uses other features than v{changes.before}:"
                       " its personas cannot be compared with the previous ones.")
    return callout("note", f"v{changes.after} was fitted afresh, not refitted from v{changes.before}:"
                   f" persona ids are not carried over, so the same id may name a different group."
                   f" Each persona below is compared with the closest v{changes.before} persona.",
                   label="New fit")


def _charts(manifest: Manifest, changes: VersionChanges, drift: DriftSummary | None) -> str:
    """Share changes as a dumbbell chart, centroid moves as bars, and the table behind both."""
    if not changes.comparable:
        return ""
    previous = {r.previous_id for r in changes.rows}
    rows = [Change(_label(r), r.share_before, r.share_after) for r in changes.rows]
    rows += [Change(f"{pid} · {name}", share, None) for pid, name, share in changes.gone
             if pid not in previous]
    shares = dumbbell_chart("share-changes", rows, title="Share of users, before and after",
                            desc="; ".join(f"{r.label}: {_share(r.before)} before,"
                                           f" {_share(r.after)} now" for r in rows))
    threshold = drift.threshold if drift else None
    colours = {c.id: PALETTE[colour_slot(c.id, c.index)] for c in manifest.personas}
    bars = [Bar(_label(r), r.move or 0.0, f"{r.move or 0.0:.0%}", colours[r.persona_id],
                hatched=threshold is not None and (r.move or 0.0) > threshold)
            for r in changes.rows]
    moves = bar_chart("centroid-moves", bars, title="How far each persona moved",
                      desc="; ".join(f"{b.label}: {b.text}" for b in bars), marker=threshold,
                      marker_label=f"gate {threshold:.0%}" if threshold is not None else "")
    over = " Hatched bars are over the drift gate's threshold." if threshold is not None else ""
    return ('<div class="grid"><div>'
            + figure(shares, "Each persona's share of users in the previous version (hollow dot)"
                     " and in this one (filled dot).", _table(changes))
            + "</div><div>"
            + figure(moves, f"Centroid move since v{changes.before}. {MOVE_EXPLAINED}{over}")
            + "</div></div>")


def _label(row: PersonaChange) -> str:
    """``P2 · Name``, plus ``(vs P1)`` when compared with a persona of another id."""
    other = f" (vs {row.previous_id})" if row.previous_id not in (None, row.persona_id) else ""
    return f"{row.persona_id} · {row.name}{other}"


def _share(value: float | None) -> str:
    """A share, or ``absent``."""
    return "absent" if value is None else f"{value:.1%}"


def _table(changes: VersionChanges) -> str:
    """Every number of the change charts as a table."""
    match = "continues" if changes.carried_ids else f"closest v{changes.before} persona"
    rows = [(f"{r.persona_id} · {r.name}", r.previous_id or "-", _share(r.share_before),
             _share(r.share_after),
             f"{r.share_after - r.share_before:+.1%}" if r.share_before is not None else "-",
             f"{r.move:.1%}" if r.move is not None else "-") for r in changes.rows]
    rows += [(f"{pid} · {name}", pid, _share(share), "absent", "-", "-")
             for pid, name, share in changes.gone]
    return data_table(["persona", match, "share before", "share now", "change", "centroid move"],
                      rows, numeric=(2, 3, 4, 5))


def _gone(changes: VersionChanges, manifest: Manifest) -> str:
    """The previous personas that nobody continues, and why when the manifest says."""
    if not changes.gone or not (changes.carried_ids or changes.comparable):
        return ""
    if changes.carried_ids:
        lead = f"Vanished since v{changes.before}"
    else:
        lead = f"No v{changes.after} persona is closest to these v{changes.before} personas"
    reasons = ({note.split(":", 1)[0]: note for note in manifest.privacy.suppressed}
               if changes.carried_ids else {})
    items = "".join(f"<li><strong>{esc(pid)} · {esc(name)}</strong> ({share:.1%} of users before)"
                    + (f": {esc(reasons[pid].split(':', 1)[-1].strip())}" if pid in reasons else "")
                    + "</li>" for pid, name, share in changes.gone)
    return f"<h3>{esc(lead)}</h3><ul>{items}</ul>"


def _ids_only(manifest: Manifest) -> str:
    """Without the previous bundle: which ids the refit carried over."""
    pairs = sorted(manifest.id_map.items())
    kept = [old for old, new in pairs if old == new]
    renamed = [f"{old} → {new}" for old, new in pairs if old != new]
    text = f"Persona ids carried over from v{_previous_version(manifest)}: {', '.join(kept) or 'none'}."
    if renamed:
        text += f" Renamed: {', '.join(renamed)}."
    vanished = "".join(f"<li>{esc(note)}</li>" for note in manifest.privacy.suppressed)
    hint = ("Give the previous bundle too (--previous) to see share changes and how far each"
            " persona moved.")
    return (f"<p>{esc(text)}</p>" + (f"<h3>Not released in this version</h3><ul>{vanished}</ul>"
                                     if vanished else "")
            + f'<p class="muted">{esc(hint)}</p>')


def history_section(manifest: Manifest) -> str:
    """Each persona's share and centroid move across the refits recorded in the manifest.

    Args:
        manifest: the verified manifest.

    Returns:
        The section markup, or an empty string for a version without refit history.
    """
    entries = recorded_history(manifest)
    if not entries:
        return ""
    ids = [card.id for card in manifest.personas]
    names = {card.id: card.name for card in manifest.personas}
    headers = ["version", "contributions", "largest move", *[f"{pid} · {names[pid]}" for pid in ids]]
    rows = []
    for entry in entries:
        shares, moves = entry.get("shares", {}), entry.get("moves", {})
        cells = [_history_cell(shares, moves, pid) for pid in ids]  # type: ignore[arg-type]
        rows.append((f"v{entry.get('v', '?')}", f"{int(entry.get('n', 0)):,}",  # type: ignore[call-overload]
                     f"{float(entry.get('move', 0.0)):.1%}", *cells))  # type: ignore[arg-type]
    moves = [float(e.get("move", 0.0)) for e in entries]  # type: ignore[arg-type]
    trend = " → ".join(f"{m:.1%}" for m in moves)
    text = (f"{len(entries)} refit round(s) since the first trained version. Largest centroid move"
            f" per round: {trend}. Each cell is the persona's share after that round and, in"
            " brackets, how far its centre moved (100% = the median distance between personas).")
    lead = f"<p>{esc(text)}</p>"
    table = data_table(headers, rows, caption="Persona history across versions",
                       numeric=tuple(range(1, len(headers))))
    return section("history", "History across versions", lead + table)


def _history_cell(shares: dict[str, float], moves: dict[str, float], pid: str) -> str:
    """``31.2% (4.1%)``, or ``absent`` when the persona was not released in that round."""
    if pid not in shares:
        return "absent"
    return f"{float(shares[pid]):.1%} ({float(moves.get(pid, 0.0)):.1%})"
