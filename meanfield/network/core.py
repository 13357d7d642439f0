"""The network algebra's core: the kernel state, the Layer protocol, the combinators and the
drivers (docs/architecture.md).

A network is a composition of layers.  Every layer carries, in one place:

* ``out_shape(shape, where)`` -- static shape inference and validation (the place where bad
  compositions are refused, naming the path of the bad layer);
* ``fold(state)`` -> ``(state, backward)`` -- its forward kernel map (NNGP over all pairs of
  inputs and positions, the channel means, the NTK in either parametrisation) and a closure
  mapping the gradient covariance at its output to the one at its input (the backward map);
* ``init`` / ``apply`` / ``vjp`` / ``ntk_terms`` -- a finite-width numpy version, used by
  :meth:`Network.sample` so that every composition can be checked against a wide random network;
* ``params(shape)`` -- its parameters (:class:`Param`: name, role, fan-in, variance).

Kernels are stored in the "pair" layout (N, *S, M, *S) (an input's positions next to it), so an
elementwise map sees a plain (N P) x (M P) matrix; results are returned in neural-tangents'
layout (N, M, s1, s1', s2, s2', ...).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Sequence

import numpy as np

from .._memory import check_memory
from ..errors import DomainError

PARAMETRIZATIONS = ("ntk", "standard")
#: (input, position) rows per tile of Network.kernel for networks with positions: a tile's
#: arrays hold (block P)^2 entries each, and past ~256^2 they leave the cache (measured on a
#: CNN at P = 256: 2 inputs per tile 1.4x and 4 inputs 2.1x slower than 1)
_TILE_SIDE = 256


# ------------------------------------------------------------------------------------------
# records
# ------------------------------------------------------------------------------------------
class Record:
    """Base of the algebra's frozen results: ``to_dict`` is generated from the fields."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray):
                v = np.where(np.isfinite(v), v, np.nan).tolist() if v.dtype.kind == "f" else v.tolist()
            elif isinstance(v, Record):
                v = v.to_dict()
            out[f.name] = v
        return out


@dataclass(frozen=True)
class Shape:
    """What a layer knows statically about its input: the spatial shape, the channel count
    (an int for the data, None for a hidden layer's width, taken to infinity), and whether
    its units are jointly Gaussian with zero mean (true after a dense or conv layer) and
    "fresh" (they depend on the network's input only through a fresh weight matrix)."""

    spatial: tuple[int, ...]
    channels: int | None
    gaussian: bool = False
    fresh: bool = False
    #: what the units are when they are not Gaussian but a layer downstream can still map them
    #: exactly (``"batch_norm"``: a Gaussian vector normalised over the batch); None otherwise
    law: str | None = None

    @property
    def positions(self) -> int:
        return int(np.prod(self.spatial)) if self.spatial else 1


@dataclass(frozen=True)
class Param:
    """One parameter tensor of a layer: ``role`` is "input" (fan-in is the data's), "hidden" or
    "readout"; ``fan_in`` None means the width (infinite in the theory); ``variance`` is the
    fan-in normalised variance (W ~ N(0, variance / fan_in), a bias ~ N(0, variance))."""

    name: str
    kind: str            # "weight" | "bias"
    role: str            # "input" | "hidden" | "readout"
    fan_in: int | None
    variance: float
    shape: tuple[int | None, ...]


@dataclass
class State:
    """The kernel of one layer's output on the inputs (pair layout), carried through a fold.

    ``K``: second moments (N, *S, N, *S) per channel; ``T``: the NTK (same shape) or None;
    ``mu``: the channel means (N, *S) or None where they are exactly 0; ``finite``: the channels
    are the data's (no weight layer yet); ``param``: "ntk" or "standard"; ``method``: how
    activations evaluate their Gaussian maps (meanfield.kernels._layers.METHODS).
    """

    K: np.ndarray
    T: np.ndarray | None
    mu: np.ndarray | None
    spatial: tuple[int, ...]
    finite: bool
    param: str = "ntk"
    method: str = "auto"
    peak: int = 0
    #: True when the rows are [X; X2] stacked for a cross kernel (so they are not one batch)
    cross: bool = False
    #: a tile (rows != columns, see Network.kernel): K is (R, *S, C, *S) and the rows' and
    #: columns' variances and channel means come from the tape of the diagonal blocks
    tile: bool = False
    qr: np.ndarray | None = None
    qc: np.ndarray | None = None
    mur: np.ndarray | None = None
    muc: np.ndarray | None = None
    tape: Any = None
    #: the number of inputs of the whole kernel this state is a block of (0: this state's):
    #: a layer choosing between direct evaluation and a table decides on the whole problem
    total_inputs: int = 0

    @property
    def total_entries(self) -> int:
        """The entries of the whole kernel's upper triangle at this layer's positions."""
        n = (self.total_inputs or self.N) * self.P
        return n * (n + 1) // 2

    @property
    def N(self) -> int:
        return self.K.shape[0]

    @property
    def C(self) -> int:
        """The number of column inputs (N for a square state)."""
        return self.K.shape[1 + len(self.spatial)]

    @property
    def P(self) -> int:
        return int(np.prod(self.spatial)) if self.spatial else 1

    def matrix(self, A: np.ndarray) -> np.ndarray:
        """A pair-layout array as an (N P) x (C P) matrix (a view)."""
        return A.reshape(self.N * self.P, self.C * self.P)

    def q_rows(self) -> np.ndarray:
        """Per-(input, position) variances of the row inputs, shape (N, *S)."""
        return self.qr if self.tile else self.q()

    def q_cols(self) -> np.ndarray:
        return self.qc if self.tile else self.q()

    def mu_rows(self) -> np.ndarray | None:
        return self.mur if self.tile else self.mu

    def mu_cols(self) -> np.ndarray | None:
        return self.muc if self.tile else self.mu

    def synced(self) -> "State":
        """After a layer: record this state's per-input variances and means on the tape (a
        diagonal block), or read them from it (a tile): the same order in both."""
        if self.tape is None:
            return self
        if not self.tile:
            self.tape.record(self.q(), self.mu)
            return self
        q, mu = self.tape.next()
        r, c = self.tape.rows, self.tape.cols
        return replace(self, qr=q[r], qc=q[c], mur=None if mu is None else mu[r],
                       muc=None if mu is None else mu[c], mu=None)

    def q(self) -> np.ndarray:
        """The per-(input, position) variances, shape (N, *S)."""
        return np.diagonal(self.matrix(self.K)).reshape((self.N,) + self.spatial).copy()

    def blocks(self, A: np.ndarray) -> np.ndarray:
        """The per-input blocks A[n, :, n, :] of a pair-layout array, shape (N, P, P)."""
        N, P = self.N, self.P
        return np.ascontiguousarray(np.moveaxis(np.diagonal(A.reshape(N, P, N, P), axis1=0, axis2=2), -1, 0))

    def evolve(self, **kw) -> "State":
        st = replace(self, **kw)
        size = st.K.nbytes + (0 if st.T is None else st.T.nbytes)
        st.peak = max(self.peak, size)
        return st

    def row_axes(self) -> tuple[int, ...]:
        return tuple(range(1, 1 + len(self.spatial)))

    def col_axes(self) -> tuple[int, ...]:
        D = len(self.spatial)
        return tuple(range(D + 2, 2 * D + 2))


Backward = Callable[[np.ndarray], np.ndarray]   # gradient covariance (N, P_out, P_out) -> (N, P_in, P_in)


def _same_backward(G: np.ndarray) -> np.ndarray:
    return G


# ------------------------------------------------------------------------------------------
# the Layer protocol
# ------------------------------------------------------------------------------------------
class Layer:
    """Base class of every layer (see the module docstring for the protocol)."""

    name: str = "layer"
    spec_key: str = ""

    def out_shape(self, shape: Shape, where: str) -> Shape:  # pragma: no cover - protocol
        raise NotImplementedError

    def fold(self, st: State) -> tuple[State, Backward]:  # pragma: no cover - protocol
        raise NotImplementedError

    def params(self, shape: Shape) -> list[Param]:
        return []

    def needs_derivative(self) -> list[str]:
        """Names of activations whose derivative an NTK of this layer needs."""
        return []

    # finite-width numpy version: parameters are N(0, 1) raw values (NTK parametrisation)
    def init(self, rng: np.random.Generator, shape: tuple[int, ...], width: int) -> tuple[dict, tuple[int, ...]]:
        return {}, shape

    def apply(self, p: dict, x: np.ndarray) -> tuple[np.ndarray, Any]:  # pragma: no cover
        raise NotImplementedError

    def vjp(self, p: dict, cache: Any, gy: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def ntk_terms(self, p: dict, cache: Any, d1: np.ndarray, d2: np.ndarray) -> np.ndarray:
        """sum over this layer's parameters of <df1/dtheta, df2/dtheta>, given the output
        gradients d1 (N, ...) and d2 (N, ...) of two scalar outputs: an (N, N) matrix."""
        return 0.0  # type: ignore[return-value]

    def to_spec(self) -> dict:  # pragma: no cover - protocol
        raise NotImplementedError

    def flat(self) -> list["Layer"]:
        """The layers of the flattened composition (serial and repeat flatten; others are one)."""
        return [self]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_spec()!r})"


class Network(Layer):
    """A serial composition of layers; itself a Layer (so networks nest)."""

    name = "serial"

    def __init__(self, layers: Sequence[Layer], parametrization: str = "ntk"):
        for i, l in enumerate(layers):
            if not isinstance(l, Layer):
                raise DomainError(f"layers[{i}]: expected a Layer, got {type(l).__name__}")
        self.layers = tuple(layers)
        if parametrization not in PARAMETRIZATIONS:
            raise DomainError(f"parametrization must be one of {', '.join(PARAMETRIZATIONS)}, "
                              f"got {parametrization!r}")
        self.parametrization = parametrization

    # ---- the Layer protocol ----
    def flat(self) -> list[Layer]:
        return [m for l in self.layers for m in l.flat()]

    def out_shape(self, shape: Shape, where: str = "layers") -> Shape:
        for i, l in enumerate(self.layers):
            shape = l.out_shape(shape, f"{where}[{i}]")
        return shape

    def fold(self, st: State) -> tuple[State, Backward]:
        backs: list[Backward] = []
        layers = self.flat()
        i = 0
        while i < len(layers):
            l = layers[i]
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            fused = getattr(l, "fold_with", None)
            if fused is not None and nxt is not None and nxt.name == "dense" and not st.spatial:
                st, b = fused(st, nxt)   # activation + dense in one pass (docs/architecture.md)
                i += 2
            else:
                st, b = l.fold(st)
                i += 1
            st = st.synced()
            backs.append(b)

        def backward(G: np.ndarray) -> np.ndarray:
            for b in reversed(backs):
                G = b(G)
            return G

        return st, backward

    def params(self, shape: Shape) -> list[Param]:
        out: list[Param] = []
        for i, l in enumerate(self.layers):
            out += [replace(p, name=f"{i}.{p.name}") for p in l.params(shape)]
            shape = l.out_shape(shape, f"layers[{i}]")
        return out

    def needs_derivative(self) -> list[str]:
        return [n for l in self.layers for n in l.needs_derivative()]

    def init(self, rng, shape, width):
        ps = []
        for l in self.layers:
            p, shape = l.init(rng, shape, width)
            ps.append(p)
        return {"layers": ps}, shape

    def apply(self, p, x):
        caches = []
        for l, pl in zip(self.layers, p["layers"]):
            x, c = l.apply(pl, x)
            caches.append(c)
        return x, caches

    def vjp(self, p, cache, gy):
        for l, pl, c in zip(reversed(self.layers), reversed(p["layers"]), reversed(cache)):
            gy = l.vjp(pl, c, gy)
        return gy

    def grads(self, p, cache, gy) -> list:
        """The output gradient of every layer (reverse pass), for ntk_terms."""
        out = []
        for l, pl, c in zip(reversed(self.layers), reversed(p["layers"]), reversed(cache)):
            out.append(gy)
            gy = l.vjp(pl, c, gy)
        return out[::-1] + [gy]

    def ntk_terms(self, p, cache, d1, d2):
        g1, g2 = self.grads(p, cache, d1), self.grads(p, cache, d2)
        total = 0.0
        for k, (l, pl, c) in enumerate(zip(self.layers, p["layers"], cache)):
            total = total + l.ntk_terms(pl, c, g1[k], g2[k])
        return total

    def to_spec(self) -> Any:
        return [l.to_spec() for l in self.layers]

    def __repr__(self) -> str:
        return f"Network({len(self.layers)} layers, parametrization={self.parametrization!r})"

    # ---- the drivers ----
    def input_shape(self, X: np.ndarray, name: str = "X") -> Shape:
        X = np.asarray(X)
        if X.ndim < 2:
            raise DomainError(f"{name} must have shape (N, d) or (N, s1, [s2,] channels), got shape {X.shape}")
        return Shape(spatial=tuple(int(s) for s in X.shape[1:-1]), channels=int(X.shape[-1]))

    def check(self, X: np.ndarray, name: str = "X") -> Shape:
        """Validate the composition for inputs shaped like X; return the output shape."""
        return self.out_shape(self.input_shape(X, name), "layers")

    def kernel(self, X: Any, X2: Any = None, *, parametrization: str | None = None,
               ntk: bool = True, method: str = "auto", diagonals: bool = False,
               block: int | None = None, store: Any = None, chunk: int = 4096,
               scheduler: str | None = None) -> Any:
        """NNGP and NTK of the network's output on inputs X (and X2), docs/theory.md §A4.1-4.4 and 5.2.

        X: (N, d) for dense networks, (N, s1, [s2,] channels) channels last for conv networks.
        Returns :class:`NetworkKernel` with ``nngp`` and ``ntk`` of shape (N, M) after a readout
        or (N, M, s1, s1', s2, s2', ...) otherwise (neural-tangents' layout).
        ``parametrization`` ("ntk" or "standard", default the network's): in the standard one the
        NTK is lim Theta_SP / n with learning rate eta_0 / n (docs/theory.md §A4.2).
        ``store="K.zarr"``: the Gram matrices go to a zarr store in ``chunk`` x ``chunk`` tiles
        on dask (``scheduler``: a dask.distributed address), resumably, and a
        :class:`meanfield.scaleout.StoredKernel` is returned (docs/scaleout.md; needs the
        ``dask`` extra).
        """
        if store is not None:
            if X2 is not None or diagonals or block is not None:
                raise DomainError("store= writes the square Gram matrix of X in tiles of `chunk` "
                                  "inputs: X2, diagonals and block do not apply")
            from ..scaleout import kernel_store

            return kernel_store(self, X, store, chunk=chunk, scheduler=scheduler,
                                parametrization=parametrization, ntk=ntk, method=method)
        param = self.parametrization if parametrization is None else parametrization
        if param not in PARAMETRIZATIONS:
            raise DomainError(f"parametrization must be one of {', '.join(PARAMETRIZATIONS)}, got {param!r}")
        from .layers import METHODS
        if method not in METHODS:
            raise DomainError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        X = _check_array("X", X)
        N = X.shape[0]
        if X2 is not None:
            X2 = _check_array("X2", X2)
            if X2.shape[1:] != X.shape[1:]:
                raise DomainError(f"X2 must have the same per-input shape as X, got {X2.shape[1:]} "
                                  f"and {X.shape[1:]}")
        out = self.check(X)
        M = N if X2 is None else X2.shape[0]
        # a lower bound: the N x M output arrays themselves (spatial outputs and tiles add to it)
        check_memory((2 if ntk else 1) * N * M * 8, f"the kernels of {N} x {M} inputs",
                     "split the inputs (X2 gives rectangular blocks) or write a store (store=)")
        if ntk:
            missing = self.needs_derivative()
            if missing:
                raise DomainError(f"activation {missing[0]!r} has no derivative, so the NTK is "
                                  "undefined; ask for the NNGP only (ntk=False)")
        Z = X if X2 is None else np.concatenate([X, X2])
        names, dn, dt = [], [], []
        P = int(np.prod(X.shape[1:-1]))
        if block is None:
            block = max(1, _TILE_SIDE // P) if P > 1 else Z.shape[0]
        elif isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
            raise DomainError(f"block must be a positive integer (inputs per tile), got {block!r}")
        if not diagonals and tileable(self) and (block < Z.shape[0] or X2 is not None):
            with np.errstate(over="ignore", invalid="ignore"):
                return self._tiled(X, X2, param, ntk, method, int(block), out)
        st = initial_state(Z, param, ntk, method)
        st.cross = X2 is not None
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below
            if not diagonals:
                st, _ = self.fold(st)
            else:
                for l in self.flat():
                    st, _ = l.fold(st)
                    names.append(l.name)
                    dn.append(st.q()[:N])
                    dt.append(None if st.T is None else
                              np.diagonal(st.matrix(st.T)).reshape((st.N,) + st.spatial)[:N].copy())
        nngp, ntk_ = _to_nt_layout(st.K, st.spatial), None if st.T is None else _to_nt_layout(st.T, st.spatial)
        if X2 is not None:
            nngp = nngp[:N, N:]
            ntk_ = None if ntk_ is None else ntk_[:N, N:]
        for nm, arr in (("NNGP", nngp), ("NTK", ntk_)):
            if arr is not None and not np.all(np.isfinite(arr)):
                raise DomainError(f"the {nm} overflows float64: the variances grow without bound "
                                  "through this network; use smaller variances or fewer layers")
        return NetworkKernel(nngp=nngp, ntk=ntk_, parametrization=param,
                             output_spatial=out.spatial, peak_bytes=int(st.peak),
                             layers=tuple(names) if diagonals else None,
                             layer_nngp=dn if diagonals else None,
                             layer_ntk=dt if diagonals else None)

    def _tiled(self, X, X2, param, ntk, method, block, out) -> "NetworkKernel":
        """The kernel in tiles of ``block`` inputs: the diagonal blocks are folded as squares,
        recording every layer's per-input variances and means; each off-diagonal tile (the
        upper triangle only when X2 is None) is then folded as a rectangle reading them.  Every
        entry is computed by the same layer maps as the square fold; the peak memory is that of
        two tiles."""
        Z = X if X2 is None else np.concatenate([X, X2])
        N, M = X.shape[0], (X.shape[0] if X2 is None else X2.shape[0])
        starts = list(range(0, Z.shape[0], block))
        if X2 is not None:   # blocks never straddle X and X2
            starts = sorted(set(range(0, N, block)) | set(range(N, Z.shape[0], block)))
        spans = [slice(a, b) for a, b in zip(starts, starts[1:] + [Z.shape[0]])]
        from concurrent.futures import ThreadPoolExecutor

        def square(sp):
            with np.errstate(over="ignore", invalid="ignore"):
                st = initial_state(Z[sp], param, ntk, method)
                st.tape, st.total_inputs = Tape(), Z.shape[0]
                return self.fold(st)[0]

        pairs = [(i, j) for i in range(len(spans)) for j in range(len(spans))
                 if i != j and (j > i if X2 is None else spans[i].start < N <= spans[j].start)]

        def rectangle(ij):
            ri, cj = spans[ij[0]], spans[ij[1]]
            with np.errstate(over="ignore", invalid="ignore"):
                st = initial_state(Z[ri], param, ntk, method, Z[cj])
                st.tape, st.total_inputs = tape.replay(ri, cj), Z.shape[0]
                return self.fold(st)[0]

        # numpy releases the GIL in its array loops: tiles run in threads (one tile per worker
        # in memory at a time)
        with ThreadPoolExecutor(max_workers=_workers(len(spans))) as pool:
            diag = list(pool.map(square, spans))
            tape = Tape.stack([st.tape for st in diag])
            rect = list(pool.map(rectangle, pairs))
        peak = max(st.peak for st in diag + rect)
        sp_out = out.spatial
        perm = [1, 0] + [a for d in range(len(sp_out)) for a in (3 + 2 * d, 2 + 2 * d)]
        nngp = ntk_ = None
        off = N if X2 is not None else 0
        tiles = ([((i, i), st) for i, st in enumerate(diag)] if X2 is None else []) + list(zip(pairs, rect))
        for (i, j), st in tiles:
            ri, cj = spans[i], spans[j]
            K = _to_nt_layout(st.K, st.spatial)
            T = None if st.T is None else _to_nt_layout(st.T, st.spatial)
            if nngp is None:
                nngp = np.empty((N, M) + K.shape[2:])
                ntk_ = None if T is None else np.empty_like(nngp)
            r, c = slice(ri.start, ri.stop), slice(cj.start - off, cj.stop - off)
            nngp[r, c] = K
            if T is not None:
                ntk_[r, c] = T
            if X2 is None and i != j:   # the mirror tile: swap inputs and position pairs
                nngp[c, r] = K.transpose(perm)
                if T is not None:
                    ntk_[c, r] = T.transpose(perm)
        for nm, arr in (("NNGP", nngp), ("NTK", ntk_)):
            if arr is not None and not np.all(np.isfinite(arr)):
                raise DomainError(f"the {nm} overflows float64: the variances grow without bound "
                                  "through this network; use smaller variances or fewer layers")
        return NetworkKernel(nngp=nngp, ntk=ntk_, parametrization=param, output_spatial=out.spatial,
                             peak_bytes=int(peak))

    def propagate(self, X: Any, *, method: str = "auto") -> "Propagation":
        """Per-layer diagnostics of the flattened composition (docs/theory.md §A1.2-1.5 for any network).

        ``q[l, n]``: the mean squared output of layer l on input n (averaged over units and
        positions); ``correlation[l]``: the N x N correlation matrix of the inputs' outputs
        (position-averaged second moments, normalised); ``gradient[l, n]``: the gradient second
        moment at layer l's output (averaged over units and positions), normalised to 1 at the
        network's output, from the backward maps (gradient independence, docs/theory.md §A5.3).
        """
        X = _check_array("X", X)
        self.check(X)
        layers = self.flat()
        # every layer's N x N correlation matrix is kept
        check_memory(len(layers) * X.shape[0] ** 2 * 8, f"per-layer correlations of {X.shape[0]} inputs",
                     "propagate fewer inputs")
        st = initial_state(X, self.parametrization, False, method)
        names, Ks, backs, Ps = [], [], [], []
        for l in layers:
            st, b = l.fold(st)
            names.append(l.name)
            q = st.q().reshape(st.N, -1).mean(axis=1)
            K4 = st.K.reshape(st.N, st.P, st.N, st.P)
            Kbar = np.einsum("nsms->nm", K4) / st.P
            Ks.append((q, Kbar))
            backs.append(b)
            Ps.append(st.P)
        G = np.broadcast_to(np.eye(Ps[-1]), (st.N, Ps[-1], Ps[-1])).copy()
        grads = []
        for b in reversed(backs):
            grads.append(np.einsum("npp->n", G) / G.shape[1])
            G = b(G)
        grads = grads[::-1]
        q = np.array([k[0] for k in Ks])
        with np.errstate(divide="ignore", invalid="ignore"):
            corr = np.array([k[1] / np.sqrt(np.outer(k[0], k[0])) for k in Ks])
        return Propagation(layers=tuple(names), q=q, correlation=corr, gradient=np.array(grads))

    def gia_check(self) -> Any:
        """TP II's Simple GIA Check for this network (docs/theory.md §A5.3): see network.gia.gia_check."""
        from .gia import gia_check

        return gia_check(self)

    def sample(self, width: int, rng: Any = None, *, input_shape: tuple[int, ...] | None = None
               ) -> "FiniteNetwork":
        """A finite random network of this architecture (every hidden layer ``width`` channels,
        NTK parametrisation: raw parameters N(0, 1)); ``input_shape`` is (d,) or (s1, [s2,] C),
        inferred from the first forward call when omitted."""
        if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 1:
            raise DomainError(f"width must be a positive integer, got {width!r}")
        return FiniteNetwork(self, int(width), np.random.default_rng(rng), input_shape)


def _couples_batch(layer: Layer) -> bool:
    """Whether a layer (or one inside it) mixes the inputs of a batch (``couples_batch``)."""
    if getattr(layer, "couples_batch", False):
        return True
    kids = list(getattr(layer, "layers", ()))
    kids += [getattr(layer, k) for k in ("branch", "shortcut") if isinstance(getattr(layer, k, None), Layer)]
    return any(_couples_batch(k) for k in kids)


def _workers(n_tasks: int) -> int:
    import os

    return max(1, min(4, os.cpu_count() or 1, n_tasks))


class Tape:
    """Per-input variances and channel means after every layer, recorded while the diagonal
    blocks of a kernel are folded and read back by the off-diagonal tiles (Network.kernel)."""

    def __init__(self):
        self.entries: list[tuple[np.ndarray, np.ndarray | None]] = []
        self.pos = 0
        self.rows = self.cols = None
        #: per-layer objects built once from all inputs' entries and shared by every tile
        #: (e.g. an activation's tables over the whole range of variances), see :meth:`shared`
        self._shared: dict = {}
        self._lock = threading.Lock()

    def shared(self, key: Any, build: Callable[[np.ndarray], Any]) -> Any:
        """``build(q)`` for the entry about to be read (q: every input's variances at this
        layer), built by the first tile that asks and reused by the others (threads)."""
        with self._lock:
            k = (key, self.pos)
            if k not in self._shared:
                self._shared[k] = build(self.entries[self.pos - 1][0])
            return self._shared[k]

    def record(self, q: np.ndarray, mu: np.ndarray | None) -> None:
        self.entries.append((q, mu))

    def next(self) -> tuple[np.ndarray, np.ndarray | None]:
        e = self.entries[self.pos]
        self.pos += 1
        return e

    @staticmethod
    def stack(tapes: "list[Tape]") -> "Tape":
        """One tape for all inputs from the tapes of consecutive blocks of inputs."""
        out = Tape()
        for k in range(len(tapes[0].entries)):
            qs = [t.entries[k][0] for t in tapes]
            mus = [t.entries[k][1] for t in tapes]
            mu = None
            if any(m is not None for m in mus):
                mu = np.concatenate([np.zeros_like(q) if m is None else m for q, m in zip(qs, mus)])
            out.entries.append((np.concatenate(qs), mu))
        return out

    def replay(self, rows: slice, cols: slice) -> "Tape":
        t = Tape()
        t.entries, t.rows, t.cols = self.entries, rows, cols
        t._shared, t._lock = self._shared, self._lock
        return t


def tileable(layer: Layer) -> bool:
    """Whether every layer in a composition folds rectangular tiles (``tileable = True``)."""
    kids = list(getattr(layer, "layers", ()))
    kids += [getattr(layer, k) for k in ("branch", "shortcut") if isinstance(getattr(layer, k, None), Layer)]
    if kids or isinstance(layer, Network):
        return all(tileable(k) for k in kids)
    return bool(getattr(layer, "tileable", False))


def _check_array(name: str, X: Any) -> np.ndarray:
    try:
        A = np.asarray(X)
    except Exception as exc:  # noqa: BLE001 - any conversion failure is bad input
        raise DomainError(f"{name} is not a numeric array: {exc}") from None
    if A.dtype.kind == "c":
        raise DomainError(f"{name} is complex; inputs must be real")
    if A.dtype.kind not in "biuf":
        raise DomainError(f"{name} is not a numeric array (dtype {A.dtype})")
    A = A.astype(float)
    if A.ndim < 2:
        raise DomainError(f"{name} must have shape (N, d) or (N, s1, [s2,] channels), got shape {A.shape}")
    if A.shape[0] == 0 or A.shape[-1] == 0:
        raise DomainError(f"{name} is empty (shape {A.shape})")
    if not np.all(np.isfinite(A)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(A))[0])
        raise DomainError(f"{name} contains NaN or inf (first at index {bad})")
    return A


def initial_state(X: np.ndarray, param: str, ntk: bool, method: str,
                  X2: np.ndarray | None = None) -> State:
    """The input 'kernel' x.x'/d (per pair of positions, channel-averaged) and channel means;
    with X2, the rectangular tile of rows X and columns X2."""
    N, C = X.shape[0], X.shape[-1]
    spatial = tuple(X.shape[1:-1])
    F = X.reshape(-1, C)
    if X2 is not None:
        F2 = X2.reshape(-1, C)
        K = (F @ F2.T) / C
        K = K.reshape((N,) + spatial + (X2.shape[0],) + spatial)
        st = State(K=K, T=np.zeros_like(K) if ntk else None, mu=None, spatial=spatial,
                   finite=True, param=param, method=method, tile=True,
                   qr=np.einsum("n...c,n...c->n...", X, X) / C,
                   qc=np.einsum("n...c,n...c->n...", X2, X2) / C,
                   mur=X.mean(axis=-1), muc=X2.mean(axis=-1))
        return st.evolve()
    K = F @ F.T
    K /= C
    from .layers import mirror_upper
    mirror_upper(K, max(1, (1 << 21) // K.shape[0]))   # exactly symmetric (gemm need not be)
    K = K.reshape((N,) + spatial + (N,) + spatial)
    if not spatial:  # the diagonal exactly as the 1-D recursions form it (x.x/d)
        K[np.diag_indices(N)] = np.einsum("ij,ij->i", X, X) / C
    mu = X.mean(axis=-1)
    st = State(K=K, T=np.zeros_like(K) if ntk else None, mu=mu, spatial=spatial, finite=True,
               param=param, method=method)
    return st.evolve()


def _to_nt_layout(A: np.ndarray, spatial: tuple[int, ...]) -> np.ndarray:
    """(N, s1..sD, M, s1'..sD') -> (N, M, s1, s1', ..., sD, sD')."""
    D = len(spatial)
    if D == 0:
        return A
    order = [0, D + 1] + [a for i in range(D) for a in (1 + i, D + 2 + i)]
    return np.ascontiguousarray(A.transpose(order))


# ------------------------------------------------------------------------------------------
# results
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NetworkKernel(Record):
    """NNGP and NTK of a network's output: shape (N, M), or (N, M, s1, s1', s2, s2', ...) for
    outputs with positions.  ``peak_bytes``: the largest kernel state held during the fold."""

    nngp: np.ndarray = field(repr=False)
    ntk: np.ndarray | None = field(repr=False)
    parametrization: str
    output_spatial: tuple[int, ...]
    peak_bytes: int
    layers: tuple[str, ...] | None = None
    layer_nngp: list | None = field(default=None, repr=False)
    layer_ntk: list | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = {"shape": list(self.nngp.shape), "parametrization": self.parametrization,
             "output_spatial": list(self.output_spatial), "peak_bytes": self.peak_bytes,
             "layers": None if self.layers is None else list(self.layers)}
        for nm in ("nngp", "ntk"):
            a = getattr(self, nm)
            d[nm + "_diag"] = None if a is None or a.ndim != 2 or a.shape[0] != a.shape[1] else \
                [float(v) for v in np.diag(a)]
        return d


@dataclass(frozen=True)
class Propagation(Record):
    """Per-layer diagnostics (one row per layer of the flattened composition)."""

    layers: tuple[str, ...]
    q: np.ndarray
    correlation: np.ndarray
    gradient: np.ndarray


# ------------------------------------------------------------------------------------------
# the finite network
# ------------------------------------------------------------------------------------------
class FiniteNetwork:
    """A finite random instance of a Network (numpy): ``forward``, ``empirical_nngp``,
    ``empirical_ntk``.  Parameters are raw N(0, 1) draws scaled as in the NTK parametrisation,
    so the forward function has exactly the variances of the spec."""

    def __init__(self, net: Network, width: int, rng: np.random.Generator,
                 input_shape: tuple[int, ...] | None):
        self.net, self.width, self.rng = net, width, rng
        self.params: dict | None = None
        if input_shape is not None:
            self._init(tuple(input_shape))

    def _init(self, shape: tuple[int, ...]) -> None:
        self.input_shape = shape
        self.params, self.output_shape = self.net.init(self.rng, shape, self.width)

    def _prepare(self, X: Any) -> np.ndarray:
        X = _check_array("X", X)
        if self.params is None:
            self.net.check(X)
            self._init(tuple(X.shape[1:]))
        elif tuple(X.shape[1:]) != self.input_shape:
            raise DomainError(f"X has per-input shape {X.shape[1:]}, this network was drawn for {self.input_shape}")
        return X

    def forward(self, X: Any) -> np.ndarray:
        X = self._prepare(X)
        return self.net.apply(self.params, X)[0]

    def empirical_nngp(self, X: Any) -> np.ndarray:
        """(1/C) sum_c f_c(x) f_c(x'), per pair of output positions (NT layout)."""
        Y = self.forward(X)
        N, C = Y.shape[0], Y.shape[-1]
        F = Y.reshape(N, -1, C)
        K = np.einsum("nsc,mtc->nsmt", F, F) / C
        sp = tuple(Y.shape[1:-1])
        return _to_nt_layout(K.reshape((N,) + sp + (N,) + sp), sp)

    def empirical_ntk(self, X: Any, channels: int = 1) -> np.ndarray:
        """sum over parameters of df_c(x)/dtheta df_c(x')/dtheta, averaged over the first
        ``channels`` output channels, per pair of output positions (NT layout)."""
        X = self._prepare(X)
        Y, cache = self.net.apply(self.params, X)
        N, C = Y.shape[0], Y.shape[-1]
        sp = tuple(Y.shape[1:-1])
        P = int(np.prod(sp)) if sp else 1
        channels = min(int(channels), C)
        out = np.zeros((N, P, N, P))
        if _couples_batch(self.net):
            # a layer mixes the batch (batch_norm): seed one output at a time, and sum each
            # layer's terms over all pairs of batch entries it saw
            for c in range(channels):
                seeds = {}
                for n in range(N):
                    for s in range(P):
                        g = np.zeros((N, P, C))
                        g[n, s, c] = 1.0
                        seeds[n, s] = g.reshape(Y.shape)
                keys = list(seeds)
                for a, ka in enumerate(keys):
                    for kb in keys[a:]:
                        v = float(np.sum(self.net.ntk_terms(self.params, cache, seeds[ka], seeds[kb])))
                        out[ka[0], ka[1], kb[0], kb[1]] += v
                        if kb != ka:
                            out[kb[0], kb[1], ka[0], ka[1]] += v
            out /= channels
            return _to_nt_layout(out.reshape((N,) + sp + (N,) + sp), sp)
        for c in range(channels):
            seeds = []
            for s in range(P):
                g = np.zeros((N, P, C))
                g[:, s, c] = 1.0
                seeds.append(g.reshape(Y.shape))
            for s in range(P):
                for t in range(s, P):
                    v = self.net.ntk_terms(self.params, cache, seeds[s], seeds[t])
                    out[:, s, :, t] += v
                    if t != s:
                        out[:, t, :, s] += v.T
        out /= channels
        return _to_nt_layout(out.reshape((N,) + sp + (N,) + sp), sp)


__all__ = ["Layer", "Network", "Shape", "Param", "State", "NetworkKernel", "Propagation",
           "FiniteNetwork", "Record", "PARAMETRIZATIONS", "initial_state"]

