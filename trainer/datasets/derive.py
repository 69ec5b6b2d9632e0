"""How the bundled retail event log was derived from the UCI Online Retail data set.

Reproduce with ``python -m edgepersona.trainer.datasets.derive SOURCE.csv.gz OUT.csv.gz``.
Each invoice line of a known customer becomes one event: ``purchase`` (or
``return`` for a cancelled invoice, prefix ``C``) with the line amount
``|quantity x unit price|`` as its value, the invoice and the product as
properties. A seeded random subset of customers keeps the file small.
"""

from __future__ import annotations

import csv
import gzip
import random
import sys
from pathlib import Path

__all__ = ["derive"]

SEED = 20111209
CUSTOMERS = 1500


def derive(source: Path, out: Path, customers: int = CUSTOMERS, seed: int = SEED) -> int:
    """Write the derived event log.

    Args:
        source: the original ``onlineretail_derived.csv.gz``.
        out: where to write the event log (gzip CSV).
        customers: how many customers to keep.
        seed: the sampling seed.

    Returns:
        The number of events written.
    """
    with gzip.open(source, "rt", newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["CustomerID"]]
    ids = sorted({r["CustomerID"] for r in rows})
    keep = set(random.Random(seed).sample(ids, min(customers, len(ids))))  # noqa: S311 - reproducible sample, not crypto
    written = 0
    with gzip.open(out, "wt", newline="", encoding="utf-8", compresslevel=9) as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_id", "timestamp", "event", "value", "invoice", "product"])
        for r in rows:
            if r["CustomerID"] not in keep:
                continue
            amount = abs(float(r["Quantity"]) * float(r["UnitPrice"]))
            event = "return" if r["InvoiceNo"].startswith("C") else "purchase"
            stamp = r["InvoiceDate"].replace(" ", "T")
            writer.writerow([str(int(float(r["CustomerID"]))), stamp, event, f"{amount:.2f}",
                             r["InvoiceNo"], r["StockCode"]])
            written += 1
    return written


if __name__ == "__main__":
    print(derive(Path(sys.argv[1]), Path(sys.argv[2])))
