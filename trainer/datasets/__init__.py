"""Data sets bundled for the quickstart and tests (see the README for attribution)."""
