"""figures/residual_laws.png: the depth laws of residual networks (MATH.md section 2).

Left 3 x 3 grid: p^l, the cosine's distance to its limit and log(chi^0/chi^L) against depth for
full residual networks with tanh, relu and alpha-ReLU (alpha = 0.75), from the exact
recursion (solid) with the predicted asymptote (dashed).  Right: the predicted gradient
explosion log(chi^0/chi^L) of tanh full resnets over (sigma_w2, depth), with the advised
sigma_w2 for the default budget (exact solve, red), the closed form of MATH.md 2.8 (dashed,
valid when q^L >> 1) and the linear-branch limit sigma_v2 sigma_w2 L = G (dotted, L >> G e^G).

Usage:  python scripts/make_residual_figures.py [--out figures/residual_laws.png]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from meanfield.residual import (  # noqa: E402
    DEFAULT_BUDGET,
    TANH_CHI_CONSTANT,
    _alpha_constants,
    advise_residual,
    iterate_residual,
)

L = 10 ** 6
EVERY = 50
ALPHA = 0.75


def _traj(act, c0=0.5, depth=L, **kw):
    return iterate_residual("resnet-full", act, kw.pop("sigma_w2", 1.0), kw.pop("sigma_b2", 0.0),
                            depth, c0=c0, every=EVERY if depth >= 10 ** 4 else 1, **kw)


def _explosion_vs_depth(T):
    """log(chi^0/chi^l) of the network of depth l, from one run of depth L."""
    return float(T.log_chi[0]) - np.asarray(T.log_chi)


def panels_laws(axes):
    l_all = None
    # ---- tanh (sigma_w2 = sigma_v2 = 1, sigma_a2 = sigma_b2 = 0) ---------------------------
    T = _traj("tanh")
    l = T.layers[1:].astype(float)
    l_all = l
    ax = axes[0][0]
    ax.loglog(l, T.p[1:], label="recursion")
    ax.loglog(l, l, "--", label=r"$p^l \simeq B\,l$")
    ax.set_title("tanh")
    ax.set_ylabel(r"length $p^l$")
    ax = axes[1][0]
    ax.loglog(l, T.e[1:], label=r"$e^l$ ($e^*=0$)")
    mu = 1 - 2 / math.pi
    ax.loglog(l, T.e[-1] * (l / l[-1]) ** (-mu), "--", label=r"$\propto l^{2/\pi-1}$")
    ax.set_ylabel(r"cosine: $|e^l-e^*|$ or $1-e^l$")
    ax = axes[2][0]
    G = _explosion_vs_depth(T)[1:]
    ax.loglog(l, G, label="recursion")
    ax.loglog(l, TANH_CHI_CONSTANT * np.sqrt(l), "--", label=r"$1.0638\sqrt{L}$")
    ax.set_ylabel(r"$\log(\chi^0/\chi^L)$ [nats]")
    # ---- relu (sigma_w2 = 0.5: kappa = 0.25) ----------------------------------------------
    kap = 0.25
    Tr = _traj("relu", sigma_w2=0.5, depth=2000)
    lr = Tr.layers[1:].astype(float)
    ax = axes[0][1]
    ax.loglog(lr, Tr.p[1:], label="recursion")
    ax.loglog(lr, (1 + kap) ** lr, "--", label=r"$(1+\kappa)^l$")
    ax.set_title(r"relu, $\kappa=\sigma_v^2\sigma_w^2/2=0.25$")
    ax = axes[1][1]
    k = kap / (1 + kap) * 2 * math.sqrt(2) / (3 * math.pi)
    Tr2 = _traj("relu", sigma_w2=0.5)
    lr2 = Tr2.layers[1:].astype(float)
    ax.loglog(lr2, Tr2.one_minus_e[1:], label=r"$1-e^l$")
    ax.loglog(lr2, 4 / (k * k * lr2 ** 2), "--", label=r"$4/(k^2l^2)$")
    ax = axes[2][1]
    ax.loglog(lr, _explosion_vs_depth(Tr)[1:], label="recursion")
    ax.loglog(lr, lr * math.log1p(kap), "--", label=r"$L\log(1+\kappa)$ (exact)")
    # ---- alpha-ReLU, alpha = 0.75 ----------------------------------------------------------
    a = ALPHA
    ca, es, jd = _alpha_constants(a)
    A = (1 - a) * ca
    Ta = _traj(f"alpha_relu:{a}")
    la = Ta.layers[1:].astype(float)
    ax = axes[0][2]
    ax.loglog(la, Ta.p[1:], label="recursion")
    ax.loglog(la, (A * la) ** (1 / (1 - a)), "--", label=r"$(A\,l)^{1/(1-\alpha)}$")
    ax.set_title(r"$\alpha$-ReLU, $\alpha=0.75$")
    ax = axes[1][2]
    mu_a = (1 - jd) / (1 - a)
    for c0, lab in ((0.5, r"$c^0=0.5$"), (es + 0.02 * (1 - es), r"$c^0$ near $e^*$")):
        Tc = _traj(f"alpha_relu:{a}", c0=c0)
        d = np.abs(Tc.e[1:] - es)
        ax.loglog(la, d, label=lab)
        ax.loglog(la, d[-1] * (la / la[-1]) ** (-mu_a), "--", color="0.3", lw=0.9)
    ax.plot([], [], "--", color="0.4", label=rf"$\propto l^{{-\mu_\alpha}}$, $\mu_\alpha={mu_a:.4f}$")
    ax = axes[2][2]
    R = a * a / ((1 - a) * (2 * a - 1))
    Ga = _explosion_vs_depth(Ta)[1:]
    ax.loglog(la, Ga, label="recursion")
    ax.loglog(la, Ga[-1] + R * np.log(la / la[-1]), "--", label=rf"$R_\alpha\log L$ + const, $R_\alpha={R:g}$")
    for row in axes:
        for ax in row:
            ax.grid(True, which="major", alpha=0.3)
            ax.legend(fontsize=7, loc="best")
    for ax in axes[2]:
        ax.set_xlabel("depth $l$ (or $L$)")
    return l_all


def panel_map(ax, fig):
    sw2 = np.logspace(-5, 1, 49)
    depths = np.unique(np.round(np.logspace(1, 5, 41)).astype(int))
    Lmax = int(depths[-1])
    Z = np.empty((depths.size, sw2.size))
    for j, s in enumerate(sw2):
        T = iterate_residual("resnet-full", "tanh", float(s), 0.0, Lmax, every=1, cosine=False)
        G = float(T.log_chi[0]) - np.asarray(T.log_chi)
        Z[:, j] = G[depths]
    im = ax.pcolormesh(sw2, depths, np.log10(Z), shading="nearest", cmap="viridis")
    cb = fig.colorbar(im, ax=ax)
    cb.set_label(r"$\log_{10}\log(\chi^0/\chi^L)$")
    cs = ax.contour(sw2, depths, Z, levels=[1, DEFAULT_BUDGET, 30, 100], colors="w",
                    linewidths=1.0, linestyles=":")
    ax.clabel(cs, fmt=lambda v: f"{v:g} nats", fontsize=9, inline=True)
    Ls = np.unique(np.round(np.logspace(1, 5, 9)).astype(int))
    adv = [advise_residual("resnet-full", "tanh", int(Li)).sigma_w2 for Li in Ls]
    ax.plot(adv, Ls, "o-", color="red", lw=1.5, ms=3,
            label=f"advised (budget {DEFAULT_BUDGET:g} nats, exact)")
    asym = (DEFAULT_BUDGET / (TANH_CHI_CONSTANT * np.sqrt(Ls))) ** 2
    ax.plot(asym, Ls, "--", color="orange", lw=1.5,
            label=r"$\sigma_w=G/(1.0638\sqrt{L})$ (asymptotic)")
    ax.plot(DEFAULT_BUDGET / Ls, Ls, ":", color="cyan", lw=1.8,
            label=r"$\sigma_v^2\sigma_w^2 L=G$ (linear branch, $L\gg Ge^G$)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"$\sigma_w^2$ ($\sigma_v^2=1$, $\sigma_a^2=\sigma_b^2=0$)")
    ax.set_ylabel("depth $L$")
    ax.set_title("tanh full resnet: gradient explosion")
    ax.legend(fontsize=7, loc="lower left")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "figures" / "residual_laws.png"))
    a = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.gridspec import GridSpec

    fig = plt.figure(figsize=(19, 11))
    gs = GridSpec(3, 5, figure=fig, width_ratios=[1, 1, 1, 0.08, 1.5], wspace=0.32, hspace=0.3)
    axes = [[fig.add_subplot(gs[i, j]) for j in range(3)] for i in range(3)]
    panels_laws(axes)
    panel_map(fig.add_subplot(gs[:, 4]), fig)
    fig.suptitle("Residual networks on the edge of chaos (Yang & Schoenholz 2017): exact mean-field "
                 "recursion (solid) vs predicted asymptote (dashed)", fontsize=13)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=out.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    plt.close(fig)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
