"""Feature rows from partitioned event logs and tables, computed on a Dask cluster.

Sources are a folder (every ``.parquet``, ``.csv`` or ``.csv.gz`` file under
it), a glob pattern or one file; the workers read them, so the paths must be
visible to every worker.

Event logs: a user's features need all of that user's events, so the events
are shuffled by user id with dask.dataframe (its shuffle spills to disk, so
logs larger than a worker's memory go through). Each user-partition is then
read by the local engine's own reader, :func:`~edgepersona.trainer.data.events.read_event_log`
(same parsing, validation and bad-row counts), and folded into feature rows by
the same spec code, :func:`~edgepersona.trainer.data.features.compute_features`.
Without ``at``, the reference time is the latest valid event of the whole log,
found in a first pass, exactly as the local engine does. Rows come out grouped
by partition (users sorted within each), not sorted globally; the rows, and so
the personas, are the same set.

CSV cells are read as text (only an empty cell is missing) and parsed by the
event-log reader as on the device; Parquet columns keep their types.

Tables: each file is one partition, read by
:func:`~edgepersona.trainer.data.events.read_feature_table`.
"""

from __future__ import annotations

import glob
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgepersona.sdk import FeatureSpec, InputError, SchemaError
from edgepersona.trainer.data.events import Columns, read_event_log, read_feature_table
from edgepersona.trainer.data.features import compute_features
from edgepersona.trainer.engines.dask_engine import DaskBlocks

__all__ = ["DistributedRows", "partitioned_files", "read_event_rows", "read_table_rows"]

F64 = npt.NDArray[np.float64]
_SUFFIXES = (".parquet", ".csv", ".csv.gz")


@dataclass(frozen=True)
class DistributedRows:
    """Feature rows held by the cluster, and what reading them found.

    Attributes:
        rows: one raw feature row per user, in spec order.
        bad_rows: rejected input rows per reason.
        users: number of users (rows).
        source: the source as given (a folder, a pattern or a file).
    """

    rows: DaskBlocks
    bad_rows: Counter[str]
    users: int
    source: str


def _kind(path: Path) -> str:
    """``parquet`` or ``csv`` (gzip or not)."""
    return "parquet" if path.name.endswith(".parquet") else "csv"


def partitioned_files(source: str | Path) -> list[Path]:
    """The data files of a partitioned source.

    Args:
        source: a folder (searched recursively), a glob pattern or one file.

    Returns:
        The Parquet or CSV files, sorted.

    Raises:
        InputError: nothing matches, or Parquet and CSV are mixed.
    """
    path = Path(source)
    if path.is_dir():
        found = [p for p in path.rglob("*") if p.is_file() and p.name.endswith(_SUFFIXES)]
    elif path.is_file():
        found = [path]
    else:
        found = [Path(p) for p in glob.glob(str(source), recursive=True)]
    files = sorted(p for p in found if p.name.endswith(_SUFFIXES))
    if not files:
        raise InputError(f"no .parquet, .csv or .csv.gz files at {source}")
    if len({_kind(p) for p in files}) > 1:
        raise InputError(f"{source} mixes Parquet and CSV files; keep one format per source")
    return files


def _parquet_file(path: str) -> Any:
    """One Parquet file as a pandas DataFrame (each file is one input partition)."""
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pandas()


def _event_frame(files: Sequence[Path], columns: Columns) -> Any:
    """The event files as a dask DataFrame (CSV cells as text, only empty cells missing)."""
    import dask.dataframe as dd

    names = [str(p) for p in files]
    if _kind(files[0]) == "parquet":
        import pyarrow.parquet as pq

        frame = dd.from_map(_parquet_file, names, meta=pq.read_schema(names[0]).empty_table().to_pandas())
    else:
        packed = any(p.name.endswith(".gz") for p in files)
        frame = dd.read_csv(names, dtype=str, keep_default_na=False, na_values=[""],
                            blocksize=None if packed else "64MiB")
    missing = [c for c in (columns.user, columns.time, columns.event) if c not in frame.columns]
    if missing:
        raise SchemaError(f"the event files lack column(s) {missing}; they have"
                          f" {sorted(frame.columns)}. Rename with --user-col/--time-col/--event-col")
    return frame


def _partition_log(frame: Any, columns: Columns) -> Any:
    """One partition's events through the event-log reader (it reads files: a private temp one)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory(prefix="edgepersona-part-") as scratch:
        path = Path(scratch) / "partition.parquet"
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
        return read_event_log(path, columns)


def _latest_event(frame: Any, columns: Columns) -> float | None:
    """Time of a partition's latest valid event (None when it has none)."""
    log = _partition_log(frame, columns)
    return float(log.time.max()) if len(log.time) else None


def _partition_features(frame: Any, spec: FeatureSpec, columns: Columns, at: float
                        ) -> tuple[F64, Counter[str]]:
    """Feature rows of one user-partition, and its bad-row counts."""
    log = _partition_log(frame, columns)
    if len(log.time) == 0:
        return np.zeros((0, len(spec.features))), log.bad_rows
    return compute_features(log, spec, at), log.bad_rows


def _table_part(path: Path, spec: FeatureSpec) -> tuple[F64, Counter[str]]:
    """One table file's rows and bad-row counts (user keys stay on the worker)."""
    table = read_feature_table(path, spec)
    return table.values, table.bad_rows


def _part_size(part: tuple[F64, Counter[str]]) -> tuple[int, Counter[str]]:
    """Rows and bad-row counts of a partition (what the client needs to know of it)."""
    return len(part[0]), part[1]


def _assemble(parts: list[Any], width: int, source: str) -> DistributedRows:
    """Keep the partitions' rows on the cluster; gather only their sizes and bad-row counts."""
    import dask
    import dask.array as da

    kept = dask.persist(*parts)
    sizes = dask.compute(*[dask.delayed(_part_size)(p) for p in kept])
    arrays = [da.from_delayed(dask.delayed(itemgetter(0))(p), shape=(n, width), dtype=np.float64)
              for p, (n, _) in zip(kept, sizes, strict=True) if n]
    users = sum(n for n, _ in sizes)
    if not users:
        raise InputError(f"{source} holds no usable rows; check the bad-row report")
    bad: Counter[str] = Counter()
    for _, counts in sizes:
        bad.update(counts)
    return DistributedRows(DaskBlocks(da.concatenate(arrays)), bad, users, source)


def read_event_rows(source: str | Path, spec: FeatureSpec, columns: Columns | None = None,
                    at: float | None = None) -> DistributedRows:
    """Feature rows per user from a partitioned event log, computed on the default Dask client.

    Args:
        source: a folder, glob pattern or file of Parquet or CSV event logs.
        spec: the feature spec.
        columns: the event log's column names (default: ``Columns()``).
        at: reference time in unix seconds (default: the latest valid event).

    Returns:
        The rows, held by the cluster, with bad-row counts.

    Raises:
        InputError: no files or no usable events.
        SchemaError: a required column is missing.
    """
    import dask

    columns = columns or Columns()
    frame = _event_frame(partitioned_files(source), columns)
    if at is None:
        latest = dask.compute(*[dask.delayed(_latest_event)(p, columns) for p in frame.to_delayed()])
        times = [t for t in latest if t is not None]
        if not times:
            raise InputError("the event log has no usable events; check the bad-row report")
        at = max(times)
    by_user = frame.shuffle(on=columns.user)
    parts = [dask.delayed(_partition_features)(p, spec, columns, at) for p in by_user.to_delayed()]
    return _assemble(parts, len(spec.features), str(source))


def read_table_rows(source: str | Path, spec: FeatureSpec) -> DistributedRows:
    """Feature rows from a partitioned aggregated table, one partition per file.

    Args:
        source: a folder, glob pattern or file of Parquet or CSV tables.
        spec: the feature spec (its names select and order the columns).

    Returns:
        The rows, held by the cluster, with bad-row counts.

    Raises:
        InputError: no files or no usable rows.
        SchemaError: a feature column is missing.
    """
    import dask

    parts = [dask.delayed(_table_part)(path, spec) for path in partitioned_files(source)]
    return _assemble(parts, len(spec.features), str(source))
