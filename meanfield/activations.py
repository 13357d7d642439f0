"""Activations by string spec, each with phi, phi', phi'' and its closed-form Gaussian moments.

A spec is what a user types: ``tanh``, ``relu``, ``leaky_relu:0.1``, ``alpha_relu:1.5``,
``elu:1.0``, ``gelu``, ``silu`` (alias ``swish``) ...  ``get_activation`` turns a spec, an
:class:`Activation`, or any vectorised Python callable into an Activation.

Closed forms (the ``closed_forms`` mapping, keys ``m``, ``v``, ``vd``, ``dv``, ``vdd``, ``w``, ``wd``;
see meanfield.gaussian for their meaning) come from docs/theory.md §A3: the arc-cosine family
(Cho & Saul 2009) for relu / leaky_relu / abs / step / alpha_relu, Williams' arcsine kernel for
erf, and characteristic functions for sin / cos.  Everything else is integrated by
meanfield.gaussian, split at the activation's kinks.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from .errors import DomainError

Fn = Callable[[np.ndarray], np.ndarray]

_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)


@dataclass(frozen=True, eq=False)
class Activation:
    """An elementwise nonlinearity with what the mean-field theory needs of it.

    ``fn``, ``d1``, ``d2`` are phi, phi', phi'' (``None`` where they do not exist as
    functions); ``kinks`` are the pre-activations where phi or a derivative jumps;
    ``closed_forms`` maps moment names to exact formulas (see meanfield.gaussian).
    """

    name: str
    fn: Fn
    d1: Fn | None = None
    d2: Fn | None = None
    kinks: tuple[float, ...] = ()
    closed_forms: Mapping[str, Callable] = field(default_factory=dict)
    description: str = ""
    odd: bool = False
    missing_reason: str = ""

    def __call__(self, x):
        return self.fn(np.asarray(x, dtype=float))

    @property
    def closed(self) -> tuple[str, ...]:
        """Names of the moments available in closed form."""
        return tuple(k for k, v in self.closed_forms.items() if v is not None)

    def __hash__(self) -> int:
        return hash(self.name)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Activation):
            return NotImplemented
        return self is other or (self.name == other.name and self.fn is other.fn)

    def __repr__(self) -> str:
        return f"Activation({self.name!r})"


# ------------------------------------------------------------------------------------------
# Closed-form kernels
# ------------------------------------------------------------------------------------------

def _theta(c):
    """arccos(c) without cancellation near c = 1: 2 arcsin(sqrt((1 - c)/2))."""
    c = np.clip(c, -1.0, 1.0)
    return 2.0 * np.arcsin(np.sqrt(0.5 * (1.0 - c)))


def _k0(c):
    """P(u > 0, v > 0) for unit Gaussians with correlation c: (pi - theta) / (2 pi)."""
    return (np.pi - _theta(c)) / (2.0 * np.pi)


def _k1(c):
    """E[relu(u) relu(v)] for unit variances: (sin th + (pi - th) cos th) / (2 pi) (docs/theory.md §A3.1)."""
    c = np.clip(c, -1.0, 1.0)
    th = _theta(c)
    sin = np.sqrt(np.clip((1.0 - c) * (1.0 + c), 0.0, None))
    return (sin + (np.pi - th) * c) / (2.0 * np.pi)


def _leaky(a: float) -> dict:
    k = 0.5 * (1.0 + a * a)

    def w(q1, q2, c):
        return np.sqrt(q1 * q2) * ((1.0 + a * a) * _k1(c) - 2.0 * a * _k1(-c))

    def wd(q1, q2, c):
        return (1.0 + a * a) * _k0(c) + 2.0 * a * _k0(-c) + 0.0 * q1 * q2

    return {
        "m": lambda q: (1.0 - a) * np.sqrt(q / (2.0 * np.pi)),   # E[max(u, 0) + a min(u, 0)]
        "v": lambda q: k * q,
        "vd": lambda q: k + 0.0 * q,
        "dv": lambda q: k + 0.0 * q,
        "vdd": lambda q: 0.0 * q,  # phi'' = (1 - a) delta(u), and phi(0) = 0
        "w": w,
        "wd": wd,
    }


def _gelu_forms() -> dict:
    """E[u Phi(u) v Phi(v)] and E[phi'(u) phi'(v)] for GELU in closed form (docs/theory.md, GELU
    kernel): with Z1, Z2 independent N(0, 1), Phi(u) Phi(v) = P(Z1 < u, Z2 < v), so both are
    orthant moments of the Gaussian (u, v, u - Z1, v - Z2).  Written with alpha = q/(1+q) and
    1/(1+q) so that nothing overflows up to q ~ 1e308; theta = pi/2 + arcsin rho (rho the
    correlation of u - Z1 and v - Z2) as atan2(sqrt(1 - rho^2), -rho), accurate at rho -> +-1."""

    def parts(q1, q2, c):
        a, b = np.asarray(q1, float), np.asarray(q2, float)
        c = np.asarray(c, float)
        ia, ib = 1.0 / (1.0 + a), 1.0 / (1.0 + b)
        al, be = a * ia, b * ib
        omc2 = np.clip((1.0 - c) * (1.0 + c), 0.0, None)
        sq2 = omc2 * al * be + (ia + al * ib)          # 1 - rho^2 = det(I + Sigma) / ((1+a)(1+b))
        sq = np.sqrt(sq2)
        rho = c * np.sqrt(al * be)
        theta = np.arctan2(sq, -rho)
        return a, b, ia, ib, al, be, omc2, sq2, sq, rho, theta

    def w(q1, q2, c):
        a, b, ia, ib, al, be, omc2, sq2, sq, rho, theta = parts(q1, q2, c)
        A11 = (al * ib + al * be * omc2) / sq2          # regression of (u, v) on (u - Z1, v - Z2),
        A22 = (be * ia + al * be * omc2) / sq2          # A12 = rho / (sq2 sa sb)
        sa, sb = np.sqrt(1.0 + a), np.sqrt(1.0 + b)
        ssab = sa * sb
        mxx = (theta + rho * sq) / (2.0 * np.pi)
        mxy = (rho * theta + sq) / (2.0 * np.pi)
        return (rho / sq2 * (A11 * (sa / sb) + A22 * (sb / sa)) * mxx
                + (A11 * A22 * ssab + (rho / sq2) * (rho / (sq2 * ssab))) * mxy
                + rho / (sq2 * ssab) * theta / (2.0 * np.pi))

    def wd(q1, q2, c):
        a, b, ia, ib, al, be, omc2, sq2, sq, rho, theta = parts(q1, q2, c)
        return (theta + rho / sq * (ia + ib) + (rho * ia / sq2) * (ib / sq)) / (2.0 * np.pi)

    # E[u Phi(u)] = q E[pdf(u)] (Stein) = q / sqrt(2 pi (1 + q))
    return {"w": w, "wd": wd, "v": lambda q: w(q, q, 1.0), "vd": lambda q: wd(q, q, 1.0),
            "m": lambda q: q / np.sqrt(2.0 * np.pi * (1.0 + q))}


def _erf_v(q):
    """(2/pi) arcsin(q / (q + 1/2)); for q >= 1 as 1 - (4/pi) arcsin(1 / (2 sqrt(q + 1/2))), which
    keeps full relative accuracy in 1 - V (arcsin is ill-conditioned next to 1)."""
    q = np.asarray(q, dtype=float)
    with np.errstate(invalid="ignore"):
        big = 1.0 - (4.0 / np.pi) * np.arcsin(0.5 / np.sqrt(np.maximum(q, 1.0) + 0.5))
    return np.where(q >= 1.0, big, (2.0 / np.pi) * np.arcsin(q / (q + 0.5)))


def _erf_forms() -> dict:
    # Williams' arcsine kernel, written with q + 1/2 and q + 1/4 (1 + 2q = 2 (q + 1/2),
    # 1 + 4q = 4 (q + 1/4)) so that no product of lengths overflows up to q ~ 1e308.
    def w(q1, q2, c):
        q12 = c * np.sqrt(q1) * np.sqrt(q2)
        return (2.0 / np.pi) * np.arcsin(
            np.clip(q12 / (np.sqrt(q1 + 0.5) * np.sqrt(q2 + 0.5)), -1.0, 1.0))

    def wd(q1, q2, c):
        # det/4 with det = (1+2q1)(1+2q2) - 4 q12^2, written so that it stays positive at c = 1.
        s = np.sqrt(q1) * np.sqrt(q2) * np.sqrt(np.clip((1.0 - c) * (1.0 + c), 0.0, None))
        return (2.0 / np.pi) / np.hypot(np.sqrt(0.25 + 0.5 * (q1 + q2)), s)

    def root(q):
        return np.sqrt(q + 0.25)

    return {
        "v": _erf_v,
        "vd": lambda q: (2.0 / np.pi) / root(q),
        "dv": lambda q: 1.0 / (np.pi * (q + 0.5) * root(q)),
        "vdd": lambda q: -2.0 * q / (np.pi * (q + 0.5) * root(q)),
        "w": w,
        "wd": wd,
    }


def _trig_pair(q1, q2, c):
    """exp(-(q1 + q2 - 2 q12)/2) and exp(-(q1 + q2 + 2 q12)/2): E[cos(u -+ v)]."""
    q12 = c * np.sqrt(q1 * q2)
    s = q1 + q2
    return np.exp(-0.5 * (s - 2.0 * q12)), np.exp(-0.5 * (s + 2.0 * q12))


def _sin_forms() -> dict:
    return {
        "v": lambda q: -0.5 * np.expm1(-2.0 * q),
        "vd": lambda q: 0.5 * (1.0 + np.exp(-2.0 * q)),
        "dv": lambda q: np.exp(-2.0 * q),
        "vdd": lambda q: 0.5 * np.expm1(-2.0 * q),
        "w": lambda q1, q2, c: 0.5 * np.subtract(*_trig_pair(q1, q2, c)),
        "wd": lambda q1, q2, c: 0.5 * np.add(*_trig_pair(q1, q2, c)),
    }


def _cos_forms() -> dict:
    return {
        "m": lambda q: np.exp(-0.5 * q),
        "v": lambda q: 0.5 * (1.0 + np.exp(-2.0 * q)),
        "vd": lambda q: -0.5 * np.expm1(-2.0 * q),
        "dv": lambda q: -np.exp(-2.0 * q),
        "vdd": lambda q: -0.5 * (1.0 + np.exp(-2.0 * q)),
        "w": lambda q1, q2, c: 0.5 * np.add(*_trig_pair(q1, q2, c)),
        "wd": lambda q1, q2, c: 0.5 * np.subtract(*_trig_pair(q1, q2, c)),
    }


def _alpha_forms(alpha: float) -> dict:
    """max(0, x)^alpha: V = c_a q^a, W = (q1 q2)^(a/2) W_a(c) (docs/theory.md §A2.5, 2.7)."""
    from . import special

    ca = float(special.c_alpha(alpha))
    # E[max(0, z)^alpha] = c_(alpha/2) (c_a = E[max(0, z)^(2a)])
    cm = float(special.c_alpha(alpha / 2.0))
    forms: dict = {
        "m": lambda q: cm * q ** (alpha / 2),
        "v": lambda q: ca * q ** alpha,
        "w": lambda q1, q2, c: (q1 * q2) ** (alpha / 2) * special.alpha_relu_kernel(alpha, c),
    }
    if alpha > 0.5:
        cd = alpha * alpha * float(special.c_alpha(alpha - 1.0))
        forms.update({
            "vd": lambda q: cd * q ** (alpha - 1.0),
            "dv": lambda q: alpha * ca * q ** (alpha - 1.0),
            "vdd": lambda q: (alpha * ca - cd) * q ** (alpha - 1.0),
            "wd": lambda q1, q2, c: (q1 * q2) ** ((alpha - 1) / 2)
            * special.alpha_relu_dkernel(alpha, c),
        })
    return forms


# ------------------------------------------------------------------------------------------
# Elementwise functions
# ------------------------------------------------------------------------------------------

def _nan_kept(x, y):
    """y with NaN wherever x is NaN: np.where(x > 0, ...) would silently map NaN to a branch."""
    return np.where(np.isnan(x), np.nan, y)


def _sech2(x):
    """sech(x)^2 = 4 e^{-2|x|} / (1 + e^{-2|x|})^2, free of overflow and of 1 - tanh^2 cancellation."""
    e = np.exp(-2.0 * np.abs(x))
    return 4.0 * e / (1.0 + e) ** 2


class _LazySpecial:
    """scipy.special, imported on first use (it costs ~0.2 s at start-up)."""

    def __getattr__(self, name):
        from scipy import special

        return getattr(special, name)


sps = _LazySpecial()


def _sigmoid(x):
    return sps.expit(x)


def _gauss_pdf(x):
    return np.exp(-0.5 * x * x) / _SQRT2PI


_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_LAMBDA = 1.0507009873554804934193349852946


def _elu(a: float, lam: float = 1.0, name: str | None = None) -> Activation:
    return Activation(
        name=name or f"elu:{a:g}",
        fn=lambda x: _nan_kept(x, lam * np.where(x > 0, x, a * np.expm1(np.minimum(x, 0.0)))),
        d1=lambda x: _nan_kept(x, lam * np.where(x > 0, 1.0, a * np.exp(np.minimum(x, 0.0)))),
        d2=lambda x: _nan_kept(x, lam * np.where(x > 0, 0.0, a * np.exp(np.minimum(x, 0.0)))),
        kinks=(0.0,),
        description="exponential linear unit" if lam == 1.0 else "scaled ELU (Klambauer 2017)",
    )


def _leaky_relu(a: float, name: str | None = None) -> Activation:
    return Activation(
        name=name or f"leaky_relu:{a:g}",
        fn=lambda x: _nan_kept(x, np.where(x > 0, x, a * x)),
        d1=lambda x: _nan_kept(x, np.where(x > 0, 1.0, a) + 0.0 * x),
        d2=lambda x: 0.0 * x,
        kinks=(0.0,),
        closed_forms=_leaky(a),
        description="max(x, a x); relu is a = 0, abs is a = -1 (arc-cosine kernels)",
    )


def _alpha_relu(alpha: float) -> Activation:
    if not alpha > -0.5:
        raise DomainError(f"alpha_relu needs alpha > -1/2 (E[phi^2] diverges otherwise), got alpha = {alpha:g}")
    if alpha == 1.0:
        act = _leaky_relu(0.0, name="alpha_relu:1")
        return act
    name = f"alpha_relu:{alpha:g}"
    if alpha == 0.0:
        return Activation(
            name=name, fn=lambda x: _nan_kept(x, (x > 0).astype(float)), d1=None, d2=None, kinks=(0.0,),
            closed_forms={"m": lambda q: 0.5 + 0.0 * q, "v": lambda q: 0.5 + 0.0 * q,
                          "w": lambda q1, q2, c: _k0(c) + 0.0 * q1 * q2},
            description="step function Theta(x) (alpha-ReLU with alpha = 0)",
            missing_reason="the step's derivative is a delta function, so chi_1 is infinite",
        )

    def fn(x):
        return _nan_kept(x, np.where(x > 0, np.abs(x) ** alpha, 0.0))

    def d1(x):
        with np.errstate(divide="ignore"):
            return _nan_kept(x, np.where(x > 0, alpha * np.abs(x) ** (alpha - 1.0), 0.0))

    def d2(x):
        with np.errstate(divide="ignore"):
            return _nan_kept(x, np.where(x > 0, alpha * (alpha - 1.0) * np.abs(x) ** (alpha - 2.0), 0.0))

    smooth = alpha > 0.5
    return Activation(
        name=name, fn=fn, d1=d1 if smooth else None, d2=d2 if smooth else None, kinks=(0.0,),
        closed_forms=_alpha_forms(alpha),
        description="max(0, x)^alpha (Yang & Schoenholz 2017; Bessel-K0 kernels)",
        missing_reason="" if smooth else
        f"E[phi'^2] is infinite for alpha <= 1/2 (alpha = {alpha:g}): gradients are infinite",
    )


def _builtin(name: str, params: tuple[float, ...]) -> Activation:
    if name == "tanh":
        return Activation("tanh", np.tanh, _sech2, lambda x: -2.0 * np.tanh(x) * _sech2(x),
                          odd=True, description="hyperbolic tangent")
    if name == "erf":
        c = 2.0 / math.sqrt(math.pi)
        return Activation(
            "erf", lambda x: sps.erf(x), lambda x: c * np.exp(-x * x), lambda x: -2.0 * x * c * np.exp(-x * x),
            closed_forms=_erf_forms(), odd=True, description="error function (Williams' arcsine kernel)")
    if name == "relu":
        return _leaky_relu(0.0, name="relu")
    if name == "leaky_relu":
        return _leaky_relu(params[0] if params else 0.01)
    if name == "abs":
        return _leaky_relu(-1.0, name="abs")
    if name == "alpha_relu":
        if not params:
            raise DomainError("alpha_relu needs its exponent, e.g. 'alpha_relu:0.75'")
        return _alpha_relu(params[0])
    if name == "step":
        act = _alpha_relu(0.0)
        return Activation(**{**act.__dict__, "name": "step"})
    if name == "linear":
        return Activation(
            "linear", lambda x: 1.0 * x, lambda x: 1.0 + 0.0 * x, lambda x: 0.0 * x,
            closed_forms={"v": lambda q: 1.0 * q, "vd": lambda q: 1.0 + 0.0 * q,
                          "dv": lambda q: 1.0 + 0.0 * q, "vdd": lambda q: 0.0 * q,
                          "w": lambda q1, q2, c: c * np.sqrt(q1 * q2),
                          "wd": lambda q1, q2, c: 1.0 + 0.0 * (q1 * q2 * c)},
            odd=True, description="identity")
    if name == "sin":
        return Activation("sin", np.sin, np.cos, lambda x: -np.sin(x), closed_forms=_sin_forms(),
                          odd=True, description="sine (closed forms from the characteristic function)")
    if name == "cos":
        return Activation("cos", np.cos, lambda x: -np.sin(x), lambda x: -np.cos(x),
                          closed_forms=_cos_forms(), description="cosine")
    if name == "sigmoid":
        return Activation(
            "sigmoid", _sigmoid, lambda x: _sigmoid(x) * _sigmoid(-x),
            lambda x: _sigmoid(x) * _sigmoid(-x) * (1.0 - 2.0 * _sigmoid(x)), description="logistic sigmoid")
    if name == "softplus":
        return Activation(
            "softplus", lambda x: np.logaddexp(0.0, x), _sigmoid,
            lambda x: _sigmoid(x) * _sigmoid(-x), description="log(1 + e^x)")
    if name == "gelu":
        return Activation(
            "gelu", lambda x: x * sps.ndtr(x), lambda x: sps.ndtr(x) + x * _gauss_pdf(x),
            lambda x: _gauss_pdf(x) * (2.0 - x * x), closed_forms=_gelu_forms(),
            description="x Phi(x) (exact, not the tanh approximation)")
    if name == "silu":
        return Activation(
            "silu", lambda x: x * _sigmoid(x),
            lambda x: _sigmoid(x) * (1.0 + x * _sigmoid(-x)),
            lambda x: _sigmoid(x) * _sigmoid(-x) * (2.0 + x * (1.0 - 2.0 * _sigmoid(x))),
            description="x sigmoid(x) (swish)")
    if name == "elu":
        return _elu(params[0] if params else 1.0)
    if name == "selu":
        return _elu(_SELU_ALPHA, _SELU_LAMBDA, name="selu")
    if name == "hard_tanh":
        return Activation(
            "hard_tanh", lambda x: np.clip(x, -1.0, 1.0), lambda x: _nan_kept(x, (np.abs(x) < 1).astype(float)),
            lambda x: 0.0 * x, kinks=(-1.0, 1.0), odd=True, description="clip(x, -1, 1)")
    raise KeyError(name)


# name -> (number of parameters allowed, parameter description)
_REGISTRY: dict[str, tuple[tuple[int, ...], str]] = {
    "tanh": ((0,), ""), "erf": ((0,), ""), "relu": ((0,), ""), "leaky_relu": ((0, 1), "slope A"),
    "alpha_relu": ((1,), "exponent ALPHA > -1/2"), "step": ((0,), ""), "abs": ((0,), ""),
    "linear": ((0,), ""), "sin": ((0,), ""), "cos": ((0,), ""), "sigmoid": ((0,), ""),
    "softplus": ((0,), ""), "gelu": ((0,), ""), "silu": ((0,), ""), "elu": ((0, 1), "A"),
    "selu": ((0,), ""), "hard_tanh": ((0,), ""),
}
_ALIASES = {"swish": "silu", "identity": "linear", "hardtanh": "hard_tanh", "leakyrelu": "leaky_relu"}
_CUSTOM: dict[str, Activation] = {}
_CACHE: dict[str, Activation] = {}


def available() -> list[str]:
    """The registry's activation names (without parameters), aliases and registered customs."""
    return sorted(set(_REGISTRY) | set(_ALIASES) | set(_CUSTOM))


def parse_spec(spec: str) -> tuple[str, tuple[float, ...]]:
    """Split 'name:p1,p2' into ('name', (p1, p2)); numbers are parsed with float(), never eval."""
    if not isinstance(spec, str) or not spec.strip():
        raise DomainError(f"activation must be a non-empty string spec, got {spec!r}")
    name, _, rest = spec.strip().partition(":")
    name = name.strip().lower()
    name = _ALIASES.get(name, name)
    params: list[float] = []
    if _ and not rest.strip():
        raise DomainError(f"activation {spec!r}: the parameter after ':' is missing (write e.g. "
                          f"'{name}:0.1', or '{name}' for its default)")
    if rest.strip():
        for tok in rest.split(","):
            try:
                val = float(tok)
            except ValueError:
                raise DomainError(f"activation {spec!r}: parameter {tok.strip()!r} is not a number") from None
            if not math.isfinite(val):
                raise DomainError(f"activation {spec!r}: parameter {tok.strip()!r} must be finite")
            params.append(val)
    return name, tuple(params)


def get_activation(spec: "str | Activation | Callable") -> Activation:
    """Return the Activation for a spec string, an Activation, or a vectorised callable.

    Unknown names raise DomainError listing the closest registry names.
    """
    if isinstance(spec, Activation):
        return spec
    if callable(spec) and not isinstance(spec, str):
        return custom(spec)
    name, params = parse_spec(spec)
    key = name + (":" + ",".join(repr(p) for p in params) if params else "")
    if key in _CACHE:
        return _CACHE[key]
    if name in _CUSTOM and not params:
        return _CUSTOM[name]
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, available(), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise DomainError(f"unknown activation {spec!r}{hint} (known: {', '.join(available())})")
    counts, pdesc = _REGISTRY[name]
    if len(params) not in counts:
        raise DomainError(f"activation {name!r} takes {' or '.join(map(str, counts))} parameter(s)"
                          f"{' (' + pdesc + ')' if pdesc else ''}, got {len(params)} in {spec!r}")
    act = _builtin(name, params)
    _CACHE[key] = act
    return act


def _finite_difference(fn: Fn, h: float) -> Fn:
    def d(x):
        x = np.asarray(x, dtype=float)
        return (fn(x + h) - fn(x - h)) / (2.0 * h)
    return d


def _piecewise_linear_through_0(fn: Fn) -> tuple[float, float] | None:
    """(phi(1), phi(-1)) when phi(x) = phi(1) x for x > 0 and phi(-1) |x| for x < 0 (leaky ReLU
    written as a lambda), checked on a grid to 1e-12; else None."""
    x = np.concatenate([-np.logspace(-6, 6, 49), np.logspace(-6, 6, 49)])
    try:
        with np.errstate(all="ignore"):
            y = np.asarray(fn(x), dtype=float)
            ends = np.asarray(fn(np.array([1.0, -1.0, 0.0])), dtype=float)
    except Exception:  # noqa: BLE001 - user code: not this family
        return None
    if y.shape != x.shape or ends.shape != (3,) or not np.all(np.isfinite(y)) or ends[2] != 0.0:
        return None
    b, m = float(ends[0]), float(ends[1])
    want = np.where(x > 0, b * x, m * np.abs(x))
    if np.all(np.abs(y - want) <= 1e-12 * np.maximum(np.abs(want), np.abs(x) * 1e-3)):
        return b, m
    return None


def _two_slopes(b: float, m: float) -> dict:
    """Kernels of phi = b relu(x) + m relu(-x) (docs/theory.md §A3.1): W = sqrt(q1 q2) [(b^2 + m^2) K1(c) +
    2 b m K1(-c)], E[phi' phi'] = (b^2 + m^2) K0(c) - 2 b m K0(-c)."""
    s2, bm = b * b + m * m, b * m
    k = 0.5 * s2
    return {
        "m": lambda q: (b + m) * np.sqrt(q / (2.0 * np.pi)),
        "v": lambda q: k * q,
        "vd": lambda q: k + 0.0 * q,
        "dv": lambda q: k + 0.0 * q,
        "vdd": lambda q: 0.0 * q,
        "w": lambda q1, q2, c: np.sqrt(q1 * q2) * (s2 * _k1(c) + 2.0 * bm * _k1(-c)),
        "wd": lambda q1, q2, c: s2 * _k0(c) - 2.0 * bm * _k0(-c) + 0.0 * q1 * q2,
    }


def custom(fn: Fn, d1: Fn | None = None, d2: Fn | None = None, *, name: str | None = None,
           kinks: tuple[float, ...] = (), register: bool = False) -> Activation:
    """Wrap a vectorised callable as an Activation.

    Missing derivatives are taken by central finite differences (step 1e-5 for phi', 1e-4
    for phi''), accurate to about 1e-10 and 1e-8 for smooth phi.  Give ``kinks`` for
    piecewise functions so the quadrature splits there.
    """
    probe = np.linspace(-3.0, 3.0, 7)
    try:
        out = np.asarray(fn(probe), dtype=float)
    except Exception as exc:  # noqa: BLE001 - any failure of user code is a domain error here
        raise DomainError(f"custom activation could not be evaluated on an array: {exc}") from None
    if out.shape != probe.shape:
        raise DomainError("custom activation must be elementwise: f(array) must return an array of the same shape")
    if not np.all(np.isfinite(out)):
        raise DomainError("custom activation returned non-finite values on [-3, 3]")
    nm = name or f"custom:{getattr(fn, '__name__', 'fn')}"
    homog = _piecewise_linear_through_0(fn)
    if homog is not None and d1 is None and d2 is None:
        # phi(x) = b relu(x) + m relu(-x): the arc-cosine kernels are exact (as for leaky_relu),
        # where finite differences and unsplit quadrature would blur the kink at 0.
        b, m = homog
        act = Activation(nm, lambda x: np.asarray(fn(x), dtype=float),
                         lambda x: _nan_kept(x, np.where(x > 0, b, -m) + 0.0 * x), lambda x: 0.0 * x,
                         kinks=(0.0,), closed_forms=_two_slopes(b, m),
                         description=f"user-supplied callable (positively homogeneous: slopes {b:g} and {-m:g})")
        if register:
            _CUSTOM[nm] = act
        return act
    if d1 is None:
        d1 = _finite_difference(fn, 1e-5)
    if d2 is None:
        d2 = _finite_difference(d1, 1e-4)
    act = Activation(nm, lambda x: np.asarray(fn(x), dtype=float), d1, d2, kinks=tuple(kinks),
                     description="user-supplied callable")
    if register:
        _CUSTOM[nm] = act
    return act


__all__ = ["Activation", "get_activation", "custom", "available", "parse_spec"]
