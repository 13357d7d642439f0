"""Multi-head self-attention over the positions of (N, T, channels) inputs (docs/theory.md §A5.5;
neural-tangents' ``stax.GlobalSelfAttention``).

It means what NT means with n_heads = heads, W_query_std^2 = sigma_q2 (key, value, out likewise),
linear_scaling = (scaling == "linear"), b_std = None and no positional embedding.  With raw
N(0, 1) weights, inputs x (T positions, C channels) and, per head h, keys k = x W_K^h,
values v = x W_V^h (n_k and n_v channels per head):

* ``scaling = "linear"``: queries are the keys (NT ties W_Q to W_K), logits
  L = sqrt(sigma_q2 sigma_k2) k k' / (C n_k): they converge to sqrt(sigma_q2 sigma_k2) K(s, t),
  the input's own kernel, so the attention weights A = mechanism(L) are deterministic in the
  limit (softmax over t, identity, relu or abs entrywise);
* ``scaling = "sqrt"``: independent W_Q, logits q k' sqrt(sigma_q2 sigma_k2) / (C sqrt(n_k))
  (torch's q k'/sqrt(d_head)), Gaussian in the limit of wide heads (Hron et al. 2020) with
  covariance g2 K[ns, ms'] K[nt, mt'] [D]; the identity mechanism has a closed form, softmax is
  an expectation over that Gaussian (below, "Gaussian logits");
* output y = sqrt(sigma_o2 sigma_v2 / (H n_v C)) concat_h(A^h v^h) W_O (no bias);
* ``causal``: position s attends to t <= s only (1-D positions; softmax over t <= s, the other
  mechanisms zero for t > s).  Not in NT; checked against wide networks only.

Kernel maps (A_n the attention weights of input n from its own block K_nn, A = BlockDiag(A_n),
c2 = sigma_o2 sigma_v2, g2 = sigma_q2 sigma_k2, M the causal mask or all ones):

| | linear | sqrt, identity |
|---|---|---|
| NNGP | c2 A K A' | c2 g2 K o S, S[ns, ms'] = sum_tt' M[s,t] M[s',t'] K[nt, mt']^2 |
| NTK (NTK param.) | c2 A T A' + 2 NNGP | c2 g2 (T o S + 2 K o R) + 4 NNGP, R = the same sums of K o T |
| backward | c2 A_n' G A_n | c2 g2 (G o S_n + 2 K_n o M'(G o K_n)M) |

**Gaussian logits** (scaling "sqrt", softmax; docs/theory.md, "Attention with Gaussian logits"
[D]).  With A = softmax(L) per row and J_s = dA_s/dL_s = diag(a_s) - a_s a_s', E over the logits:
NNGP c2 E[A K A'];  NTK (NTK param.) c2 E[A T A'] + c2 g2 (T o E Phi(K, K) + K o E Phi(K, T))
+ 2 NNGP + 2 c2 g2 K o E Phi(K, K), Phi(X, Y)[ns, ms'] = sum_tt' X[nt, mt'] (J_s Y J_s')[t, t']
(the four terms: values/W_V, W_O, queries/W_Q and keys/W_K, whose logit gradients do not vanish
here); backward c2 E[A_n' G A_n] + c2 g2 G o E Phi(K, K)_nn + c2 g2 E[sum_ss' (G o K_n)[s, s'] J_s
K_n J_s'].  The expectations have no closed form: they are means over SQRT_SAMPLES draws
L^n = sqrt(g2) F_n Z F_n' (F F' = K, Z iid N(0, 1)), antithetic pairs from one fixed seed, so the
maps are deterministic and the forward and backward maps use the same draws; their standard
error from the spread of (at least 16) batch means is kept in ``mc_error``.  With g2 = 0 they are the uniform map exactly.
Cost O(SQRT_SAMPLES N^2 P^3) time and O(SQRT_SAMPLES N^2 P^2) memory traffic (in batches of at
most 2^21 entries), measured single-threaded on a loaded 2-core machine: NNGP 0.3 s, propagate
0.6 s, NTK 1.8 s at N = 8, P = 6; NNGP 8 s, propagate 11 s, NTK 48 s at N = 32, P = 8.  (A
multithreaded BLAS on a busy machine made the small matmuls here 30x slower: set
OPENBLAS_NUM_THREADS=1.)

In the linear case the gradients through the logits vanish in the limit (docs/theory.md §A5.5, NT), so only
W_V and W_O contribute, each one NNGP; in the sqrt case with the identity mechanism W_Q, W_K,
W_V, W_O each contribute one NNGP, and the input's gradient enters through queries, keys and
values (the three terms; the backward map has the same three).  The
standard parametrisation (lim Theta / n) replaces each weight's NNGP term by NNGP / sigma^2 of
that weight, present only when its fan-in is a width (W_O always; W_Q, W_K, W_V when the input is
not the data), as for dense layers (docs/theory.md §A4.2).  NT's limit takes the heads to infinity too; for
``"sqrt"`` the output is Gaussian only then (with few heads the empirical kernel of one network
does not concentrate, though its mean is still the NNGP).

Refused (one line each): scaling "sqrt" with relu or abs (the machinery above would serve them,
with J_s = diag(mechanism'(L_s)), but they are not checked), and inputs without positions.

**Tied attention** (``values = "input"``, :class:`TiedAttention`): TP II's transformer attention
(docs/theory.md §A5.5), where queries, keys and values are all the layer's input x (no projections, one
head): logits L = x x' / C (C channels), A = mechanism(L), output A x, or (A + I) x with
``skip``.  The logits converge to the input's own kernel block K_nn, so A_n = mechanism(K_nn) is
deterministic, and with B = A (+ I): NNGP B K B', NTK B T B' (no weights of its own, and the
logits' gradient vanishes in the limit), channel means B mu, backward B_n' G B_n.  A linear mix of
the input's units, so its output is Gaussian (and fresh) when its input is.  The skip is part of
the layer because a residual block around it would have a branch without a weight layer, whose
cross term with the shortcut (A K + K A') the residual combinator does not compute.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import DomainError
from .core import Backward, Layer, Param, Shape, State
from .layers import _variance, symmetrised

MECHANISMS = ("softmax", "identity", "relu", "abs")
SCALINGS = ("linear", "sqrt")
VALUES = ("weights", "input")
#: an argument of ``attention`` not given (None would let a JSON null through as a default)
_UNSET: Any = object()


def _flag(key: str, v: Any) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise DomainError(f"{key}: expected true or false, got {v!r}")
    return bool(v)


def _check_positions(shape: Shape, where: str, causal: bool) -> None:
    """Attention mixes positions: its input must have them (1-D ones for a causal mask)."""
    if not shape.spatial:
        raise DomainError(f"{where}: attention needs inputs with positions, shape (N, T, "
                          "channels); this layer's input has none")
    if causal and len(shape.spatial) != 1:
        raise DomainError(f"{where}.causal: a causal mask needs 1-D positions (N, T, channels), "
                          f"got {len(shape.spatial)}-D positions")


def _mechanism(L: np.ndarray, mech: str, mask: np.ndarray | None) -> np.ndarray:
    """The attention weights from logits L (..., P, P), over the last axis; mask: allowed (P, P)."""
    if mech == "softmax":
        if mask is not None:
            L = np.where(mask, L, -np.inf)
        L = L - L.max(axis=-1, keepdims=True)
        E = np.exp(L)
        return E / E.sum(axis=-1, keepdims=True)
    A = {"identity": lambda a: a, "relu": lambda a: np.maximum(a, 0.0), "abs": np.abs}[mech](L)
    return A if mask is None else np.where(mask, A, 0.0)


def _mechanism_vjp(L: np.ndarray, A: np.ndarray, gA: np.ndarray, mech: str,
                   mask: np.ndarray | None) -> np.ndarray:
    if mech == "softmax":
        return A * (gA - (gA * A).sum(axis=-1, keepdims=True))
    g = {"identity": lambda: gA, "relu": lambda: gA * (L > 0), "abs": lambda: gA * np.sign(L)}[mech]()
    return g if mask is None else np.where(mask, g, 0.0)


# ------------------------------------------------------------------------------------------
# Gaussian logits (scaling "sqrt"): the expectations over the logits' law
# ------------------------------------------------------------------------------------------
#: logit samples per expectation of the Gaussian-logit maps (scaling "sqrt", softmax): antithetic
#: pairs from one fixed seed, so every call (forward, backward, any variances) uses the same
#: numbers.  Their relative standard error (``mc_error``) is 3e-4 to 3e-3 at torch's default
#: init (g2 = 1/4; measured on nn.MultiheadAttention and a TransformerEncoder, d = 256, T = 6)
#: and ~1e-2 at g2 ~ 1, against the 3-6 % by which compare_model's measurement at width 256, or
#: the mean of 8 networks of width 1024, scatters (docs/theory.md, "Attention with Gaussian
#: logits")
SQRT_SAMPLES = 4096
_SQRT_BATCHES = 16
_SQRT_SEED = 20200
_BATCH_ENTRIES = 1 << 21


def _logit_factor(K4: np.ndarray) -> np.ndarray:
    """F (N, P, r) with F F' = K (the (N P) x (N P) input kernel), from its eigenvectors: the
    logits L^n = sqrt(g2) F_n Z F_n', Z an r x r matrix of iid N(0, 1), have covariance
    g2 K[ns, ms'] K[nt, mt'] (docs/theory.md, "Attention with Gaussian logits")."""
    N, P = K4.shape[:2]
    w, V = np.linalg.eigh(K4.reshape(N * P, N * P))
    keep = w > 1e-13 * max(float(w.max()), 0.0)
    return (V[:, keep] * np.sqrt(w[keep])).reshape(N, P, -1)


def _logit_batches(K4: np.ndarray, g2: float, samples: int, seed: int):
    """The logit samples (b, N, P, P) in batches of antithetic pairs (Z, -Z): at least
    _SQRT_BATCHES of them (the standard error's spread), more where a batch's (b, N, P, N, P)
    intermediates would pass _BATCH_ENTRIES (memory and cache)."""
    F = _logit_factor(K4)
    N, P, r = F.shape
    rng = np.random.default_rng(seed)
    batches = max(_SQRT_BATCHES, -(-samples * N * N * P * P // _BATCH_ENTRIES))
    half = max(1, samples // (2 * batches))
    for _ in range(max(1, samples // (2 * half))):
        Z = rng.standard_normal((half, r, r))
        FZ = np.matmul(F.reshape(1, -1, r), Z).reshape(half, F.shape[0], F.shape[1], r)
        L = math.sqrt(g2) * np.matmul(FZ, np.swapaxes(F, -1, -2)[None])
        yield np.concatenate([L, -L])


def _jacobian(L: np.ndarray, mech: str, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray,
                                                                        np.ndarray | None]:
    """A = mechanism(L) and its row Jacobians as dA_s/dL_s = diag(d_s) - p_s p_s' (all four
    mechanisms are of this form, symmetric): returns (A, D, Pm) with rows d_s, p_s (Pm None
    where p = 0, the entrywise mechanisms)."""
    A = _mechanism(L, mech, mask)
    if mech == "softmax":
        return A, A, A
    d = {"identity": np.ones_like(L), "relu": (L > 0).astype(float), "abs": np.sign(L)}[mech]
    return A, (d if mask is None else np.where(mask, d, 0.0)), None


def _left(Lf: np.ndarray, X4: np.ndarray) -> np.ndarray:
    """[i, n, s, m, u] = sum_t Lf[i, n, s, t] X4[n, t, m, u] (one matmul per input n)."""
    b, N, P = Lf.shape[:3]
    out = np.matmul(Lf.transpose(1, 0, 2, 3).reshape(N, b * P, P), X4.reshape(N, P, N * P))
    return out.reshape(N, b, P, N, P).transpose(1, 0, 2, 3, 4)


def _right(Y: np.ndarray, Rf: np.ndarray) -> np.ndarray:
    """[i, n, s, m, v] = sum_u Y[(i,) n, s, m, u] Rf[i, m, v, u], per sample."""
    b, N, P = Rf.shape[:3]
    Yt = np.moveaxis(Y, -2, -4).reshape(Y.shape[:-4] + (N, N * P, P))     # [(i,) m, (n s), u]
    return np.moveaxis(np.matmul(Yt, np.swapaxes(Rf, -1, -2)).reshape(b, N, N, P, P), 1, 3)


def _sum_right(Y: np.ndarray, Rf: np.ndarray) -> np.ndarray:
    """sum_i sum_u Y[i, n, s, m, u] Rf[i, m, v, u] -> (n, s, m, v): the sum over samples inside
    one matmul per input m."""
    b, N, P = Rf.shape[:3]
    Yt = Y.transpose(3, 1, 2, 0, 4).reshape(N, N * P, b * P)              # [m, (n s), (i u)]
    Rt = Rf.transpose(1, 0, 3, 2).reshape(N, b * P, P)                     # [m, (i u), v]
    return np.matmul(Yt, Rt).reshape(N, N, P, P).transpose(1, 2, 0, 3)


def _sum_left(Lf: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """sum_i sum_t Lf[i, n, s, t] Z[i, n, t, m, v] -> (n, s, m, v), one matmul per input n."""
    b, N, P = Lf.shape[:3]
    Lt = Lf.transpose(1, 2, 0, 3).reshape(N, P, b * P)                     # [n, s, (i t)]
    Zt = Z.transpose(1, 0, 2, 3, 4).reshape(N, b * P, N * P)               # [n, (i t), (m v)]
    return np.matmul(Lt, Zt).reshape(N, P, N, P)


def _phi(D, Pm, X4, Y4):
    """sum over a batch of Phi(X, Y)[ns, ms'] = sum_tt' X[nt, mt'] (J_s Y J_s')[tt'] (J_s the
    row Jacobian of input n at position s, J_s' of input m at s')."""
    out = _sum_right(_left(D, X4 * Y4), D)
    if Pm is None:
        return out
    zy = _right(Y4, Pm)                                                    # (Y^{nm} p^m_v)_t
    zx = zy if Y4 is X4 else _right(X4, Pm)
    out -= _sum_left(D, zx * zy)
    wy = _left(Pm, Y4)                                                     # (p^n_s' Y^{nm})_u
    wx = wy if Y4 is X4 else _left(Pm, X4)
    out -= _sum_right(wx * wy, D)
    ey = _right(wy, Pm)
    out += ((ey * ey) if Y4 is X4 else (_right(wx, Pm) * ey)).sum(axis=0)
    return out


def _softmax_parts(A: np.ndarray, K4: np.ndarray, T4: np.ndarray | None) -> dict:
    """The batch sums of A K A', A T A', Phi(K, K), Phi(K, T) for the softmax (D = Pm = A in
    _phi's terms, K and T symmetric), sharing _phi's intermediates: A K, A T and the per-sample
    a_s K a_v' serve all four."""
    LK = _left(A, K4)
    EK = _right(LK, A)
    out = {"AKA": EK.sum(axis=0)}
    if T4 is None:
        return out
    LT = _left(A, T4)
    ET = _right(LT, A)
    zK = LK.transpose(0, 3, 4, 1, 2)                   # (K^{nm} a^m_v)_t, by the symmetry of K
    zT = LT.transpose(0, 3, 4, 1, 2)
    out["ATA"] = ET.sum(axis=0)
    out["PKK"] = (_sum_right(_left(A, K4 * K4), A) - _sum_left(A, zK * zK)
                  - _sum_right(LK * LK, A) + (EK * EK).sum(axis=0))
    out["PKT"] = (_sum_right(_left(A, K4 * T4), A) - _sum_left(A, zK * zT)
                  - _sum_right(LK * LT, A) + (EK * ET).sum(axis=0))
    return out


def _mean_se(parts: list[np.ndarray], counts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The mean over all samples and its standard error from the batches' means."""
    sums = np.array(parts)
    c = np.array(counts, dtype=float).reshape((-1,) + (1,) * (sums.ndim - 1))
    mean = sums.sum(axis=0) / c.sum()
    se = np.zeros_like(mean) if len(parts) < 2 else (sums / c).std(axis=0, ddof=1) / math.sqrt(len(parts))
    return mean, se


def gaussian_logit_moments(K4: np.ndarray, T4: np.ndarray | None, g2: float,
                           mechanism: str = "softmax", mask: np.ndarray | None = None,
                           samples: int = SQRT_SAMPLES, seed: int = _SQRT_SEED) -> dict:
    """The expectations over Gaussian logits L^n[s, t] (covariance g2 K[ns, ms'] K[nt, mt']) of
    the sqrt-scaled attention's maps (docs/theory.md, "Attention with Gaussian logits"):
    ``AKA`` = E[A K A'], ``ATA`` = E[A T A'], ``PKK`` = E[Phi(K, K)], ``PKT`` = E[Phi(K, T)], each
    (N, P, N, P) as a (mean, standard error) pair; K4, T4 in (N, P, N, P).  With g2 = 0 the
    logits are 0 and every value is exact (one sample, standard error 0)."""
    if g2 == 0.0:
        samples = 2 * _SQRT_BATCHES
    acc: dict[str, list] = {"AKA": [], "ATA": [], "PKK": [], "PKT": []}
    counts = []
    for L in _logit_batches(K4, g2, samples, seed):
        A, D, Pm = _jacobian(L, mechanism, mask)
        counts.append(L.shape[0])
        if mechanism == "softmax":
            for k, v in _softmax_parts(A, K4, T4).items():
                acc[k].append(v)
            continue
        acc["AKA"].append(_sum_right(_left(A, K4), A))
        if T4 is not None:
            acc["PKK"].append(_phi(D, Pm, K4, K4))
            acc["ATA"].append(_sum_right(_left(A, T4), A))
            acc["PKT"].append(_phi(D, Pm, K4, T4))
    return {k: _mean_se(v, counts) for k, v in acc.items() if v}


def gaussian_logit_backward(K4: np.ndarray, G: np.ndarray, g2: float, c2: float,
                            mechanism: str = "softmax", mask: np.ndarray | None = None,
                            samples: int = SQRT_SAMPLES, seed: int = _SQRT_SEED
                            ) -> tuple[np.ndarray, np.ndarray]:
    """The backward map of sqrt-scaled attention (docs/theory.md, "Attention with Gaussian
    logits"): per input n, G_in = c2 E[A' G A] (values) + c2 g2 G o E[Phi(K, K)] (queries) +
    c2 g2 E[sum_ss' (G o K)[s, s'] J_s K J_s'] (keys), over the same logit samples as the
    forward maps; (mean, standard error), each (N, P, P)."""
    N, P = K4.shape[:2]
    if g2 == 0.0:
        samples = 2 * _SQRT_BATCHES
    Kn = np.ascontiguousarray(np.moveaxis(np.diagonal(K4, axis1=0, axis2=2), -1, 0))
    W = G * Kn
    parts, counts = [], []
    for L in _logit_batches(K4, g2, samples, seed):
        A, D, Pm = _jacobian(L, mechanism, mask)
        counts.append(L.shape[0])
        Dt = np.swapaxes(D, -1, -2)
        val = (np.swapaxes(A, -1, -2) @ (G[None] @ A)).sum(axis=0)
        phi = (D @ (Kn * Kn)[None] @ Dt).sum(axis=0)
        psi = (Dt @ (W[None] @ D)).sum(axis=0) * Kn
        if Pm is not None:
            PK = Pm @ Kn[None]                                     # rows p_s' K
            phi -= (D @ np.swapaxes(PK, -1, -2) ** 2).sum(axis=0)
            phi -= (PK ** 2 @ Dt).sum(axis=0)
            pkp = PK @ np.swapaxes(Pm, -1, -2)                     # p_s' K p_v
            phi += (pkp ** 2).sum(axis=0)
            wd = np.swapaxes(W, -1, -2)[None] @ D
            t2 = (np.swapaxes(wd * PK, -1, -2) @ Pm).sum(axis=0)
            psi -= t2 + np.swapaxes(t2, -1, -2)
            psi += (np.swapaxes(Pm, -1, -2) @ ((W[None] * pkp) @ Pm)).sum(axis=0)
        parts.append(c2 * val + c2 * g2 * (G * phi + psi))
    return _mean_se(parts, counts)


class Attention(Layer):
    """Multi-head self-attention (the module docstring has the definition and the maps)."""

    name = "attention"
    spec_key = "attention"

    def __init__(self, heads: Any = 1, mechanism: str = "softmax", scaling: str = "linear",
                 sigma_q2: Any = 1.0, sigma_k2: Any = 1.0, sigma_v2: Any = 1.0, sigma_o2: Any = 1.0,
                 causal: Any = False):
        if isinstance(heads, bool) or not isinstance(heads, (int, np.integer)) or heads < 1:
            raise DomainError(f"heads: expected a positive integer, got {heads!r}")
        self.heads = int(heads)
        if not isinstance(mechanism, str) or mechanism.lower() not in MECHANISMS:
            raise DomainError(f"mechanism: expected one of {', '.join(MECHANISMS)}, got {mechanism!r}")
        self.mechanism = mechanism.lower()
        if not isinstance(scaling, str) or scaling.lower() not in SCALINGS:
            raise DomainError(f"scaling: expected one of {', '.join(SCALINGS)}, got {scaling!r}")
        self.scaling = scaling.lower()
        if self.scaling == "sqrt" and self.mechanism not in ("identity", "softmax"):
            raise DomainError(
                f"scaling: 'sqrt' with mechanism {self.mechanism!r} is not supported: with "
                "q.k/sqrt(n) logits the attention weights stay Gaussian in the limit (Hron et al. "
                "2020); only 'identity' (exact) and 'softmax' (an expectation over the logits, "
                "docs/theory.md) are implemented")
        self.sigma_q2 = _variance("sigma_q2", sigma_q2)
        self.sigma_k2 = _variance("sigma_k2", sigma_k2)
        self.sigma_v2 = _variance("sigma_v2", sigma_v2)
        self.sigma_o2 = _variance("sigma_o2", sigma_o2)
        self.causal = _flag("causal", causal)
        #: the relative standard errors of the last fold's expectations over the logits
        #: (scaling "sqrt", softmax): {"nngp": ..., "ntk": ...}, each the largest standard error
        #: over the largest entry; None before a fold or for the closed-form maps
        self.mc_error: dict | None = None

    # ---- shapes and parameters ----
    def out_shape(self, shape: Shape, where: str) -> Shape:
        _check_positions(shape, where, self.causal)
        return Shape(shape.spatial, None, gaussian=True, fresh=True)

    def params(self, shape: Shape) -> list[Param]:
        role = "input" if shape.channels is not None else "hidden"
        fan = shape.channels
        out = []
        if self.scaling == "sqrt":
            out.append(Param("query", "weight", role, fan, self.sigma_q2, (self.heads, shape.channels, None)))
        out += [Param("key", "weight", role, fan, self.sigma_k2, (self.heads, shape.channels, None)),
                Param("value", "weight", role, fan, self.sigma_v2, (self.heads, shape.channels, None)),
                Param("out", "weight", "hidden", None, self.sigma_o2, (None, None))]
        return out

    @property
    def _qk(self) -> float:
        return math.sqrt(self.sigma_q2 * self.sigma_k2)

    def _mask(self, P: int) -> np.ndarray | None:
        return np.tri(P, dtype=bool) if self.causal else None

    # ---- the kernel maps ----
    def weights(self, st: State) -> np.ndarray:
        """The limiting attention weights A_n (N, P, P) of the linear scaling."""
        blocks = st.blocks(st.K)
        return _mechanism(self._qk * blocks, self.mechanism, self._mask(st.P))

    def fold(self, st: State) -> tuple[State, Backward]:
        N, P = st.N, st.P
        c2 = self.sigma_o2 * self.sigma_v2
        K4 = st.K.reshape(N, P, N, P)
        T4 = None if st.T is None else st.T.reshape(N, P, N, P)
        hidden = not st.finite
        if self.scaling == "linear":
            A = self.weights(st)

            def mix(X4):
                return np.einsum("nst,ntmu,mvu->nsmv", A, X4, A, optimize=True)

            AKA = mix(K4)
            K = c2 * AKA
            T = None
            if T4 is not None:
                T = c2 * mix(T4)
                if st.param == "ntk":
                    T += 2.0 * K
                else:   # W_O always a width's fan-in; W_V only after a hidden layer
                    T += self.sigma_v2 * AKA
                    if hidden:
                        T += self.sigma_o2 * AKA

            def backward(G):
                return c2 * np.einsum("nts,ntu,nuv->nsv", A, G, A, optimize=True)
        elif self.mechanism == "identity":
            g2 = self._qk ** 2
            M = np.ones((P, P)) if not self.causal else np.tri(P)

            def sums(X4):
                return np.einsum("st,ntmu,vu->nsmv", M, X4, M, optimize=True)

            KS = K4 * sums(K4 * K4)
            K = c2 * g2 * KS
            T = None
            if T4 is not None:
                T = c2 * g2 * (T4 * sums(K4 * K4) + 2.0 * K4 * sums(K4 * T4))
                if st.param == "ntk":
                    T += 4.0 * K
                else:   # each weight's term NNGP / its variance, where its fan-in is a width
                    prods = [self.sigma_k2 * self.sigma_v2 * self.sigma_o2,   # W_Q
                             self.sigma_q2 * self.sigma_v2 * self.sigma_o2,   # W_K
                             self.sigma_q2 * self.sigma_k2 * self.sigma_o2]   # W_V
                    w = self.sigma_q2 * self.sigma_k2 * self.sigma_v2         # W_O (always)
                    if hidden:
                        w += sum(prods)
                    T += w * KS
            Kn = st.blocks(st.K)
            Sn = np.einsum("st,ntu,vu->nsv", M, Kn * Kn, M, optimize=True)

            def backward(G):   # values and keys give K o M'(G o K)M each, queries G o S
                R = np.einsum("st,nsv,vu->ntu", M, G * Kn, M, optimize=True)
                return c2 * g2 * (G * Sn + 2.0 * Kn * R)
        else:
            g2 = self._qk ** 2
            mask = self._mask(P)
            Kc = np.array(K4)
            if not np.all(np.isfinite(Kc)):
                raise DomainError("attention: its input kernel overflows float64 (the variances "
                                  "grow without bound before it); use smaller variances or fewer layers")
            m = gaussian_logit_moments(Kc, T4, g2, self.mechanism, mask)
            AKA = m["AKA"][0]
            K = c2 * AKA
            scale = float(np.abs(AKA).max()) or 1.0
            self.mc_error = {"nngp": float(m["AKA"][1].max()) / scale}
            T = None
            if T4 is not None:
                PKK = m["PKK"][0]
                qk = c2 * g2 * Kc * PKK           # the W_Q term, and the W_K term (equal)
                T = c2 * m["ATA"][0] + c2 * g2 * (T4 * PKK + Kc * m["PKT"][0])
                if st.param == "ntk":
                    T += 2.0 * K + 2.0 * qk
                else:   # each weight's term over its variance, where its fan-in is a width
                    T += self.sigma_v2 * AKA                                   # W_O
                    if hidden:
                        T += self.sigma_o2 * AKA + (self.sigma_k2 + self.sigma_q2) * \
                            self.sigma_v2 * self.sigma_o2 * Kc * PKK
                # a bound: the parts' standard errors added (W_Q, W_K, W_V, W_O terms at most 2 NNGP + 2 qk)
                se = c2 * (m["ATA"][1] + g2 * (np.abs(T4) * m["PKK"][1] + np.abs(Kc) * m["PKT"][1])
                           + 2.0 * m["AKA"][1] + 2.0 * g2 * np.abs(Kc) * m["PKK"][1])
                self.mc_error["ntk"] = float(se.max()) / (float(np.abs(T).max()) or 1.0)

            def backward(G):
                return gaussian_logit_backward(Kc, G, g2, c2, self.mechanism, mask)[0]

        K = K.reshape(st.K.shape)
        T = None if T is None else T.reshape(st.K.shape)
        return st.evolve(K=symmetrised(st, K), T=symmetrised(st, T), mu=None, finite=False), backward

    # ---- the finite-width network (raw N(0, 1) weights, as NT's init_fn) ----
    def _dims(self, width: int) -> int:
        return max(1, width // self.heads)

    def init(self, rng, shape, width):
        C, H = shape[-1], self.heads
        n = self._dims(width)
        p = {"K": rng.standard_normal((H, C, n)), "V": rng.standard_normal((H, C, n)),
             "O": rng.standard_normal((H * n, width))}
        if self.scaling == "sqrt":
            p["Q"] = rng.standard_normal((H, C, n))
        return p, shape[:-1] + (width,)

    def _alpha(self, C: int, n: int) -> float:
        return self._qk / (C * (n if self.scaling == "linear" else math.sqrt(n)))

    def apply(self, p, x):
        shape = x.shape
        N, C = shape[0], shape[-1]
        X = x.reshape(N, -1, C)
        P = X.shape[1]
        H, _, n = p["K"].shape
        mask = self._mask(P)
        Kk = np.einsum("npc,hck->hnpk", X, p["K"])
        Kq = Kk if self.scaling == "linear" else np.einsum("npc,hck->hnpk", X, p["Q"])
        L = self._alpha(C, n) * np.einsum("hnsk,hntk->hnst", Kq, Kk)
        A = _mechanism(L, self.mechanism, mask)
        V = np.einsum("npc,hck->hnpk", X, p["V"])
        Hd = np.einsum("hnst,hntk->hnsk", A, V)
        cat = np.moveaxis(Hd, 0, 2).reshape(N, P, H * n)
        co = math.sqrt(self.sigma_o2 * self.sigma_v2 / (H * n * C))
        y = co * (cat @ p["O"])
        return y.reshape(shape[:-1] + (p["O"].shape[1],)), (X, Kq, Kk, L, A, V, cat, co, shape)

    def _grads(self, p, cache, gy):
        """Per-head pieces of the backward pass for an output gradient gy."""
        X, Kq, Kk, L, A, V, cat, co, shape = cache
        N, P, C = X.shape
        H, _, n = p["K"].shape
        D = gy.reshape(N, P, -1)
        Oh = p["O"].reshape(H, n, -1)                           # rows of W_O per head (cat order)
        DO = co * np.einsum("npc,hkc->hnpk", D, Oh)            # d y / d head outputs (H, N, P, n)
        gV = np.einsum("hnst,hnsk->hntk", A, DO)                # d / d values
        gA = np.einsum("hnsk,hntk->hnst", DO, V)
        gL = _mechanism_vjp(L, A, gA, self.mechanism, self._mask(P)) * self._alpha(C, n)
        return D, DO, gV, gL

    def vjp(self, p, cache, gy):
        X, Kq, Kk, L, A, V, cat, co, shape = cache
        D, DO, gV, gL = self._grads(p, cache, gy)
        gx = np.einsum("hnpk,hck->npc", gV, p["V"])
        if self.scaling == "linear":    # L = alpha k k', k = x W_K
            gk = np.einsum("hnst,hntk->hnsk", gL + np.swapaxes(gL, -1, -2), Kk)
            gx += np.einsum("hnpk,hck->npc", gk, p["K"])
        else:
            gq = np.einsum("hnst,hntk->hnsk", gL, Kk)
            gk = np.einsum("hnst,hnsk->hntk", gL, Kq)
            gx += np.einsum("hnpk,hck->npc", gq, p["Q"]) + np.einsum("hnpk,hck->npc", gk, p["K"])
        return gx.reshape(shape)

    def ntk_terms(self, p, cache, d1, d2):
        X, Kq, Kk, L, A, V, cat, co, shape = cache
        F = np.einsum("npc,mtc->npmt", X, X)                    # x . x' (raw)

        def pieces(d):
            D, DO, gV, gL = self._grads(p, cache, d)
            out = {"V": gV}                                     # d / d W_V = x' gV
            if self.scaling == "linear":
                out["K"] = np.einsum("hnst,hntk->hnsk", gL + np.swapaxes(gL, -1, -2), Kk)
            else:
                out["Q"] = np.einsum("hnst,hntk->hnsk", gL, Kk)
                out["K"] = np.einsum("hnst,hnsk->hntk", gL, Kq)
            return D, out

        D1, e1 = pieces(d1)
        D2, e2 = pieces(d2)
        total = co ** 2 * np.einsum("npk,mtk,npc,mtc->nm", cat, cat, D1, D2, optimize=True)   # W_O
        for key in e1:
            total = total + np.einsum("npmt,hnpk,hmtk->nm", F, e1[key], e2[key], optimize=True)
        return total

    def to_spec(self) -> dict:
        return {"layer": "attention", "heads": self.heads, "mechanism": self.mechanism,
                "scaling": self.scaling, "sigma_q2": self.sigma_q2, "sigma_k2": self.sigma_k2,
                "sigma_v2": self.sigma_v2, "sigma_o2": self.sigma_o2, "causal": self.causal}


class TiedAttention(Layer):
    """Attention with queries = keys = values = the input, output (A [+ I]) x (docs/theory.md §A5.5; the
    module docstring has the maps)."""

    name = "attention"
    spec_key = "attention"

    def __init__(self, mechanism: str = "softmax", causal: Any = False, skip: Any = False):
        if not isinstance(mechanism, str) or mechanism.lower() not in MECHANISMS:
            raise DomainError(f"mechanism: expected one of {', '.join(MECHANISMS)}, got {mechanism!r}")
        self.mechanism = mechanism.lower()
        self.causal, self.skip = _flag("causal", causal), _flag("skip", skip)

    def out_shape(self, shape: Shape, where: str) -> Shape:
        _check_positions(shape, where, self.causal)
        # the output mixes each unit's own positions, so it stays Gaussian when the input is
        return Shape(shape.spatial, shape.channels, gaussian=shape.gaussian and shape.law is None,
                     fresh=shape.fresh)

    def _mask(self, P: int) -> np.ndarray | None:
        return np.tri(P, dtype=bool) if self.causal else None

    def mixing(self, st: State) -> np.ndarray:
        """B_n = A_n (+ I with skip), A_n = mechanism(K_nn): the limiting token mixing (N, P, P)."""
        B = _mechanism(st.blocks(st.K), self.mechanism, self._mask(st.P))
        if self.skip:
            B = B + np.eye(st.P)
        return B

    def fold(self, st: State) -> tuple[State, Backward]:
        N, P = st.N, st.P
        B = self.mixing(st)

        def mix(X):
            return np.einsum("nst,ntmu,mvu->nsmv", B, X.reshape(N, P, N, P), B,
                             optimize=True).reshape(st.K.shape)

        K = mix(st.K)
        T = None if st.T is None else mix(st.T)
        mu = None if st.mu is None else \
            np.einsum("nst,nt->ns", B, st.mu.reshape(N, P)).reshape(st.mu.shape)

        def backward(G):
            return np.einsum("nts,ntu,nuv->nsv", B, G, B, optimize=True)

        return st.evolve(K=symmetrised(st, K), T=symmetrised(st, T), mu=mu), backward

    # ---- the finite-width network: no parameters ----
    def apply(self, p, x):
        shape = x.shape
        N, C = shape[0], shape[-1]
        X = x.reshape(N, -1, C)
        L = np.einsum("nsc,ntc->nst", X, X) / C
        A = _mechanism(L, self.mechanism, self._mask(X.shape[1]))
        y = A @ X
        if self.skip:
            y = y + X
        return y.reshape(shape), (X, L, A, shape)

    def vjp(self, p, cache, gy):
        X, L, A, shape = cache
        D = gy.reshape(X.shape)
        gx = np.swapaxes(A, -1, -2) @ D
        if self.skip:
            gx = gx + D
        # at finite width the weights A depend on x through the logits x x' / C
        gA = np.einsum("nsc,ntc->nst", D, X)
        gL = _mechanism_vjp(L, A, gA, self.mechanism, self._mask(X.shape[1])) / X.shape[-1]
        gx = gx + (gL + np.swapaxes(gL, -1, -2)) @ X
        return gx.reshape(shape)

    def to_spec(self) -> dict:
        return {"layer": "attention", "values": "input", "mechanism": self.mechanism,
                "causal": self.causal, "skip": self.skip}


def attention(heads: Any = _UNSET, mechanism: str = "softmax", scaling: Any = _UNSET,
              sigma_q2: Any = _UNSET, sigma_k2: Any = _UNSET, sigma_v2: Any = _UNSET,
              sigma_o2: Any = _UNSET, causal: bool = False, values: str = "weights",
              skip: Any = False) -> "Attention | TiedAttention":
    """Self-attention over positions (docs/theory.md §A5.5).  ``values = "weights"`` (default): NT's
    GlobalSelfAttention with projections (heads default 1, scaling "linear", variances 1);
    ``values = "input"``: the tied attention of TP II's transformer, no projections, output
    A x, or (A + I) x with ``skip`` (the module docstring)."""
    if not isinstance(values, str) or values.lower() not in VALUES:
        raise DomainError(f"values: expected one of {', '.join(VALUES)}, got {values!r}")
    if values.lower() == "input":
        given = [k for k, v in (("heads", heads), ("sigma_q2", sigma_q2), ("sigma_k2", sigma_k2),
                                ("sigma_v2", sigma_v2), ("sigma_o2", sigma_o2)) if v is not _UNSET]
        if given:
            raise DomainError(f"{given[0]}: attention with values 'input' has one head and no "
                              "projections (queries, keys and values are the input), so it takes "
                              "no heads or sigma_q2/k2/v2/o2")
        if scaling is not _UNSET and (not isinstance(scaling, str) or scaling.lower() != "linear"):
            raise DomainError(f"scaling: attention with values 'input' has logits x.x'/n "
                              f"(scaling 'linear', docs/theory.md §A5.5), got {scaling!r}")
        return TiedAttention(mechanism, causal, skip)
    if not isinstance(skip, (bool, np.bool_)) or skip:
        raise DomainError(f"skip: only attention with values 'input' has a built-in skip (got "
                          f"{skip!r}); put attention with projections in a residual block")
    return Attention(1 if heads is _UNSET else heads, mechanism, "linear" if scaling is _UNSET else scaling,
                     *(1.0 if v is _UNSET else v for v in (sigma_q2, sigma_k2, sigma_v2, sigma_o2)),
                     causal)


__all__ = ["Attention", "TiedAttention", "attention", "MECHANISMS", "SCALINGS", "VALUES"]
