"""Mean-field maps of vanilla deep networks (Poole et al. 2016; Schoenholz et al. 2017).

Conventions (MATH.md section 0): variances, fan-in normalisation W ~ N(0, sigma_w2 / N),
b ~ N(0, sigma_b2); q is the pre-activation second moment, c the correlation of two inputs.
All functions broadcast over numpy arrays and return float64 arrays (0-d for scalars).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import gaussian
from .activations import Activation, get_activation
from .errors import DomainError


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


def check_depth(depth: Any, name: str = "depth") -> int:
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) and not (
            isinstance(depth, float) and depth.is_integer()):
        raise DomainError(f"{name} must be a positive integer, got {depth!r}")
    d = int(depth)
    if d < 1:
        raise DomainError(f"{name} must be >= 1, got {d}")
    return d


def _show(arr: np.ndarray) -> str:
    bad = arr[~np.isfinite(arr)] if arr.ndim else arr
    return f"{float(np.ravel(bad)[0])}"


def length_map(activation, q, sigma_w2, sigma_b2) -> np.ndarray:
    """Length map q^l = sigma_w2 V_phi(q^{l-1}) + sigma_b2 (MATH.md 1.2)."""
    act = _act(activation)
    return sigma_w2 * gaussian.v_phi(act, q) + np.asarray(sigma_b2, dtype=float)


def length_map_slope(activation, q, sigma_w2) -> np.ndarray:
    """d q^l / d q^{l-1} = sigma_w2 dV_phi/dq = chi_1 + sigma_w2 E[phi'' phi] (MATH.md 1.2)."""
    return np.asarray(sigma_w2, dtype=float) * gaussian.dv_phi(_act(activation), q)


def covariance_map(activation, q1, q2, q12, sigma_w2, sigma_b2) -> np.ndarray:
    """q_ab^l = sigma_w2 W_phi(q_aa, q_bb, q_ab) + sigma_b2 (MATH.md 1.3), in covariance units."""
    q1, q2, q12 = (np.asarray(a, dtype=float) for a in (q1, q2, q12))
    with np.errstate(invalid="ignore", divide="ignore"):
        den = np.sqrt(q1 * q2)
        c = np.where(den > 0, q12 / np.where(den > 0, den, 1.0), 1.0)
    return sigma_w2 * gaussian.w_phi(_act(activation), q1, q2, np.clip(c, -1.0, 1.0)) + sigma_b2


def correlation_map(activation, c, q, sigma_w2, sigma_b2) -> np.ndarray:
    """Next-layer correlation of two inputs of equal length q (MATH.md 1.3):

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
    """chi_1 = sigma_w2 E[phi'(sqrt(q) z)^2] (MATH.md 1.3): slope of the C-map at c = 1."""
    return np.asarray(sigma_w2, dtype=float) * gaussian.v_dphi(_act(activation), q)


def chi_c(activation, q, c, sigma_w2) -> np.ndarray:
    """chi_c = sigma_w2 E[phi'(u) phi'(v)] at lengths q, correlation c (MATH.md 1.3, Price identity)."""
    return np.asarray(sigma_w2, dtype=float) * gaussian.w_dphi(_act(activation), q, q, c)


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


def iterate(activation, sigma_w2: float, sigma_b2: float, depth: int, q0: float = 1.0,
            c0: float = 0.5) -> Trajectory:
    """Iterate the length and correlation maps (MATH.md 1.2-1.3) for ``depth`` layers.

    q0 and c0 are the first layer's pre-activation length and the two inputs' correlation;
    q[l], c[l] are the values after l further layers.  Both inputs have the same length.
    """
    act = _act(activation)
    sw = float(check_variance("sigma_w2", sigma_w2))
    sb = float(check_variance("sigma_b2", sigma_b2))
    depth = check_depth(depth)
    q = float(check_variance("q0", q0))
    c = float(check_correlation("c0", c0))
    qs, cs = [q], [c]
    table = None
    smooth = act.closed_forms.get("w") is None and not act.kinks
    for layer in range(depth):
        q_next = float(sw * gaussian.v_phi(act, q) + sb)
        if not (q > 0 or sb > 0):
            c_next = 1.0
        elif table is not None:
            c_next = float(np.clip((sw * table.w(c) + sb) / q_next, -1.0, 1.0)) if c != 1.0 else 1.0
        else:
            c_next = float(correlation_map(act, c, q, sw, sb))
        if not np.isfinite(q_next):
            from .errors import ConvergenceError
            raise ConvergenceError(f"q overflowed float range after {layer + 1} layers "
                                   f"({act.name}, sigma_w2={sw:g}, sigma_b2={sb:g}): the length map diverges")
        # Once the length has converged to working precision, every further layer applies the
        # same C-map: a Chebyshev table of W(q*, q*, .) (exact to ~1e-15 for smooth phi) replaces
        # one 2-D quadrature per layer.
        if smooth and table is None and abs(q_next - q) <= 1e-15 * q and depth - layer > 64:
            table = gaussian.CorrelationTable(act, q, n=65, derivative=False)
        if abs(q_next - q) <= 1e-15 * q and c_next == c:
            qs.extend([q] * (depth - layer))
            cs.extend([c] * (depth - layer))
            break
        q, c = q_next, c_next
        qs.append(q)
        cs.append(c)
    return Trajectory(act.name, sw, sb, depth, qs, cs)


__all__ = ["length_map", "length_map_slope", "covariance_map", "correlation_map", "chi_1", "chi_c",
           "iterate", "Trajectory", "check_variance", "check_correlation", "check_depth"]
