"""What forgetting one subject costs on a gateway's encrypted store.

``EncryptedStore.forget`` rotates the master key (rewrapping every subject's
data key) and then scrubs the file (``VACUUM`` and a WAL truncation), so it
costs O(store), not O(subject). Measured on a store of many subjects with a
2 KB record each (the gateway suite's bytes per subject), in interleaved rounds:

* ``forget``: add one subject, then time ``forget`` of it;
* ``rewrite_all`` (the peer): one ``put_many`` that rewrites every subject's
  record, i.e. the same bytes written in one transaction;
* ``scrub``: ``EncryptedStore.scrub`` alone (the file rewrite that forget ends with).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from edgepersona.sdk import EncryptedStore, FileKeyProvider

from ._measure import RunConfig, SuiteResult

__all__ = ["run"]

RECORD_BYTES = 2_048  # bytes per subject, as the gateway suite stores


def _timed(call: Callable[[], object]) -> int:
    """Nanoseconds of one call (each call here takes milliseconds: no loop needed)."""
    started = time.perf_counter_ns()
    call()
    return time.perf_counter_ns() - started


def run(cfg: RunConfig) -> SuiteResult:
    """Fill a store, then time forget, its peer and the scrub alone in interleaved rounds."""
    result = SuiteResult("forget")
    subjects, rounds = cfg.pick(200, 2_000), cfg.pick(5, 21)
    path = cfg.scratch / "forget.db"
    samples: dict[str, list[int]] = {"forget": [], "rewrite_all": [], "scrub": []}
    with EncryptedStore.open(path, FileKeyProvider(cfg.scratch / "forget.key")) as store:
        records = [(f"subject-{i}", "fold_state", os.urandom(RECORD_BYTES)) for i in range(subjects)]
        store.put_many(records)
        for index in range(rounds):
            store.put("leaving", "fold_state", os.urandom(RECORD_BYTES))
            samples["forget"].append(_timed(lambda: store.forget("leaving")))
            samples["rewrite_all"].append(_timed(lambda: store.put_many(records)))
            samples["scrub"].append(_timed(store.scrub))
            if index == 0:  # the first round warms the page cache
                for values in samples.values():
                    values.clear()
        size = path.stat().st_size
    result.add("forget", samples["forget"], f"forget one subject of {subjects:,} (2 KB each)")
    result.add("rewrite_all", samples["rewrite_all"], f"put_many rewriting all {subjects:,} records")
    result.add("scrub", samples["scrub"], "scrub() alone: VACUUM and WAL truncation")
    result.figures.update({
        "subjects": subjects, "store_bytes": size,
        "forget_over_rewrite_all": round(result.ratio("forget", "rewrite_all"), 3),
        "scrub_share_of_forget": round(result.ratio("scrub", "forget"), 3),
    })
    result.notes.append("forget is O(store): it rewraps every subject key and rewrites the file so"
                        " no page of the subject is left; batch forgets where many are due.")
    return result
