"""A second real event log for the dynamic-persona benchmarks: other customers of the same shop.

``python -m benchmarks.second_log SOURCE.csv.gz`` rewrites
``benchmarks/data/retail_events_b.csv.gz`` from the UCI Online Retail
transaction log (CC BY 4.0: Chen, Sain and Guo 2012, UCI #352): 1,500
customers drawn with a fixed seed from those **not** in the bundled retail log,
one event per invoice line in the bundled log's format (``purchase``, or
``return`` for a cancelled invoice, valued at ``|quantity x unit price|``).
The file ships with the project so the benchmark runs on a fresh machine.
"""

from __future__ import annotations

import csv
import gzip
import random
import sys
from pathlib import Path

from edgepersona.trainer.data.events import read_event_log

__all__ = ["SECOND_LOG", "derive_second_log"]

SECOND_LOG = Path(__file__).resolve().parent / "data" / "retail_events_b.csv.gz"
BUNDLED = Path(__file__).resolve().parents[1] / "trainer" / "datasets" / "retail_events.csv.gz"
SEED = 20_111_210
CUSTOMERS = 1_500


def derive_second_log(source: Path, out: Path = SECOND_LOG, customers: int = CUSTOMERS) -> int:
    """Write the second log.

    Args:
        source: the original transaction log (gzip CSV).
        out: where to write the event log.
        customers: how many customers to keep.

    Returns:
        The number of events written.
    """
    taken = set(read_event_log(BUNDLED).user_keys)
    with gzip.open(source, "rt", newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["CustomerID"]]
    ids = sorted({str(int(float(r["CustomerID"]))) for r in rows} - taken)
    keep = set(random.Random(SEED).sample(ids, min(customers, len(ids))))
    out.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with gzip.open(out, "wt", newline="", encoding="utf-8", compresslevel=9) as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_id", "timestamp", "event", "value", "invoice", "product"])
        for r in rows:
            user = str(int(float(r["CustomerID"])))
            if user in keep:
                event = "return" if r["InvoiceNo"].startswith("C") else "purchase"
                writer.writerow([user, r["InvoiceDate"].replace(" ", "T"), event,
                                 f"{abs(float(r['Quantity']) * float(r['UnitPrice'])):.2f}",
                                 r["InvoiceNo"], r["StockCode"]])
                written += 1
    return written


if __name__ == "__main__":
    print(derive_second_log(Path(sys.argv[1])))
