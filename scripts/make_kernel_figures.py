#!/usr/bin/env python
"""figures/ntk_convergence.png: finite-width NTK against the infinite-width kernel.

    python scripts/make_kernel_figures.py [--out figures/ntk_convergence.png] [--quick]

For 8 inputs on the sphere (d = 32, x.x/d = 1, seed 7) the relative Frobenius error
||Theta_n - Theta|| / ||Theta|| between the empirical NTK of one random numpy network of width n
(meanfield.simulate.empirical_ntk, NTK parametrisation) and meanfield.kernels.kernel, averaged
over independent networks, against n on log-log axes, with the n^(-1/2) guide.  Cases: relu,
erf and tanh MLPs (2 hidden layers + readout) and a relu full residual MLP (one block).  Prints
the errors and the fitted log-log slopes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CASES = [
    ("relu MLP", "mlp", "relu", dict(depth=2, sigma_w2=2.0, sigma_b2=0.1)),
    ("erf MLP", "mlp", "erf", dict(depth=2, sigma_w2=1.5, sigma_b2=0.2)),
    ("tanh MLP", "mlp", "tanh", dict(depth=2, sigma_w2=1.7, sigma_b2=0.05)),
    ("relu ResMLP", "resnet", "relu", dict(depth=1, sigma_w2=1.5, sigma_b2=0.1, sigma_v2=0.5,
                                           sigma_a2=0.05)),
]
WIDTHS = (256, 512, 1024, 2048, 4096)
SEEDS = {256: 16, 512: 12, 1024: 8, 2048: 6, 4096: 4}


def errors(arch, act, kw, X, widths, seeds):
    from meanfield.kernels import kernel
    from meanfield.simulate import empirical_ntk

    K = kernel(arch, act, X, **kw).ntk
    mean, se = [], []
    for n in widths:
        e = [np.linalg.norm(empirical_ntk(arch, act, X, width=n, seed=10_000 * n + s, **kw).ntk - K)
             / np.linalg.norm(K) for s in range(seeds[n])]
        mean.append(np.mean(e))
        se.append(np.std(e, ddof=1) / np.sqrt(len(e)) if len(e) > 1 else 0.0)
    return np.array(mean), np.array(se)


def main() -> None:
    ap = argparse.ArgumentParser(description="finite-width NTK convergence figure")
    ap.add_argument("--out", default=str(ROOT / "figures" / "ntk_convergence.png"))
    ap.add_argument("--quick", action="store_true", help="fewer networks per width")
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from meanfield._io import atomic_savefig, check_output_path
    from meanfield.simulate import inputs_on_sphere

    out = check_output_path(args.out)
    seeds = {n: max(1, k // 3) for n, k in SEEDS.items()} if args.quick else SEEDS
    X = inputs_on_sphere(8, 32, seed=7)
    widths = np.array(WIDTHS)
    fig, ax = plt.subplots(figsize=(6.4, 4.6), dpi=150)
    markers = ["o", "s", "^", "D"]
    print(f"{'case':12s} " + " ".join(f"{n:>8d}" for n in WIDTHS) + "   slope")
    mids = []
    for (label, arch, act, kw), mk in zip(CASES, markers):
        t = time.perf_counter()
        m, se = errors(arch, act, kw, X, WIDTHS, seeds)
        slope = np.polyfit(np.log(widths), np.log(m), 1)[0]
        print(f"{label:12s} " + " ".join(f"{v:8.4f}" for v in m) + f"   {slope:+.3f}"
              f"   ({time.perf_counter() - t:.0f} s)", flush=True)
        ax.errorbar(widths, m, yerr=se, marker=mk, ms=5, capsize=2, lw=1.3,
                    label=f"{label} (slope {slope:+.2f})")
        mids.append(m[2])
    # the guide passes through the cases' geometric mean at n = 1024
    guide = float(np.exp(np.mean(np.log(mids)))) * np.sqrt(widths[2] / widths)
    ax.plot(widths, guide, "k--", lw=1, label=r"$\propto n^{-1/2}$")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(widths)
    ax.set_xticklabels([str(n) for n in widths])
    ax.set_xlabel("width n")
    ax.set_ylabel(r"relative error $\|\Theta_n-\Theta_\infty\|_F\,/\,\|\Theta_\infty\|_F$")
    ax.set_title("Empirical NTK of one random network vs. the infinite-width NTK\n"
                 "(8 inputs on the sphere, d = 32; mean and s.e. over networks)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    atomic_savefig(fig, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
