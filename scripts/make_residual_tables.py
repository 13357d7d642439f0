"""Tabulate the normalised kernel deficit of activations without a closed-form kernel.

Writes ``meanfield/data/residual_kernel_<name>.npz`` (read by meanfield.residual).  Every value
comes from ``meanfield.gaussian.w_phi`` and ``v_phi`` (gaussian.expect2 splits its outer panels
at the inner smoothing scale where q (1 - |c|) >> 1, so the large-q corner is resolved there);
this script only chooses the grid.  The stored function is

    F(x, t) = G(q, c) / theta,   G = 1 - W_phi(q, q, q c) / V_phi(q) = D / V,

on the uniform grid x = log q in [X0, X0 + NX HX] (step HX) and t in [0, 1] (step 1/NT), where
theta = arccos c = sinh(A t) / S with S = sqrt(1 + q) and A = asinh(pi S).  The stretch puts
grid points both in the boundary layer theta ~ q^(-1/2), where a bounded activation's kernel
turns from quadratic to linear in theta, and in the bulk.  D = V - W is the per-layer growth
of the squared distance of two inputs in a residual network (MATH.md section 2.3).

Usage:  python scripts/make_residual_tables.py [tanh ...] [--processes N]
About 20 CPU-minutes per activation.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from meanfield.activations import get_activation  # noqa: E402
from meanfield import gaussian  # noqa: E402
from meanfield.residual import TABLE_GRID, table_theta  # noqa: E402


def _row(args):
    name, x = args
    act = get_activation(name)
    q = float(np.exp(x))
    t = np.linspace(0.0, 1.0, TABLE_GRID["nt"] + 1)
    theta = table_theta(t, q)
    xc = 2.0 * np.sin(0.5 * theta) ** 2  # 1 - cos(theta) without cancellation
    xc[-1] = 2.0
    v = float(gaussian.v_phi(act, q))
    w = gaussian.w_phi(act, q, q, 1.0 - xc)
    g = 1.0 - w / v
    f = np.zeros_like(g)
    f[1:] = g[1:] / theta[1:]
    return f


def build(name: str, processes: int) -> Path:
    g = TABLE_GRID
    xs = g["x0"] + g["hx"] * np.arange(g["nx"] + 1)
    out = ROOT / "meanfield" / "data" / f"residual_kernel_{name}.npz"
    t0 = time.time()
    with Pool(processes) as pool:
        rows = pool.map(_row, [(name, float(x)) for x in xs[::-1]], chunksize=1)
    table = np.array(rows[::-1])
    tmp = out.with_name(out.stem + ".tmp.npz")
    np.savez_compressed(tmp, F=table, x0=g["x0"], hx=g["hx"], nx=g["nx"], nt=g["nt"],
                        activation=name,
                        source="meanfield.gaussian.w_phi / gaussian.v_phi")
    os.replace(tmp, out)
    print(f"{name}: {table.shape} in {time.time() - t0:.0f} s -> {out.relative_to(ROOT)}")
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", default=["tanh"])
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    a = ap.parse_args()
    for n in a.names:
        build(n, a.processes)
