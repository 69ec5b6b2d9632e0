"""The interface between the Lloyd core and the engines that hold the rows.

An engine keeps rows in blocks of consecutive rows (numpy views in this
process, :mod:`edgepersona.trainer.engines.local`; dask.array chunks on a
cluster, :mod:`edgepersona.trainer.engines.dask_engine`) and offers the few
operations :class:`~edgepersona.trainer.engines.kmeans.PersonaKMeans` needs: a
map-reduce whose partial results add up (:class:`Summable`), a blockwise map
whose results stay where the blocks are, labels per block, and rows by global
index for seeded samples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, Self, TypeVar

import numpy as np
import numpy.typing as npt

__all__ = ["MapReduce", "RowBlocks", "Summable", "add_in_order", "one_blas_thread"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


class Summable(Protocol):
    """A partial result that adds up across blocks."""

    def __add__(self, other: Self) -> Self: ...


S = TypeVar("S", bound=Summable)


class MapReduce(Protocol):
    """Apply a function to every block of rows and add up the results, in block order."""

    def __call__(self, fn: Callable[[F64], S]) -> S:
        """Sum of ``fn(block)`` over every block."""
        ...


class RowBlocks(Protocol):
    """Rows of floats split into blocks of consecutive rows, wherever they live."""

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns)."""
        ...

    def __len__(self) -> int: ...

    def map_reduce(self, fn: Callable[[F64], S]) -> S:
        """Apply ``fn`` to every block and add the results in block order."""
        ...

    def map_blocks(self, fn: Callable[[F64], F64]) -> RowBlocks:
        """New rows ``fn(block)`` for every block (same number of rows and columns), kept."""
        ...

    def map_collect(self, fn: Callable[[F64], tuple[I64, S]]) -> tuple[I64, S]:
        """Apply ``fn`` to every block; concatenate its labels, add its partial results."""
        ...

    def take(self, index: I64) -> F64:
        """The rows at these global indices, as a local array."""
        ...


_CONTROLLER: list[Any] = []


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run BLAS on one thread: small (rows, d) x (d, k) products lose time to a thread pool."""
    if not _CONTROLLER:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER.append(ThreadpoolController())
    with _CONTROLLER[0].limit(limits=1, user_api="blas"):
        yield


def add_in_order(parts: Sequence[S]) -> S:
    """Sum partial results in the order given (a fixed order keeps results reproducible).

    Args:
        parts: at least one partial result.

    Returns:
        ``parts[0] + parts[1] + ...``.
    """
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total
