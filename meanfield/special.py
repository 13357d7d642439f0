"""alpha-ReLU kernels and their Bessel-function identities (Yang & Schoenholz 2017).

For phi_alpha(x) = max(0, x)**alpha (alpha = 0 is the step Theta(x)) and unit-variance Gaussians
(u, v) with correlation c this module computes, in float64 and vectorised over c,

* ``c_alpha(alpha)``: c_alpha = E[phi(z)^2] (docs/theory.md §A2.5)
* ``alpha_relu_kernel(alpha, c)``: W_alpha(c) = E[phi(u) phi(v)] (docs/theory.md §A2.7 (2), §3.1)
* ``alpha_relu_normalized(alpha, c)``: Jbar_alpha(c) = W_alpha(c) / c_alpha (docs/theory.md §A2.5)
* ``alpha_relu_dkernel(alpha, c)``: dW_alpha/dc = alpha^2 W_{alpha-1}(c) (docs/theory.md §A0, §2.7(3))
* ``alpha_relu_dnormalized(alpha, c)``: Jbar'_alpha(c) (docs/theory.md §A2.5)
* ``alpha_relu_fixed_point(alpha)``: e*_alpha, the fixed point of Jbar_alpha in (0, 1) (§2.5)

and mpmath references (``alpha_relu_kernel_mp``, ``alpha_relu_kernel_quad2d_mp``,
``bessel_k0_representation``, ``three_term_recurrence``) that express the identities of
docs/theory.md §A2.7 and serve as independent checks.

Numerical method of the float64 functions (details in ``alpha_relu_kernel``'s docstring)
-------------------------------------------------------------------------------------
Integrating the K0 representation docs/theory.md §A2.7 (2) term by term (Gradshteyn–Ryzhik 6.621.3) and
applying Euler's transformation gives the Gauss form used here (derived for this module and
checked against the K0 integral, the c^2-hypergeometric form §2.7(4), the angular integral §2.7(5)
and direct 2-D quadrature to 25+ digits):

    W_alpha(c) = Gamma(alpha+1)^2 / (2 sqrt(2 pi) Gamma(alpha+3/2))
                 * (1+c)^(alpha+1/2) * 2F1(1/2, 1/2; alpha+3/2; (1+c)/2).        (G)

With s = alpha + 1/2, z = (1+c)/2 and w = (1-c)/2:

* c < 0  : the power series of (G) in z (z <= 1/2, all terms positive: no cancellation).
* c >= 0 : the expansion of (G) about c = 1 (connection formula z -> 1 - z, DLMF 15.8.4), which
  has the singular term w^s.  When s is an integer (alpha = 1/2, 3/2, ...) that formula is
  degenerate (logarithmic case) and it is ill-conditioned near those alpha.  It is used here in a
  form that is uniform in eps = s - round(s) (in the spirit of Buehring's treatment): the pairs of
  terms that have poles at eps = 0 are combined analytically, their coefficients are computed
  once per alpha with mpmath at 30 + log10(1/|eps|) digits (the eps -> 0 limit with digamma
  functions), and only the elementary factor (w^eps - 1)/sin(pi eps) = expm1(eps log w)/sin(pi eps)
  is evaluated per point.
* Both series are evaluated through Chebyshev-economised polynomials on their interval
  (z or w in [0, 1/2], about 20-30 terms instead of 45-80; built once per alpha), so a value costs
  one or two short Horner loops plus a few elementary functions (pow, log, expm1).
* alpha in {0, 1, 2, 3}: Cho–Saul arc-cosine closed forms (docs/theory.md §A3.1), with
  pi - theta = pi - 2 arcsin(sqrt((1-c)/2)) (c >= 0) or 2 arcsin(sqrt((1+c)/2)) (c < 0) and
  sin(theta) = sqrt((1-c)(1+c)) (no arccos cancellation at either end), for c >= -1/2
  (alpha = 1, 2), c >= -1/4 (alpha = 3), all c (alpha = 0).  Closer to c = -1 the closed forms
  cancel catastrophically (W_n ~ (1+c)^(n+1/2) is a difference of O(1) terms), so the series in
  z is used there instead.
* c = 1 exactly returns c_alpha (normalised: 1); c = -1 exactly returns 0.

Measured accuracy against 30-digit mpmath (tests/test_special.py, scripts/make_golden_special.py):
relative error below 2e-15 for every c in [-1, 1] (including c = +-1, 1 - 1e-12, -1 + 1e-12,
1 - 2**-53) and alpha from -0.45 to 10, including alpha within 1e-12 of a half-integer; the
derivative kernel below 5e-15. (Values below ~1e-308, e.g. alpha = 20 at c = -1 + 1e-16,
underflow to 0.) Speed: about 0.1-0.3 s per 10^6 values of c on one core, plus ~50 ms once
per new alpha (cached).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from meanfield.errors import ConvergenceError, DomainError

__all__ = [
    "c_alpha",
    "alpha_relu_kernel",
    "alpha_relu_normalized",
    "alpha_relu_dkernel",
    "alpha_relu_dnormalized",
    "alpha_relu_fixed_point",
    "alpha_relu_kernel_mp",
    "alpha_relu_kernel_quad2d_mp",
    "bessel_k0_representation",
    "three_term_recurrence",
]

_SQRT_2PI = math.sqrt(2.0 * math.pi)
_CHUNK = 1 << 16  # Horner evaluation in cache-sized blocks
_TINY = 1e-18  # series truncation: relative size of the first neglected term


# --------------------------------------------------------------------------------------------
# argument checking
# --------------------------------------------------------------------------------------------


def _check_alpha_scalar(alpha: Any) -> float:
    try:
        a = float(alpha)
    except (TypeError, ValueError) as exc:  # pragma: no cover - defensive
        raise DomainError(f"alpha must be a real number > -1/2, got {alpha!r}") from exc
    if not (a > -0.5) or not math.isfinite(a):
        raise DomainError(f"alpha must be > -1/2, got {alpha!r}")
    return a


def _check_alpha_array(alpha: ArrayLike) -> NDArray[np.float64]:
    a = np.asarray(alpha, dtype=np.float64)
    bad = ~(np.isfinite(a) & (a > -0.5))
    if np.any(bad):
        raise DomainError(f"alpha must be > -1/2, got {a[bad].ravel()[0]!r}")
    return a


def _check_c(c: ArrayLike) -> NDArray[np.float64]:
    arr = np.asarray(c, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bad = (arr < -1.0) | (arr > 1.0)
    if np.any(bad):
        first = arr[bad].ravel()[0]
        n = int(np.count_nonzero(bad))
        more = f" ({n} values outside)" if n > 1 else ""
        raise DomainError(f"correlation c must lie in [-1, 1], got {first!r}{more}")
    return arr


def _ret(x: NDArray[np.float64]) -> Any:
    """0-d arrays come back as numpy float64 scalars, others as arrays."""
    return x[()] if x.ndim == 0 else x


# --------------------------------------------------------------------------------------------
# per-alpha series coefficients (computed once with mpmath, cached)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Series:
    """Coefficients of the two expansions of (G) for one exponent s = beta + 1/2.

    The returned quantity V is
      z-region:  V = cz * z^s * sum_n zc[n] z^n
      w-region:  V = (1-w)^s * ( sum_{n<m} t[n] w^n + sign * w^m * (sum_k E[k] w^k
                                  - Lw * sum_k F[k] w^k) ),   Lw = expm1(eps log w)/sin(pi eps)
    with V = W_beta / c_beta (``normalized``) or V = scale * W_beta (the continuation used for
    the derivative kernel when beta = alpha - 1 <= -1/2).
    """

    alpha: float  # the alpha the caller asked about
    shift: int  # 0: W_alpha itself; 1: alpha^2 W_{alpha-1}
    s_lo: float  # float(alpha) (exponent of z split as z**s_lo * z**s_half)
    s_half: float  # +1/2 or -1/2
    m: int
    eps: float
    sign: float
    t: NDArray[np.float64]
    E: NDArray[np.float64]
    F: NDArray[np.float64]
    zc: NDArray[np.float64]
    cz: float
    # the same functions as economised polynomials in y = 4x - 1 on x in [0, 1/2] (x = z or w):
    # the z-series, sign * E(w) and sign * F(w)
    pz: NDArray[np.float64]
    pE: NDArray[np.float64]
    pF: NDArray[np.float64]
    value_at_minus1: float  # V(c = -1)
    value_at_plus1: float  # V(c = +1)


def _mp():
    import mpmath

    return mpmath


@lru_cache(maxsize=256)
def _series(alpha: float, shift: int) -> _Series:
    """Coefficients for V = Jbar_alpha = W_alpha / c_alpha (shift=0, any alpha > -1/2), or for
    V = alpha^2 W_{alpha-1} (shift=1, unnormalised; only needed for -1/2 < alpha <= 1/2,
    alpha != 0, where W_{alpha-1} is the analytic continuation in the exponent; for alpha > 1/2
    the derivative kernel uses shift=0 with alpha - 1)."""
    mp = _mp()
    a_mp = mp.mpf(alpha)
    # s = alpha + 1/2 - shift and eps = s - m, both exactly (no rounding to the working precision)
    s_mp = mp.fadd(a_mp, mp.mpf(0.5) - shift, exact=True)
    m = max(0, int(mp.floor(s_mp + mp.mpf(0.5))))
    eps_mp = mp.fsub(s_mp, m, exact=True)
    lost = 0 if eps_mp == 0 else max(0, int(-mp.log10(abs(eps_mp))) + 1)
    normalized = shift == 0
    with mp.workdps(34 + lost):
        s = s_mp
        eps = eps_mp
        half = mp.mpf(0.5)
        if normalized:
            # V = W/c_beta; c_beta = 2^s Gamma(s)/(2 sqrt(2 pi)), so divide by Gamma(s)
            scale = 1 / mp.gamma(s)
            cz = mp.exp(2 * mp.loggamma(s + half) - mp.loggamma(s + 1) - mp.loggamma(s))
        else:
            # V = alpha^2 W_{alpha-1} = alpha^2 2^s/(2 sqrt(2 pi)) (1-w)^s H
            scale = a_mp**2 * mp.power(2, s) / (2 * mp.sqrt(2 * mp.pi))
            cz = (
                mp.gamma(a_mp + 1) ** 2
                / mp.gamma(a_mp + half)
                * mp.power(2, s)
                / (2 * mp.sqrt(2 * mp.pi))
            )
        # t_n = Gamma(s) (1/2)_n^2 / ((1-s)_n n!) * scale   (n < m; only when s > 0)
        t = []
        tn = mp.gamma(s) * scale if m > 0 else mp.mpf(0)
        for n in range(m):
            t.append(tn)
            if n + 1 < m:
                tn = tn * (n + half) ** 2 / ((n + 1 - s) * (n + 1))
        # paired coefficients: g_k = Gamma(m+k+1/2)^2/(Gamma(k+1-eps) Gamma(m+k+1)),
        #                      f_k = Gamma(m+k+1/2+eps)^2/(Gamma(m+k+1+eps) k!)
        # E_k = (eps/sin(pi eps)) (g_k - f_k)/eps, F_k = f_k   (both times `scale`)
        if eps == 0:
            rho = 1 / mp.pi
        else:
            rho = eps / mp.sin(mp.pi * eps)
        a0 = m + half
        b0 = mp.mpf(m + 1)
        g = mp.gamma(a0) ** 2 / mp.gamma(b0) / mp.gamma(1 - eps)
        f = mp.gamma(a0 + eps) ** 2 / mp.gamma(b0 + eps)
        if eps == 0:
            psi_k1 = mp.digamma(1)
            psi_a = mp.digamma(a0)
            psi_b = mp.digamma(b0)
        E: list[Any] = []
        F: list[Any] = []
        big = mp.mpf(0)
        k = 0
        small_run = 0
        while True:
            a = m + k + half
            b = m + k + 1
            if eps == 0:
                e_k = g * (psi_k1 - 2 * psi_a + psi_b)
            else:
                e_k = (g - f) / eps
            Ek = rho * e_k * scale
            Fk = f * scale
            E.append(Ek)
            F.append(Fk)
            mag = (abs(Ek) + abs(Fk)) * mp.power(2, -k)
            big = max(big, mag)
            small_run = small_run + 1 if mag < _TINY * big else 0
            if small_run >= 3 or k > 2000:
                break
            # recurrences k -> k+1
            g = g * a**2 / ((k + 1 - eps) * b)
            f = f * (a + eps) ** 2 / ((b + eps) * (k + 1))
            if eps == 0:
                psi_k1 += mp.mpf(1) / (k + 1)
                psi_a += 1 / a
                psi_b += mp.mpf(1) / b
            k += 1
        # z-series of 2F1(1/2, 1/2; s+1; z): all terms positive
        zc = []
        term = mp.mpf(1)
        n = 0
        while True:
            zc.append(term)
            if term * mp.power(2, -n) < _TINY or n > 2000:
                break
            term = term * (n + half) ** 2 / ((s + 1 + n) * (n + 1))
            n += 1
        sgn = -1.0 if m % 2 else 1.0
        zc_f = np.array([float(x) for x in zc], dtype=np.float64)
        E_f = np.array([float(x) for x in E], dtype=np.float64)
        F_f = np.array([float(x) for x in F], dtype=np.float64)
        if normalized:
            v_minus = 0.0
            v_plus = 1.0
        else:
            v_minus = float(cz) if s == 0 else math.inf
            v_plus = math.inf
        return _Series(
            alpha=alpha,
            shift=shift,
            s_lo=alpha,
            s_half=0.5 if shift == 0 else -0.5,
            m=m,
            eps=float(eps_mp),
            sign=-1.0 if (m % 2) else 1.0,
            t=np.array([float(x) for x in t], dtype=np.float64),
            E=E_f,
            F=F_f,
            zc=zc_f,
            cz=float(cz),
            pz=_economise(zc_f),
            pE=_economise(sgn * E_f),
            pF=_economise(sgn * F_f),
            value_at_minus1=v_minus,
            value_at_plus1=v_plus,
        )


_CHEB_NODES = 48


def _economise(coef: NDArray[np.float64]) -> NDArray[np.float64]:
    """Power series sum_n coef[n] x^n (convergent beyond x = 1/2; here the nearest singularity is
    at x = 1) -> monomial coefficients in y = 4x - 1 of its Chebyshev interpolant on
    x in [0, 1/2], truncated where the Chebyshev coefficients fall below 1e-18 of the largest.
    With the singularity at y = 3 they decay like (3 + sqrt 8)^-j, so about 25 terms replace the
    45-80 of the raw series (Horner in y is then ~2x cheaper). Nodes, values and the transform are
    computed in numpy's longdouble (80-bit on x86; on platforms where it is plain double the
    interpolant is good to ~1e-14 instead of a few ulps of its maximum on [0, 1/2])."""
    from numpy.polynomial import chebyshev as C

    n = _CHEB_NODES
    ld = np.longdouble  # extended precision where the platform has it (x86: 64-bit mantissa)
    k = np.arange(n, dtype=ld)
    pi = ld(np.pi) + ld(1.2246467991473532e-16)  # pi to extended precision
    y = np.cos(pi * (k + ld(0.5)) / ld(n))
    x = (y + ld(1)) * ld(0.25)
    vals = np.full_like(x, coef[-1])
    for a in coef[-2::-1]:
        vals = vals * x + ld(a)
    cheb = (ld(2) / ld(n)) * (np.cos(pi * np.outer(k, k + ld(0.5)) / ld(n)) @ vals)
    cheb[0] *= ld(0.5)
    big = np.abs(cheb).max()
    if big == 0:
        return np.zeros(1)
    last = int(np.nonzero(np.abs(cheb) > ld(1e-18) * big)[0][-1])
    return np.asarray(C.cheb2poly(cheb[: last + 1]), dtype=np.float64)


def _n_terms(coef: NDArray[np.float64], xmax: float) -> int:
    """Number of leading coefficients needed for |x| <= xmax (first neglected term < 1e-18 of
    the largest term)."""
    if coef.size == 0:
        return 0
    if xmax <= 0.0:
        return 1
    with np.errstate(divide="ignore", under="ignore"):
        mag = np.abs(coef) * np.power(xmax, np.arange(coef.size, dtype=np.float64))
    keep = np.nonzero(mag > _TINY * mag.max())[0]
    return int(keep[-1]) + 1 if keep.size else 1


def _horner(coef: NDArray[np.float64], x: NDArray[np.float64]) -> NDArray[np.float64]:
    if coef.size == 0:
        return np.zeros_like(x)
    r = np.full_like(x, coef[-1])
    for a in coef[-2::-1]:
        r *= x
        r += a
    return r


def _pow_s(x: NDArray[np.float64], ser: _Series) -> NDArray[np.float64]:
    """x**s with s = alpha +- 1/2, written so that the exponent alpha is used exactly."""
    if ser.s_half > 0:
        return np.power(x, ser.s_lo) * np.sqrt(x)
    return np.power(x, ser.s_lo) / np.sqrt(x)


def _eval_series(ser: _Series, c: NDArray[np.float64]) -> NDArray[np.float64]:
    """V(c) for a 1-D float64 array c (NaN -> NaN, c = +-1 handled exactly)."""
    out = np.full(c.shape, np.nan)
    lo = np.nonzero((c < 0.0) & (c > -1.0))[0]
    hi = np.nonzero((c >= 0.0) & (c < 1.0))[0]
    out[c == -1.0] = ser.value_at_minus1
    out[c == 1.0] = ser.value_at_plus1
    # The truncation is fixed (z, w <= 1/2), so a value does not depend on what else is in
    # the array: the vectorised call equals the loop of scalar calls bit for bit.
    if lo.size:
        for i in range(0, lo.size, _CHUNK):
            idx = lo[i : i + _CHUNK]
            cc = c[idx]
            z = (1.0 + cc) * 0.5
            y = 1.0 + 2.0 * cc  # 4 z - 1
            out[idx] = ser.cz * _pow_s(z, ser) * _horner(ser.pz, y)
    if hi.size:
        # H = sum_{n<m} t_n w^n + w^m (sign E(w) - L sign F(w)); the factor w^m is kept exact
        # (outside the economised polynomials) so that L w^m F keeps its relative accuracy
        # where L ~ w^eps is large (w -> 0, eps < 0)
        s = ser.s_lo + ser.s_half
        eps = ser.eps
        sin_pe = math.sin(math.pi * eps)
        for i in range(0, hi.size, _CHUNK):
            idx = hi[i : i + _CHUNK]
            cc = c[idx]
            w = (1.0 - cc) * 0.5
            with np.errstate(divide="ignore"):
                logw = np.log(w)
            if eps == 0.0:
                Lw = logw / math.pi
            else:
                Lw = np.expm1(eps * logw) / sin_pe
            y = 1.0 - 2.0 * cc  # 4 w - 1
            H = _horner(ser.pE, y)
            H -= Lw * _horner(ser.pF, y)
            if ser.m:
                for _ in range(ser.m):
                    H *= w
                H += _horner(ser.t, w)
            # (1 - w)^s = exp(s log1p(-w)), |s log1p(-w)| <= 0.7 s here
            out[idx] = np.exp(s * np.log1p(-w)) * H
    return out


# --------------------------------------------------------------------------------------------
# Cho–Saul closed forms for integer alpha (only where they do not cancel)
# --------------------------------------------------------------------------------------------

_C_INT = {0: 0.5, 1: 0.5, 2: 1.5, 3: 7.5}
# J_n(theta) for n >= 1 cancels as c -> -1 (W_n ~ (1+c)^(n+1/2)); below these c the z-series is
# used instead. Measured: the closed forms are within 7e-15 (n = 3) and 2e-15 (n <= 2) relative
# of 25-digit mpmath on [_CS_LOWER[n], 1].
_CS_LOWER = {0: -1.0, 1: -0.5, 2: -0.5, 3: -0.25}


def _cho_saul_normalized(n: int, c: NDArray[np.float64]) -> NDArray[np.float64]:
    """Jbar_n(c) = J_n(theta) / (2 pi c_n)  (docs/theory.md §A3.1), with pi - theta computed without
    cancellation at both ends (2 arcsin sqrt((1+c)/2)) and sin(theta) = sqrt((1-c)(1+c))."""
    x = 1.0 - np.abs(c)
    ang = 2.0 * np.arcsin(np.sqrt(0.5 * x))  # theta (c >= 0) or pi - theta (c < 0)
    # pi - theta: exactly ang for c < 0; pi - ang (>= pi/2, no cancellation) for c >= 0
    phi = ang + (c >= 0.0) * (math.pi - 2.0 * ang)
    st = np.sqrt(x * (2.0 - x))  # sin(theta) = sqrt((1-c)(1+c))
    if n == 0:
        J = phi
    elif n == 1:
        J = st + phi * c
    elif n == 2:
        J = 3.0 * st * c + phi * (1.0 + 2.0 * c * c)
    else:
        J = st * (15.0 - 11.0 * st * st) + phi * c * (9.0 + 6.0 * c * c)
    return J / (2.0 * math.pi * _C_INT[n])


def _normalized_1d(alpha: float, c: NDArray[np.float64]) -> NDArray[np.float64]:
    """Jbar_alpha on a 1-D array (alpha validated)."""
    ser = _series(alpha, 0)
    if alpha in _C_INT:
        n = int(alpha)
        lo = c < _CS_LOWER[n]
        if not lo.any():
            return _cho_saul_normalized(n, c)
        out = np.empty_like(c)
        hi = ~lo
        out[hi] = _cho_saul_normalized(n, c[hi])
        out[lo] = _eval_series(ser, c[lo])
        return out
    return _eval_series(ser, c)


def _by_alpha(alpha: ArrayLike, c: ArrayLike, fn) -> Any:
    """Validate, broadcast and dispatch fn(alpha_scalar, c_1d) over the unique alphas."""
    c_arr = _check_c(c)
    if np.ndim(alpha) == 0:
        a = _check_alpha_scalar(alpha)
        flat = np.ascontiguousarray(c_arr).reshape(-1)
        return _ret(fn(a, flat).reshape(c_arr.shape))
    a_arr = _check_alpha_array(alpha)
    a_b, c_b = np.broadcast_arrays(a_arr, c_arr)
    af = a_b.reshape(-1)
    cf = np.ascontiguousarray(c_b).reshape(-1)
    out = np.empty(cf.shape)
    for a in np.unique(af):
        sel = af == a
        out[sel] = fn(float(a), cf[sel])
    return _ret(out.reshape(c_b.shape))


# --------------------------------------------------------------------------------------------
# public float64 API
# --------------------------------------------------------------------------------------------


def c_alpha(alpha: ArrayLike) -> Any:
    """c_alpha = E[max(0, z)^(2 alpha)] = 2^(alpha-1) Gamma(alpha+1/2) / sqrt(pi)  (docs/theory.md §A2.5).

    Broadcasts over alpha; raises DomainError for alpha <= -1/2.
    """
    from scipy.special import gamma

    a = _check_alpha_array(alpha)
    return _ret(np.asarray(np.exp2(a - 1.0) * gamma(a + 0.5) / math.sqrt(math.pi)))


def alpha_relu_normalized(alpha: ArrayLike, c: ArrayLike) -> Any:
    """Jbar_alpha(c) = W_alpha(c) / c_alpha, the normalised alpha-ReLU kernel (docs/theory.md §A2.5).

    Computed directly (not as a ratio), by the method described in ``alpha_relu_kernel``.
    Jbar(1) = 1, Jbar(-1) = 0; NaN in c gives NaN.
    """
    return _by_alpha(alpha, c, _normalized_1d)


def alpha_relu_kernel(alpha: ArrayLike, c: ArrayLike) -> Any:
    """W_alpha(c) = E[phi(u) phi(v)], phi(x) = max(0, x)^alpha, unit variances, correlation c.

    docs/theory.md §A2.7 (2) (K0 representation), §2.7(4) (hypergeometric form), §3.1 (integer alpha).
    For general variances multiply by (q11 q22)^(alpha/2) (docs/theory.md §A2.7 (7)).

    Method (relative error <= 2e-15 measured against 30-digit mpmath over c in [-1, 1]):

    * alpha in {0, 1, 2, 3}: Cho–Saul J_n(theta)/(2 pi) with theta = 2 arcsin(sqrt((1-c)/2)),
      sin(theta) = sqrt((1-c)(1+c)), for c >= -1/2 (-1/4 for alpha = 3; every c for alpha = 0);
      nearer to c = -1 they cancel, and the z-series below is used.
    * c < 0: power series in z = (1+c)/2 of the Gauss form
      W = Gamma(a+1)^2/(2 sqrt(2pi) Gamma(a+3/2)) (1+c)^(a+1/2) 2F1(1/2,1/2;a+3/2;z)
      (positive terms; z <= 1/2).
    * c >= 0: the connection (c -> 1) expansion of the same 2F1 in w = (1-c)/2, written uniformly
      in eps = (a+1/2) - round(a+1/2) so that half-integer alpha (log case) and alpha near it are
      as accurate as any other; per-alpha coefficients come from mpmath (cached), and both series
      are evaluated as Chebyshev-economised polynomials.
    * c = 1: c_alpha exactly; c = -1: 0 (also for the step, alpha = 0).

    alpha: scalar or array (> -1/2), broadcast against c. c: values in [-1, 1] (NaN allowed ->
    NaN); anything else raises DomainError. Returns float64 (numpy scalar for scalar input).
    """

    def fn(a: float, cc: NDArray[np.float64]) -> NDArray[np.float64]:
        return _normalized_1d(a, cc) * _c_alpha_float(a)

    return _by_alpha(alpha, c, fn)


def _c_alpha_float(a: float) -> float:
    if a in _C_INT:
        return _C_INT[int(a)]
    return math.exp((a - 1.0) * math.log(2.0) + math.lgamma(a + 0.5)) / math.sqrt(math.pi)


def _dkernel_1d(alpha: float, c: NDArray[np.float64]) -> NDArray[np.float64]:
    """alpha^2 W_{alpha-1}(c) for alpha != 0 (validated)."""
    if alpha > 0.5:
        return (alpha * alpha * _c_alpha_float(alpha - 1.0)) * _normalized_1d(alpha - 1.0, c)
    # -1/2 < alpha <= 1/2: W_{alpha-1} by analytic continuation in the exponent (finite for
    # |c| < 1, +inf at c = 1, and at c = -1 unless alpha = 1/2)
    return _eval_series(_series(alpha, 1), c)


def alpha_relu_dkernel(alpha: ArrayLike, c: ArrayLike) -> Any:
    """dW_alpha/dc = alpha^2 W_{alpha-1}(c) = E[phi'(u) phi'(v)] (Price identity, docs/theory.md §A0,
    §2.7(3); §3.1 for integer alpha).

    * alpha > 1/2: finite on [-1, 1]; at c = 1 it equals alpha^2 c_{alpha-1} = alpha^2 c_alpha /
      (2 alpha - 1).
    * 0 < |alpha| <= 1/2 (alpha > -1/2): finite for |c| < 1, +inf at c = 1 (and at c = -1 unless
      alpha = 1/2). For alpha < 0 the expectation E[phi' phi'] is not absolutely convergent; the
      value returned is dW/dc, i.e. alpha^2 W_{alpha-1} continued analytically in the exponent.
    * alpha = 0 (step): phi' is a Dirac delta; raises DomainError.
    """

    def fn(a: float, cc: NDArray[np.float64]) -> NDArray[np.float64]:
        if a == 0.0:
            raise DomainError(
                "alpha = 0 (step function): phi' is a Dirac delta, so the derivative kernel "
                "E[phi'(u) phi'(v)] is not a function of alpha-ReLU type (dW_0/dc = "
                "1/(2 pi sqrt(1-c^2)))"
            )
        return _dkernel_1d(a, cc)

    return _by_alpha(alpha, c, fn)


def alpha_relu_dnormalized(alpha: ArrayLike, c: ArrayLike) -> Any:
    """Jbar'_alpha(c) = dJbar_alpha/dc = alpha^2/(2 alpha - 1) Jbar_{alpha-1}(c)  (docs/theory.md §A2.5).

    The formula holds for alpha > 1/2 (Jbar'_alpha(1) = alpha^2/(2 alpha - 1)); for
    -1/2 < alpha <= 1/2, alpha != 0 this returns alpha_relu_dkernel / c_alpha (+inf at c = 1).
    alpha = 0 raises DomainError (see alpha_relu_dkernel).
    """

    def fn(a: float, cc: NDArray[np.float64]) -> NDArray[np.float64]:
        if a == 0.0:
            raise DomainError(
                "alpha = 0 (step function): its derivative kernel involves a Dirac delta"
            )
        if a > 0.5:
            return (a * a / (2.0 * a - 1.0)) * _normalized_1d(a - 1.0, cc)
        return _dkernel_1d(a, cc) / _c_alpha_float(a)

    return _by_alpha(alpha, c, fn)


# --------------------------------------------------------------------------------------------
# fixed point of the normalised map
# --------------------------------------------------------------------------------------------


def _one_minus_normalized(alpha: float, x: float) -> float:
    """1 - Jbar_alpha(1 - x) without cancellation for small x (uses the c -> 1 expansion)."""
    c = 1.0 - x
    if x == 0.0:
        return 0.0
    ser = _series(alpha, 0)
    if ser.m == 0 or x > 1.0:
        return 1.0 - float(_normalized_1d(alpha, np.array([c]))[0])
    # Jbar = (1-w)^s [1 + sum_{1<=n<m} t_n w^n + sign w^m (E(w) - L F(w))]
    w = 0.5 * x
    s = alpha + 0.5
    eps = ser.eps
    if eps == 0.0:
        Lw = math.log(w) / math.pi
    else:
        Lw = math.expm1(eps * math.log(w)) / math.sin(math.pi * eps)
    wa = np.array([w])
    rest = ser.sign * w**ser.m * (float(_horner(ser.E, wa)[0]) - Lw * float(_horner(ser.F, wa)[0]))
    t = ser.t.copy()
    t[0] = 0.0
    rest += float(_horner(t, wa)[0])
    return -math.expm1(s * math.log1p(-w)) - (1.0 - w) ** s * rest


def alpha_relu_fixed_point(alpha: float) -> float:
    """e*_alpha: the fixed point of Jbar_alpha in (0, 1)  (docs/theory.md §A2.5; table B2).

    Jbar_alpha is a power series in c with non-negative coefficients summing to 1, hence convex on
    [0, 1] with Jbar(0) > 0 and Jbar(1) = 1; so a fixed point in (0, 1) exists and is unique iff
    Jbar'(1) > 1, i.e. for every alpha > -1/2 except alpha = 1 (Jbar'(1) = alpha^2/(2 alpha - 1)
    for alpha > 1/2 and +inf for alpha <= 1/2). For alpha = 1 (ReLU) the only fixed point is 1,
    which is returned. Solved by a bracketed root finder (Chandrupatla's, meanfield._roots) on
    x = 1 - e using 1 - Jbar(1 - x) computed without cancellation, so e* (and 1 - e*) are accurate to a few ulps even when e* is within
    1e-10 of 1.
    """
    from ._roots import _find_root_scalar

    a = _check_alpha_scalar(alpha)
    if a == 1.0:
        return 1.0

    def h(x: float) -> float:  # (1 - Jbar(1-x)) - x ; > 0 near x = 0 (repelling), < 0 at x = 1
        return _one_minus_normalized(a, x) - x

    # bracket: h(1) = 1 - Jbar(0) - 1 = -Jbar(0) < 0; find x_lo with h(x_lo) > 0
    x_hi = 1.0
    x_lo = 0.5
    while h(x_lo) <= 0.0:
        x_hi = x_lo
        x_lo *= 0.1
        if x_lo < 1e-300:
            raise ConvergenceError(
                f"could not bracket the fixed point of Jbar_alpha for alpha = {a!r}"
            )
    x = _find_root_scalar(h, x_lo, x_hi, xtol=1e-300, rtol=4 * np.finfo(float).eps)
    return 1.0 - x


# --------------------------------------------------------------------------------------------
# mpmath references (slow; for tests, golden files and documentation of the identities)
# --------------------------------------------------------------------------------------------


def _mp_args(alpha: Any, c: Any):
    mp = _mp()
    a = mp.mpf(alpha)
    if not a > mp.mpf(-0.5):
        raise DomainError(f"alpha must be > -1/2, got {alpha!r}")
    cc = mp.mpf(c)
    if mp.isnan(cc):
        return a, cc
    if cc < -1 or cc > 1:
        raise DomainError(f"correlation c must lie in [-1, 1], got {c!r}")
    return a, cc


def _c_alpha_mp(a):
    mp = _mp()
    return mp.power(2, a - 1) * mp.gamma(a + mp.mpf(0.5)) / mp.sqrt(mp.pi)


def _w_gauss_mp(a, c):
    """W_a(c) by the Gauss form (G) (valid for a > -3/2, a != -1, |c| < 1; analytic
    continuation in a for a <= -1/2)."""
    mp = _mp()
    half = mp.mpf(0.5)
    return (
        mp.gamma(a + 1) ** 2
        / (2 * mp.sqrt(2 * mp.pi) * mp.gamma(a + 3 * half))
        * (1 + c) ** (a + half)
        * mp.hyp2f1(half, half, a + 3 * half, (1 + c) / 2)
    )


def _w_series_mp(a, c, dps):
    """docs/theory.md §A2.7 (4), second line (2F1 in c^2); extra precision against its cancellation."""
    mp = _mp()
    extra = 10
    if c < 0:
        extra += int(float((a + mp.mpf(0.5)) * max(0, -mp.log10(1 + c)))) + 5
    with mp.workdps(dps + extra):
        half = mp.mpf(0.5)
        t1 = mp.power(2, a - 1) * mp.gamma((a + 1) / 2) ** 2 * mp.hyp2f1(
            -a / 2, -a / 2, half, c * c
        )
        t2 = c * mp.power(2, a) * mp.gamma(a / 2 + 1) ** 2 * mp.hyp2f1(
            (1 - a) / 2, (1 - a) / 2, 3 * half, c * c
        )
        return (t1 + t2) / (2 * mp.pi)


def _w_angular_mp(a, c):
    """docs/theory.md §A2.7 (5): 2^a Gamma(a+1)/(2 pi) int_{theta-pi/2}^{pi/2} (cos t cos(t-theta))^a dt."""
    mp = _mp()
    th = mp.acos(c)
    def f(t):
        prod = mp.cos(t) * mp.cos(t - th)
        return prod**a if prod > 0 else mp.mpf(0)

    return mp.power(2, a) * mp.gamma(a + 1) / (2 * mp.pi) * mp.quad(f, [th - mp.pi / 2, mp.pi / 2])


def alpha_relu_kernel_mp(alpha: Any, c: Any, dps: int = 30, method: str = "gauss") -> Any:
    """W_alpha(c) in mpmath at ``dps`` digits (returns an mpf).

    method:
      "gauss"   (default) the Gauss form (G) of the module docstring, via mpmath.hyp2f1 (which
                treats z -> 1 and the logarithmic cases itself, with extra precision);
      "k0"      the K0 integral representation, docs/theory.md §A2.7 (2) (slow: seconds);
      "series"  the c^2-hypergeometric form, docs/theory.md §A2.7 (4);
      "angular" the angular integral, docs/theory.md §A2.7 (5).
    c = 1 gives c_alpha, c = -1 gives 0. Like every mpmath function here, it works at
    max(dps + 5, mpmath.mp.dps) digits (never below the ambient precision, so mpmath.diff and
    friends can be applied to it) and returns an mpf with that many digits.
    """
    mp = _mp()
    with mp.workdps(max(dps + 5, mp.mp.dps)):
        a, cc = _mp_args(alpha, c)
        if mp.isnan(cc):
            return cc
        if cc == 1:
            val = _c_alpha_mp(a)
        elif cc == -1:
            val = mp.mpf(0)
        elif method == "gauss":
            val = _w_gauss_mp(a, cc)
        elif method == "k0":
            val = bessel_k0_representation(alpha, c, dps=dps)
        elif method == "series":
            val = _w_series_mp(a, cc, mp.mp.dps)
        elif method == "angular":
            val = _w_angular_mp(a, cc)
        else:
            raise ValueError(f"unknown method {method!r}")
        return +val


def bessel_k0_representation(alpha: Any, c: Any, dps: int = 30) -> Any:
    """docs/theory.md §A2.7 (2): W_alpha(c) = (1-c^2)^(alpha+1/2)/(2 pi) int_0^inf y^alpha e^(c y) K0(y) dy,
    for |c| < 1, evaluated with mpmath quadrature (tanh-sinh, with breakpoints at the decay
    length 1/(1-c)). Slow (seconds at 30 digits)."""
    mp = _mp()
    with mp.workdps(max(dps + 5, mp.mp.dps)):
        a, cc = _mp_args(alpha, c)
        if not (-1 < cc < 1):
            raise DomainError(f"the K0 representation needs |c| < 1, got {c!r}")
        pts = [mp.mpf(0), mp.mpf(1)]
        if cc > 0:
            ell = 1 / (1 - cc)
            pts += [x * ell for x in (1, 10, 100) if x * ell > 1]
        pts.append(mp.inf)
        integral = mp.quad(lambda y: y**a * mp.exp(cc * y) * mp.besselk(0, y), pts)
        val = (1 - cc * cc) ** (a + mp.mpf(0.5)) / (2 * mp.pi) * integral
        return +val


def alpha_relu_kernel_quad2d_mp(alpha: Any, c: Any, dps: int = 20) -> Any:
    """W_alpha(c) by direct 2-D quadrature of the Gaussian expectation E[phi(u) phi(v)].

    With (z1, z2) standard normal, u = z1, v = c z1 + sqrt(1-c^2) z2 and polar coordinates
    (z1, z2) = r (cos psi, sin psi), u = r cos psi and v = r cos(psi - theta), theta = arccos c,
    so the positive quadrant is psi in (theta - pi/2, pi/2) and

        W = (1/2pi) int_0^inf int_{theta-pi/2}^{pi/2} r^(2a+1) (cos psi cos(psi-theta))^a
            e^(-r^2/2) dpsi dr,

    integrated numerically as a 2-D tanh-sinh rule (mpmath.quad over the rectangle); no Gamma,
    hypergeometric or Bessel identity is used, so this is an independent check. Slow: about 5-20 s
    at dps = 10-20; the result is good to about dps digits (measured 1e-18..1e-27 relative
    for dps 12..20 at |c| <= 0.99)."""
    mp = _mp()
    with mp.workdps(max(dps + 5, mp.mp.dps)):
        a, cc = _mp_args(alpha, c)
        if mp.isnan(cc):
            return cc
        if cc == 1:
            return +_c_alpha_mp(a)
        if cc == -1:
            return mp.mpf(0)
        th = mp.acos(cc)

        def f(r, psi):
            prod = mp.cos(psi) * mp.cos(psi - th)
            if prod <= 0:
                return mp.mpf(0)
            return r ** (2 * a + 1) * prod**a * mp.exp(-r * r / 2)

        val = mp.quad(f, [0, 2, mp.inf], [th - mp.pi / 2, mp.pi / 2]) / (2 * mp.pi)
        return +val


def three_term_recurrence(alpha: ArrayLike, c: ArrayLike, dps: int | None = None) -> Any:
    """Right-hand side of the recurrence in the exponent (docs/theory.md §A2.7 (3)):

        W_{alpha+1}(c) = (2 alpha + 1) c W_alpha(c) + alpha^2 (1 - c^2) W_{alpha-1}(c),

    with alpha^2 W_{alpha-1} = dW_alpha/dc (Price); for alpha = 0 that term is
    sqrt(1-c^2)/(2 pi). With dps=None it is evaluated in float64 (vectorised); with an integer
    dps, in mpmath (scalars only) using the Gauss form, so it can be compared with
    alpha_relu_kernel_mp(alpha + 1, c)."""
    if dps is not None:
        mp = _mp()
        with mp.workdps(max(dps + 5, mp.mp.dps)):
            a, cc = _mp_args(alpha, c)
            if abs(cc) == 1:
                price_term = mp.mpf(0)
            elif a == 0:
                price_term = mp.sqrt(1 - cc * cc) / (2 * mp.pi)
            else:
                price_term = a * a * (1 - cc * cc) * _w_gauss_mp(a - 1, cc)
            first = (2 * a + 1) * cc * alpha_relu_kernel_mp(alpha, c, dps=dps + 5)
            return +(first + price_term)

    c_arr = _check_c(c)

    def fn(a: float, cc: NDArray[np.float64]) -> NDArray[np.float64]:
        one_m_c2 = (1.0 - cc) * (1.0 + cc)
        if a == 0.0:
            second = np.sqrt(one_m_c2) / (2.0 * math.pi)
        else:
            with np.errstate(invalid="ignore"):
                second = one_m_c2 * _dkernel_1d(a, cc)
            second = np.where(np.abs(cc) == 1.0, 0.0, second)
        return (2.0 * a + 1.0) * cc * _normalized_1d(a, cc) * _c_alpha_float(a) + second

    return _by_alpha(alpha, c_arr, fn)
