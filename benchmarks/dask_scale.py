"""Opt-in: the Dask engine at 10 million users, beside the local engine at 1 million.

Run with ``python -m benchmarks --only dask_scale`` (not part of the default
run: it needs the ``dask`` extra, ~1.5 GB of scratch disk and several minutes).
``EDGEPERSONA_DASK_USERS`` overrides the Dask size (default 10,000,000; quick
runs use 200,000).

* Data: users x 16 features of the benchmark spec (``user_rows``, 8 archetypes),
  written as a partitioned Parquet feature table, 1,000,000 rows per file.
* Dask: a local ``dask.distributed`` cluster of 2 worker processes, 1 thread
  each, ``WORKER_MEMORY`` per worker. Timed separately: reading the partitioned
  table into the workers (``read_table_rows``: the local engine's table reader
  per file) and ``PersonaKMeans(n_clusters=8, n_init=1, stability_rounds=0)``
  on the Dask engine (as the trainer suite's like-for-like fit).
* Local: the same fit on 1,000,000 rows in a fresh process (numpy engine, its
  default threads), for the side-by-side figure.
* Memory: each worker process's peak resident set over the whole job
  (``ru_maxrss``, read by ``client.run``: it includes reading the files) and
  its resident set once the rows are loaded; the client's and the local
  child's resident set sampled every 10 ms during the fit.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import time
from pathlib import Path
from typing import Any

from ._fixtures import K, spec16, user_rows
from ._measure import RunConfig, SuiteResult

__all__ = ["run"]

FILE_ROWS = 1_000_000  # rows per Parquet file
WORKER_MEMORY = "6GiB"  # memory limit per Dask worker
LOCAL_USERS = 1_000_000


def _peak_rss_mib() -> float:
    """Peak resident set of this process, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _write_table(folder: Path, users: int, seed: int) -> int:
    """The feature table as Parquet files of FILE_ROWS rows; returns the file count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    spec = spec16()
    folder.mkdir(parents=True, exist_ok=True)
    files = 0
    for start in range(0, users, FILE_ROWS):
        rows = user_rows(spec, min(FILE_ROWS, users - start), seed + start)
        table = pa.table({name: rows[:, j] for j, name in enumerate(spec.names)})
        pq.write_table(table, folder / f"part-{files:04d}.parquet")
        files += 1
    return files


def _fit(data: Any, seed: int) -> Any:
    """The trainer suite's like-for-like fit."""
    from edgepersona.trainer.engines.kmeans import PersonaKMeans

    return PersonaKMeans(spec=spec16(), n_clusters=K, n_init=1, stability_rounds=0,
                         random_state=seed).fit(data)


def _rss_mib() -> float:
    """Current resident set of this process, MiB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class _RssPeak:
    """Highest resident set seen by a sampling thread while the block runs (10 ms period)."""

    def __enter__(self) -> _RssPeak:
        import threading

        self.peak, self._stop = _rss_mib(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, _rss_mib())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _local_child(users: int, seed: int, out: Any) -> None:
    """In a fresh process: build rows, fit locally (after a warm-up), report seconds and memory."""
    _fit(user_rows(spec16(), 2_000, seed), seed)  # imports and thread pools, not timed
    rows = user_rows(spec16(), users, seed)
    before = _rss_mib()
    started = time.perf_counter()
    with _RssPeak() as peak:
        _fit(rows, seed)
    out.put((time.perf_counter() - started, before, peak.peak))


def _local_reference(users: int, seed: int) -> tuple[float, float, float]:
    """(fit seconds, resident MiB with the rows before the fit, peak MiB during it), in a child."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_local_child, args=(users, seed, queue))
    child.start()
    result: tuple[float, float, float] = queue.get()
    child.join()
    return result


def _dask_run(folder: Path, seed: int) -> dict[str, Any]:
    """Read the partitioned table on a 2-worker cluster and fit; times and worker peaks."""
    from edgepersona.trainer.data.dask_features import read_table_rows
    from edgepersona.trainer.engines.dask_engine import dask_client

    with dask_client(workers=2, threads_per_worker=1, memory_limit=WORKER_MEMORY) as client:
        _fit(user_rows(spec16(), 2_000, seed), seed)  # imports on the client, not timed
        started = time.perf_counter()
        read = read_table_rows(folder, spec16())
        read_s = time.perf_counter() - started
        held = client.run(_rss_mib)
        started = time.perf_counter()
        with _RssPeak() as client_peak:
            model = _fit(read.rows, seed)
        fit_s = time.perf_counter() - started
        peaks = client.run(_peak_rss_mib)
        chunks = len(read.rows.block_sizes)
    return {"read_s": read_s, "fit_s": fit_s, "users": read.users, "k": model.k_,
            "worker_peak_mib": sorted(round(v, 1) for v in peaks.values()), "chunks": chunks,
            "worker_rows_mib": sorted(round(v, 1) for v in held.values()),
            "client_peak_mib": round(client_peak.peak, 1)}


def run(cfg: RunConfig) -> SuiteResult:
    """Time the Dask engine at scale and the local engine at 1e6; record memory peaks."""
    result = SuiteResult("dask_scale")
    users = int(os.environ.get("EDGEPERSONA_DASK_USERS", cfg.pick(200_000, 10_000_000)))
    local_users = cfg.pick(100_000, LOCAL_USERS)
    folder = cfg.scratch / "dask_scale_table"
    started = time.perf_counter()
    files = _write_table(folder, users, cfg.seed)
    result.figures["write_parquet_s"] = round(time.perf_counter() - started, 1)
    dask = _dask_run(folder, cfg.seed)
    local_s, local_before, local_peak = _local_reference(local_users, cfg.seed)
    result.add(f"dask.read.{users}", [int(dask["read_s"] * 1e9)],
               f"read {files} Parquet files ({users:,} users x 16) into 2 workers")
    result.add(f"dask.fit.{users}", [int(dask["fit_s"] * 1e9)],
               f"PersonaKMeans k={K}, n_init=1 on the Dask engine, {users:,} users")
    result.add(f"local.fit.{local_users}", [int(local_s * 1e9)],
               f"PersonaKMeans k={K}, n_init=1 on the local engine, {local_users:,} users")
    result.figures.update({
        "users_dask": users, "users_local": local_users, "parquet_files": files,
        "dask_chunks": dask["chunks"], "dask_workers": 2, "worker_memory_limit": WORKER_MEMORY,
        "dask_worker_peak_rss_mib": dask["worker_peak_mib"],
        "dask_worker_rss_mib_holding_rows": dask["worker_rows_mib"],
        "dask_client_peak_rss_mib_during_fit": dask["client_peak_mib"],
        "local_peak_rss_mib_during_fit": round(local_peak, 1),
        "local_rss_mib_holding_rows": round(local_before, 1),
        "dask_fit_s_per_million_users": round(dask["fit_s"] / (users / 1e6), 3),
        "local_fit_s_per_million_users": round(local_s / (local_users / 1e6), 3),
        "raw_rows_mib_dask": round(users * 16 * 8 / 2**20, 1),
    })
    result.notes.append("One sample per measurement (a whole read or fit); the machine's other load"
                        " moves absolute times: compare the per-million-user figures of one run.")
    return result
