"""The local engine: rows in this process's memory, in blocks, on a few threads.

:class:`LocalBlocks` implements :class:`edgepersona.trainer.engines.lloyd.RowBlocks`
for a numpy array: the Lloyd core's map-reduce runs over views of consecutive
rows. numpy releases the GIL in the products, comparisons and reductions of
:func:`~edgepersona.trainer.engines.lloyd.partial_stats`, so blocks run in parallel;
results are added in block order, so they do not depend on the thread count.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from edgepersona.trainer.engines.row_blocks import Summable, add_in_order, one_blas_thread

__all__ = ["LocalBlocks"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
S = TypeVar("S", bound=Summable)


def _default_threads() -> int:
    """CPUs this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class LocalBlocks:
    """Rows in this process's memory, processed in blocks by a few threads.

    Args:
        rows: the rows, shape (n, d), float64.
        block_rows: rows per block.
        threads: worker threads (default: the CPUs this process may use).
    """

    def __init__(self, rows: F64, *, block_rows: int = 65_536, threads: int | None = None) -> None:
        self.rows = rows
        self.block_rows = block_rows
        self.threads = threads or _default_threads()

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns)."""
        return int(self.rows.shape[0]), int(self.rows.shape[1])

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def _run(self, fn: Callable[[int], Any]) -> list[Any]:
        """``fn(start row)`` for every block, in block order, on the thread pool when it pays."""
        starts = list(range(0, len(self.rows), self.block_rows)) or [0]
        with one_blas_thread():
            if self.threads == 1 or len(starts) == 1:
                return [fn(s) for s in starts]
            with ThreadPoolExecutor(min(self.threads, len(starts))) as pool:
                return list(pool.map(fn, starts))

    def _map(self, fn: Callable[[F64], Any]) -> list[Any]:
        """``fn`` over every block of rows, in block order."""
        return self._run(lambda start: fn(self.rows[start:start + self.block_rows]))

    def map_reduce(self, fn: Callable[[F64], S]) -> S:
        """Apply ``fn`` to every block and add the results in block order.

        Args:
            fn: block -> partial result.

        Returns:
            The sum of the partial results.
        """
        parts: list[S] = self._map(fn)
        return add_in_order(parts)

    def map_blocks(self, fn: Callable[[F64], F64]) -> LocalBlocks:
        """Apply ``fn`` to every block and keep the results as new rows.

        Args:
            fn: block -> new block of the same shape.

        Returns:
            The new rows, blocked like these.
        """
        out = np.empty(self.rows.shape, dtype=np.float64)

        def fill(start: int) -> None:
            out[start:start + self.block_rows] = fn(self.rows[start:start + self.block_rows])

        self._run(fill)
        return LocalBlocks(out, block_rows=self.block_rows, threads=self.threads)

    def map_collect(self, fn: Callable[[F64], tuple[I64, S]]) -> tuple[I64, S]:
        """Apply ``fn`` to every block; concatenate its labels and add its partial results.

        Args:
            fn: block -> (labels of its rows, partial result).

        Returns:
            All labels in row order, and the sum of the partial results.
        """
        parts = self._map(fn)
        return np.concatenate([p[0] for p in parts]), add_in_order([p[1] for p in parts])

    def take(self, index: I64) -> F64:
        """The rows at these indices.

        Args:
            index: global row indices.

        Returns:
            A copy of those rows.
        """
        return np.asarray(self.rows[index], dtype=np.float64)
