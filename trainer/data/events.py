"""Reading event logs and aggregated tables, counting bad rows instead of crashing.

An event log has one row per event: ``user_id, timestamp, event, value`` by
default (``value`` optional; timestamps ISO 8601 or epoch seconds), and any
further columns are event properties. An aggregated table has one row per
user and one column per spec feature. Identifier columns are read only to
group events per user; they never reach the model, the manifest or a log line.
"""

from __future__ import annotations

import csv
import gzip
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgepersona.sdk import FeatureSpec, InputError, SchemaError

__all__ = [
    "Columns",
    "EventLog",
    "FeatureTable",
    "parse_number",
    "parse_time",
    "read_event_log",
    "read_feature_table",
    "read_table",
]


@dataclass(frozen=True)
class Columns:
    """Column names of an event log."""

    user: str = "user_id"
    time: str = "timestamp"
    event: str = "event"
    value: str = "value"


@dataclass
class EventLog:
    """Events as columns; ``user`` indexes into ``user_keys``.

    Attributes:
        user: per event, the index of its user in ``user_keys``.
        time: per event, unix seconds.
        event: per event, the event name.
        properties: per property name, one value per event (None when absent);
            ``value`` holds floats with NaN when absent.
        user_keys: the raw user ids (kept in memory only, for grouping).
        bad_rows: rejected rows per reason.
        source: the file name the log came from (no directory).
    """

    user: npt.NDArray[np.int64]
    time: npt.NDArray[np.float64]
    event: npt.NDArray[np.str_]
    properties: dict[str, npt.NDArray[Any]]
    user_keys: list[str]
    bad_rows: Counter[str] = field(default_factory=Counter)
    source: str = ""

    @property
    def n_users(self) -> int:
        """Number of distinct users."""
        return len(self.user_keys)

    def subset(self, users: npt.NDArray[np.int64]) -> EventLog:
        """The events of some users, re-indexed.

        Args:
            users: user indices to keep.

        Returns:
            A new log holding only those users' events.
        """
        mapping = np.full(self.n_users, -1, dtype=np.int64)
        mapping[users] = np.arange(len(users))
        keep = mapping[self.user] >= 0
        return EventLog(mapping[self.user[keep]], self.time[keep], self.event[keep],
                        {k: v[keep] for k, v in self.properties.items()},
                        [self.user_keys[i] for i in users], Counter(), self.source)


@dataclass
class FeatureTable:
    """An aggregated table: one row per user, one column per spec feature."""

    values: npt.NDArray[np.float64]
    user_keys: list[str]
    bad_rows: Counter[str] = field(default_factory=Counter)
    source: str = ""


def read_table(path: Path, text_columns: tuple[str, ...] = ()) -> dict[str, list[Any]]:
    """Read CSV (optionally gzip) or Parquet into columns of Python values.

    Args:
        path: the file.
        text_columns: columns read as text, never as numbers (identifiers:
            ``01``, ``1`` and ``001`` are three users). A Parquet column already
            stored as numbers is turned into text as written.

    Returns:
        Column name → cells (None for a missing cell).

    Raises:
        InputError: the file is missing or is not CSV or Parquet.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if not path.exists():
        raise InputError(f"no such file: {path}")
    try:
        if path.suffix == ".parquet":
            table = pq.read_table(path)
        else:
            # Only an empty cell is missing: "NaN", "NA" or "null" are values we judge.
            options = pacsv.ConvertOptions(strings_can_be_null=True, null_values=[""],
                                           quoted_strings_can_be_null=False,
                                           column_types={c: pa.string() for c in text_columns})
            table = pacsv.read_csv(path, convert_options=options)
    except (OSError, ValueError) as exc:  # pyarrow.ArrowInvalid is a ValueError
        raise InputError(f"cannot read {path.name} as CSV or Parquet: {_reading_problem(path, exc)}"
                         ) from None
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    for name in text_columns:
        if name in columns:
            columns[name] = [_text(c) for c in columns[name]]
    return columns


def _text(cell: object) -> str | None:
    """An identifier cell as text; a whole float (a numeric Parquet column) without ``.0``."""
    if cell is None:
        return None
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))
    return str(cell)


def _reading_problem(path: Path, exc: Exception) -> str:
    """What is wrong with an unreadable file, by row and column number only.

    pyarrow's messages quote the offending row, which may hold identifiers;
    errors name positions and never cell values.
    """
    text = str(exc)
    with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as handle:
        try:
            head = handle.read(1 << 16)
        except (OSError, EOFError):
            head = b""
    if not head.strip():
        return "the file is empty; expected a header row, then one row per event or user"
    if b"\x00" in head:
        return "it holds binary data (NUL bytes); expected CSV text (optionally gzip) or Parquet"
    fields = re.search(r"Expected (\d+) columns, got (\d+)", text)
    if fields:
        row = _first_row_with_fields(path, int(fields.group(2)))
        where = f"row {row}" if row else "a row"
        return (f"{where} has {fields.group(2)} fields where the header has {fields.group(1)};"
                " fix or remove it (cell values are not shown)")
    place = [f"{m.group(1).lower()} {m.group(2)}" for m in re.finditer(r"(Row|column) #(\d+)", text)]
    return ("the data does not parse" + (f" at {', '.join(place)}" if place else "")
            + "; check that it is comma-separated text or Parquet (cell values are not shown)")


def _first_row_with_fields(path: Path, count: int) -> int | None:
    """The 1-based data row number (header is row 0) of the first row with ``count`` fields."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace", newline="") as handle:
            for number, row in enumerate(csv.reader(handle)):
                if len(row) == count and number > 0:
                    return number
    except (OSError, csv.Error, EOFError):
        return None
    return None


def parse_time(raw: object) -> float:
    """Unix seconds from epoch numbers or ISO 8601 text (naive means UTC); NaN if unparseable."""
    if raw is None:
        return math.nan
    if isinstance(raw, datetime):
        moment = raw
    else:
        text = str(raw).strip()
        try:
            return float(text)
        except ValueError:
            pass
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return math.nan
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_number(raw: object) -> float:
    """A float from a cell; NaN for empty or unparseable cells."""
    if raw is None or raw == "":
        return math.nan
    try:
        return float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def _require(columns: dict[str, list[Any]], names: list[str], path: Path) -> None:
    """Fail with the missing names and the --*-col options that rename them."""
    missing = [n for n in names if n not in columns]
    if missing:
        raise SchemaError(
            f"{path.name} lacks column(s) {missing}; it has {sorted(columns)}."
            " Rename with --user-col/--time-col/--event-col/--value-col")


def read_event_log(path: Path, columns: Columns = Columns()) -> EventLog:
    """Read an event log, dropping and counting bad rows.

    Args:
        path: CSV (optionally ``.gz``) or Parquet file.
        columns: the column names to use.

    Returns:
        The log. Rows with no user, an unparseable or negative time, no event
        name or a non-finite value are dropped and counted in ``bad_rows``.

    Raises:
        InputError: the file cannot be read.
        SchemaError: a required column is missing.
    """
    data = read_table(path, (columns.user,))
    _require(data, [columns.user, columns.time, columns.event], path)
    n = len(data[columns.user])
    times = np.array([parse_time(t) for t in data[columns.time]], dtype=np.float64)
    raw_values = data.get(columns.value)
    values = (np.array([parse_number(v) for v in raw_values], dtype=np.float64)
              if raw_values is not None else np.full(n, np.nan))
    bad: Counter[str] = Counter()
    keep = np.ones(n, dtype=bool)
    checks = (
        ("missing user id", np.array([u is None or str(u).strip() == "" for u in data[columns.user]],
                                     dtype=bool)),
        ("unparseable timestamp", ~np.isfinite(times)),
        ("negative timestamp", np.isfinite(times) & (times < 0)),
        ("missing event name", np.array([e is None or str(e) == "" for e in data[columns.event]],
                                        dtype=bool)),
        ("non-numeric or non-finite value", _bad_values(raw_values, values)),
    )
    for reason, mask in checks:
        hit = mask & keep
        if hit.any():
            bad[reason] += int(hit.sum())
        keep &= ~mask
    users_raw = np.array([str(u).strip() for u in data[columns.user]], dtype=object)[keep]
    user_keys, user_index = np.unique(users_raw.astype(str), return_inverse=True)
    props: dict[str, npt.NDArray[Any]] = {"value": values[keep]}
    skip = {columns.user, columns.time, columns.event, columns.value}
    for name, cells in data.items():
        if name not in skip:
            props[name] = np.array(cells, dtype=object)[keep]
    events = np.array([str(e) for e in data[columns.event]], dtype=str)[keep]
    return EventLog(user_index.astype(np.int64), times[keep], events, props,
                    [str(k) for k in user_keys], bad, path.name)


def _bad_values(raw: list[Any] | None, values: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    """A value cell that is present but not a finite number."""
    if raw is None:
        return np.zeros(len(values), dtype=bool)
    present = np.array([v is not None and v != "" for v in raw], dtype=bool)
    return present & ~np.isfinite(values)


_NON_NEGATIVE = ("count", "distinct", "active_days", "recency_days")


def read_feature_table(path: Path, spec: FeatureSpec, user_column: str | None = None) -> FeatureTable:
    """Read an aggregated table whose columns are named like the spec's features.

    Args:
        path: CSV or Parquet file.
        spec: the feature spec (its names select and order the columns).
        user_column: an identifier column to keep for output labels, if any.

    Returns:
        The table. Rows with a missing/NaN/non-numeric cell or a negative value
        for a count-like feature are dropped and counted.

    Raises:
        InputError: the file cannot be read.
        SchemaError: a feature column is missing.
    """
    data = read_table(path, (user_column,) if user_column else ())
    _require(data, list(spec.names) + ([user_column] if user_column else []), path)
    n = len(data[spec.names[0]])
    matrix = np.column_stack([np.array([parse_number(v) for v in data[name]], dtype=np.float64)
                              for name in spec.names])
    bad: Counter[str] = Counter()
    keep = np.ones(n, dtype=bool)
    nan_rows = ~np.isfinite(matrix).all(axis=1)
    if nan_rows.any():
        bad["missing, NaN or non-numeric feature value"] += int(nan_rows.sum())
    keep &= ~nan_rows
    for j, feature in enumerate(spec.features):
        if feature.aggregate in _NON_NEGATIVE:
            negative = keep & (matrix[:, j] < 0)
            if negative.any():
                bad[f"negative value for {feature.aggregate} feature"] += int(negative.sum())
            keep &= ~negative
    keys = ([str(u) for u in np.array(data[user_column], dtype=object)[keep]] if user_column
            else [str(i) for i in np.flatnonzero(keep)])
    return FeatureTable(matrix[keep], keys, bad, path.name)
