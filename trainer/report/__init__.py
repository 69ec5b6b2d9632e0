"""Self-contained HTML reports of signed bundles: open offline, print to PDF, read aloud.

``render_persona_report`` turns a verified manifest into one page with inline
CSS and inline SVG charts and no scripts; its Content-Security-Policy forbids
every network load. The page shell in ``_html`` and the charts in ``_charts``
take plain text and numbers, so other reports (the privacy audit) reuse them.
"""

from ._persona import render_persona_report

__all__ = ["render_persona_report"]
