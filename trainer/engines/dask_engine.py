"""The Dask engine: the Lloyd core's blocks held by a dask.distributed cluster.

:class:`DaskBlocks` keeps rows as blocks of consecutive rows in the workers'
memory (computed once from a dask.array). It implements the
:class:`edgepersona.trainer.engines.row_blocks.RowBlocks` interface that
:class:`edgepersona.trainer.engines.kmeans.PersonaKMeans` fits through: every map-reduce
ships a small function (e.g. :func:`~edgepersona.trainer.engines.lloyd.partial_stats`
with the current centroids) to the blocks where they live, and only the
per-persona counts and sums (k x d floats per block) travel back to be added,
in block order, on the client. Each task runs on the worker that holds its
block; rows themselves move only for the seeded samples (a few thousand rows)
and the final labels (one integer per user).

Dask is an optional extra (``pip install edgepersona[dask]``): this module is
imported only by the ``--engine dask`` path, and the SDK never imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from edgepersona.sdk import InputError
from edgepersona.trainer.engines.local import LocalBlocks
from edgepersona.trainer.engines.row_blocks import Summable, add_in_order

__all__ = ["DaskBlocks", "dask_client", "worker_count"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
S = TypeVar("S", bound=Summable)
T = TypeVar("T")
DEFAULT_WORKERS = 2  # workers of the local cluster started when no scheduler is given


def _import_dask() -> Any:
    """dask.array, or a message that says which extra to install."""
    try:
        import dask.array
        import distributed  # noqa: F401 - the engine needs the distributed scheduler
    except ImportError:  # pragma: no cover - depends on the installed extras
        raise InputError("the Dask engine needs the dask extra: pip install 'edgepersona[dask]'"
                         ) from None
    return dask.array


@contextmanager
def dask_client(scheduler: str | None = None, *, workers: int = DEFAULT_WORKERS,
                threads_per_worker: int = 1, processes: bool = True,
                memory_limit: str | int = "auto") -> Iterator[Any]:
    """A dask.distributed client: to a running scheduler, or to a local cluster it starts.

    Args:
        scheduler: the scheduler's address (e.g. ``tcp://scheduler.example:8786``); None
            starts a local cluster for the duration of the block.
        workers: local cluster only: number of workers.
        threads_per_worker: local cluster only: threads per worker.
        processes: local cluster only: workers in their own processes (False: threads).
        memory_limit: local cluster only: memory per worker (bytes or e.g. ``"4GiB"``).

    Yields:
        The client, also registered as dask's default scheduler.

    Raises:
        InputError: dask is not installed.
    """
    _import_dask()
    from distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    with LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker, processes=processes,
                      memory_limit=memory_limit, dashboard_address=None,
                      worker_dashboard_address=None) as cluster, \
            Client(cluster) as client:
        yield client


def _local(block: F64) -> LocalBlocks:
    """A worker's block as the local engine sees it: sub-blocks in order, one thread.

    Sub-blocks keep temporaries small (a (rows, d) temporary of a million rows
    costs more in fresh pages than in arithmetic), exactly as in-process fits do.
    """
    return LocalBlocks(block, threads=1)


def _reduce_task(fn: Callable[[F64], S], block: F64) -> S:
    """``map_reduce`` on one worker's block."""
    return _local(block).map_reduce(fn)


def _map_task(fn: Callable[[F64], F64], block: F64) -> F64:
    """``map_blocks`` on one worker's block."""
    return _local(block).map_blocks(fn).rows


def _collect_task(fn: Callable[[F64], tuple[I64, S]], block: F64) -> tuple[I64, S]:
    """``map_collect`` on one worker's block."""
    return _local(block).map_collect(fn)


class DaskBlocks:
    """Rows held by a Dask cluster, one block per chunk of rows.

    The blocks are computed once and kept in the workers' memory; every later
    task on a block is sent to the worker that holds it (a preference, so a
    lost worker's blocks can still be recomputed elsewhere), so iterations
    move centroids and partial sums, never rows.

    Args:
        array: a dask.array of shape (n, d) (chunked along rows only), or a
            numpy array to scatter.
        chunk_rows: with a numpy array: rows per block.
    """

    def __init__(self, array: Any, *, chunk_rows: int = 250_000) -> None:
        da = _import_dask()
        from distributed import futures_of, get_client, wait

        if isinstance(array, np.ndarray):
            array = da.from_array(np.asarray(array, dtype=np.float64), chunks=(chunk_rows, -1))
        if len(array.chunks[1]) != 1:
            array = array.rechunk({1: -1})
        kept = array.persist()
        wait(kept)
        futures = {f.key: f for f in futures_of(kept)}
        self._init(get_client(), [futures[d.key] for d in kept.to_delayed().ravel()],
                   [int(r) for r in kept.chunks[0]], int(kept.shape[1]))

    def _init(self, client: Any, blocks: list[Any], sizes: list[int], width: int) -> None:
        """Hold the block futures, their row counts and where they live."""
        self._client, self._blocks, self._sizes, self._width = client, blocks, sizes, width
        holders = client.who_has(blocks)
        self._where = [sorted(holders.get(b.key, ()))[:1] or None for b in blocks]

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns)."""
        return sum(self._sizes), self._width

    @property
    def block_sizes(self) -> list[int]:
        """Rows per block, in order."""
        return list(self._sizes)

    def __len__(self) -> int:
        return sum(self._sizes)

    def _submit(self, task: Callable[..., T], fn: Any, per_block: Sequence[Any] | None = None
                ) -> list[Any]:
        """``task(fn, block[, per_block[i]])`` on the worker holding each block, in block order."""
        args = [() if per_block is None else (per_block[i],) for i in range(len(self._blocks))]
        return [self._client.submit(task, fn, block, *extra, workers=where,
                                    allow_other_workers=True, pure=False)
                for block, where, extra in zip(self._blocks, self._where, args, strict=True)]

    def map_reduce(self, fn: Callable[[F64], S]) -> S:
        """Apply ``fn`` to every block on the workers and add the results in block order.

        Args:
            fn: block -> partial result (pickled and sent to the workers).

        Returns:
            The sum of the partial results.
        """
        parts: list[S] = self._client.gather(self._submit(_reduce_task, fn))
        return add_in_order(parts)

    def map_blocks(self, fn: Callable[[F64], F64]) -> DaskBlocks:
        """Apply ``fn`` to every block and keep the results on the cluster, beside their source.

        Args:
            fn: block -> new block of the same shape.

        Returns:
            The new rows.
        """
        from distributed import wait

        blocks = self._submit(_map_task, fn)
        wait(blocks)
        out = DaskBlocks.__new__(DaskBlocks)
        out._init(self._client, blocks, self._sizes, self._width)
        return out

    def map_collect(self, fn: Callable[[F64], tuple[I64, S]]) -> tuple[I64, S]:
        """Apply ``fn`` to every block; gather its labels, add its partial results.

        Args:
            fn: block -> (labels of its rows, partial result).

        Returns:
            All labels in row order (one integer per row comes back to the
            client), and the sum of the partial results.
        """
        parts = self._client.gather(self._submit(_collect_task, fn))
        return np.concatenate([p[0] for p in parts]), add_in_order([p[1] for p in parts])

    def take(self, index: I64) -> F64:
        """The rows at these global indices, gathered to the client.

        Args:
            index: global row indices.

        Returns:
            Those rows as a numpy array, in the order asked.
        """
        index = np.asarray(index, dtype=np.int64)
        ends = np.cumsum(self._sizes)
        owner = np.searchsorted(ends, index, side="right")
        local = index - (ends - np.asarray(self._sizes))[owner]
        wanted = [local[owner == b] for b in range(len(self._blocks))]
        parts = self._client.gather(self._submit(_rows_at, None, wanted))
        out = np.empty((len(index), self._width))
        for b, rows in enumerate(parts):
            out[owner == b] = rows
        return out

    def to_numpy(self) -> F64:
        """Every row, gathered to the client (for tests and small data).

        Returns:
            Shape (n, d).
        """
        return np.vstack(self._client.gather(self._blocks)) if self._blocks else np.zeros((0, self._width))


def _rows_at(_: None, block: F64, index: I64) -> F64:
    """Rows of a block by local index (runs where the block lives)."""
    return np.asarray(block[index], dtype=np.float64)


def worker_count() -> int:
    """Workers of the default client's cluster.

    Returns:
        Their number (0 when there is no client).
    """
    from distributed import get_client

    try:
        return len(get_client().scheduler_info()["workers"])
    except ValueError:
        return 0
