"""Pictures.  matplotlib is imported here only, and only when a function is called.

Each function takes ``ax=None`` (a new figure is made) and returns the Axes.
"""

from __future__ import annotations

import numpy as np


def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        try:
            matplotlib.use("Agg")
        except Exception:  # noqa: BLE001 - an interactive session keeps its backend
            pass
    import matplotlib.pyplot as plt

    return plt


def _new_axes(figsize: tuple[float, float], dpi: int):
    """One Axes on a new figure.  Outside an interactive session (pyplot not imported) a bare
    Agg Figure: matplotlib.figure and backend_agg import in about half the time of pyplot,
    which the CLI pays on every picture.  With pyplot in use, a pyplot figure, so that it shows."""
    import sys

    if "matplotlib.pyplot" in sys.modules:
        return _plt().subplots(figsize=figsize, dpi=dpi)[1]
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig.add_subplot()


def plot_phase_diagram(pd, ax=None, *, xi_levels=(3, 10, 30, 100)):
    """chi_1(q*) over (sigma_w2, sigma_b2) on a log colour scale centred at 1, the edge-of-chaos
    curve, xi_c contours, and the regions where q* does not exist shaded grey."""
    from matplotlib.colors import TwoSlopeNorm

    if ax is None:
        ax = _new_axes((7.0, 5.2), 130)
    x, y, chi = pd.sigma_w2, pd.sigma_b2, np.asarray(pd.chi_1, float)
    finite = np.isfinite(chi) & (chi > 0)
    lo = max(np.nanmin(chi[finite]) if finite.any() else 0.1, 1e-3)
    hi = max(np.nanmax(chi[finite]) if finite.any() else 10.0, 1.0 + 1e-3)
    logchi = np.where(finite, np.log10(np.where(finite, chi, 1.0)), np.nan)
    vmin, vmax = min(np.log10(lo), -1e-3), max(np.log10(hi), 1e-3)
    mesh = ax.pcolormesh(x, y, logchi, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, vmin, vmax), shading="auto")
    cb = ax.figure.colorbar(mesh, ax=ax)
    cb.set_label(r"$\log_{10}\chi_1$  (blue: ordered, red: chaotic)")
    if (~finite).any():
        ax.contourf(x, y, (~finite).astype(float), levels=[0.5, 1.5], colors="0.75", hatches=["//"])
        iy, ix = np.unravel_index(np.argmax(~finite), chi.shape)
        cols = np.flatnonzero((~finite).any(axis=0))
        ax.text(x[cols[len(cols) // 2]], y[len(y) // 2], "no fixed point\n(q diverges)", ha="center",
                va="center", fontsize=9, color="0.2", bbox=dict(fc="white", ec="none", alpha=0.7))
    if pd.xi_c is not None:
        # xi_c = inf (critical) is drawn as very large; where q* does not exist there is no
        # xi_c at all (masked: no false contour along the grey region's edge)
        xi = np.ma.masked_where(~finite, np.where(np.isfinite(pd.xi_c), pd.xi_c, 1e6))
        cs = ax.contour(x, y, xi, levels=list(xi_levels), colors="k", linewidths=0.7, linestyles="--")
        ax.clabel(cs, fmt=lambda v: rf"$\xi_c$={v:g}", fontsize=7)
    ok = np.isfinite(pd.eoc_sigma_w2)
    if ok.any():
        ax.plot(pd.eoc_sigma_w2[ok], pd.eoc_sigma_b2[ok], color="k", lw=2.2, label=r"edge of chaos ($\chi_1=1$)")
        ax.legend(loc="upper left", fontsize=8, framealpha=0.85)
    ordered = finite & (chi < 1)
    chaotic = finite & (chi > 1)
    for mask, label in ((ordered, "ordered"), (chaotic, "chaotic")):
        if mask.sum() > 0.02 * mask.size:
            yy, xx = np.nonzero(mask)
            ax.text(x[int(np.median(xx))], y[int(np.percentile(yy, 70))], label, ha="center", va="center",
                    fontsize=13, weight="bold", color="white",
                    bbox=dict(fc="#2b5a9e" if label == "ordered" else "#b3262c", ec="none", alpha=0.8))
    ax.set_xlim(x[0], x[-1])
    ax.set_ylim(y[0], y[-1])
    ax.set_xlabel(r"$\sigma_w^2$ (weight variance $\times$ fan-in)")
    ax.set_ylabel(r"$\sigma_b^2$ (bias variance)")
    ax.set_title(f"Phase diagram of a deep {pd.activation} network")
    return ax


__all__ = ["plot_phase_diagram"]


def plot_jacobian_spectrum(spec, ax=None, *, samples=None, n: int = 300, log: bool = True, label=None,
                           color=None, bins: int = 60):
    """Density of the squared singular values of the input-output Jacobian (a
    meanfield.spectra.Spectrum, docs/theory.md §A6.2), optionally over a histogram of empirical
    eigenvalues of J J^T (``samples``).  ``log``: the density of log10(lambda), which shows every
    depth on one axis; atoms are drawn as vertical markers with their mass."""
    if ax is None:
        ax = _new_axes((6.4, 4.2), 130)
    cont = 1.0 - sum(p for _, p in spec.atoms)
    if log:
        lam = spec.edge * np.logspace(-14, 0, max(n // 4, 60))  # a coarse pass finds the support
        y = spec.density(lam) * lam * np.log(10.0)
        keep = y > 1e-4 * max(float(np.nanmax(y)), 1e-300)
        if keep.any() and cont > 1e-9:
            lo, hi = lam[keep][0], lam[keep][-1]
            lam = np.geomspace(lo / 1.5, min(hi * 1.2, spec.edge), n)
            y = spec.density(lam) * lam * np.log(10.0)
        x = np.log10(lam)
    else:
        lam = spec.grid(n)
        y = spec.density(lam)
        x = lam
    if samples is not None:
        s = np.asarray(samples, float).ravel()
        nz = s[s > 1e-10 * spec.edge]
        v = np.log10(nz) if log else nz
        if nz.size and np.ptp(v) > 1e-9 * max(float(np.max(np.abs(v))), 1e-300):  # atoms only: the markers show them
            w = np.full(v.size, 1.0 / s.size)  # the zero atom stays out, as in the theory's curve
            ax.hist(v, bins=bins, weights=w * bins / max(float(np.ptp(v)), 1e-12), histtype="stepfilled",
                    alpha=0.3, color=color)
    if cont > 1e-9:
        ax.plot(x, y, color=color, lw=1.6, label=label)
    for a, p in spec.atoms:
        if a > 0:
            xa = np.log10(a) if log else a
            ax.axvline(xa, color="k" if color is None else color, ls=":", lw=1.2,
                       label=None if label is None or cont > 1e-9 else f"{label}: atom")
            ax.text(xa, 0.95, f" atom {p:.3g}", color="k" if color is None else color, fontsize=7,
                    rotation=90, va="top", transform=ax.get_xaxis_transform())
    ax.set_xlabel(r"$\log_{10}\lambda$" if log else r"$\lambda$")
    ax.set_ylabel(r"density of $\log_{10}\lambda$" if log else r"density $\rho(\lambda)$")
    if ax.get_title() == "":
        ax.set_title(f"{spec.activation}, {spec.weights} weights, L = {spec.depth}: "
                     r"eigenvalues $\lambda$ of $JJ^\top$")
    return ax


__all__ += ["plot_jacobian_spectrum"]
