"""Random-matrix laws and the spectra of deep-network Jacobians (docs/theory.md §A6.1).

Section 6.1 (closed forms):

* the Wigner semicircle, density ``sqrt(4 s2 - x^2) / (2 pi s2)`` on ``|x| <= 2 sqrt(s2)``,
  even moments ``Catalan(k) s2^k``;
* Marchenko-Pastur for ``S = X X^T / m`` (``X`` n x m, iid entries of variance ``s2``, ratio
  ``lam = n / m``), moments the Narayana polynomials ``s2^k sum_r lam^r C(k, r) C(k-1, r) / (r+1)``;
* products of L square Gaussian matrices (variance 1 / N): the moments of ``J J^T`` are the
  Fuss-Catalan numbers ``C((L+1) k, k) / (L k + 1)`` and the upper edge ``(L+1)^(L+1) / L^L``.

Section 6.2 (Pennington, Schoenholz & Ganguli 2017, 2018): the eigenvalues of ``J J^T`` for the
input-output Jacobian ``J = D^L W^L ... D^1 W^1`` of a deep vanilla network at the fixed point
``q*`` of its length map (docs/theory.md §A1.2), ``D^l = diag(phi'(h^l))``.  The layers are
asymptotically free, so S-transforms multiply:

    S_{JJ^T}(m) = [S_{WW^T}(m) S_{D^2}(m)]^L,
    S_{WW^T}(m) = sigma_w2^{-1} / (1 + m)  (Gaussian),   sigma_w2^{-1}  (orthogonal),

with ``S(m) = (1 + m) / m * M^{-1}(m)`` and ``M(z) = sum_k m_k z^k`` the moment generating
function.  :func:`jacobian_spectrum` returns a :class:`Spectrum`: the moments (by power-series
arithmetic on the S-transforms, any order), the variance (``m1^2 L (mu2/mu1^2 - 1 - s1)``
exactly, for every chi_1; ``L (mu2/mu1^2 - 1 - s1)`` at criticality), the atoms, the upper edge
of the support and, through :meth:`Spectrum.density`, the density on a grid from the Stieltjes
transform (module ``_solve_stieltjes``; docs/spectra.md derives the equations).

The law of ``x = phi'(h)^2``, ``h ~ N(0, q*)``, is read from meanfield.gaussian: its moments
``mu_k`` by :func:`meanfield.gaussian.expect1` (``mu_1`` by ``v_dphi``, so ``sigma_w2 mu_1`` is
chi_1 exactly as :mod:`meanfield.fixed_points` reports it) and, for the density, the nodes and
weights of the same kink-aware composite rule (a discrete measure whose moments are the
``mu_k``).  Nothing here computes a Gaussian integral of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import gaussian
from .activations import Activation, get_activation
from .errors import ConvergenceError, DomainError
from ._memory import check_memory, format_count
from ._roots import _find_root
from .fixed_points import fixed_point
from .maps import check_depth, check_variance

WEIGHTS = ("gaussian", "orthogonal")
# s1 of S_{WW^T}(z) = sigma_w2^{-1} (1 + s1 z + ...) (docs/theory.md §A6.2)
S1 = {"gaussian": -1.0, "orthogonal": 0.0}
# float64 overflows past exp(709): moments beyond that have no finite value to report
_LOG_MAX = 700.0


# ------------------------------------------------------------------------------------------------
# 6.1  closed forms
# ------------------------------------------------------------------------------------------------

def _k_max(k_max: Any) -> int:
    return check_depth(k_max, "k_max")


def _binom(n: Any, k: Any) -> np.ndarray:
    """C(n, k) elementwise as floats: the exact integer (math.comb) rounded once, inf past the
    float range (as scipy.special.comb(exact=False), which costs a ~0.3 s scipy.special import
    and rounds a product of k factors).  Past the range only the bound (a/m)^m <= C(a, m) is paid."""
    n, k = np.broadcast_arrays(np.asarray(n), np.asarray(k))
    out = np.empty(n.shape)
    for i, (a, b) in enumerate(zip(n.ravel().tolist(), k.ravel().tolist())):
        a, b = int(a), int(b)
        if b < 0 or b > a:
            out.flat[i] = 0.0
        elif (m := min(b, a - b)) and m * math.log(a / m) > 710.0:  # (a/m)^m <= C(a, m)
            out.flat[i] = math.inf
        else:
            try:
                out.flat[i] = float(math.comb(a, b))
            except OverflowError:
                out.flat[i] = math.inf
    return out


def semicircle_density(x: Any, sigma2: float = 1.0) -> np.ndarray:
    """Wigner semicircle density ``sqrt(4 sigma2 - x^2) / (2 pi sigma2)`` on ``|x| <= 2 sigma``
    (docs/theory.md §A6.1), for ``A = sigma (G + G^T) / sqrt(2n)``; zero outside, NaN in -> NaN out."""
    s2 = float(check_variance("sigma2", sigma2, positive=True))
    x = np.asarray(x, dtype=float)
    with np.errstate(invalid="ignore"):
        inside = 4.0 * s2 - x * x
        return np.where(np.isnan(x), np.nan, np.sqrt(np.clip(inside, 0.0, None)) / (2.0 * np.pi * s2))


def semicircle_moments(k_max: int, sigma2: float = 1.0) -> np.ndarray:
    """Moments ``E x^k``, k = 1..k_max, of the semicircle (docs/theory.md §A6.1): 0 for odd k,
    ``Catalan(k/2) sigma2^(k/2)`` for even k."""
    n = _k_max(k_max)
    s2 = float(check_variance("sigma2", sigma2, positive=True))
    k = np.arange(1, n + 1)
    half = k // 2
    cat = _binom(2 * half, half) / (half + 1)
    return np.where(k % 2 == 0, cat * s2 ** half, 0.0)


def _mp_edges(ratio: float, sigma2: float) -> tuple[float, float]:
    r = math.sqrt(ratio)
    return sigma2 * (1.0 - r) ** 2, sigma2 * (1.0 + r) ** 2


def marchenko_pastur_density(x: Any, ratio: float = 1.0, sigma2: float = 1.0) -> np.ndarray:
    """Continuous part of the Marchenko-Pastur law (docs/theory.md §A6.1) of ``S = X X^T / m``, ``X`` n x m
    with iid entries of variance ``sigma2``, ``ratio = n / m``:
    ``sqrt((l+ - x)(x - l-)) / (2 pi sigma2 ratio x)`` on ``[l-, l+]``, ``l+- = sigma2 (1 +- sqrt ratio)^2``.
    For ``ratio > 1`` it integrates to ``1 / ratio``; the rest is an atom at 0 (:func:`marchenko_pastur_atom`)."""
    lam = float(check_variance("ratio", ratio, positive=True))
    s2 = float(check_variance("sigma2", sigma2, positive=True))
    lo, hi = _mp_edges(lam, s2)
    x = np.asarray(x, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        prod = np.clip((hi - x) * (x - lo), 0.0, None)
        val = np.where((x > lo) & (x < hi) & (x > 0), np.sqrt(prod) / (2.0 * np.pi * s2 * lam * x), 0.0)
    return np.where(np.isnan(x), np.nan, val)


def marchenko_pastur_atom(ratio: float = 1.0) -> float:
    """Mass of the Marchenko-Pastur atom at 0: ``1 - 1/ratio`` for ``ratio > 1``, else 0."""
    lam = float(check_variance("ratio", ratio, positive=True))
    return max(0.0, 1.0 - 1.0 / lam)


def marchenko_pastur_moments(k_max: int, ratio: float = 1.0, sigma2: float = 1.0) -> np.ndarray:
    """Moments ``E x^k``, k = 1..k_max, of Marchenko-Pastur (docs/theory.md §A6.1, atom included): the
    Narayana polynomials ``sigma2^k sum_{r=0}^{k-1} ratio^r C(k, r) C(k-1, r) / (r + 1)``
    (mean ``sigma2``, second moment ``sigma2^2 (1 + ratio)``)."""
    n = _k_max(k_max)
    lam = float(check_variance("ratio", ratio, positive=True))
    s2 = float(check_variance("sigma2", sigma2, positive=True))
    out = np.empty(n)
    for k in range(1, n + 1):
        r = np.arange(k)
        out[k - 1] = s2 ** k * float(np.sum(lam ** r * _binom(k, r) * _binom(k - 1, r) / (r + 1)))
    return out


def fuss_catalan_moments(k_max: int, depth: int) -> np.ndarray:
    """Moments ``m_k = C((L+1) k, k) / (L k + 1)``, k = 1..k_max, of ``J J^T`` for a product
    ``J`` of L independent square Gaussian matrices with entry variance 1/N (docs/theory.md §A6.2);
    L = 1 is Marchenko-Pastur at ratio 1 (the Catalan numbers)."""
    n = _k_max(k_max)
    L = check_depth(depth, in_float_range=True)
    k = np.arange(1, n + 1)
    return _binom([(L + 1) * int(j) for j in k], k) / (float(L) * k + 1.0)


def fuss_catalan_edge(depth: int) -> float:
    """Upper edge ``(L+1)^(L+1) / L^L`` of the Fuss-Catalan law (about ``e (L + 1)``; docs/theory.md §A6.2)."""
    L = check_depth(depth, in_float_range=True)
    return float(math.exp((L + 1) * math.log(L + 1) - L * math.log(L)))


# ------------------------------------------------------------------------------------------------
# S-transforms as truncated power series (docs/theory.md §A6.2)
# ------------------------------------------------------------------------------------------------

def _mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.convolve(a, b)[: len(a)]


def _power(a: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros_like(a)
    out[0] = 1.0
    base = a.copy()
    while n:
        if n & 1:
            out = _mul(out, base)
        base = _mul(base, base)
        n >>= 1
    return out


def _reversion(c: np.ndarray) -> np.ndarray:
    """Compositional inverse of f(z) = sum_{k>=1} c[k-1] z^k, to the same order."""
    n = len(c)
    if c[0] == 0:
        raise DomainError("the series has no linear term, so it has no compositional inverse")
    g = np.zeros(n + 1)  # g[j] is the coefficient of w^j
    g[1] = 1.0 / c[0]
    for j in range(2, n + 1):
        # coefficient of w^j in f(g(w)) with g truncated at order j - 1
        comp = np.zeros(n + 1)
        p = np.zeros(n + 1)
        p[0] = 1.0
        for k in range(1, j + 1):
            p = _mul(p, g)
            comp += c[k - 1] * p
        g[j] = -comp[j] / c[0]
    return g[1:]


def moments_to_s(moments: Any) -> np.ndarray:
    """Coefficients ``s_0..s_{K-1}`` of the S-transform ``S(w) = (1 + w)/w M^{-1}(w)`` from the
    moments ``m_1..m_K`` (docs/theory.md §A6.2; ``s_0 = 1/m_1``, ``s_1 = (m_1^2 - m_2)/m_1^3``)."""
    m = np.asarray(moments, dtype=float)
    chi = _reversion(m)  # chi[j] is the coefficient of w^(j+1)
    s = chi.copy()
    s[1:] += chi[:-1]
    return s


def s_to_moments(s: Any) -> np.ndarray:
    """Moments ``m_1..m_K`` from the S-transform coefficients ``s_0..s_{K-1}`` (inverse of
    :func:`moments_to_s`): ``M^{-1}(w) = w S(w) / (1 + w)``, reverted."""
    s = np.asarray(s, dtype=float)
    geo = (-1.0) ** np.arange(len(s))
    return _reversion(_mul(s, geo))


def free_product_moments(factors: list[Any], repeat: int = 1) -> np.ndarray:
    """Moments of the free multiplicative convolution of the laws with the given moment lists
    (each ``m_1..m_K``), the product taken ``repeat`` times: ``S = (prod_i S_i)^repeat``."""
    s = None
    for f in factors:
        si = moments_to_s(f)
        s = si if s is None else _mul(s, si)
    return s_to_moments(_power(s, check_depth(repeat, "repeat")))


def _weight_moments(weights: str, k: int) -> np.ndarray:
    """Moments of W W^T / sigma_w2: Marchenko-Pastur at ratio 1 (Gaussian) or 1 (orthogonal)."""
    return marchenko_pastur_moments(k) if weights == "gaussian" else np.ones(k)


# ------------------------------------------------------------------------------------------------
# the law of x = phi'(h)^2 at q*
# ------------------------------------------------------------------------------------------------

_LAW_ORDER = 16       # Gauss-Legendre points per panel of meanfield.gaussian's composite rule
_ATOM_COUNT = 8       # an atom of phi'^2 is a value taken on a whole panel (relu: 0 and 1)
_ATOM_MASS = 1e-6


def _d1(act: Activation):
    if act.d1 is None:
        raise DomainError(f"activation {act.name!r} has no derivative, so its Jacobian is not defined; "
                          f"{act.missing_reason or ''}".rstrip("; "))
    return act.d1


def _law(act: Activation, q: float) -> tuple[np.ndarray, np.ndarray]:
    """Nodes x_i = phi'(sqrt(q) z_i)^2 and weights of meanfield.gaussian's rule for z ~ N(0, 1)."""
    d1 = _d1(act)
    s = np.array([math.sqrt(q) if q > 0 else 1e-150])  # q* = 0: the q -> 0+ limit
    z, wt = gaussian._nodes(s, np.zeros(1), act.kinks, _LAW_ORDER)
    x = np.asarray(d1(s[0] * z[0]), dtype=float) ** 2
    keep = wt[0] > 0
    return x[keep], wt[0][keep] / wt[0][keep].sum()


def _atoms_of_law(x: np.ndarray, w: np.ndarray) -> list[tuple[float, float]]:
    vals, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    mass = np.bincount(inv, weights=w)
    return [(float(v), float(p)) for v, p, c in zip(vals, mass, counts) if c >= _ATOM_COUNT and p > _ATOM_MASS]


def phi_prime_moments(activation: Any, q: float, k_max: int = 3) -> np.ndarray:
    """``mu_k = E[phi'(sqrt(q) z)^(2k)]``, k = 1..k_max (docs/theory.md §A6.2), from meanfield.gaussian."""
    act = get_activation(activation)
    d1 = _d1(act)
    q = float(check_variance("q", q))
    out = [float(gaussian.v_dphi(act, q))]
    for k in range(2, _k_max(k_max) + 1):
        out.append(float(gaussian.expect1(lambda u, k=k: d1(u) ** (2 * k), q, act.kinks)))
    return np.array(out)


# ------------------------------------------------------------------------------------------------
# the Jacobian spectrum
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Spectrum:
    """Eigenvalues of ``J J^T`` (squared singular values of the input-output Jacobian) of a depth-L
    vanilla network at its fixed point q*, infinite width (docs/theory.md §A6.2).

    ``moments`` are ``m_1, m_2, m_3`` (atoms included), ``variance = m_2 - m_1^2``;
    ``relative_variance = variance / m_1^2 = L (mu2/mu1^2 - 1 - s1)`` for every chi_1, which at
    criticality (m_1 = chi_1^L = 1) is the variance.  ``edge`` is the upper end of the support,
    ``atoms`` the point masses ``[location, mass]`` (relu: half the spectrum at 0; orthogonal
    weights with an activation whose phi'^2 has an atom of mass p > 1 - 1/L: an isometric atom).
    :meth:`density` gives the continuous part on a grid.
    """

    activation: str
    weights: str
    sigma_w2: float
    sigma_b2: float
    depth: int
    q_star: float
    chi_1: float
    phase: str
    mu: tuple[float, float, float]
    s1: float
    moments: tuple[float, float, float]
    variance: float
    relative_variance: float
    edge: float
    atoms: tuple[tuple[float, float], ...]
    notes: tuple[str, ...] = ()
    _x: np.ndarray = field(default=None, repr=False, compare=False)   # law of phi'^2 / mu1 (nodes)
    _w: np.ndarray = field(default=None, repr=False, compare=False)   # and its weights
    _edge_norm: float = field(default=math.nan, repr=False, compare=False)

    @property
    def scale(self) -> float:
        """``m_1 = chi_1^L``: the spectrum is this times that of the critical network."""
        return self.moments[0]

    def to_dict(self) -> dict:
        return {
            "activation": self.activation, "weights": self.weights, "sigma_w2": self.sigma_w2,
            "sigma_b2": self.sigma_b2, "depth": self.depth, "q_star": self.q_star, "chi_1": self.chi_1,
            "phase": self.phase, "mu": list(self.mu), "s1": self.s1, "moments": list(self.moments),
            "variance": self.variance, "relative_variance": self.relative_variance, "edge": self.edge,
            "atoms": [list(a) for a in self.atoms], "notes": list(self.notes),
        }

    def moment(self, k: int) -> float:
        """``m_k = E[lambda^k]`` of J J^T for any k >= 1 (the S-transform series to order k)."""
        k = _k_max(k)
        n = _normalised_moments(self._x, self._w, self.weights, self.depth, self.mu, k)[-1]
        return float(n * self.scale ** k)

    def density(self, lam: Any) -> np.ndarray:
        """Density of the continuous part of the law of the eigenvalues of J J^T at ``lam``
        (atoms excluded; it integrates to ``1 - sum of atom masses``).  Vectorised: one
        continuation of the Stieltjes equation over the whole grid (docs/spectra.md)."""
        lam = np.asarray(lam, dtype=float)
        out = np.full(lam.shape, np.nan)
        ok = np.isfinite(lam)
        t = lam[ok] / self.scale
        rho = np.zeros(t.shape)
        pos = t > 0
        if pos.any():
            atoms = [(a / self.scale, p) for a, p in self.atoms]
            rho[pos] = _density_normalised(self._x, self._w, self.weights, self.depth, t[pos], atoms,
                                           self._edge_norm)
        out[ok] = rho / self.scale
        return out

    def grid(self, n: int = 400, log: bool = False) -> np.ndarray:
        """A grid of ``n`` eigenvalues covering the support: Chebyshev-clustered at both ends of
        (0, edge] (resolves inverse-square-root edges), or log-spaced from edge * 1e-8."""
        n = check_depth(n, "n")
        # the grid, its density and their printed copies
        check_memory(n * 64, f"a density on {format_count(n)} eigenvalues", "ask for fewer points")
        if log:
            return self.edge * np.logspace(-8, 0, n)
        theta = (np.arange(n) + 0.5) / n * np.pi
        return self.edge * (1.0 - np.cos(theta)) / 2.0


def _check_weights(weights: Any) -> str:
    w = str(weights).lower() if isinstance(weights, str) else weights
    if w not in WEIGHTS:
        raise DomainError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    return w


def _normalised_moments(x, w, weights, depth, mu, k):
    """m_1..m_k of J J^T / chi_1^L from the first k moments of phi'^2 / mu1."""
    if k <= 3:
        d = np.asarray(mu[:k]) / np.asarray(mu[0]) ** np.arange(1, k + 1)
    else:
        d = np.array([np.sum(w * x ** j) for j in range(1, k + 1)])
        d[:3] = np.asarray(mu) / mu[0] ** np.arange(1, 4)
    return free_product_moments([d, _weight_moments(weights, k)], repeat=depth)


def jacobian_spectrum(activation: Any, sigma_w2: float, sigma_b2: float, depth: int,
                      weights: str = "gaussian") -> Spectrum:
    """The spectrum of ``J J^T`` for a depth-``depth`` vanilla network at the fixed point q* of
    (``sigma_w2``, ``sigma_b2``) with Gaussian or Haar-orthogonal weights (docs/theory.md §A6.2).

    Raises DomainError for depth < 1, an unknown weight ensemble, a length map without a fixed
    point (the spectrum has no limit: q^l diverges), an activation whose phi' vanishes almost
    surely, and off-criticality settings whose moments chi_1^(kL) overflow (no finite limit).
    """
    act = get_activation(activation)
    L = check_depth(depth, in_float_range=True)
    weights = _check_weights(weights)
    sw = float(check_variance("sigma_w2", sigma_w2, positive=True))
    sb = float(check_variance("sigma_b2", sigma_b2))
    _d1(act)
    try:
        fp = fixed_point(act, sw, sb)
    except DomainError as exc:
        raise DomainError(f"no Jacobian spectrum at infinite width: {exc}") from None
    q = fp.q_star
    mu = phi_prime_moments(act, q, 3)
    if not (mu[0] > 0):
        raise DomainError(f"phi'(h) = 0 almost surely for {act.name} at q* = {q:g}: the Jacobian is zero")
    chi = float(sw * mu[0])
    log_m1 = L * math.log(chi)
    if 3 * abs(log_m1) > _LOG_MAX:
        grows = "explodes" if chi > 1 else "vanishes"
        raise DomainError(
            f"off criticality (chi_1 = {chi:.6g}, {fp.phase}) the squared singular values scale like "
            f"chi_1^L = 10^{log_m1 / math.log(10):.0f} at depth {L}: the spectrum {grows} with depth and has "
            f"no finite limit; use sigma_w2 on the edge of chaos (meanfield eoc) or a smaller depth")
    x, w = _law(act, q)
    xn = x / mu[0]
    n = _normalised_moments(xn, w, weights, L, tuple(mu), 3)
    scale = math.exp(log_m1)
    moments = tuple(float(v * scale ** k) for k, v in enumerate(n, start=1))
    rel = float(L * (mu[1] / mu[0] ** 2 - 1.0 - S1[weights]))
    law_atoms = _atoms_of_law(xn, w)
    atoms = []
    zero = sum(p for a, p in law_atoms if a == 0.0)
    if zero > 0:
        atoms.append((0.0, float(min(zero, 1.0))))
    if weights == "orthogonal":
        for a, p in law_atoms:
            mass = L * p - (L - 1)
            if a > 0 and mass > _ATOM_MASS:
                atoms.append((float(a ** L * scale), float(min(mass, 1.0))))
    edge_norm = _edge(xn, w, weights, L)
    notes = []
    if fp.phase != "critical":
        notes.append(f"off criticality (chi_1 = {chi:.6g}): the spectrum is chi_1^L = {scale:.6g} times that of "
                     f"a critical network with the same law of phi'(h)^2")
    if atoms:
        notes.append("atoms: " + ", ".join(f"mass {p:.6g} at {a:.6g}" for a, p in atoms))
    return Spectrum(act.name, weights, sw, sb, L, float(q), chi, fp.phase, tuple(float(v) for v in mu),
                    S1[weights], moments, float(moments[1] - moments[0] ** 2), rel, float(edge_norm * scale),
                    tuple(atoms), tuple(notes), xn, w, float(edge_norm))


# ------------------------------------------------------------------------------------------------
# the Stieltjes equation (normalised units: E[phi'^2] = 1 and sigma_w2 = 1, so m_1 = 1)
# ------------------------------------------------------------------------------------------------
#
# For u with m = M_D(u) = E[x u / (1 - x u)] (x = phi'^2 / mu1), the S-transform product gives
# M_J^{-1}(m) = m / (1 + m) * [S_W(m) (1 + m) u / m]^L, so z = 1 / w with w = lambda + i eps solves
#     g(u) = log m - log(1 + m) + L A(u) + log w = 0  (mod 2 pi i),
#     A(u) = log u - log m (Gaussian) or log u + log(1 + m) - log m (orthogonal),
# and then G_J(w) = (1 + m) / w, rho = -Im G / pi.

def _md(x, w, u):
    """M_D(u), 1 + M_D(u) = E[1 / (1 - x u)] (computed directly: no cancellation as m -> -1 when
    lambda -> 0) and M_D'(u) of the discrete law (x, w), for an array of complex u."""
    r = 1.0 / (1.0 - u[..., None] * x)
    p = (w * r).sum(-1)
    m = (w * x * u[..., None] * r).sum(-1)
    dm = (w * x * r * r).sum(-1)
    return m, p, dm


def _g(x, w, weights, L, u, logw):
    m, p, dm = _md(x, w, u)
    g = np.log(m) - np.log(p) + L * (np.log(u) - np.log(m)) + logw
    dg = dm / m - dm / p + L * (1 / u - dm / m)
    if weights == "orthogonal":
        g = g + L * np.log(p)
        dg = dg + L * dm / p
    return g, dg, p


def _wrap(g):
    return g - 2j * np.pi * np.round(g.imag / (2 * np.pi))


def _newton(x, w, weights, L, u, logw, iters=40, tol=1e-12):
    """Vectorised damped Newton for g(u) = 0 (mod 2 pi i) from u, iterating only on the points not
    yet converged (|step| <= tol |u| or |g| <= tol: a double root at the spectral edge converges
    only linearly in u, but its residual does)."""
    u = u.copy()
    active = np.arange(u.size)
    for _ in range(iters):
        g, dg, _ = _g(x, w, weights, L, u[active], logw[active])
        res = _wrap(g)
        with np.errstate(all="ignore"):
            step = res / dg
            big = np.abs(step) > 0.5 * np.abs(u[active])
            step = np.where(big, step * (0.5 * np.abs(u[active]) / np.abs(step)), step)
        step = np.where(np.isfinite(step), step, 0.0)
        u[active] -= step
        conv = (np.abs(step) <= tol * np.abs(u[active])) | (np.abs(res) <= tol)
        active = active[~conv]
        if active.size == 0:
            break
    done = np.ones(u.shape, bool)
    done[active] = False
    return u, done


def _solve_stieltjes(x, w, weights, L, lam, eps_min):
    """G_J(lam + i eps_min) by continuation in eps, geometric per grid point from eps0 =
    10 (max lam + 1) down to its own eps_min (an array: eps is kept relative to lambda, so
    small eigenvalues of deep nets are not smeared by an absolute eps)."""
    eps0 = 10.0 * (1.0 + float(np.max(lam)))
    n_steps = int(math.ceil(math.log(eps0 / float(np.min(eps_min))) / math.log(1.5)))
    ratio = np.log(eps_min / eps0)
    u = 1.0 / (lam + 1j * eps0)
    for k in range(n_steps + 1):
        wv = lam + 1j * eps0 * np.exp(ratio * (k / n_steps))
        u, done = _newton(x, w, weights, L, u, np.log(wv))
    if not done.all():
        bad = lam[~done]
        raise ConvergenceError(f"the Stieltjes equation did not converge at {bad.size} of {lam.size} grid "
                               f"points (first at lambda / m1 = {bad[0]:.6g})")
    _, p, _ = _md(x, w, u)
    return p / wv


_EPS_REL = 1e-9  # Im w / lambda at the end of the continuation
_CHUNK = 4096     # grid points solved together


def _density_normalised(x, w, weights, L, t, atoms, edge_norm):
    if sum(p for _, p in atoms) >= 1.0 - 1e-9:  # all mass in atoms (linear, orthogonal: isometry)
        return np.zeros(t.shape)
    if weights == "orthogonal" and L == 1:
        return _law_histogram(x, w, t, atoms)
    eps_min = _EPS_REL * np.minimum(t, edge_norm)
    G = np.empty(t.shape, complex)
    for start in range(0, t.size, _CHUNK):  # bounded memory: chunk x nodes complex temporaries
        sl = slice(start, start + _CHUNK)
        G[sl] = _solve_stieltjes(x, w, weights, L, t[sl], eps_min[sl])
    rho = -G.imag / np.pi
    for a, p in atoms:  # remove the atoms' Lorentzians (mass p eps / pi / ((t - a)^2 + eps^2))
        rho = rho - p * eps_min / np.pi / ((t - a) ** 2 + eps_min ** 2)
    return np.clip(rho, 0.0, None)


def _law_histogram(x, w, t, atoms):
    """Orthogonal weights at depth 1: J J^T = sigma_w2 D^2, so the law is that of phi'^2 itself;
    returned as bin averages of the quadrature measure over cells around the grid points."""
    order = np.argsort(t)
    ts = t[order]
    mid = 0.5 * (ts[1:] + ts[:-1])
    lo = ts[0] - (mid[0] - ts[0]) if ts.size > 1 else ts[0] * 0.5
    hi = ts[-1] + (ts[-1] - mid[-1]) if ts.size > 1 else ts[0] * 1.5
    edges = np.concatenate([[max(lo, 0.0)], mid, [hi]])
    atom_at = {a for a, _ in atoms}
    keep = np.array([xi not in atom_at for xi in x])
    hist, _ = np.histogram(x[keep], bins=edges, weights=w[keep])
    rho = np.empty_like(t)
    rho[order] = hist / np.diff(edges)
    return rho


def _edge(x, w, weights, L):
    """Upper edge 1 / max F of the support, F(u) = z on the real branch u in (0, 1 / max x)."""
    uc = 1.0 / float(np.max(x))
    # the turning point sits near u_c / (L + 1) for deep Gaussian nets and near u_c for hard edges
    t = np.concatenate([np.geomspace(min(1e-9, 0.01 / (L + 1.0)), 0.9, 400, endpoint=False),
                        1.0 - np.logspace(-1, -12, 221)])
    u = uc * t

    def dlogf(uu):
        uu = np.asarray(uu, dtype=complex)
        _, dg, _ = _g(x, w, weights, L, uu, 0.0)
        return dg.real

    def logf(uu):
        g, _, _ = _g(x, w, weights, L, np.asarray([uu], dtype=complex), 0.0)
        return float(g.real[0])

    d = dlogf(u)
    neg = np.flatnonzero(d <= 0)
    if neg.size == 0:  # F increases up to the pole: a hard edge at the top of the law
        return float(math.exp(-logf(u[-1])))
    i = neg[0]
    if i == 0:
        raise ConvergenceError("could not bracket the spectral edge")
    # the package's bracketing solver, not scipy.optimize.brentq (~0.2-0.9 s to import cold)
    us = float(_find_root(dlogf, u[i - 1], u[i], xrtol=1e-14, xatol=1e-15 * uc)[0])
    return float(math.exp(-logf(us)))


# ------------------------------------------------------------------------------------------------
# finite-width numpy Jacobians (the empirical side of the checks)
# ------------------------------------------------------------------------------------------------

def haar_orthogonal(rng: np.random.Generator, n: int) -> np.ndarray:
    """A Haar-distributed n x n orthogonal matrix: QR of a Gaussian matrix with the signs of R's
    diagonal moved into Q (Mezzadri 2007)."""
    a = rng.standard_normal((n, n))
    qm, r = np.linalg.qr(a)
    return qm * np.sign(np.diag(r))


def _layer_jacobians(act: Activation, sw: float, sb: float, q: float, depth: int, weights: str,
                     n: int, rng: np.random.Generator):
    """For one random network, yield J^l = D^l W^l ... D^1 W^1 for l = 1..depth (the Jacobian of
    the first l layers), at an input phi(h^0), h^0 ~ N(0, q*): every layer sits at q*."""
    d1 = _d1(act)
    x = act.fn(math.sqrt(q) * rng.standard_normal(n))
    J = None
    for _ in range(depth):
        if weights == "gaussian":
            W = rng.standard_normal((n, n)) * math.sqrt(sw / n)
        else:
            W = haar_orthogonal(rng, n) * math.sqrt(sw)
        h = W @ x + math.sqrt(sb) * rng.standard_normal(n)
        J = d1(h)[:, None] * (W if J is None else W @ J)
        x = act.fn(h)
        yield J


def _sampler_args(activation, sigma_w2, sigma_b2, depth, weights, width, n_nets, seed):
    act = get_activation(activation)
    _d1(act)
    L = check_depth(depth, in_float_range=True)
    weights = _check_weights(weights)
    n = check_depth(width, "width")
    sw = float(check_variance("sigma_w2", sigma_w2, positive=True))
    sb = float(check_variance("sigma_b2", sigma_b2))
    q = fixed_point(act, sw, sb).q_star
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return act, sw, sb, q, L, weights, n, check_depth(n_nets, "n_nets"), rng


def sample_jacobians(activation: Any, sigma_w2: float, sigma_b2: float, depth: int, *,
                     weights: str = "gaussian", width: int = 1000, n_nets: int = 1,
                     seed: "int | np.random.Generator | None" = None):
    """Yield ``n_nets`` input-output Jacobians ``J = D^L W^L ... D^1 W^1`` (width x width) of random
    numpy networks at their fixed point q* (docs/theory.md §A6.2), Gaussian or Haar-orthogonal weights."""
    act, sw, sb, q, L, weights, n, nets, rng = _sampler_args(activation, sigma_w2, sigma_b2, depth, weights,
                                                            width, n_nets, seed)
    from collections import deque

    for _ in range(nets):
        yield deque(_layer_jacobians(act, sw, sb, q, L, weights, n, rng), maxlen=1)[0]


def sample_moments(activation: Any, sigma_w2: float, sigma_b2: float, depth: int, *,
                   weights: str = "gaussian", width: int = 1000, n_nets: int = 4, k_max: int = 3,
                   depths: "tuple[int, ...] | None" = None,
                   seed: "int | np.random.Generator | None" = None) -> np.ndarray:
    """Per network, ``tr((J J^T)^k) / width`` for k = 1..k_max (k_max <= 3), shape (n_nets, k_max);
    with ``depths`` (each <= depth), shape (len(depths), n_nets, k_max): the Jacobians of the first
    l layers of the same networks (one run of ``depth`` layers serves every l)."""
    act, sw, sb, q, L, weights, n, nets, rng = _sampler_args(activation, sigma_w2, sigma_b2, depth, weights,
                                                            width, n_nets, seed)
    k_max = _k_max(k_max)
    if k_max > 3:
        raise DomainError("sample_moments computes k_max <= 3")
    at = (L,) if depths is None else tuple(check_depth(d, "depths") for d in depths)
    if max(at) > L:
        raise DomainError(f"depths must be <= depth = {L}, got {max(at)}")
    out = np.empty((len(at), nets, k_max))
    for i in range(nets):
        for layer, J in enumerate(_layer_jacobians(act, sw, sb, q, L, weights, n, rng), start=1):
            for j in (j for j, d in enumerate(at) if d == layer):
                A = J @ J.T
                row = [np.sum(J * J) / n, np.sum(A * A) / n]
                if k_max == 3:
                    B = A @ J
                    row.append(np.sum(B * B) / n)
                out[j, i] = row[:k_max]
    return out[0] if depths is None else out


def sample_eigenvalues(activation: Any, sigma_w2: float, sigma_b2: float, depth: int, *,
                       weights: str = "gaussian", width: int = 400, n_nets: int = 1,
                       depths: "tuple[int, ...] | None" = None,
                       seed: "int | np.random.Generator | None" = None) -> dict[int, np.ndarray]:
    """Eigenvalues of J J^T (squared singular values, by SVD of J) of ``n_nets`` random networks,
    pooled, at each of ``depths`` (default: ``depth``) from one run of ``depth`` layers per network."""
    act, sw, sb, q, L, weights, n, nets, rng = _sampler_args(activation, sigma_w2, sigma_b2, depth, weights,
                                                            width, n_nets, seed)
    at = (L,) if depths is None else tuple(check_depth(d, "depths") for d in depths)
    if max(at) > L:
        raise DomainError(f"depths must be <= depth = {L}, got {max(at)}")
    out: dict[int, list] = {d: [] for d in at}
    for _ in range(nets):
        for layer, J in enumerate(_layer_jacobians(act, sw, sb, q, L, weights, n, rng), start=1):
            if layer in out:
                out[layer].append(np.linalg.svd(J, compute_uv=False) ** 2)
    return {d: np.concatenate(v) for d, v in out.items()}


__all__ = [
    "Spectrum", "jacobian_spectrum", "semicircle_density", "semicircle_moments", "marchenko_pastur_density",
    "marchenko_pastur_atom", "marchenko_pastur_moments", "fuss_catalan_moments", "fuss_catalan_edge",
    "moments_to_s", "s_to_moments", "free_product_moments", "phi_prime_moments", "haar_orthogonal",
    "sample_jacobians", "sample_moments", "sample_eigenvalues", "WEIGHTS",
]
