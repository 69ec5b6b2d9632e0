"""Utility of DP k-means: k-means cost ratio against the non-private optimum, ours vs diffprivlib.

Data: separated synthetic clusters in [0, 1]^16 (k = 8 centres drawn from
[0.15, 0.85]^16, unequal sizes, Gaussian spread 0.05 or ``--spread``, clipped),
1e4 and 1e5 rows. The optimum is scikit-learn's KMeans (n_init=10) on the
same rows; a ratio of 1.00 means "as good as non-private". Every fit is
seeded; the table shows the median and the worst ratio over ``--runs`` fits.
Ours is (ε, δ)-DP with δ = 1e-6; diffprivlib's KMeans is pure ε-DP.

diffprivlib 0.6.6 needs scikit-learn < 1.9, so it runs in its own venv:

    python3 -m venv /tmp/dpl && /tmp/dpl/bin/pip install "diffprivlib==0.6.6" \\
        "scikit-learn<1.9" numpy
    EDGEPERSONA_DIFFPRIVLIB_PYTHON=/tmp/dpl/bin/python python benchmarks/dp_utility.py

The rows go to it as .npy files in a temporary folder; its centroids come
back as JSON and are scored here with the same cost function.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
from sklearn.cluster import KMeans

from edgepersona.trainer.privacy.dp_kmeans import fit_dp_kmeans

F64 = npt.NDArray[np.float64]
K, D, DELTA = 8, 16, 1e-6
DIFFPRIVLIB = """
import json, sys, warnings
import numpy as np
from diffprivlib.models import KMeans
warnings.simplefilter("ignore")
rows = np.load(sys.argv[1])
epsilons, runs, seed = json.loads(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
bounds = (np.zeros(rows.shape[1]), np.ones(rows.shape[1]))
out = {str(eps): [KMeans(n_clusters=int(sys.argv[6]), epsilon=eps, bounds=bounds,
                         random_state=seed + run).fit(rows).cluster_centers_.tolist()
                  for run in range(runs)] for eps in epsilons}
with open(sys.argv[2], "w") as handle:
    json.dump(out, handle)
"""


def separated_clusters(n: int, seed: int, spread: float = 0.05) -> F64:
    """The benchmark data (the same generator as tests/trainer/test_dp.py)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0.15, 0.85, size=(K, D))
    weights = rng.uniform(0.5, 1.5, size=K)
    labels = rng.choice(K, size=n, p=weights / weights.sum())
    return np.clip(centres[labels] + rng.normal(0.0, spread, size=(n, D)), 0.0, 1.0)


def cost(rows: F64, centres: F64) -> float:
    """k-means cost: the sum of squared distances to the nearest centre."""
    scores = (centres**2).sum(axis=1)[None, :] - 2.0 * rows @ centres.T
    return float(((rows**2).sum(axis=1) + scores.min(axis=1)).sum())


def diffprivlib_centres(python: str, rows: F64, epsilons: list[float], runs: int, seed: int
                        ) -> dict[str, list[F64]] | None:
    """Fit diffprivlib's KMeans in its own interpreter; None when it fails."""
    with tempfile.TemporaryDirectory() as folder:
        data, out = Path(folder) / "rows.npy", Path(folder) / "centres.json"
        np.save(data, rows)
        result = subprocess.run([python, "-c", DIFFPRIVLIB, str(data), str(out), json.dumps(epsilons),
                                 str(runs), str(seed), str(K)], capture_output=True, text=True,
                                check=False)
        if result.returncode != 0:
            print(f"diffprivlib failed ({python}):\n{result.stderr[-2000:]}", file=sys.stderr)
            return None
        raw = json.loads(out.read_text())
    return {eps: [np.asarray(c, dtype=np.float64) for c in fits] for eps, fits in raw.items()}


def summary(ratios: list[float]) -> str:
    """Median and worst ratio."""
    return f"{np.median(ratios):6.3f} [{max(ratios):6.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--epsilons", type=float, nargs="+", default=[0.1, 0.5, 1.0, 2.0, 5.0, 10.0])
    parser.add_argument("--runs", type=int, default=5, help="seeded fits per cell")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--spread", type=float, default=0.05, help="per-feature std of a cluster")
    parser.add_argument("--diffprivlib-python", default=os.environ.get("EDGEPERSONA_DIFFPRIVLIB_PYTHON"),
                        help="a python with diffprivlib 0.6.6 (default: $EDGEPERSONA_DIFFPRIVLIB_PYTHON)")
    args = parser.parse_args()
    python = args.diffprivlib_python
    print(f"separated clusters: k={K}, d={D}, spread {args.spread:g}, bounds [0, 1];"
          f" ours (ε, δ={DELTA:g})-DP; median [worst] cost ratio over {args.runs} seeded runs")
    if not python:
        print("diffprivlib: not run (set EDGEPERSONA_DIFFPRIVLIB_PYTHON to its venv's python)")
    print(f"{'rows':>8} {'ε':>5} | {'ours':>16} {'s/fit':>6} | {'diffprivlib 0.6.6':>17}")
    for n in args.rows:
        rows = separated_clusters(n, args.seed, args.spread)
        optimum = cost(rows, KMeans(K, n_init=10, random_state=0).fit(rows).cluster_centers_)
        theirs = diffprivlib_centres(python, rows, args.epsilons, args.runs, args.seed) if python else None
        for eps in args.epsilons:
            start = time.perf_counter()
            ours = [cost(rows, fit_dp_kmeans(rows, K, epsilon=eps, delta=DELTA, bounds=(0.0, 1.0),
                                             rng=args.seed * 1000 + run)) / optimum
                    for run in range(args.runs)]
            seconds = (time.perf_counter() - start) / args.runs
            other = summary([cost(rows, c) / optimum for c in theirs[str(eps)]]) if theirs else "—"
            print(f"{n:>8} {eps:>5g} | {summary(ours):>16} {seconds:6.2f} | {other:>17}", flush=True)


if __name__ == "__main__":
    main()
