"""Mean-field maps of vanilla deep networks (Poole et al. 2016; Schoenholz et al. 2017).

Conventions (docs/theory.md §A0): variances, fan-in normalisation W ~ N(0, sigma_w2 / N),
b ~ N(0, sigma_b2); q is the pre-activation second moment, c the correlation of two inputs.
All functions broadcast over numpy arrays and return float64 arrays (0-d for scalars).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import gaussian
from .activations import Activation, get_activation
from .errors import DomainError, MeanfieldError
from ._memory import check_memory, format_count


def _act(activation) -> Activation:
    return get_activation(activation)


def check_variance(name: str, value, *, positive: bool = False) -> np.ndarray:
    """Validate a variance argument at the API boundary; name the bad value."""
    arr = np.asarray(value, dtype=float)
    if not np.all(np.isfinite(arr)):
        raise DomainError(f"{name} must be finite, got {_show(arr)}")
    if np.any(arr < 0) or (positive and np.any(arr <= 0)):
        bad = arr[(arr <= 0) if positive else (arr < 0)].flat[0]
        raise DomainError(f"{name} must be {'positive' if positive else 'non-negative'} "
                          f"(it is a variance), got {bad:g}")
    return arr


def check_correlation(name: str, value) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    if not np.all(np.isfinite(arr)):
        raise DomainError(f"{name} must be finite, got {_show(arr)}")
    if np.any(np.abs(arr) > 1):
        bad = arr[np.abs(arr) > 1].flat[0]
        raise DomainError(f"{name} is a correlation and must lie in [-1, 1], got {bad:g}")
    return arr


def check_depth(depth: Any, name: str = "depth", *, in_float_range: bool = False) -> int:
    """A positive integer; ``in_float_range``: also at most 1e300, for computations that work
    with the depth as a float (L * excess, log L)."""
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) and not (
            isinstance(depth, float) and depth.is_integer()):
        raise DomainError(f"{name} must be a positive integer, got {depth!r}")
    d = int(depth)
    if d < 1:
        raise DomainError(f"{name} must be >= 1, got {d}")
    if in_float_range and d > _MAX_DEPTH:
        raise DomainError(f"{name} = {format_count(d)} is past the float range this "
                          f"computation works in ({name} <= 1e300)")
    return d


def _show(arr: np.ndarray) -> str:
    bad = arr[~np.isfinite(arr)] if arr.ndim else arr
    return f"{float(np.ravel(bad)[0])}"


def length_map(activation, q, sigma_w2, sigma_b2) -> np.ndarray:
    """Length map q^l = sigma_w2 V_phi(q^{l-1}) + sigma_b2 (docs/theory.md §A1.2)."""
    act = _act(activation)
    return sigma_w2 * gaussian.v_phi(act, q) + np.asarray(sigma_b2, dtype=float)


def length_map_slope(activation, q, sigma_w2) -> np.ndarray:
    """d q^l / d q^{l-1} = sigma_w2 dV_phi/dq = chi_1 + sigma_w2 E[phi'' phi] (docs/theory.md §A1.2)."""
    return np.asarray(sigma_w2, dtype=float) * gaussian.dv_phi(_act(activation), q)


def covariance_map(activation, q1, q2, q12, sigma_w2, sigma_b2) -> np.ndarray:
    """q_ab^l = sigma_w2 W_phi(q_aa, q_bb, q_ab) + sigma_b2 (docs/theory.md §A1.3), in covariance units."""
    q1, q2, q12 = (np.asarray(a, dtype=float) for a in (q1, q2, q12))
    with np.errstate(invalid="ignore", divide="ignore"):
        den = np.sqrt(q1 * q2)
        c = np.where(den > 0, q12 / np.where(den > 0, den, 1.0), 1.0)
    return sigma_w2 * gaussian.w_phi(_act(activation), q1, q2, np.clip(c, -1.0, 1.0)) + sigma_b2


def correlation_map(activation, c, q, sigma_w2, sigma_b2) -> np.ndarray:
    """Next-layer correlation of two inputs of equal length q (docs/theory.md §A1.3):

    C(c) = (sigma_w2 W_phi(q, q, q c) + sigma_b2) / (sigma_w2 V_phi(q) + sigma_b2).
    At q = q* this is the C-map; C(1) = 1 exactly.
    """
    act = _act(activation)
    c = np.asarray(c, dtype=float)
    num = sigma_w2 * gaussian.w_phi(act, q, q, c) + sigma_b2
    den = sigma_w2 * gaussian.v_phi(act, q) + sigma_b2
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    # c = 1 maps to 1 exactly; the quadrature would otherwise leave a 1e-16 residue.
    out = np.where(c == 1.0, 1.0, out)
    return np.clip(out, -1.0, 1.0) if np.all(np.isfinite(out)) else np.where(
        np.isfinite(out), np.clip(out, -1.0, 1.0), np.nan)


def chi_1(activation, q, sigma_w2) -> np.ndarray:
    """chi_1 = sigma_w2 E[phi'(sqrt(q) z)^2] (docs/theory.md §A1.3): slope of the C-map at c = 1."""
    return np.asarray(sigma_w2, dtype=float) * gaussian.v_dphi(_act(activation), q)


def chi_c(activation, q, c, sigma_w2) -> np.ndarray:
    """chi_c = sigma_w2 E[phi'(u) phi'(v)] at lengths q, correlation c (docs/theory.md §A1.3, Price identity)."""
    return np.asarray(sigma_w2, dtype=float) * gaussian.w_dphi(_act(activation), q, q, c)


def _settled(c_next: float, c: float) -> bool:
    """The correlation has stopped moving: equal, or a rounding 2-cycle one ulp wide."""
    return c_next == c or abs(c_next - c) <= np.finfo(float).eps * abs(c)


@dataclass(frozen=True)
class Trajectory:
    """q^l and c^l for l = 0..depth of two inputs through a vanilla network (index 0 = start)."""

    activation: str
    sigma_w2: float
    sigma_b2: float
    depth: int
    q: list[float]
    c: list[float]

    def to_dict(self) -> dict:
        return {"activation": self.activation, "sigma_w2": self.sigma_w2, "sigma_b2": self.sigma_b2,
                "depth": self.depth, "q": list(self.q), "c": list(self.c)}


# Hermite-series maps (docs/theory.md §A1.3 with §A0's Mehler expansion): at one length q,
# phi(sqrt(q) z) = sum_k a_k He_k(z) / sqrt(k!) gives V_phi(q) = sum_k a_k^2 and
# W_phi(q, q, c) = sum_k a_k^2 c^k, so a layer costs one n-node Gauss-Hermite transform and a
# polynomial instead of a 1-D and a 2-D adaptive quadrature (~3 ms).  A node count is used where
# the squared coefficients of both phi and phi' in its last quarter hold at most _SERIES_TAIL of
# their sum: the aliasing error of the sums is then of that order (measured for tanh, sigmoid,
# silu, softplus, erf from q = 1e-8 to 100 against expect1 / expect2: <= 3e-14 relative).  Larger
# node counts are only taken where needed (cost); gaussian._hermite polishes scipy's nodes, whose
# asymptotic form from ~150 nodes on left E[z^2] off by ~1e-14 (silu at q = 2.5, 256 nodes: W
# within 2e-16 of an order-16 expect2, which the default order 8 misses by 1.5e-14).
_SERIES_NODES = (64, 128, 256, 512)
_SERIES_TAIL = 1e-16
# the coefficients kept: those before the point where the rest hold below this share of V
_SERIES_KEEP = 1e-17
# resolution is decided at this multiple of the largest q seen, so that a growing length does
# not re-decide it every layer (phi(sqrt(q) z) only sharpens as q grows); 512 nodes resolve tanh
# to q ~ 2, sigmoid to q ~ 15 (larger rules: gaussian._hermite_basis takes 0.2 s at 1024)
_SERIES_HEADROOM = 1.05
# iterate() below this depth stays with quadrature (see there)
_SERIES_MIN_LAYERS = 64


class _HermiteMaps:
    """V_phi, V_phi' and W_phi(q, q, .) at one length from the Hermite coefficients (smooth phi),
    on the symmetric rule folded in half (gaussian.hermite_half_rule)."""

    def __init__(self, act: Activation):
        self.act = act
        self.n = 0
        self.q_ok = -1.0  # the node count self.n resolves every q <= q_ok
        self.q_bad = math.inf  # no node count resolves q >= q_bad

    def _coefficients(self, f, q: float, even: np.ndarray, odd: np.ndarray) -> np.ndarray:
        return gaussian.hermite_half_coefficients(*gaussian.hermite_half_sums(f, q, self.xp), even, odd)

    def _use(self, n: int, keep: int | None = None) -> None:
        self.xp, self.wp, self.even, self.odd = gaussian.hermite_half_rule(n, n if keep is None else keep)

    def ready(self, q: float) -> bool:
        """Whether the series resolves phi(sqrt(q) z) (decided once per range of q)."""
        if q <= self.q_ok:
            if q >= self.q_ok / 16 or self.n == _SERIES_NODES[0]:
                return True
            # a shrinking length: a smaller rule may resolve it now
            self.n, self.q_ok = _SERIES_NODES[0], -1.0
        if not (math.isfinite(q) and q >= 0) or q >= self.q_bad:
            return False
        target = max(_SERIES_HEADROOM * q, 1e-300)
        for n in _SERIES_NODES:
            if n < self.n:
                continue
            self._use(n)
            tails = []
            with np.errstate(all="ignore"):
                for f in (self.act.fn, self.act.d1):
                    a2 = self._coefficients(f, target, self.even, self.odd) ** 2
                    tot = float(a2.sum())
                    tails.append(math.isfinite(tot) and float(a2[3 * n // 4:].sum()) <= _SERIES_TAIL * tot)
                    if f is self.act.fn:
                        rest = np.cumsum(a2[::-1])
                        keep = n - int(np.searchsorted(rest, _SERIES_KEEP * tot))
            if all(tails):
                self.n, self.q_ok, self.keep = n, target, max(2, min(n, keep + 2))
                self._use(n, self.keep)
                self.k = np.arange(self.keep, dtype=float)
                return True
        if self.n:
            self._use(self.n, self.keep)
        self.q_bad = target
        return False

    def at(self, q: float) -> tuple[float, float, np.ndarray]:
        """(V_phi(q), V_phi'(q), a_k^2) with the node count :meth:`ready` chose."""
        a2 = self._coefficients(self.act.fn, q, self.even, self.odd) ** 2
        u = math.sqrt(q) * self.xp
        d1 = self.act.d1
        vd = float(self.wp @ (d1(u) ** 2 + d1(-u) ** 2))
        return float(a2.sum()), vd, a2

    def w(self, a2: np.ndarray, c: float) -> float:
        """W_phi(q, q, c) = sum_k a_k^2 c^k."""
        return float(a2 @ np.power(c, self.k))

    def d1_squares(self, q: float) -> np.ndarray:
        """b_k^2 of phi'(sqrt(q) z): E[phi'(u) phi'(v)] = sum_k b_k^2 c^k (resolved by :meth:`ready`,
        which checks phi' too)."""
        return self._coefficients(self.act.d1, q, self.even, self.odd) ** 2


class _Layer:
    """One layer of the length and correlation maps (docs/theory.md §A1.2-1.3) for two inputs of equal
    length: ``step(q, c, remaining)`` gives (q^{l+1}, c^{l+1}).

    Smooth phi without closed forms read V, V' and the C-map from the Hermite series at each
    layer's q (:class:`_HermiteMaps`), where it resolves phi; elsewhere quadrature, and once the
    length has converged a Chebyshev table of W(q*, q*, .) (exact to ~1e-15 for smooth phi).
    Closed forms are used where the activation has them.  Once q has converged to working
    precision (|q^{l+1} - q^l| <= 1e-15 q^l) it is held there, so further layers cost only the
    correlation map at that length."""

    def __init__(self, act: Activation, sw: float, sb: float, *, series: bool = True):
        self.act, self.sw, self.sb = act, sw, sb
        self.table = None
        self.smooth = act.closed_forms.get("w") is None and not act.kinks
        self.series = _HermiteMaps(act) if series and self.smooth and act.d1 is not None else None
        self._at = (None, None)  # the last length's series moments
        self.frozen: float | None = None  # the converged length, once reached

    def _moments(self, q: float):
        """(V, V', a_k^2) from the series, or None where it does not resolve phi at q."""
        if self._at[0] == q:
            return self._at[1]
        m = self.series.at(q) if self.series is not None and self.series.ready(q) else None
        self._at = (q, m)
        return m

    def qmap(self, q: float) -> float:
        m = self._moments(q)
        with np.errstate(over="ignore"):  # an overflow to inf is step's ConvergenceError
            return float(self.sw * (m[0] if m is not None else gaussian.v_phi(self.act, q)) + self.sb)

    def cmap(self, c: float, q: float, q_next: float | None = None) -> float:
        """The next correlation from lengths q (this layer) and q_next (the next, = qmap(q))."""
        if not (q > 0 or self.sb > 0):
            return 1.0
        if c == 1.0:
            return 1.0
        m = self._moments(q)
        if q_next is None:
            q_next = self.qmap(q)
        if not q_next > 0:
            # the series' next length underflowed to 0 (phi ~ x^3 near 0, no bias), where
            # correlation_map's quadratures still hold the ratio's digits
            return float(correlation_map(self.act, c, q, self.sw, self.sb))
        if m is not None:
            return float(min(1.0, max(-1.0, (self.sw * self.series.w(m[2], c) + self.sb) / q_next)))
        if self.table is not None and self.table.q == q:
            return float(np.clip((self.sw * self.table.w(c) + self.sb) / q_next, -1.0, 1.0))
        return float(correlation_map(self.act, c, q, self.sw, self.sb))

    def step(self, q: float, c: float, remaining: int) -> tuple[float, float]:
        act, sw, sb = self.act, self.sw, self.sb
        if self.frozen is not None:
            q = self.frozen
            return q, self.cmap(c, q, q)
        q_next = self.qmap(q)
        if not np.isfinite(q_next):
            from .errors import ConvergenceError
            raise ConvergenceError(f"q exceeded the float range (1.8e308) ({act.name}, sigma_w2={sw:g}, "
                                   f"sigma_b2={sb:g}): the length map diverges or its fixed point lies "
                                   f"beyond float range")
        c_next = self.cmap(c, q, q_next)
        if abs(q_next - q) <= 1e-15 * q:
            self.frozen = q_next
            if (self.smooth and self.table is None and remaining > 64 and q_next > 0
                    and self._moments(q_next) is None):
                self.table = gaussian.CorrelationTable(act, q_next, derivative=False)
        return q_next, c_next

    def chi(self, q: float) -> float:
        """The per-layer gradient factor sigma_w2 E[phi'(sqrt(q) z)^2] (docs/theory.md §A1.5)."""
        m = self._moments(q)
        return float(self.sw * (m[1] if m is not None else gaussian.v_dphi(self.act, q)))


def ntk_pair(activation, sigma_w2: float, sigma_b2: float, depth: int, q0: float,
             k0: float) -> tuple[np.ndarray, np.ndarray]:
    """Theta(x, x) and Theta(x, x') of a vanilla MLP (NTK parametrisation, docs/theory.md §A4.1, 4.2)
    after each of ``depth`` nonlinear layers, for two inputs whose first pre-activations have
    length q0 and covariance k0 (Sigma^1 = sigma_w2 x.x'/d + sigma_b2 = Theta^1): entry l - 1 is
    kernels.kernel_trace's Theta^{l+1} for those inputs.  A fast specialisation for two inputs of
    equal length: one (q, c) pair per layer, W and E[phi' phi'] from the Hermite series where it
    resolves phi (:class:`_HermiteMaps`), else gaussian.w_phi / w_dphi at that one pair."""
    act = _act(activation)
    sw = float(check_variance("sigma_w2", sigma_w2))
    sb = float(check_variance("sigma_b2", sigma_b2))
    depth = check_depth(depth)
    check_memory(16 * depth, f"the NTK of {format_count(depth)} layers")
    lay = _Layer(act, sw, sb)
    q, k = float(q0), float(k0)
    td, to = q, k
    diag, off = np.empty(depth), np.empty(depth)
    with np.errstate(over="ignore", invalid="ignore"):
        for layer in range(depth):
            c = min(1.0, max(-1.0, k / q)) if q > 0 else 0.0
            m = lay._moments(q)
            if m is not None:
                v, vd, a2 = m
                w, wd = lay.series.w(a2, c), lay.series.w(lay.series.d1_squares(q), c)
            else:
                v, vd = float(gaussian.v_phi(act, q)), float(gaussian.v_dphi(act, q))
                w, wd = float(gaussian.w_phi(act, q, q, c)), float(gaussian.w_dphi(act, q, q, c))
            q, k = sw * v + sb, sw * w + sb
            td, to = td * (sw * vd) + q, to * (sw * wd) + k
            diag[layer], off[layer] = td, to
    return diag, off


def iterate(activation, sigma_w2: float, sigma_b2: float, depth: int, q0: float = 1.0,
            c0: float = 0.5) -> Trajectory:
    """Iterate the length and correlation maps (docs/theory.md §A1.2-1.3) for ``depth`` layers.

    q0 and c0 are the first layer's pre-activation length and the two inputs' correlation;
    q[l], c[l] are the values after l further layers.  Both inputs have the same length.
    """
    act = _act(activation)
    sw = float(check_variance("sigma_w2", sigma_w2))
    sb = float(check_variance("sigma_b2", sigma_b2))
    depth = check_depth(depth)
    # two Python lists of depth + 1 floats (8-byte pointers to 24-byte floats)
    check_memory((depth + 1) * 64, f"the trajectory of {format_count(depth)} layers",
                 "maps.propagate gives the last layer's q, c and gradient ratio at any depth")
    q = float(check_variance("q0", q0))
    c = float(check_correlation("c0", c0))
    qs, cs = [q], [c]
    # A short trajectory is cheaper by quadrature (~5 ms a layer) than the series' one-time cost
    # (its Gauss-Hermite rule imports scipy.special, ~0.3-0.6 s cold): the CLI's iterate.
    layer_map = _Layer(act, sw, sb, series=depth >= _SERIES_MIN_LAYERS)
    for layer in range(depth):
        try:
            q_next, c_next = layer_map.step(q, c, depth - layer)
        except MeanfieldError as exc:
            raise type(exc)(f"after {layer + 1} layers: {exc}") from None
        if abs(q_next - q) <= 1e-15 * q and _settled(c_next, c):
            qs.extend([q] * (depth - layer))
            cs.extend([c] * (depth - layer))
            break
        q, c = q_next, c_next
        qs.append(q)
        cs.append(c)
    return Trajectory(act.name, sw, sb, depth, qs, cs)


@dataclass(frozen=True)
class DepthState:
    """q^L, c^L and the gradient ratio after ``depth`` layers, at a cost that does not grow with
    depth (:func:`propagate`).

    ``method``: "exact" (every layer iterated), "converged" (q and c reached their fixed point
    to working precision after ``layers_iterated`` layers; the rest is that fixed point),
    "geometric" (q reached q* and c's steps shrink by a constant ratio chi_c, docs/theory.md
    §A1.3: the rest is the geometric series of those steps) or "ode"
    (after ``layers_iterated`` exact layers the maps were still moving slowly and monotonically;
    the remaining layers follow the maps' continuum limit dy/dl = map(y) - y, whose relative
    error is of the order of the per-layer change, below 1e-3 there).
    """

    activation: str
    sigma_w2: float
    sigma_b2: float
    depth: int
    q: float
    c: float
    log10_gradient_ratio: float  # log10 prod_{l < depth} sigma_w2 E[phi'(h^l)^2] (docs/theory.md §A1.5)
    layers_iterated: int
    method: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


EXACT_LAYERS = 2000
_MAX_DEPTH = 1e300


def _geometric(ratio: float, ratio_prev: float, step: float) -> bool:
    """Whether the rest of c's approach to c* is a geometric series to within 1e-15 (absolute):
    the step ratio r has settled (to 1e-10) at a rate bounded away from 1, and the error of
    summing the steps with it, ~ |step| |r - r_prev| / (1 - |r|)^2 (the ratio's drift from the
    map's quadratic term, and its rounding noise, summed over the series), is below 1e-15.
    Rates within 1e-3 of 1 are left to the iteration: an algebraic approach (a critical point)
    also has slowly varying ratios, 1 - 2 / l at layer l."""
    a = abs(ratio)
    drift = abs(ratio - ratio_prev)
    return a <= 0.999 and drift <= 1e-10 * a and abs(step) * drift <= 1e-15 * (1.0 - a) ** 2


def propagate(activation, sigma_w2: float, sigma_b2: float, depth: int, q0: float = 1.0,
              c0: float = 0.5, *, exact_layers: int = EXACT_LAYERS) -> DepthState:
    """q^L, c^L and log10 of the gradient norm ratio prod_l chi(q^l) after ``depth`` layers
    (docs/theory.md §A1.2, 1.3, 1.5), for any depth at a bounded cost: at most ``exact_layers`` layers
    are iterated one by one; see :class:`DepthState` for what happens after that."""
    act = _act(activation)
    sw = float(check_variance("sigma_w2", sigma_w2))
    sb = float(check_variance("sigma_b2", sigma_b2))
    depth = check_depth(depth, in_float_range=True)
    q = float(check_variance("q0", q0))
    c = float(check_correlation("c0", c0))
    layer_map = _Layer(act, sw, sb)
    g = 0.0
    dq_prev = dc_prev = ratio_prev = None
    monotone = True
    for layer in range(min(depth, exact_layers)):
        chi = layer_map.chi(q)
        g += math.log10(chi) if chi > 0 else -math.inf
        try:
            q_next, c_next = layer_map.step(q, c, depth - layer)
        except MeanfieldError as exc:
            raise type(exc)(f"after {layer + 1} layers: {exc}") from None
        if abs(q_next - q) <= 1e-15 * q and _settled(c_next, c):
            rest = depth - layer - 1
            g += rest * (math.log10(chi) if chi > 0 else -math.inf)
            return DepthState(act.name, sw, sb, depth, q, c, g, layer + 1, "converged")
        dq, dc = q_next - q, c_next - c
        if layer_map.frozen is not None and dc_prev:
            ratio = dc / dc_prev
            if ratio_prev is not None and _geometric(ratio, ratio_prev, dc):
                # q is at q* and c in the linear regime of c*: the steps shrink by chi_c each
                # layer, c^L = c^{l+1} + dc (r + r^2 + ... + r^rest)
                rest = depth - layer - 1
                c_end = c_next + dc * ratio * -math.expm1(rest * math.log(abs(ratio))) / (1.0 - ratio) \
                    if ratio > 0 else c_next + dc * ratio * (1.0 - ratio ** rest) / (1.0 - ratio)
                g += rest * (math.log10(chi) if chi > 0 else -math.inf)
                return DepthState(act.name, sw, sb, depth, q_next, float(np.clip(c_end, -1.0, 1.0)), g,
                                  layer + 1, "geometric")
            ratio_prev = ratio
        if dq_prev is not None:
            monotone = (dq * dq_prev >= 0 and abs(dq) <= abs(dq_prev) * (1 + 1e-12)
                        and dc * dc_prev >= 0 and abs(dc) <= abs(dc_prev) * (1 + 1e-12))
        dq_prev, dc_prev = dq, dc
        q, c = q_next, c_next
    done = min(depth, exact_layers)
    if done == depth:
        return DepthState(act.name, sw, sb, depth, q, c, g, done, "exact")
    if not monotone:
        # an oscillating approach (a decreasing length map): no continuum limit, every layer
        for layer in range(done, depth):
            chi = layer_map.chi(q)
            g += math.log10(chi) if chi > 0 else -math.inf
            q, c = layer_map.step(q, c, depth - layer)
        return DepthState(act.name, sw, sb, depth, q, c, g, depth, "exact")
    q, c, g = _continuum(layer_map, q, c, g, done, depth)
    return DepthState(act.name, sw, sb, depth, q, c, g, done, "ode")


def _continuum(layer_map: _Layer, q: float, c: float, g: float, start: int, depth: int):
    """Layers ``start`` .. ``depth`` in the maps' continuum limit, in t = log(l) (the approach to
    a fixed point is algebraic here, so the steps grow with l and their number depends only on
    log(depth / start)).

    Stage 1 (q still moving): dq/dl = V-map(q) - q, dc/dl = C-map(c) - c, dg/dl = log10 chi(q),
    until q is within ~1e-8 of its fixed point (a terminal event, then Newton steps to q*: an
    explicit solver would otherwise be held to steps of ~xi_q layers by the converged length).
    Stage 2 (q = q*): g grows by log10 chi(q*) per layer and c follows the C-map at q*
    (tabulated), until its per-layer change is below 1e-13 (a thousand times rounding), where c
    is left: at a critical point that leaves 1 - c at ~1e-8 instead of smaller (ReLU at (2, 0):
    1 - c^l ~ 9 pi^2 / (2 l^2)).
    """
    from scipy.integrate import solve_ivp

    from .errors import ConvergenceError

    act, sw, sb = layer_map.act, layer_map.sw, layer_map.sb
    t0, t1 = math.log(start), math.log(depth)

    qmap, cmap = layer_map.qmap, layer_map.cmap

    def solve(rhs, y0, ta, events, rtol=1e-9):
        with np.errstate(all="ignore"):
            sol = solve_ivp(rhs, (ta, t1), y0, method="RK45", rtol=rtol, atol=1e-300, events=events)
        if not sol.success:
            raise ConvergenceError(f"the continuum limit of the maps beyond layer {start} failed: {sol.message}")
        return sol

    if abs(qmap(q) - q) > 1e-15 * q:
        def rhs1(t, y):
            el, qq, cc = math.exp(t), max(float(y[0]), 0.0), 1.0 - float(np.clip(y[1], 0.0, 2.0))
            chi = layer_map.chi(qq)
            return [el * (qmap(qq) - qq), el * (cc - cmap(cc, qq)), el * (math.log10(chi) if chi > 0 else -1e300)]

        def q_done(t, y):
            qq = max(float(y[0]), 0.0)
            return abs(qmap(qq) - qq) - 1e-8 * qq

        q_done.terminal = True
        sol = solve(rhs1, [q, 1.0 - c, g], t0, [q_done])
        q, e, g = (float(v) for v in sol.y[:, -1])
        c = 1.0 - float(np.clip(e, 0.0, 2.0))
        if sol.status == 0:
            return q, c, g
        t0 = float(sol.t[-1])
        for _ in range(3):  # Newton on sigma_w2 V(q) + sigma_b2 - q
            slope = float(length_map_slope(act, q, sw))
            if slope != 1.0:
                q = q - (qmap(q) - q) / (slope - 1.0)
    # stage 2: q = q*
    chi = layer_map.chi(q)
    g += (depth - math.exp(t0)) * (math.log10(chi) if chi > 0 else -math.inf)
    if not (q > 0 or sb > 0) or c == 1.0:
        return q, c, g
    if (layer_map.smooth and layer_map._moments(q) is None
            and (layer_map.table is None or layer_map.table.q != q)):
        layer_map.table = gaussian.CorrelationTable(act, q, derivative=False)

    def cnext(cc):
        return cmap(cc, q, q)

    def rhs2(t, y):
        cc = 1.0 - float(np.clip(y[0], 0.0, 2.0))
        return [math.exp(t) * (cc - cnext(cc))]

    def c_done(t, y):
        cc = 1.0 - float(np.clip(y[0], 0.0, 2.0))
        return abs(cnext(cc) - cc) - 1e-13

    c_done.terminal = True
    sol = solve(rhs2, [1.0 - c], t0, [c_done], rtol=1e-7)
    return q, 1.0 - float(np.clip(sol.y[0, -1], 0.0, 2.0)), g


__all__ = ["propagate", "ntk_pair", "DepthState", "length_map", "length_map_slope", "covariance_map", "correlation_map", "chi_1", "chi_c",
           "iterate", "Trajectory", "check_variance", "check_correlation", "check_depth"]
