"""``edgepersona report``: a verified bundle as a self-contained HTML page."""

from __future__ import annotations

import argparse
import os
import tempfile
from datetime import datetime
from pathlib import Path

from edgepersona.sdk import InputError, Manifest, PersonaRuntime
from edgepersona.trainer.cli._args import Subparsers, add_trusted, trusted_keys
from edgepersona.trainer.cli._render import console

__all__ = ["add_parser", "drift_markdown_beside", "report", "write_text_atomic"]


def add_parser(sub: Subparsers) -> None:
    """Add ``report``.

    Args:
        sub: the root parser's sub-commands.
    """
    parser = sub.add_parser("report", help="write a verified bundle as a self-contained HTML page")
    parser.add_argument("bundle", help="bundle folder or .zip")
    parser.add_argument("--previous", metavar="BUNDLE",
                        help="the previous version (folder or .zip), to show what changed")
    parser.add_argument("--html", required=True, metavar="OUT.html", help="the HTML file to write")
    add_trusted(parser)
    parser.set_defaults(handler=report)


def _verified(bundle: str, keys: list[bytes], now: datetime | None = None) -> Manifest:
    """Verify a bundle (signature, digests, graph, expiry at ``now``) and return its manifest."""
    return PersonaRuntime.open(bundle, trusted_keys=keys, now=now).manifest


def drift_markdown_beside(bundle: Path) -> Path | None:
    """The drift gate's report that a refit writes beside its bundle, if there is one.

    ``edgepersona refit --out v2`` writes ``v2/``, ``v2.zip`` and ``v2.drift.md``,
    so both ``v2`` and ``v2.zip`` find ``v2.drift.md``.

    Args:
        bundle: the bundle folder or ``.zip`` named on the command line.

    Returns:
        The path of the drift report, or None.
    """
    names = [f"{bundle.name}.drift.md"]
    if bundle.suffix == ".zip":
        names.insert(0, f"{bundle.stem}.drift.md")
    for name in names:
        candidate = bundle.with_name(name)
        if candidate.is_file():
            return candidate
    return None


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file so that readers see the old file or the new one, never half of one.

    Args:
        path: the file to write.
        text: its contents (UTF-8).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def report(args: argparse.Namespace) -> int:
    """``edgepersona report``: verify the bundle(s) first, then write the HTML report.

    Args:
        args: ``bundle``, ``trusted_key`` (list of PEM paths), ``previous`` (or None)
            and ``html`` (the output path).

    Returns:
        0 on success.
    """
    from edgepersona.trainer.report import render_persona_report

    if Path(args.html).is_dir():
        raise InputError(f"--html {args.html} is a folder; pass the HTML file to write")
    keys = trusted_keys(args)
    manifest = _verified(args.bundle, keys)
    # The previous version may have expired since; it must have been valid when this one was built.
    previous = _verified(args.previous, keys, manifest.created_at) if args.previous else None
    drift_path = drift_markdown_beside(Path(args.bundle))
    drift = drift_path.read_text(encoding="utf-8") if drift_path else None
    page = render_persona_report(manifest, previous=previous, drift_markdown=drift)
    out = Path(args.html)
    write_text_atomic(out, page)
    extras = [f"changes since v{previous.version}" if previous else "",
              f"drift verdict from {drift_path.name}" if drift_path else ""]
    detail = "; ".join(e for e in extras if e)
    console.print(f"wrote {out}: {manifest.model_id} v{manifest.version}, {len(manifest.personas)}"
                  f" personas" + (f" ({detail})" if detail else "")
                  + "; open it in any browser, it loads nothing from the network")
    return 0
