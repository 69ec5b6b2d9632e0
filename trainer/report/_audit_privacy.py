"""The audit page's privacy sections: the budget ledger, k-min, and fairness across groups.

The budget charts add each release's ε per source (basic composition, an
upper bound: the ledger composes Gaussian releases exactly, so its own total
is lower and drawn beside the last bar). Every chart shares one value axis
and has its numbers in a visible table next to it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from edgepersona.trainer.report._charts import Bar, Release, bar_chart, budget_chart
from edgepersona.trainer.report._html import callout, data_table, esc, figure, section

__all__ = ["budget_section", "fairness_section", "kmin_section"]

REMAINING_DELTA = 1e-6  # the δ at which the audit states the remaining ε (audit._ledger)
TIMES = "\u00d7"  # the multiplication sign, for ratios


def budget_section(privacy: Mapping[str, Any]) -> str:
    """The release's privacy parameters and the budget ledger, with a chart per source.

    Args:
        privacy: the audit's ``privacy`` section.

    Returns:
        The section's markup.
    """
    if privacy["differentially_private"]:
        dp = (f"Differentially private: ε = {privacy['epsilon']:g}"
              + (f", δ = {privacy['delta']:g}" if privacy["delta"] is not None else "")
              + (f", mechanism {privacy['mechanism']}" if privacy["mechanism"] else "") + ".")
    else:
        dp = "Not differentially private: no noise was added to this release's counts and means."
    notes = "".join(f"<li>{esc(n)}</li>" for n in privacy["notes"])
    body = (f"<p>{esc(dp)}</p><p><strong>Composition:</strong> {esc(privacy['composition'])}.</p>"
            + (f'<h3>Notes recorded with the release</h3><ul class="traits">{notes}</ul>'
               if notes else "")
            + "<h3>Budget ledger</h3>" + _ledger(privacy.get("ledger")))
    return section("budget", "Privacy budget", body)


def _ledger(ledger: Mapping[str, Any] | None) -> str:
    """What the ledger says per source, or why there is nothing to say."""
    if ledger is None:
        return callout("note", "No budget ledger was given (--ledger LEDGER.jsonl): the privacy"
                               " spent across releases is neither shown nor checked.",
                       label="No ledger")
    if "error" in ledger:
        return callout("warning", f"the ledger does not verify, so no budget can be trusted:"
                                  f" {ledger['error']}", label="FAIL")
    sources: Mapping[str, Any] = ledger.get("sources", {})
    intro = (f"{ledger['entries']} entries, hash chain and signatures verified with key(s)"
             f" {', '.join(ledger['verified_with'])}.")
    rows = [(name, _amount(s["budget_epsilon"]), _amount(s["budget_delta"]),
             f"{s['spent_epsilon']:.4g}", str(s["releases"]), f"{s['remaining_epsilon']:.4g}",
             "within budget" if _within(s) else "OVER BUDGET") for name, s in sources.items()]
    table = data_table(["source", "budget ε", "budget δ", "spent ε (exact)", "releases",
                        f"ε left for one Gaussian release at δ = {REMAINING_DELTA:g}", "status"],
                       rows, numeric=(1, 2, 3, 4, 5), caption="Budget per data source")
    releases = [r for r in ledger.get("releases", []) if r.get("source") in sources]
    return (f"<p>{esc(intro)}</p>" + table + "<h3>Privacy spent per release</h3>"
            + _budget_figures(releases, sources) + _release_table(releases))


def _amount(value: float) -> str:
    """A budget figure; an infinite one means no budget was set."""
    number = float(value)
    return f"{number:g}" if math.isfinite(number) else "none set"


def _within(status: Mapping[str, Any]) -> bool:
    """Spent within budget (with the ledger's float slack)."""
    return bool(status["spent_epsilon"] <= status["budget_epsilon"] * (1 + 1e-9))


def _running(releases: Sequence[Mapping[str, Any]]) -> dict[str, list[Release]]:
    """Each source's releases in ledger order with their running ε sum."""
    out: dict[str, list[Release]] = {}
    for r in sorted(releases, key=lambda r: int(r.get("seq", 0))):
        steps = out.setdefault(str(r["source"]), [])
        label = str(r.get("time", ""))[:10] or f"#{r.get('seq', len(steps))}"
        total = (steps[-1].total if steps else 0.0) + float(r["epsilon"])
        steps.append(Release(label, float(r["epsilon"]), total))
    return out


def _budget_figures(releases: Sequence[Mapping[str, Any]], sources: Mapping[str, Any]) -> str:
    """One chart per source, all on the same ε axis."""
    if not releases:
        return "<p>The ledger records no release yet.</p>"
    running = _running(releases)
    tops = [s.total for steps in running.values() for s in steps]
    tops += [float(s["budget_epsilon"]) for s in sources.values()
             if math.isfinite(float(s["budget_epsilon"]))]
    limit = max(tops) * 1.1
    charts = []
    for i, (name, status) in enumerate(sources.items()):
        steps = running.get(name)
        if not steps:
            charts.append(f"<p>{esc(name)}: no release recorded.</p>")
            continue
        budget = float(status["budget_epsilon"])
        svg = budget_chart(
            f"budget-{i + 1}", steps, budget=budget if math.isfinite(budget) else None,
            ledger_total=float(status["spent_epsilon"]), limit=limit,
            title=f"Privacy spent from source {name}",
            desc=(f"Budget ε {_amount(budget)}; " + "; ".join(
                f"{s.label}: +{s.epsilon:g}, sum {s.total:.3g}" for s in steps)
                  + f"; ledger total {float(status['spent_epsilon']):.3g}"))
        charts.append(figure(svg, f"Source {name}: ε added by each release (solid) on top of"
                                  " earlier releases (outlined), against the budget (dashed)."))
    note = ("Bars add each release's ε (basic composition, an upper bound). The ledger composes"
            " Gaussian releases exactly and states the total at the budget's δ, so its total"
            " (dotted, after the last bar) can be lower; the budget check uses the ledger's total.")
    return f'<div class="budget-grid">{"".join(charts)}</div><p class="muted">{esc(note)}</p>'


def _release_table(releases: Sequence[Mapping[str, Any]]) -> str:
    """Every release in the ledger with its note and the running sum."""
    sums: dict[str, float] = {}
    rows = []
    for r in sorted(releases, key=lambda r: int(r.get("seq", 0))):
        source = str(r["source"])
        sums[source] = sums.get(source, 0.0) + float(r["epsilon"])
        rows.append((str(r.get("seq", "")), str(r.get("time", "")), source, f"{r['epsilon']:g}",
                     f"{r.get('delta', 0.0):g}", f"{sums[source]:.4g}", str(r.get("note", ""))))
    if not rows:
        return ""
    return data_table(["entry", "time", "source", "ε", "δ", "sum of ε for the source", "note"],
                      rows, numeric=(0, 3, 4, 5), caption="Releases recorded in the ledger")


def kmin_section(report: Mapping[str, Any]) -> str:
    """The smallest group allowed, the smallest persona released and what was withheld.

    Args:
        report: the whole audit.

    Returns:
        The section's markup.
    """
    privacy, users = report["privacy"], report["lineage"]["users"]
    k_min = privacy["k_min"]
    text = (f"Every released persona must hold at least {k_min} users, so no persona describes"
            " a handful of people.")
    personas = report["personas"]
    if personas:
        small = min(personas, key=lambda p: p["share"])
        size = small["share"] * users
        text += (f" The smallest released persona is {small['id']} ({small['name']}) with about"
                 f" {round(size):,} users ({small['share']:.1%})"
                 + (", from noisy counts" if report["lineage"]["users_noisy"] else "")
                 + (": at least k-min." if size >= k_min - 1e-9 else ": FEWER than k-min."))
    withheld = privacy["suppressed"]
    listed = ("<ul class=\"traits\">" + "".join(f"<li>{esc(s)}</li>" for s in withheld) + "</ul>"
              if withheld else "<p>None: no persona was withheld or merged.</p>")
    return section("kmin", "k-min and suppressed personas",
                   f"<p>{esc(text)}</p><h3>Withheld or merged personas</h3>{listed}")


def fairness_section(fairness: Mapping[str, Any] | None, personas: Sequence[Mapping[str, Any]]) -> str:
    """Shares per group and persona, mean distances, and flagged groups.

    Args:
        fairness: the audit's ``fairness`` section (None when no group column was given).
        personas: the audit's ``personas`` section.

    Returns:
        The section's markup.
    """
    if not fairness:
        note = callout("note", "Not run: give --data EVENTS.csv --group-column COLUMN to compare"
                               " groups (the column is used for this audit only, never for"
                               " clustering).", label="No fairness table")
        return section("fairness", "Fairness across groups", note)
    groups, flagged, majority = fairness["groups"], set(fairness["flagged"]), fairness["majority"]
    distance, ratio = fairness["mean_distance"], float(fairness["ratio_threshold"])
    threshold = ratio * float(distance[majority])
    bars = [Bar(f"{g} ({groups[g]:,} users)", float(distance[g]),
                f"{float(distance[g]):.3g}" + (" flagged" if g in flagged else ""), hatched=g in flagged)
            for g in groups]
    svg = bar_chart("fairness-distance", bars, title="Mean distance to the assigned persona, by group",
                    desc="; ".join(f"{b.label}: {b.text}" for b in bars)
                    + f"; flagged above {threshold:.3g}", marker=threshold,
                    marker_label=f"flag above {threshold:.3g}", width=640)
    caption = (f"How far each group's users sit from their persona's centre. A group more than"
               f" {ratio:g} {TIMES} the majority group's ({majority}) is flagged (hatched): its"
               " behaviour was absorbed into personas fitted to others.")
    rows = [(g, f"{groups[g]:,}", f"{float(distance[g]):.4g}",
             f"{float(distance[g]) / float(distance[majority]):.2f} {TIMES}",
             "majority" if g == majority else "FLAGGED" if g in flagged else "ok") for g in groups]
    distances = data_table(["group", "users", "mean distance", "of the majority's", "result"], rows,
                           numeric=(1, 2, 3), caption="Mean distance to the assigned persona")
    ids = [p["id"] for p in personas]
    shares = data_table(["group", *ids], [(g, *(f"{fairness['shares'][g].get(i, 0.0):.1%}" for i in ids))
                                          for g in groups],
                        numeric=tuple(range(1, len(ids) + 1)),
                        caption="Share of each group's users in each persona")
    summary = (f"Flagged: {', '.join(sorted(flagged))}." if flagged
               else "No group is flagged.")
    return section("fairness", "Fairness across groups",
                   f"<p><strong>{esc(summary)}</strong></p>"
                   + f'<div class="chart-box">{figure(svg, caption)}</div>' + distances
                   + shares)
