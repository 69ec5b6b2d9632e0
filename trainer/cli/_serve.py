"""``edgepersona serve``: run the collector service with uvicorn.

FastAPI and uvicorn are imported when the command runs (the ``server``
extra), so the rest of the CLI works without them. Uvicorn's access log is
off: it would record client addresses, which the collector never keeps.
"""

from __future__ import annotations

import argparse
import logging
import os
import stat
import sys
from pathlib import Path

from edgepersona.sdk import InputError
from edgepersona.trainer.cli._args import Subparsers
from edgepersona.trainer.cli._types import non_negative_int, port, positive_int

__all__ = ["add_parser", "serve"]


def add_parser(sub: Subparsers) -> None:
    """Add ``serve``.

    Args:
        sub: the root parser's sub-commands.
    """
    parser = sub.add_parser("serve", help="run the collector: sealed sync in, approved bundles out")
    parser.add_argument("--db", required=True,
                        help="database URL: sqlite:///collector.db or postgresql://user:pass@host/db")
    parser.add_argument("--collector-key", required=True, metavar="KEYFILE",
                        help="collector private key file (or its folder)")
    parser.add_argument("--bundles", required=True, metavar="DIR",
                        help="folder of <model_id>-v<version>.zip bundles (or folders) to serve")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=port, default=8787, help="port to listen on (8787)")
    parser.add_argument("--app-id", default="edgepersona", help="app id devices seal for (edgepersona)")
    parser.add_argument("--replay-window-days", type=positive_int, default=7,
                        help="days a contribution stays acceptable and deduplicated (7)")
    parser.add_argument("--max-body-bytes", type=positive_int, default=65_536,
                        help="largest sync request body in bytes (65536)")
    parser.add_argument("--pseudonym-daily-quota", type=non_negative_int, default=4, metavar="N",
                        help="contributions accepted per pseudonym, model version and day (4; 0: no quota)")
    parser.add_argument("--k-min", type=positive_int, default=None, metavar="N",
                        help="roll closed day cells below N contributions forward"
                             " (default: each bundle's k-min)")
    parser.add_argument("--require-admission", action="append", default=[], metavar="PUBLIC_KEY",
                        help="require admission tokens signed by this app-backend Ed25519 public key"
                             " (PEM file; repeat during a key rotation)")
    parser.set_defaults(handler=serve)


def _read_key(path: Path) -> bytes:
    """The collector private key file (or the one in a key folder), warning if others can read it."""
    from edgepersona.trainer.release.keys import COLLECTOR_PRIVATE_NAME

    if path.is_dir():
        path = path / COLLECTOR_PRIVATE_NAME
    if not path.is_file():
        raise InputError(f"no collector key at {path}; create one with"
                         " `edgepersona keys generate --kind collector --out DIR`")
    if os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        print(f"edgepersona: warning: {path} is readable by other users; chmod 600 it",
              file=sys.stderr)
    return path.read_bytes()


def serve(args: argparse.Namespace) -> int:
    """``edgepersona serve``: open the store and the key, then serve until interrupted.

    Args:
        args: The parsed ``serve`` options.

    Returns:
        0 after a clean shutdown.

    Raises:
        InputError: The database URL, key file or bundles folder is unusable.
        FileNotFoundError: The key file does not exist.
    """
    import uvicorn

    from edgepersona.trainer.collector import CollectorConfig, Ed25519Admission, create_app, open_store

    key = _read_key(Path(args.collector_key))
    admission = (Ed25519Admission([Path(k).read_bytes() for k in args.require_admission],
                                  app_id=args.app_id) if args.require_admission else None)
    config = CollectorConfig(app_id=args.app_id, bundles_dir=Path(args.bundles),
                             replay_window_days=args.replay_window_days,
                             max_body_bytes=args.max_body_bytes,
                             pseudonym_daily_quota=args.pseudonym_daily_quota or None,
                             k_min=args.k_min, admission=admission)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    store = open_store(args.db)
    try:
        app = create_app(config, collector_private_key=key, store=store)
        app.state.collector.roll_up()  # no closed small cell waits for the day's first request
        versions = sorted(app.state.collector.accepted_versions())
        logging.getLogger("edgepersona.trainer.collector").info(
            "collector for app id %r: accepting model versions %s; admission %s; listening on"
            " http://%s:%d", config.app_id, versions or "none yet",
            "required" if admission is not None else "open", args.host, args.port)
        uvicorn.run(app, host=args.host, port=args.port, access_log=False, server_header=False)
    finally:
        store.close()
    return 0
