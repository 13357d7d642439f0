"""What the NTK predicts for training: linearised gradient flow, NNGP inference, trainability.

Infinite-width networks trained by gradient flow on the squared loss behave like their
linearisation (Lee et al. 2019; docs/theory.md §A4.5).  With Theta = NTK(X, X) on the training set and
K the NNGP kernel, the outputs at time t are Gaussian over random initialisations with

    mean_t(x) = Theta(x, X) Theta^{-1} (I - exp(-eta Theta t)) Y
    cov_t(x, x') = K(x, x') + A K(X, X) A^T - (A K(X, x') + K(x, X) A^T),
                   A = Theta(x, X) Theta^{-1} (I - exp(-eta Theta t)),

everything evaluated through one eigendecomposition Theta = V diag(lambda) V^T, with
(1 - exp(-eta lambda t)) / lambda computed by expm1 (finite for lambda -> 0 at finite t).

Conventions (docs/theory.md §A9, items 3-4):

* ``loss="sum"`` (default): L = 1/2 ||f(X) - Y||^2, as in docs/theory.md §A4.5.  ``loss="mean"``:
  L = 1/(2N) ||f(X) - Y||^2 (Lee et al.'s averaged loss), which is the same flow with
  eta -> eta / N.
* The NTK is the one of :func:`meanfield.kernels.kernel` (NTK parametrisation: derivatives
  with respect to N(0, 1) raw parameters, Jacot/Lee convention), or in the standard
  parametrisation lim Theta_SP / n, i.e. learning rate eta_0 / n.
* ``diag_reg`` adds diag_reg * mean(diag Theta) to the diagonal (relative, as neural-tangents'
  ``diag_reg``); it regularises the t -> infinity solve and the NNGP posterior.

A training NTK whose smallest eigenvalue is below ``rcond`` times its largest is singular
(duplicate or collinear inputs; the ordered phase at large depth, where every input maps to the
same output): gradient flow then does not interpolate the targets, and the t = infinity
predictions (and the noise-free posterior) raise :class:`~meanfield.errors.ConvergenceError`
with the eigenvalues in the message.  Finite times never need the inverse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .errors import ConvergenceError, DomainError

__all__ = [
    "GradientFlow", "LossCurve", "Posterior", "Conditioning",
    "gradient_flow", "training_loss", "nngp_posterior", "predict",
    "StoredSolve", "stored_posterior_mean", "stored_flow_mean",
    "ntk_condition_number", "ntk_conditioning", "CONDITION_INPUTS",
]

#: the fixed input set of :func:`ntk_condition_number` (documented for the advice)
CONDITION_INPUTS = ("n points on the sphere x.x/d = 1 with every pairwise correlation "
                    "x.x'/d = 0.5 (defaults n = 64, correlation = 0.5)")


def _finite_or_none(x: Any) -> Any:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


# ------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------

def _matrix(name: str, K: Any, shape: tuple | None = None, square: bool = False) -> np.ndarray:
    if K is not None and hasattr(K, "ntk") and hasattr(K, "nngp"):
        raise DomainError(f"{name} must be an array; pass result.ntk or result.nngp, not the KernelResult")
    try:
        A = np.asarray(K, dtype=np.float64)
    except (TypeError, ValueError):
        raise DomainError(f"{name} must be a numeric matrix, got {type(K).__name__}") from None
    if A.ndim != 2 or A.size == 0:
        raise DomainError(f"{name} must be a non-empty 2-D matrix, got shape {A.shape}")
    if square and A.shape[0] != A.shape[1]:
        raise DomainError(f"{name} must be square, got shape {A.shape}")
    if shape is not None and A.shape != shape:
        raise DomainError(f"{name} must have shape {shape}, got {A.shape}")
    if not np.all(np.isfinite(A)):
        raise DomainError(f"{name} must be finite")
    return A


def _targets(y: Any, n: int) -> tuple[np.ndarray, bool]:
    try:
        Y = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError):
        raise DomainError(f"y_train must be numeric, got {type(y).__name__}") from None
    vec = Y.ndim == 1
    if vec:
        Y = Y[:, None]
    if Y.ndim != 2 or Y.shape[0] != n:
        raise DomainError(f"y_train must have {n} rows (one per training input), got shape {np.shape(y)}")
    if not np.all(np.isfinite(Y)):
        raise DomainError("y_train must be finite")
    return Y, vec


def _times(t: Any) -> tuple[np.ndarray, bool]:
    T = np.asarray(t, dtype=np.float64)
    scalar = T.ndim == 0
    T = T.reshape(-1)
    if T.size == 0 or np.any(np.isnan(T)) or np.any(T < 0):
        raise DomainError(f"t must be non-negative times (np.inf allowed), got {t!r}")
    return T, scalar


def _positive(name: str, v: Any, allow_zero: bool = False) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise DomainError(f"{name} must be a number, got {v!r}") from None
    if not math.isfinite(x) or x < 0 or (x == 0 and not allow_zero):
        raise DomainError(f"{name} must be {'non-negative' if allow_zero else 'positive'} and finite, got {v!r}")
    return x


def _loss_scale(loss: str, n: int) -> float:
    if loss == "sum":
        return 1.0
    if loss == "mean":
        return 1.0 / n
    raise DomainError(f"loss must be 'sum' (1/2 ||f - y||^2) or 'mean' (1/(2N) ||f - y||^2), got {loss!r}")


@dataclass(frozen=True)
class _Eig:
    lam: np.ndarray
    V: np.ndarray
    reg: float

    @property
    def cond(self) -> float:
        lo, hi = float(self.lam[0]), float(self.lam[-1])
        return math.inf if lo <= 0 else hi / lo


def _eig(K: np.ndarray, diag_reg: float) -> _Eig:
    K = 0.5 * (K + K.T)
    reg = diag_reg * float(np.mean(np.diag(K))) if diag_reg > 0 else 0.0
    if reg:
        K = K + reg * np.eye(K.shape[0])
    lam, V = np.linalg.eigh(K)
    return _Eig(lam, V, reg)


def _require_invertible(e: _Eig, rcond: float, what: str) -> None:
    lo, hi = float(e.lam[0]), float(e.lam[-1])
    if hi <= 0 or lo <= rcond * hi:
        raise ConvergenceError(
            f"the {what} on the training set is singular (eigenvalues {lo:.3g} ... {hi:.3g}, "
            f"ratio below rcond = {rcond:g}): duplicate or collinear inputs, or a degenerate "
            "kernel; pass diag_reg > 0 or a finite t")


# ------------------------------------------------------------------------------------------
# gradient flow
# ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GradientFlow:
    """Mean and covariance of the network outputs at times ``t`` (docs/theory.md §A4.5).

    Always one leading time axis, even for a scalar t.
    ``mean`` has shape (len(t), M) (or (len(t), M, k) for k outputs) on the test inputs,
    ``train_mean`` the same on the training inputs; ``cov`` (len(t), M, M) and ``train_cov``
    (len(t), N, N) when the NNGP kernels were given, else None.  ``eigenvalues`` are those of
    the (regularised) training NTK.
    """

    t: np.ndarray
    mean: np.ndarray | None
    cov: np.ndarray | None
    train_mean: np.ndarray
    train_cov: np.ndarray | None
    train_targets: np.ndarray = field(repr=False)
    eigenvalues: np.ndarray = field(repr=False)
    learning_rate: float = 1.0
    loss: str = "sum"
    diag_reg: float = 0.0

    def to_dict(self) -> dict:
        lam = self.eigenvalues
        return {
            "t": [_finite_or_none(x) if math.isfinite(x) else "inf" for x in self.t],
            "mean_shape": None if self.mean is None else list(self.mean.shape),
            "cov_shape": None if self.cov is None else list(self.cov.shape),
            "train_residual_norm": [_finite_or_none(x) for x in self._residuals()],
            "ntk_eigenvalue_range": [_finite_or_none(lam[0]), _finite_or_none(lam[-1])],
            "ntk_condition_number": _finite_or_none(lam[-1] / lam[0]) if lam[0] > 0 else None,
            "learning_rate": self.learning_rate, "loss": self.loss, "diag_reg": self.diag_reg,
        }

    def _residuals(self) -> list[float]:
        return [float(np.linalg.norm(self.train_mean[i] - self.train_targets))
                for i in range(len(self.t))]


def _flow_factors(e: _Eig, eta: float, T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """decay = exp(-eta lambda t) and gain = (1 - decay) / lambda, shape (len(T), N)."""
    lam = e.lam[None, :]
    tt = T[:, None]
    with np.errstate(invalid="ignore", over="ignore"):
        x = -eta * lam * np.where(np.isinf(tt), 1.0, tt)
        decay = np.where(np.isinf(tt), 0.0, np.exp(np.where(np.isinf(tt), 0.0, x)))
        safe = np.where(lam != 0, lam, 1.0)
        gain_fin = np.where(lam != 0, -np.expm1(x) / safe, eta * tt)
        gain = np.where(np.isinf(tt), 1.0 / safe, gain_fin)
    return decay, gain


def gradient_flow(ntk_train: Any, y_train: Any, t: Any = np.inf, *, ntk_test_train: Any = None,
                  nngp_train: Any = None, nngp_test_train: Any = None, nngp_test: Any = None,
                  learning_rate: float = 1.0, diag_reg: float = 0.0, loss: str = "sum",
                  rcond: float = 1e-12) -> GradientFlow:
    """Infinite-ensemble mean and covariance of gradient-flow training (docs/theory.md §A4.5).

    ``ntk_train`` (N x N) and ``y_train`` (N or N x k) are required; ``ntk_test_train``
    (M x N) gives test means; the three NNGP blocks (train N x N, test-train M x N, test M x M)
    give covariances (``nngp_train`` alone gives the training-set covariance).  ``t`` is a time
    or an array of times (np.inf allowed).  At t = 0 the mean is 0 and the covariance the NNGP
    prior; as t -> inf the training mean interpolates y_train.
    """
    Th = _matrix("ntk_train", ntk_train, square=True)
    N = Th.shape[0]
    Y, vec = _targets(y_train, N)
    T, _ = _times(t)
    eta = _positive("learning_rate", learning_rate) * _loss_scale(loss, N)
    reg = _positive("diag_reg", diag_reg, allow_zero=True)
    e = _eig(Th, reg)
    if np.any(np.isinf(T)):
        _require_invertible(e, rcond, "NTK")
    decay, gain = _flow_factors(e, eta, T)
    V = e.V
    VtY = V.T @ Y                                       # (N, k)
    train_mean = np.einsum("ij,tj,jk->tik", V, 1.0 - decay, VtY)
    mean = None
    if ntk_test_train is not None:
        Tx = _matrix("ntk_test_train", ntk_test_train)
        if Tx.shape[1] != N:
            raise DomainError(f"ntk_test_train must have {N} columns (training inputs), got shape {Tx.shape}")
        TxV = Tx @ V                                    # (M, N)
        mean = np.einsum("mj,tj,jk->tmk", TxV, gain, VtY)
    cov = train_cov = None
    if nngp_train is not None:
        K = _matrix("nngp_train", nngp_train, shape=(N, N))
        VKV = V.T @ K @ V
        # training set: exp(-eta Theta t) K exp(-eta Theta t)
        train_cov = np.einsum("ij,tj,jl,tl,ml->tim", V, decay, VKV, decay, V)
        if ntk_test_train is not None and nngp_test_train is not None and nngp_test is not None:
            M = mean.shape[1]
            Kx = _matrix("nngp_test_train", nngp_test_train, shape=(M, N))
            Kxx = _matrix("nngp_test", nngp_test, shape=(M, M))
            B = np.einsum("mj,tj->tmj", TxV, gain)       # A V, per time: (t, M, N)
            KxV = Kx @ V
            cov = (Kxx[None] + np.einsum("tmj,jl,tnl->tmn", B, VKV, B)
                   - np.einsum("tmj,nj->tmn", B, KxV) - np.einsum("mj,tnj->tmn", KxV, B))
            cov = 0.5 * (cov + np.swapaxes(cov, 1, 2))
    if vec:
        train_mean = train_mean[..., 0]
        mean = None if mean is None else mean[..., 0]
    return GradientFlow(T, mean, cov, train_mean, train_cov, Y[:, 0] if vec else Y, e.lam,
                        float(learning_rate), loss, reg)


@dataclass(frozen=True)
class LossCurve:
    """Training loss over time under gradient flow, one exponential per NTK eigenvalue.

    loss(t) = sum_i components[i] exp(-2 eta lambda_i t), with components[i] =
    1/2 ((v_i . Y)^2 + v_i^T K v_i) (the second term only when the NNGP kernel K was given: the
    ensemble average over initialisations f_0 ~ GP(0, K)); ``loss_of_mean`` keeps only the
    first term (the loss of the mean prediction).  Divided by N for ``loss="mean"``.
    """

    t: np.ndarray
    loss: np.ndarray
    loss_of_mean: np.ndarray
    eigenvalues: np.ndarray
    components: np.ndarray
    rates: np.ndarray           # 2 eta lambda_i: the decay rate of each component
    learning_rate: float
    loss_normalization: str

    def to_dict(self) -> dict:
        return {"t": [x if math.isfinite(x) else "inf" for x in self.t.tolist()],
                "loss": [_finite_or_none(x) for x in self.loss],
                "loss_of_mean": [_finite_or_none(x) for x in self.loss_of_mean],
                "slowest_rate": _finite_or_none(self.rates[0]),
                "fastest_rate": _finite_or_none(self.rates[-1]),
                "learning_rate": self.learning_rate, "loss_normalization": self.loss_normalization}


def training_loss(ntk_train: Any, y_train: Any, t: Any, *, nngp_train: Any = None,
                  learning_rate: float = 1.0, diag_reg: float = 0.0, loss: str = "sum"
                  ) -> LossCurve:
    """Expected training loss at times t from the NTK eigendecomposition (docs/theory.md §A4.5)."""
    Th = _matrix("ntk_train", ntk_train, square=True)
    N = Th.shape[0]
    Y, _ = _targets(y_train, N)
    T, _ = _times(t)
    scale = _loss_scale(loss, N)
    eta = _positive("learning_rate", learning_rate) * scale
    e = _eig(Th, _positive("diag_reg", diag_reg, allow_zero=True))
    proj = e.V.T @ Y
    comp_y = 0.5 * np.sum(proj ** 2, axis=1) * scale
    comp_k = np.zeros(N)
    if nngp_train is not None:
        K = _matrix("nngp_train", nngp_train, shape=(N, N))
        comp_k = 0.5 * np.einsum("ij,ik,kj->j", e.V, K, e.V) * Y.shape[1] * scale
    rates = 2.0 * eta * e.lam
    with np.errstate(over="ignore", invalid="ignore"):
        ex = np.where(np.isinf(T)[:, None], np.where(rates[None, :] > 0, 0.0, 1.0),
                      np.exp(-rates[None, :] * np.where(np.isinf(T), 0.0, T)[:, None]))
    comps = comp_y + comp_k
    return LossCurve(T, ex @ comps, ex @ comp_y, e.lam, comps, rates, float(learning_rate), loss)


# ------------------------------------------------------------------------------------------
# NNGP posterior
# ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Posterior:
    """Exact GP regression with the NNGP kernel: posterior mean (M or M x k) and covariance."""

    mean: np.ndarray
    cov: np.ndarray | None
    noise: float
    diag_reg: float
    log_marginal_likelihood: float

    def to_dict(self) -> dict:
        return {"mean_shape": list(self.mean.shape),
                "cov_shape": None if self.cov is None else list(self.cov.shape),
                "noise": self.noise, "diag_reg": self.diag_reg,
                "log_marginal_likelihood": _finite_or_none(self.log_marginal_likelihood)}


def nngp_posterior(nngp_train: Any, y_train: Any, nngp_test_train: Any, nngp_test: Any = None,
                   *, noise: float = 0.0, diag_reg: float = 0.0, rcond: float = 1e-12) -> Posterior:
    """Posterior of f ~ GP(0, K) given y = f(X) + N(0, noise) (docs/theory.md §A4.5, last layer trained /
    Bayesian inference): mean = K_xX (K + noise I)^{-1} y, cov = K_xx - K_xX (K + noise I)^{-1} K_Xx.
    ``noise`` is the observation noise variance."""
    K = _matrix("nngp_train", nngp_train, square=True)
    N = K.shape[0]
    Y, vec = _targets(y_train, N)
    Kx = _matrix("nngp_test_train", nngp_test_train)
    if Kx.shape[1] != N:
        raise DomainError(f"nngp_test_train must have {N} columns, got shape {Kx.shape}")
    s2 = _positive("noise", noise, allow_zero=True)
    reg = _positive("diag_reg", diag_reg, allow_zero=True)
    e = _eig(K + s2 * np.eye(N), reg)
    _require_invertible(e, rcond, "NNGP kernel (plus noise)")
    alpha = e.V @ ((e.V.T @ Y) / e.lam[:, None])
    mean = Kx @ alpha
    cov = None
    if nngp_test is not None:
        Kxx = _matrix("nngp_test", nngp_test, shape=(Kx.shape[0], Kx.shape[0]))
        W = (Kx @ e.V) / np.sqrt(e.lam)[None, :]
        cov = Kxx - W @ W.T
        cov = 0.5 * (cov + cov.T)
    lml = float(-0.5 * np.sum(Y * alpha) - 0.5 * Y.shape[1] * np.sum(np.log(e.lam))
                - 0.5 * Y.size * math.log(2 * math.pi))
    return Posterior(mean[:, 0] if vec else mean, cov, s2, e.reg, lml)


# ------------------------------------------------------------------------------------------
# out of core: the same t = inf means from a Gram matrix on disk, by conjugate gradients
# ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StoredSolve:
    """Test means solved from a stored Gram matrix (:func:`stored_posterior_mean`,
    :func:`stored_flow_mean`): ``mean`` (M or M x k) on inputs n_train.. of the store,
    ``coefficients`` = (K + (noise + reg) I)^{-1} Y on the training inputs (N or N x k)."""

    mean: np.ndarray
    coefficients: np.ndarray
    kernel: str
    n_train: int
    n_test: int
    noise: float
    diag_reg: float
    iterations: int
    relative_residual: float
    tile: int

    def to_dict(self) -> dict:
        return {"mean_shape": list(self.mean.shape), "kernel": self.kernel, "n_train": self.n_train,
                "n_test": self.n_test, "noise": self.noise, "diag_reg": self.diag_reg,
                "iterations": self.iterations,
                "relative_residual": _finite_or_none(self.relative_residual), "tile": self.tile}


def _stored_matrix(store: Any, name: str):
    """A 2-D square array read tile by tile: a kernel store's array, or anything sliceable."""
    if isinstance(store, (str, bytes)) or hasattr(store, "__fspath__"):
        from .scaleout import open_kernel

        A = open_kernel(store, name)
    else:
        A = store
    shape = tuple(getattr(A, "shape", ()))
    if len(shape) != 2 or shape[0] != shape[1] or shape[0] == 0:
        raise DomainError(f"the stored {name} must be a square N x N matrix (a network with a readout), "
                          f"got shape {shape}")
    return A


class _Tiles:
    """Products with blocks of a matrix held on disk, one tile in memory at a time."""

    def __init__(self, A: Any, tile: int, name: str):
        self.A, self.tile, self.name = A, tile, name

    def read(self, r: slice, c: slice) -> np.ndarray:
        T = np.asarray(self.A[r, c], dtype=np.float64)
        if not np.all(np.isfinite(T)):
            raise DomainError(f"the stored {self.name} has non-finite entries in rows {r.start}:{r.stop}, "
                              f"columns {c.start}:{c.stop}")
        return T

    def spans(self, lo: int, hi: int) -> list[slice]:
        return [slice(a, min(hi, a + self.tile)) for a in range(lo, hi, self.tile)]

    def symmetric_matvec(self, n: int, P: np.ndarray) -> np.ndarray:
        # the upper triangle only: each off-diagonal tile serves its mirror by transposition,
        # so one product reads half the matrix
        out = np.zeros_like(P)
        sp = self.spans(0, n)
        for a, r in enumerate(sp):
            for c in sp[a:]:
                T = self.read(r, c)
                out[r] += T @ P[c]
                if c.start != r.start:
                    out[c] += T.T @ P[r]
        return out

    def diagonal(self, n: int) -> np.ndarray:
        return np.concatenate([np.diag(self.read(r, r)) for r in self.spans(0, n)])

    def rect_matvec(self, rows: tuple[int, int], n: int, P: np.ndarray) -> np.ndarray:
        out = np.zeros((rows[1] - rows[0], P.shape[1]))
        for r in self.spans(*rows):
            for c in self.spans(0, n):
                out[r.start - rows[0]:r.stop - rows[0]] += self.read(r, c) @ P[c]
        return out


def _cg(op: _Tiles, n: int, Y: np.ndarray, shift: float, rtol: float, maxiter: int
        ) -> tuple[np.ndarray, int, float]:
    """Jacobi-preconditioned conjugate gradients on (A + shift I) X = Y, every column of Y at
    once (one pass over the tiles per iteration serves them all); returns X, the iterations and
    the largest true relative residual ||Y - (A + shift I) X|| / ||Y|| over the columns."""
    def apply(P: np.ndarray) -> np.ndarray:
        return op.symmetric_matvec(n, P) + shift * P

    d = op.diagonal(n) + shift
    if np.any(d <= 0):
        raise ConvergenceError(f"the stored {op.name} (plus noise and diag_reg) has a diagonal entry "
                               f"{float(d.min()):.3g} <= 0: it is not positive definite")
    ynorm = np.linalg.norm(Y, axis=0)
    ynorm = np.where(ynorm > 0, ynorm, 1.0)
    X = np.zeros_like(Y)
    R = Y.copy()
    Z = R / d[:, None]
    P = Z.copy()
    rz = np.sum(R * Z, axis=0)
    it = 0
    while it < maxiter and np.max(np.linalg.norm(R, axis=0) / ynorm) > rtol:
        AP = apply(P)
        pap = np.sum(P * AP, axis=0)
        if np.any(pap <= 0):
            raise ConvergenceError(f"conjugate gradients met p.Ap = {float(pap.min()):.3g} <= 0 at "
                                   f"iteration {it}: the stored {op.name} is not positive definite; "
                                   "pass diag_reg > 0 or noise > 0")
        alpha = rz / pap
        X += alpha * P
        R -= alpha * AP
        Z = R / d[:, None]
        rz_new = np.sum(R * Z, axis=0)
        P = Z + (rz_new / np.where(rz > 0, rz, 1.0)) * P
        rz = rz_new
        it += 1
    # the recurrence residual drifts from the true one in finite precision: measure the true one
    res = float(np.max(np.linalg.norm(Y - apply(X), axis=0) / ynorm))
    if not res <= 10 * rtol:
        raise ConvergenceError(f"conjugate gradients stopped at relative residual {res:.3g} after {it} "
                               f"iterations (rtol {rtol:g}): the stored {op.name} is singular or "
                               "badly conditioned; pass diag_reg > 0 or noise > 0, or a larger maxiter")
    return X, it, res


def _stored_solve(store: Any, name: str, y_train: Any, n_train: int | None, noise: float,
                  diag_reg: float, rtol: float, maxiter: int | None, tile: int | None) -> StoredSolve:
    A = _stored_matrix(store, name)
    N = int(A.shape[0])
    if n_train is None:
        n_train = N
    if isinstance(n_train, bool) or not isinstance(n_train, (int, np.integer)) or not 1 <= n_train <= N:
        raise DomainError(f"n_train must be an integer in 1..{N} (the first n_train stored inputs are "
                          f"the training set), got {n_train!r}")
    n_train = int(n_train)
    Y, vec = _targets(y_train, n_train)
    s2 = _positive("noise", noise, allow_zero=True)
    reg_rel = _positive("diag_reg", diag_reg, allow_zero=True)
    tol = _positive("rtol", rtol)
    if tile is None:
        chunks = getattr(A, "chunks", None)
        tile = int(chunks[0]) if isinstance(chunks, tuple) and chunks else 4096
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 1:
        raise DomainError(f"tile must be a positive integer, got {tile!r}")
    if maxiter is None:
        maxiter = 2 * n_train
    if isinstance(maxiter, bool) or not isinstance(maxiter, (int, np.integer)) or maxiter < 1:
        raise DomainError(f"maxiter must be a positive integer, got {maxiter!r}")
    op = _Tiles(A, int(tile), name.upper())
    # diag_reg is relative to the mean diagonal, as in gradient_flow and nngp_posterior
    reg = reg_rel * float(np.mean(op.diagonal(n_train) + s2)) if reg_rel > 0 else 0.0
    alpha, it, res = _cg(op, n_train, Y, s2 + reg, tol, int(maxiter))
    mean = op.rect_matvec((n_train, N), n_train, alpha)
    if vec:
        mean, alpha = mean[:, 0], alpha[:, 0]
    return StoredSolve(mean, alpha, name, n_train, N - n_train, s2, reg, it, res, int(tile))


def stored_posterior_mean(store: Any, y_train: Any, n_train: int | None = None, *, noise: float = 0.0,
                          diag_reg: float = 0.0, rtol: float = 1e-12, maxiter: int | None = None,
                          tile: int | None = None) -> StoredSolve:
    """The NNGP posterior mean K_xX (K + noise I)^{-1} y (docs/theory.md §A4.5; :func:`nngp_posterior`)
    from a Gram matrix too large for memory: ``store`` is a kernel store written by
    :func:`meanfield.scaleout.kernel_store` on the training inputs followed by the test inputs
    (its ``nngp`` array), or any sliceable N x N array (a zarr array).  The first ``n_train``
    inputs are the training set (default all: no test means).

    Solved by Jacobi-preconditioned conjugate gradients, every target column at once, reading
    one tile (``tile`` x ``tile``, default the store's chunk) at a time, the upper triangle only;
    stops at ||y - A alpha|| <= rtol ||y|| per column (checked on the true residual), else
    :class:`~meanfield.errors.ConvergenceError`."""
    return _stored_solve(store, "nngp", y_train, n_train, noise, diag_reg, rtol, maxiter, tile)


def stored_flow_mean(store: Any, y_train: Any, n_train: int | None = None, *, diag_reg: float = 0.0,
                     rtol: float = 1e-12, maxiter: int | None = None, tile: int | None = None
                     ) -> StoredSolve:
    """The gradient-flow mean at t = inf, Theta_xX Theta^{-1} y (docs/theory.md §A4.5; :func:`gradient_flow`),
    from the ``ntk`` array of a kernel store (or any sliceable N x N array), by the conjugate
    gradients of :func:`stored_posterior_mean`.  The learning rate and the loss normalisation do
    not change the t = inf mean."""
    return _stored_solve(store, "ntk", y_train, n_train, 0.0, diag_reg, rtol, maxiter, tile)


# ------------------------------------------------------------------------------------------
# convenience: kernels + dynamics in one call
# ------------------------------------------------------------------------------------------

def predict(arch: str, activation: Any, X_train: Any, y_train: Any, X_test: Any = None,
            t: Any = np.inf, *, depth: int, sigma_w2: Any, sigma_b2: Any, sigma_v2: Any = 1.0,
            sigma_a2: Any = 0.0, parametrization: str = "ntk", learning_rate: float = 1.0,
            diag_reg: float = 0.0, loss: str = "sum", covariance: bool = True, **kernel_kw
            ) -> GradientFlow:
    """Compute the kernels with :func:`meanfield.kernels.kernel` and return
    :func:`gradient_flow` on X_test (and the training set)."""
    from .kernels import kernel

    kw = dict(depth=depth, sigma_w2=sigma_w2, sigma_b2=sigma_b2, sigma_v2=sigma_v2,
              sigma_a2=sigma_a2, parametrization=parametrization, **kernel_kw)
    ktr = kernel(arch, activation, X_train, **kw)
    args: dict = {"nngp_train": ktr.nngp if covariance else None}
    if X_test is not None:
        kxt = kernel(arch, activation, X_test, X_train, **kw)
        args["ntk_test_train"] = kxt.ntk
        if covariance:
            kxx = kernel(arch, activation, X_test, **kw)
            args.update(nngp_test_train=kxt.nngp, nngp_test=kxx.nngp)
    return gradient_flow(ktr.ntk, y_train, t, learning_rate=learning_rate, diag_reg=diag_reg,
                         loss=loss, **args)


# ------------------------------------------------------------------------------------------
# trainability diagnostics
# ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Conditioning:
    """NTK condition number against depth on a fixed input set (see :data:`CONDITION_INPUTS`).

    For n inputs with equal lengths and equal pairwise correlations every kernel has the form
    a I + b (11^T - I), with eigenvalues a + (n - 1) b (once) and a - b (n - 1 times): the
    condition number is their ratio (inf when a - b <= 0 up to rounding: the kernel has
    degenerated, every input giving the same output -- the ordered phase at large depth).
    """

    arch: str
    activation: str
    sigma_w2: float
    sigma_b2: float
    n: int
    correlation: float
    depths: np.ndarray
    condition_number: np.ndarray
    ntk_diag: np.ndarray
    ntk_off: np.ndarray
    nngp_diag: np.ndarray
    nngp_off: np.ndarray

    def to_dict(self) -> dict:
        return {"arch": self.arch, "activation": self.activation, "sigma_w2": self.sigma_w2,
                "sigma_b2": self.sigma_b2, "n": self.n, "correlation": self.correlation,
                "inputs": CONDITION_INPUTS,
                "depths": [int(d) for d in self.depths],
                "condition_number": [_finite_or_none(x) for x in self.condition_number],
                "ntk_diag": [_finite_or_none(x) for x in self.ntk_diag],
                "ntk_off": [_finite_or_none(x) for x in self.ntk_off]}


def _equicorrelated_condition(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    l1, l2 = a + (n - 1) * b, a - b
    lo, hi = np.minimum(l1, l2), np.maximum(l1, l2)
    tol = 64 * np.finfo(float).eps * np.abs(a)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(lo > tol, hi / lo, np.inf)


def ntk_conditioning(arch: str, activation: Any, depths: Sequence[int] | int, sigma_w2: float,
                     sigma_b2: float, *, sigma_v2: float = 1.0, sigma_a2: float = 0.0,
                     n: int = 64, correlation: float = 0.5, parametrization: str = "ntk",
                     method: str = "auto", **kernel_kw) -> Conditioning:
    """The NTK's condition number on the fixed input set at each depth in ``depths``.

    Runs the kernel recursion of :func:`meanfield.kernels.kernel` once, to the largest depth,
    on two inputs with x.x/d = 1 and x.x'/d = ``correlation`` (all n inputs of the set are
    alike, so two suffice); the network of depth l is read off after layer l.  ``method="hermite"`` evaluates activations without a
    closed form by Gauss-Hermite (fast; fine for a condition number at moderate variances).
    """
    from .activations import get_activation
    from .kernels import kernel_trace
    from .maps import check_correlation

    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise DomainError(f"n must be an integer >= 2 (inputs in the set), got {n!r}")
    rho = float(check_correlation("correlation", correlation))
    if rho <= -1.0 / (n - 1):
        raise DomainError(f"correlation must exceed -1/(n-1) = {-1 / (n - 1):.4g} for n = {n} "
                          f"inputs to exist, got {rho:g}")
    ds = np.atleast_1d(np.asarray(depths))
    if ds.size == 0 or ds.ndim != 1:
        raise DomainError(f"depths must be a positive integer or a list of them, got {depths!r}")
    if np.any(ds < 1) or not np.all(np.equal(np.mod(ds, 1), 0)):
        raise DomainError(f"depths must be positive integers, got {depths!r}")
    ds = ds.astype(int)
    X = np.array([[1.0, 0.0], [rho, math.sqrt(max(0.0, 1.0 - rho * rho))]]) * math.sqrt(2.0)
    nngp, ntk = kernel_trace(arch, activation, X, depth=int(ds.max()), sigma_w2=sigma_w2,
                             sigma_b2=sigma_b2, sigma_v2=sigma_v2, sigma_a2=sigma_a2,
                             parametrization=parametrization, method=method, **kernel_kw)
    idx = ds - 1
    a, b = ntk[idx, 0, 0], ntk[idx, 0, 1]
    cond = _equicorrelated_condition(a, b, int(n))
    return Conditioning(arch, get_activation(activation).name, float(sigma_w2), float(sigma_b2),
                        int(n), rho, ds, cond, a, b, nngp[idx, 0, 0], nngp[idx, 0, 1])


def ntk_condition_number(arch: str, activation: Any, depth: int, sigma_w2: float, sigma_b2: float,
                         *, sigma_v2: float = 1.0, sigma_a2: float = 0.0, n: int = 64,
                         correlation: float = 0.5, parametrization: str = "ntk",
                         method: str = "auto", **kernel_kw) -> float:
    """lambda_max / lambda_min of the NTK on n inputs on the sphere with pairwise correlation
    ``correlation`` (:data:`CONDITION_INPUTS`); inf when the kernel has degenerated.

    Closed-form activations (relu, erf...) take well under 0.1 s at depth 100; others need one
    2-D quadrature per layer (``method="hermite"`` for the fast, approximate rule).
    """
    res = ntk_conditioning(arch, activation, [depth], sigma_w2, sigma_b2, sigma_v2=sigma_v2,
                           sigma_a2=sigma_a2, n=n, correlation=correlation,
                           parametrization=parametrization, method=method, **kernel_kw)
    return float(res.condition_number[0])
