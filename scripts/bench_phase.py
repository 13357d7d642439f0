"""Benchmark: `meanfield phase-diagram --grid 256` as a user runs it, against a naive loop.

For tanh, gelu and selu, times the command itself (a fresh process each run: import, q* and
chi_1 on the 256 x 256 grid, the chaotic phase's c* and xi_c, the edge-of-chaos curve, the plot,
the PNG and the .npz written), median of --runs, wall and CPU.  In the same run it times a naive
per-point loop (scipy.integrate.quad for V and chi_1, brentq for q*; in the chaotic phase brentq
on the C-map with dblquad for W and dblquad for chi_c) on a few grid points, weights the chaotic
points by their share of the grid, and prints the per-point ratio.  Goals (issue 10): < 1.5 s
end to end, >= 1000x per point; `import meanfield.cli` < 0.3 s.

    python scripts/bench_phase.py [--runs 3] [--naive-points 4]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from scipy import integrate, optimize

from meanfield.activations import get_activation

GRID = 256


def _pdf(z):
    return np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)


def naive_point(act, sw: float, sb: float) -> tuple[float, float | None]:
    """Textbook per-point solve: chi_1 and, in the chaotic phase, c*."""
    def V(q):
        return integrate.quad(lambda z: act.fn(np.sqrt(q) * z) ** 2 * _pdf(z), -np.inf, np.inf)[0]

    q = optimize.brentq(lambda q: sw * V(q) + sb - q, 1e-12, 1e4)
    chi1 = sw * integrate.quad(lambda z: act.d1(np.sqrt(q) * z) ** 2 * _pdf(z), -np.inf, np.inf)[0]
    if chi1 <= 1:
        return chi1, None
    s = np.sqrt(q)

    def W(c, f):
        sc = np.sqrt(1 - c * c)
        return integrate.dblquad(lambda z2, z1: f(s * z1) * f(s * (c * z1 + sc * z2)) * _pdf(z1) * _pdf(z2),
                                 -10, 10, -10, 10, epsabs=1e-10)[0]

    c = optimize.brentq(lambda c: (sw * W(c, act.fn) + sb) / q - c, 0.0, 1 - 1e-6, xtol=1e-10)
    W(c, act.d1)  # chi_c, as the command computes it
    return chi1, c


def time_command(name: str, runs: int) -> tuple[float, float]:
    """Median wall and CPU seconds of the command in a fresh process (files written)."""
    walls, cpus = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(runs):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "meanfield.cli", "phase-diagram", "-a", name, "--grid", str(GRID),
                            "--out", os.path.join(tmp, "p.png"), "--data", os.path.join(tmp, "p.npz"), "--quiet"],
                           check=True, capture_output=True)
            walls.append(time.perf_counter() - t0)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
            assert os.path.getsize(os.path.join(tmp, "p.png")) > 0 and os.path.getsize(os.path.join(tmp, "p.npz")) > 0
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--naive-points", type=int, default=4)
    args = ap.parse_args()
    from meanfield.fixed_points import solve_grid

    n = GRID
    sw, sb = np.meshgrid(np.linspace(5.0 / (2 * n), 5.0, n), np.linspace(0.0, 2.0, n))
    rows = []
    for name in ("tanh", "gelu", "selu"):
        act = get_activation(name)
        wall, cpu = time_command(name, args.runs)
        g = solve_grid(act, sw, sb)
        ok = np.isfinite(g.chi_1)
        chaotic = ok & (g.chi_1 > 1 + 1e-6)
        ordered = ok & ~chaotic
        rng = np.random.default_rng(0)
        times = {}
        for label, mask in (("ordered", ordered), ("chaotic", chaotic)):
            idx = np.flatnonzero(mask.ravel())
            if idx.size == 0:
                times[label] = 0.0
                continue
            pick = rng.choice(idx, min(args.naive_points, idx.size), replace=False)
            t0 = time.perf_counter()
            for i in pick:
                naive_point(act, float(sw.ravel()[i]), float(sb.ravel()[i]))
            times[label] = (time.perf_counter() - t0) / pick.size
        frac = chaotic.mean()
        naive_pp = (1 - frac) * times["ordered"] + frac * times["chaotic"]
        ours_pp = wall / sw.size
        rows.append((name, wall, cpu, frac, times["ordered"], times["chaotic"], naive_pp / ours_pp))
    print(f"`meanfield phase-diagram --grid {GRID} --out p.png --data p.npz`, median of {args.runs} fresh processes")
    print(f"{'act':6s} {'wall s':>8s} {'cpu s':>8s} {'chaotic':>8s} {'naive ms/pt (ord, chaos)':>26s} {'ratio/pt':>10s}")
    for name, wall, cpu, frac, to, tc, ratio in rows:
        print(f"{name:6s} {wall:8.2f} {cpu:8.2f} {frac:8.1%} {to * 1e3:12.1f} {tc * 1e3:12.1f} {ratio:10,.0f}x")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import meanfield.cli"], check=True)
    print(f"python -c 'import meanfield.cli': {time.perf_counter() - t0:.2f} s (interpreter start included)")


if __name__ == "__main__":
    main()
