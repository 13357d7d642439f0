"""``kernel()``: infinite-width NNGP and NTK Gram matrices, computed in row blocks.

The public entry point validates its arguments (one-line :class:`~meanfield.errors.DomainError`
naming the bad value), runs the 1-D length recursion on every input's diagonal, then computes
the N x M matrices block by block: each block goes through all layers at once, so peak memory
is the two outputs plus one block's working arrays (at most twice the outputs, i.e. peak within
3x the output).  For X2 = None only the upper triangle is computed and mirrored.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Sequence

import numpy as np

from .._arch import ARCHS, arch_name  # noqa: F401  (ARCHS: re-exported by meanfield.kernels)
from ..activations import get_activation
from .._memory import check_memory
from ..errors import DomainError
from ..maps import check_depth, check_variance
from ._layers import METHODS, has_closed_form
from .mlp import MLP
from .resnet import ResNet

PARAMETRIZATIONS = ("ntk", "standard")
_DTYPES = {"float64": np.float64, "float32": np.float32}
#: float64 working arrays alive per block entry (measured with tracemalloc, rounded up)
_WORK_ARRAYS = 14
_MIN_WORK_BYTES = 8 * 2**20
_MAX_WORK_BYTES = 128 * 2**20
#: the largest tile side of the dense kernels (inputs); see kernel()
_TILE_MAX = 1024
#: "auto" tabulates the whole network (inputs of one length) from this many entries on
_WHOLE_MIN_ENTRIES = 1 << 14
#: the condition number is skipped above this size (an O(N^3) eigendecomposition)
COND_MAX_N = 8000


def _none_if_bad(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _range(a: np.ndarray | None) -> dict | None:
    if a is None or a.size == 0:
        return None
    return {"min": _none_if_bad(np.min(a)), "max": _none_if_bad(np.max(a))}


def condition_number(K: np.ndarray) -> float:
    """lambda_max / lambda_min of a symmetric PSD matrix; inf when it is singular (lambda_min
    <= N eps lambda_max, the level of rounding)."""
    ev = np.linalg.eigvalsh(np.asarray(K, dtype=np.float64))
    lo, hi = float(ev[0]), float(ev[-1])
    if hi <= 0 or lo <= K.shape[0] * np.finfo(float).eps * hi:
        return math.inf
    return hi / lo


@dataclass(frozen=True)
class LayerDiagonals:
    """Per-layer kernel diagonals of the inputs (one column per input).

    mlp: ``nngp`` = Sigma^l(x, x) and ``ntk`` = Theta^l(x, x) for l = 1..L+1, ``q`` the
    variances fed to phi (l = 1..L).  resnet: ``nngp`` = P^l (residual stream, l = 0..L),
    ``ntk`` = Theta_x^l, ``q`` = Q^l (pre-activations, l = 1..L).
    """

    nngp: np.ndarray
    ntk: np.ndarray
    q: np.ndarray

    def to_dict(self) -> dict:
        return {k: np.where(np.isfinite(v), v, np.nan).tolist() for k, v in
                (("nngp", self.nngp), ("ntk", self.ntk), ("q", self.q))}


@dataclass(frozen=True)
class KernelResult:
    """Infinite-width kernels of one architecture on inputs X (N x d) and X2 (M x d).

    ``nngp`` and ``ntk`` are N x M; ``nngp_diag`` / ``ntk_diag`` are k(x, x) for the rows of X
    (and ``*_diag2`` for X2, None when X2 was not given).  ``layers`` / ``layers2`` hold the
    per-layer diagonals when ``diagonals=True``.  ``table_error`` is the estimated relative
    error of the tabulated Gaussian maps (None when only closed forms were used).
    """

    arch: str
    activation: str
    depth: int
    parametrization: str
    sigma_w2: tuple[float, ...]
    sigma_b2: tuple[float, ...]
    sigma_v2: tuple[float, ...] | None
    sigma_a2: tuple[float, ...] | None
    sigma_in2: float | None
    sigma_o2: float | None
    branch_scale: float | None
    dtype: str
    nngp: np.ndarray = field(repr=False)
    ntk: np.ndarray = field(repr=False)
    nngp_diag: np.ndarray = field(repr=False)
    ntk_diag: np.ndarray = field(repr=False)
    nngp_diag2: np.ndarray | None = field(default=None, repr=False)
    ntk_diag2: np.ndarray | None = field(default=None, repr=False)
    layers: LayerDiagonals | None = field(default=None, repr=False)
    layers2: LayerDiagonals | None = field(default=None, repr=False)
    table_error: float | None = None

    @property
    def symmetric(self) -> bool:
        """True when the kernels are Gram matrices of X with itself (X2 not given)."""
        return self.nngp_diag2 is None

    @cached_property
    def ntk_condition_number(self) -> float | None:
        """lambda_max / lambda_min of the NTK Gram matrix (inf if singular; None for X2 or N
        above COND_MAX_N)."""
        if not self.symmetric or self.ntk.shape[0] > COND_MAX_N:
            return None
        return condition_number(self.ntk)

    @cached_property
    def nngp_condition_number(self) -> float | None:
        if not self.symmetric or self.nngp.shape[0] > COND_MAX_N:
            return None
        return condition_number(self.nngp)

    def summary(self) -> dict[str, Any]:
        """Shapes, diagonal ranges and condition numbers: a JSON-safe dict (None for inf/NaN)."""
        cn = self.ntk_condition_number
        cg = self.nngp_condition_number
        return {
            "arch": self.arch,
            "activation": self.activation,
            "depth": self.depth,
            "parametrization": self.parametrization,
            "sigma_w2": list(self.sigma_w2),
            "sigma_b2": list(self.sigma_b2),
            "sigma_v2": None if self.sigma_v2 is None else list(self.sigma_v2),
            "sigma_a2": None if self.sigma_a2 is None else list(self.sigma_a2),
            "sigma_in2": self.sigma_in2,
            "sigma_o2": self.sigma_o2,
            "branch_scale": self.branch_scale,
            "dtype": self.dtype,
            "shape": list(self.ntk.shape),
            "symmetric": self.symmetric,
            "nngp_diag": _range(self.nngp_diag),
            "ntk_diag": _range(self.ntk_diag),
            "nngp_diag2": _range(self.nngp_diag2),
            "ntk_diag2": _range(self.ntk_diag2),
            "ntk_condition_number": _none_if_bad(cn),
            "nngp_condition_number": _none_if_bad(cg),
            "ntk_singular": None if cn is None else not math.isfinite(cn),
            "table_error": self.table_error,
        }

    def to_dict(self) -> dict[str, Any]:
        """The --json output: :meth:`summary` (the matrices themselves go to the .npz file)."""
        return self.summary()


# ------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------

def check_inputs(name: str, X: Any) -> np.ndarray:
    """A finite, non-empty (N, d) float64 array, or a one-line DomainError naming it."""
    try:
        A = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):
        raise DomainError(f"{name} must be a numeric array of shape (N, d), got {type(X).__name__}") from None
    if A.ndim != 2:
        raise DomainError(f"{name} must be 2-D (N inputs x d features), got shape {A.shape}")
    if A.shape[0] == 0 or A.shape[1] == 0:
        raise DomainError(f"{name} is empty (shape {A.shape}): need at least one input of dimension >= 1")
    if not np.all(np.isfinite(A)):
        i, j = np.argwhere(~np.isfinite(A))[0]
        raise DomainError(f"{name} must be finite, got {A[i, j]} at [{i}, {j}]")
    return A


def per_layer(name: str, value: Any, n: int, what: str) -> np.ndarray:
    """A scalar variance, or one per layer: returns an array of length n (validated)."""
    arr = np.asarray(check_variance(name, value), dtype=float)
    if arr.ndim == 0:
        return np.full(n, float(arr))
    if arr.ndim != 1 or arr.size != n:
        raise DomainError(f"{name} must be a scalar or a sequence of {n} values (one per {what}), "
                          f"got shape {arr.shape}")
    return arr


def _choice(name: str, value: Any, allowed: Sequence[str]) -> str:
    if isinstance(value, str) and value.strip().lower() in allowed:
        return value.strip().lower()
    raise DomainError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def _arch(value: Any) -> str:
    """mlp, resnet or resnet-reduced, any spelling of meanfield._arch."""
    return arch_name(value)


def _dtype(value: Any) -> tuple[str, type]:
    try:
        dt = np.dtype(value)
    except TypeError:
        raise DomainError(f"dtype must be 'float64' or 'float32', got {value!r}") from None
    if dt.name not in _DTYPES:
        raise DomainError(f"dtype must be 'float64' or 'float32', got {value!r}")
    return dt.name, _DTYPES[dt.name]


class _WholeNetwork:
    """For inputs of one length (x.x/d = g for all of X and X2, the usual normalised data) every
    layer's variance is the same for all inputs, so the depth-L NNGP and NTK are functions of
    the input correlation c0 = x.x'/(d g) alone.  They are tabulated once by running the
    per-layer recursion (exact closed forms, or the per-layer tables) on Chebyshev nodes in
    c0, and each entry then costs one table read instead of one per layer."""

    def __init__(self, model, rd, g: float, layer_method: str):
        from ._tables import FunctionTable

        self.model, self.g = model, g
        self.rd = rd
        one = _tile_diag(rd, 1)
        self.final = model.final(rd)

        def f(c0: np.ndarray) -> np.ndarray:
            n = c0.size
            maps = model.layer_maps(one, _tile_diag(rd, n), layer_method, 1 << 30)
            G = (c0 * g)[None, :]
            nn, nt = model.block(G, maps, slice(0, 1), slice(0, n), one, None)
            return np.stack([nn[0], nt[0]])

        self.table = FunctionTable(f)
        self.error_estimate = self.table.error_estimate

    def block(self, G, maps, rows, cols, rd, diag, trace=None):
        G *= 1.0 / self.g
        nn, nt = self.table(G)
        if diag is not None:
            nn[diag] = self.final[0][rows][diag[0]]
            nt[diag] = self.final[1][rows][diag[0]]
        return nn, nt


def _tile_diag(d, n: int):
    """The same per-layer diagonal record for n identical inputs."""
    return type(d)(**{k: [np.full(n, float(a[0])) for a in v] for k, v in d.__dict__.items()})


def _workers(value: Any) -> int:
    if value is None:
        return max(1, min(4, os.cpu_count() or 1))
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DomainError(f"workers must be a positive integer, got {value!r}")
    return int(value)


def build_model(arch: str, act, L: int, sigma_w2, sigma_b2, sigma_v2, sigma_a2, sigma_in2,
                sigma_o2, branch_scale, ntk: bool):
    """The recursion object (MLP or ResNet) with validated per-layer variances."""
    if arch == "mlp":
        sw = per_layer("sigma_w2", sigma_w2, L + 1, "dense layer, readout last")
        sb = per_layer("sigma_b2", sigma_b2, L + 1, "dense layer, readout last")
        model = MLP(act, L, sw, sb, ntk)
        meta = dict(sigma_v2=None, sigma_a2=None, sigma_in2=None, sigma_o2=None, branch_scale=None)
    else:
        reduced = arch == "resnet-reduced"
        sw = per_layer("sigma_w2", sigma_w2, L, "residual block")
        sb = per_layer("sigma_b2", sigma_b2, L, "residual block")
        alpha = float(check_variance("branch_scale", branch_scale))
        if reduced:
            sv, sa = np.ones(L), np.zeros(L)
        else:
            sv = per_layer("sigma_v2", sigma_v2, L, "residual block")
            sa = per_layer("sigma_a2", sigma_a2, L, "residual block")
        s_in = float(check_variance("sigma_in2", sigma_in2))
        s_o = float(check_variance("sigma_o2", sigma_o2))
        a2 = alpha * alpha
        model = ResNet(act, L, sw, sb, a2 * sv, a2 * sa, s_in, s_o, ntk, reduced, a2)
        meta = dict(sigma_v2=None if reduced else tuple(map(float, sv)),
                    sigma_a2=None if reduced else tuple(map(float, sa)),
                    sigma_in2=s_in, sigma_o2=s_o, branch_scale=alpha)
    meta["_sb"] = sb
    return model, sw, meta


def kernel_trace(arch: str, activation: Any, X: Any, *, depth: int, sigma_w2: Any, sigma_b2: Any,
                 sigma_v2: Any = 1.0, sigma_a2: Any = 0.0, sigma_in2: float = 1.0,
                 sigma_o2: float = 1.0, branch_scale: float = 1.0, parametrization: str = "ntk",
                 method: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """NNGP and NTK Gram matrices of X for every depth 1..``depth`` in one pass: arrays of shape
    (depth, N, N), entry l - 1 for the network of depth l (its readout after layer l, the
    variances being the first entries of the per-layer sequences).  For small X (diagnostics)."""
    arch = _arch(arch)
    act = get_activation(activation)
    if act.d1 is None:
        raise DomainError(f"activation {act.name!r} has no derivative, so its NTK is undefined")
    X = check_inputs("X", X)
    L = check_depth(depth)
    ntk = _choice("parametrization", parametrization, PARAMETRIZATIONS) == "ntk"
    method = _choice("method", method, METHODS)
    model, _, _ = build_model(arch, act, L, sigma_w2, sigma_b2, sigma_v2, sigma_a2, sigma_in2,
                              sigma_o2, branch_scale, ntk)
    with np.errstate(over="ignore", invalid="ignore"):
        rd = model.diagonal(np.einsum("ij,ij->i", X, X) / X.shape[1])
    N = X.shape[0]
    maps = model.layer_maps(rd, rd, method, N * (N + 1) // 2)
    trace: list = []
    G = X @ X.T / X.shape[1]
    model.block(G, maps, slice(0, N), slice(0, N), rd, (np.arange(N), np.arange(N)), trace)
    return np.stack([t[0] for t in trace]), np.stack([t[1] for t in trace])


# ------------------------------------------------------------------------------------------
# the driver
# ------------------------------------------------------------------------------------------

def _via_network(arch, act, X, X2, L, sigma_w2, sigma_b2, sw, sb, meta, parametrization, dt_name,
                 dt, diagonals, method) -> "KernelResult":
    """kernel() computed by the network algebra's preset (architectures without a fast path)."""
    from ..network import preset

    if diagonals:
        raise DomainError(f"diagonals=True is not available for {arch} with {act.name} (an "
                          "activation with E[phi] != 0); use meanfield.network.preset(...).propagate")
    net = preset(arch, act, L, sigma_w2=sigma_w2, sigma_b2=sigma_b2,
                 sigma_in2=meta["sigma_in2"], sigma_o2=meta["sigma_o2"],
                 branch_scale=meta["branch_scale"], parametrization=parametrization)
    m = "auto" if method in ("whole",) else method
    k = net.kernel(X, X2, method=m)
    kd = net.kernel(X, method=m) if X2 is not None else k
    k2 = net.kernel(X2, method=m) if X2 is not None else None
    return KernelResult(
        arch=arch, activation=act.name, depth=L, parametrization=parametrization,
        sigma_w2=tuple(map(float, sw)), sigma_b2=tuple(map(float, sb)), dtype=dt_name,
        nngp=k.nngp.astype(dt), ntk=k.ntk.astype(dt), nngp_diag=np.diag(kd.nngp).copy(),
        ntk_diag=np.diag(kd.ntk).copy(),
        nngp_diag2=None if k2 is None else np.diag(k2.nngp).copy(),
        ntk_diag2=None if k2 is None else np.diag(k2.ntk).copy(), table_error=None, **meta)


def kernel(arch: str, activation: Any, X: Any, X2: Any = None, *, depth: int,
           sigma_w2: Any, sigma_b2: Any, sigma_v2: Any = 1.0, sigma_a2: Any = 0.0,
           sigma_in2: float = 1.0, sigma_o2: float = 1.0, branch_scale: float = 1.0,
           parametrization: str = "ntk", dtype: Any = "float64", diagonals: bool = False,
           block_rows: int | None = None, workers: int | None = None,
           progress: Callable[[int, int], None] | None = None,
           method: str = "auto") -> KernelResult:
    """NNGP and NTK Gram matrices of an infinitely wide network (docs/theory.md §A4.1-4.3).

    Parameters
    ----------
    arch : ``"mlp"`` -- ``depth`` = L hidden layers (dense + activation) then a linear readout
        dense layer; NNGP = Sigma^{L+1}, NTK = Theta^{L+1} of docs/theory.md §A4.1, the first layer sees
        x.x'/d.  ``"resnet"`` -- the full residual MLP of docs/theory.md §A4.3 (input dense layer
        sigma_in2, L residual blocks h = W x + b, x <- x + V phi(h) + a, readout sigma_o2).
        ``"resnet-reduced"`` -- the reduced block x <- x + phi(h) (V = I, a = 0).
    activation : a registry spec (``"relu"``, ``"tanh"``, ``"leaky_relu:0.1"``...) or an
        Activation.  Closed-form kernels are used where the registry has them (relu family, erf,
        sin, cos, alpha_relu); other activations use tables built by Gaussian quadrature
        (see meanfield.kernels._tables: ~1e-12 relative for smooth activations).
    X, X2 : inputs of shape (N, d) and (M, d); X2 = None means X2 = X (symmetric Gram matrix).
    depth : L >= 1 (hidden layers, or residual blocks).
    sigma_w2, sigma_b2 : weight and bias variances (fan-in normalised: W ~ N(0, sigma_w2 /
        fan_in)).  Scalars, or sequences with one value per dense layer (mlp: L + 1, readout
        last) or per residual block (resnet: L).
    sigma_v2, sigma_a2 : residual branch's weight and bias variances (resnet only; scalar or
        one per block).  sigma_in2, sigma_o2 : input and readout layers (resnet only).
    branch_scale : multiplier alpha of every residual branch (e.g. 1/sqrt(L)); resnet only.
    parametrization : ``"ntk"`` (NTK parametrisation: the NTK w.r.t. N(0, 1) raw parameters,
        Jacot et al.) or ``"standard"``.  In the standard parametrisation the NTK grows like
        the width n; the returned kernel is lim Theta_SP / n (gradient flow with learning rate
        eta_0 / n), in which first-layer (input) weights and all biases drop out (docs/theory.md §A4.2).
        The NNGP is the same in both.
    dtype : ``"float64"`` (default) or ``"float32"`` for the returned matrices (computation is
        always float64; float32 halves the memory).
    diagonals : also return every layer's kernel diagonal (``result.layers``).
    block_rows : the side of the square tiles (inputs; default: from a memory budget of twice
        the output size, at least 8 MiB and at most 128 MiB of working arrays per worker, and
        at most 1024).  Symmetric kernels compute the tiles on and above the diagonal.
    workers : threads computing row blocks concurrently (numpy releases the GIL in its
        elementwise loops); default min(4, CPUs).  Each worker has its share of the memory budget.
    progress : called as ``progress(done, total)`` (entries) after every block.
    method : how the per-entry Gaussian maps are evaluated (meanfield.kernels._layers):
        ``"auto"`` (default) -- entry by entry for small problems; for large ones, tables in
        x = sqrt(1 - |c|) built from the closed forms or from ``gaussian.expect2``, whichever
        the activation has (relative error ~1e-13 for closed forms and smooth activations,
        ~1e-8 for kinked ones without closed form such as elu, hard_tanh); ``"direct"`` --
        ``gaussian.w_phi`` / ``w_dphi`` for every entry (exact closed forms; ~10 ms per entry
        otherwise); ``"table"``; ``"hermite"`` -- Gauss-Hermite product rule for activations
        without closed form (fast, inaccurate at large variances; diagnostics only);
        ``"whole"`` -- inputs of one length only: the whole network's NNGP and NTK tabulated as
        functions of the input correlation (see _WholeNetwork; ``"auto"`` does this for
        large problems with inputs of one length, the usual normalised data: one table read per
        entry instead of one per layer, relative error ~1e-13).
    """
    arch = _arch(arch)
    act = get_activation(activation)
    if act.d1 is None:
        raise DomainError(f"activation {act.name!r} has no derivative, so its NTK is undefined"
                          f"{': ' + act.missing_reason if act.missing_reason else ''}")
    X = check_inputs("X", X)
    sym = X2 is None
    X2a = X if sym else check_inputs("X2", X2)
    if X2a.shape[1] != X.shape[1]:
        raise DomainError(f"X and X2 must have the same input dimension, got d = {X.shape[1]} "
                          f"and {X2a.shape[1]}")
    L = check_depth(depth)
    parametrization = _choice("parametrization", parametrization, PARAMETRIZATIONS)
    method = _choice("method", method, METHODS)
    ntk = parametrization == "ntk"
    dt_name, dt = _dtype(dtype)
    if block_rows is not None:
        if isinstance(block_rows, bool) or not isinstance(block_rows, (int, np.integer)) or block_rows < 1:
            raise DomainError(f"block_rows must be a positive integer, got {block_rows!r}")
    if progress is not None and not callable(progress):
        raise DomainError("progress must be a callable progress(done, total) or None")

    model, sw, meta = build_model(arch, act, L, sigma_w2, sigma_b2, sigma_v2, sigma_a2, sigma_in2,
                                  sigma_o2, branch_scale, ntk)
    sb = np.asarray(meta.pop("_sb"))
    if arch == "resnet-reduced" and not act.odd:
        # x + phi(h) with E[phi] != 0: the stream's channel mean drifts and enters the kernel;
        # docs/theory.md §A4.3's recursion omits it, the network algebra carries it.
        return _via_network(arch, act, X, None if sym else X2a, L, sigma_w2, sigma_b2, sw, sb,
                            meta, parametrization, dt_name, dt, diagonals, method)

    d = X.shape[1]
    g_rows = np.einsum("ij,ij->i", X, X) / d
    g_cols = g_rows if sym else np.einsum("ij,ij->i", X2a, X2a) / d
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # inf on overflow is reported below
        rd = model.diagonal(g_rows)
        cd = rd if sym else model.diagonal(g_cols)
    nngp_d, ntk_d = model.final(rd)
    for nm, arr in (("NNGP", nngp_d), ("NTK", ntk_d)):
        if not np.all(np.isfinite(arr)):
            raise DomainError(f"the {nm} diagonal overflows float64 at depth {L} ({act.name}, "
                              f"sigma_w2 = {float(sw.max()):g}): the length map diverges; "
                              "use smaller variances or depth")
    N, M = X.shape[0], X2a.shape[0]
    n_entries = N * (N + 1) // 2 if sym else N * M
    g_all = g_rows if sym else np.concatenate([g_rows, g_cols])
    uniform = float(np.ptp(g_all)) <= 1e-13 * float(np.max(np.abs(g_all)))
    if method == "whole" and not uniform:
        raise DomainError("method='whole' needs inputs of one length (x.x/d equal for all inputs)")
    whole = None
    if uniform and float(g_all[0]) > 0 and (
            method == "whole" or (method == "auto" and n_entries >= _WHOLE_MIN_ENTRIES)):
        layer_method = "direct" if has_closed_form(act) else "table"
        whole = _WholeNetwork(model, rd, float(g_all[0]), layer_method)
        maps = []
    else:
        maps = model.layer_maps(rd, cd, method, n_entries)
    block_model = model if whole is None else whole

    check_memory(2.0 * N * M * np.dtype(dt).itemsize, f"the NNGP and NTK of {N} x {M} inputs",
                 "split the inputs (x2 gives rectangular blocks)")
    out_nngp = np.empty((N, M), dtype=dt)
    out_ntk = np.empty((N, M), dtype=dt)
    n_workers = _workers(workers)
    if block_rows is None:
        # Square tiles of fixed side: each reads t columns of X and t^2 entries of work arrays,
        # so the cost stays proportional to N^2 (row bands of a fixed budget / N made the
        # band count, and the Gram products' re-reads of X, grow like N^2 / budget).
        budget = min(max(2 * out_nngp.nbytes * 2, _MIN_WORK_BYTES), _MAX_WORK_BYTES)
        block_rows = max(1, min(_TILE_MAX, int(math.sqrt(budget / (_WORK_ARRAYS * 8 * n_workers)))))
    b = int(min(block_rows, N))
    starts = list(range(0, N, b))
    cstarts = starts if sym else list(range(0, M, b))
    tiles = [(r0, c0) for r0 in starts for c0 in cstarts if not sym or c0 >= r0]
    total = N * (N + 1) // 2 if sym else N * M
    X2b = X if sym else X2a

    def run(tile: tuple[int, int]) -> int:
        r0, c0 = tile
        r1, c1 = min(N, r0 + b), min(M, c0 + b)
        rows, cols = slice(r0, r1), slice(c0, c1)
        G = X[rows] @ X2b[cols].T
        G /= d
        on_diag = sym and r0 == c0
        diag = (np.arange(r1 - r0), np.arange(r1 - r0)) if on_diag else None
        nn, nt = block_model.block(G, maps, rows, cols, rd, diag)
        if on_diag:  # the diagonal square made exactly symmetric
            for mat in (nn, nt):
                upper = np.triu(mat)
                mat[:] = upper + np.triu(upper, 1).T
        out_nngp[rows, cols] = nn
        out_ntk[rows, cols] = nt
        if sym and not on_diag:  # the mirror tile, while this one is in cache
            out_nngp[cols, rows] = nn.T
            out_ntk[cols, rows] = nt.T
        if sym:
            return (r1 - r0) * (r1 - r0 + 1) // 2 if on_diag else (r1 - r0) * (c1 - c0)
        return (r1 - r0) * (c1 - c0)

    for m in maps:  # build the tables once, before the blocks share them
        if m.method == "table":
            _ = m.tab
    done = 0
    if n_workers == 1 or len(tiles) == 1:
        for t in tiles:
            done += run(t)
            if progress is not None:
                progress(done, total)
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=n_workers) as pool:
            for k in pool.map(run, tiles):
                done += k
                if progress is not None:
                    progress(done, total)

    table_error = None if whole is None else whole.error_estimate
    for m in maps:
        if m._tab is not None and m._tab.nodes is not None:
            e = max(m._tab.tables.error_estimate, getattr(m._tab, "interp_error", 0.0))
            table_error = e if table_error is None else max(table_error, e)
    layers = layers2 = None
    if diagonals:
        layers = LayerDiagonals(**model.records(rd))
        if not sym:
            layers2 = LayerDiagonals(**model.records(cd))
    nngp_d2 = ntk_d2 = None
    if not sym:
        nngp_d2, ntk_d2 = model.final(cd)
    return KernelResult(
        arch=arch, activation=act.name, depth=L, parametrization=parametrization,
        sigma_w2=tuple(map(float, sw)), sigma_b2=tuple(map(float, sb)), dtype=dt_name,
        nngp=out_nngp, ntk=out_ntk, nngp_diag=nngp_d, ntk_diag=ntk_d, nngp_diag2=nngp_d2,
        ntk_diag2=ntk_d2, layers=layers, layers2=layers2, table_error=table_error, **meta)
