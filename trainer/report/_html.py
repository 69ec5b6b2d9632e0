"""The shared page shell: one self-contained, accessible, printable HTML document.

Every report (personas today, the privacy audit next) is built from these
pieces: :func:`render_page` wraps sections in a document with inline CSS and
a Content-Security-Policy that forbids every network load (``default-src
'none'``; the stylesheet is allowed by its hash), so a report opened from a
mail attachment or a shared drive cannot call home. The helpers take plain
text and escape it; parameters ending in ``_html`` take markup that a helper
here or in :mod:`._charts` already produced.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from collections.abc import Sequence
from typing import Literal

__all__ = [
    "CSS",
    "MINUS",
    "PALETTE",
    "SIGMA",
    "callout",
    "colour_slot",
    "data_table",
    "esc",
    "facts",
    "figure",
    "render_page",
    "section",
]

MINUS = "\u2212"  # the typographic minus sign: clearer than a hyphen beside a number
SIGMA = "\u03c3"  # standard deviations

# Okabe-Ito colours (safe for the common colour-vision deficiencies), yellow left out:
# too pale on white. Colour is never the only cue: every mark also has a text label.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#56B4E9", "#E69F00", "#4D4D4D")

CSS = """
:root { color-scheme: light; --ink: #1f2328; --muted: #57606a; --line: #d0d7de;
  --paper: #ffffff; --back: #f4f6f8; --accent: #0b5cad; --warn: #8a4b00; --ok: #1a6b35; }
* { box-sizing: border-box; }
html { background: var(--back); color: var(--ink); }
body { margin: 0 auto; max-width: 72rem; padding: 1.5rem 1.25rem 3rem;
  font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
h1, h2, h3, h4 { line-height: 1.25; margin: 0 0 .5rem; }
h1 { font-size: 1.9rem; }
h2 { font-size: 1.45rem; margin-top: 2.25rem; padding-bottom: .3rem; border-bottom: 2px solid var(--line); }
h3 { font-size: 1.2rem; margin-top: 1.25rem; }
h4 { font-size: 1rem; margin-top: 1rem; }
p { margin: 0 0 .75rem; }
a { color: var(--accent); }
.page-head { background: var(--paper); border: 1px solid var(--line); border-radius: 10px;
  padding: 1.25rem 1.5rem; }
.lead { font-size: 1.1rem; color: var(--muted); }
.facts { display: grid; grid-template-columns: repeat(auto-fit, minmax(10rem, 1fr)); gap: .5rem 1.5rem;
  margin: 1rem 0 0; }
.facts div { border-left: 3px solid var(--line); padding-left: .6rem; }
.facts dt { font-size: .8rem; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
.facts dd { margin: 0; font-weight: 600; }
nav.toc { margin: 1rem 0 0; font-size: .95rem; }
nav.toc ol { display: flex; flex-wrap: wrap; gap: .25rem 1.25rem; list-style: none; padding: 0; margin: 0; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(26rem, 100%), 1fr));
  gap: 1rem 1.5rem; }
.wide { margin-top: 1rem; }
.panel, .persona { background: var(--paper); border: 1px solid var(--line); border-radius: 10px;
  padding: 1rem 1.25rem; }
.persona { margin-top: 1.25rem; border-top: 6px solid var(--accent); }
.persona-body { display: grid; grid-template-columns: minmax(16rem, 1fr) minmax(20rem, 1.15fr);
  gap: 1rem 2rem; }
@media (max-width: 52rem) { .persona-body { grid-template-columns: 1fr; } }
.pid { display: inline-block; min-width: 2.2rem; padding: 0 .4rem; margin-right: .4rem; border-radius: 4px;
  border: 2px solid currentColor; font-size: .9rem; text-align: center; }
.share { font-size: 1.05rem; }
.share strong { font-size: 1.6rem; }
.caveat, .muted, figcaption, .fineprint { color: var(--muted); font-size: .9rem; }
.traits { padding-left: 1.2rem; margin: 0 0 .75rem; }
.traits li { margin-bottom: .35rem; }
figure { margin: 0 0 1rem; }
figcaption { margin-top: .35rem; }
svg.chart { display: block; width: 100%; height: auto; }
svg.chart text { font: 13px system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif;
  fill: var(--ink); }
svg.chart .small { font-size: 12px; fill: var(--muted); }
svg.chart .strong { font-weight: 600; }
svg.chart .axis { stroke: var(--muted); stroke-width: 1; }
svg.chart .grid { stroke: var(--line); stroke-width: 1; stroke-dasharray: 3 3; }
svg.chart .marker { stroke: var(--warn); stroke-width: 1.5; stroke-dasharray: 5 3; }
svg.chart .leader { stroke: var(--muted); stroke-width: .75; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0 1rem; font-size: .92rem; }
caption { text-align: left; font-weight: 600; padding-bottom: .3rem; }
th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--back); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace;
  font-size: .85rem; overflow-wrap: anywhere; }
details { margin: .25rem 0 .75rem; }
summary { cursor: pointer; color: var(--accent); font-size: .92rem; }
.callout { border: 1px solid var(--line); border-left: 6px solid var(--accent); border-radius: 6px;
  background: var(--paper); padding: .75rem 1rem; margin: 0 0 1rem; }
.callout.warning { border-left-color: var(--warn); }
.callout.ok { border-left-color: var(--ok); }
.callout .label { font-weight: 700; }
.metrics { list-style: none; padding: 0; margin: 0; }
.metrics li { padding: .5rem 0; border-bottom: 1px solid var(--line); }
.metrics .value { font-weight: 700; font-variant-numeric: tabular-nums; }
.page-foot { margin-top: 2.5rem; }
@page { margin: 14mm; }
@media print {
  html, body { background: #fff; color: #000; }
  body { max-width: none; padding: 0; font-size: 10.5pt; }
  nav.toc, summary { display: none; }
  .page-head, .panel, .persona, .callout { border-color: #999; background: #fff; }
  .persona { break-before: page; break-inside: avoid; margin-top: 0; }
  .persona-body { grid-template-columns: 1fr 1.15fr; }
  figure, table, .callout, .metrics li { break-inside: avoid; }
  h2, h3, h4 { break-after: avoid; }
  a { color: inherit; text-decoration: none; }
}
""".strip() + "\n" + "\n".join(
    f".persona.c{i} {{ border-top-color: {colour}; }}" for i, colour in enumerate(PALETTE))

_CALLOUT_MARK = {"note": "Note", "warning": "Attention", "ok": "OK"}


def esc(text: object) -> str:
    """Escape any value for HTML text or a quoted attribute.

    Args:
        text: the value (converted with ``str``).

    Returns:
        The escaped text.
    """
    return html.escape(str(text), quote=True)


def colour_slot(key: str, index: int) -> int:
    """A palette slot that follows an id like ``P3`` (so colours survive refits), else the index.

    Args:
        key: the item's id.
        index: its position, used when the id carries no number.

    Returns:
        An index into :data:`PALETTE` (and the ``c<slot>`` CSS class).
    """
    found = re.fullmatch(r"[A-Za-z]*(\d{1,6})", key)
    return (int(found.group(1)) - 1 if found else index) % len(PALETTE)


def _csp(css: str) -> str:
    """A policy that loads nothing from anywhere; only this exact stylesheet applies."""
    digest = base64.b64encode(hashlib.sha256(css.encode("utf-8")).digest()).decode("ascii")
    return (f"default-src 'none'; style-src 'sha256-{digest}'; img-src 'none'; "
            "base-uri 'none'; form-action 'none'")


def render_page(*, title: str, header_html: str, nav: Sequence[tuple[str, str]],
                main_html: str, footer_html: str, css: str = CSS) -> str:
    """A complete HTML document around already rendered parts.

    Args:
        title: the document title (plain text).
        header_html: the contents of the page ``<header>`` (with the only ``<h1>``).
        nav: (fragment id, link text) pairs for the table of contents.
        main_html: the contents of ``<main>``.
        footer_html: the contents of the page ``<footer>``.
        css: the stylesheet (default: the shared one).

    Returns:
        The document, starting with ``<!doctype html>``.
    """
    links = "".join(f'<li><a href="#{esc(target)}">{esc(text)}</a></li>' for target, text in nav)
    toc = f'<nav class="toc" aria-label="Contents"><ol>{links}</ol></nav>' if nav else ""
    return ("<!doctype html>\n"
            '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{esc(_csp(css))}">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            '<meta name="color-scheme" content="light">\n'
            f"<title>{esc(title)}</title>\n<style>{css}</style>\n</head>\n<body>\n"
            f'<header class="page-head">{header_html}{toc}</header>\n'
            f"<main>\n{main_html}\n</main>\n"
            f'<footer class="page-foot fineprint">{footer_html}</footer>\n'
            "</body>\n</html>\n")


def section(section_id: str, heading: str, body_html: str, *, level: int = 2,
            css_class: str | None = None) -> str:
    """A ``<section>`` labelled by its heading.

    Args:
        section_id: the fragment id (also used by the table of contents).
        heading: the heading text.
        body_html: the section's contents.
        level: the heading level (2 for page sections, 3 inside them).
        css_class: an optional class for the section.

    Returns:
        The markup.
    """
    cls = f' class="{esc(css_class)}"' if css_class else ""
    return (f'<section id="{esc(section_id)}"{cls} aria-labelledby="{esc(section_id)}-h">'
            f'<h{level} id="{esc(section_id)}-h">{esc(heading)}</h{level}>{body_html}</section>')


def figure(svg_html: str, caption: str, table_html: str = "") -> str:
    """A chart with its caption and, folded away, the same numbers as a table.

    Args:
        svg_html: the chart.
        caption: what the chart shows and how to read it (plain text).
        table_html: the data table alternative (from :func:`data_table`).

    Returns:
        The markup.
    """
    alternative = (f"<details><summary>Show the numbers as a table</summary>{table_html}</details>"
                   if table_html else "")
    return f"<figure>{svg_html}<figcaption>{esc(caption)}</figcaption>{alternative}</figure>"


def data_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *,
               caption: str | None = None, numeric: Sequence[int] = (),
               mono: Sequence[int] = ()) -> str:
    """A plain data table with column headers (first column as row headers).

    Args:
        headers: column headings (plain text).
        rows: cells as plain text, one sequence per row.
        caption: an optional table caption.
        numeric: indexes of right-aligned numeric columns.
        mono: indexes of columns in a monospaced font that may break anywhere (digests, ids).

    Returns:
        The markup.
    """
    def cell(tag: str, index: int, text: str, scope: str) -> str:
        kinds = (("num", numeric), ("mono", mono if scope == "row" else ()))
        names = " ".join(n for n, cols in kinds if index in cols)
        cls = f' class="{names}"' if names else ""
        return f'<{tag}{cls} scope="{scope}">{esc(text)}</{tag}>' if tag == "th" \
            else f"<{tag}{cls}>{esc(text)}</{tag}>"

    head = "".join(cell("th", i, h, "col") for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(cell("th" if i == 0 else "td", i, c, "row")
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def facts(items: Sequence[tuple[str, str]]) -> str:
    """Key facts as a description list (label above value).

    Args:
        items: (label, value) pairs, plain text.

    Returns:
        The markup.
    """
    inner = "".join(f"<div><dt>{esc(k)}</dt><dd>{esc(v)}</dd></div>" for k, v in items)
    return f'<dl class="facts">{inner}</dl>'


def callout(kind: Literal["note", "warning", "ok"], text: str, *, label: str | None = None) -> str:
    """A boxed statement whose kind is said in words, not only by its colour.

    Args:
        kind: ``note``, ``warning`` or ``ok``.
        text: the statement (plain text).
        label: the leading word (default: Note / Attention / OK).

    Returns:
        The markup.
    """
    lead = esc(label or _CALLOUT_MARK[kind])
    return f'<div class="callout {kind}"><p><span class="label">{lead}:</span> {esc(text)}</p></div>'
