"""abc-parametrizations, their infinite-width regimes, and muP tables (numpy only).

The setting is Yang & Hu 2021 ("Feature learning in infinite-width neural networks", Tensor
Programs IV; docs/theory.md §A7.1): an MLP with L hidden layers of width n and a fixed input dimension d,

    h^1 = W^1 xi,   x^l = phi(h^l),   h^{l+1} = W^{l+1} x^l,   f = W^{L+1} x^L,

where every weight is a multiplier times a trained parameter,

    W^l = n^{-a_l} w^l,   w^l_{ij} ~ N(0, n^{-2 b_l}),   learning rate of w^l = eta n^{-c_l}.

Layer 1 is the input layer (fan-in d fixed), 2..L the hidden layers, L+1 the output layer.
Biases are input weights (fan-in 1): they take the input layer's exponents.  Yang & Hu use one
c for every layer; a per-layer c_l is the same thing after the symmetry below, and is what
muP with Adam needs (TP V, Yang, Hu et al. 2022, Table 3).

What is computed (each condition is also reported, with its value, by `check`):

Stability at initialisation (h^l, x^l = Theta(1) and f_0 = O(1)):

    a_1 + b_1 = 0,   a_l + b_l = 1/2 (2 <= l <= L),   a_{L+1} + b_{L+1} >= 1/2.

Anything else blows up (or vanishes) at initialisation and is refused with DomainError.

The exponent r (Delta x^L_t = Theta(n^{-r}): how fast features move with width).  With
m = min(a_{L+1} + b_{L+1}, 2 a_{L+1} + c_{L+1}) the size exponent of the backward signal
dx^L (initial readout weights, or the readout's own update, whichever is larger),

    SGD:   r = m - 1 + min_{l=1..L} (2 a_l + c_l + [l = 1])
    Adam:  r =   - 1 + min_{l=1..L} (  a_l + c_l + [l = 1])

With one c for every layer the SGD line is Yang & Hu's definition,
r = min(a_{L+1}+b_{L+1}, 2a_{L+1}+c) + c - 1 + min_l (2 a_l + [l = 1]).  The Adam line is
derived here by the same counting for an update of size Theta(lr) per entry (Adam, sign SGD,
epsilon negligible); it reproduces the muP row of TP V Table 3.  Per layer, the same counting
gives `LayerScaling.change_exponent` (Delta h^l = Theta(n^e_l), e_l = max over l' <= l of
layer l''s own term, r = -e_L; for the readout, the change of f); docs/mup.md compares it with
measured coordinate checks.  For unstable exponents it describes the first step only.

Stability in training, nontriviality, regime (with u = 2 a_{L+1} + c_{L+1} for SGD and
u = a_{L+1} + c_{L+1} for Adam, the readout update's exponent):

    stable       iff  r >= 0,  a_{L+1} + b_{L+1} + r >= 1,  u >= 1
    nontrivial   iff  a_{L+1} + b_{L+1} + r = 1  or  u = 1          (f moves at infinite width)
    regime:  "unstable" (not stable), "trivial" (stable, not nontrivial),
             "feature learning" (stable, nontrivial, r = 0), "kernel" (stable, nontrivial, r > 0).

The last two are Yang & Hu's dynamical dichotomy: a stable nontrivial abc-parametrization
either learns features (r = 0) or evolves by a kernel (r > 0), never both.

Symmetries (training is unchanged; tested): per layer, SGD (a, b, c) -> (a + t, b - t, c - 2t),
Adam (a, b, c) -> (a + t, b - t, c - t).

The named parametrizations (`PARAMETRIZATIONS`): "sp", "sp-max-lr", "ntp", "mup", "mfp".
a and b define a parametrization; c depends on the optimizer.  "sp-max-lr" is SP with the
smallest single c (largest global learning rate) that is stable, found by
`max_stable_lr_exponent` (c = 1 for SGD, Yang & Hu; c = 3/2 for Adam, derived here).

At a width n and a base width n_0 (`width`, `base_width`), every per-layer number is the factor
to apply to the value used at the base width: multiplier (n/n_0)^{-a}, init variance of w
(n/n_0)^{-2b}, learning rate (n/n_0)^{-c}; and the same training with the multiplier folded
into the weight (TP V Table 3 form): weight variance (n/n_0)^{-2(a+b)}, learning rate
(n/n_0)^{-(2a+c)} (SGD) or (n/n_0)^{-(a+c)} (Adam).

Depth (`depth_mup`): Depth-muP (Yang, Yu, Zhu, Hayou 2023, TP VI; Bordelon et al. 2023)
multiplies each residual branch by L^{-1/2}; the learning rate is not scaled with depth for SGD
and scaled by L^{-1/2} for Adam [? docs/theory.md §A7.2 could not confirm the Adam exponent].

Comparisons of exponents use the tolerance `TOL` (exponents are usually multiples of 1/2).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

import numpy as np

from ._memory import check_memory, format_count
from .errors import DomainError

__all__ = [
    "PARAMETRIZATIONS", "OPTIMIZERS", "REGIMES", "TOL", "ZERO_B",
    "LayerScaling", "Condition", "AbcReport", "DepthScaling",
    "abc", "check", "exponents", "parse_exponents", "max_stable_lr_exponent", "depth_mup",
]

PARAMETRIZATIONS = ("sp", "sp-max-lr", "ntp", "mup", "mfp")
OPTIMIZERS = ("sgd", "adam")
REGIMES = ("feature learning", "kernel", "trivial", "unstable")
TOL = 1e-9
# a + b of a layer that is zero at initialisation (b = infinity): a finite stand-in, so that
# every record stays plain JSON; any value > 1 + max |r| decides the same conditions.
ZERO_B = 1e3


# ----------------------------------------------------------------------------------------------
# result records
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerScaling:
    """One layer's exponents and, at a width, the factors to apply relative to the base width.

    ``layer`` is 1 (input), 2..L (hidden) or L+1 (output); the width fields are None when no
    width was given.  ``change_exponent``: the theory's e in Delta h^l = Theta(width^e) after a
    training step (for the output layer, the change of f); the last hidden layer's is -r.
    """

    layer: int
    role: str
    a: float
    b: float
    c: float
    change_exponent: float
    multiplier: float | None = None
    init_variance: float | None = None
    lr_scale: float | None = None
    weight_variance: float | None = None
    folded_lr_scale: float | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Condition:
    """One of Yang & Hu's conditions: its statement, the value of its left side, and whether it holds."""

    name: str
    statement: str
    value: float
    holds: bool
    meaning: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class DepthScaling:
    """Depth-muP for a residual network of ``depth`` blocks (TP VI; docs/theory.md §A7.2)."""

    depth: int
    optimizer: str
    branch_multiplier: float
    branch_multiplier_exponent: float
    lr_depth_scale: float
    lr_depth_exponent: float
    # What the combination with meanfield.residual predicts at initialisation (None unless an
    # activation was given): a full residual block x + V phi(W x + b) with the branch multiplier
    # folded into V, i.e. branch variance sigma_v2 / depth.
    activation: str | None = None
    sigma_w2: float | None = None
    sigma_v2: float | None = None
    branch_sigma_v2: float | None = None
    log_p_ratio: float | None = None
    log_gradient_explosion: float | None = None
    cosine_out: float | None = None
    advice_sigma_v2: float | None = None
    advice_rule: str | None = None
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["notes"] = list(self.notes)
        return d


@dataclass(frozen=True)
class AbcReport:
    """An abc-parametrization of an L-hidden-layer MLP, its exponent r and its regime.

    ``conditions`` lists every stability / nontriviality / feature-learning condition with its
    value; ``reason`` says in one sentence why the regime is what it is.
    """

    parametrization: str
    optimizer: str
    depth: int
    width: int | None
    base_width: int
    layers: tuple[LayerScaling, ...]
    r: float
    regime: str
    stable: bool
    nontrivial: bool
    feature_learning: bool
    conditions: tuple[Condition, ...]
    reason: str
    depth_mup: DepthScaling | None = None
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["layers"] = [layer.to_dict() for layer in self.layers]
        d["conditions"] = [c.to_dict() for c in self.conditions]
        d["depth_mup"] = None if self.depth_mup is None else self.depth_mup.to_dict()
        d["notes"] = list(self.notes)
        return d

    @property
    def a(self) -> np.ndarray:
        return np.array([layer.a for layer in self.layers])

    @property
    def b(self) -> np.ndarray:
        return np.array([layer.b for layer in self.layers])

    @property
    def c(self) -> np.ndarray:
        return np.array([layer.c for layer in self.layers])


# ----------------------------------------------------------------------------------------------
# boundary: names, numbers, the --check text
# ----------------------------------------------------------------------------------------------

def _optimizer(optimizer: str) -> str:
    opt = str(optimizer).strip().lower()
    if opt not in OPTIMIZERS:
        raise DomainError(f"unknown optimizer {optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")
    return opt


def _parametrization(name: str) -> str:
    key = str(name).strip().lower().replace("_", "-").replace("µ", "mu").replace("μ", "mu")
    key = {"standard": "sp", "ntk": "ntp", "mean-field": "mfp", "mf": "mfp", "mu-p": "mup",
           "sp-maxlr": "sp-max-lr"}.get(key, key)
    if key not in PARAMETRIZATIONS:
        raise DomainError(f"unknown parametrization {name!r}; choose one of: {', '.join(PARAMETRIZATIONS)}")
    return key


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)
        else:
            raise DomainError(f"{name} must be an integer, got {value!r}")
    if value < 1:
        raise DomainError(f"{name} must be >= 1, got {value}")
    return int(value)


def _widths(width, base_width) -> tuple[int | None, int]:
    base = _positive_int(base_width, "base_width")
    if width is None:
        return None, base
    n = _positive_int(width, "width")
    if n < base:
        raise DomainError(f"width {n} is below the base width {base}; the scalings are for widening a tuned base model")
    return n, base


def _number(text: str, where: str) -> float:
    s = text.strip()
    try:
        return float(Fraction(s))  # "1/2", "-0.5", "1e-3"; never eval
    except (ValueError, ZeroDivisionError, OverflowError):
        raise DomainError(f"cannot read {s!r} in {where} as a number (write e.g. 0.5, -1/2, 1)") from None


def parse_exponents(text: str) -> np.ndarray:
    """Parse ``"a1,b1,c1;a2,b2,c2;...;a_{L+1},b_{L+1},c_{L+1}"`` into an (L+1, 3) float array.

    Numbers may be decimals or fractions (``-1/2``).  Layer 1 is the input layer, the last
    triple the output layer; at least two triples (one hidden layer).
    """
    if not isinstance(text, str):
        raise DomainError(f"exponents text must be a string, got {type(text).__name__}")
    body = text.strip().rstrip(";").strip()
    if not body:
        raise DomainError("empty exponents; write one a,b,c triple per layer, separated by ';' "
                          "(e.g. '-1/2,1/2,0;0,1/2,0;1/2,1/2,0' for muP with one hidden layer)")
    rows = []
    for i, part in enumerate(body.split(";"), start=1):
        fields = part.split(",")
        if len(fields) != 3:
            raise DomainError(f"layer {i} of the exponents ({part.strip()!r}) must be three numbers a,b,c "
                              f"separated by commas, got {len(fields)}")
        rows.append([_number(f, f"layer {i} ({part.strip()!r})") for f in fields])
    return _exponent_array(rows)


def _exponent_array(exponents) -> np.ndarray:
    if isinstance(exponents, str):
        return parse_exponents(exponents)
    try:
        arr = np.asarray(exponents, dtype=float)
    except (TypeError, ValueError):
        raise DomainError("exponents must be (L+1) triples (a, b, c) of numbers") from None
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise DomainError(f"exponents must be an (L+1) x 3 array of (a, b, c) per layer, got shape {arr.shape}")
    if arr.shape[0] < 2:
        raise DomainError(f"exponents need at least two layers (input and output, one hidden layer), got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)):
        raise DomainError("exponents must be finite numbers")
    return arr


def _width_pow(x: float) -> str:
    """'width^2', 'width^(3/2)', 'width^(-1/2)'."""
    e = _fmt(x)
    return f"width^{e}" if e.isdigit() else f"width^({e})"


def _fmt(x: float) -> str:
    """An exponent as a short fraction when it is one (1/2, -3/2), else %g."""
    f = Fraction(x).limit_denominator(12)
    if abs(float(f) - x) <= TOL:
        return str(f)
    return f"{x:.6g}"


# ----------------------------------------------------------------------------------------------
# the theory
# ----------------------------------------------------------------------------------------------

def _named_exponents(name: str, depth: int, optimizer: str) -> np.ndarray:
    """(a, b, c) per layer of a named parametrization (docs/theory.md §A7.1 table; TP V Table 3 for Adam)."""
    L = depth
    # the report holds a LayerScaling and its conditions per layer: ~300 bytes each (measured)
    check_memory((L + 1) * 512, f"an abc table of {format_count(L + 1)} layers", "ask for fewer layers")
    hid = L - 1  # number of hidden-to-hidden layers

    def table(a_in, a_hid, a_out, b_in, b_hid, b_out, c_in, c_hid, c_out):
        a = [a_in] + [a_hid] * hid + [a_out]
        b = [b_in] + [b_hid] * hid + [b_out]
        c = [c_in] + [c_hid] * hid + [c_out]
        return np.array([a, b, c], dtype=float).T

    adam = optimizer == "adam"
    if name in ("sp", "sp-max-lr"):
        ex = table(0, 0, 0, 0, 0.5, 0.5, 0, 0, 0)
        if name == "sp-max-lr":
            ex[:, 2] = max_stable_lr_exponent(ex[:, 0], ex[:, 1], optimizer)
        return ex
    if name == "ntp":
        # SGD: one c = 0 (Jacot et al.).  Adam: the learning rates that make every layer's
        # contribution to the change of f Theta(1) (derived; r = 1/2).
        return table(0, 0.5, 0.5, 0, 0, 0, *((0.5, 1, 0.5) if adam else (0, 0, 0)))
    if name == "mup":
        # TP IV's form (a_1 = -1/2, a_{L+1} = 1/2, b = 1/2, c = 0) for SGD; for Adam the same a, b
        # with the learning rates of TP V Table 3 moved into this form by the Adam symmetry.
        return table(-0.5, 0, 0.5, 0.5, 0.5, 0.5, *((0.5, 1, 0.5) if adam else (0, 0, 0)))
    if name == "mfp":
        if L != 1:
            raise DomainError(
                f"mfp (the mean-field parametrization) is defined for one hidden layer, got depth {L}; "
                "its deep version (1/n hidden multipliers) has a_l + b_l = 1 and vanishes at initialisation "
                "(Chen, Yang, Zhao, Gu 2025 report degenerate features); use mup, which equals mfp at depth 1")
        return table(0, 0, 1, 0, 0, 0, *((0, 0, 0) if adam else (-1, -1, -1)))
    raise DomainError(f"unknown parametrization {name!r}")  # pragma: no cover (checked at the boundary)


def max_stable_lr_exponent(a, b, optimizer: str = "sgd") -> float:
    """The smallest single c (largest learning rate eta n^{-c} shared by all layers) that is stable.

    a, b: per-layer exponents (L+1 values).  Every stability condition is nondecreasing in c,
    so the answer is the largest of the thresholds the conditions put on c.  SP gives c = 1 for
    SGD (Yang & Hu 2021) and c = 3/2 for Adam.
    """
    opt = _optimizer(optimizer)
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size < 2:
        raise DomainError("a and b must be two 1-d sequences of the same length L+1 >= 2")
    ex = np.stack([a, b, np.zeros_like(a)], axis=1)
    _init_conditions(ex)  # raises when (a, b) blow up at init: no learning rate helps
    a_out, A = a[-1], a[-1] + b[-1]
    first = np.zeros(a.size - 1)
    first[0] = 1.0
    if opt == "sgd":
        # r(c) = min(A, 2 a_out + c) + c - 1 + m;  need r >= max(0, 1 - A) and 2 a_out + c >= 1
        m = float(np.min(2 * a[:-1] + first))
        target = 1 - m + max(0.0, 1 - A)  # g(c) = min(A, 2 a_out + c) + c >= target
        c_lo = (target - 2 * a_out) / 2
        c_r = c_lo if c_lo <= A - 2 * a_out else target - A
        return float(max(c_r, 1 - 2 * a_out))
    # Adam: r(c) = c - 1 + m';  need r >= max(0, 1 - A) and a_out + c >= 1
    m = float(np.min(a[:-1] + first))
    return float(max(1 - m + max(0.0, 1 - A), 1 - a_out))


def _init_conditions(ex: np.ndarray) -> list[Condition]:
    """Yang & Hu's stability at initialisation; raises DomainError naming the layer that fails."""
    a, b = ex[:, 0], ex[:, 1]
    s = a + b
    L = ex.shape[0] - 1
    if s[0] < -TOL:
        raise DomainError(f"the input layer blows up at initialisation: a_1 + b_1 = {_fmt(s[0])} < 0 "
                          f"(h^1 grows as {_width_pow(-s[0])}); need a_1 + b_1 = 0")
    if s[0] > TOL:
        raise DomainError(f"the input layer vanishes at initialisation: a_1 + b_1 = {_fmt(s[0])} > 0 "
                          f"(h^1 shrinks as {_width_pow(-(s[0]))}); need a_1 + b_1 = 0")
    for l in range(2, L + 1):
        v = s[l - 1]
        if v < 0.5 - TOL:
            raise DomainError(f"hidden layer {l} blows up at initialisation: a_{l} + b_{l} = {_fmt(v)} < 1/2 "
                              f"(h^{l} grows as {_width_pow(0.5 - v)}); need a_{l} + b_{l} = 1/2")
        if v > 0.5 + TOL:
            raise DomainError(f"hidden layer {l} vanishes at initialisation: a_{l} + b_{l} = {_fmt(v)} > 1/2 "
                              f"(h^{l} shrinks as {_width_pow(-(v - 0.5))}); need a_{l} + b_{l} = 1/2")
    if s[L] < 0.5 - TOL:
        raise DomainError(f"the output blows up at initialisation: a_{L + 1} + b_{L + 1} = {_fmt(s[L])} < 1/2 "
                          f"(f_0 grows as {_width_pow(0.5 - s[L])}); need a_{L + 1} + b_{L + 1} >= 1/2")
    conds = [Condition("init_input", "a_1 + b_1 = 0", float(s[0]), True,
                       "input-layer pre-activations are Theta(1) at initialisation")]
    if L >= 2:
        conds.append(Condition("init_hidden", "a_l + b_l = 1/2 for l = " + ("2" if L == 2 else f"2..{L}"), float(s[1]),
                               True, "hidden pre-activations are Theta(1) at initialisation"))
    conds.append(Condition("init_output", f"a_{L + 1} + b_{L + 1} >= 1/2", float(s[L]), True,
                           "the output is O(1) at initialisation"
                           + (" (and tends to 0)" if s[L] > 0.5 + TOL else "")))
    return conds


def _analyse(name: str, ex: np.ndarray, optimizer: str, width: int | None, base_width: int,
             residual: bool = False, notes: Sequence[str] = ()) -> AbcReport:
    """The one place where r, the conditions and the regime are computed."""
    conds = _init_conditions(ex)
    a, b, c = ex[:, 0], ex[:, 1], ex[:, 2]
    L = ex.shape[0] - 1
    out = L  # index of the output layer
    A = a[out] + b[out]
    first = np.zeros(L)
    first[0] = 1.0
    # own[l]: log_n of the change layer l's own update makes to h^l; a change propagates up
    # unchanged in size (W^l maps Theta(1) to Theta(1)), so Delta h^l ~ n^{max(own[:l+1])}.
    if optimizer == "sgd":
        m = min(A, 2 * a[out] + c[out])
        own = 1 - m - (2 * a[:L] + c[:L] + first)
        u = float(2 * a[out] + c[out])
        u_text = f"2 a_{L + 1} + c_{L + 1}"
        r_text = (f"r = min(a_{L + 1} + b_{L + 1}, 2 a_{L + 1} + c_{L + 1}) - 1 "
                  f"+ min_l (2 a_l + c_l + [l = 1])")
    else:
        own = 1 - (a[:L] + c[:L] + first)
        u = float(a[out] + c[out])
        u_text = f"a_{L + 1} + c_{L + 1}"
        r_text = "r = min_l (a_l + c_l + [l = 1]) - 1"
    change = np.maximum.accumulate(own)
    r = -float(change[-1])
    r = 0.0 if abs(r) <= TOL else r
    Ar = float(A + r)
    change = np.append(change, max(1 - u, 1 - Ar))  # the output: Delta f ~ n^{max(1-u, 1-A-r)}

    ok_r = r >= -TOL
    ok_f = Ar >= 1 - TOL
    ok_u = u >= 1 - TOL
    conds += [
        Condition("features_stable", f"r >= 0 ({r_text})", r, ok_r,
                  "hidden features do not blow up in training" if ok_r
                  else f"features blow up in training, as {_width_pow(-r)}"),
        Condition("output_from_features", f"a_{L + 1} + b_{L + 1} + r >= 1", Ar, ok_f,
                  "the initial readout times the feature change is O(1)" if ok_f
                  else f"the initial readout times the feature change grows as {_width_pow(1 - Ar)}"),
        Condition("output_from_readout", f"{u_text} >= 1", u, ok_u,
                  "the readout's own update changes the output by O(1)" if ok_u
                  else f"the readout's own update changes the output by {_width_pow(1 - u)}"),
    ]
    # The last two conditions report whether their statement is true; they decide the regime
    # only for stable exponents (the fields `nontrivial` and `feature_learning` combine them).
    stable = ok_r and ok_f and ok_u
    moves = abs(Ar - 1) <= TOL or abs(u - 1) <= TOL
    nontrivial = stable and moves
    conds.append(Condition("nontrivial", f"a_{L + 1} + b_{L + 1} + r = 1 or {u_text} = 1",
                           min(Ar, u), moves,
                           ("the output moves by Theta(1) in training" if moves
                            else "the output does not move at infinite width") + ("" if stable else " (if it were stable)")))
    fl = nontrivial and r <= TOL
    conds.append(Condition("feature_learning", "r = 0", r, r <= TOL,
                           ("features move by Theta(1) in training" if r <= TOL
                            else f"features move as {_width_pow(-(r))}, i.e. not at infinite width")
                           + ("" if stable else " (if it were stable)")))

    if not stable:
        regime = "unstable"
        failed = [cd for cd in conds if not cd.holds and cd.name not in ("nontrivial", "feature_learning")]
        reason = "; ".join(f"{cd.statement.split(' (')[0]} fails ({_fmt(cd.value)}): {cd.meaning}" for cd in failed)
    elif not nontrivial:
        regime = "trivial"
        reason = (f"stable, but a_{L + 1} + b_{L + 1} + r = {_fmt(Ar)} > 1 and {u_text} = {_fmt(u)} > 1: "
                  "the output does not move at infinite width"
                  + (" (even though the features move by Theta(1))" if r <= TOL else ""))
    elif fl:
        regime = "feature learning"
        reason = "stable, nontrivial and r = 0: every layer's features move by Theta(1) (maximal updates)"
    else:
        regime = "kernel"
        reason = (f"stable, nontrivial and r = {_fmt(r)} > 0: features move as {_width_pow(-(r))}, "
                  "so at infinite width f evolves by a fixed kernel and no features are learned")

    layers = tuple(_layer_scaling(l + 1, L, a[l], b[l], c[l], change[l], optimizer, width, base_width)
                   for l in range(L + 1))
    dm = depth_mup(L, optimizer) if residual else None
    return AbcReport(parametrization=name, optimizer=optimizer, depth=L, width=width, base_width=base_width,
                     layers=layers, r=r, regime=regime, stable=stable, nontrivial=nontrivial,
                     feature_learning=fl, conditions=tuple(conds), reason=reason, depth_mup=dm,
                     notes=tuple(notes))


def _layer_scaling(l: int, L: int, a: float, b: float, c: float, e: float, optimizer: str,
                   width: int | None, base_width: int) -> LayerScaling:
    role = "input" if l == 1 else ("output" if l == L + 1 else "hidden")
    a, b, c, e = (0.0 if abs(v) <= TOL else float(v) for v in (a, b, c, e))
    if width is None:
        return LayerScaling(l, role, a, b, c, e)
    k = width / base_width
    folded_c = (2 * a + c) if optimizer == "sgd" else (a + c)
    return LayerScaling(l, role, a, b, c, e, multiplier=k ** -a, init_variance=k ** (-2 * b),
                        lr_scale=k ** -c, weight_variance=k ** (-2 * (a + b)), folded_lr_scale=k ** -folded_c)


# ----------------------------------------------------------------------------------------------
# public entry points
# ----------------------------------------------------------------------------------------------

def exponents(parametrization: str, depth: int, optimizer: str = "sgd") -> np.ndarray:
    """(a, b, c) per layer, an (L+1) x 3 array, of a named parametrization (see module docstring)."""
    return _named_exponents(_parametrization(parametrization), _positive_int(depth, "depth"), _optimizer(optimizer))


def abc(parametrization: str, depth: int, optimizer: str = "sgd", *, width: int | None = None,
        base_width: int = 1, residual: bool = False, zero_readout: bool = False) -> AbcReport:
    """The abc table of a named parametrization of an MLP with ``depth`` hidden layers, r and the regime.

    ``width`` (with ``base_width``): also report each layer's multiplier, init variance and
    learning-rate factors at that width relative to the base width.  ``residual``: add the
    depth-muP branch and learning-rate scalings for ``depth`` residual blocks.
    ``zero_readout``: the readout starts at zero (TP V's recommendation): a_{L+1} + b_{L+1} =
    infinity, held as ``ZERO_B`` (docs/mup.md §7); the learning rates are the named ones.
    """
    name = _parametrization(parametrization)
    L = _positive_int(depth, "depth")
    opt = _optimizer(optimizer)
    n, n0 = _widths(width, base_width)
    if not isinstance(zero_readout, bool):
        raise DomainError(f"zero_readout must be True or False, got {zero_readout!r}")
    ex = _named_exponents(name, L, opt)
    notes = []
    if zero_readout:
        ex[-1, 1] = ZERO_B - ex[-1, 0]
        notes.append(f"zero-initialised readout: a_{L + 1} + b_{L + 1} = infinity (held as {ZERO_B:g}); "
                     "f_0 = 0 and the backward signal starts from the readout's own update")
    if name == "sp-max-lr":
        notes.append(f"SP with its largest stable single learning rate eta {_width_pow(-(ex[0, 2]))} "
                     "(max_stable_lr_exponent)")
    if opt == "adam":
        notes.append("Adam: r and the conditions are derived for updates of size Theta(lr) per entry "
                     "(epsilon negligible); they reproduce muP's TP V Table 3 (docs/mup.md)")
    if name == "mup" and opt == "adam":
        notes.append("folded into the weights (a = 0): input lr eta, hidden lr eta/fan_in, output init "
                     "1/fan_in^2 and lr eta/fan_in, as in TP V Table 3")
    return _analyse(name, ex, opt, n, n0, residual=residual, notes=notes)


def check(exponents, optimizer: str = "sgd", *, width: int | None = None, base_width: int = 1,
          residual: bool = False) -> AbcReport:
    """The regime of a user's own exponents, and which of Yang & Hu's conditions hold or fail.

    ``exponents``: an (L+1) x 3 array-like of (a, b, c) per layer (input first, output last), or
    the text ``"a1,b1,c1;a2,b2,c2;..."``.  Raises DomainError when the exponents blow up (or
    vanish) at initialisation, naming the layer.
    """
    ex = _exponent_array(exponents)
    opt = _optimizer(optimizer)
    n, n0 = _widths(width, base_width)
    return _analyse("custom", ex, opt, n, n0, residual=residual)


def depth_mup(depth: int, optimizer: str = "sgd", *, activation=None, sigma_w2: float = 1.0,
              sigma_b2: float = 0.0, sigma_v2: float = 1.0) -> DepthScaling:
    """Depth-muP: residual branch multiplier depth^{-1/2}; learning rate times depth^{-1/2} for Adam only.

    Yang, Yu, Zhu, Hayou 2023 (TP VI) and Bordelon et al. 2023, for residual blocks of one
    layer each (docs/theory.md §A7.2).  The Adam exponent is flagged [?] in MATH.md.

    With ``activation``: what it predicts at initialisation for full residual blocks
    x + V phi(W x + b) (meanfield.residual, docs/theory.md §A2.3) with the multiplier folded into V
    (branch variance sigma_v2 / depth): log(p^L / p^0), log(chi^0 / chi^L) and the output cosine
    of two inputs at cosine 1/2, next to meanfield's own depth advice for sigma_v2 at this depth
    and sigma_w2 (`advise_residual`, default budget).  For ReLU both scale as 1/depth: the
    recursion gives p^L / p^0 = (1 + sigma_w2 sigma_v2 / (2 depth))^depth -> exp(sigma_w2 sigma_v2 / 2).
    """
    L = _positive_int(depth, "depth")
    opt = _optimizer(optimizer)
    lr_exp = -0.5 if opt == "adam" else 0.0
    notes = ["branch multiplier: x^{l+1} = x^l + depth^{-1/2} * branch(x^l); with it the forward length grows by "
             "a bounded factor over all blocks instead of exponentially in depth"]
    if opt == "adam":
        notes.append("the Adam learning-rate exponent -1/2 is not confirmed against the paper's text "
                     "(docs/theory.md §A7.2 [?])")
    pred: dict = {}
    if activation is not None:
        # residual sits beside mup in the import order; imported here, only when asked for
        from .residual import advise_residual, iterate_residual

        T = iterate_residual("resnet-full", activation, sigma_w2, sigma_b2, L, sigma_v2=sigma_v2 / L, every=L)
        pred = dict(activation=T.activation, sigma_w2=float(sigma_w2), sigma_v2=float(sigma_v2),
                    branch_sigma_v2=float(sigma_v2) / L, log_p_ratio=float(T.log_p[-1] - T.log_p[0]),
                    log_gradient_explosion=float(T.log_chi[0] - T.log_chi[-1]), cosine_out=float(T.e[-1]))
        try:
            adv = advise_residual("resnet-full", activation, L, sigma_w2=sigma_w2, sigma_b2=sigma_b2)
            pred.update(advice_sigma_v2=float(adv.sigma_v2), advice_rule=str(adv.rule))
            notes.append(f"meanfield's residual advice at this depth: sigma_v2 = {adv.sigma_v2:.4g} "
                         f"(= {adv.sigma_v2 * L:.4g} / depth) against depth-muP's {sigma_v2:.4g} / depth")
        except DomainError as exc:  # e.g. no finite-gradient advice for this activation
            notes.append(f"no residual advice to compare with: {exc}")
    return DepthScaling(depth=L, optimizer=opt, branch_multiplier=L ** -0.5, branch_multiplier_exponent=-0.5,
                        lr_depth_scale=float(L) ** lr_exp, lr_depth_exponent=lr_exp, notes=tuple(notes), **pred)
