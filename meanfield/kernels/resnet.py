"""NNGP and NTK recursions of a residual MLP (docs/theory.md §A4.3; Yang & Schoenholz 2017 blocks).

Full residual network (``arch="resnet"``, NTK parametrisation, raw parameters N(0, 1)):

    x^0 = sigma_in / sqrt(d) U xi
    h^l = sigma_w / sqrt(n) W^l x^{l-1} + sigma_b b^l
    x^l = x^{l-1} + alpha (sigma_v / sqrt(n) V^l phi(h^l) + sigma_a a^l)      l = 1..L
    f   = sigma_o / sqrt(n) o . x^L

alpha is ``branch_scale`` (e.g. 1/sqrt(L)); it enters as sigma_v2 -> alpha^2 sigma_v2 and
sigma_a2 -> alpha^2 sigma_a2.  Reduced residual network (``arch="resnet-reduced"``): V = I,
a = 0, i.e. x^l = x^{l-1} + alpha phi(h^l).  Kernels (P = residual stream, Q = pre-activation):

    P^0 = Theta_x^0 = sigma_in2 xi.xi'/d
    Q^l = sigma_w2 P^{l-1} + sigma_b2
    P^l = P^{l-1} + sigma_v2 E[phi phi](Q^l) + sigma_a2
    Theta_h^l = sigma_w2 Theta_x^{l-1} + Q^l
    Theta_x^l = Theta_x^{l-1} + sigma_v2 E[phi' phi'](Q^l) Theta_h^l + sigma_v2 E[phi phi](Q^l) + sigma_a2
    NNGP = sigma_o2 P^L,  NTK = sigma_o2 Theta_x^L + sigma_o2 P^L

(the reduced form drops the terms of the V and a parameters: sigma_v2 = 1 in the propagated terms
and no "+ sigma_v2 E[phi phi] + sigma_a2" own term in Theta_x).  Standard parametrisation, limit
of Theta_SP / n: every parameter's own term loses its sigma^2 and only hidden weights (W, V, o)
keep one: Theta_x^0 = 0, Theta_h^l = sigma_w2 Theta_x^{l-1} + P^{l-1},
Theta_x^l = Theta_x^{l-1} + sigma_v2 E' Theta_h^l + alpha^2 E, NTK = sigma_o2 Theta_x^L + P^L.
The diagonal of P^l is the Yang-Schoenholz length p^l (docs/theory.md §A2.3).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..activations import Activation
from ._layers import LayerMaps, diag_moments


@dataclass
class ResDiag:
    p: list[np.ndarray]       # P^l(x, x), l = 0..L
    theta: list[np.ndarray]   # Theta_x^l(x, x), l = 0..L
    q: list[np.ndarray]       # Q^l(x, x), l = 1..L
    v: list[np.ndarray]
    vd: list[np.ndarray]


class ResNet:
    """Kernel recursion of docs/theory.md §A4.3 (full or reduced block) for per-block variances."""

    def __init__(self, act: Activation, depth: int, sigma_w2, sigma_b2, sigma_v2, sigma_a2,
                 sigma_in2: float, sigma_o2: float, ntk: bool, reduced: bool = False,
                 alpha2: float = 1.0):
        self.act, self.L, self.ntk, self.reduced = act, depth, ntk, reduced
        self.alpha2 = alpha2  # branch_scale^2, already folded into sigma_v2 / sigma_a2
        self.sw, self.sb, self.sv, self.sa = sigma_w2, sigma_b2, sigma_v2, sigma_a2
        self.s_in, self.s_o = sigma_in2, sigma_o2
        self.name = "resnet-reduced" if reduced else "resnet"

    def _own(self, k: int, v):
        """The branch parameters' own NTK term (V and a), or None for the reduced block."""
        if self.reduced:
            return None
        if self.ntk:
            return self.sv[k] * v + self.sa[k]
        return self.alpha2 * v

    def diagonal(self, g: np.ndarray) -> ResDiag:
        p = self.s_in * g
        th = p.copy() if self.ntk else np.zeros_like(p)
        out = ResDiag([p], [th], [], [], [])
        for k in range(self.L):
            sw, sb, sv, sa = self.sw[k], self.sb[k], self.sv[k], self.sa[k]
            q = sw * p + sb
            th_h = sw * th + (q if self.ntk else p)
            v, vd = diag_moments(self.act, q)
            p = p + (sv * v + sa)
            th = th + sv * vd * th_h
            own = self._own(k, v)
            if own is not None:
                th = th + own
            out.q.append(q)
            out.v.append(v)
            out.vd.append(vd)
            out.p.append(p)
            out.theta.append(th)
        return out

    def layer_maps(self, rows: ResDiag, cols: ResDiag, method: str = "auto",
                   n_entries: int | None = None) -> list[LayerMaps]:
        return [LayerMaps(self.act, rows.q[k], cols.q[k], method, n_entries) for k in range(self.L)]

    def block(self, G: np.ndarray, maps: list[LayerMaps], rows: slice, cols: slice,
              rd: ResDiag, diag: tuple[np.ndarray, np.ndarray] | None,
              trace: list | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(NNGP, NTK) on one block from its input Gram block G = x.x'/d (overwritten);
        ``trace`` receives the (NNGP, NTK) of the networks of depth 1..L."""
        P = G
        P *= self.s_in
        if diag is not None:
            P[diag] = rd.p[0][rows][diag[0]]
        T = P.copy() if self.ntk else np.zeros_like(P)
        for k in range(self.L):
            sw, sb, sv, sa = self.sw[k], self.sb[k], self.sv[k], self.sa[k]
            Q = sw * P
            Q += sb
            if diag is not None:
                Q[diag] = rd.q[k][rows][diag[0]]
            Th = sw * T
            Th += Q if self.ntk else P
            v = vd = None
            if diag is not None:
                v, vd = rd.v[k][rows][diag[0]], rd.vd[k][rows][diag[0]]
            if self.ntk:  # the maps return the branch's own term sv E + sa and sv E' directly
                dv = None if v is None else (sv * v + sa, sv * vd)
                own_v, Ed = maps[k](Q, rows, cols, diag, dv, (sv, sa, sv))
                del Q
                P += own_v
                Ed *= Th
                T += Ed
                del Ed, Th
                if not self.reduced:
                    T += own_v
                del own_v
            else:
                dv = None if v is None else (v, sv * vd)
                E, Ed = maps[k](Q, rows, cols, diag, dv, (1.0, 0.0, sv))
                del Q
                own_v = sv * E
                own_v += sa
                P += own_v
                del own_v
                Ed *= Th
                T += Ed
                del Ed, Th
                if not self.reduced:
                    E *= self.alpha2
                    T += E
                del E
            if diag is not None:  # keep the block's diagonal bitwise equal to the 1-D recursion
                P[diag] = rd.p[k + 1][rows][diag[0]]
                T[diag] = rd.theta[k + 1][rows][diag[0]]
            if trace is not None:
                trace.append(self._readout(P, T))
        return self._readout(P, T)

    def _readout(self, P: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """NNGP = sigma_o2 P, NTK = sigma_o2 Theta_x + (sigma_o2 P or P)."""
        nngp = P * self.s_o
        ntk = T * self.s_o
        ntk += nngp if self.ntk else P
        return nngp, ntk

    def records(self, d: ResDiag) -> dict[str, np.ndarray]:
        """Per-layer diagonals: P^l and Theta_x^l (l = 0..L) and Q^l (l = 1..L)."""
        return {"nngp": np.stack(d.p), "ntk": np.stack(d.theta), "q": np.stack(d.q)}

    def final(self, d: ResDiag) -> tuple[np.ndarray, np.ndarray]:
        nngp = self.s_o * d.p[-1]
        ntk = self.s_o * d.theta[-1] + (nngp if self.ntk else d.p[-1])
        return nngp, ntk
