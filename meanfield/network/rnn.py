"""The Elman RNN with weights shared over time (docs/theory.md §A5.4; TP I/II, GP4A / NTK4A), on
(N, T, d) inputs:

    h^t = W s^(t-1) + U x^t + b,   s^t = phi(h^t),   s^0 = 0,

W ~ N(0, sigma_w2 / width), U ~ N(0, sigma_u2 / d), b ~ N(0, sigma_b2) (fan-in normalised; the
numpy version draws raw N(0, 1) values scaled as in the NTK parametrisation).  The output, of
shape (N, width), is the last state s^T (``output = "last"``) or the mean of the states over the
steps (``"mean"``): a dense readout after it is NTK4A's LastState / AvgPool readout.  With
``"all"`` the output is every state, (N, T, width), so RNNs stack (a deep RNN) and any layer on
positions may follow.

Kernel maps (docs/theory.md, "Recurrent networks").  For two sequences x, x' (steps t, r) with
input kernel K^(t,r) (x^t . x'^r / d for the data, the previous layer's kernel otherwise):

    Sigma^(t,r) = sigma_w2 C^(t-1,r-1) + sigma_u2 K^(t,r) + sigma_b2,     C^(0,.) = C^(.,0) = 0,
    C^(t,r)     = E[phi(u) phi(v)],  Cd^(t,r) = E[phi'(u) phi'(v)],
                  (u, v) ~ N(0, [[Sigma^(t,t), Sigma^(t,r)], [Sigma^(t,r), Sigma'^(r,r)]]),
    Theta^(t,r) = sigma_w2 (Xi^(t-1,r-1) + C^(t-1,r-1)) + sigma_u2 (T^(t,r) + K^(t,r)) + sigma_b2,
    Xi^(t,r)    = Cd^(t,r) Theta^(t,r),

Theta the NTK of the pre-activations and Xi of the states (NTK parametrisation; T the input's
NTK).  The standard parametrisation's lim Theta_SP / n drops the biases and a U whose fan-in is
the data's: Theta^(t,r) = sigma_w2 Xi^(t-1,r-1) + C^(t-1,r-1) + sigma_u2 T^(t,r) [+ K^(t,r)
after a hidden layer] (docs/theory.md §A4.2).  The layer's NNGP is C^(T,T') ("last"), the mean of
C^(t,r) over the steps ("mean") or the whole plane C ("all"), its NTK likewise from Xi.  Unrolled, this forward recursion is
docs/theory.md §A5.4's sum over (t, r) of the backward D recursion times the forward C (W, U, b terms);
the readout's term is the dense layer's.  The Gaussian maps are the activation layer's
(kernels._layers.LayerMaps, closed forms or tables; the 1-D moments on the diagonal).

Backward map (gradient independence, which holds here by the Simple GIA Check, docs/theory.md §A5.3):
with D^(t,r) the covariance of the gradients at s^t and s^r of one input,

    D^(t-1,r-1) = sigma_w2 Cd^(t,r) D^(t,r) + J^(t-1,r-1),   G_in^(t,r) = sigma_u2 Cd^(t,r) D^(t,r),

J the readout's injection: G at (T, T) only for "last" (so only pairs aligned from the end
survive), G / T^2 at every (t, r) for "mean", G itself for "all".  D^(t,t) / D^(T,T) is the gradient norm through
time; sigma_w2 E[phi'(h)^2] at the fixed point of the step map is the RNN's chi_1 (its edge of
chaos at 1).  :func:`steps` returns these per-step diagnostics.

Sequences of different lengths (``masking = True``, Keras' Masking(0) convention): a step whose
input vector is all zeros is padding and is skipped (the state is carried over it), so ragged
sequences are given zero-padded to a common length (:func:`pad_sequences`).  In the kernel map
a step is padding where its input variance K^(t,t) is exactly 0, which for the data is the same
test.  Without masking every step counts, zeros included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .. import gaussian
from ..activations import Activation, get_activation
from ..errors import DomainError
from .core import Backward, Layer, Network, Param, Record, Shape, State, _check_array, initial_state
from .layers import _variance, symmetrised

OUTPUTS = ("last", "mean", "all")


class Rnn(Layer):
    """Elman RNN with shared weights (the module docstring has the model and the maps)."""

    name = "rnn"
    spec_key = "rnn"

    @property
    def tileable(self) -> bool:
        """Every entry pairs two sequences only, so the kernel folds in tiles (Network.kernel),
        where the step maps are closed forms (or q-free tables).  Otherwise they are tables over
        the step variances, which the tiles could share only through the tape, and the tape has
        no entry for the data an rnn reads as the first layer: one table per tile would cost
        more than the untiled fold."""
        from ..kernels._layers import has_closed_form

        return has_closed_form(self.act)

    def __init__(self, fn: Any, sigma_w2: Any = 1.0, sigma_u2: Any = 1.0, sigma_b2: Any = None,
                 output: Any = "last", masking: Any = False):
        if not isinstance(fn, (str, Activation)):
            raise DomainError(f"fn: expected an activation name such as 'erf', got {fn!r}")
        try:
            self.act: Activation = get_activation(fn)
        except DomainError as exc:
            raise DomainError(f"fn: {exc}") from None
        self.spec_fn = fn if isinstance(fn, str) else self.act.name
        self.sigma_w2 = _variance("sigma_w2", sigma_w2)
        self.sigma_u2 = _variance("sigma_u2", sigma_u2)
        self.sigma_b2 = _variance("sigma_b2", sigma_b2, optional=True)
        if not isinstance(output, str) or output.lower() not in OUTPUTS:
            raise DomainError(f"output: expected one of {', '.join(OUTPUTS)}, got {output!r}")
        self.output = output.lower()
        if not isinstance(masking, (bool, np.bool_)):
            raise DomainError(f"masking: expected true or false, got {masking!r}")
        self.masking = bool(masking)
        if self.masking and self.output == "all":
            raise DomainError("masking: not supported with output 'all' (the padding would have to "
                              "be passed on to the next layer); use output 'last' or 'mean'")

    # ---- shapes and parameters ----
    def out_shape(self, shape: Shape, where: str) -> Shape:
        if len(shape.spatial) != 1:
            got = "none" if not shape.spatial else f"{len(shape.spatial)}-D positions {shape.spatial}"
            raise DomainError(f"{where}: rnn needs inputs with one time axis, shape (N, T, d); "
                              f"this layer's input has {got}")
        return Shape(shape.spatial if self.output == "all" else (), None, gaussian=False, fresh=True)

    def params(self, shape: Shape) -> list[Param]:
        role = "input" if shape.channels is not None else "hidden"
        out = [Param("recurrent", "weight", "hidden", None, self.sigma_w2, (None, None)),
               Param("input", "weight", role, shape.channels, self.sigma_u2, (shape.channels, None))]
        if self.sigma_b2 is not None:
            out.append(Param("bias", "bias", role, None, self.sigma_b2, (None,)))
        return out

    def needs_derivative(self) -> list[str]:
        return [self.act.name] if self.act.d1 is None else []

    @property
    def _sb(self) -> float:
        return self.sigma_b2 or 0.0

    # ---- the kernel maps ----
    def _steps_of(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(order, lengths): per input, its unmasked steps first (in time order), and how many."""
        N, T = q.shape
        if not self.masking:
            return np.broadcast_to(np.arange(T), (N, T)), np.full(N, T)
        valid = q > 0
        lengths = valid.sum(axis=1)
        if np.any(lengths == 0):   # (rows of a tile here: apply names the input)
            raise DomainError("rnn: an input sequence has no step with a non-zero input vector "
                              "(with masking, all-zero steps are padding)")
        return np.argsort(~valid, axis=1, kind="stable"), lengths

    def _step_variances(self, q: np.ndarray) -> np.ndarray:
        """Sigma^(t,t) of each input alone (the 1-D recursion), on its unmasked steps (N, T)."""
        order, L = self._steps_of(q)
        T = q.shape[1]
        q_in = np.where(np.arange(T)[None, :] < L[:, None], np.take_along_axis(q, order, axis=1), 0.0)
        Q = np.empty_like(q_in)
        prev = np.zeros(q_in.shape[0])
        for t in range(T):
            Q[:, t] = self.sigma_w2 * prev + self.sigma_u2 * q_in[:, t] + self._sb
            prev = gaussian.v_phi(self.act, Q[:, t])
        return Q

    def _recursion(self, st: State):
        """The forward recursion on the sequences' unmasked steps (compressed to the front):
        C, Cd, Xi (R, T, C, T), the rows' step variances, and the compression."""
        R, T = st.N, st.P
        Cn = st.C
        qr, qc = st.q_rows().reshape(R, T), st.q_cols().reshape(Cn, T)
        order_r, Lr = self._steps_of(qr)
        order_c, Lc = self._steps_of(qc)
        K4 = st.K.reshape(R, T, Cn, T)
        ar, ac = np.arange(R), np.arange(Cn)
        live_r = np.arange(T)[None, :] < Lr[:, None]
        live_c = np.arange(T)[None, :] < Lc[:, None]
        live = live_r[:, :, None, None] & live_c[None, None, :, :]

        def compress(A):
            A = A[ar[:, None, None, None], order_r[:, :, None, None], ac[None, None, :, None],
                  order_c[None, None, :, :]]
            return np.where(live, A, 0.0)

        Kc = compress(K4) if self.masking else K4
        Tc = None if st.T is None else (compress(st.T.reshape(R, T, Cn, T)) if self.masking
                                        else st.T.reshape(R, T, Cn, T))
        sw, su, sb = self.sigma_w2, self.sigma_u2, self._sb
        act = self.act
        square = not st.tile
        Qr = self._step_variances(qr)
        Qc = Qr if square else self._step_variances(qc)
        from ..kernels._layers import LayerMaps, diag_moments

        ntk = Tc is not None and act.d1 is not None
        maps, r_off, c_off = None, 0, 0
        if act.d1 is not None:
            tape = st.tape
            if st.tile and tape is not None and tape.pos > 0:
                # one LayerMaps (one method, one set of tables over every input's step
                # variances) for all tiles of this layer, as the activation layer does
                def build(q_all):
                    Q = self._step_variances(q_all.reshape(q_all.shape[0], T)).reshape(-1)
                    return LayerMaps(act, Q, Q, st.method, st.total_entries)
                maps = tape.shared(id(self), build)
                r_off, c_off = tape.rows.start * T, tape.cols.start * T
            else:
                maps = LayerMaps(act, Qr.reshape(-1), Qc.reshape(-1), st.method, st.total_entries)
        E = np.zeros((R, T, Cn, T))
        Ed = np.zeros_like(E) if act.d1 is not None else None
        Xi = np.zeros_like(E) if ntk else None
        cols = c_off + np.arange(Cn * T)
        hidden = not st.finite
        for t in range(T):   # row t of every (t, r) plane needs row t - 1 only
            base = Kc[:, t] * su
            if sb:
                base += sb
            S = base.copy()
            if t:
                S[:, :, 1:] += sw * E[:, t - 1, :, :-1]
            rows = r_off + ar * T + t
            M = S.reshape(R, Cn * T)
            diag = (ar, ar * T + t) if square else None
            if maps is None:   # no derivative: the NNGP alone
                from ..kernels._layers import correlation
                q1, q2 = Qr[:, t], Qc.reshape(-1)
                e = np.asarray(gaussian.w_phi(act, q1[:, None], q2[None, :], correlation(M, q1, q2)), float)
                if square:
                    e[diag] = gaussian.v_phi(act, Qr[:, t])
            else:
                vals = diag_moments(act, Qr[:, t]) if square else None
                e, ed = maps(M, rows, cols, diag, vals)
                Ed[:, t] = ed.reshape(R, Cn, T)
            E[:, t] = e.reshape(R, Cn, T)
            if ntk:
                if st.param == "ntk":
                    Th = Tc[:, t] * su   # the dense layer's arithmetic, so T = 1 is exact
                    Th += base
                    if t:
                        Th[:, :, 1:] += sw * (Xi[:, t - 1, :, :-1] + E[:, t - 1, :, :-1])
                else:
                    Th = Tc[:, t] * su
                    if hidden:
                        Th += Kc[:, t]
                    if t:
                        Th[:, :, 1:] += sw * Xi[:, t - 1, :, :-1] + E[:, t - 1, :, :-1]
                Xi[:, t] = Th * Ed[:, t]
        return E, Ed, Xi, Qr, (order_r, Lr, live_r), (order_c, Lc, live_c)

    def _read(self, A: np.ndarray, rows, cols) -> np.ndarray:
        """The layer's output kernel from a (t, r) plane: the last pair, the mean or all."""
        (_, Lr, live_r), (_, Lc, live_c) = rows, cols
        if self.output == "all":
            return A
        if self.output == "last":
            R, Cn = A.shape[0], A.shape[2]
            return A[np.arange(R)[:, None], (Lr - 1)[:, None], np.arange(Cn)[None, :], (Lc - 1)[None, :]]
        wr, wc = live_r / Lr[:, None], live_c / Lc[:, None]
        return np.einsum("nt,ntmr,mr->nm", wr, A, wc, optimize=True)

    def fold(self, st: State) -> tuple[State, Backward]:
        E, Ed, Xi, Qr, rows, cols = self._recursion(st)
        K = self._read(E, rows, cols)
        T = None if Xi is None else self._read(Xi, rows, cols)
        mu = None
        if not self.act.odd and not st.tile:
            m = gaussian.m_phi(self.act, Qr.reshape(-1)).reshape(Qr.shape)
            mu = self._read_steps(m, rows)
        back = self._backward(Ed, rows)
        out = st.evolve(K=symmetrised(st, K), T=symmetrised(st, T), mu=mu, finite=False,
                        spatial=st.spatial if self.output == "all" else ())
        return out, back

    def _read_steps(self, m: np.ndarray, rows) -> np.ndarray:
        """Per-input step values (N, T) -> the output's (last step or mean over the steps)."""
        _, L, live = rows
        if self.output == "all":
            return m
        if self.output == "last":
            return m[np.arange(m.shape[0]), L - 1]
        return (m * live).sum(axis=1) / L

    def _gradients(self, Edb: np.ndarray, G: np.ndarray, rows) -> np.ndarray:
        """D^(t,r) per input (N, T, T) for the output's gradient covariance G (N, P_out, P_out)."""
        _, L, live = rows
        N, T = live.shape
        J = np.zeros((N, T, T))
        g = G[:, 0, 0]
        if self.output == "all":
            J = G
        elif self.output == "last":
            J[np.arange(N), L - 1, L - 1] = g
        else:
            J = (live[:, :, None] & live[:, None, :]) * (g / L ** 2)[:, None, None]
        D = np.zeros_like(J)
        for t in range(T - 1, -1, -1):   # row t needs row t + 1
            D[:, t] = J[:, t]
            if t + 1 < T:
                D[:, t, :-1] += self.sigma_w2 * Edb[:, t + 1, 1:] * D[:, t + 1, 1:]
        return D

    def _backward(self, Ed: np.ndarray | None, rows) -> Backward:
        def backward(G: np.ndarray) -> np.ndarray:
            if Ed is None:
                raise DomainError(f"rnn: activation {self.act.name!r} has no derivative, so "
                                  "gradients through it are undefined")
            order, L, live = rows
            N, T = live.shape
            ar = np.arange(N)
            Edb = Ed[ar, :, ar, :]
            D = self._gradients(Edb, G, rows)
            Gc = self.sigma_u2 * Edb * D
            out = np.zeros_like(Gc)
            out[ar[:, None, None], order[:, :, None], order[:, None, :]] = Gc   # back to time order
            return out
        return backward

    def steps(self, st: State) -> "RnnSteps":
        """Per-step diagnostics from this layer's input state (square): docs/theory.md §A5.4."""
        if st.tile:   # pragma: no cover - propagate-like callers fold whole squares
            raise DomainError("rnn: per-step diagnostics need the whole kernel, not a tile")
        E, Ed, Xi, Qr, rows, _ = self._recursion(st)
        order, L, live = rows
        N, T = live.shape
        ar = np.arange(N)
        S = np.empty((T, N, N))
        sw, su, sb = self.sigma_w2, self.sigma_u2, self._sb
        K4 = st.K.reshape(N, T, N, T)
        if self.masking:
            K4 = K4[ar[:, None, None, None], order[:, :, None, None], ar[None, None, :, None],
                    order[None, None, :, :]]
        for t in range(T):   # the pre-activation covariance of the inputs at step t
            S[t] = sw * (E[:, t - 1, :, t - 1] if t else 0.0) + su * K4[:, t, :, t] + sb
        both = live[:, None, :] & live[None, :, :]   # (N, N, T) -> per step below
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.sqrt(np.einsum("tnn->tn", S))
            corr = S / (d[:, :, None] * d[:, None, :])
        corr = np.where(np.moveaxis(both, -1, 0), corr, np.nan)
        q = np.where(live, Qr, np.nan)
        grad = np.full((N, T), np.nan)
        if Ed is not None:
            P = T if self.output == "all" else 1
            D = self._gradients(Ed[ar, :, ar, :], np.broadcast_to(np.eye(P), (N, P, P)), rows)
            g = np.einsum("ntt->nt", D)
            grad = np.where(live, g, np.nan)
        chi = self.sigma_w2 * gaussian.v_dphi(self.act, Qr) if Ed is not None else np.full_like(Qr, np.nan)
        return RnnSteps(q=q, correlation=corr, gradient=grad, chi=np.where(live, chi, np.nan),
                        lengths=np.asarray(L, int), output=self.output)

    # ---- the finite-width network (raw N(0, 1) parameters) ----
    def init(self, rng, shape, width):
        C = shape[-1]
        p = {"W": rng.standard_normal((width, width)), "U": rng.standard_normal((C, width))}
        if self.sigma_b2 is not None:
            p["b"] = rng.standard_normal(width)
        return p, (shape[0], width) if self.output == "all" else (width,)

    def _scales(self, p) -> tuple[float, float]:
        return math.sqrt(self.sigma_w2 / p["W"].shape[0]), math.sqrt(self.sigma_u2 / p["U"].shape[0])

    def apply(self, p, x):
        N, T, C = x.shape
        aw, au = self._scales(p)
        valid = np.any(x != 0, axis=-1) if self.masking else np.ones((N, T), bool)
        L = valid.sum(axis=1)
        if np.any(L == 0):
            raise DomainError(f"rnn: input {int(np.argmax(L == 0))} has no step with a non-zero "
                              "input vector (with masking, all-zero steps are padding)")
        Ux = au * (x @ p["U"])
        if "b" in p:
            Ux += math.sqrt(self.sigma_b2) * p["b"]
        width = p["W"].shape[0]
        s = np.zeros((N, width))
        H, S = np.empty((N, T, width)), np.empty((N, T, width))
        for t in range(T):
            h = aw * (s @ p["W"]) + Ux[:, t]
            H[:, t] = h
            s = np.where(valid[:, t, None], self.act.fn(h), s)   # a masked step carries the state
            S[:, t] = s
        y = {"last": s, "all": S}.get(self.output)
        if y is None:
            y = (S * valid[:, :, None]).sum(axis=1) / L[:, None]
        return y, (x, H, S, valid, L)

    def _bptt(self, p, cache, gy) -> tuple[np.ndarray, np.ndarray]:
        """(d/dx, d/dh^t) for an output gradient gy (N, width): backpropagation through time."""
        if self.act.d1 is None:
            raise DomainError(f"activation {self.act.name!r} has no derivative")
        x, H, S, valid, L = cache
        N, T, _ = x.shape
        aw, au = self._scales(p)
        ds = gy.copy() if self.output == "last" else np.zeros((N, H.shape[-1]))
        DH = np.zeros_like(H)
        gx = np.zeros(x.shape)
        for t in range(T - 1, -1, -1):
            v = valid[:, t, None]
            if self.output == "mean":
                ds = ds + v * gy / L[:, None]
            elif self.output == "all":
                ds = ds + gy[:, t]
            dh = np.where(v, ds * self.act.d1(H[:, t]), 0.0)
            DH[:, t] = dh
            gx[:, t] = au * (dh @ p["U"].T)
            ds = np.where(v, aw * (dh @ p["W"].T), ds)
        return gx, DH

    def vjp(self, p, cache, gy):
        return self._bptt(p, cache, gy)[0]

    def ntk_terms(self, p, cache, d1, d2):
        x, H, S, valid, L = cache
        aw, au = self._scales(p)
        _, D1 = self._bptt(p, cache, d1)
        _, D2 = self._bptt(p, cache, d2)
        prev = np.concatenate([np.zeros_like(S[:, :1]), S[:, :-1]], axis=1)   # s^(t-1)
        B = np.einsum("ntk,mrk->ntmr", D1, D2, optimize=True)
        total = aw ** 2 * np.einsum("ntmr,ntmr->nm", np.einsum("ntj,mrj->ntmr", prev, prev), B)
        total += au ** 2 * np.einsum("ntmr,ntmr->nm", np.einsum("ntc,mrc->ntmr", x, x), B)
        if "b" in p:
            total += self.sigma_b2 * (D1.sum(axis=1) @ D2.sum(axis=1).T)
        return total

    def to_spec(self) -> dict:
        d: dict = {"layer": "rnn", "fn": self.spec_fn, "sigma_w2": self.sigma_w2, "sigma_u2": self.sigma_u2}
        if self.sigma_b2 is not None:
            d["sigma_b2"] = self.sigma_b2
        d["output"] = self.output
        d["masking"] = self.masking
        return d


@dataclass(frozen=True)
class RnnSteps(Record):
    """Per-step diagnostics of an RNN layer (NaN at padded steps): ``q[n, t]`` the pre-activation
    variance Sigma^(t,t); ``correlation[t]`` the N x N pre-activation correlation of the inputs at
    step t; ``gradient[n, t]`` the gradient second moment at s^t for a unit gradient at the output
    (at the last step for "last", spread as 1/T over the steps for "mean", at every step for "all");
    ``chi[n, t]`` = sigma_w2 E[phi'(h^t)^2], the per-step gradient factor; ``lengths`` the
    unmasked steps per input (docs/theory.md §A5.4)."""

    q: np.ndarray
    correlation: np.ndarray
    gradient: np.ndarray
    chi: np.ndarray
    lengths: np.ndarray
    output: str


def rnn(fn: Any, sigma_w2: float = 1.0, sigma_u2: float = 1.0, sigma_b2: float | None = None,
        output: str = "last", masking: bool = False) -> Rnn:
    """An Elman RNN layer with shared weights over time (docs/theory.md §A5.4; the module docstring)."""
    return Rnn(fn, sigma_w2, sigma_u2, sigma_b2, output, masking)


def steps(net: Network, X: Any, *, method: str = "auto") -> RnnSteps:
    """Per-step diagnostics (q^t, the inputs' correlation at each step, the gradient through
    time) of the first RNN layer of ``net`` on inputs X (N, T, d) (docs/theory.md §A5.4)."""
    from .layers import METHODS

    if method not in METHODS:
        raise DomainError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    X = _check_array("X", X)
    net.check(X)
    layers = net.flat()
    k = next((i for i, l in enumerate(layers) if isinstance(l, Rnn)), None)
    if k is None:
        raise DomainError("this network has no rnn layer")
    st = initial_state(X, net.parametrization, False, method)
    with np.errstate(over="ignore", invalid="ignore"):
        for l in layers[:k]:
            st, _ = l.fold(st)
        return layers[k].steps(st)


def pad_sequences(seqs: Sequence[Any]) -> np.ndarray:
    """Sequences of different lengths (each (T_i, d)) as one zero-padded (N, T_max, d) array for
    an rnn with ``masking=True``; a sequence with an all-zero step is refused, since masking would
    read that step as padding."""
    if isinstance(seqs, np.ndarray) or not isinstance(seqs, (list, tuple)) or not seqs:
        raise DomainError("pad_sequences: expected a non-empty list of (T, d) arrays")
    arrs = []
    for i, s in enumerate(seqs):
        a = _check_array(f"seqs[{i}]", s)
        if a.ndim != 2:
            raise DomainError(f"seqs[{i}]: expected shape (T, d), got {a.shape}")
        zero = np.flatnonzero(~np.any(a != 0, axis=1))
        if zero.size:
            raise DomainError(f"seqs[{i}]: step {int(zero[0])} is all zeros, which masking reads "
                              "as padding; shift or perturb the data")
        arrs.append(a)
    d = {a.shape[1] for a in arrs}
    if len(d) != 1:
        raise DomainError(f"pad_sequences: the sequences have different feature sizes {sorted(d)}")
    out = np.zeros((len(arrs), max(a.shape[0] for a in arrs), d.pop()))
    for i, a in enumerate(arrs):
        out[i, :a.shape[0]] = a
    return out


__all__ = ["Rnn", "RnnSteps", "rnn", "steps", "pad_sequences", "OUTPUTS"]
