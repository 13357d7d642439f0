"""The layers of the network algebra (docs/architecture.md): dense, conv, activation,
avg_pool, global_avg_pool, flatten, layer_norm, identity, and the residual combinator.

Each class holds, in one place, the layer's static shape rule, its kernel map (NNGP, channel
means, NTK in both parametrisations), its backward map (gradient covariances), its finite-width
numpy version and its parameters.  Spatial geometry (padding, strides, windows) is defined once,
as small per-dimension matrices, and read by the kernel map and the numpy version alike.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Sequence

import numpy as np

from .. import gaussian
from ..activations import Activation, get_activation
from ..errors import DomainError
from .core import Backward, Layer, Network, Param, Shape, State, _same_backward

METHODS = ("auto", "direct", "table", "hermite")
#: entries per row block of an activation's map (bounds the temporaries to ~100 MB)
_BLOCK_ENTRIES = 1 << 21
PADDINGS = ("same", "valid", "circular")
#: modules that own a non-Gaussian law (Shape.law): they say which activations may follow
_LAWS = {"batch_norm": "batchnorm"}


# ------------------------------------------------------------------------------------------
# validation helpers (Python API; the spec parser prefixes the path)
# ------------------------------------------------------------------------------------------
def _variance(name: str, v: Any, optional: bool = False) -> float | None:
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise DomainError(f"{name}: expected a number (a variance), got {v!r}")
    v = float(v)
    if not math.isfinite(v) or v < 0:
        raise DomainError(f"{name}: a variance must be finite and >= 0, got {v!r}")
    return v


def _ints(name: str, v: Any, lo: int = 1) -> tuple[int, ...]:
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        v = [v]
    if not isinstance(v, (list, tuple)) or not v or any(
            isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < lo for x in v):
        raise DomainError(f"{name}: expected a list of integers >= {lo}, got {v!r}")
    return tuple(int(x) for x in v)


def _padding(v: Any) -> str:
    if not isinstance(v, str) or v.lower() not in PADDINGS:
        raise DomainError(f"padding: expected one of {', '.join(PADDINGS)}, got {v!r}")
    return v.lower()


# ------------------------------------------------------------------------------------------
# spatial geometry: one definition, as matrices per dimension
# ------------------------------------------------------------------------------------------
def geometry(n: int, k: int, stride: int, padding: str) -> tuple[int, int, int]:
    """(pad_lo, pad_hi, n_out) of a window k with stride over n positions (TF/XLA convention:
    "same" and "circular" give ceil(n / stride) outputs, the extra padding at the end)."""
    if padding == "valid":
        return 0, 0, (n - k) // stride + 1
    n_out = -(-n // stride)
    total = max((n_out - 1) * stride + k - n, 0)
    return total // 2, total - total // 2, n_out


@lru_cache(maxsize=256)
def pad_matrix(n: int, lo: int, hi: int, padding: str) -> np.ndarray:
    """(n + lo + hi) x n: zero padding or circular wrap of one spatial axis, as a matrix."""
    M = np.zeros((n + lo + hi, n))
    for j in range(n + lo + hi):
        i = j - lo
        if padding == "circular":
            M[j, i % n] = 1.0
        elif 0 <= i < n:
            M[j, i] = 1.0
    M.setflags(write=False)
    return M


@lru_cache(maxsize=256)
def pool_matrix(n: int, w: int, stride: int, padding: str) -> np.ndarray:
    """n_out x n: the window average of avg_pool (padded zeros count in the divisor w)."""
    lo, hi, n_out = geometry(n, w, stride, padding)
    Pm = pad_matrix(n, lo, hi, padding)
    A = np.zeros((n_out, Pm.shape[0]))
    for o in range(n_out):
        A[o, o * stride:o * stride + w] = 1.0 / w
    M = A @ Pm
    M.setflags(write=False)
    return M


def mirror_upper(A: np.ndarray, step: int) -> None:
    """Copy the upper triangle of the square matrix A onto its lower one, in row bands."""
    n = A.shape[0]
    for r0 in range(0, n, step):
        r1 = min(n, r0 + step)
        sq = A[r0:r1, r0:r1]
        upper = np.triu(sq)
        sq[...] = upper + np.triu(upper, 1).T
        A[r1:, r0:r1] = A[r0:r1, r1:].T


def symmetrised(st_or_n: Any, A: np.ndarray | None) -> np.ndarray | None:
    """A pair-layout kernel made exactly symmetric (its upper triangle mirrored): the linear
    maps' sums need not be evaluated in the same order for (x, x') and (x', x)."""
    if A is None or getattr(st_or_n, "tile", False):
        return A
    n = int(round(math.sqrt(A.size)))
    mirror_upper(A.reshape(n, n), max(1, _BLOCK_ENTRIES // n))
    return A


def along(A: np.ndarray, M: np.ndarray, axis: int) -> np.ndarray:
    """Apply the matrix M to one axis of A (contracting M's columns with that axis)."""
    return np.moveaxis(np.tensordot(M, A, axes=(1, axis)), 0, axis)


def _shift_sum_zero(A: np.ndarray, a: int, b: int, k: int, stride: int, n_out: int, lo: int
                    ) -> np.ndarray:
    """out[s, s'] = (1/k) sum_d A[s stride + d - lo, s' stride + d - lo] on axes (a, b), A read
    as zero outside its range: a conv's kernel map along one dimension (independent weights per
    filter offset, so only equal offsets pair).  Zero padding is never formed: each offset adds
    the strided block of A that lands inside the input.  The sum runs in the same order for
    (x, x') and (x', x)."""
    n = A.shape[a]
    shape = list(A.shape)
    shape[a] = shape[b] = n_out
    out = np.zeros(shape)
    for d in range(k):
        s0 = max(0, -((d - lo) // stride))                 # ceil((lo - d) / stride)
        s1 = min(n_out - 1, (n - 1 + lo - d) // stride)
        if s0 > s1:
            continue
        src = slice(s0 * stride + d - lo, s1 * stride + d - lo + 1, stride)
        dst = slice(s0, s1 + 1)
        i_out = [slice(None)] * A.ndim
        i_in = [slice(None)] * A.ndim
        i_out[a] = i_out[b] = dst
        i_in[a] = i_in[b] = src
        out[tuple(i_out)] += A[tuple(i_in)]
    out *= 1.0 / k
    return out


def _shift_sum_T(G: np.ndarray, a: int, b: int, k: int, stride: int, n_pad: int) -> np.ndarray:
    """The adjoint of _shift_sum_zero on the padded axes (the backward map of a conv along one
    dimension)."""
    shape = list(G.shape)
    shape[a] = shape[b] = n_pad
    out = np.zeros(shape)
    n_out = G.shape[a]
    for d in range(k):
        idx = [slice(None)] * G.ndim
        idx[a] = idx[b] = slice(d, d + stride * (n_out - 1) + 1, stride)
        out[tuple(idx)] += G / k
    return out


def _pairs(st_like_ndim_spatial: int, batch_pairs: bool) -> list[tuple[int, int]]:
    """Axis pairs (row axis, column axis) of each spatial dimension: in the pair layout
    (N, *S, N, *S) when batch_pairs, else in a per-input block (N, *S, *S)."""
    D = st_like_ndim_spatial
    if batch_pairs:
        return [(1 + i, D + 2 + i) for i in range(D)]
    return [(1 + i, 1 + D + i) for i in range(D)]


def _blocks_as(G: np.ndarray, spatial: tuple[int, ...]) -> np.ndarray:
    """(N, P, P) -> (N, *S, *S)."""
    return G.reshape((G.shape[0],) + spatial + spatial)


def _blocks_flat(G: np.ndarray) -> np.ndarray:
    N = G.shape[0]
    P = int(round(math.sqrt(G.size // N)))
    return G.reshape(N, P, P)


# ------------------------------------------------------------------------------------------
# layers with weights: dense and conv
# ------------------------------------------------------------------------------------------
class _Weighted(Layer):
    """Shared by dense and conv: y = sqrt(sigma_w2 / fan_in) W * x + sqrt(sigma_b2) b."""

    filter: tuple[int, ...] = ()

    def __init__(self, sigma_w2: Any, sigma_b2: Any = None):
        self.sigma_w2 = _variance("sigma_w2", sigma_w2)
        self.sigma_b2 = _variance("sigma_b2", sigma_b2, optional=True)

    @property
    def affine(self) -> tuple[float, float]:
        return self.sigma_w2, self.sigma_b2 or 0.0

    def _new_T(self, st: State, AK: np.ndarray, AT: np.ndarray | None, Kout: np.ndarray):
        """The NTK after this layer, from A(K) and A(T) (A the layer's linear kernel operator):
        NTK parametrisation sigma_w2 (A(T) + A(K)) + sigma_b2 (docs/theory.md §A4.1); standard: the
        limit Theta_SP / n, where a weight whose fan-in is the data's and every bias drop out
        (docs/theory.md §A4.2)."""
        if AT is None:
            return None
        if st.param == "ntk":
            T = AT * self.sigma_w2
            T += Kout
            return T
        T = AT * self.sigma_w2
        if not st.finite:
            T += AK
        return T

    def params(self, shape: Shape) -> list[Param]:
        role = "input" if shape.channels is not None else "hidden"
        k = int(np.prod(self.filter)) if self.filter else 1
        fan = None if shape.channels is None else shape.channels * k
        out = [Param("weight", "weight", role, fan, self.sigma_w2, self.filter + (shape.channels, None))]
        if self.sigma_b2 is not None:
            out.append(Param("bias", "bias", role, None, self.sigma_b2, (None,)))
        return out

    def _spec_variances(self) -> dict:
        d = {"sigma_w2": self.sigma_w2}
        if self.sigma_b2 is not None:
            d["sigma_b2"] = self.sigma_b2
        return d

    # -- finite width (channels last; per-position patches) --
    def init(self, rng, shape, width):
        C = shape[-1]
        k = int(np.prod(self.filter)) if self.filter else 1
        p = {"W": rng.standard_normal((k * C, width)), "a": math.sqrt(self.sigma_w2 / (k * C))}
        if self.sigma_b2 is not None:
            p["b"] = rng.standard_normal(width)
        return p, self._out_spatial(shape[:-1]) + (width,)

    def _out_spatial(self, spatial: tuple[int, ...]) -> tuple[int, ...]:
        return spatial

    def _patches(self, x: np.ndarray) -> np.ndarray:
        return x

    def apply(self, p, x):
        pt = self._patches(x)
        y = (pt @ p["W"]) * p["a"]
        if "b" in p:
            y += math.sqrt(self.sigma_b2) * p["b"]
        return y, pt

    def ntk_terms(self, p, pt, d1, d2):
        N = d1.shape[0]
        F = pt.reshape(N, -1, pt.shape[-1])
        D1, D2 = d1.reshape(N, -1, d1.shape[-1]), d2.reshape(N, -1, d2.shape[-1])
        A = np.einsum("nsk,mtk->nsmt", F, F)
        B = np.einsum("nsc,mtc->nsmt", D1, D2)
        out = p["a"] ** 2 * np.einsum("nsmt,nsmt->nm", A, B)
        if "b" in p:
            out += self.sigma_b2 * (D1.sum(axis=1) @ D2.sum(axis=1).T)
        return out


class Dense(_Weighted):
    """Fully connected layer on the channel axis (per position): docs/theory.md §A4.1."""

    name = "dense"
    spec_key = "dense"

    def out_shape(self, shape: Shape, where: str) -> Shape:
        return Shape(shape.spatial, None, gaussian=True, fresh=True)

    def fold(self, st: State) -> tuple[State, Backward]:
        sw, sb = self.affine
        K = st.K * sw
        if sb:
            K += sb
        T = self._new_T(st, st.K, st.T, K)
        return st.evolve(K=K, T=T, mu=None, finite=False), lambda G: G * sw

    def vjp(self, p, pt, gy):
        return (gy @ p["W"].T) * p["a"]

    def to_spec(self) -> dict:
        return {"layer": "dense", **self._spec_variances()}


class Conv(_Weighted):
    """Convolution over 1-D or 2-D (any D) positions, channels last, filter / strides /
    padding same, valid or circular (docs/theory.md §A4.4; neural-tangents' Conv)."""

    name = "conv"
    spec_key = "conv"

    def __init__(self, filter: Sequence[int], strides: Sequence[int] | None = None,
                 padding: str = "same", sigma_w2: Any = 1.0, sigma_b2: Any = None):
        super().__init__(sigma_w2, sigma_b2)
        self.filter = _ints("filter", filter)
        self.strides = (1,) * len(self.filter) if strides is None else _ints("strides", strides)
        if len(self.strides) != len(self.filter):
            raise DomainError(f"strides: expected {len(self.filter)} integers (one per filter "
                              f"dimension), got {list(self.strides)}")
        self.padding = _padding(padding)

    def _geom(self, spatial):
        return [geometry(n, k, s, self.padding) for n, k, s in zip(spatial, self.filter, self.strides)]

    def out_shape(self, shape: Shape, where: str) -> Shape:
        D = len(shape.spatial)
        if D == 0:
            raise DomainError(f"{where}: conv needs inputs with positions, shape (N, s1, [s2,] "
                              "channels); this layer's input has none (use dense)")
        if len(self.filter) != D:
            raise DomainError(f"{where}.filter: expected {D} integers for {D}-D input, got {list(self.filter)}")
        for i, (n, k) in enumerate(zip(shape.spatial, self.filter)):
            if self.padding == "valid" and k > n:
                raise DomainError(f"{where}.filter: filter {k} is larger than the input's "
                                  f"{n} positions along dimension {i + 1} with padding 'valid'")
        return Shape(tuple(g[2] for g in self._geom(shape.spatial)), None, gaussian=True, fresh=True)

    def _op(self, A: np.ndarray, pairs, spatial) -> np.ndarray:
        """The kernel map's linear part along every spatial dimension (pad, then the diagonal
        shift-sum); np.pad is pad_matrix applied in one copy.  The sums run in the same order
        for (x, x') and (x', x), so a symmetric kernel stays exactly symmetric."""
        for (a, b), (lo, hi, n_out), k, s in zip(pairs, self._geom(spatial), self.filter, self.strides):
            if self.padding != "circular":
                A = _shift_sum_zero(A, a, b, k, s, n_out, lo)
                continue
            if lo or hi:   # circular: wrap first, then every offset lands inside
                widths = [(0, 0)] * A.ndim
                widths[a] = widths[b] = (lo, hi)
                A = np.pad(A, widths, mode="wrap")
            A = _shift_sum_zero(A, a, b, k, s, n_out, 0)
        return A

    def fold(self, st: State) -> tuple[State, Backward]:
        sw, sb = self.affine
        pairs = _pairs(len(st.spatial), True)
        AK = self._op(st.K, pairs, st.spatial)
        AT = None if st.T is None else self._op(st.T, pairs, st.spatial)
        # in place on the fresh arrays A(K), A(T): the same arithmetic as _new_T, one array less
        T = AT
        if T is not None:
            T *= sw
            if st.param == "standard" and not st.finite:
                T += AK
        K = AK
        K *= sw
        if sb:
            K += sb
        if T is not None and st.param == "ntk":
            T += K
        spatial_in = st.spatial
        geoms = self._geom(spatial_in)
        out_spatial = tuple(g[2] for g in geoms)

        def backward(G: np.ndarray) -> np.ndarray:
            A = _blocks_as(G, out_spatial)
            pairs_b = _pairs(len(spatial_in), False)
            for (a, b), (lo, hi, _), n, k, s in reversed(list(zip(pairs_b, geoms, spatial_in,
                                                                     self.filter, self.strides))):
                A = _shift_sum_T(A, a, b, k, s, n + lo + hi)
                if lo or hi:
                    Pm = pad_matrix(n, lo, hi, self.padding)
                    A = along(along(A, Pm.T, a), Pm.T, b)
            return _blocks_flat(A) * sw

        return st.evolve(K=K, T=T, mu=None, finite=False, spatial=out_spatial), backward

    def _out_spatial(self, spatial):
        return tuple(g[2] for g in self._geom(spatial))

    def _patches(self, x):
        spatial = x.shape[1:-1]
        for i, (n, (lo, hi, _)) in enumerate(zip(spatial, self._geom(spatial))):
            if lo or hi:
                x = along(x, pad_matrix(n, lo, hi, self.padding), 1 + i)
        D = len(self.filter)
        win = np.lib.stride_tricks.sliding_window_view(x, self.filter, axis=tuple(range(1, 1 + D)))
        idx = (slice(None),) + tuple(slice(None, None, s) for s in self.strides)
        win = win[idx]                               # (N, *S_out, C, *filter)
        C = x.shape[-1]
        win = np.moveaxis(win, 1 + D, -1)            # (N, *S_out, *filter, C)
        return win.reshape(win.shape[:1 + D] + (int(np.prod(self.filter)) * C,))

    def apply(self, p, x):
        y, pt = super().apply(p, x)
        return y, (pt, x.shape)

    def ntk_terms(self, p, cache, d1, d2):
        return super().ntk_terms(p, cache[0], d1, d2)

    def vjp(self, p, cache, gy):
        pt, xshape = cache
        D = len(self.filter)
        C = xshape[-1]
        gp = (gy @ p["W"].T) * p["a"]                # (N, *S_out, k*C)
        gp = gp.reshape(gy.shape[:1 + D] + self.filter + (C,))
        spatial = xshape[1:-1]
        geoms = self._geom(spatial)
        padded = tuple(n + lo + hi for n, (lo, hi, _) in zip(spatial, geoms))
        gx = np.zeros((xshape[0],) + padded + (C,))
        for off in np.ndindex(*self.filter):
            idx = (slice(None),) + tuple(slice(o, o + s * (m - 1) + 1, s) for o, s, m in
                                         zip(off, self.strides, gy.shape[1:1 + D]))
            gx[idx] += gp[(slice(None),) + (slice(None),) * D + off]
        for i, (n, (lo, hi, _)) in enumerate(zip(spatial, geoms)):
            if lo or hi:
                gx = along(gx, pad_matrix(n, lo, hi, self.padding).T, 1 + i)
        return gx

    def to_spec(self) -> dict:
        return {"layer": "conv", "filter": list(self.filter), "strides": list(self.strides),
                "padding": self.padding, **self._spec_variances()}


# ------------------------------------------------------------------------------------------
# elementwise nonlinearity
# ------------------------------------------------------------------------------------------
class ActivationLayer(Layer):
    """phi applied elementwise: K -> E[phi(u) phi(v)], T -> T E[phi'(u) phi'(v)] (docs/theory.md §A4.1),
    channel means E[phi(u)]; closed forms where the registry has them, tables otherwise
    (meanfield.kernels._layers.LayerMaps, built on gaussian.py)."""

    spec_key = "activation"

    def __init__(self, fn: Any):
        self.act: Activation = get_activation(fn)
        self.spec_fn = fn if isinstance(fn, str) else self.act.name
        self.name = self.act.name

    def out_shape(self, shape: Shape, where: str) -> Shape:
        if shape.law is not None:   # e.g. the output of batch_norm: that layer's module decides
            from importlib import import_module
            import_module(f"{__package__}.{_LAWS[shape.law]}").check_activation(self, where)
            return Shape(shape.spatial, shape.channels, gaussian=False, fresh=shape.fresh)
        if not shape.gaussian:
            raise DomainError(
                f"{where}: activation {self.act.name!r} needs Gaussian pre-activations (the output "
                "of a dense or conv layer, possibly through pooling, flatten or layer_norm); put a "
                "dense or conv layer before it")
        return Shape(shape.spatial, shape.channels, gaussian=False, fresh=shape.fresh)

    def needs_derivative(self) -> list[str]:
        return [self.act.name] if self.act.d1 is None else []

    def _maps(self, st: State, affine=(1.0, 0.0, 1.0)):
        """(a E + b, a_d Ed) on the whole pair-layout kernel, the upper triangle computed in row
        blocks and mirrored (as meanfield.kernels does), diagonal entries from the 1-D moments."""
        from ..kernels._layers import LayerMaps, diag_moments

        M = st.matrix(st.K)
        if st.tile:
            return self._maps_tile(st, M, affine)
        q = np.diagonal(M).copy()
        n = q.size
        if self.act.d1 is None:
            return self._nngp_only(st, M, q, affine)
        maps = LayerMaps(self.act, q, q, st.method, max(st.total_entries, n * (n + 1) // 2))
        v, vd = diag_moments(self.act, q)
        a, b, ad = affine
        dv = (a * v + b if (a, b) != (1.0, 0.0) else v, ad * vd if ad != 1.0 else vd)
        E, Ed = np.empty_like(M), np.empty_like(M)
        step = max(1, _BLOCK_ENTRIES // max(n, 1))
        for r0 in range(0, n, step):
            r1 = min(n, r0 + step)
            rows, cols = slice(r0, r1), slice(r0, n)
            loc = np.arange(r1 - r0)
            e, ed = maps(M[rows, cols], rows, cols, (loc, loc), (dv[0][rows], dv[1][rows]), affine)
            E[rows, cols] = e
            Ed[rows, cols] = ed
        mirror_upper(E, step)
        mirror_upper(Ed, step)
        shape = st.K.shape
        return E.reshape(shape), Ed.reshape(shape), q

    def _maps_tile(self, st: State, M: np.ndarray, affine):
        """The same maps on a rectangular tile (rows and columns are different inputs, so no
        entry pairs an input with itself), with the rows' and columns' variances from the tape."""
        from ..kernels._layers import LayerMaps, correlation

        qr, qc = st.q_rows().reshape(-1), st.q_cols().reshape(-1)
        a, b, ad = affine
        if self.act.d1 is None:
            c = correlation(M, qr, qc)
            E = np.asarray(gaussian.w_phi(self.act, qr[:, None], qc[None, :], c), float)
            E = E * a + b if (a, b) != (1.0, 0.0) else E
            return E.reshape(st.K.shape), None, qr
        tape, P = st.tape, st.P
        if tape is not None and tape.pos > 0:
            # one LayerMaps (one choice of method, one set of tables over every input's
            # variances) for all tiles of this layer, rather than one per tile
            def build(q_all):
                q_all = q_all.reshape(-1)
                return LayerMaps(self.act, q_all, q_all, st.method, max(st.total_entries, q_all.size))
            maps = tape.shared(id(self), build)
            r_off, c_off = tape.rows.start * P, tape.cols.start * P
        else:
            maps = LayerMaps(self.act, qr, qc, st.method, max(st.total_entries, qr.size * qc.size))
            r_off = c_off = 0
        E, Ed = np.empty_like(M), np.empty_like(M)
        step = max(1, _BLOCK_ENTRIES // max(qc.size, 1))
        cols = slice(c_off, c_off + qc.size)
        for r0 in range(0, qr.size, step):
            r1 = min(qr.size, r0 + step)
            E[r0:r1], Ed[r0:r1] = maps(M[r0:r1], slice(r_off + r0, r_off + r1), cols, None, None, affine)
        return E.reshape(st.K.shape), Ed.reshape(st.K.shape), qr

    def _nngp_only(self, st: State, M: np.ndarray, q: np.ndarray, affine):
        """a E + b for an activation without a derivative (no NTK, no backward map):
        closed forms or the 2-D quadrature of gaussian.w_phi, entry by entry."""
        from ..kernels._layers import correlation

        a, b, _ = affine
        c = correlation(M, q, q)
        E = np.asarray(gaussian.w_phi(self.act, q[:, None], q[None, :], c), float)
        np.fill_diagonal(E, gaussian.v_phi(self.act, q))
        E = E * a + b if (a, b) != (1.0, 0.0) else E
        mirror_upper(E, max(1, _BLOCK_ENTRIES // max(q.size, 1)))
        return E.reshape(st.K.shape), None, q

    def _mean(self, st: State, q: np.ndarray) -> np.ndarray | None:
        if self.act.odd or st.tile:   # a tile reads its means from the tape
            return None
        return gaussian.m_phi(self.act, q).reshape((st.N,) + st.spatial)

    def fold(self, st: State) -> tuple[State, Backward]:
        law = getattr(st, "law", None)   # set by a layer whose output is not Gaussian (batch_norm)
        if law is not None:
            return law.activation_fold(self, st)
        E, Ed, q = self._maps(st)
        if Ed is None:
            return st.evolve(K=E, T=None, mu=self._mean(st, q)), self._no_backward
        blocks = None if st.tile else st.blocks(Ed)
        T = None if st.T is None else np.multiply(st.T, Ed, out=Ed)   # Ed's buffer becomes T
        return st.evolve(K=E, T=T, mu=self._mean(st, q)), lambda G: G * blocks

    def _no_backward(self, G):
        raise DomainError(f"activation {self.act.name!r} has no derivative, so gradients through "
                          "it are undefined")

    def fold_with(self, st: State, dense: "Dense") -> tuple[State, Backward]:
        """This activation and the dense layer after it in one pass over the kernel (the affine
        map folded into the Gaussian tables), exactly as meanfield.kernels' MLP recursion."""
        if getattr(st, "law", None) is not None:
            st1, b1 = self.fold(st)
            st2, b2 = dense.fold(st1)
            return st2, lambda G: b1(b2(G))
        sw, sb = dense.affine
        ntk = st.param == "ntk"
        S, Sdot, q = self._maps(st, (sw, sb, sw) if ntk else (1.0, 0.0, sw))
        if Sdot is None:   # no derivative: the NNGP only
            if not ntk:
                S = S * sw + sb if sb else S * sw
            return st.evolve(K=S, T=None, mu=None, finite=False), self._no_backward
        blocks = None if st.tile else st.blocks(Sdot)
        T = None
        if st.T is not None:   # Sdot's buffer becomes T
            T = np.multiply(st.T, Sdot, out=Sdot)
            T += S             # ntk: S = Sigma^{l+1}; standard: S = E[phi phi] (docs/theory.md §A4.2)
        if not ntk:
            S *= sw
            if sb:
                S += sb
        return st.evolve(K=S, T=T, mu=None, finite=False), lambda G: G * blocks

    def apply(self, p, x):
        return self.act.fn(x), x

    def vjp(self, p, x, gy):
        if self.act.d1 is None:
            raise DomainError(f"activation {self.act.name!r} has no derivative")
        return gy * self.act.d1(x)

    def to_spec(self) -> dict:
        return {"layer": "activation", "fn": self.spec_fn}


# ------------------------------------------------------------------------------------------
# linear layers without weights
# ------------------------------------------------------------------------------------------
class AvgPool(Layer):
    """Window average over positions (padded zeros count in the divisor)."""

    name = "avg_pool"
    spec_key = "avg_pool"

    def __init__(self, window: Sequence[int], strides: Sequence[int] | None = None,
                 padding: str = "valid"):
        self.window = _ints("window", window)
        self.strides = self.window if strides is None else _ints("strides", strides)
        if len(self.strides) != len(self.window):
            raise DomainError(f"strides: expected {len(self.window)} integers, got {list(self.strides)}")
        self.padding = _padding(padding)

    def _mats(self, spatial):
        return [pool_matrix(n, w, s, self.padding) for n, w, s in zip(spatial, self.window, self.strides)]

    def out_shape(self, shape: Shape, where: str) -> Shape:
        D = len(shape.spatial)
        if len(self.window) != D:
            raise DomainError(f"{where}.window: expected {D} integers for {D}-D input, got {list(self.window)}")
        for i, (n, w) in enumerate(zip(shape.spatial, self.window)):
            if w > n and self.padding == "valid":
                raise DomainError(f"{where}.window: window {w} is larger than the input's {n} "
                                  f"positions along dimension {i + 1}")
        sp = tuple(m.shape[0] for m in self._mats(shape.spatial))
        return Shape(sp, shape.channels, shape.gaussian, shape.fresh)

    def fold(self, st: State) -> tuple[State, Backward]:
        mats = self._mats(st.spatial)

        def op(A, pairs):
            for (a, b), M in zip(pairs, mats):
                A = along(along(A, M, a), M, b)
            return A

        pairs = _pairs(len(st.spatial), True)
        K = op(st.K, pairs)
        T = None if st.T is None else op(st.T, pairs)
        mu = st.mu
        if mu is not None:
            for i, M in enumerate(mats):
                mu = along(mu, M, 1 + i)
        spatial_out = tuple(M.shape[0] for M in mats)

        def backward(G):
            A = _blocks_as(G, spatial_out)
            for (a, b), M in zip(_pairs(len(spatial_out), False), mats):
                A = along(along(A, M.T, a), M.T, b)
            return _blocks_flat(A)

        return st.evolve(K=symmetrised(st, K), T=symmetrised(st, T), mu=mu, spatial=spatial_out), backward

    def init(self, rng, shape, width):
        return {}, tuple(M.shape[0] for M in self._mats(shape[:-1])) + shape[-1:]

    def apply(self, p, x):
        shape = x.shape
        for i, M in enumerate(self._mats(shape[1:-1])):
            x = along(x, M, 1 + i)
        return x, shape

    def vjp(self, p, shape, gy):
        for i, M in enumerate(self._mats(shape[1:-1])):
            gy = along(gy, M.T, 1 + i)
        return gy

    def to_spec(self) -> dict:
        return {"layer": "avg_pool", "window": list(self.window), "strides": list(self.strides),
                "padding": self.padding}


class GlobalAvgPool(Layer):
    """The mean over all positions (neural-tangents' GlobalAvgPool)."""

    name = "global_avg_pool"
    spec_key = "global_avg_pool"

    def out_shape(self, shape: Shape, where: str) -> Shape:
        if not shape.spatial:
            raise DomainError(f"{where}: global_avg_pool needs inputs with positions; this layer's input has none")
        return Shape((), shape.channels, shape.gaussian, shape.fresh)

    def fold(self, st: State) -> tuple[State, Backward]:
        ax = st.row_axes() + st.col_axes()
        K = st.K.mean(axis=ax)
        T = None if st.T is None else st.T.mean(axis=ax)
        mu = None if st.mu is None else st.mu.mean(axis=st.row_axes())
        P = st.P
        return st.evolve(K=symmetrised(st, K), T=symmetrised(st, T), mu=mu, spatial=()), \
            lambda G: np.broadcast_to(G.reshape(-1, 1, 1) / (P * P), (G.shape[0], P, P)).copy()

    def init(self, rng, shape, width):
        return {}, shape[-1:]

    def apply(self, p, x):
        return x.mean(axis=tuple(range(1, x.ndim - 1))), x.shape

    def vjp(self, p, shape, gy):
        P = int(np.prod(shape[1:-1]))
        return np.broadcast_to(gy.reshape((gy.shape[0],) + (1,) * (len(shape) - 2) + (gy.shape[-1],)) / P,
                               shape).copy()

    def to_spec(self) -> dict:
        return {"layer": "global_avg_pool"}


class Flatten(Layer):
    """Positions x channels flattened into one vector: the kernel is the position-diagonal mean
    (units at different positions become different coordinates)."""

    name = "flatten"
    spec_key = "flatten"

    def out_shape(self, shape: Shape, where: str) -> Shape:
        ch = None if shape.channels is None else shape.channels * shape.positions
        return Shape((), ch, shape.gaussian, shape.fresh)

    def fold(self, st: State) -> tuple[State, Backward]:
        if not st.spatial:
            return st, _same_backward
        N, P = st.N, st.P

        def diag_mean(A):
            return np.einsum("nsms->nm", A.reshape(N, P, st.C, P)) / P

        K = diag_mean(st.K)
        T = None if st.T is None else diag_mean(st.T)
        mu = None if st.mu is None else st.mu.reshape(N, P).mean(axis=1)
        eye = np.eye(P) / P
        return st.evolve(K=symmetrised(st, K), T=symmetrised(st, T), mu=mu, spatial=()), \
            lambda G: G.reshape(-1, 1, 1) * eye

    def init(self, rng, shape, width):
        return {}, (int(np.prod(shape)),)

    def apply(self, p, x):
        return x.reshape(x.shape[0], -1), x.shape

    def vjp(self, p, shape, gy):
        return gy.reshape(shape)

    def to_spec(self) -> dict:
        return {"layer": "flatten"}


class Identity(Layer):
    name = "identity"
    spec_key = "identity"

    def out_shape(self, shape: Shape, where: str) -> Shape:
        return shape

    def fold(self, st: State) -> tuple[State, Backward]:
        return st, _same_backward

    def apply(self, p, x):
        return x, None

    def vjp(self, p, cache, gy):
        return gy

    def to_spec(self) -> dict:
        return {"layer": "identity"}


class LayerNorm(Layer):
    """Normalisation over channels at each position, no affine parameters, eps = 0:
    K -> (K - mu mu') / sqrt(v v'), v = q - mu^2 (exact with the channel means carried, also
    after a non-zero-mean activation, where neural-tangents' K / sqrt(q q') is not);
    T -> T / sqrt(v v')."""

    name = "layer_norm"
    spec_key = "layer_norm"

    def out_shape(self, shape: Shape, where: str) -> Shape:
        return Shape(shape.spatial, shape.channels, shape.gaussian, shape.fresh)

    def fold(self, st: State) -> tuple[State, Backward]:
        def inv_sd(q, mu):
            v = q if mu is None else q - mu * mu
            if np.any(v <= 0):
                n = int(np.argwhere(v <= 0)[0][0])
                raise DomainError(f"layer_norm: input {n} has zero variance over channels "
                                  "(constant units), so its normalisation is undefined")
            return 1.0 / np.sqrt(v.reshape(-1))

        s, sc = inv_sd(st.q_rows(), st.mu_rows()), inv_sd(st.q_cols(), st.mu_cols())
        K = st.matrix(st.K)
        if st.mu_rows() is not None:
            K = K - np.outer(st.mu_rows().reshape(-1), st.mu_cols().reshape(-1))
        K = K * s[:, None] * sc[None, :]
        if not st.tile:
            np.fill_diagonal(K, 1.0)
        T = None
        if st.T is not None:
            T = (st.matrix(st.T) * s[:, None] * sc[None, :]).reshape(st.K.shape)
        blocks_s = s.reshape(st.N, st.P)
        scale = blocks_s[:, :, None] * blocks_s[:, None, :]
        return st.evolve(K=K.reshape(st.K.shape), T=T, mu=None), lambda G: G * scale

    def apply(self, p, x):
        m = x.mean(axis=-1, keepdims=True)
        xc = x - m
        sd = np.sqrt((xc * xc).mean(axis=-1, keepdims=True))
        y = xc / sd
        return y, (y, sd)

    def vjp(self, p, cache, gy):
        y, sd = cache
        return (gy - gy.mean(axis=-1, keepdims=True) - y * (gy * y).mean(axis=-1, keepdims=True)) / sd

    def to_spec(self) -> dict:
        return {"layer": "layer_norm"}


# ------------------------------------------------------------------------------------------
# combinators beyond serial
# ------------------------------------------------------------------------------------------
class Residual(Layer):
    """shortcut(x) + scale * branch(x) (neural-tangents' FanOut -> parallel -> FanInSum with a
    branch multiplier, docs/theory.md §A4.3).  The branch must pass through a weight layer, so that it is
    independent of the shortcut given the channel means: the cross term of the kernel is then
    scale (mu_s mu_b' + mu_b mu_s') (zero unless both carry a mean, as in x + relu(W x))."""

    name = "residual"
    spec_key = "residual"

    def __init__(self, branch: Layer | Sequence[Layer], shortcut: Layer | Sequence[Layer] | None = None,
                 scale: Any = 1.0):
        self.branch = branch if isinstance(branch, Network) else Network(list(_as_list(branch)))
        self.shortcut = Network([]) if shortcut is None else (
            shortcut if isinstance(shortcut, Network) else Network(list(_as_list(shortcut))))
        if isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating)) \
                or not math.isfinite(float(scale)):
            raise DomainError(f"scale: expected a finite number (the branch multiplier), got {scale!r}")
        self.scale = float(scale)

    def out_shape(self, shape: Shape, where: str) -> Shape:
        from dataclasses import replace
        b = self.branch.out_shape(replace(shape, fresh=False), f"{where}.branch")
        s = self.shortcut.out_shape(shape, f"{where}.shortcut")
        if not b.fresh:
            raise DomainError(f"{where}.branch: a residual branch must contain a dense or conv "
                              "layer (otherwise branch and shortcut are correlated in a way the "
                              "algebra does not compute)")
        if b.spatial != s.spatial:
            raise DomainError(f"{where}: branch output positions {b.spatial} differ from the "
                              f"shortcut's {s.spatial}")
        if (b.channels is None) != (s.channels is None) or (b.channels is not None and b.channels != s.channels):
            raise DomainError(f"{where}: branch output has {_ch(b)} channels but the shortcut has "
                              f"{_ch(s)}; add a dense layer before the residual block (or a "
                              "projection shortcut)")
        return Shape(b.spatial, b.channels, gaussian=b.gaussian and s.gaussian, fresh=False)

    def needs_derivative(self) -> list[str]:
        return self.branch.needs_derivative() + self.shortcut.needs_derivative()

    def params(self, shape: Shape) -> list[Param]:
        from dataclasses import replace
        return ([replace(p, name="branch." + p.name) for p in self.branch.params(shape)]
                + [replace(p, name="shortcut." + p.name) for p in self.shortcut.params(shape)])

    def fold(self, st: State) -> tuple[State, Backward]:
        sb, back_b = self.branch.fold(st)
        ss, back_s = self.shortcut.fold(st)
        a = self.scale
        a2 = a * a
        K = ss.K + a2 * sb.K
        if ss.mu_rows() is not None and sb.mu_rows() is not None:
            msr, mbr = ss.mu_rows().reshape(-1), sb.mu_rows().reshape(-1)
            msc, mbc = ss.mu_cols().reshape(-1), sb.mu_cols().reshape(-1)
            cross = a * (np.outer(msr, mbc) + np.outer(mbr, msc))
            K = K + cross.reshape(K.shape)
        T = None if st.T is None else ss.T + a2 * sb.T
        if ss.mu is None:
            mu = None if sb.mu is None else a * sb.mu
        else:
            mu = ss.mu if sb.mu is None else ss.mu + a * sb.mu
        out = sb.evolve(K=K, T=T, mu=mu, finite=False)
        out.peak = max(sb.peak, ss.peak, out.peak)
        return out, lambda G: back_s(G) + a2 * back_b(G)

    def init(self, rng, shape, width):
        pb, out = self.branch.init(rng, shape, width)
        ps, _ = self.shortcut.init(rng, shape, width)
        return {"branch": pb, "shortcut": ps}, out

    def apply(self, p, x):
        yb, cb = self.branch.apply(p["branch"], x)
        ys, cs = self.shortcut.apply(p["shortcut"], x)
        return ys + self.scale * yb, (cb, cs)

    def vjp(self, p, cache, gy):
        cb, cs = cache
        return self.shortcut.vjp(p["shortcut"], cs, gy) + self.scale * self.branch.vjp(p["branch"], cb, gy)

    def ntk_terms(self, p, cache, d1, d2):
        cb, cs = cache
        a = self.scale
        return (self.shortcut.ntk_terms(p["shortcut"], cs, d1, d2)
                + self.branch.ntk_terms(p["branch"], cb, a * d1, a * d2))

    def to_spec(self) -> dict:
        d: dict = {"layer": "residual", "branch": self.branch.to_spec()}
        if self.shortcut.layers:
            d["shortcut"] = self.shortcut.to_spec()
        if self.scale != 1.0:
            d["scale"] = self.scale
        return d


class Repeat(Network):
    """``body`` composed n times (each copy with its own weights)."""

    name = "repeat"
    spec_key = "repeat"

    def __init__(self, body: Layer | Sequence[Layer], n: int):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise DomainError(f"n: expected a positive integer, got {n!r}")
        self.body = body if isinstance(body, Network) else Network(list(_as_list(body)))
        self.n = int(n)
        super().__init__([self.body] * self.n)

    def out_shape(self, shape: Shape, where: str = "layers") -> Shape:
        for _ in range(self.n):
            shape = self.body.out_shape(shape, f"{where}.body")
        return shape

    def to_spec(self) -> dict:
        return {"layer": "repeat", "n": self.n, "body": self.body.to_spec()}


def _ch(s: Shape) -> str:
    return "width" if s.channels is None else str(s.channels)


def _as_list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


# ------------------------------------------------------------------------------------------
# the public constructors
# ------------------------------------------------------------------------------------------
def dense(sigma_w2: float = 1.0, sigma_b2: float | None = None) -> Dense:
    """Dense layer, W ~ N(0, sigma_w2 / fan_in), b ~ N(0, sigma_b2); sigma_b2 None: no bias."""
    return Dense(sigma_w2, sigma_b2)


def conv(filter: Sequence[int], strides: Sequence[int] | None = None, padding: str = "same",
         sigma_w2: float = 1.0, sigma_b2: float | None = None) -> Conv:
    """Convolution (channels last), fan_in = channels x filter size (docs/theory.md §A4.4)."""
    return Conv(filter, strides, padding, sigma_w2, sigma_b2)


def activation(fn: Any) -> ActivationLayer:
    """Elementwise nonlinearity: a registry spec ("relu", "tanh", "leaky_relu:0.1", ...), an
    Activation, or a vectorised callable."""
    return ActivationLayer(fn)


def avg_pool(window: Sequence[int], strides: Sequence[int] | None = None,
             padding: str = "valid") -> AvgPool:
    return AvgPool(window, strides, padding)


def global_avg_pool() -> GlobalAvgPool:
    return GlobalAvgPool()


def flatten() -> Flatten:
    return Flatten()


def layer_norm() -> LayerNorm:
    return LayerNorm()


def identity() -> Identity:
    return Identity()


def serial(*layers: Layer, parametrization: str = "ntk") -> Network:
    return Network(list(layers), parametrization)


def residual(branch: Any, shortcut: Any = None, scale: float = 1.0) -> Residual:
    return Residual(branch, shortcut, scale)


def repeat(body: Any, n: int) -> Repeat:
    return Repeat(body, n)


# the layers whose maps fold rectangular tiles (Network.kernel's tiling; containers recurse)
for _cls in (Dense, Conv, ActivationLayer, AvgPool, GlobalAvgPool, Flatten, Identity, LayerNorm):
    _cls.tileable = True
