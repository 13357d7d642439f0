"""An independent 2-D Gaussian expectation for the comparison scripts: nested scipy QUADPACK
at 1e-14 (no meanfield code), used as the reference for activations without closed forms
(bench_kernels.py, nt_network_reference.py)."""

from __future__ import annotations

import numpy as np


def quadpack2(fn: str, q1: float, q2: float, c: float) -> tuple[float, float]:
    """E[phi(u) phi(v)], E[phi'(u) phi'(v)] for (u, v) Gaussian, variances q1, q2, correlation c."""
    import warnings

    from scipy import integrate, special

    warnings.simplefilter("ignore")
    if fn == "tanh":
        f, df = np.tanh, (lambda x: 1.0 / np.cosh(x) ** 2)
    elif fn == "gelu":
        def f(x):
            return x * special.ndtr(x)

        def df(x):
            return special.ndtr(x) + x * np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)
    else:
        raise ValueError(fn)
    s1, s2 = np.sqrt(q1), np.sqrt(q2)
    opts = dict(points=[0.0], epsabs=1e-15, epsrel=1e-14, limit=200)

    def pdf(z):
        return np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)

    def one(g):
        if c >= 1.0:
            return integrate.quad(lambda z: g(s1 * z) * g(s2 * z) * pdf(z), -12, 12, **opts)[0]
        sc = np.sqrt(1.0 - c * c)

        def inner(z1):
            return integrate.quad(lambda z2: g(s2 * (c * z1 + sc * z2)) * pdf(z2), -12, 12, **opts)[0]

        return integrate.quad(lambda z1: g(s1 * z1) * pdf(z1) * inner(z1), -12, 12, **opts)[0]

    return one(f), one(df)
