"""Finite-width random networks in numpy: the empirical side of every check.

Everything here samples; nothing computes a Gaussian integral.  The mean-field side lives in
``maps``, ``residual`` and ``kernels``; the tests compare the two with tolerances taken from the
standard errors reported here (independent networks, never neurons, are the samples).

* :func:`simulate_mlp` -- two inputs through a deep vanilla network (docs/theory.md §A1.1-1.5).
* :func:`simulate_resnet` -- two inputs through a reduced or full residual network (§2.1-2.3).
* :func:`empirical_ntk`, :func:`empirical_nngp` -- kernels of finite networks (§4.1-4.3).
* :func:`inputs_on_sphere` -- inputs with x.x/d = 1 and prescribed overlaps.

Two samplers of the random weight matrices are available to the depth simulations:

``method="dense"``
    Materialises every N x N matrix (O(N^2) per layer; regenerated from its own seed for the
    backward pass instead of being stored).
``method="conditional"`` (default)
    Exact in distribution and O(N) per layer.  A layer is only ever applied to the rows of a
    k x N block X (k = 2 inputs), so with X^T = QR (Q orthonormal, N x k) the weight matrix splits
    as W = A Q^T + G (I - QQ^T) with A = WQ and G independent N x N Gaussian matrices (rotation
    invariance).  The forward pass needs only A (N x k, iid N(0, var/N)); the backward pass
    D W = (DA) Q^T + (DG)(I - QQ^T) needs DG, whose columns are iid N(0, var/N * D D^T) given
    everything else, because G never entered the forward pass.  The joint law of all forward and
    backward quantities is therefore exactly that of the dense network; the tests check this
    against ``method="dense"``.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, fields
from typing import Any, Callable, Sequence, Union

import numpy as np

from .errors import DomainError

__all__ = [
    "MLPSimulation",
    "ResNetSimulation",
    "EmpiricalKernel",
    "simulate_mlp",
    "simulate_resnet",
    "empirical_ntk",
    "empirical_nngp",
    "inputs_on_sphere",
]

Fn = Callable[[np.ndarray], np.ndarray]
Seed = Union[int, np.random.Generator, np.random.SeedSequence, None]

#: working memory (bytes) one chunk of networks may use; chunks are processed one after another
_BUDGET = 512 * 2**20
_METHODS = ("conditional", "dense")


# ------------------------------------------------------------------------------------------
# Arguments
# ------------------------------------------------------------------------------------------

def _resolve(activation: Any, need_d1: bool = True) -> tuple[str, Fn, Fn | None]:
    """(name, phi, phi') from an Activation, a spec string, a callable, or a pair (phi, dphi)."""
    if isinstance(activation, (tuple, list)):
        if len(activation) != 2 or not all(callable(f) for f in activation):
            raise DomainError("activation given as a pair must be two callables (phi, dphi)")
        phi, dphi = activation
        return getattr(phi, "__name__", "custom"), phi, dphi
    if not hasattr(activation, "fn"):
        if not (isinstance(activation, str) or callable(activation)):
            raise DomainError(f"activation must be a spec string, an Activation or a pair "
                              f"(phi, dphi), got {activation!r}")
        from .activations import get_activation  # lazy: the samplers do not need the core
        activation = get_activation(activation)
    name = str(getattr(activation, "name", "custom"))
    d1 = getattr(activation, "d1", None)
    if need_d1 and d1 is None:
        why = getattr(activation, "missing_reason", "")
        raise DomainError(f"activation {name!r} has no derivative function"
                          f"{' (' + why + ')' if why else ''}; backpropagation needs phi'")
    return name, activation.fn, d1


def _call(f: Fn, x: np.ndarray) -> np.ndarray:
    return np.asarray(f(x), dtype=np.float64)


def _int(name: str, value: Any, minimum: int) -> int:
    try:
        v = operator.index(value)
    except TypeError:
        raise DomainError(f"{name} must be an integer >= {minimum}, got {value!r}") from None
    if v < minimum:
        raise DomainError(f"{name} must be an integer >= {minimum}, got {v}")
    return v


def _var(name: str, value: Any, positive: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise DomainError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise DomainError(f"{name} must be finite and {'> 0' if positive else '>= 0'}, got {v}")
    return v


def _corr(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise DomainError(f"{name} must be a real number, got {value!r}") from None
    if not (math.isfinite(v) and -1.0 <= v <= 1.0):
        raise DomainError(f"{name} must lie in [-1, 1], got {v}")
    return v


def _choice(name: str, value: Any, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise DomainError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def _inputs(name: str, X: Any) -> np.ndarray:
    try:
        X = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):
        raise DomainError(f"{name} must be a real array of shape (n, d)") from None
    if X.ndim == 1:
        X = X[None, :]
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        raise DomainError(f"{name} must have shape (n, d) with n, d >= 1, got {X.shape}")
    if not np.all(np.isfinite(X)):
        raise DomainError(f"{name} contains non-finite values")
    return X


def _seed_value(seed: Seed) -> int | None:
    return int(seed) if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) else None


def _chunks(total: int, size: int):
    for start in range(0, total, size):
        yield start, min(total, start + size)


def _mean_se(per_net: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over networks (axis 0) and its standard error (networks are the samples)."""
    n = per_net.shape[0]
    return per_net.mean(axis=0), per_net.std(axis=0, ddof=1) / math.sqrt(n)


def _ms(x: np.ndarray) -> np.ndarray:
    """Mean square over the last axis (the neurons)."""
    return np.mean(x * x, axis=-1)


# ------------------------------------------------------------------------------------------
# Random weight matrices (one per network in a batch); rows of X are the inputs
# ------------------------------------------------------------------------------------------

class _Dense:
    """n_out x n_in Gaussian matrices with entries N(0, var / n_in), one per network.

    With ``keep=False`` only a seed is stored and the matrices are redrawn when needed again
    (for the backward pass), so deep wide networks never hold more than one layer's weights.
    """

    def __init__(self, rng: np.random.Generator, n_nets: int, n_out: int, n_in: int,
                 var: float, keep: bool = False):
        self.shape = (n_nets, n_out, n_in)
        self.std = math.sqrt(var / n_in)
        self._seed = int(rng.integers(2**63))
        self._kept = self._draw() if keep else None

    def _draw(self) -> np.ndarray:
        w = np.random.Generator(np.random.SFC64(self._seed)).standard_normal(self.shape)
        w *= self.std
        return w

    def matrix(self) -> np.ndarray:
        return self._kept if self._kept is not None else self._draw()

    def forward(self, X: np.ndarray) -> np.ndarray:
        """X W^T for X of shape (nets, batch, n_in)."""
        return X @ np.swapaxes(self.matrix(), 1, 2)

    def backward(self, D: np.ndarray) -> np.ndarray:
        """D W for cotangents D of shape (nets, batch, n_out)."""
        return D @ self.matrix()


class _Conditional:
    """The same matrices, sampled only along the directions they are applied to (module doc).

    ``forward`` may be called once (it fixes the conditioning) and ``backward`` once, with all
    cotangents stacked along the batch axis.
    """

    def __init__(self, rng: np.random.Generator, n_nets: int, n_out: int, n_in: int,
                 var: float, keep: bool = False):
        self.rng = rng
        self.shape = (n_nets, n_out, n_in)
        self.std = math.sqrt(var / n_in)
        self._Q = self._A = None
        self._used = False

    def forward(self, X: np.ndarray) -> np.ndarray:
        if self._used:
            raise RuntimeError("a conditional layer can be applied forward only once")
        self._used = True
        n_nets, n_out, _ = self.shape
        Q, R = np.linalg.qr(np.swapaxes(X, 1, 2))            # X^T = Q R
        A = self.rng.standard_normal((n_nets, n_out, Q.shape[-1]))
        A *= self.std                                         # A = W Q
        self._Q, self._A = Q, A
        return np.swapaxes(R, 1, 2) @ np.swapaxes(A, 1, 2)   # X W^T = R^T A^T

    def backward(self, D: np.ndarray) -> np.ndarray:
        if self._Q is None:
            raise RuntimeError("a conditional layer must be applied forward before backward")
        Q, A = self._Q, self._A
        self._Q = self._A = None  # a second backward pass would need the same G: refuse it
        n_nets, _, n_in = self.shape
        evals, evecs = np.linalg.eigh(D @ np.swapaxes(D, 1, 2))
        root = (evecs * np.sqrt(np.clip(evals, 0.0, None))[:, None, :]) @ np.swapaxes(evecs, 1, 2)
        DG = root @ self.rng.standard_normal((n_nets, D.shape[1], n_in))
        DG *= self.std                                        # columns ~ N(0, var/n_in D D^T)
        DG -= (DG @ Q) @ np.swapaxes(Q, 1, 2)                 # (D G)(I - Q Q^T)
        return (D @ A) @ np.swapaxes(Q, 1, 2) + DG


def _layer(method: str, rng: np.random.Generator, n_nets: int, n_out: int, n_in: int,
           var: float, keep: bool = False):
    cls = _Conditional if method == "conditional" else _Dense
    return cls(rng, n_nets, n_out, n_in, var, keep)


def _chunk_size(method: str, n_nets: int, width: int, depth: int, mats_per_layer: int
                ) -> tuple[int, bool]:
    """Networks per chunk, and whether dense matrices fit in memory for the backward pass."""
    if method == "conditional":
        per_net = 8 * 12 * mats_per_layer * width * (depth + 1)
        return max(1, min(n_nets, _BUDGET // per_net)), False
    per_net = 8 * 2 * width * width
    size = max(1, min(n_nets, _BUDGET // per_net))
    keep = size * 8 * width * width * mats_per_layer * depth <= _BUDGET
    return size, keep


# ------------------------------------------------------------------------------------------
# Forward and backward passes, shared by the simulations and the kernels
# ------------------------------------------------------------------------------------------

def _mlp_forward(phi: Fn, layers: Sequence, biases: Sequence[np.ndarray], H: np.ndarray
                 ) -> list[np.ndarray]:
    """[h^0, h^1, ...] with h^{l+1} = W^{l+1} phi(h^l) + b^{l+1} (docs/theory.md §A1.1)."""
    Hs = [H]
    for layer, b in zip(layers, biases):
        H = layer.forward(_call(phi, H)) + b
        Hs.append(H)
    return Hs


def _mlp_backward(dphi: Fn, layers: Sequence, Hs: Sequence[np.ndarray], D: np.ndarray
                  ) -> list[np.ndarray]:
    """[delta^0, delta^1, ...] from delta^top = D with delta^l = phi'(h^l) (W^{l+1})^T delta^{l+1}
    (docs/theory.md §A1.5); ``Hs`` holds h^l for the rows of D."""
    Ds = [D]
    for layer, H in zip(reversed(layers), reversed(Hs[:-1])):
        D = _call(dphi, H) * layer.backward(D)
        Ds.append(D)
    return Ds[::-1]


def _resnet_forward(phi: Fn, Ws: Sequence, bs: Sequence[np.ndarray], Vs: Sequence | None,
                    as_: Sequence[np.ndarray] | None, X: np.ndarray
                    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """([x^0..x^L], [h^1..h^L]) with h^l = W^l x^{l-1} + b^l and x^l = V^l phi(h^l) + x^{l-1} + a^l
    (full, docs/theory.md §A2.1) or x^l = phi(h^l) + x^{l-1} (reduced: ``Vs is None``)."""
    Xs, Hs = [X], []
    for l, (W, b) in enumerate(zip(Ws, bs)):
        H = W.forward(X) + b
        branch = _call(phi, H)
        X = X + (branch if Vs is None else Vs[l].forward(branch) + as_[l])
        Hs.append(H)
        Xs.append(X)
    return Xs, Hs


def _resnet_backward(dphi: Fn, Ws: Sequence, Vs: Sequence | None, Hs: Sequence[np.ndarray],
                     G: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """([g^0..g^L], [d^1..d^L]) with g^l = dE/dx^l, d^l = dE/dh^l, from g^L = G:
    d^l = phi'(h^l) (V^l)^T g^l (full) or phi'(h^l) g^l (reduced), g^{l-1} = g^l + (W^l)^T d^l."""
    Gs, Ds = [G], []
    for l in reversed(range(len(Ws))):
        D = _call(dphi, Hs[l]) * (G if Vs is None else Vs[l].backward(G))
        G = G + Ws[l].backward(D)
        Ds.append(D)
        Gs.append(G)
    return Gs[::-1], Ds[::-1]


def _draw_pair(rng: np.random.Generator, n_nets: int, width: int, var: float, c: float
               ) -> np.ndarray:
    """(n_nets, 2, width): two vectors with iid coordinates of variance ``var``, correlation c."""
    z = rng.standard_normal((n_nets, 2, width))
    out = np.empty_like(z)
    out[:, 0] = z[:, 0]
    out[:, 1] = c * z[:, 0] + math.sqrt(max(0.0, 1.0 - c * c)) * z[:, 1]
    out *= math.sqrt(var)
    return out


def _cosine(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.mean(u * v, axis=-1) / np.sqrt(_ms(u) * _ms(v))


# ------------------------------------------------------------------------------------------
# Records
# ------------------------------------------------------------------------------------------

def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()] if value.ndim else _jsonable(value.item())
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class _Record:
    def to_dict(self) -> dict:
        """Plain-Python dict (arrays as nested lists, NaN as None): the ``--json`` output."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True)
class MLPSimulation(_Record):
    """Measured signal and gradient propagation through random vanilla networks (§1).

    Arrays have length ``depth + 1``; index 0 is the start h^0 (variance q0, correlation c0),
    index l is after l layers.  Each ``*_se`` is the standard error across the ``n_nets``
    independent networks.  ``q`` is the mean square of h(a); ``c`` the per-network correlation
    q_ab / sqrt(q_aa q_bb); ``q_tilde`` the mean square of delta^l = dE/dh^l(a) for a random
    readout E = r . h^depth(a), divided in each network by its value at the top (so q_tilde[-1]
    is 1).
    """

    activation: str
    sigma_w2: float
    sigma_b2: float
    depth: int
    width: int
    q0: float
    c0: float
    n_nets: int
    seed: int | None
    method: str
    q: np.ndarray
    q_se: np.ndarray
    c: np.ndarray
    c_se: np.ndarray
    q_tilde: np.ndarray
    q_tilde_se: np.ndarray


@dataclass(frozen=True)
class ResNetSimulation(_Record):
    """Measured forward and backward quantities of random residual networks (§2.2-2.3).

    Arrays have length ``depth + 1``; index 0 is the start x^0 (variance p0, cosine c0), index l
    is block l.  Quantities of h and of block parameters do not exist at index 0 and are NaN
    there.  ``p``, ``q`` are mean squares of x(a), h(a) (second moments, the mean included);
    ``m`` the mean over coordinates of x(a); ``gamma``, ``lam`` (lambda) the mean
    products of x(a)x(b), h(a)h(b); ``e`` the cosine of x(a), x(b) and ``s`` the squared distance
    per coordinate, both per network.  ``chi`` is the mean square of dE/dx^l(a) for a random
    readout E = r . x^depth(a); it and the parameter-gradient second moments ``grad_w`` (mean over
    i, j of (dE/dW^l_ij)^2), ``grad_b``, ``grad_v``, ``grad_a`` are divided in each network by
    chi at the top, as in §2.3 with chi^depth = 1.  ``grad_v``/``grad_a`` are None for the
    reduced network, which has no V, a.  Each ``*_se`` is the standard error across networks.
    """

    arch: str
    activation: str
    sigma_w2: float
    sigma_b2: float
    sigma_v2: float
    sigma_a2: float
    depth: int
    width: int
    p0: float
    c0: float
    m0: float
    n_nets: int
    seed: int | None
    method: str
    p: np.ndarray
    p_se: np.ndarray
    m: np.ndarray
    m_se: np.ndarray
    q: np.ndarray
    q_se: np.ndarray
    gamma: np.ndarray
    gamma_se: np.ndarray
    lam: np.ndarray
    lam_se: np.ndarray
    e: np.ndarray
    e_se: np.ndarray
    s: np.ndarray
    s_se: np.ndarray
    chi: np.ndarray
    chi_se: np.ndarray
    grad_w: np.ndarray
    grad_w_se: np.ndarray
    grad_b: np.ndarray
    grad_b_se: np.ndarray
    grad_v: np.ndarray | None
    grad_v_se: np.ndarray | None
    grad_a: np.ndarray | None
    grad_a_se: np.ndarray | None


@dataclass(frozen=True)
class EmpiricalKernel(_Record):
    """Kernel of finite random networks between the rows of X and of X2 (§4.1-4.3).

    ``ntk`` (from :func:`empirical_ntk`) is the NTK of one network; ``nngp`` and ``nngp_se``
    (from :func:`empirical_nngp`) are the mean of f(x) f(x') over networks and output units and
    its standard error across networks.  The fields a function does not compute are None.
    """

    arch: str
    activation: str
    parametrization: str | None
    depth: int
    width: int
    n_nets: int
    n_outputs: int
    seed: int | None
    ntk: np.ndarray | None = None
    nngp: np.ndarray | None = None
    nngp_se: np.ndarray | None = None


# ------------------------------------------------------------------------------------------
# Depth simulations
# ------------------------------------------------------------------------------------------

def simulate_mlp(activation: Any, sigma_w2: float, sigma_b2: float, depth: int, *,
                 width: int, q0: float, c0: float, n_nets: int = 32, seed: Seed = None,
                 method: str = "conditional") -> MLPSimulation:
    """Sample q^l, c^l (length and correlation maps, docs/theory.md §A1.2-1.3) and the gradient second
    moment q~^l (§1.5) in ``n_nets`` independent random networks of the given ``width``.

    Two first-layer pre-activations h^0(a), h^0(b) are drawn exactly Gaussian with coordinate
    variance ``q0`` and correlation ``c0``; then ``depth`` layers h^{l+1} = W phi(h^l) + b with
    W_ij ~ N(0, sigma_w2/width), b_i ~ N(0, sigma_b2) (§1.1).  ``activation`` is a spec string,
    an Activation, or a pair (phi, dphi).  ``method`` chooses the weight sampler (module doc).
    """
    name, phi, dphi = _resolve(activation)
    sigma_w2, sigma_b2 = _var("sigma_w2", sigma_w2), _var("sigma_b2", sigma_b2)
    depth = _int("depth", depth, 0)
    width = _int("width", width, 1)
    q0, c0 = _var("q0", q0, positive=True), _corr("c0", c0)
    n_nets = _int("n_nets", n_nets, 2)
    method = _choice("method", method, _METHODS)
    rng = np.random.default_rng(seed)

    q, c, qt = (np.empty((n_nets, depth + 1)) for _ in range(3))
    size, keep = _chunk_size(method, n_nets, width, depth, 1)
    for lo, hi in _chunks(n_nets, size):
        k = hi - lo
        H0 = _draw_pair(rng, k, width, q0, c0)
        layers = [_layer(method, rng, k, width, width, sigma_w2, keep) for _ in range(depth)]
        biases = [math.sqrt(sigma_b2) * rng.standard_normal((k, 1, width)) for _ in range(depth)]
        Hs = _mlp_forward(phi, layers, biases, H0)
        top = rng.standard_normal((k, 1, width))
        Ds = _mlp_backward(dphi, layers, [H[:, :1] for H in Hs], top)
        for l, (H, D) in enumerate(zip(Hs, Ds)):
            q[lo:hi, l] = _ms(H[:, 0])
            c[lo:hi, l] = _cosine(H[:, 0], H[:, 1])
            qt[lo:hi, l] = _ms(D[:, 0])
        qt[lo:hi] /= qt[lo:hi, -1:]
    (qm, qs), (cm, cs), (tm, ts) = _mean_se(q), _mean_se(c), _mean_se(qt)
    return MLPSimulation(name, sigma_w2, sigma_b2, depth, width, q0, c0, n_nets,
                         _seed_value(seed), method, qm, qs, cm, cs, tm, ts)


def simulate_resnet(activation: Any, sigma_w2: float, sigma_b2: float, depth: int, *,
                    arch: str = "full", sigma_v2: float = 1.0, sigma_a2: float = 0.0,
                    width: int, p0: float, c0: float, m0: float = 0.0, n_nets: int = 32,
                    seed: Seed = None, method: str = "conditional") -> ResNetSimulation:
    """Sample the residual-network quantities p, q, gamma, lambda, e, s, chi and the parameter
    gradients of docs/theory.md §A2.2-2.3 in ``n_nets`` independent random networks.

    x^0(a), x^0(b) are drawn exactly Gaussian with coordinate mean ``m0``, second moment ``p0``
    (mean included) and second-moment cosine ``c0`` (so their centred parts have variance
    p0 - m0^2 and correlation (c0 p0 - m0^2) / (p0 - m0^2)); then ``depth`` blocks of §2.1: h^l = W^l x^{l-1} + b^l and x^l = V^l phi(h^l) +
    x^{l-1} + a^l (``arch="full"``) or x^l = phi(h^l) + x^{l-1} (``arch="reduced"``), with
    W, V ~ N(0, sigma_w2/width), N(0, sigma_v2/width), b ~ N(0, sigma_b2), a ~ N(0, sigma_a2).
    """
    name, phi, dphi = _resolve(activation)
    arch = _choice("arch", arch, ("full", "reduced"))
    sigma_w2, sigma_b2 = _var("sigma_w2", sigma_w2), _var("sigma_b2", sigma_b2)
    sigma_v2, sigma_a2 = _var("sigma_v2", sigma_v2), _var("sigma_a2", sigma_a2)
    if arch == "reduced" and (sigma_v2 != 1.0 or sigma_a2 != 0.0):
        raise DomainError("the reduced residual network has no V or a: leave sigma_v2=1, "
                          f"sigma_a2=0 (got {sigma_v2}, {sigma_a2}) or use arch='full'")
    depth = _int("depth", depth, 0)
    width = _int("width", width, 1)
    p0, c0 = _var("p0", p0, positive=True), _corr("c0", c0)
    m0 = _mean_start(m0, p0, c0)
    n_nets = _int("n_nets", n_nets, 2)
    method = _choice("method", method, _METHODS)
    full = arch == "full"
    rng = np.random.default_rng(seed)

    keys = ("p", "q", "gamma", "lam", "e", "s", "chi", "grad_w", "grad_b", "grad_v")
    out = {key: np.full((n_nets, depth + 1), np.nan) for key in keys + ("m",)}
    size, keep = _chunk_size(method, n_nets, width, depth, 2 if full else 1)
    sb, sa = math.sqrt(sigma_b2), math.sqrt(sigma_a2)
    for lo, hi in _chunks(n_nets, size):
        k = hi - lo
        X0 = _draw_pair(rng, k, width, p0 - m0 * m0, _centred(c0, p0, m0)) + m0
        Ws = [_layer(method, rng, k, width, width, sigma_w2, keep) for _ in range(depth)]
        bs = [sb * rng.standard_normal((k, 1, width)) for _ in range(depth)]
        Vs = [_layer(method, rng, k, width, width, sigma_v2, keep) for _ in range(depth)] \
            if full else None
        as_ = [sa * rng.standard_normal((k, 1, width)) for _ in range(depth)] if full else None
        Xs, Hs = _resnet_forward(phi, Ws, bs, Vs, as_, X0)
        top = rng.standard_normal((k, 1, width))
        Gs, Ds = _resnet_backward(dphi, Ws, Vs, [H[:, :1] for H in Hs], top)
        norm = _ms(top[:, 0])
        for l, (X, G) in enumerate(zip(Xs, Gs)):
            out["p"][lo:hi, l] = _ms(X[:, 0])
            out["m"][lo:hi, l] = np.mean(X[:, 0], axis=-1)
            out["gamma"][lo:hi, l] = np.mean(X[:, 0] * X[:, 1], axis=-1)
            out["e"][lo:hi, l] = _cosine(X[:, 0], X[:, 1])
            out["s"][lo:hi, l] = _ms(X[:, 0] - X[:, 1])
            out["chi"][lo:hi, l] = _ms(G[:, 0]) / norm
        for l, (H, D) in enumerate(zip(Hs, Ds), start=1):
            out["q"][lo:hi, l] = _ms(H[:, 0])
            out["lam"][lo:hi, l] = np.mean(H[:, 0] * H[:, 1], axis=-1)
            out["grad_b"][lo:hi, l] = _ms(D[:, 0]) / norm
            out["grad_w"][lo:hi, l] = out["grad_b"][lo:hi, l] * out["p"][lo:hi, l - 1]
            out["grad_v"][lo:hi, l] = out["chi"][lo:hi, l] * _ms(_call(phi, H[:, 0]))
    res = {}
    for key in keys + ("m",):
        res[key], res[key + "_se"] = _mean_se(out[key])
    if full:
        res["grad_a"], res["grad_a_se"] = res["chi"].copy(), res["chi_se"].copy()
        res["grad_a"][0] = res["grad_a_se"][0] = np.nan
    else:
        res.update(grad_v=None, grad_v_se=None, grad_a=None, grad_a_se=None)
    return ResNetSimulation(arch=arch, activation=name, sigma_w2=sigma_w2, sigma_b2=sigma_b2,
                            sigma_v2=sigma_v2, sigma_a2=sigma_a2, depth=depth, width=width,
                            p0=p0, c0=c0, m0=m0, n_nets=n_nets, seed=_seed_value(seed),
                            method=method, **res)


def _mean_start(m0: Any, p0: float, c0: float) -> float:
    """m0 as a float, checked against p0 and c0: (m0)^2 <= p0 and a centred correlation
    (c0 p0 - m0^2) / (p0 - m0^2) in [-1, 1]."""
    try:
        m = float(m0)
    except (TypeError, ValueError):
        raise DomainError(f"m0 must be a real number, got {m0!r}") from None
    if not math.isfinite(m) or m * m > p0:
        raise DomainError(f"m0 must be finite with m0^2 <= p0 = {p0} (p0 includes the mean), got {m}")
    _centred(c0, p0, m)
    return m


def _centred(c0: float, p0: float, m0: float) -> float:
    if m0 == 0.0:
        return c0
    var = p0 - m0 * m0
    if var <= 0.0:
        if c0 != 1.0:
            raise DomainError(f"m0^2 = p0: the inputs are constant vectors, so c0 must be 1 (got {c0})")
        return 1.0
    c = (c0 * p0 - m0 * m0) / var
    if c < -1.0 - 1e-12:
        raise DomainError(f"c0 = {c0} is below 2 m0^2 / p0 - 1 = {2 * m0 * m0 / p0 - 1:g}: no two "
                          "inputs with that mean and second moment have that cosine")
    return max(-1.0, min(1.0, c))


# ------------------------------------------------------------------------------------------
# Kernels of finite networks
# ------------------------------------------------------------------------------------------

class _Net:
    """One batch of ``n_nets`` random networks of §4.1 (``mlp``) or §4.3 (``resnet``) with a
    ``n_out``-dimensional output, drawn in the fan-in form W ~ N(0, sigma^2/fan_in) by the
    sampler ``method``.  With ``method="conditional"`` each pass may be run once.

    ``gain2`` maps each parameter group to the factor its gradient term carries in the NTK:
    sigma^2/fan_in (weights) or sigma^2 (biases) for the NTK parametrisation, where the
    trained raw parameters are N(0, 1), and 1 for the standard parametrisation, where the
    fan-in-scaled weights are trained directly (docs/theory.md §A0, §4.2).
    """

    def __init__(self, arch, phi, dphi, rng, n_nets, d, width, depth, n_out, var, std_param,
                 method="dense", keep=False):
        self.arch, self.phi, self.dphi = arch, phi, dphi
        n = width

        def dense(n_o, n_i, v):
            return _layer(method, rng, n_nets, n_o, n_i, v, keep)

        def bias(m, v):
            return math.sqrt(v) * rng.standard_normal((n_nets, 1, m))

        def gw(v, fan_in):
            return 1.0 if std_param else v / fan_in

        def gb(v):
            return 1.0 if std_param else v

        w2, b2 = var["w"], var["b"]
        if arch == "mlp":
            sizes = [d] + [n] * depth + [n_out]
            self.layers = [dense(o, i, w2) for i, o in zip(sizes[:-1], sizes[1:])]
            self.biases = [bias(o, b2) for o in sizes[1:]]
            self.gain2 = {"w": [gw(w2, i) for i in sizes[:-1]], "b": gb(b2)}
        else:
            v2, a2 = var["v"], var["a"]
            self.U = dense(n, d, var["in"])
            self.Ws = [dense(n, n, w2) for _ in range(depth)]
            self.bs = [bias(n, b2) for _ in range(depth)]
            self.Vs = [dense(n, n, v2) for _ in range(depth)]
            self.as_ = [bias(n, a2) for _ in range(depth)]
            self.O = dense(n_out, n, var["out"])
            self.gain2 = {"in": gw(var["in"], d), "w": gw(w2, n), "b": gb(b2), "v": gw(v2, n),
                          "a": gb(a2), "out": gw(var["out"], n)}

    def output(self, X: np.ndarray) -> np.ndarray:
        """f for inputs X of shape (nets, batch, d): (nets, batch, n_out)."""
        if self.arch == "mlp":
            H1 = self.layers[0].forward(X) + self.biases[0]
            return _mlp_forward(self.phi, self.layers[1:], self.biases[1:], H1)[-1]
        Xs, _ = _resnet_forward(self.phi, self.Ws, self.bs, self.Vs, self.as_, self.U.forward(X))
        return self.O.forward(Xs[-1])

    def ntk(self, X: np.ndarray, rows: tuple[slice, slice]) -> np.ndarray:
        """NTK of the scalar output between the rows ``rows[0]`` and ``rows[1]`` of X, as the sum
        over layers of gain2 * (input Gram) * (delta Gram) + bias terms (docs/theory.md §A4.2)."""
        phi, dphi = self.phi, self.dphi

        def gram(A):
            return A[:, rows[0]] @ np.swapaxes(A[:, rows[1]], 1, 2)

        ones = np.ones(X.shape[:2] + (1,))
        if self.arch == "mlp":
            H1 = self.layers[0].forward(X) + self.biases[0]
            Hs = _mlp_forward(phi, self.layers[1:], self.biases[1:], H1)
            Ds = _mlp_backward(dphi, self.layers[1:], Hs, ones)
            ins = [X] + [_call(phi, H) for H in Hs[:-1]]
            theta = 0.0
            for g2, A, D in zip(self.gain2["w"], ins, Ds):
                dd = gram(D)
                theta = theta + g2 * gram(A) * dd + self.gain2["b"] * dd
            return theta
        g = self.gain2
        Xs, Hs = _resnet_forward(phi, self.Ws, self.bs, self.Vs, self.as_, self.U.forward(X))
        self.O.forward(Xs[-1])  # the output itself is not needed; a conditional readout is
        Gs, Ds = _resnet_backward(dphi, self.Ws, self.Vs, Hs, self.O.backward(ones))
        theta = g["out"] * gram(Xs[-1]) + g["in"] * gram(X) * gram(Gs[0])
        for l, H in enumerate(Hs):
            dd, gg = gram(Ds[l]), gram(Gs[l + 1])
            theta = theta + g["w"] * gram(Xs[l]) * dd + g["b"] * dd
            theta = theta + g["v"] * gram(_call(phi, H)) * gg + g["a"] * gg
        return theta


def _kernel_args(arch, activation, X, X2, depth, width, sigma_w2, sigma_b2, sigma_v2, sigma_a2,
                 sigma_in2, sigma_o2, need_d1):
    arch = _choice("arch", arch, ("mlp", "resnet"))
    name, phi, dphi = _resolve(activation, need_d1)
    X = _inputs("X", X)
    X2 = X if X2 is None else _inputs("X2", X2)
    if X2.shape[1] != X.shape[1]:
        raise DomainError(f"X and X2 must have the same input dimension, got {X.shape[1]} "
                          f"and {X2.shape[1]}")
    depth = _int("depth", depth, 0)
    width = _int("width", width, 1)
    var = {"w": _var("sigma_w2", sigma_w2), "b": _var("sigma_b2", sigma_b2),
           "v": _var("sigma_v2", sigma_v2), "a": _var("sigma_a2", sigma_a2),
           "in": _var("sigma_in2", sigma_in2), "out": _var("sigma_o2", sigma_o2)}
    if X2 is X:
        Z, rows = X, (slice(None), slice(None))
    else:
        Z, rows = np.concatenate([X, X2]), (slice(0, len(X)), slice(len(X), None))
    return arch, name, phi, dphi, Z[None], rows, depth, width, var


def _weights_bytes(arch: str, d: int, width: int, depth: int, n_out: int) -> int:
    mats = depth * 2 * width * width if arch == "resnet" else max(0, depth - 1) * width * width
    return 8 * (mats + width * (d + n_out))


def empirical_ntk(arch: str, activation: Any, X: Any, X2: Any = None, *, depth: int,
                  sigma_w2: float, sigma_b2: float, sigma_v2: float = 1.0,
                  sigma_a2: float = 0.0, sigma_in2: float = 1.0, sigma_o2: float = 1.0,
                  width: int, parametrization: str = "ntk", seed: Seed = None,
                  method: str = "dense") -> EmpiricalKernel:
    """NTK sum_theta df(x)/dtheta df(x')/dtheta of ONE random network with scalar output,
    from hand-derived per-example backward vectors (docs/theory.md §A4.2 factorisation).

    ``arch="mlp"`` (§4.1): ``depth`` hidden layers, then a linear readout with the same
    sigma_w2, sigma_b2; the first layer sees x.x'/d.  Its infinite-width limit is Theta^{L+1}.
    ``arch="resnet"`` (§4.3): x^0 = sigma_in/sqrt(d) U xi, ``depth`` full residual blocks, readout
    sigma_o/sqrt(width) o.x^L (no bias).  ``parametrization="ntk"`` differentiates the N(0, 1)
    raw parameters (the limit of §4.1/4.3); ``"standard"`` differentiates the N(0, sigma^2/fan_in)
    weights themselves and returns the raw kernel, whose hidden-weight terms grow like width
    (divide by width to compare with §4.2).

    ``method="dense"`` builds the network's matrices; ``"conditional"`` samples the same random
    kernel (exactly in distribution) in O(width * n_inputs^2) per layer (module doc).
    """
    arch, name, phi, dphi, Z, rows, depth, width, var = _kernel_args(
        arch, activation, X, X2, depth, width, sigma_w2, sigma_b2, sigma_v2, sigma_a2,
        sigma_in2, sigma_o2, need_d1=True)
    parametrization = _choice("parametrization", parametrization, ("ntk", "standard"))
    method = _choice("method", method, _METHODS)
    rng = np.random.default_rng(seed)
    keep = _weights_bytes(arch, Z.shape[-1], width, depth, 1) <= _BUDGET
    net = _Net(arch, phi, dphi, rng, 1, Z.shape[-1], width, depth, 1, var,
               parametrization == "standard", method, keep)
    theta = net.ntk(Z, rows)[0]
    return EmpiricalKernel(arch, name, parametrization, depth, width, 1, 1, _seed_value(seed),
                           ntk=theta)


def empirical_nngp(arch: str, activation: Any, X: Any, X2: Any = None, *, depth: int,
                   sigma_w2: float, sigma_b2: float, sigma_v2: float = 1.0,
                   sigma_a2: float = 0.0, sigma_in2: float = 1.0, sigma_o2: float = 1.0,
                   width: int, n_nets: int = 64, n_outputs: int = 16, seed: Seed = None,
                   method: str = "dense") -> EmpiricalKernel:
    """Monte Carlo NNGP kernel: the mean of f(x) f(x') over ``n_nets`` random networks (in
    memory-bounded batches) and their ``n_outputs`` output units (architectures as in
    :func:`empirical_ntk`).  The limit is Sigma^{L+1} (§4.1) or sigma_o2 P^L (§4.3).

    Output units of one network share its hidden layers, so the standard error ``nngp_se`` is
    taken across networks; more outputs cost almost nothing and reduce the readout noise.
    ``method`` as in :func:`empirical_ntk`.
    """
    arch, name, phi, _, Z, rows, depth, width, var = _kernel_args(
        arch, activation, X, X2, depth, width, sigma_w2, sigma_b2, sigma_v2, sigma_a2,
        sigma_in2, sigma_o2, need_d1=False)
    n_nets = _int("n_nets", n_nets, 2)
    n_outputs = _int("n_outputs", n_outputs, 1)
    method = _choice("method", method, _METHODS)
    rng = np.random.default_rng(seed)
    B, d = Z.shape[1:]
    if method == "dense":
        per_net = 8 * (2 * width * max(width, d, n_outputs) + 3 * B * width)
    else:
        per_net = 8 * (depth + 2) * 6 * max(width, n_outputs) * min(B, max(width, d))
    size = max(1, min(n_nets, _BUDGET // per_net))
    total = total2 = 0.0
    for lo, hi in _chunks(n_nets, size):
        net = _Net(arch, phi, None, rng, hi - lo, d, width, depth, n_outputs, var, False,
                   method)
        f = net.output(Z)
        k = f[:, rows[0]] @ np.swapaxes(f[:, rows[1]], 1, 2) / n_outputs
        total = total + k.sum(axis=0)
        total2 = total2 + (k * k).sum(axis=0)
    mean = total / n_nets
    var_k = np.clip(total2 / n_nets - mean * mean, 0.0, None) * n_nets / (n_nets - 1)
    return EmpiricalKernel(arch, name, None, depth, width, n_nets, n_outputs, _seed_value(seed),
                           nngp=mean, nngp_se=np.sqrt(var_k / n_nets))


# ------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------

def inputs_on_sphere(n: int, d: int, *, correlation: Any = None, seed: Seed = None
                     ) -> np.ndarray:
    """X of shape (n, d) with x.x/d = 1 for every row, in random directions.

    ``correlation`` (optional) fixes the overlaps exactly: a scalar c gives x.x'/d = c for every
    pair, an (n, n) matrix C (symmetric, unit diagonal, positive semi-definite, rank <= d) gives
    X X^T / d = C.  The configuration is otherwise uniformly random (a Haar rotation).
    """
    n, d = _int("n", n, 1), _int("d", d, 1)
    rng = np.random.default_rng(seed)
    if correlation is None:
        Z = rng.standard_normal((n, d))
        norms = np.linalg.norm(Z, axis=1, keepdims=True)
        while np.any(norms == 0):  # measure zero; redraw rather than divide by 0
            Z = rng.standard_normal((n, d))
            norms = np.linalg.norm(Z, axis=1, keepdims=True)
        return Z * (math.sqrt(d) / norms)
    C = np.asarray(correlation, dtype=np.float64)
    if C.ndim == 0:
        c = _corr("correlation", C)
        C = np.full((n, n), c)
        np.fill_diagonal(C, 1.0)
    if C.shape != (n, n) or not np.all(np.isfinite(C)):
        raise DomainError(f"correlation must be a scalar or a finite ({n}, {n}) matrix")
    if not (np.allclose(C, C.T, atol=1e-12) and np.allclose(np.diag(C), 1.0, atol=1e-12)):
        raise DomainError("correlation matrix must be symmetric with unit diagonal")
    evals, evecs = np.linalg.eigh((C + C.T) / 2)
    tol = 1e-10 * n
    if evals[0] < -tol:
        hint = "; a scalar c needs c >= -1/(n-1)" if np.ndim(correlation) == 0 else ""
        raise DomainError(f"correlation is not positive semi-definite (eigenvalue "
                          f"{evals[0]:.3g}{hint})")
    keep = evals > tol
    rank = int(keep.sum())
    if rank > d:
        raise DomainError(f"{n} inputs with these correlations span {rank} dimensions; d = {d} "
                          "is too small")
    F = evecs[:, keep] * np.sqrt(evals[keep])                       # F F^T = C
    Q, R = np.linalg.qr(rng.standard_normal((d, rank)))
    Q *= np.sign(np.diag(R))                                        # Haar-distributed frame
    X = F @ Q.T
    X *= math.sqrt(d) / np.linalg.norm(X, axis=1, keepdims=True)    # exact unit diagonal
    return X
