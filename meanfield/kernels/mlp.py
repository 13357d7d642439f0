"""NNGP and NTK recursions of a deep fully connected network (docs/theory.md §A4.1, 4.2).

Architecture (``arch="mlp"``): ``depth`` = L hidden layers (dense + activation), then a linear
readout dense layer; dense layer l = 1..L+1 has variances sigma_w2[l-1], sigma_b2[l-1].  With
g = x.x'/d (the input layer sees the normalised input Gram matrix):

    Sigma^1 = sigma_w2[0] g + sigma_b2[0]
    Sigma^{l+1} = sigma_w2[l] E[phi(u) phi(v)] + sigma_b2[l],   (u, v) ~ N(0, Sigma^l)
    Sigma_dot^{l+1} = sigma_w2[l] E[phi'(u) phi'(v)]
    NTK parametrisation:   Theta^1 = Sigma^1,  Theta^{l+1} = Theta^l Sigma_dot^{l+1} + Sigma^{l+1}
    standard parametrisation: Theta^1 = 0,   Theta^{l+1} = Theta^l Sigma_dot^{l+1} + E[phi(u) phi(v)]

NNGP = Sigma^{L+1}, NTK = Theta^{L+1}.  The standard-parametrisation kernel is the limit of
Theta_SP / n (width n, learning rate eta_0 / n), in which first-layer weights and all biases
drop out (docs/theory.md §A4.2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..activations import Activation
from ._layers import LayerMaps, diag_moments


@dataclass
class MLPDiag:
    """Per-input quantities of every layer (the kernel's diagonal), from the 1-D length map."""

    q: list[np.ndarray]        # Sigma^l(x, x), l = 1..L+1
    theta: list[np.ndarray]    # Theta^l(x, x), l = 1..L+1
    v: list[np.ndarray]        # V_phi(q^l), l = 1..L (the nonlinearities' inputs)
    vd: list[np.ndarray]       # V_phi'(q^l), l = 1..L


class MLP:
    """Kernel recursion of docs/theory.md §A4.1 / 4.2 for given per-layer variances."""

    name = "mlp"

    def __init__(self, act: Activation, depth: int, sigma_w2: np.ndarray, sigma_b2: np.ndarray,
                 ntk: bool):
        self.act, self.L, self.sw, self.sb, self.ntk = act, depth, sigma_w2, sigma_b2, ntk

    def diagonal(self, g: np.ndarray) -> MLPDiag:
        """The recursion on the diagonal g = x.x/d (one value per input)."""
        sw, sb, act = self.sw, self.sb, self.act
        q = sw[0] * g + sb[0]
        th = q.copy() if self.ntk else np.zeros_like(q)
        out = MLPDiag([q], [th], [], [])
        for k in range(1, self.L + 1):
            v, vd = diag_moments(act, q)
            q_new = sw[k] * v + sb[k]
            th = th * (sw[k] * vd) + (q_new if self.ntk else v)
            out.v.append(v)
            out.vd.append(vd)
            out.q.append(q_new)
            out.theta.append(th)
            q = q_new
        return out

    def layer_maps(self, rows: MLPDiag, cols: MLPDiag, method: str = "auto",
                   n_entries: int | None = None) -> list[LayerMaps]:
        return [LayerMaps(self.act, rows.q[k], cols.q[k], method, n_entries) for k in range(self.L)]

    def block(self, G: np.ndarray, maps: list[LayerMaps], rows: slice, cols: slice,
              rd: MLPDiag, diag: tuple[np.ndarray, np.ndarray] | None,
              trace: list | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(NNGP, NTK) on one block from its input Gram block G = x.x'/d (overwritten).

        ``trace``, if given, receives (Sigma^{l+1}, Theta^{l+1}) after every layer l = 1..L: the
        kernels of the networks of depth 1..L (same variances, readout after layer l).
        """
        sw, sb = self.sw, self.sb
        S = G
        S *= sw[0]
        S += sb[0]
        if diag is not None:
            S[diag] = rd.q[0][rows][diag[0]]
        T = S.copy() if self.ntk else np.zeros_like(S)
        for k in range(1, self.L + 1):
            v = vd = None
            if diag is not None:
                v, vd = rd.v[k - 1][rows][diag[0]], rd.vd[k - 1][rows][diag[0]]
            if self.ntk:  # the maps return Sigma^{k+1} and Sigma_dot^{k+1} directly
                dv = None if v is None else (sw[k] * v + sb[k], sw[k] * vd)
                S, Sdot = maps[k - 1](S, rows, cols, diag, dv, (sw[k], sb[k], sw[k]))
                T *= Sdot
                del Sdot
                T += S
            else:
                dv = None if v is None else (v, sw[k] * vd)
                E, Sdot = maps[k - 1](S, rows, cols, diag, dv, (1.0, 0.0, sw[k]))
                T *= Sdot
                del Sdot
                T += E
                E *= sw[k]
                E += sb[k]
                S = E
                if diag is not None:
                    S[diag] = rd.q[k][rows][diag[0]]
            if trace is not None:
                trace.append((S.copy(), T.copy()))
        return S, T

    def records(self, d: MLPDiag) -> dict[str, np.ndarray]:
        """Per-layer diagonals: Sigma^l and Theta^l (l = 1..L+1) and the q^l fed to phi."""
        return {"nngp": np.stack(d.q), "ntk": np.stack(d.theta), "q": np.stack(d.q[:-1])}

    def final(self, d: MLPDiag) -> tuple[np.ndarray, np.ndarray]:
        return d.q[-1], d.theta[-1]
