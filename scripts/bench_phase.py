"""Benchmark: chi_1 with q* solved per point over a 256 x 256 (sigma_w2, sigma_b2) grid.

Compares, in the same process, meanfield's vectorised solver with a naive per-point loop
(scipy.integrate.quad inside a fixed-point iteration) on a small grid, and prints the per-point
ratio.  Goals (issue 2 section 7): >= 1000x faster per point; the 256^2 grid under 1.5 s on
2 cores; `meanfield advise` cold start under 0.5 s (measured here as `import meanfield.cli`).

    python scripts/bench_phase.py
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
from scipy import integrate, optimize

from meanfield import gaussian
from meanfield.activations import get_activation
from meanfield.fixed_points import solve_grid


def naive_chi1(act, sw: float, sb: float) -> float:
    """Textbook implementation: quad for V(q), brentq for q*, quad for chi_1."""
    pdf = lambda z: np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)  # noqa: E731

    def V(q):
        return integrate.quad(lambda z: act.fn(np.sqrt(q) * z) ** 2 * pdf(z), -np.inf, np.inf)[0]

    q = optimize.brentq(lambda q: sw * V(q) + sb - q, 1e-12, 1e3)
    return sw * integrate.quad(lambda z: act.d1(np.sqrt(q) * z) ** 2 * pdf(z), -np.inf, np.inf)[0]


def main() -> None:
    n = 256
    sw, sb = np.meshgrid(np.linspace(0.05, 5.0, n), np.linspace(0.01, 2.0, n))
    for name in ("tanh", "gelu"):
        act = get_activation(name)
        gaussian._table.cache_clear()
        t0 = time.perf_counter()
        res = solve_grid(act, sw, sb)
        t_cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = solve_grid(act, sw, sb)
        t_warm = time.perf_counter() - t0
        ok = np.isfinite(res.chi_1)
        # naive loop on a small grid of points that have a fixed point
        idx = np.flatnonzero(ok.ravel())[:: max(1, ok.sum() // 12)][:12]
        t0 = time.perf_counter()
        naive = np.array([naive_chi1(act, sw.ravel()[i], sb.ravel()[i]) for i in idx])
        t_naive = (time.perf_counter() - t0) / idx.size
        ours = res.chi_1.ravel()[idx]
        err = np.max(np.abs(naive - ours) / np.abs(naive))
        per_point = t_cold / sw.size
        print(f"{name:5s} 256x256 grid: {t_cold:.3f} s cold (incl. one-off table), {t_warm:.3f} s warm; "
              f"{ok.mean():.0%} of points have q*")
        print(f"      naive quad loop: {t_naive * 1e3:.1f} ms/point; ours {per_point * 1e6:.2f} us/point "
              f"(cold) -> ratio {t_naive / per_point:,.0f}x; max rel. diff vs naive {err:.1e}")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import meanfield.cli"], check=True)
    t_imp = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "meanfield.cli", "advise", "-a", "relu", "--depth", "50", "--json"],
                   check=True, capture_output=True)
    t_adv = time.perf_counter() - t0
    print(f"cold start: python -c 'import meanfield.cli' {t_imp:.2f} s; "
          f"`meanfield advise -a relu --depth 50` {t_adv:.2f} s")


if __name__ == "__main__":
    main()
