"""Residual networks on the edge of chaos (Yang & Schoenholz 2017; docs/theory.md §A2.3).

Two architectures of width N -> infinity, with fan-in normalised weights (docs/theory.md §A2.1):

* ``resnet-reduced`` (RRN):  h^l = W^l x^{l-1} + b^l,  x^l = phi(h^l) + x^{l-1};
* ``resnet-full``    (FRN):  h^l = W^l x^{l-1} + b^l,  x^l = V^l phi(h^l) + x^{l-1} + a^l,

W ~ N(0, sigma_w2/N), V ~ N(0, sigma_v2/N), b ~ N(0, sigma_b2), a ~ N(0, sigma_a2).  The RRN is
the FRN with sigma_v2 = 1, sigma_a2 = 0 only for zero-mean (odd) phi.  For E[phi] != 0 (relu,
gelu, alpha-ReLU, softplus, sigmoid, ...) the RRN's stream gains the coordinate mean m^l and its
second moments the mean's cross terms (derived in docs/residual.md, "The reduced network with a
non-zero-mean activation"; M(q) = E[phi(sqrt(q) z)]):

    m^l = m^{l-1} + M(q^l),   p^l = p^{l-1} + 2 m^{l-1} M(q^l) + V_phi(q^l),

with s^l and chi unchanged (the cross terms cancel in s for two inputs of equal length and mean;
the backward pass has none).  That case is carried as (log p, m / sqrt(p), 1 - e, log chi) and
run layer by layer (the collocation below is scalar in log p).

What is computed (docs/theory.md §A2.3, exact mean-field recurrences, gradient independence for chi):

    q^l = sigma_w2 p^{l-1} + sigma_b2,        p^l = p^{l-1} + sigma_v2 V_phi(q^l) + sigma_a2,
    s^l = s^{l-1} + 2 sigma_v2 [V_phi(q^l) - W_phi(q^l, q^l, c^l)],
    1 - c^l = sigma_w2 s^{l-1} / (2 q^l),
    chi^{l-1} = chi^l (1 + sigma_v2 sigma_w2 V_phi'(q^l)),

for two inputs of equal length p^0 and cosine c^0 (so p = p', e^l = 1 - s^l / (2 p^l)).  The
state is carried as (log p, 1 - e, log chi): p and chi may grow exponentially (ReLU) or
double-exponentially (alpha-ReLU with alpha > 1) and 1 - e may be 1e-12 (ReLU's cosine tends
to 1); neither is ever formed by subtraction.  ``q^0`` is not defined by the recursion (the
first pre-activation is q^1 = sigma_w2 p^0 + sigma_b2) and is reported as None.

Speed: the recursion is sequential, but after a short exact start its increments are smooth
functions of the layer index.  Blocks [a, b] of geometrically growing length are solved by
collocation: the increments at ~21 Chebyshev-spaced layers are found by Newton's method, the
increments in between are their interpolating polynomial, and the prefix sums of that
polynomial over the integers are exact (Euler-Maclaurin).  Two extra layers per block are
checked against the exact recursion; a block that misses the tolerance (1e-12 relative) is
halved, down to the plain sequential loop.  10^6 layers of tanh take a fraction of a second.

Kernel evaluations (all integrals come from meanfield.gaussian or the closed forms):
relu / leaky_relu / abs / linear use the arc-cosine kernel in a cancellation-free form;
alpha_relu:ALPHA uses meanfield.special; erf / sin / cos the registry's closed forms; tanh and
sigmoid a gaussian.QCTable of 1 - W/V made by scripts/make_residual_tables.py from gaussian.w_phi
(interpolation error < 1e-9, checked in tests); anything else calls gaussian.w_phi per
evaluation (about 25 ms each, so e and s cost seconds per thousand layers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import gaussian
from .activations import Activation, get_activation, parse_spec
from .errors import ConvergenceError, DomainError
from ._memory import check_memory, format_count
from ._roots import _find_root_scalar
from .maps import check_correlation, check_depth, check_variance

ARCHS = ("resnet-full", "resnet-reduced")  # the labels of meanfield._arch for residual nets

#: (4/3) sqrt(2/pi): log(chi^0/chi^L) ~ C sigma_v2 sigma_w sqrt(L / (sigma_v2 + sigma_a2)) for tanh
TANH_CHI_CONSTANT = 4.0 / 3.0 * math.sqrt(2.0 / math.pi)

_LOG_MAX = math.log(np.finfo(float).max)

# Grid of the shipped kernel tables (scripts/make_residual_tables.py, gaussian.QCTable).
TABLE_GRID = gaussian.QCTable.GRID
table_theta = gaussian.QCTable.theta
_theta_of = gaussian.theta_of
_DATA = Path(__file__).resolve().parent / "data"


def _sin_minus_theta_cos(th):
    """sin(theta) - theta cos(theta), by its Taylor series for theta < 0.5 (no cancellation)."""
    th = np.asarray(th, dtype=float)
    out = np.sin(th) - th * np.cos(th)
    small = th < 0.5
    if np.any(small):
        t = th[small]
        t2 = t * t
        acc = np.zeros_like(t)
        # sum_{n>=1} (-1)^{n+1} 2n theta^{2n+1} / (2n+1)!
        for n in range(9, 0, -1):
            acc = acc * t2 + (-1.0) ** (n + 1) * 2.0 * n / math.factorial(2 * n + 1)
        out = np.array(out, dtype=float)
        out[small] = acc * t2 * t
    return out


_TABLE_NOISE = 1e-9  # relative interpolation error of the kernel tables (tests check it)


@lru_cache(maxsize=8)
def _load_table(name: str) -> gaussian.QCTable | None:
    """F = G / theta, G(q, c) = 1 - W_phi(q, q, qc) / V_phi(q), on gaussian.QCTable's grid."""
    path = _DATA / f"residual_kernel_{name}.npz"
    return gaussian.QCTable.load(path) if path.exists() else None


class _Kernel:
    """The per-layer moments of one activation, in the form the recursion needs:

    ``lv(log q)`` = log V_phi(q), ``lvd(log q)`` = log V_phi'(q) and
    ``G(log q, 1 - c)`` = 1 - W_phi(q, q, q c) / V_phi(q) (>= 0, the normalised distance kernel).
    """

    def __init__(self, act: Activation, alpha: float | None):
        self.act = act
        self.name = act.name
        self.alpha = alpha  # exponent of alpha_relu (1 for the relu family), None otherwise
        self.slope = None  # leaky-relu slope a for the relu family
        self.kind = "quadrature"
        cf = act.closed_forms
        self.noise = _EPS64  # relative accuracy of G (the tables': their interpolation error)
        # relative accuracy of V_phi, V_phi' (closed forms: rounding; gaussian's quadrature of
        # V at q >> 1: about 1e-9)
        self.noise_v = _EPS64 if (cf.get("v") is not None and
                                  (cf.get("vd") is not None or act.d1 is None)) else 1e-9
        self.grad_reason = ""
        self._lk1 = None  # log E[max(0, z)^alpha], cached by moments()
        if act.d1 is None and "vd" not in act.closed_forms:
            self.grad_reason = (act.missing_reason or f"{act.name} has no derivative") + \
                ": chi and the parameter gradients are infinite"
        cf = act.closed_forms
        if alpha is not None and alpha != 1.0:
            from . import special
            self.kind = "alpha"
            self.c_alpha = float(special.c_alpha(alpha))
            if alpha > 0.5:
                self.c_d = alpha * alpha * float(special.c_alpha(alpha - 1.0))
            else:
                self.grad_reason = (f"gradients are infinite for {act.name}: V_phi'(q) = "
                                    f"E[phi'(h)^2] diverges for alpha <= 1/2 (docs/theory.md §A2.5)")
        elif self._is_leaky():
            self.kind = "leaky"
            self.slope = -float(cf["w"](np.array(1.0), np.array(1.0), np.array(-1.0)))
            self.k = 0.5 * (1.0 + self.slope ** 2)
            self.alpha = 1.0
        elif cf.get("w") is not None and cf.get("v") is not None:
            self.kind = "closed"
        elif act.name in ("tanh", "sigmoid") and _load_table("tanh") is not None:
            self.kind = "table" if act.name == "tanh" else "sigmoid-table"
            self.noise = _TABLE_NOISE
            self.table = _load_table("tanh")
            self.tanh = get_activation("tanh")

    @property
    def zero_mean(self) -> bool:
        """E[phi(h)] = 0 for every q (odd phi): the reduced net's stream keeps its mean m^0."""
        return bool(self.act.odd) or (self.kind == "leaky" and self.slope == 1.0)

    def lm(self, lq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(log |M(q)|, sign M(q)) with M(q) = E[phi(sqrt(q) z)] at q = exp(lq), the mean the
        reduced net adds to its stream each layer (docs/residual.md; closed forms for the relu
        and alpha-ReLU families, gaussian.expect1 otherwise)."""
        lq = np.asarray(lq, dtype=float)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            if self.kind == "leaky":
                # E[max(h, 0) + a min(h, 0)] = (1 - a) sqrt(q / (2 pi))
                a = 1.0 - self.slope
                return (math.log(abs(a)) + 0.5 * (lq - math.log(2.0 * math.pi)),
                        np.full(lq.shape, math.copysign(1.0, a)))
            if self.kind == "alpha":
                from . import special
                # E[max(0, z)^alpha] = c_(alpha/2) = 2^(alpha/2 - 1) Gamma((alpha + 1)/2) / sqrt(pi)
                k1 = float(special.c_alpha(self.alpha / 2.0))
                return math.log(k1) + 0.5 * self.alpha * lq, np.ones(lq.shape)
            m = gaussian.m_phi(self.act, _exp_q(lq, self.name))
            return np.log(np.abs(m)), np.sign(m)

    def moments(self, lq: float) -> tuple[float, float, float]:
        """(log V_phi(q), log |M(q)|, sign M(q)) at one q = exp(lq), in plain floats (the
        reduced net's layer-by-layer loop; closed forms without numpy where there are some)."""
        if self.kind == "leaky":
            a = 1.0 - self.slope
            return (math.log(self.k) + lq, math.log(abs(a)) + 0.5 * (lq - math.log(2.0 * math.pi)),
                    math.copysign(1.0, a))
        if self.kind == "alpha":
            if self._lk1 is None:
                from . import special
                self._lk1 = math.log(float(special.c_alpha(self.alpha / 2.0)))
            lv = math.log(self.c_alpha) + (self.alpha * lq if self.alpha != 0.0 else 0.0)
            return lv, self._lk1 + 0.5 * self.alpha * lq, 1.0
        arr = np.array([lq])
        lm, sm = self.lm(arr)
        return float(self.lv(arr)[0]), float(lm[0]), float(sm[0])

    def _is_leaky(self) -> bool:
        n = self.act.name
        return n in ("relu", "abs", "linear", "alpha_relu:1") or n.startswith("leaky_relu")

    @property
    def homogeneous(self) -> bool:
        return self.kind in ("leaky", "alpha")

    @property
    def description(self) -> str:
        return {
            "leaky": "arc-cosine kernel (closed form, docs/theory.md §A3.1)",
            "alpha": "alpha-ReLU kernel (meanfield.special, docs/theory.md §A2.7)",
            "closed": "closed-form kernel of the registry",
            "table": "table of gaussian.w_phi (scripts/make_residual_tables.py), error < 1e-9",
            "sigmoid-table": "tanh table of gaussian.w_phi, sigmoid(x) = (1 + tanh(x/2))/2",
            "quadrature": "gaussian.w_phi quadrature at every evaluation (slow)",
        }[self.kind]

    # -- moments ---------------------------------------------------------------------------
    def lv(self, lq: np.ndarray) -> np.ndarray:
        """log V_phi(q) at q = exp(lq)."""
        with np.errstate(over="ignore", invalid="ignore"):
            return self._lv(np.asarray(lq, dtype=float))

    def _lv(self, lq: np.ndarray) -> np.ndarray:
        if self.kind == "leaky":
            return math.log(self.k) + lq
        if self.kind == "alpha":
            if self.alpha == 0.0:
                return np.full(lq.shape, math.log(self.c_alpha))
            return math.log(self.c_alpha) + self.alpha * lq
        q = _exp_q(lq, self.name)
        with np.errstate(divide="ignore"):
            return np.log(gaussian.v_phi(self.act, q))

    def lvd(self, lq: np.ndarray) -> np.ndarray:
        """log V_phi'(q) at q = exp(lq) (only when gradients are finite)."""
        with np.errstate(over="ignore", invalid="ignore"):
            return self._lvd(np.asarray(lq, dtype=float))

    def _lvd(self, lq: np.ndarray) -> np.ndarray:
        if self.kind == "leaky":
            return np.full(lq.shape, math.log(self.k))
        if self.kind == "alpha":
            return math.log(self.c_d) + (self.alpha - 1.0) * lq
        q = _exp_q(lq, self.name)
        with np.errstate(divide="ignore"):
            return np.log(gaussian.v_dphi(self.act, q))

    def G(self, lq: np.ndarray, xc: np.ndarray) -> np.ndarray:
        """1 - W_phi(q, q, q c) / V_phi(q) with 1 - c = xc given (never formed as 1 - c)."""
        lq = np.asarray(lq, dtype=float)
        xc = np.clip(np.asarray(xc, dtype=float), 0.0, 2.0)
        if self.kind == "leaky":
            a = self.slope
            th = _theta_of(xc)
            return xc - _sin_minus_theta_cos(th) * (1.0 - a) ** 2 / (math.pi * (1.0 + a * a))
        if self.kind == "alpha":
            from . import special
            return 1.0 - special.alpha_relu_normalized(self.alpha, 1.0 - xc)
        out = np.zeros(np.broadcast(lq, xc).shape)
        lq, xc = np.broadcast_arrays(lq, xc)
        ok = np.isfinite(lq) & (xc > 0)  # q = 0 or c = 1: both inputs give the same phi(h)
        if not ok.any():
            return out
        lqo, xco = lq[ok], xc[ok]
        if self.kind in ("table", "sigmoid-table"):
            scale = 0.0 if self.kind == "table" else math.log(4.0)
            out[ok] = self._g_table(lqo - scale, xco)
            if self.kind == "sigmoid-table":
                vt = gaussian.v_phi(self.tanh, np.exp(lqo - scale))
                out[ok] *= vt / (1.0 + vt)
            return out
        out[ok] = self._g_quad(self.act, lqo, xco)
        return out

    def _g_table(self, lq: np.ndarray, xc: np.ndarray) -> np.ndarray:
        """tanh's G from the table.  tanh is odd, W(q, q, -c) = -W(q, q, c), so G(c) = 2 - G(-c):
        c < 0 is read at -c, where the table's stretch resolves the boundary layer (the one at
        c -> -1 mirrors the one at c -> 1)."""
        out = np.empty(lq.shape)
        ins = self.table.inside(lq)
        if ins.any():
            neg = xc > 1.0
            xi = np.where(neg, 2.0 - xc, xc)[ins]
            val = self.table(lq[ins], xi)
            out[ins] = np.where(neg[ins], 2.0 - val, val)
        if (~ins).any():
            out[~ins] = self._g_quad(self.tanh, lq[~ins], xc[~ins])
        return out

    @staticmethod
    def _g_quad(act: Activation, lq: np.ndarray, xc: np.ndarray) -> np.ndarray:
        q = _exp_q(lq, act.name)
        w = gaussian.w_phi(act, q, q, 1.0 - xc)
        v = gaussian.v_phi(act, q)
        return 1.0 - w / v


def _exp_q(lq: np.ndarray, name: str) -> np.ndarray:
    if np.any(lq > _LOG_MAX):
        raise _OutOfRange(f"q^l exceeds the float range (~1.8e308), where the moments of {name} "
                          "are not computed (only relu and alpha_relu are followed in logs)")
    return np.exp(lq)


class _OutOfRange(Exception):
    """Internal: the recursion left the range where it can be computed."""


@lru_cache(maxsize=64)
def _kernel_cached(act: Activation, alpha: float | None) -> _Kernel:
    return _Kernel(act, alpha)


def _kernel(activation) -> _Kernel:
    act = get_activation(activation)
    alpha = None
    if isinstance(activation, str):
        name, params = parse_spec(activation)
        if name == "alpha_relu":
            alpha = float(params[0])
    elif act.name == "step":  # the step is alpha_relu:0 (docs/theory.md §A2.5 with alpha = 0)
        alpha = 0.0
    elif act.name.startswith("alpha_relu:"):
        v = act.closed_forms["v"]
        v1 = float(v(np.array(1.0)))
        alpha = math.log(float(v(np.array(2.0))) / v1) / math.log(2.0) if v1 > 0 else None
    return _kernel_cached(act, alpha)


# --------------------------------------------------------------------------------------------
# The recursion in (u, x, C) = (log p, 1 - e, log prod (1 + sigma_v2 sigma_w2 V_phi'(q)))
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Params:
    arch: str
    sw: float
    sb: float
    sv: float
    sa: float


def _arch(arch: Any) -> str:
    from ._arch import arch_label

    label = arch_label(arch)
    if label not in ARCHS:
        raise DomainError(f"arch must be 'resnet-full' or 'resnet-reduced' (or an alias), got {arch!r}")
    return label


def _params(arch, sigma_w2, sigma_b2, sigma_v2, sigma_a2) -> _Params:
    arch = _arch(arch)
    sw = float(check_variance("sigma_w2", sigma_w2))
    sb = float(check_variance("sigma_b2", sigma_b2))
    if arch == "resnet-reduced":
        sv = 1.0 if sigma_v2 is None else float(check_variance("sigma_v2", sigma_v2))
        sa = 0.0 if sigma_a2 is None else float(check_variance("sigma_a2", sigma_a2))
        if sv != 1.0 or sa != 0.0:
            raise DomainError("the reduced residual network has no V or a (x^l = phi(h^l) + "
                              f"x^{{l-1}}): sigma_v2 must be 1 and sigma_a2 0 (got {sv:g}, {sa:g});"
                              " use resnet-full")
    else:
        sv = 1.0 if sigma_v2 is None else float(check_variance("sigma_v2", sigma_v2))
        sa = 0.0 if sigma_a2 is None else float(check_variance("sigma_a2", sigma_a2))
    for nm, v in (("sigma_w2", sw), ("sigma_b2", sb), ("sigma_v2", sv), ("sigma_a2", sa)):
        if v > 1e150:
            raise DomainError(f"{nm} = {v:g} is too large to follow (use values below 1e150)")
    return _Params(arch, sw, sb, sv, sa)


def _log0(v: float) -> float:
    return math.log(v) if v > 0 else -math.inf


class _Model:
    """Increments of (u, x, C) at one layer, vectorised over layers (docs/theory.md §A2.3)."""

    def __init__(self, kernel: _Kernel, prm: _Params):
        self.K = kernel
        self.P = prm
        self.lsw, self.lsb = _log0(prm.sw), _log0(prm.sb)
        self.lsv, self.lsa = _log0(prm.sv), _log0(prm.sa)
        self.lsvsw = self.lsv + self.lsw
        # the reduced net with E[phi] != 0 carries the stream's coordinate mean (docs/residual.md)
        self.mean = prm.arch == "resnet-reduced" and not kernel.zero_mean

    def logq(self, u: np.ndarray) -> np.ndarray:
        """log q^l = log(sigma_w2 exp(u_{l-1}) + sigma_b2)."""
        with np.errstate(divide="ignore"):
            return np.logaddexp(self.lsw + u, self.lsb)

    def forward(self, u: np.ndarray):
        """(du, lv, g, lq) at layers whose previous log-length is u."""
        lq = self.logq(u)
        lv = self.K.lv(lq)
        with np.errstate(over="ignore", invalid="ignore"):
            lg = np.logaddexp(self.lsv + lv - u, self.lsa - u)  # log g, g = (p^l - p^{l-1})/p^{l-1}
            du = np.logaddexp(0.0, lg)
        return du, lv, lg, lq

    def step_mean(self, u: float, r: float) -> tuple[float, float, float, float]:
        """(du, r^l, lv, lq) of the reduced net with a mean, r = m / sqrt(p) (|r| <= 1):
        p^l = p^{l-1} + 2 m^{l-1} M(q^l) + V_phi(q^l) and m^l = m^{l-1} + M(q^l); plain floats
        (one layer at a time; numpy's per-call overhead would be most of the cost)."""
        a, b = self.lsw + u, self.lsb
        hi = max(a, b)
        lq = hi if hi == -math.inf else hi + math.log1p(math.exp(min(a, b) - hi))
        lv, lm, sm = self.K.moments(lq)
        lmu, lnu = lm - 0.5 * u, lv - u  # log |M| / sqrt(p^{l-1}), log V / p^{l-1}
        if lnu > 600.0:
            # the branch dwarfs the stream (alpha > 1): V >= M^2, so V / p leads; in logs
            du = lnu + math.log1p(2.0 * r * sm * math.exp(lmu - lnu) + math.exp(-lnu))
        else:
            mu = sm * math.exp(lmu) if lm != -math.inf else 0.0
            nu = math.exp(lnu) if lv != -math.inf else 0.0
            g = 2.0 * r * mu + nu  # (p^l - p^{l-1}) / p^{l-1}
            if g > -0.5:
                du = math.log1p(g)
            else:
                # g -> -1 only when the mean flips sign (r -> -1, M ~ sqrt(p)): there
                # p^l / p^{l-1} is the sum of its non-negative parts (mean^2, variance left,
                # Var phi / p)
                du = math.log((r + mu) ** 2 + (1.0 - r) * (1.0 + r) + max(nu - mu * mu, 0.0))
        # r^l = (r + M / sqrt(p^{l-1})) sqrt(p^{l-1} / p^l), each term below 1 in size
        r_new = r * math.exp(-0.5 * du)
        if lm != -math.inf:
            r_new += sm * math.exp(lmu - 0.5 * du)
        return du, min(1.0, max(-1.0, r_new)), lv, lq

    def dC(self, lq: np.ndarray) -> np.ndarray:
        """log(1 + sigma_v2 sigma_w2 V_phi'(q^l)) (docs/theory.md §A2.3, backward)."""
        if self.lsvsw == -math.inf:
            return np.zeros_like(lq)
        return np.logaddexp(0.0, self.lsvsw + self.K.lvd(lq))

    def dx(self, x: np.ndarray, u: np.ndarray, lv: np.ndarray, lg: np.ndarray,
           lq: np.ndarray, noise: bool = False):
        """x^l - x^{l-1} with x = 1 - e = s / (2 p):
        x^l = (x^{l-1} + sigma_v2 V_phi(q^l) G / p^{l-1}) / (1 + g)."""
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return self.dx_du(x, u, lv, np.logaddexp(0.0, lg), lq, noise)

    def dx_du(self, x: np.ndarray, u: np.ndarray, lv: np.ndarray, du: np.ndarray,
              lq: np.ndarray, noise: bool = False):
        """dx given du = log(p^l / p^{l-1}).  With the reduced net's mean the squared distance
        still grows by 2 (V_phi - W_phi) (the mean's cross terms cancel for two inputs of equal
        length and mean), so only du changes (docs/residual.md)."""
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            xc = x * np.exp(self.lsw + u - lq)  # 1 - c^l = sigma_w2 s^{l-1} / (2 q^l)
            xc = np.where(np.isfinite(xc), xc, 0.0)
            G = self.K.G(lq, xc)
            a = np.exp(self.lsv + lv - u - du)  # sigma_v2 V / p^l
            a = np.where(np.isfinite(a), a, 0.0)
            t1, t2 = a * G, np.expm1(-du) * x
        return (t1 + t2, np.abs(t1) + np.abs(t2)) if noise else t1 + t2


# -- collocation machinery --------------------------------------------------------------------

_NODES = 21
_RTOL = 1e-12
_NSEQ = 64
_MIN_BLOCK = 2 * _NODES


@lru_cache(maxsize=4)
def _bernoulli_terms(n: int) -> tuple[tuple[int, float], ...]:
    """(2k - 1, B_2k / (2k)!) for k = 1..n//2 + 1, exact in rationals (from sum_j C(m+1, j) B_j = 0)
    and rounded once, instead of importing scipy.special (~0.3 s cold) for them."""
    from fractions import Fraction
    b = [Fraction(1)]
    for m in range(1, n + 3):
        b.append(-sum(math.comb(m + 1, j) * b[j] for j in range(m)) / (m + 1))
    return tuple((2 * k - 1, float(b[2 * k] / math.factorial(2 * k))) for k in range(1, n // 2 + 2))


@lru_cache(maxsize=64)
def _cheb_operators(n: int) -> tuple[np.ndarray, tuple[tuple[float, np.ndarray], ...]]:
    """Matrices (n+1, n) on Chebyshev coefficients: the antiderivative and the odd derivatives
    weighted by B_2k / (2k)! (the Euler-Maclaurin terms), for polynomials of degree < n."""
    C = np.polynomial.chebyshev
    eye = np.eye(n)
    integ = np.zeros((n + 1, n))
    for j in range(n):
        integ[:, j] = C.chebint(eye[j])
    ders = []
    for order, coef in _bernoulli_terms(n):
        if order >= n:
            break
        d = np.zeros((n + 1, n))
        for j in range(n):
            dj = C.chebder(eye[j], order)
            d[: dj.size, j] = dj
        ders.append((order, coef * d))
    return integ, tuple(ders)


def _antider_operator(n: int, h: float) -> np.ndarray:
    """F with F(m) - F(m-1) = P(m) for P of degree < n in tau = (m - c)/h (Euler-Maclaurin,
    exact for polynomials): F = h int P + P/2 + sum_k B_2k/(2k)! h^(1-2k) P^(2k-1)."""
    integ, ders = _cheb_operators(n)
    F = h * integ
    F[:n, :] += 0.5 * np.eye(n)
    for order, d in ders:
        F += d * h ** (-order)
    return F


class _Block:
    """Polynomial increments on the layers a+1..b and their exact prefix sums."""

    def __init__(self, a: int, b: int, n: int):
        C = np.polynomial.chebyshev
        self.a, self.b = a, b
        self.c, self.h = 0.5 * (a + b), 0.5 * (b - a)
        k = np.arange(n)
        t = np.cos(np.pi * k / (n - 1))[::-1]
        nodes = np.unique(np.round(a + 1 + (b - a - 1) * 0.5 * (1.0 + t)).astype(np.int64))
        self.nodes = nodes
        self.n = nodes.size
        self.V = C.chebvander(self.tau(nodes), self.n - 1)
        self.Vinv = np.linalg.inv(self.V)
        # prefix-sum operator on Chebyshev coefficients: F(m) - F(a) = sum_{i=a+1}^m P(i)
        self._F = _antider_operator(self.n, self.h)
        Fa = C.chebval(self.tau(a), self._F)
        self._F[0, :] -= Fa  # now F(a) = 0 for every basis polynomial
        self.S = self.prefix_matrix(nodes - 1) @ self.Vinv  # node increments -> prefix sums

    def tau(self, m) -> np.ndarray:
        return (np.asarray(m, dtype=float) - self.c) / self.h

    def prefix_matrix(self, m) -> np.ndarray:
        """Rows: sum_{i=a+1}^{m} T_k-basis ... mapped so that (matrix @ coef) = prefix sums."""
        return np.polynomial.chebyshev.chebvander(self.tau(m), self.n) @ self._F

    def coef(self, vals: np.ndarray) -> np.ndarray:
        return self.Vinv @ vals

    def value(self, cf: np.ndarray, m) -> np.ndarray:
        return np.polynomial.chebyshev.chebval(self.tau(m), cf)

    def prefix(self, cf: np.ndarray, m) -> np.ndarray:
        return np.polynomial.chebyshev.chebval(self.tau(m), self._F @ cf)

    def checks(self) -> np.ndarray:
        """Layers between nodes where the interpolant is checked: the middle of the widest gap
        and of the first and last gaps wider than one layer."""
        gaps = np.diff(self.nodes)
        wide = np.flatnonzero(gaps > 1)
        if wide.size == 0:
            return wide
        pick = np.unique([int(np.argmax(gaps)), int(wide[0]), int(wide[-1])])
        return self.nodes[pick] + gaps[pick] // 2


_EPS64 = 64 * np.finfo(float).eps


def _close(K: int, exact: np.ndarray, interp: np.ndarray, size: float, noise,
           rel_noise: float = _EPS64) -> bool:
    """Accumulated interpolation error over K layers within _RTOL of ``size`` or within the
    noise of the increments themselves (``noise``: magnitude of the terms an increment is
    computed from, ``rel_noise``: their relative accuracy: rounding, or a kernel table's
    interpolation error)."""
    err = K * np.max(np.abs(exact - interp))
    floor = K * rel_noise * float(np.max(noise))
    return bool(err <= _RTOL * size + floor)


def _newton(block: _Block, y0: float, f: Callable[[np.ndarray], np.ndarray], scale: float,
            step: Callable[[np.ndarray], np.ndarray],
            guess: np.ndarray | None = None) -> np.ndarray | None:
    """Solve delta_j = f(y0 + (S delta)_j) for the node increments delta (None: no convergence).

    Chord-Newton: the Jacobian I - diag(f') S is formed by finite differences at the first
    iterate and refreshed only if the residual stops shrinking fast."""
    S = block.S
    delta = guess if guess is not None else f(np.full(block.n, y0))
    if not np.all(np.isfinite(delta)):
        return None
    J = None
    prev = math.inf
    for it in range(40):
        with np.errstate(over="ignore", invalid="ignore"):
            y = y0 + S @ delta
        fy = f(y)
        r = delta - fy
        if not np.all(np.isfinite(r)):
            return None
        rn = float(np.max(np.abs(r)))
        if rn <= 4e-16 * max(scale, float(np.max(np.abs(delta))), 1e-300) and it > 0:
            return delta
        if J is None or rn > 0.1 * prev:
            hstep = step(y)
            fd = (f(y + hstep) - fy) / hstep
            J = np.eye(block.n) - fd[:, None] * S
        prev = rn
        try:
            dd = np.linalg.solve(J, -r)
        except np.linalg.LinAlgError:
            return None
        delta = delta + dd
        if np.max(np.abs(dd)) <= 1e-15 * max(scale, float(np.max(np.abs(delta))), 1e-300):
            return delta
    return None


@dataclass
class _Out:
    """Values at the kept layers (index into ``layers``)."""

    layers: np.ndarray
    u: np.ndarray
    uprev: np.ndarray
    x: np.ndarray
    C: np.ndarray
    dC: np.ndarray
    lv: np.ndarray
    r: np.ndarray  # m / sqrt(p) (the reduced net with a mean only)

    @classmethod
    def empty(cls, layers: np.ndarray) -> "_Out":
        n = layers.size
        return cls(layers, *(np.full(n, np.nan) for _ in range(7)))


class _Runner:
    """Iterates the model to ``depth`` and records the kept layers."""

    def __init__(self, model: _Model, depth: int, layers: np.ndarray, cosine: bool,
                 grads: bool):
        self.m = model
        self.depth = depth
        self.out = _Out.empty(layers)
        self.every = int(layers[1] - layers[0]) if layers.size > 1 else 1
        self.log: list[tuple[int, int, bool]] = []  # (a, b, accepted) of every block tried
        self.cosine = cosine
        self.grads = grads
        self.kernel_calls = 0
        self.r0 = 0.0  # m^0 / sqrt(p^0), read by the loop of the reduced net with a mean

    def _index(self, l: int) -> int | None:
        if l % self.every == 0:
            return l // self.every
        return self.out.layers.size - 1 if l == self.depth else None

    def _fail(self, layer: int, why: str):
        raise DomainError(f"the recursion leaves float range at layer {layer} "
                          f"({self.m.K.name}): {why}; use depth <= {layer - 1}")

    # plain sequential loop (the reference and the exact start) --------------------------------
    def sequential(self, a: int, b: int, u: float, x: float,
                   C: float) -> tuple[float, float, float]:
        m = self.m
        if m.mean:
            return self.sequential_mean(a, b, u, self.r0, x, C)
        for l in range(a + 1, b + 1):
            ua = np.array([u])
            try:
                du, lv, g, lq = m.forward(ua)
                dC = m.dC(lq) if self.grads else np.zeros(1)
                dx = m.dx(np.array([x]), ua, lv, g, lq) if self.cosine else np.zeros(1)
            except _OutOfRange as exc:
                self._fail(l, str(exc))
            if not (np.isfinite(du[0]) and np.isfinite(dC[0]) and np.isfinite(dx[0])):
                self._fail(l, _overflow_reason(self.m.K))
            x_new = x + float(dx[0])
            u, C, x = u + float(du[0]), C + float(dC[0]), min(max(x_new, 0.0), 2.0)
            if not (abs(u) < 1e300 and abs(C) < 1e300):
                self._fail(l, _overflow_reason(self.m.K))
            i = self._index(l)
            if i is not None:
                o = self.out
                o.u[i], o.uprev[i], o.x[i], o.C[i] = u, float(ua[0]), x, C
                o.dC[i], o.lv[i] = float(dC[0]), float(lv[0])
        return u, x, C

    def sequential_mean(self, a: int, b: int, u: float, r: float, x: float,
                        C: float) -> tuple[float, float, float]:
        """The loop for the reduced net with E[phi] != 0, state (log p, m / sqrt(p), 1 - e,
        log chi).  (u, r) are coupled, which the scalar collocation does not solve, so they are
        stepped layer by layer (a few microseconds a layer for relu and alpha-ReLU); chi then
        follows from all layers' q at once and 1 - e by its own loop (~0.3 ms a layer)."""
        m, K, o = self.m, self.m.K, self.out
        n = b - a
        us, rs = np.empty(n + 1), np.empty(n + 1)
        dus, lvs, lqs = np.empty(n), np.empty(n), np.empty(n)
        us[0], rs[0] = u, r
        fail, why = None, _overflow_reason(K)
        for i in range(n):
            try:
                du, r, lv, lq = m.step_mean(u, r)
            except _OutOfRange as exc:
                fail, why = i, str(exc)
                break
            u = u + du
            if not (math.isfinite(du) and math.isfinite(r) and abs(u) < 1e300):
                fail = i
                break
            us[i + 1], rs[i + 1], dus[i], lvs[i], lqs[i] = u, r, du, lv, lq
        k = n if fail is None else fail  # layers a+1 .. a+k are valid
        dC = m.dC(lqs[:k]) if self.grads else np.zeros(k)
        Cs = C + np.concatenate([[0.0], np.cumsum(dC)])
        bad = np.flatnonzero(~(np.isfinite(dC) & (np.abs(Cs[1:]) < 1e300)))
        if bad.size:
            fail, why, k = int(bad[0]), _overflow_reason(K), int(bad[0])
        xs = np.full(k + 1, x)
        if self.cosine:
            for i in range(k):
                try:
                    dx = float(m.dx_du(np.array([x]), us[i:i + 1], lvs[i:i + 1], dus[i:i + 1],
                                       lqs[i:i + 1])[0])
                except _OutOfRange as exc:
                    fail, why, k = i, str(exc), i
                    break
                if not math.isfinite(dx):
                    fail, why, k = i, _overflow_reason(K), i
                    break
                x = min(max(x + dx, 0.0), 2.0)
                xs[i + 1] = x
        if fail is not None:
            self._fail(a + fail + 1, why)
        lay = o.layers
        lo, hi = np.searchsorted(lay, a, side="right"), np.searchsorted(lay, b, side="right")
        j = lay[lo:hi] - a  # 1..n
        o.u[lo:hi], o.uprev[lo:hi], o.r[lo:hi] = us[j], us[j - 1], rs[j]
        o.x[lo:hi], o.C[lo:hi], o.dC[lo:hi], o.lv[lo:hi] = xs[j], Cs[j], dC[j - 1], lvs[j - 1]
        return float(us[n]), float(xs[n]), float(Cs[n])

    # collocation on one block ---------------------------------------------------------------
    def block(self, a: int, b: int, u: float, x: float, C: float):
        """Returns the state at b, or None when the block misses the tolerance."""
        m = self.m
        B = _Block(a, b, _NODES)
        try:
            f_u = lambda y: m.forward(y)[0]  # noqa: E731
            du = _newton(B, u, f_u, abs(u) + 1.0, lambda y: 1e-6 * np.ones_like(y))
            if du is None:
                return None
            cu = B.coef(du)
            u_prev = u + B.S @ du  # u_{l-1} at the nodes
            du_n, lv_n, g_n, lq_n = m.forward(u_prev)
            dC_n = m.dC(lq_n) if self.grads else np.zeros(B.n)
            cC = B.coef(dC_n)
            clv = B.coef(np.where(np.isfinite(lv_n), lv_n, 0.0))
            cx = np.zeros(B.n)
            if self.cosine and x > 0.0:
                f_x = lambda y: m.dx(y, u_prev, lv_n, g_n, lq_n)  # noqa: E731
                dxn = _newton(B, x, f_x, x, lambda y: 1e-7 * np.maximum(np.abs(y), 1e-300))
                if dxn is None:
                    return None
                cx = B.coef(dxn)
            # a-posteriori check at layers between nodes: the interpolated increments must match
            # the recursion to _RTOL of the state, or to the recursion's own rounding noise
            chk = B.checks()
            if chk.size:
                K = b - a
                u_c = u + B.prefix(cu, chk - 1)
                du_c, lv_c, g_c, lq_c = m.forward(u_c)
                ub = u + float(B.prefix(cu, b))
                nv = m.K.noise_v
                if not _close(K, du_c, B.value(cu, chk), max(1.0, abs(ub)), np.abs(du_c), nv):
                    return None
                if self.grads:
                    Cb = C + float(B.prefix(cC, b))
                    dC_c = m.dC(lq_c)
                    if not _close(K, dC_c, B.value(cC, chk), max(1.0, abs(Cb)), np.abs(dC_c),
                                  nv):
                        return None
                if self.cosine and x > 0.0:
                    x_c = x + B.prefix(cx, chk - 1)
                    xb = x + float(B.prefix(cx, b))
                    dx_c, noise = m.dx(x_c, u_c, lv_c, g_c, lq_c, noise=True)
                    if not _close(K, dx_c, B.value(cx, chk), abs(xb), noise,
                                  max(m.K.noise, nv)):
                        return None
        except _OutOfRange:
            return None
        u_b = u + float(B.prefix(cu, b))
        C_b = C + float(B.prefix(cC, b))
        x_b = x + float(B.prefix(cx, b))
        if not (np.isfinite(u_b) and np.isfinite(C_b) and np.isfinite(x_b)):
            return None
        # record the kept layers in (a, b]: prefix sums for u, C, x and the increments of u
        # (for u_{l-1}), C and log V, all in one Clenshaw pass
        o = self.out
        lay = o.layers
        lo, hi = np.searchsorted(lay, a, side="right"), np.searchsorted(lay, b, side="right")
        if hi > lo:
            n1 = B.n + 1
            coefs = np.zeros((n1, 6))
            coefs[:, 0] = B._F @ cu
            coefs[:, 1] = B._F @ cC
            coefs[:, 2] = B._F @ cx
            coefs[: B.n, 3] = cu
            coefs[: B.n, 4] = cC
            coefs[: B.n, 5] = clv
            # drop trailing coefficients below rounding (smooth blocks need far fewer terms)
            mag = np.abs(coefs)
            keep = mag > 1e-17 * np.maximum(mag.max(axis=0), 1e-300)
            deg = int(np.max(np.nonzero(keep.any(axis=1))[0])) + 1 if keep.any() else 1
            coefs = coefs[:deg]
            for i0 in range(lo, hi, 1 << 17):
                i1 = min(hi, i0 + (1 << 17))
                # Vandermonde rows times the 6 coefficient columns (BLAS) beats 6 Clenshaw passes
                vals = (np.polynomial.chebyshev.chebvander(B.tau(lay[i0:i1]), deg - 1)
                        @ coefs).T  # (6, m)
                o.u[i0:i1] = u + vals[0]
                o.uprev[i0:i1] = o.u[i0:i1] - vals[3]
                o.C[i0:i1] = C + vals[1]
                o.x[i0:i1] = np.clip(x + vals[2], 0.0, 2.0) if x > 0 else 0.0
                o.dC[i0:i1] = vals[4]
                o.lv[i0:i1] = vals[5]
        return u_b, min(max(x_b, 0.0), 2.0), C_b

    def run(self, u0: float, x0: float, sequential: bool = False,
            r0: float = 0.0) -> tuple[float, float, float]:
        """From log p^0 = u0, 1 - e^0 = x0 (and m^0 / sqrt(p^0) = r0 for the reduced net with a
        mean, which is always run layer by layer)."""
        o = self.out
        o.u[0], o.x[0], o.C[0], o.r[0] = u0, x0, 0.0, r0
        self.r0 = r0
        if self.m.mean:
            sequential = True
        a = self.depth if sequential else min(self.depth, _NSEQ)
        u, x, C = self.sequential(0, a, u0, x0, 0.0)
        size = max(a, _MIN_BLOCK)
        while a < self.depth:
            b = min(self.depth, a + size)
            res = self.block(a, b, u, x, C) if b - a >= _MIN_BLOCK else None
            self.log.append((a, b, res is not None))
            if res is None:
                if (b - a) // 2 >= _MIN_BLOCK:
                    size = (b - a) // 2
                    continue
                b = min(self.depth, a + _MIN_BLOCK)
                u, x, C = self.sequential(a, b, u, x, C)
                a = b
                continue
            u, x, C = res
            size = max(size, min(2 * (b - a), b))
            a = b
        return u, x, C


def _overflow_reason(K: _Kernel) -> str:
    if K.kind == "alpha" and K.alpha is not None and K.alpha > 1:
        return (f"log p^l grows double-exponentially (log p ~ alpha^l, alpha = {K.alpha:g}) and "
                "leaves float range")
    return "the values leave float range"


# --------------------------------------------------------------------------------------------
# Public: iterate_residual
# --------------------------------------------------------------------------------------------

def _json(v) -> Any:
    if isinstance(v, np.ndarray):
        return [_json(x) for x in v.tolist()]
    if isinstance(v, (list, tuple)):
        return [_json(x) for x in v]
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


def _list(a: np.ndarray) -> list:
    """Float array -> list with None for non-finite entries (JSON-safe)."""
    a = np.asarray(a, dtype=float)
    out = a.tolist()
    bad = ~np.isfinite(a)
    if bad.any():
        for i in np.flatnonzero(bad):
            out[i] = None
    return out


def _exp_or_nan(la: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        v = np.exp(la)
    v[v == np.inf] = np.nan
    return v


@dataclass(frozen=True)
class ResidualTrajectory:
    """Mean-field quantities of a residual network, layer by layer (docs/theory.md §A2.2-2.3).

    Every per-layer field is an array over ``layers`` (index 0 = the input).  ``p`` and
    ``e`` are second moments: p^l = <(x^l_i)^2> and e^l = <x^l_i x'^l_i> / p^l include the
    stream's coordinate mean ``m`` (m^l = m0 at every layer unless the net is reduced and
    E[phi] != 0; docs/residual.md), and s^l = 2 p^l (1 - e^l) is the squared distance.  ``chi`` is
    chi^l / chi^L, so ``chi[0]`` is the gradient explosion chi^0/chi^L; ``q[0]`` is NaN (q^0 is
    not defined by the recursion) and so are the parameter gradients at layer 0.  Values outside
    float range are NaN here and ``None`` in :meth:`to_dict`; their logarithms (``log_p``,
    ``log_s``, ``log_chi``, ``log_grad_*``) stay finite.  ``one_minus_e`` is 1 - e^l computed
    without cancellation.
    """

    arch: str
    activation: str
    sigma_w2: float
    sigma_b2: float
    sigma_v2: float
    sigma_a2: float
    depth: int
    every: int
    p0: float
    c0: float
    m0: float
    layers: np.ndarray
    p: np.ndarray
    m: np.ndarray
    q: np.ndarray
    e: np.ndarray
    one_minus_e: np.ndarray
    s: np.ndarray
    chi: np.ndarray
    log_p: np.ndarray
    log_q: np.ndarray
    log_s: np.ndarray
    log_chi: np.ndarray
    grad_w: np.ndarray
    grad_b: np.ndarray
    grad_v: np.ndarray
    grad_a: np.ndarray
    log_grad_w: np.ndarray
    log_grad_b: np.ndarray
    log_grad_v: np.ndarray
    log_grad_a: np.ndarray
    gradients_finite: bool
    kernel: str
    notes: tuple[str, ...] = field(default=())

    @property
    def explosion(self) -> float:
        """chi^0 / chi^L (NaN beyond float range; see :attr:`log_explosion`)."""
        return float(self.chi[0])

    @property
    def log_explosion(self) -> float:
        """log(chi^0 / chi^L) in nats."""
        return float(self.log_chi[0])

    def to_dict(self) -> dict:
        d: dict[str, Any] = {
            "arch": self.arch, "activation": self.activation, "sigma_w2": self.sigma_w2,
            "sigma_b2": self.sigma_b2, "sigma_v2": self.sigma_v2, "sigma_a2": self.sigma_a2,
            "depth": self.depth, "every": self.every, "p0": self.p0, "c0": self.c0,
            "m0": self.m0, "layers": [int(l) for l in self.layers],
        }
        for k in ("p", "m", "q", "e", "one_minus_e", "s", "chi", "log_p", "log_q", "log_s", "log_chi",
                  "grad_w", "grad_b", "grad_v", "grad_a", "log_grad_w", "log_grad_b",
                  "log_grad_v", "log_grad_a"):
            d[k] = _list(getattr(self, k))
        d["explosion"] = _json(self.explosion)
        d["log_explosion"] = _json(self.log_explosion)
        d["gradients_finite"] = self.gradients_finite
        d["kernel"] = self.kernel
        d["notes"] = list(self.notes)
        return d


def _kept_layers(depth: int, every: Any) -> tuple[int, np.ndarray]:
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or int(every) < 1:
        raise DomainError(f"every must be a positive integer, got {every!r}")
    every = int(every)
    # ~220 bytes per kept layer (measured: every series of the trajectory, float64)
    check_memory((depth // every + 2) * 256, f"a trajectory of {format_count(depth // every + 1)} kept layers",
                 "keep fewer layers with every (--every)")
    layers = np.arange(0, depth + 1, every, dtype=np.int64)
    if layers[-1] != depth:
        layers = np.append(layers, depth)
    return every, layers


def _simulate(kernel: _Kernel, prm: _Params, depth: int, p0: float, c0: float,
              layers: np.ndarray, cosine: bool, grads: bool, sequential: bool = False,
              m0: float = 0.0) -> _Out:
    model = _Model(kernel, prm)
    r = _Runner(model, depth, layers, cosine, grads)
    r.run(math.log(p0), 1.0 - c0, sequential=sequential, r0=m0 / math.sqrt(p0))
    return r.out


#: the reduced net with E[phi] != 0 runs layer by layer (_Runner.sequential_mean)
_MEAN_MAX_DEPTH = 10 ** 5


def _check_m0(m0: Any, p0: float, c0: float) -> float:
    """The input's coordinate mean m^0: a finite number with (m^0)^2 <= p^0 (p^0 is the second
    moment, mean included), and c0 >= 2 (m^0)^2 / p^0 - 1 (the centred parts' correlation is then
    >= -1)."""
    if isinstance(m0, bool):
        raise DomainError(f"m0 must be a real number (the mean of the input's coordinates), got {m0!r}")
    try:
        v = float(m0)
    except (TypeError, ValueError):
        raise DomainError(f"m0 must be a real number (the mean of the input's coordinates), "
                          f"got {m0!r}") from None
    if not math.isfinite(v):
        raise DomainError(f"m0 must be finite (the mean of the input's coordinates), got {v}")
    if v * v > p0 * (1.0 + 1e-15):
        raise DomainError(f"m0 = {v:g} needs m0^2 <= p0 = {p0:g} (p0 is the input's second moment, "
                          "its mean included)")
    if v != 0.0 and c0 * p0 - v * v < -(p0 - v * v) * (1.0 + 1e-12):
        raise DomainError(f"c0 = {c0:g} is below 2 m0^2/p0 - 1 = {2.0 * v * v / p0 - 1.0:g}: no two "
                          f"inputs with mean m0 = {v:g} and second moment p0 = {p0:g} have that cosine")
    return v


def iterate_residual(arch: str, activation, sigma_w2: float, sigma_b2: float, depth: int, *,
                     sigma_v2: float = 1.0, sigma_a2: float = 0.0, p0: float = 1.0,
                     c0: float = 0.5, m0: float = 0.0, every: int = 1,
                     gradients: bool | None = None, cosine: bool = True,
                     method: str = "auto") -> ResidualTrajectory:
    """Iterate the residual-network recurrences of docs/theory.md §A2.3 for ``depth`` layers.

    Two inputs with ``p0`` = <(x^0_i)^2> each and cosine ``c0``.  Returns p^l, q^l, e^l, s^l,
    chi^l/chi^L and the per-parameter gradient norms of docs/theory.md §A2.3 (normalised by chi^L) at
    layers 0, every, 2 every, ..., depth.  ``gradients=None`` computes chi where it is finite
    and reports it as missing (with a note) where it is infinite (alpha_relu with alpha <= 1/2,
    the step); ``gradients=True`` raises DomainError there.  ``cosine=False`` skips e and s
    (they are NaN).  ``method="sequential"`` runs the plain layer-by-layer loop (the reference
    the fast collocation is tested against).

    ``m0`` is the mean of the inputs' coordinates (both inputs; (m0)^2 <= p0, p0 includes it).
    It matters only for the reduced net with E[phi] != 0 (relu, gelu, alpha-ReLU, ...), whose
    stream gains the mean m^l = m^{l-1} + E[phi(h^l)] and p^l, gamma^l its cross terms
    (docs/residual.md, "The reduced network with a non-zero-mean activation"); p and e stay
    second moments (mean included).  That case runs layer by layer (depth <= 1e5).  ``m`` is
    m^l (m0 at every layer otherwise: V phi and odd phi add no mean).
    """
    prm = _params(arch, sigma_w2, sigma_b2, sigma_v2, sigma_a2)
    K = _kernel(activation)
    depth = check_depth(depth)
    if depth > 10 ** 9:
        raise DomainError(f"depth must be at most 1e9, got {depth}")
    p0 = float(check_variance("p0", p0, positive=True))
    c0 = float(check_correlation("c0", c0))
    m0 = _check_m0(m0, p0, c0)
    if _Model(K, prm).mean and depth > _MEAN_MAX_DEPTH:
        raise DomainError(f"depth must be at most 1e5 for resnet-reduced with {K.name} (E[phi] != 0: "
                          f"the recursion with the stream's mean runs layer by layer), got {depth}")
    every, layers = _kept_layers(depth, every)
    if method not in ("auto", "sequential"):
        raise DomainError(f"method must be 'auto' or 'sequential', got {method!r}")
    notes: list[str] = []
    grads = not K.grad_reason
    if gradients and not grads:
        raise DomainError(K.grad_reason)
    if gradients is False:
        grads = False
    elif not grads:
        notes.append(K.grad_reason)
    o = _simulate(K, prm, depth, p0, c0, layers, bool(cosine), grads, method == "sequential", m0)
    return _trajectory(prm, K, depth, every, p0, c0, m0, o, grads, bool(cosine), notes)


def _trajectory(prm: _Params, K: _Kernel, depth: int, every: int, p0: float, c0: float,
                m0: float, o: _Out, grads: bool, cosine: bool,
                notes: list[str]) -> ResidualTrajectory:
    full = prm.arch == "resnet-full"
    u, x = o.u, o.x
    log_p = u
    p = _exp_or_nan(u)
    if _Model(K, prm).mean:
        with np.errstate(over="ignore", invalid="ignore"):
            m = o.r * np.exp(0.5 * u)
        m = np.where(np.isfinite(m), m, np.nan)
        m[0] = m0
        if not np.all(np.isfinite(m)):
            notes.append("m^l exceeds float range at some layers (m = r sqrt(p): see log_p)")
    else:
        m = np.full(u.shape, m0)
    with np.errstate(divide="ignore", invalid="ignore"):
        lq = np.logaddexp(_log0(prm.sw) + o.uprev, _log0(prm.sb))
    lq = np.where(o.layers == 0, np.nan, lq)
    q = np.where(o.layers == 0, np.nan, _exp_or_nan(lq))
    if cosine:
        xx = np.clip(x, 0.0, 2.0)
        e = 1.0 - xx
        with np.errstate(divide="ignore"):
            log_s = math.log(2.0) + u + np.log(xx)
        s = np.where(xx == 0.0, 0.0, _exp_or_nan(log_s))
        log_s = np.where(xx == 0.0, np.nan, log_s)
        ome = xx
    else:
        e = ome = s = log_s = np.full(u.shape, np.nan)
    nan = np.full(u.shape, np.nan)
    if grads:
        CL = float(o.C[-1])
        log_chi = CL - o.C
        chi = _exp_or_nan(log_chi)
        # sigma_v2 V_phi'(q^l) = expm1(dC) / sigma_w2 (the backward factor minus one)
        if prm.sw > 0 and prm.sv > 0:
            with np.errstate(divide="ignore"):
                l_svvd = o.dC + np.log(-np.expm1(-o.dC)) - math.log(prm.sw)
        elif prm.sv > 0:
            l_svvd = math.log(prm.sv) + K.lvd(np.full(u.shape, _log0(prm.sb)))
        else:
            l_svvd = np.full(u.shape, -np.inf)
        first = o.layers == 0
        lg_b = np.where(first, np.nan, l_svvd + log_chi)
        lg_w = np.where(first, np.nan, lg_b + o.uprev)
        lg_a = np.where(first, np.nan, log_chi) if full else nan
        lg_v = np.where(first, np.nan, o.lv + log_chi) if full else nan
        g = [_exp_or_nan(a) if a is not nan else nan for a in (lg_w, lg_b, lg_v, lg_a)]
        if not np.all(np.isfinite(chi)):
            notes.append("chi^l/chi^L exceeds float range at some layers: see log_chi")
    else:
        log_chi = chi = lg_b = lg_w = lg_a = lg_v = nan
        g = [nan, nan, nan, nan]
    if not np.all(np.isfinite(p)):
        notes.append("p^l exceeds float range at some layers: see log_p")
    return ResidualTrajectory(
        arch=prm.arch, activation=K.name, sigma_w2=prm.sw, sigma_b2=prm.sb, sigma_v2=prm.sv,
        sigma_a2=prm.sa, depth=depth, every=every, p0=p0, c0=c0, m0=m0, layers=o.layers,
        p=p, m=m, q=q, e=e, one_minus_e=ome, s=s, chi=chi, log_p=log_p, log_q=lq, log_s=log_s,
        log_chi=log_chi, grad_w=g[0], grad_b=g[1], grad_v=g[2], grad_a=g[3],
        log_grad_w=lg_w, log_grad_b=lg_b, log_grad_v=lg_v, log_grad_a=lg_a,
        gradients_finite=grads, kernel=K.description, notes=tuple(notes))


# --------------------------------------------------------------------------------------------
# Laws and exponents (docs/theory.md §A2.4-2.6)
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Exponents:
    """Asymptotic laws of p^l, e^l, s^l and chi^0/chi^L, analytic next to fitted (docs/theory.md §A2.6).

    Each of ``p``, ``e``, ``s``, ``chi`` is a dict with ``law`` (polynomial, sub-exponential,
    exponential, double-exponential, infinite), ``form`` (the formula the exponent belongs to),
    ``exponent`` (analytic, None where MATH.md gives none), ``fitted_exponent`` (from the
    recursion at large depth), ``difference``, ``uncertainty`` (estimated finite-depth error of
    the fit), ``constant`` / ``fitted_constant``, ``fixed_point``, ``source`` and ``note``.
    """

    activation: str
    arch: str
    sigma_w2: float
    sigma_b2: float
    sigma_v2: float
    sigma_a2: float
    regime: str
    fit_depth: int
    p: dict
    e: dict
    s: dict
    chi: dict
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return _json_dict({
            "activation": self.activation, "arch": self.arch, "sigma_w2": self.sigma_w2,
            "sigma_b2": self.sigma_b2, "sigma_v2": self.sigma_v2, "sigma_a2": self.sigma_a2,
            "regime": self.regime, "fit_depth": self.fit_depth,
            "p": self.p, "e": self.e, "s": self.s, "chi": self.chi, "notes": list(self.notes)})


def _json_dict(d):
    if isinstance(d, dict):
        return {k: _json_dict(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_json_dict(v) for v in d]
    return _json(d)


def _entry(law: str, form: str, exponent=None, fitted=None, constant=None, fitted_constant=None,
           fixed_point=None, source: str = "", note: str = "", uncertainty=None,
           fit_range=None) -> dict:
    diff = None
    if exponent is not None and fitted is not None and math.isfinite(fitted):
        diff = fitted - exponent
    cdiff = None
    if constant and fitted_constant is not None and math.isfinite(fitted_constant):
        cdiff = fitted_constant / constant - 1.0
    return {"law": law, "form": form, "exponent": exponent, "fitted_exponent": fitted,
            "difference": diff, "uncertainty": uncertainty, "constant": constant,
            "fitted_constant": fitted_constant, "constant_difference": cdiff,
            "fixed_point": fixed_point,
            "fit_range": list(fit_range) if fit_range is not None else None,
            "source": source, "note": note}


def _slope(y2: float, y1: float, l2: float, l1: float) -> float:
    return (y2 - y1) / (math.log(l2) - math.log(l1))


def _local(logQ: Callable[[int], float], L: int) -> tuple[float, float]:
    """Local log-log exponent over [L/2, L] and its drift against [L/4, L/2]."""
    k2 = _slope(logQ(L), logQ(L // 2), L, L // 2)
    k1 = _slope(logQ(L // 2), logQ(L // 4), L // 2, L // 4)
    return k2, k2 - k1


def _unc(drift: float, omega: float = 0.5) -> float:
    """Remaining error of a local exponent whose corrections decay like L^-omega, from the
    change of the local exponent between [L/4, L/2] and [L/2, L] (geometric tail)."""
    return abs(drift) / (2.0 ** omega - 1.0)


def _regime(K: _Kernel) -> str:
    if K.kind == "alpha" or (K.kind == "leaky" and K.name in ("relu", "alpha_relu:1")):
        a = K.alpha
        if a == 1.0:
            return "relu"
        if a > 1.0:
            return "alpha>1"
        if a > 0.5:
            return "1/2<alpha<1"
        return "alpha<=1/2"
    if K.name == "tanh":
        return "tanh"
    return "other"


def _tanh_fixed_point(sv: float, sa: float) -> tuple[float, float]:
    """e* (root of sigma_v2 ((2/pi) asin e - e) + sigma_a2 (1 - e)) and mu (docs/theory.md §A2.4 (3))."""
    B = sv + sa
    if sa == 0.0:
        return 0.0, 1.0 - 2.0 / math.pi
    f = lambda e: sv * (2.0 / math.pi * math.asin(e) - e) + sa * (1.0 - e)  # noqa: E731
    # f(0) = sa > 0 and f < 0 just below 1 (asin's infinite slope): one root in (0, 1)
    es = _find_root_scalar(f, 0.0, 1.0 - 1e-15, xtol=1e-17, rtol=1e-15)
    mu = 1.0 - 2.0 / math.pi * (sv / B) / math.sqrt(1.0 - es * es)
    return es, mu


def _alpha_constants(alpha: float):
    """c_alpha, e*_alpha, Jbar'(e*) (docs/theory.md §A2.5; meanfield.special)."""
    from . import special
    ca = float(special.c_alpha(alpha))
    es = float(special.alpha_relu_fixed_point(alpha))
    if alpha == 0.0:  # the step: Jbar_0(c) = 1 - arccos(c)/pi
        jd = 1.0 / (math.pi * math.sqrt(1.0 - es * es))
    else:
        jd = float(special.alpha_relu_dnormalized(alpha, es))
    return ca, es, jd


def exponents(activation, arch: str = "resnet-full", *, sigma_w2: float = 1.0,
              sigma_b2: float = 0.0, sigma_v2: float = 1.0, sigma_a2: float = 0.0,
              fit_depth: int | None = None) -> Exponents:
    """The depth laws of a residual network (docs/theory.md §A2.4-2.6) next to fits from the recursion.

    ``fit_depth`` is the depth of the fits (default 10^6 where the kernel is fast, less for
    super-exponential laws, which leave float range, and for activations integrated by
    quadrature).  Fitted exponents are local log-log slopes over [L/2, L]; ``uncertainty``
    extrapolates their change from [L/4, L/2] (finite-depth corrections).
    """
    prm = _params(arch, sigma_w2, sigma_b2, sigma_v2, sigma_a2)
    K = _kernel(activation)
    reg = _regime(K)
    sw, sb, sv, sa = prm.sw, prm.sb, prm.sv, prm.sa
    if sw <= 0 or sv <= 0:
        raise DomainError("exponents need sigma_w2 > 0 and sigma_v2 > 0 (otherwise the branch "
                          "is constant and nothing grows)")
    B = sv + sa
    notes: list[str] = []
    slow_kernel = K.kind == "quadrature"
    mean = _Model(K, prm).mean
    if mean:
        notes.append("reduced net with E[phi] != 0: the stream carries the mean m^l = m^(l-1) + "
                     "E[phi(h^l)] and p^l, e^l are second moments, mean included (docs/residual.md)")
    if fit_depth is None:
        fit_depth = {"tanh": 10 ** 6, "1/2<alpha<1": 10 ** 6, "alpha<=1/2": 10 ** 6,
                     "relu": 10 ** 5, "alpha>1": 0}.get(reg, 10 ** 5)
        if mean and reg != "alpha>1":
            # layer by layer (~0.4 ms a layer with e); relu's 1 - e^l decays exponentially, so stop
            # before it underflows (log(1 - e^l) ~ log(1/2) - l * rate)
            fit_depth = 4096
            if reg == "relu":
                fit_depth = max(16, min(fit_depth, 4 * int(600.0 / _relu_reduced(sw)[2] / 4)))
    if reg == "other":
        # p (and chi) may leave float range (exponential growth of unbounded activations)
        try:
            iterate_residual(prm.arch, activation, sw, sb, fit_depth, sigma_v2=sv, sigma_a2=sa,
                             every=fit_depth, cosine=False, gradients=not K.grad_reason)
        except DomainError as exc:
            import re
            m = re.search(r"use depth <= (\d+)", str(exc))
            if not m:
                raise
            fit_depth = int(m.group(1))
            notes.append(f"the recursion leaves float range after layer {fit_depth}: fits use "
                         "that depth")
    if reg == "alpha>1":
        top = _max_depth(K, prm, 5000)
        fit_depth = min(fit_depth or 200, top)
    L = check_depth(fit_depth)
    if L < 16:
        raise DomainError(f"fit_depth must be at least 16, got {L}")
    grads = not K.grad_reason

    def traj(c0=0.5, cosine=True, depth=L, every=1):
        return iterate_residual(prm.arch, activation, sw, sb, depth, sigma_v2=sv, sigma_a2=sa,
                                p0=1.0, c0=c0, every=every, gradients=grads, cosine=cosine)

    every = max(1, L // 4096) if reg != "alpha>1" else 1
    every = _divisor_every(L, every)
    T = traj(every=every, cosine=not (reg == "other" and slow_kernel))
    idx = {int(l): i for i, l in enumerate(T.layers)}
    logp = lambda l: float(T.log_p[idx[l]])  # noqa: E731
    C_at = _cumulative_C(T) if grads else None
    rng = [L // 2, L]

    if mean and reg in ("relu", "1/2<alpha<1", "alpha<=1/2"):
        pe, ce, ee, se = _reduced_mean_entries(T, L, K, reg, sw, grads, C_at)
    elif reg == "tanh":
        e_star, mu = _tanh_fixed_point(sv, sa)
        kp, dp = _local(logp, L)
        pe = _entry("polynomial", "p^l ~ C l^k", 1.0, kp, B, float(T.p[-1]) / L,
                    source="docs/theory.md §A2.4 (1) [D][V]", uncertainty=_unc(dp), fit_range=rng,
                    note="p^l = B l - 4 sigma_v2 sqrt(l) / (sigma_w sqrt(2 pi B)) + ..., B = "
                         "sigma_v2 + sigma_a2; the local exponent approaches 1 like l^-1/2")
        c_chi = TANH_CHI_CONSTANT * sv * math.sqrt(sw) / math.sqrt(B)
        kc, dc = _local(lambda l: math.log(C_at(l)), L)
        # log(chi^0/chi^L) = C sqrt(L) + D log L + E (the log from p^l = B l - O(sqrt l) and the
        # second order of log(1 + x)): solve for C from L/4, L/2, L
        ls = np.array([L // 4, L // 2, L], dtype=float)
        M = np.stack([np.sqrt(ls), np.log(ls), np.ones(3)], axis=1)
        fc = float(np.linalg.solve(M, np.array([C_at(int(v)) for v in ls]))[0])
        ce = _entry("sub-exponential", "log(chi^0/chi^L) ~ C L^k", 0.5, kc, c_chi, fc,
                    source="docs/theory.md §A2.4 (2) [D][V]", uncertainty=_unc(dc), fit_range=rng,
                    note="C = (4/3) sqrt(2/pi) sigma_v2 sigma_w / sqrt(sigma_v2 + sigma_a2); "
                         "the O(1) offset makes the local exponent approach 1/2 like L^-1/2; "
                         "fitted_constant: C of C sqrt(L) + D log L + E through L/4, L/2, L")
        ee, Te = _cosine_entry(traj, L, e_star, -mu, "docs/theory.md §A2.4 (3) [D][V]", every, sa > 0,
                               two_term=0.5 if sa > 0 else None)
        se = _poly_entry(Te, L, 1.0, 2.0 * B * (1.0 - e_star), "s^l ~ C l^k", "docs/theory.md §A2.4 (3) [D]",
                         "C = 2 (sigma_v2 + sigma_a2) (1 - e*); 1 - e^l approaches 1 - e* like "
                         "l^-mu, which sets the finite-depth error", key="log_s",
                         omega=min(mu, 0.5))
    elif reg in ("1/2<alpha<1", "alpha<=1/2"):
        a = K.alpha
        ca, e_star, jd = _alpha_constants(a)
        A = (1.0 - a) * ca * sv * sw ** a
        k = 1.0 / (1.0 - a)
        mu = (1.0 - jd) / (1.0 - a)
        pe = _poly_entry(T, L, k, A ** k, "p^l ~ C l^k", "docs/theory.md §A2.5 [D][V]",
                         "k = 1/(1 - alpha), C = A^k, A = (1 - alpha) c_alpha sigma_v2 sigma_w^(2 "
                         "alpha); corrections O(1/l) from p^0, sigma_b2, sigma_a2", omega=1.0)
        if grads:
            R = a * a / ((1.0 - a) * (2.0 * a - 1.0))
            kc, dc = _local(lambda l: math.log(C_at(l)), L)
            # chi^0/chi^L ~ L^R: log chi = R log L + const, so fit d log chi / d log L
            kr = _slope(C_at(L), C_at(L // 2), L, L // 2)
            kr1 = _slope(C_at(L // 2), C_at(L // 4), L // 2, L // 4)
            ce = _entry("polynomial", "chi^0/chi^L ~ C L^R", R, kr, None, None,
                        source="docs/theory.md §A2.5 [D][V]", uncertainty=_unc(kr - kr1, 1.0),
                        fit_range=rng, note="R = alpha^2 / ((1 - alpha)(2 alpha - 1)), "
                        "independent of the variances; minimum 4 at alpha = 2/3")
        else:
            ce = _infinite_entry(K)
        ee, Te = _cosine_entry(traj, L, e_star, -mu, "docs/theory.md §A2.5 [D][V]", every, True,
                               alpha_jd=jd)
        se = _poly_entry(Te, L, k, 2.0 * (1.0 - e_star) * A ** k, "s^l ~ C l^k",
                         "docs/theory.md §A2.5 [D]", "C = 2 (1 - e*) A^(1/(1 - alpha)); fitted on the "
                         "trajectory started near e* (see e)", key="log_s", omega=min(mu, 1.0))
    elif reg == "relu":
        kap = sv * sw / 2.0
        rate = math.log1p(kap)
        pe = _exp_entry(T, L, rate, "log p^l ~ C l^k (C: growth rate per layer)",
                        "docs/theory.md §A2.5 (alpha = 1) [D][V]",
                        "p^l = Theta((1 + sigma_v2 sigma_w2/2)^l)")
        ce = _exp_entry(None, L, rate, "log(chi^0/chi^L) ~ C L^k (C: rate per layer)",
                        "docs/theory.md §A2.5 (alpha = 1) [D][V]",
                        "exact: chi^0/chi^L = (1 + sigma_v2 sigma_w2 / 2)^L", C_at=C_at)
        kk = kap / (1.0 + kap) * 2.0 * math.sqrt(2.0) / (3.0 * math.pi)
        x = lambda l: float(T.one_minus_e[idx[l]])  # noqa: E731
        kx, dx = _local(lambda l: math.log(x(l)), L)
        ee = _entry("polynomial", "1 - e^l ~ C l^k", -2.0, kx, 4.0 / kk ** 2, x(L) * L * L,
                    fixed_point=1.0, source="docs/theory.md §A2.5 (alpha = 1) [D][V]",
                    uncertainty=_unc(dx, 1.0), fit_range=rng,
                    note="C = 4/k^2, k = kappa/(1 + kappa) 2 sqrt(2)/(3 pi), kappa = sigma_v2 "
                         "sigma_w2 / 2; corrections O(log l / l)")
        se = _exp_entry(T, L, rate, "log s^l ~ C l^k (C: growth rate per layer)",
                        "docs/theory.md §A2.5 (alpha = 1) [D]", "s^l = 2 p^l (1 - e^l) ~ (1 + kappa)^l l^-2",
                        key="log_s")
    elif reg == "alpha>1":
        a = K.alpha
        ca, e_star, jd = _alpha_constants(a)
        pe = _dexp_entry(T, a, "log p^l ~ C alpha^l", "docs/theory.md §A2.5 (alpha > 1) [D] [?]")
        ce = _dexp_entry(T, a, "log(chi^0/chi^L) ~ C alpha^L", "docs/theory.md §A2.5 (alpha > 1) [D] [?]",
                         key="C")
        # with a mean too: once each layer's branch dwarfs the stream (p^l ~ V_phi(q^l)), the
        # mean's cross terms are relatively negligible and e^l follows the vanilla kernel map
        ee = _exp_cosine_entry(T, e_star, jd)
        se = _dexp_entry(T, a, "log s^l ~ C alpha^l", "docs/theory.md §A2.5 (alpha > 1) [D]", key="log_s")
        notes.append(f"log p^l leaves float range after layer {top} (double-exponential growth): "
                     f"the fits use depth {L}")
    else:
        pe, ce, ee, se = _fitted_only(T, L, K, traj, every, grads, C_at)
        x_end = float(T.one_minus_e[-1])
        if mean and K.kind != "quadrature" and not x_end > 1e-10:
            # the mean drives 1 - e^l to 0 exponentially; below ~1e-10 the distance kernel
            # 1 - W/V of a closed-form or tabulated W is a difference with no digits left
            why = (f"not computed: 1 - e^l = {x_end:.3g} at the fit depth, where {K.name}'s "
                   "distance kernel 1 - W/V (a difference) has no relative accuracy left")
            ee = _entry("not computed", "|e^l - e*| ~ C l^k", note=why)
            se = _entry("not computed", "s^l", note=why)
        notes.append(f"no depth law is known for {K.name} (docs/theory.md §A2.4, §A2.5): the entries are fitted only")
    if not grads:
        ce = _infinite_entry(K)
    return Exponents(activation=K.name, arch=prm.arch, sigma_w2=sw, sigma_b2=sb, sigma_v2=sv,
                     sigma_a2=sa, regime=reg, fit_depth=L, p=pe, e=ee, s=se, chi=ce,
                     notes=tuple(notes))


def _relu_reduced(sw: float) -> tuple[float, float, float]:
    """(r*, log rho, log rho - log(1 + sigma_w2/2)) of the reduced relu net (docs/residual.md,
    derived): with A = sqrt(sigma_w2 / (2 pi)), r = m / sqrt(p) obeys r' = (r + A) / sqrt(rho(r)),
    rho(r) = 1 + sigma_w2/2 + 2 r A, whose fixed point r* is the positive root of
    2 r^3 + pi A r^2 - 2 r - A = 0 (one root in (0, 1): the cubic is -A at 0, (pi - 1) A at 1,
    convex on r > 0); p^l ~ C rho(r*)^l and 1 - e^l ~ C' (rho / (1 + sigma_w2/2))^-l."""
    A = math.sqrt(sw / (2.0 * math.pi))
    f = lambda r: ((2.0 * r + math.pi * A) * r - 2.0) * r - A  # noqa: E731
    # small A: r* = 1 - (pi - 1) A / 4 + O(A^2) (the cubic at 1 is (pi - 1) A, lost to rounding)
    r = 1.0 - (math.pi - 1.0) * A / 4.0 if A < 1e-8 else _find_root_scalar(f, 0.0, 1.0, xtol=1e-17, rtol=1e-15)
    rate = math.log1p(sw / 2.0 + 2.0 * r * A)
    return r, rate, rate - math.log1p(sw / 2.0)


class _Series:
    """A trajectory-like view (``layers`` and one log series) for the entry builders."""

    def __init__(self, layers: np.ndarray, **series: np.ndarray):
        self.layers = layers
        self.__dict__.update(series)


def _reduced_mean_entries(T, L, K, reg, sw, grads, C_at):
    """p, chi, e, s laws of the reduced net with E[phi] != 0 (docs/residual.md, derived and
    checked against the recursion): relu exponential, alpha-ReLU (alpha < 1) polynomial."""
    idx = {int(l): i for i, l in enumerate(T.layers)}
    with np.errstate(divide="ignore"):
        V = _Series(T.layers, log_x=np.log(np.asarray(T.one_minus_e, dtype=float)))
    src = "docs/residual.md (reduced net with a non-zero-mean activation) [D]"
    x_ok = np.isfinite(V.log_x[idx[L]])
    if reg == "relu":
        r, rate, xrate = _relu_reduced(sw)
        pe = _exp_entry(T, L, rate, "log p^l ~ C l^k (C: growth rate per layer)", src,
                        f"C = log(1 + sigma_w2/2 + 2 r* A), A = sqrt(sigma_w2/(2 pi)), r* = lim "
                        f"m^l/sqrt(p^l) = {r:.12g}, the positive root of 2 r^3 + pi A r^2 - 2 r - A"
                        " = 0; faster than the gradient's log(1 + sigma_w2/2)")
        ce = _exp_entry(None, L, math.log1p(sw / 2.0), "log(chi^0/chi^L) ~ C L^k (C: rate per layer)",
                        src, "exact: chi^0/chi^L = (1 + sigma_w2/2)^L (the backward recursion has no "
                        "mean term)", C_at=C_at)
        if x_ok:
            ee = _exp_entry(V, L, -xrate, "log(1 - e^l) ~ C l^k (C: rate per layer, < 0)", src,
                            "C = -(log rho - log(1 + sigma_w2/2)): s^l grows like (1 + sigma_w2/2)^l, "
                            "p^l like rho^l, so the second-moment cosine tends to 1 exponentially",
                            key="log_x")
        else:
            ee = _entry("exponential", "log(1 - e^l) ~ C l^k (C: rate per layer, < 0)", 1.0, None,
                        -xrate, None, source=src, note="1 - e^l underflows before the fit depth")
        ee["fixed_point"] = 1.0
        se = _exp_entry(T, L, math.log1p(sw / 2.0), "log s^l ~ C l^k (C: growth rate per layer)",
                        src, "C = log(1 + sigma_w2/2): the mean's cross terms cancel in s, and "
                        "1 - c^l -> 0 makes the distance kernel linear", key="log_s")
        return pe, ce, ee, se
    from . import special
    a = K.alpha
    k1 = float(special.c_alpha(a / 2.0))
    beta = 2.0 / (1.0 - a)
    A = (k1 * (1.0 - a) * sw ** (a / 2.0)) ** beta
    pe = _poly_entry(T, L, beta, A, "p^l ~ C l^k", src,
                     "k = 2/(1 - alpha) (twice the full net's), C = (k1 (1 - alpha) sigma_w^alpha)^k, "
                     "k1 = E[max(0, z)^alpha]: m^l ~ sqrt(p^l) dominates; corrections O(log l / l)",
                     omega=1.0)
    if x_ok:
        ee = _poly_entry(V, L, -beta, None, "1 - e^l ~ C l^k", src,
                         "s^l tends to a finite limit and p^l ~ l^(2/(1 - alpha)); the constant is "
                         "not given in closed form", key="log_x", omega=1.0)
    else:
        ee = _entry("polynomial", "1 - e^l ~ C l^k", -beta, None, source=src,
                    note="1 - e^l underflows before the fit depth")
    ee["fixed_point"] = 1.0
    if np.isfinite(T.log_s[idx[L]]):
        se = _poly_entry(T, L, 0.0, None, "s^l ~ C l^k", src,
                         "bounded: s^l grows by the factor 1 + sigma_w2 V_phi'(q^l) + ..., and "
                         "V_phi'(q^l) ~ l^-2 is summable; the limit is not given in closed form",
                         key="log_s", omega=1.0)
        se["law"] = "bounded"
    else:
        se = _entry("bounded", "s^l ~ C l^k", 0.0, None, source=src, note="s^l = 0 (identical inputs)")
    if grads:
        kr = _slope(C_at(L), C_at(L // 2), L, L // 2)
        kr1 = _slope(C_at(L // 2), C_at(L // 4), L // 2, L // 4)
        ce = _entry("bounded", "chi^0/chi^L ~ C L^k", 0.0, kr, None, math.exp(C_at(L)),
                    source=src, uncertainty=_unc(kr - kr1, 1.0), fit_range=[L // 2, L],
                    note="bounded: log(chi^l-1/chi^l) = log(1 + sigma_w2 V_phi'(q^l)) ~ l^-2 is "
                         "summable; fitted_constant: chi^0/chi^L at the fit depth (the limit is "
                         "not given in closed form)")
    else:
        ce = _infinite_entry(K)
    return pe, ce, ee, se


def _divisor_every(L: int, every: int) -> int:
    """The largest e <= every with L/4, L/2 and L multiples of e (so those layers are kept)."""
    for e in range(max(1, every), 0, -1):
        if (L // 4) % e == 0 and (L // 2) % e == 0 and L % e == 0:
            return e
    return 1


def _cumulative_C(T: ResidualTrajectory) -> Callable[[int], float]:
    """log(chi^0/chi^l) of the network of depth l = log chi at 0 minus at l (from T at depth L)."""
    idx = {int(l): i for i, l in enumerate(T.layers)}
    lc0 = float(T.log_chi[0])
    return lambda l: lc0 - float(T.log_chi[idx[l]])


def _poly_entry(T, L, k, const, form, source, note, key="log_p", omega=0.5) -> dict:
    idx = {int(l): i for i, l in enumerate(T.layers)}
    arr = getattr(T, key)
    f = lambda l: float(arr[idx[l]])  # noqa: E731
    kp, dp = _local(f, L)
    return _entry("polynomial", form, k, kp, const, math.exp(f(L)) / L ** k, source=source,
                  note=note, uncertainty=_unc(dp, omega), fit_range=[L // 2, L])


def _exp_entry(T, L, rate, form, source, note, key="log_p", C_at=None) -> dict:
    if C_at is not None:
        f = C_at
    else:
        idx = {int(l): i for i, l in enumerate(T.layers)}
        arr = getattr(T, key)
        f = lambda l: float(arr[idx[l]])  # noqa: E731
    k, d = _local(lambda l: math.log(abs(f(l))), L)
    fitted_rate = (f(L) - f(L // 2)) / (L - L // 2)
    return _entry("exponential", form, 1.0, k, rate, fitted_rate, source=source, note=note,
                  uncertainty=_unc(d, 1.0), fit_range=[L // 2, L])


def _dexp_entry(T, alpha, form, source, key="log_p") -> dict:
    if key == "C":
        lc0 = float(T.log_chi[0])
        vals = lc0 - np.asarray(T.log_chi, dtype=float)
    else:
        vals = np.asarray(getattr(T, key), dtype=float)
    n = vals.size - 1
    # base of the double exponential from the last layers: (log Q)_l / (log Q)_{l-1} -> alpha
    k = 3
    ratio = (vals[n] / vals[n - k]) ** (1.0 / k) if vals[n - k] > 0 else float("nan")
    r1 = (vals[n - k] / vals[n - 2 * k]) ** (1.0 / k) if vals[n - 2 * k] > 0 else float("nan")
    return _entry("double-exponential", form + " (exponent: the base alpha)", alpha, ratio,
                  None, None, source=source, uncertainty=abs(ratio - r1),
                  fit_range=[int(T.layers[n - k]), int(T.layers[n])],
                  note="log Q_l / log Q_(l-1) -> alpha; the constant depends on the first layers")


def _exp_cosine_entry(T, e_star, jd) -> dict:
    """|e^l - e*| ~ C Jbar'(e*)^l: -log|e^l - e*| linear in l (exponent 1, constant: the rate)."""
    d = np.abs(np.asarray(T.e, dtype=float) - e_star)
    lay = np.asarray(T.layers)
    ok = np.flatnonzero((d > 1e-11) & (lay > 0))
    rate = math.log(jd)
    fitted = fitted_rate = unc = rng = None
    if ok.size >= 6:
        i0, i1, i2 = ok[ok.size // 3], ok[2 * ok.size // 3], ok[-1]
        l0, l1, l2 = (int(lay[i]) for i in (i0, i1, i2))
        s1 = (math.log(d[i1]) - math.log(d[i0])) / (l1 - l0)
        s2 = (math.log(d[i2]) - math.log(d[i1])) / (l2 - l1)
        fitted_rate = s2
        # d(-log|e - e*|)/dl ~ l^(k-1): k from the change of the slope between the two halves
        fitted = 1.0 + math.log(s2 / s1) / math.log((l1 + l2) / (l0 + l1)) if s1 * s2 > 0 \
            else None
        unc = abs(s2 - s1) / abs(rate)
        rng = [l0, l2]
    return _entry("exponential", "log|e^l - e*| ~ C l^k (C: rate per layer)", 1.0, fitted, rate,
                  fitted_rate, fixed_point=e_star, source="docs/theory.md §A2.5 (alpha > 1) [D]",
                  note="e^l -> e* like Jbar'(e*)^l, the vanilla kernel map's rate; "
                       "uncertainty: relative change of the rate across the fit range",
                  fit_range=rng, uncertainty=unc)


def _infinite_entry(K: _Kernel) -> dict:
    return _entry("infinite", "chi^0/chi^L", None, None, source="docs/theory.md §A2.5 [D]",
                  note=K.grad_reason or "gradients are infinite")


def _cosine_entry(traj, L, e_star, exponent, source, every, start_near: bool,
                  two_term: float | None = None, alpha_jd: float | None = None):
    """|e^l - e*| ~ l^exponent: local slope over [L/2, L], from a start near e* for alpha-ReLU
    (the linear regime; its nonlinear correction decays like l^-mu), and for tanh with
    sigma_a2 > 0 a fit of A l^-mu (1 + a l^-1/2) + B l^-1/2 + C/l over [100, L], because there
    the l^-1/2 correction decays almost as slowly as the leading term."""
    mu = -exponent
    c0 = e_star + 1e-4 * (1.0 - e_star) if (start_near and alpha_jd is not None) else 0.5
    T = traj(c0=c0, every=every)
    idx = {int(l): i for i, l in enumerate(T.layers)}
    d = lambda l: abs(float(T.e[idx[l]]) - e_star)  # noqa: E731
    k, dk = _local(lambda l: math.log(d(l)), L)
    if alpha_jd is not None:
        omega = min(mu, 1.0)
        note = (f"local exponent of |e^l - e*| over [L/2, L] from c0 = e* + 1e-4 (1 - e*) = "
                f"{c0:.10g}; the nonlinear correction decays like l^-mu")
    else:
        omega = 0.5
        note = "local exponent of |e^l - e*| over [L/2, L]; corrections decay like l^-1/2"
    fitted, unc = k, _unc(dk, omega)
    if two_term is not None:
        fit = _multi_term_fit(T, e_star, 100)
        fit2 = _multi_term_fit(T, e_star, 1000)
        if fit is not None and fit2 is not None:
            note = (f"fit of |e^l - e*| = A l^-mu (1 + a l^-1/2) + B l^-1/2 + C/l over [100, L]: "
                    f"the l^-1/2 term (from 1 - V_tanh(q) ~ q^-1/2 and p^l = B l - O(sqrt l)) "
                    f"decays almost as slowly as l^-mu, so the plain local exponent over [L/2, L] "
                    f"({k:.4f}) is still far from -mu at this depth (docs/residual.md)")
            fitted = -fit[0]
            unc = abs(fit[0] - fit2[0]) + 10.0 * fit[1]
    return _entry("polynomial", "|e^l - e*| ~ C l^k", exponent, fitted, None, None,
                  fixed_point=e_star, source=source, note=note, uncertainty=unc,
                  fit_range=[L // 2, L]), T


def _multi_term_fit(T, e_star: float, lmin: float) -> tuple[float, float] | None:
    """mu and the max relative residual of the fit A l^-mu (1 + a l^-1/2) + B l^-1/2 + C/l."""
    from scipy.optimize import least_squares
    lay = np.asarray(T.layers, dtype=float)
    d = np.asarray(T.e, dtype=float) - e_star
    sel = (lay >= lmin) & (d != 0)
    if sel.sum() < 12:
        return None
    l, y = lay[sel], d[sel]
    idx = np.unique(np.round(np.geomspace(1, l.size, 80)).astype(int) - 1)
    l, y = l[idx], y[idx]
    mu0 = -_slope(math.log(abs(y[-1])), math.log(abs(y[-2])), l[-1], l[-2])

    def model(th):
        A, a, Bc, Cc, mu = th
        return A * l ** (-mu) * (1.0 + a * l ** -0.5) + Bc * l ** -0.5 + Cc / l

    sol = least_squares(lambda th: model(th) / y - 1.0, x0=[y[-1] * l[-1] ** mu0, 0, 0, 0, mu0],
                        method="lm", max_nfev=20000)
    if not sol.success or not np.all(np.isfinite(sol.x)):
        return None
    return float(sol.x[4]), float(np.max(np.abs(sol.fun)))


def _fitted_only(T, L, K, traj, every, grads, C_at):
    idx = {int(l): i for i, l in enumerate(T.layers)}
    if K.kind == "quadrature":
        why = (f"not computed: {K.name} has no closed-form or tabulated kernel, so e and s cost "
               "a 2-D quadrature (~25 ms) per evaluation; run iterate_residual for them")
        ee = _entry("not computed", "|e^l - e*| ~ C l^k", note=why)
        se = _entry("not computed", "s^l", note=why)
    else:
        ee = se = None
    lp = lambda l: float(T.log_p[idx[l]])  # noqa: E731
    pe = _classify(lp, L, "p^l", "fitted from the recursion")
    if grads:
        ce = _classify(lambda l: math.log(max(C_at(l), 1e-300)), L, "chi^0/chi^L",
                       "fitted from the recursion", loglog=True, raw=C_at)
    else:
        ce = _infinite_entry(K)
    if ee is None:
        e = np.asarray(T.e, dtype=float)
        ee = _aitken_cosine(lambda l: float(e[idx[l]]), L)
        ls = lambda l: float(T.log_s[idx[l]])  # noqa: E731
        se = _classify(ls, L, "s^l", "fitted from the recursion") if np.isfinite(ls(L)) else \
            _entry("fitted only", "s^l", note="s^l = 0 (identical inputs)")
    return pe, ce, ee, se


def _classify(logQ, L, name, source, loglog=False, raw=None) -> dict:
    """Name the law of Q from its local behaviour: polynomial if d log Q / d log l settles,
    exponential if log Q grows linearly in l, sub-exponential in between (fitted only)."""
    if raw is not None:
        lQ = raw
    else:
        lQ = logQ
    q2, q1, q0 = lQ(L), lQ(L // 2), lQ(L // 4)
    kpoly = _slope(q2, q1, L, L // 2)
    kpoly0 = _slope(q1, q0, L // 2, L // 4)
    if q2 > 0 and q1 > 0 and q0 > 0:
        klog = _slope(math.log(q2), math.log(q1), L, L // 2)
        klog0 = _slope(math.log(q1), math.log(q0), L // 2, L // 4)
    else:
        klog = klog0 = float("nan")
    form_poly, form_log = f"{name} ~ C l^k", f"log {name} ~ C l^k"
    if math.isfinite(klog) and klog > 0.9 and q2 > 20:
        return _entry("exponential (fitted)", form_log, None, klog, None, (q2 - q1) / (L - L // 2),
                      source=source, uncertainty=_unc(klog - klog0, 1.0), fit_range=[L // 2, L],
                      note="fitted_constant: growth rate of log Q per layer")
    if abs(kpoly - kpoly0) <= 0.05 * max(abs(kpoly), 0.1) or not math.isfinite(klog) or \
            klog < 0.2:
        return _entry("polynomial (fitted)", form_poly, None, kpoly, None, math.exp(q2) / L ** kpoly
                      if q2 < _LOG_MAX else None, source=source, uncertainty=_unc(kpoly - kpoly0),
                      fit_range=[L // 2, L])
    return _entry("sub-exponential (fitted)", form_log, None, klog, None, q2 / L ** klog,
                  source=source, uncertainty=_unc(klog - klog0), fit_range=[L // 2, L])


def _aitken_cosine(e, L) -> dict:
    """e* and the exponent of |e^l - e*| from e at L/4, L/2, L, assuming a power law."""
    e0, e1, e2 = e(L // 4), e(L // 2), e(L)
    d1, d2 = e1 - e0, e2 - e1
    if d1 == 0 or d2 == 0 or d2 / d1 <= 0 or d2 / d1 >= 1:
        return _entry("fitted only", "|e^l - e*| ~ C l^k", None, None, fixed_point=e2,
                      source="fitted from the recursion",
                      note="e^l does not approach its limit as a power law over [L/4, L]")
    r = d2 / d1
    k = math.log(r) / math.log(2.0)
    e_star = e2 + d2 * r / (1.0 - r)
    return _entry("polynomial (fitted)", "|e^l - e*| ~ C l^k", None, k, None, None,
                  fixed_point=e_star, source="fitted from the recursion",
                  note="e* and k by Aitken extrapolation of e at L/4, L/2, L",
                  fit_range=[L // 4, L])


def _max_depth(K: _Kernel, prm: _Params, cap: int = 10 ** 6) -> int:
    """Number of layers the recursion can follow before log p^l or log chi leaves float range
    (only finite for double-exponential laws); found with the plain loop on (u, C)."""
    r = _Runner(_Model(K, prm), cap, np.array([0, cap]), cosine=False,
                grads=not K.grad_reason)
    try:
        r.sequential(0, cap, 0.0, 0.5, 0.0)
    except DomainError as exc:
        import re
        m = re.search(r"at layer (\d+)", str(exc))  # the layer where it failed
        return int(m.group(1)) - 1 if m else 0
    return cap


# --------------------------------------------------------------------------------------------
# Depth-dependent advice (docs/theory.md §A2.8)
# --------------------------------------------------------------------------------------------

#: Default budget in nats where no training run calibrated one (resnet-reduced, and full nets
#: with activations other than those of DEFAULT_BUDGETS).  Schoenholz et al. (2017) find vanilla
#: networks trainable up to a depth of about 6 xi_c; off criticality the gradient then changes by
#: chi_1^L = exp(-L/xi_c) = e^-6 over the network.  We read e^6 (~400x) as the largest end-to-end
#: gradient change a network tolerates (a ceiling, docs/theory.md §A2.8).
DEFAULT_BUDGET = 6.0

#: Default budgets (nats) of full residual nets per activation family ('tanh', 'relu',
#: '1/2<alpha<1'), calibrated on training maps (docs/residual.md, "Calibrating the budget";
#: scripts/validate_residual.py): on digits the best test accuracy sat at about 1 nat or less at
#: depths 10 to 100, and 6 nats trained worse (tanh) or diverged (relu).
DEFAULT_BUDGETS = {"tanh": 1.0, "relu": 1.0, "1/2<alpha<1": 1.0}


@dataclass(frozen=True)
class ResidualAdvice:
    """Depth-dependent initialisation of a residual network (docs/theory.md §A2.8), with the predicted
    diagnostics at the advised point and at common initialisations for comparison."""

    arch: str
    activation: str
    depth: int
    sigma_w2: float
    sigma_b2: float
    sigma_v2: float
    sigma_a2: float
    rule: str
    rule_formula: str
    solved_for: str | None
    asymptotic_value: float | None
    budget: float
    budget_meaning: str
    budget_is_default: bool
    width: int | None
    weight_std: dict | None
    diagnostics: dict
    comparisons: list
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return _json_dict({
            "arch": self.arch, "activation": self.activation, "depth": self.depth,
            "sigma_w2": self.sigma_w2, "sigma_b2": self.sigma_b2, "sigma_v2": self.sigma_v2,
            "sigma_a2": self.sigma_a2, "rule": self.rule, "rule_formula": self.rule_formula,
            "solved_for": self.solved_for, "asymptotic_value": self.asymptotic_value,
            "budget": self.budget, "budget_meaning": self.budget_meaning,
            "budget_is_default": self.budget_is_default, "width": self.width,
            "weight_std": self.weight_std, "diagnostics": self.diagnostics,
            "comparisons": self.comparisons, "notes": list(self.notes)})


def _diagnostics(arch, activation, sw, sb, sv, sa, depth) -> dict:
    """Predicted values at the output for two inputs with p^0 = 1 and cosine 0.5."""
    try:
        T = iterate_residual(arch, activation, sw, sb, depth, sigma_v2=sv, sigma_a2=sa,
                             p0=1.0, c0=0.5, every=depth)
    except DomainError as exc:
        return {"error": str(exc)}
    return {"explosion": float(T.chi[0]), "log_explosion": float(T.log_chi[0]),
            "p_L": float(T.p[-1]), "log_p_L": float(T.log_p[-1]), "e_L": float(T.e[-1]),
            "one_minus_e_L": float(T.one_minus_e[-1]), "s_L": float(T.s[-1]),
            "log_s_L": float(T.log_s[-1]), "m_L": float(T.m[-1])}


def _metric(kind: str, arch, activation, sw, sb, sv, sa, depth) -> float:
    """The budgeted quantity: log(chi^0/chi^L), log(p^L/p^0) (p^0 = 1) or ("max") the larger."""
    T = iterate_residual(arch, activation, sw, sb, depth, sigma_v2=sv, sigma_a2=sa, p0=1.0,
                         c0=0.5, every=depth, cosine=False, gradients=(kind != "p"))
    if kind == "max":
        return max(float(T.log_chi[0]), float(T.log_p[-1]))
    return float(T.log_chi[0]) if kind == "chi" else float(T.log_p[-1])


def _solve(kind, which, arch, activation, sw, sb, sv, sa, depth, G, guess) -> float:
    """The variance ``which`` ('sigma_w2' or 'sigma_v2') at which the metric equals G."""
    def f(lv):
        v = math.exp(lv)
        w2, v2 = (v, sv) if which == "sigma_w2" else (sw, v)
        try:
            return _metric(kind, arch, activation, w2, sb, v2, sa, depth) - G
        except DomainError:
            return math.inf
    lo = hi = math.log(guess) if guess and guess > 0 else 0.0
    flo, fhi = f(lo), f(hi)
    for _ in range(60):
        if flo < 0:
            break
        lo -= math.log(4.0)
        flo = f(lo)
    for _ in range(60):
        if fhi > 0:
            break
        hi += math.log(4.0)
        fhi = f(hi)
    if not (flo < 0 < fhi) and not (flo < 0 and fhi == math.inf):
        why = ""
        if flo >= 0 and math.isfinite(flo):
            why = (f": the budgeted quantity is still {flo + G:.4g} nats at {which} = "
                   f"{math.exp(lo):.3g} (set by the other variances, or by the mean of phi(b) "
                   "in the reduced net); allow a larger --budget")
        raise ConvergenceError(f"could not bracket {which} for a budget of {G:g} nats "
                               f"({activation}, depth {depth}){why}")
    return math.exp(_find_root_scalar(f, lo, hi, xtol=1e-12, rtol=1e-10, fa=flo, fb=fhi))


def advise_residual(arch: str, activation, depth: int, *, sigma_b2: float | None = None,
                    sigma_v2: float | None = None, sigma_a2: float | None = None,
                    sigma_w2: float | None = None, width: int | None = None,
                    budget: float | None = None) -> ResidualAdvice:
    """Depth-dependent variances for a residual network (docs/theory.md §A2.8).

    tanh: the gradient explosion log(chi^0/chi^L) equals the budget G (nats); asymptotically
    sigma_w = G sqrt(sigma_v2 + sigma_a2) / (1.0638 sigma_v2 sqrt(L)).  relu: (1 + sigma_v2
    sigma_w2 / 2)^L = e^G exactly, i.e. sigma_v2 sigma_w2 = 2 (e^(G/L) - 1) = O(1/L).
    alpha-ReLU with 1/2 < alpha < 1: the squared-distance scale p^L/p^0 = e^G, i.e. sigma_v2
    sigma_w^(2 alpha) L = const.  Other activations with finite gradients: the gradient budget,
    solved numerically.  The free variance is sigma_v2 for full nets with tanh (sigma_w2 = 1),
    relu (sigma_w2 = 2) and alpha-ReLU (sigma_w2 = 1), sigma_w2 otherwise, unless the caller
    fixes one; it is solved on the exact recursion, and the asymptotic formula's value is
    reported next to it.
    """
    prm0 = _params(arch, 1.0, 0.0 if sigma_b2 is None else sigma_b2, sigma_v2, sigma_a2)
    arch = prm0.arch
    K = _kernel(activation)
    depth = check_depth(depth, in_float_range=True)
    if K.grad_reason:
        raise DomainError(K.grad_reason + " for every initialisation; no residual advice")
    if budget is None:
        G = DEFAULT_BUDGETS.get(_regime(K), DEFAULT_BUDGET) if arch == "resnet-full" else DEFAULT_BUDGET
        default = True
    else:
        G, default = float(budget), False
        if not (math.isfinite(G) and G > 0):
            raise DomainError(f"budget must be a positive number of nats, got {budget!r}")
    if width is not None:
        if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 1:
            raise DomainError(f"width must be a positive integer, got {width!r}")
        width = int(width)
    sb = prm0.sb
    sa = prm0.sa
    reg = _regime(K)
    full = arch == "resnet-full"
    if sigma_w2 is not None:
        sigma_w2 = float(check_variance("sigma_w2", sigma_w2, positive=True))
    if sigma_v2 is not None:
        check_variance("sigma_v2", sigma_v2, positive=True)
    notes: list[str] = []
    kind = "p" if reg == "1/2<alpha<1" else "chi"
    mean = _Model(K, prm0).mean
    if mean:
        # the reduced net with E[phi] != 0: the stream's mean makes p grow faster than chi
        kind = "max"
    # which variance is free
    # tanh too (issue 11, docs/residual.md §8): at one explosion budget, shrinking sigma_w2 at
    # sigma_v2 = 1 leaves every block near-linear (q^l ~ G/L) and trained no better than a linear
    # model on MNIST-1D; sigma_w2 = 1 keeps q^l >= p^0 at every depth and won by 17 points there
    prefer_v = reg in ("tanh", "relu", "1/2<alpha<1") and full
    if not full:
        which = None if sigma_w2 is not None else "sigma_w2"
    elif sigma_w2 is None and sigma_v2 is None:
        which = "sigma_v2" if prefer_v else "sigma_w2"
    elif sigma_w2 is None:
        which = "sigma_w2"
    elif sigma_v2 is None:
        which = "sigma_v2"
    else:
        which = None
    sw = sigma_w2 if sigma_w2 is not None else (2.0 if reg == "relu" else 1.0)
    sv = prm0.sv
    if which == "sigma_w2" or which is None:
        sv = prm0.sv if sigma_v2 is not None or not full else 1.0
    if not full:
        sv = 1.0
    B = sv + sa
    L = depth
    if mean:
        meaning = ("G = the larger of log(p^L/p^0), the growth of the stream's second moment "
                   "(its mean included, p^0 = 1, m^0 = 0), and log(chi^0/chi^L), in nats")
        notes.append(f"reduced net with E[phi] != 0: x^l = x^(l-1) + {K.name}(h^l) adds the mean "
                     "E[phi(h^l)] to every coordinate, so p^l gains 2 m^(l-1) E[phi] per layer and "
                     "grows faster than the gradient (docs/residual.md); the budget caps both")
        if reg in ("relu", "1/2<alpha<1", "alpha<=1/2"):
            a = K.alpha
            rule = (f"forward-length budget ({'relu' if a == 1.0 else 'alpha-ReLU'}, reduced net "
                    "with the stream's mean)")
            if a == 1.0:
                formula = ("max(log(p^L/p^0), log(chi^0/chi^L)) = G; p binds (at fixed sigma_w2, "
                           "p^l ~ rho^l with rho = 1 + sigma_w2/2 + 2 r* A > 1 + sigma_w2/2, "
                           "A = sqrt(sigma_w2/(2 pi))); asymptotically in L at fixed G, "
                           "p^L/p^0 -> cosh^2(L A), i.e. sigma_w2 = 2 pi (arccosh(e^(G/2)) / L)^2"
                           " = O(1/L^2)")
            else:
                formula = ("max(log(p^L/p^0), log(chi^0/chi^L)) = G; p binds; asymptotically in L at "
                           "fixed G, p = 1 + m^2 with dm/d(eps l) = (1 + m^2)^(alpha/2), eps = k1 "
                           "sigma_w^alpha, k1 = E[max(0, z)^alpha]: sigma_w2 = (I / (k1 L))^(2/alpha),"
                           " I = int_0^sqrt(e^G - 1) (1 + x^2)^(-alpha/2) dx = O(1), so sigma_w2 = "
                           "O(L^(-2/alpha))")
            asym = _reduced_budget_asym(a, G, L) if which == "sigma_w2" else None
        else:
            rule = "forward-length and gradient budget (numerical)"
            formula = "max(log(p^L/p^0), log(chi^0/chi^L)) = G, solved on the recursion"
            asym = None
            notes.append(f"no closed-form depth law is known for the reduced net with {K.name}; the "
                         "budget is met numerically")
    elif reg == "tanh":
        rule = "gradient-explosion budget (tanh)"
        if which == "sigma_v2":
            formula = ("log(chi^0/chi^L) = G; asymptotically (q^L >> 1) 1.0638^2 sigma_w2 L sigma_v2^2 "
                       "= G^2 (sigma_v2 + sigma_a2), i.e. sigma_v2 = O(1/L) at fixed sigma_w2")
        else:
            formula = ("log(chi^0/chi^L) = G; asymptotically sigma_w = G sqrt(sigma_v2 + sigma_a2) / "
                       "(1.0638 sigma_v2 sqrt(L)), i.e. sigma_w ~ L^-1/2")
        meaning = "G = log(chi^0/chi^L), the gradient explosion from output to input, in nats"
        notes.append(
            "two limits of the tanh gradient law: q^L >> 1 (large budgets) gives the closed form "
            "sigma_w = G sqrt(B) / (1.0638 sigma_v2 sqrt(L)) of docs/theory.md §A2.8; with sigma_w2 "
            "free, for L >> G e^G the branch stays nearly linear and sigma_v2 sigma_w2 L -> G; both "
            "scale like 1/L, the solve on the recursion covers the crossover")
        if which == "sigma_w2":
            asym = (G * math.sqrt(B) / (TANH_CHI_CONSTANT * sv * math.sqrt(L))) ** 2
        elif which == "sigma_v2":
            # the root of C v sqrt(sigma_w2 L / (v + sigma_a2)) = G: C^2 sigma_w2 L v^2 = G^2 (v + sigma_a2)
            k = TANH_CHI_CONSTANT ** 2 * sw * L
            v = G * G * (1.0 + math.sqrt(1.0 + 4.0 * k * sa / (G * G))) / (2.0 * k)
            asym = v if 0.0 < v < 1e300 else None
        else:
            asym = None
    elif reg == "relu":
        rule = "gradient budget (relu, exact)"
        formula = ("(1 + sigma_v2 sigma_w2 / 2)^L = e^G, i.e. sigma_v2 sigma_w2 = 2 (e^(G/L) - 1)"
                   " = O(1/L)")
        meaning = ("G = log(chi^0/chi^L) = L log(1 + sigma_v2 sigma_w2 / 2) in nats (also log "
                   "p^L/p^0 when sigma_b2 = sigma_a2 = 0)")
        prod = 2.0 * math.expm1(G / L)
        asym = prod / sv if which == "sigma_w2" else prod / sw if which == "sigma_v2" else None
    elif reg == "1/2<alpha<1":
        a = K.alpha
        from . import special
        ca = float(special.c_alpha(a))
        rule = "squared-distance budget (alpha-ReLU, 1/2 < alpha < 1)"
        formula = ("p^L / p^0 = e^G (s^L ~ 2 (1 - e*) p^L); asymptotically "
                   "sigma_v2 sigma_w^(2 alpha)"
                   " L = (e^((1 - alpha) G) - 1) / ((1 - alpha) c_alpha), i.e. sigma_v2 ~ 1/L")
        meaning = ("G = log(p^L/p^0), the growth of the length and of the squared distance of two "
                   "inputs, in nats (the gradient exponent R_alpha is universal and cannot be "
                   "tuned)")
        prod = math.expm1((1.0 - a) * G) / ((1.0 - a) * ca * L)  # sigma_v2 sigma_w2^alpha
        asym = prod / sw ** a if which == "sigma_v2" else (prod / sv) ** (1.0 / a) \
            if which == "sigma_w2" else None
    else:
        rule = "gradient budget (numerical)"
        formula = "log(chi^0/chi^L) = G, solved on the recursion"
        meaning = "G = log(chi^0/chi^L), the gradient explosion from output to input, in nats"
        asym = None
        if reg == "alpha>1":
            notes.append("alpha > 1: p^l and chi grow double-exponentially once sigma_v2 c_alpha "
                         "q^alpha exceeds p; the budget keeps the branches small")
        else:
            notes.append(f"no closed-form depth law is known for {K.name} (docs/theory.md §A2.4, §A2.5); the budget is met "
                         "numerically")
    if which is not None:
        guess = asym if asym else 1.0 / L
        val = _solve(kind, which, arch, activation, sw, sb, sv, sa, depth, G, guess)
        if which == "sigma_w2":
            sw = val
        else:
            sv = val
        if reg == "tanh" and which == "sigma_v2":
            notes.append(
                f"sigma_w2 = {sw:g} held and sigma_v2 solved: q^l = sigma_w2 p^(l-1) + sigma_b2 >= "
                "sigma_w2 p^0 at every depth, so the blocks stay nonlinear, and sigma_v2 L -> G / "
                f"E[phi'(h)^2] along the net (here sigma_v2 L = {sv * L:.4g}); shrinking sigma_w2 "
                "at sigma_v2 = 1 instead leaves every block near-linear, which trained no better "
                "than a linear model on MNIST-1D (docs/residual.md §8)")
    else:
        rule = "none: sigma_w2 and sigma_v2 are both given (diagnostics only)"
    diag = _diagnostics(arch, activation, sw, sb, sv, sa, depth)
    comps = _comparisons(arch, activation, depth, width, K)
    std = None
    if width is not None:
        std = {"W": math.sqrt(sw / width), "b": math.sqrt(sb)}
        if full:
            std.update({"V": math.sqrt(sv / width), "a": math.sqrt(sa)})
    return ResidualAdvice(arch=arch, activation=K.name, depth=depth, sigma_w2=sw, sigma_b2=sb,
                          sigma_v2=sv, sigma_a2=sa, rule=rule, rule_formula=formula,
                          solved_for=which, asymptotic_value=asym, budget=G,
                          budget_meaning=meaning, budget_is_default=default, width=width,
                          weight_std=std, diagnostics=diag, comparisons=comps, notes=tuple(notes))


def _reduced_budget_asym(alpha: float, G: float, L: int) -> float:
    """sigma_w2 with p^L/p^0 = e^G in the reduced alpha-ReLU net (alpha <= 1; p^0 = 1, m^0 = 0,
    sigma_b2 = 0) as L -> infinity at fixed G (docs/residual.md, derived): with eps = k1 sigma_w^alpha
    the variance p - m^2 moves by O(eps^2) per layer, so p = 1 + m^2 and dm/dl = eps p^(alpha/2);
    eps L = int_0^sqrt(e^G - 1) (1 + x^2)^(-alpha/2) dx (arccosh(e^(G/2)) for relu)."""
    from . import special
    k1 = float(special.c_alpha(alpha / 2.0))
    top = math.sqrt(math.expm1(G))
    if alpha == 1.0:
        integral = math.asinh(top)
    else:
        from scipy.integrate import quad
        integral = quad(lambda x: (1.0 + x * x) ** (-alpha / 2.0), 0.0, top, epsabs=0.0,
                        epsrel=1e-13, limit=200)[0]
    return (integral / (k1 * L)) ** (2.0 / alpha)


def _comparisons(arch, activation, depth, width, K) -> list:
    full = arch == "resnet-full"
    L = depth
    bias = 1.0 / (3.0 * width) if width else 0.0
    rows = [
        ("he", 2.0, 2.0, 0.0, 0.0, "He/Kaiming: sigma_w2 = 2 in every layer"),
        ("xavier", 1.0, 1.0, 0.0, 0.0, "Xavier/Glorot (= LeCun) for square layers: sigma_w2 = 1"),
        ("pytorch-default", 1.0 / 3.0, 1.0 / 3.0, bias, bias,
         "torch.nn.Linear default: Var = 1/(3 fan_in); bias variance 1/(3 fan_in)"
         + ("" if width else " (taken as 0: no width given)")),
    ]
    if full:
        rows += [
            ("fixup", 2.0 / L, 0.0, 0.0, 0.0,
             "Fixup (m = 2): He scaled by L^-1/2 in std, last layer of each branch zero"),
            ("fixup-style", 2.0 / L, 2.0 / L, 0.0, 0.0,
             "both branch layers He scaled by L^-1/2 (Fixup's scaling without the zero layer)"),
        ]
    else:
        rows += [("branch-1/L", 2.0 / L, 1.0, 0.0, 0.0,
                  "He scaled by L^-1/2 in std (1/L variance)")]
    out = []
    for name, w2, v2, b2, a2, note in rows:
        if not full:
            v2, a2 = 1.0, 0.0
        d = {"name": name, "sigma_w2": w2, "sigma_v2": v2, "sigma_b2": b2, "sigma_a2": a2,
             "note": note}
        d.update(_diagnostics(arch, activation, w2, b2, v2, a2, depth))
        out.append(d)
    return out


__all__ = ["ARCHS", "TANH_CHI_CONSTANT", "DEFAULT_BUDGET", "DEFAULT_BUDGETS", "ResidualTrajectory", "Exponents",
           "ResidualAdvice", "iterate_residual", "exponents", "advise_residual"]
