"""Latency and scale benchmarks for edgepersona, with their reports.

Run ``python -m benchmarks`` from the repository root (``--quick`` for a
smoke-sized run, ``--only assign,fold`` for some suites, ``--out DIR`` to
write elsewhere). Every figure is reported next to a peer measured in the
same run, as a ratio; nothing here asserts on time.

Suites (one module each): ``assign``, ``fold``, ``cold_start``, ``idle``,
``crypto``, ``trainer``, ``gateway``. Shared parts: ``_measure`` (timing
loops and summaries), ``_fixtures`` (synthetic specs, rows, events and a
signed bundle), ``_machine`` (what the numbers were measured on) and
``_report`` (JSON, Markdown and charts).
"""
