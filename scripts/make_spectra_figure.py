"""Regenerate figures/jacobian_spectra.png: Jacobian spectra of deep tanh and relu networks.

For depths 1, 4, 16, 64 and 256, Gaussian and orthogonal weights, the free-probability density
of the eigenvalues of J J^T (meanfield.spectra, MATH.md 6.2; drawn as the density of
log10 lambda) over histograms of the same eigenvalues of random numpy networks of width
``--width`` (default 400, ``--nets`` networks each; one run of 256 layers per network gives every
depth).  tanh sits on the edge of chaos at small q* (sigma_b2 = 2.01e-5, MATH.md 6.2's
isometry example), relu at He (2, 0).  At width 400 the deepest nets (L / N ~ 0.6) are no longer
in the infinite-width regime; the histograms show by how much.

    python scripts/make_spectra_figure.py [--width 400] [--nets 3] [--out figures/jacobian_spectra.png]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from meanfield import spectra as sp
from meanfield._io import atomic_savefig
from meanfield.fixed_points import edge_of_chaos
from meanfield.plot import _plt, plot_jacobian_spectrum

DEPTHS = (1, 4, 16, 64, 256)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=400)
    ap.add_argument("--nets", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "figures" / "jacobian_spectra.png")
    args = ap.parse_args()

    t0 = time.perf_counter()
    try:  # one BLAS thread: QR and SVD of small matrices gain nothing from more on a busy machine
        from threadpoolctl import threadpool_limits
        limit = threadpool_limits(1)
    except ImportError:  # pragma: no cover
        limit = None
    sb_tanh = 2.01e-5
    nets = {"tanh": (float(edge_of_chaos("tanh", sb_tanh).sigma_w2), sb_tanh), "relu": (2.0, 0.0)}
    plt = _plt()
    fig, axes = plt.subplots(2, 2, figsize=(12.0, 9.0), dpi=120)
    colors = plt.cm.viridis(np.linspace(0.0, 0.9, len(DEPTHS)))
    for i, (act, (sw, sb)) in enumerate(nets.items()):
        for j, weights in enumerate(sp.WEIGHTS):
            ax = axes[i, j]
            eig = sp.sample_eigenvalues(act, sw, sb, max(DEPTHS), weights=weights, width=args.width,
                                        n_nets=args.nets, depths=DEPTHS, seed=args.seed + 10 * i + j)
            ax.set_title(f"{act} ($\\sigma_w^2$={sw:.4g}, $\\sigma_b^2$={sb:g}), {weights} weights", fontsize=10)
            peaks = []
            for L, c in zip(DEPTHS, colors):
                spec = sp.jacobian_spectrum(act, sw, sb, L, weights)
                lines = len(ax.lines)
                plot_jacobian_spectrum(spec, ax, samples=eig[L], label=f"L={L} (var {spec.variance:.3g})",
                                       color=c, bins=50)
                peaks.append(max([float(np.max(ln.get_ydata())) for ln in ax.lines[lines:]] + [0.0]))
                print(f"{act:5s} {weights:10s} L={L:3d}: variance {spec.variance:.4g} (sampled "
                      f"{np.var(eig[L]):.4g}), edge {spec.edge:.4g}, {time.perf_counter() - t0:.0f}s", flush=True)
            ax.legend(fontsize=7, loc="upper left", title="theory (shaded: sampled)", title_fontsize=7)
            if act == "tanh" and weights == "orthogonal":  # L = 1 is a narrow peak: clip it, keep the rest
                ax.set_ylim(0, 1.25 * peaks[1])
                ax.text(0.02, 0.55, f"L=1 peak ({peaks[0]:.0f}) clipped", transform=ax.transAxes, ha="left",
                        va="top", fontsize=7)
            else:
                ax.set_ylim(bottom=0)
    fig.suptitle(f"Eigenvalues of $JJ^\\top$ at the edge of chaos: free probability (lines) vs width-{args.width} "
                 f"networks ({args.nets} per panel, shaded); zero eigenvalues (relu: mass 1/2) not drawn",
                 fontsize=11)
    fig.tight_layout()
    atomic_savefig(fig, args.out)
    if limit is not None:
        limit.unregister()
    print(f"wrote {args.out} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
