"""The gradient independence assumption (GIA) and TP II's Simple GIA Check (docs/theory.md §A5.3,
docs/theory.md "Gradient independence").

The algebra's backward map (gradient second moments, ``propagate``'s ``gradient``) treats the
transpose of a weight in backprop as independent of the weight in the forward pass (GIA).  TP II
proves this gives the right infinite-width limits when the output is a linear readout of the
last embedding whose weights are zero-mean, independent and used nowhere else.  The algebra
draws every weight zero-mean and never uses one as its own transpose, so for its networks the
check comes down to the readout: :func:`gia_check` says whether it holds, and why.

Where the check fails the GIA answer can be wrong by a width-independent amount.
:func:`mean_readout_ntk` is such a network, outside the algebra: two hidden layers and a readout
whose weights have mean ``mu``.  Backprop through the second layer then picks up the TP III
correction Zdot = sigma_2^2 mu E[phi''(h^2)] x^1 (a term along the forward vector), which GIA
drops; :func:`mean_readout_empirical` measures the finite network, which follows the corrected
value (tests/test_network_gia.py, docs/theory.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import gaussian
from ..activations import get_activation
from ..errors import DomainError
from ..kernels._layers import correlation
from .attention import TiedAttention
from .core import Layer, Network, Record

# Layers that are linear in their input and carry no parameters: after the readout they keep
# the output linear in the readout weights.
_LINEAR_AFTER_READOUT = ("identity", "avg_pool", "global_avg_pool", "flatten")
_READOUTS = ("dense", "conv")


@dataclass(frozen=True)
class GIACheck(Record):
    """Whether TP II's Simple GIA Check holds for a network (docs/theory.md §A5.3)."""

    holds: bool
    #: the path of the readout layer (the last weight layer), None if the network has none
    readout: str | None
    reason: str


def _walk(layers: list[Layer], where: str) -> list[tuple[str, Layer]]:
    out: list[tuple[str, Layer]] = []
    for i, l in enumerate(layers):
        path = f"{where}[{i}]"
        if isinstance(l, Network):  # serial and repeat: their layers in order
            if l.name == "repeat":
                out += _walk(list(l.body.layers), f"{path}.body") * l.n
            else:
                out += _walk(list(l.layers), f"{path}.layers")
        else:
            out.append((path, l))
    return out


def gia_check(net: Network) -> GIACheck:
    """TP II's Simple GIA Check on a network of the algebra (docs/theory.md §A5.3): the output must be
    linear in a readout of zero-mean weights used once (a dense or conv layer followed only by
    identity, pooling or flatten)."""
    layers = _walk(list(net.layers), "layers")
    # tied attention (values = the input) has no weights of its own
    weighted = [i for i, (_, l) in enumerate(layers)
                if l.name in _READOUTS or l.name in ("rnn", "residual")
                or (l.name == "attention" and not isinstance(l, TiedAttention))]
    if not weighted:
        return GIACheck(False, None, "the network has no weight layer, so it has no readout and "
                        "no NTK; the check does not apply")
    k = weighted[-1]
    path, last = layers[k]
    after = [(p, l) for p, l in layers[k + 1:] if l.name not in _LINEAR_AFTER_READOUT]
    if last.name not in _READOUTS:
        return GIACheck(False, path, f"the last weight layer {path} is {last.name}, not a linear "
                        "readout: add a dense readout; until then the output is not linear in "
                        "zero-mean weights used once, and GIA's gradient moments are not "
                        "guaranteed (TP II)")
    if after:
        p, l = after[0]
        return GIACheck(False, path, f"{p} ({l.name}) comes after the readout {path}: the output "
                        "is not linear in the readout weights, so the Simple GIA Check fails and "
                        "GIA's gradient moments are not guaranteed; the NTK of one such output "
                        "unit is random even at infinite width (the algebra reports its mean)")
    return GIACheck(True, path, f"the readout {path} ({last.name}) has zero-mean weights drawn "
                    "independently and used once, and the output is linear in them: the Simple "
                    "GIA Check holds (TP II), so the NTK and the backward map's gradient moments "
                    "are the infinite-width limits")


# ------------------------------------------------------------------------------------------
# a network where the check fails: a readout with non-zero mean
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GIAComparison(Record):
    """NTK of the mean-readout network with and without GIA (docs/theory.md)."""

    gia: np.ndarray
    correct: np.ndarray
    #: correct - gia: the TP III correction, all in the first layer's term
    gap: np.ndarray


def _check_net_args(X: Any, activation: Any, sigma_w2: Any, sigma_v2: float, mu: float):
    from ..activations import Activation

    act = activation if isinstance(activation, Activation) else get_activation(activation)
    if act.d1 is None or act.d2 is None or act.kinks:
        # at a kink phi'' has a delta that act.d2 does not carry, and E[phi''] would miss it
        raise DomainError(f"the mean-readout network needs phi' and phi'' of {act.name!r} as "
                          "smooth functions (no kinks)")
    X = np.asarray(X, dtype=float)
    if X.ndim != 2 or not np.all(np.isfinite(X)):
        raise DomainError(f"X must be a finite (N, d) array, got shape {X.shape}")
    s1, s2 = (float(s) for s in sigma_w2)
    for name, v in (("sigma_w2[0]", s1), ("sigma_w2[1]", s2), ("sigma_v2", sigma_v2)):
        if not (np.isfinite(v) and v > 0):
            raise DomainError(f"{name} must be a positive variance, got {v!r}")
    if not np.isfinite(mu):
        raise DomainError(f"mu must be finite, got {mu!r}")
    return act, X, s1, s2, float(sigma_v2), float(mu)


def mean_readout_ntk(X: Any, activation: Any = "gelu", sigma_w2: tuple[float, float] = (2.0, 2.0),
                     sigma_v2: float = 1.0, mu: float = 1.0) -> GIAComparison:
    """NTK of f(x) = v . phi(h^2) / sqrt(n), h^2 = W^2 phi(h^1), h^1 = W^1 x (NTK
    parametrisation, no biases, W^l ~ N(0, sigma_w2[l]/fan_in)), v_a = mu + sqrt(sigma_v2) xi_a.

    Both answers share the readout and second-layer terms; in the first layer's, backprop
    through W^2 gives dx^1 = Zhat + b x^1 with b = sigma_2^2 mu E[phi''(h^2)] (TP III's
    correction, docs/theory.md §A5.3), which adds s1 (x.x'/d) b b' E[(phi phi')(h^1) (phi phi')(h^1')]
    to GIA's s1 (x.x'/d) E[phi'phi'] s2 (mu^2 + sigma_v2) E[phi'phi'](h^2)."""
    act, X, s1, s2, sv2, mu = _check_net_args(X, activation, sigma_w2, sigma_v2, mu)
    d = X.shape[1]
    G = X @ X.T / d

    def moments(S: np.ndarray):
        q = np.diag(S).copy()
        qi, qj = np.meshgrid(q, q, indexing="ij")
        return q, qi, qj, correlation(S, q, q)  # the algebra's rule (clipped, snapped to +-1)

    q1, q1i, q1j, c1 = moments(s1 * G)
    e1_ff = gaussian.w_phi(act, q1i, q1j, c1)
    e1_dd = gaussian.w_dphi(act, q1i, q1j, c1)
    fn, d1, d2 = act.fn, act.d1, act.d2

    def pp(u):
        return fn(u) * d1(u)

    e1_pp = gaussian.expect2(pp, pp, q1i.ravel(), q1j.ravel(), c1.ravel(), act.kinks).reshape(c1.shape)
    q2, q2i, q2j, c2 = moments(s2 * e1_ff)
    e2_ff = gaussian.w_phi(act, q2i, q2j, c2)
    e2_dd = gaussian.w_dphi(act, q2i, q2j, c2)
    m2 = gaussian.expect1(d2, q2, act.kinks)
    ev2 = mu * mu + sv2
    base = sv2 * e2_ff + s2 * ev2 * e2_dd * e1_ff
    w1_gia = s1 * G * e1_dd * s2 * ev2 * e2_dd
    b = s2 * mu * m2
    gap = s1 * G * np.outer(b, b) * e1_pp
    return GIAComparison(gia=base + w1_gia, correct=base + w1_gia + gap, gap=gap)


def mean_readout_empirical(X: Any, width: int, rng: Any = None, activation: Any = "gelu",
                           sigma_w2: tuple[float, float] = (2.0, 2.0), sigma_v2: float = 1.0,
                           mu: float = 1.0) -> np.ndarray:
    """The empirical NTK (N, N) of one random mean-readout network of this width (the network
    of :func:`mean_readout_ntk`), its Jacobian written out by hand."""
    act, X, s1, s2, sv2, mu = _check_net_args(X, activation, sigma_w2, sigma_v2, mu)
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 1:
        raise DomainError(f"width must be a positive integer, got {width!r}")
    rng = np.random.default_rng(rng)
    n, d = int(width), X.shape[1]
    w1 = rng.standard_normal((n, d))
    w2 = rng.standard_normal((n, n)) * np.sqrt(s2 / n)
    v = mu + np.sqrt(sv2) * rng.standard_normal(n)
    h1 = X @ w1.T * np.sqrt(s1 / d)
    x1 = act.fn(h1)
    h2 = x1 @ w2.T
    y = v * act.d1(h2)
    dh1 = act.d1(h1) * (y @ w2)
    x2 = act.fn(h2)
    G = X @ X.T / d
    return (sv2 * (x2 @ x2.T) / n + s2 * ((y @ y.T) / n) * ((x1 @ x1.T) / n)
            + s1 * G * (dh1 @ dh1.T) / n)
