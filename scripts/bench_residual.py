"""Benchmark of meanfield.residual.iterate_residual: 10^6 layers against the naive loop.

The naive loop is the same recursion evaluated layer by layer (``method="sequential"``, the
reference the collocation is tested against); it is timed on a few thousand layers and its
per-layer cost extrapolated to 10^6.  Wall and CPU time are both printed: on a shared machine
the wall time includes waiting for a core.

Usage:  python scripts/bench_residual.py [--depth 1000000] [--naive 2000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from meanfield.residual import iterate_residual  # noqa: E402

CASES = [
    ("tanh", dict(sigma_w2=1.0, sigma_b2=0.0)),
    ("tanh", dict(sigma_w2=0.5, sigma_b2=0.1, sigma_a2=0.5)),
    ("relu", dict(sigma_w2=0.5, sigma_b2=0.0)),
    ("alpha_relu:0.75", dict(sigma_w2=1.0, sigma_b2=0.0)),
]


def timed(fn, repeat: int = 3):
    best_w = best_c = float("inf")
    out = None
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        best_w = min(best_w, time.perf_counter() - w)
        best_c = min(best_c, time.process_time() - c)
    return out, best_w, best_c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, default=10 ** 6)
    ap.add_argument("--naive", type=int, default=2000, help="layers of the naive loop to time")
    a = ap.parse_args()
    L, N = a.depth, a.naive
    print(f"{'activation':<16}{'params':<36}{'every':>7}{'wall s':>9}{'cpu s':>8}"
          f"{'naive s (extrap.)':>19}{'ratio':>8}{'max rel diff':>14}")
    for act, kw in CASES:
        iterate_residual("resnet-full", act, depth=200, **kw)  # warm caches (tables, imports)
        naive, nw, nc = timed(lambda: iterate_residual("resnet-full", act, depth=N,
                                                       method="sequential", **kw), repeat=1)
        fast_n = iterate_residual("resnet-full", act, depth=N, **kw)
        diff = max(float(np.nanmax(np.abs(fast_n.log_p - naive.log_p))),
                   float(np.nanmax(np.abs(fast_n.one_minus_e - naive.one_minus_e)
                                   / naive.one_minus_e)),
                   float(np.nanmax(np.abs(fast_n.log_chi - naive.log_chi)
                                   / np.maximum(naive.log_chi, 1.0))))
        per_layer = nc / N
        params = ", ".join(f"{k}={v:g}" for k, v in kw.items())
        for every in (1000, 1):
            _, w, c = timed(lambda: iterate_residual("resnet-full", act, depth=L, every=every,
                                                     **kw), repeat=3 if every > 1 else 1)
            print(f"{act:<16}{params:<36}{every:>7}{w:>9.3f}{c:>8.3f}{per_layer * L:>19.1f}"
                  f"{per_layer * L / c:>8.0f}{diff:>14.1e}")


if __name__ == "__main__":
    main()
