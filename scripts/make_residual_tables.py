"""Tabulate the normalised kernel deficit of activations without a closed-form kernel.

Writes ``meanfield/data/residual_kernel_<name>.npz`` (read by meanfield.residual), a
``gaussian.QCTable`` (the table facility's member for one length q over a wide range and the
correlation c).  Every value comes from ``meanfield.gaussian.w_phi`` and ``v_phi``
(gaussian.expect2 splits its outer panels at the inner smoothing scale where q (1 - |c|) >> 1,
so the large-q corner is resolved there); QCTable chooses the grid.  The stored function is

    F(x, t) = G(q, c) / theta,   G = 1 - W_phi(q, q, q c) / V_phi(q) = D / V,

on the uniform grid x = log q in [X0, X0 + NX HX] (step HX) and t in [0, 1] (step 1/NT), where
theta = arccos c = sinh(A t) / S with S = sqrt(1 + q) and A = asinh(pi S) (see QCTable).
D = V - W is the per-layer growth of the squared distance of two inputs in a residual network
(MATH.md section 2.3).

Usage:  python scripts/make_residual_tables.py [tanh ...] [--processes N]
About 20 CPU-minutes per activation.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial
from multiprocessing import Pool
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from meanfield import gaussian  # noqa: E402
from meanfield.activations import get_activation  # noqa: E402


def distance_kernel(name: str, q: float, xc: np.ndarray) -> np.ndarray:
    """G(q, c) = 1 - W_phi(q, q, q c) / V_phi(q) at 1 - c = xc."""
    act = get_activation(name)
    return 1.0 - gaussian.w_phi(act, q, q, 1.0 - xc) / float(gaussian.v_phi(act, q))


def build(name: str, processes: int) -> Path:
    out = ROOT / "meanfield" / "data" / f"residual_kernel_{name}.npz"
    t0 = time.time()
    with Pool(processes) as pool:
        table = gaussian.QCTable.build(partial(distance_kernel, name),
                                       map_rows=partial(pool.map, chunksize=1))
    tmp = out.with_name(out.stem + ".tmp.npz")
    table.save(tmp, activation=name, source="meanfield.gaussian.w_phi / gaussian.v_phi")
    os.replace(tmp, out)
    print(f"{name}: {table.F.shape} in {time.time() - t0:.0f} s -> {out.relative_to(ROOT)}")
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", default=["tanh"])
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    a = ap.parse_args()
    for n in a.names:
        build(n, a.processes)
