"""Self-contained HTML reports of signed bundles: open offline, print to PDF, read aloud.

``render_persona_report`` turns a verified manifest into one page with inline
CSS and inline SVG charts and no scripts; its Content-Security-Policy forbids
every network load. ``render_audit_report`` does the same for the privacy
audit (``edgepersona audit --html``). The page shell in ``_html`` and the
charts in ``_charts`` take plain text and numbers, so both reports share them.
"""

from edgepersona.trainer.report._audit import render_audit_report
from edgepersona.trainer.report._persona import render_persona_report

__all__ = ["render_audit_report", "render_persona_report"]
