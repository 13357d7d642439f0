"""BatchNorm in train mode (batch statistics), no affine parameters, eps = 0 (docs/theory.md §A5.6):
NNGP and NTK within one batch.

Statistics.  As torch's ``BatchNorm1d`` / ``BatchNorm2d`` in training mode: for each channel c the
mean and the (biased, 1/B) variance are taken over the batch *and* all positions, B = N P values,
and y[n, s, c] = (x[n, s, c] - m_c) / sqrt(v_c).

Infinite width.  After a dense or conv layer the channels are i.i.d. Gaussian vectors over the B
(input, position) pairs, x_c ~ N(0, S) with S the (N P) x (N P) pair-layout kernel.  With the
centring G = I - 11'/B, z = G x and S^G = G S G, the output is y = sqrt(B) z / |z|, and
1 / |z|^2 = int_0^inf exp(-s |z|^2) ds turns every moment into a Gaussian one (docs/theory.md §A5.6):

    E[y y'] = B int_0^inf det(I + 2 s S^G)^(-1/2) K(s) ds,   K(s) = S^G (I + 2 s S^G)^(-1).

For an activation after batch_norm the output is not Gaussian (it lies on a sphere), so the
activation's own Gaussian maps would be wrong.  They are exact again for positively homogeneous
phi of degree 1 (phi(x) = b relu(x) + m relu(-x): relu, leaky_relu, abs, linear), since then
phi(y_i) phi(y_j) = B phi(z_i) phi(z_j) / |z|^2:

    E[phi(y) phi(y)'] = B int_0^inf det(I + 2 s S^G)^(-1/2) V_phi(K(s)) ds        (docs/theory.md §A5.6)
    E[phi(y_i)]       = (b + m) sqrt(B / pi) int_0^inf s^(-1/2) det(...)^(-1/2)
                        sqrt(K(s)_ii / (2 pi)) ds      (1 / |z| = pi^(-1/2) int s^(-1/2) e^(-s |z|^2) ds)

with V_phi the arc-cosine kernel (docs/theory.md §A3.1).  Other activations after batch_norm are refused
(their maps need the law of a normalised Gaussian vector, not implemented).  The layer marks its
output (``Shape.law = "batch_norm"``, and the state it returns carries the law), and the activation
layer hands its fold to :meth:`BatchNormLaw.activation_fold`.

Quadrature.  In r = log s the integrands are analytic in the strip |Im r| < pi (the nearest
singularities are where 1 + 2 e^r lambda = 0) and decay exponentially on both sides, so the
trapezoid rule with step h converges like exp(-2 pi^2 / h): h = 0.25 is at rounding level.  The
range runs from 90 below -log(lambda_max) to 90 above -log(lambda_min) (lambda the non-zero
eigenvalues of S^G), beyond which the integrands (which fall like e^(r/2) on the left, the
mean's, and like e^(-r/2) or faster on the right) are below 1e-19 of their peak.  Checked: trace
E[y y'] = B exactly (each channel is normalised), S = c G gives B / (B - 1) G, and halving h
changes nothing above 1e-14.

NTK.  batch_norm has no parameters, so its NTK map is the forward Jacobian's: per channel
J = dy/dh = sqrt(B) / |z| (G - z z' / |z|^2), and T' = E[D J T J' D] with D = diag(phi'(y)) for an
activation right after it (D = I alone).  With T^G = G T G, psi = phi' (degree 0, so
psi(y) = psi(z)), 1 / |z|^(2k) = Gamma(k)^(-1) int s^(k-1) e^(-s |z|^2) ds, Euler's z phi'(z) =
phi(z) and Stein's lemma (E[g(z) z] = K E[grad g]; E[g z z'] = E[g] K + K E[grad grad' g] K,
and sum_kl M_kl E[d_k d_l g] = 2 dE[g]/dK [M] by Price's theorem), every term is a Gaussian
moment under K = K(s):

    T'_ab = B int_0^inf det(...)^(-1/2) { T^G_ab V'_ab
            - s [V'_ab ((T^G K)_ab + (T^G K)_ba) + H_ab (T^G K)_bb + H_ba (T^G K)_aa]
            + s^2 / 2 [tr(T^G K) V_ab + 2 dV_ab[K T^G K]] } ds,

V = sqrt(q q') F(c) the arc-cosine kernel of phi, V' = F'(c) = E[phi'(z_a) phi'(z_b)],
H_ab = sqrt(q_a / q_b) (F(c) - c F'(c)) = E[phi(z_a) phi''(z_b)] = 2 dV_ab / dq_b, and
dV_ab[M] = V'_ab M_ab + (H_ba M_aa + H_ab M_bb) / 2.  For phi = identity (batch_norm alone)
V' = 1, H = 0: T' = B int det^(-1/2) [T^G - s (K T^G + T^G K) + s^2 / 2 (tr(T^G K) K + 2 K T^G K)],
docs/theory.md §A5.6's Lambda_1 + Lambda_2 - Lambda_3 (there written for the adjoint, backward, map).
It is finite only when S^G has rank >= 3 (E[1/|z|^2] = 1 / (rank - 2) for an isotropic batch);
below that the NTK is refused.  Checked: S^G = T^G = c G gives B G (k - 1) / (k (k - 2)),
k = B - 1, exactly; NNGP, mean and NTK maps against direct sampling of y = sqrt(B) Gh / |Gh|
(200 000 draws, 5 standard errors); wide networks (tests/test_network_bn.py).

Not done (refused, one line each):

* the backward map in ``propagate``: it mixes the inputs of the batch, which the per-input
  gradient blocks of the Backward protocol cannot hold.  The map itself is
  :meth:`BatchNormLaw.phi_backward` (the exact adjoint of the NTK map above, which is docs/theory.md
  §A5.6's Lambda form), and :func:`gradient_growth` gives the per-layer gradient explosion of a
  deep BN-relu MLP from it: 1.5220 at B = 32 (a wide network: 1.524 +- 0.004; MATH.md: 1.518)
  and 1.4797 at B = 128 (MATH.md: 1.476; 5 minutes on 2 cores, O(B^3) per quadrature node);
* kernels with X2: the statistics are those of one batch, and [X; X2] is not the batch of X;
* a batch of one value (B = 1) or a batch whose centred covariance vanishes (constant units).
"""

from __future__ import annotations

import math

import numpy as np

from ..activations import _k0, _k1, _piecewise_linear_through_0
from ..errors import DomainError
from .core import Backward, Layer, Shape, State

_H = 0.25            # trapezoid step in log s
_ZERO = 1e-13        # eigenvalues below this fraction of the largest count as zero
_CHUNK = 1 << 22     # entries per block of quadrature nodes x (B x B)


def _two_slopes(act) -> tuple[float, float] | None:
    """(b, m) with phi(x) = b relu(x) + m relu(-x) (checked on a grid to 1e-12), else None."""
    return _piecewise_linear_through_0(act.fn)


def check_activation(layer, where: str) -> None:
    """Called by ActivationLayer.out_shape when its input is batch_norm's output."""
    if _two_slopes(layer.act) is None:
        raise DomainError(
            f"{where}: activation {layer.act.name!r} after batch_norm is not supported: the "
            "output of batch_norm is a normalised (not Gaussian) vector, and its maps are exact "
            "only for positively homogeneous activations (relu, leaky_relu, abs, linear); put a "
            "dense or conv layer in between")


class BatchNormLaw:
    """The law of batch_norm's output: y = sqrt(B) z / |z|, z ~ N(0, S^G) = N(0, U diag(lam) U')."""

    def __init__(self, U: np.ndarray, lam: np.ndarray, B: int, TG: np.ndarray | None = None):
        self.U, self.lam, self.B, self.TG = U, lam, B, TG
        pos = lam[lam > 0]
        lo = -math.log(pos.max()) - 90.0
        hi = -math.log(pos.min()) + 90.0
        self.r = np.arange(lo, hi + _H, _H)
        self.s = np.exp(self.r)
        # log det(I + 2 s S^G)^(-1/2) at every node
        self.logdet = -0.5 * np.log1p(2.0 * self.s[:, None] * lam[None, :]).sum(axis=1)

    def d(self, s_index: slice) -> np.ndarray:
        """lam / (1 + 2 s lam): the eigenvalues of K(s) at the nodes (n_nodes, B)."""
        s = self.s[s_index, None]
        return self.lam[None, :] / (1.0 + 2.0 * s * self.lam[None, :])

    def second_moment(self) -> np.ndarray:
        """E[y y'] = U diag(B int det^(-1/2) lam / (1 + 2 s lam) ds) U'."""
        w = _H * self.s * np.exp(self.logdet) * self.B
        e = (w[:, None] * self.d(slice(None))).sum(axis=0)
        return (self.U * e) @ self.U.T

    def phi_moments(self, b: float, m: float) -> tuple[np.ndarray, np.ndarray]:
        """(E[phi(y) phi(y)'], E[phi(y)]) for phi = b relu(x) + m relu(-x)."""
        B = self.B
        U = self.U
        s2, bm = b * b + m * m, b * m
        out = np.zeros((B, B))
        mean = np.zeros(B)
        n = self.s.size
        step = max(1, _CHUNK // (B * B))
        for a0 in range(0, n, step):
            sl = slice(a0, min(n, a0 + step))
            K = np.einsum("ik,nk,jk->nij", U, self.d(sl), U, optimize=True)     # K(s) at the nodes
            q = np.maximum(np.einsum("nii->ni", K), 0.0)
            sq = np.sqrt(q)
            den = sq[:, :, None] * sq[:, None, :]
            with np.errstate(divide="ignore", invalid="ignore"):
                c = np.clip(np.where(den > 0, K / den, 0.0), -1.0, 1.0)
            idx = np.arange(B)
            c[:, idx, idx] = 1.0      # exactly (sqrt(1 - c^2) would turn rounding into 1e-8)
            V = den * (s2 * _k1(c) + 2.0 * bm * _k1(-c))
            det = np.exp(self.logdet[sl])
            out += np.einsum("n,nij->ij", _H * self.s[sl] * det * B, V)
            mean += np.einsum("n,ni->i", _H * np.sqrt(self.s[sl]) * det, sq)
        mean *= (b + m) * math.sqrt(B / math.pi) / math.sqrt(2.0 * math.pi)
        out = 0.5 * (out + out.T)
        return out, mean

    def phi_ntk(self, b: float, m: float, TG: np.ndarray) -> np.ndarray:
        """E[phi'(y) phi'(y)' o (J T J')] for phi = b relu(x) + m relu(-x) (b = 1, m = -1: batch_norm
        alone), J = dy/dh = sqrt(B) / |z| (G - zz'/|z|^2), TG = G T G (the module docstring)."""
        B = self.B
        out = np.zeros((B, B))
        for w, s, K, Fp, H, V in self._nodes(b, m):
            TK = TG @ K
            TKd = np.einsum("nii->ni", TK)
            tr = TKd.sum(axis=1)
            mid = Fp * (TK + np.swapaxes(TK, 1, 2)) + H * TKd[:, None, :] + np.swapaxes(H, 1, 2) * TKd[:, :, None]
            M = K @ TG @ K
            Md = np.einsum("nii->ni", M)
            dV = Fp * M + 0.5 * np.swapaxes(H, 1, 2) * Md[:, :, None] + 0.5 * H * Md[:, None, :]
            node = TG[None] * Fp - s * mid + 0.5 * s * s * (tr[:, None, None] * V + 2.0 * dV)
            out += np.einsum("n,nij->ij", w, node)
        return 0.5 * (out + out.T)

    def _nodes(self, b: float, m: float):
        """Per block of quadrature nodes: (weights, s, K, F', H, V) of phi = b relu + m relu(-x)."""
        B, U = self.B, self.U
        s2, bm = b * b + m * m, b * m
        n = self.s.size
        step = max(1, _CHUNK // (4 * B * B))
        idx = np.arange(B)
        for a0 in range(0, n, step):
            sl = slice(a0, min(n, a0 + step))
            K = np.einsum("ik,nk,jk->nij", U, self.d(sl), U, optimize=True)
            q = np.maximum(np.einsum("nii->ni", K), 0.0)
            sq = np.sqrt(q)
            den = sq[:, :, None] * sq[:, None, :]
            with np.errstate(divide="ignore", invalid="ignore"):
                c = np.clip(np.where(den > 0, K / den, 0.0), -1.0, 1.0)
                c[:, idx, idx] = 1.0
                F = s2 * _k1(c) + 2.0 * bm * _k1(-c)                 # V = den F
                Fp = s2 * _k0(c) - 2.0 * bm * _k0(-c)                # E[phi'(z_a) phi'(z_b)]
                ratio = np.where(sq[:, None, :] > 0, sq[:, :, None] / sq[:, None, :], 0.0)
                H = ratio * (F - c * Fp)           # H_ab = 2 dV_ab / dq_b = E[phi(z_a) phi''(z_b)]
            w = _H * self.s[sl] * np.exp(self.logdet[sl]) * B
            yield w, self.s[sl, None, None], K, Fp, H, den * F

    def phi_backward(self, b: float, m: float, D: np.ndarray) -> np.ndarray:
        """The adjoint of phi_ntk (as a map of T, through T^G = G T G): the gradient second
        moment D at phi's output -> at batch_norm's input, E[J' D (D o phi' phi'') J] (docs/theory.md
        §A5.6's B int delta (Lambda_1 + Lambda_2 - Lambda_3)^G ds, with J_MATH = C + W below)."""
        B = self.B
        G = np.eye(B) - 1.0 / B
        out = np.zeros((B, B))
        for w, s, K, Fp, H, V in self._nodes(b, m):
            C = D[None] * Fp
            J = C + np.einsum("ij,nij->nj", D, H)[:, None, :] * np.eye(B)[None]   # C + diag(col sums)
            KJ = K @ J
            dv = np.einsum("ij,nij->n", D, V)
            node = C - s * (KJ + np.swapaxes(KJ, 1, 2)) + 0.5 * s * s * (dv[:, None, None] * K + 2.0 * KJ @ K)
            out += np.einsum("n,nij->ij", w, node)
        out = G @ out @ G
        return 0.5 * (out + out.T)

    def activation_fold(self, layer, st: State) -> tuple[State, Backward]:
        bm = _two_slopes(layer.act)
        if bm is None:   # pragma: no cover - refused by out_shape
            check_activation(layer, "activation")
        E, mean = self.phi_moments(*bm)
        mu = None if bm[0] + bm[1] == 0.0 else mean.reshape((st.N,) + st.spatial)
        T = None if self.TG is None else self.phi_ntk(*bm, self.TG).reshape(st.K.shape)
        return st.evolve(K=E.reshape(st.K.shape), T=T, mu=mu), _no_backward


def gradient_growth(B: int, fn: str = "relu", depth: int = 25, iters: int = 25) -> float:
    """The per-layer growth of the gradient's second moment at initialisation in a deep
    dense -> batch_norm -> phi MLP with batch B (docs/theory.md §A5.6, Yang et al. 2019): the top eigenvalue
    of the backward map at the forward fixed point (the weights' variance cancels: batch_norm is
    scale-free).  ~pi / (pi - 1) = 1.467 for relu at large B."""
    from ..activations import get_activation

    bm = _two_slopes(get_activation(fn))
    if bm is None:
        raise DomainError(f"gradient_growth: activation {fn!r} is not positively homogeneous")
    if isinstance(B, bool) or not isinstance(B, (int, np.integer)) or B < 4:
        raise DomainError(f"gradient_growth: expected a batch size B >= 4, got {B!r}")
    G = np.eye(B) - 1.0 / B
    rng = np.random.default_rng(0)
    A = rng.standard_normal((B, B))
    K = np.eye(B) + 0.3 + 0.1 * (A @ A.T) / B
    for _ in range(depth):     # the forward fixed point (the NNGP of one more block)
        law = _law_of(K, G)
        K, _ = law.phi_moments(*bm)
    law = _law_of(K, G)
    D = np.eye(B)
    lam = 0.0
    for _ in range(iters):     # power iteration on the second moment
        D2 = law.phi_backward(*bm, D)
        lam = float(np.sum(D2 * D) / np.sum(D * D))
        D = D2 / np.linalg.norm(D2)
    return lam


def _law_of(S: np.ndarray, G: np.ndarray) -> BatchNormLaw:
    SG = G @ S @ G
    lam, U = np.linalg.eigh(0.5 * (SG + SG.T))
    return BatchNormLaw(U, np.where(lam > _ZERO * lam.max(), lam, 0.0), S.shape[0])


def _no_backward(G: np.ndarray) -> np.ndarray:
    raise DomainError("batch_norm: gradients through batch statistics are not implemented (they "
                      "couple the whole batch, docs/theory.md §A5.6), so propagate's gradient diagnostics "
                      "are unavailable for this network")


class BatchNorm(Layer):
    """Train-mode BatchNorm over the batch and all positions, no affine parameters, eps = 0
    (the module docstring has the maps and what is refused)."""

    name = "batch_norm"
    spec_key = "batch_norm"
    couples_batch = True     # FiniteNetwork.empirical_ntk seeds one output at a time

    def out_shape(self, shape: Shape, where: str) -> Shape:
        if not shape.gaussian:
            raise DomainError(
                f"{where}: batch_norm needs Gaussian inputs (the output of a dense or conv layer, "
                "possibly through pooling); put a dense or conv layer before it")
        return Shape(shape.spatial, shape.channels, gaussian=False, fresh=shape.fresh, law="batch_norm")

    def fold(self, st: State) -> tuple[State, Backward]:
        if st.cross:
            raise DomainError("batch_norm: with X2 the batch is ambiguous (batch statistics are "
                              "those of one batch); compute kernel([X; X2]) and take its block")
        S = st.matrix(st.K)
        B = S.shape[0]
        if B < 2:
            raise DomainError("batch_norm: a batch of one value (one input, one position) has zero "
                              "variance, so batch normalisation is undefined")
        if st.mu is not None and np.any(st.mu != 0):   # pragma: no cover - refused by out_shape
            raise DomainError("batch_norm: inputs with a non-zero channel mean are not supported")
        G = np.eye(B) - 1.0 / B
        SG = G @ S @ G
        SG = 0.5 * (SG + SG.T)
        lam, U = np.linalg.eigh(SG)
        top = lam.max() if lam.size else 0.0
        if not top > 1e-12 * np.abs(np.diagonal(S)).max() or not math.isfinite(top):
            raise DomainError("batch_norm: the centred batch covariance is zero (every input gives "
                              "the same units), so batch normalisation is undefined")
        lam = np.where(lam > _ZERO * top, lam, 0.0)
        TG = None
        if st.T is not None:
            rank = int(np.count_nonzero(lam))
            if rank < 3:
                raise DomainError(
                    f"batch_norm: the NTK is infinite for this batch: its centred covariance has "
                    f"rank {rank} < 3, and E[1/|z|^2] diverges (the gradient through the batch "
                    "statistics is unbounded); use a larger batch or ask for the NNGP only (ntk=False)")
            TG = G @ st.matrix(st.T) @ G
            TG = 0.5 * (TG + TG.T)
        law = BatchNormLaw(U, lam, B, TG)
        K = law.second_moment()
        K = 0.5 * (K + K.T)
        T = None if TG is None else law.phi_ntk(1.0, -1.0, TG).reshape(st.K.shape)
        out = st.evolve(K=K.reshape(st.K.shape), T=T, mu=None)
        out.law = law          # read by an activation right after (dropped by any other layer)
        return out, _no_backward

    # -- finite width: statistics over the batch and positions (axes 0 .. D) --
    def apply(self, p, x):
        ax = tuple(range(x.ndim - 1))
        xc = x - x.mean(axis=ax, keepdims=True)
        sd = np.sqrt((xc * xc).mean(axis=ax, keepdims=True))
        y = xc / sd
        return y, (y, sd)

    def vjp(self, p, cache, gy):
        y, sd = cache
        ax = tuple(range(y.ndim - 1))
        return (gy - gy.mean(axis=ax, keepdims=True) - y * (gy * y).mean(axis=ax, keepdims=True)) / sd

    def to_spec(self) -> dict:
        return {"layer": "batch_norm"}


def batch_norm() -> BatchNorm:
    """Train-mode BatchNorm (batch and positions), no affine parameters, eps = 0."""
    return BatchNorm()


__all__ = ["BatchNorm", "BatchNormLaw", "batch_norm", "gradient_growth"]
