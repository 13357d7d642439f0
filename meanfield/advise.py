"""Initialisation advice: Network spec -> Advice, with the diagnostics that justify it.

Vanilla MLPs (``arch="mlp"``): the edge of chaos (Schoenholz et al. 2017), with the bias
variance chosen by a depth-aware rule (docs/theory.md, "Advice for vanilla MLPs"):

1. chi_1(q*) = 1, so the correlation depth scale xi_c is infinite and the trainable-depth
   bound L <= 6 xi_c (docs/theory.md §A1.7) holds at every depth.
2. Among the points of the critical line, take the largest sigma_b2 <= ``sigma_b2_max`` (0.05,
   the bias of Schoenholz 2017's phase diagrams) whose input-output Jacobian stays well
   conditioned at this depth: the nonlinearity's share of the spread of the squared singular
   values, L (mu_2 / mu_1^2 - 1) with mu_k = E[phi'(sqrt(q*) z)^(2k)] (Pennington, Schoenholz
   & Ganguli 2017; docs/theory.md §A6.2), must stay below ``jacobian_budget`` (default 1).  Deeper
   networks therefore get a smaller bias variance and a smaller q*, i.e. a more linear regime.
   ReLU-like (positively homogeneous) activations have a single critical point, He's (2, 0).
3. At the advised point, the spectrum of J J^T for Gaussian and orthogonal weights
   (meanfield.spectra.jacobian_spectrum: variance L (mu_2 / mu_1^2 - 1 - s_1) at criticality,
   s_1 = -1 and 0, and the upper edge) and the ensemble to draw: orthogonal where it gives
   near-isometry (variance below ``jacobian_budget``) or cuts the variance at least tenfold
   (mu_2 / mu_1^2 - 1 <= 1/9: tanh-like activations at small q*); otherwise Gaussian, e.g. relu,
   whose law of phi'^2 is the same at every q* and whose spectrum spreads with depth either way
   (gain 2).

Residual networks (``arch="resnet-full"`` / ``"resnet-reduced"``) are advised by
meanfield.residual.advise_residual (Yang & Schoenholz 2017), with depth-dependent variances.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from . import gaussian
from ._arch import LABELS
from .activations import Activation, get_activation
from .errors import DomainError, MeanfieldError, NoFixedPoint
from .fixed_points import (OK, _homogeneous_k, edge_of_chaos, edge_of_chaos_curve, fixed_point, solve_grid,
                           solve_q_star)
from .maps import check_depth, check_variance, propagate

ARCHES = tuple(LABELS.values())  # meanfield._arch: the labels advice results carry
CORRELATION_IN = 0.5

# PyTorch's calculate_gain (multiplies the std, so sigma_w2 = gain^2), docs/theory.md §A8.1.
_TORCH_GAIN2 = {"tanh": 25.0 / 9.0, "relu": 2.0, "selu": 9.0 / 16.0, "sigmoid": 1.0, "linear": 1.0}


def torch_gain2(act: Activation) -> float:
    """sigma_w2 = gain^2 of torch.nn.init.calculate_gain for this activation (1 where PyTorch has none)."""
    name = act.name
    if name.startswith("leaky_relu:"):
        a = float(name.split(":")[1])
        return 2.0 / (1.0 + a * a)
    return _TORCH_GAIN2.get(name, 1.0)


def _default_inits(act: Activation, width: int | None) -> list[tuple[str, float, float, str]]:
    bias_default = 1.0 / (3.0 * width) if width else 0.0
    return [
        ("pytorch_default", 1.0 / 3.0, bias_default,
         "nn.Linear's kaiming_uniform(a=sqrt(5)): Var W = 1/(3 fan_in); bias U(+-1/sqrt(fan_in))"),
        ("pytorch_gain", torch_gain2(act), 0.0,
         "N(0, gain^2/fan_in) with torch.nn.init.calculate_gain, zero bias"),
        ("xavier", 1.0, 0.0, "Glorot: Var W = 2/(fan_in + fan_out) = 1/fan_in for square layers, zero bias"),
        ("he", 2.0, 0.0, "Kaiming/He: Var W = 2/fan_in, zero bias"),
        ("lecun", 1.0, 0.0, "LeCun: Var W = 1/fan_in, zero bias"),
    ]


@dataclass(frozen=True)
class Diagnostics:
    """What the theory predicts for one initialisation at the requested depth."""

    name: str
    sigma_w2: float
    sigma_b2: float
    q_star: float | None
    chi_1: float | None
    phase: str | None
    xi_c: float | None  # None: infinite
    trainable_depth: float | None  # 6 xi_c (docs/theory.md §A1.7); None: unbounded
    correlation_out: float | None  # c^L of two inputs with c^0 = 0.5
    log10_gradient_ratio: float | None  # log10 prod_l chi_1(q^l): gradient norm ratio input/output
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _finite_or_none(x) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def diagnose(activation, sigma_w2: float, sigma_b2: float, depth: int, *, name: str = "",
             note: str = "", input_q: float = 1.0) -> Diagnostics:
    """Predicted q*, chi_1, phase, xi_c, trainable depth, c^L and the gradient ratio over ``depth``
    layers for unit-length inputs (x.x/d = input_q): q^1 = sigma_w2 input_q + sigma_b2."""
    act = get_activation(activation)
    try:
        fp = fixed_point(act, sigma_w2, sigma_b2, q0=sigma_w2 * input_q + sigma_b2)
    except NoFixedPoint as exc:
        return Diagnostics(name, sigma_w2, sigma_b2, None, None, None, None, None, None, None,
                           (note + "; " if note else "") + str(exc))
    q0 = sigma_w2 * input_q + sigma_b2
    try:
        # bounded cost at any depth: maps.propagate iterates at most maps.EXACT_LAYERS layers
        st = propagate(act, sigma_w2, sigma_b2, depth, q0=q0, c0=CORRELATION_IN)
        lg, c_out = st.log10_gradient_ratio, st.c
        if not math.isfinite(lg):
            note = (note + "; " if note else "") + (
                f"the gradient norm ratio over {depth} layers is past the float range (10^{lg})")
    except MeanfieldError as exc:
        lg, c_out, note = None, None, (note + "; " if note else "") + str(exc)
    xi = _finite_or_none(fp.xi_c)
    return Diagnostics(name, float(sigma_w2), float(sigma_b2), fp.q_star, fp.chi_1, fp.phase, xi,
                       None if xi is None else 6.0 * xi, _finite_or_none(c_out), _finite_or_none(lg), note)


@dataclass(frozen=True)
class Advice:
    """Recommended (sigma_w2, sigma_b2) for a vanilla MLP and the diagnostics behind it."""

    arch: str
    activation: str
    depth: int
    width: int | None
    rule: str
    sigma_w2: float
    sigma_b2: float
    q_star: float
    chi_1: float
    xi_c: float | None
    trainable_depth: float | None
    correlation_in: float
    correlation_out: float | None
    log10_gradient_ratio: float | None
    jacobian_nonlinearity_spread: float
    # the squared singular values of the input-output Jacobian (docs/theory.md §A6.2, meanfield.spectra):
    # variance m2 - m1^2 and upper edge for each weight ensemble; None where there is no spectrum
    jacobian_variance_gaussian: float | None
    jacobian_variance_orthogonal: float | None
    jacobian_edge_gaussian: float | None
    jacobian_edge_orthogonal: float | None
    orthogonal_gain: float | None  # variance ratio Gaussian / orthogonal; None: exact isometry or no spectrum
    weights: str  # the recommended ensemble for meanfield.torch.init_(weights=...)
    weights_reason: str
    weight_std: float | None
    bias_std: float
    ntk_condition_number: float | None
    comparisons: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["comparisons"] = [dict(c) for c in self.comparisons]
        return d


def _jacobian_excess(act: Activation, q) -> np.ndarray:
    """mu_2 / mu_1^2 - 1, mu_k = E[phi'(sqrt q z)^(2k)] (docs/theory.md §A6.2)."""
    mu1 = gaussian.v_dphi(act, q)
    d1 = act.d1
    mu2 = gaussian.expect1(lambda u: d1(u) ** 4, q, act.kinks)
    return mu2 / mu1 ** 2 - 1.0


def _usable(act: Activation, sigma_w2: float, sigma_b2: float, q_star: float) -> bool:
    """Whether unit-length inputs (q^1 = sigma_w2 + sigma_b2) reach this critical point's q*;
    gelu and silu also have critical points with a tiny basin."""
    reach = solve_q_star(act, sigma_w2, sigma_b2, q0=sigma_w2 + sigma_b2)
    return bool(reach.status == OK) and abs(float(reach.q_star) - q_star) <= 1e-6 * (1 + q_star)


def _first_usable(act: Activation, eoc, grid: np.ndarray, order) -> int | None:
    for i in order:
        if _usable(act, float(eoc.sigma_w2[i]), float(grid[i]), float(eoc.q_star[i])):
            return int(i)
    return None


def _choose_sigma_b2(act: Activation, depth: int, sigma_b2_max: float, jacobian_budget: float):
    """(sigma_b2, rule, note) on the critical line; raises NoFixedPoint where it has no usable point."""
    grid = np.logspace(-8, np.log10(max(sigma_b2_max, 1e-8)), 161)
    eoc = edge_of_chaos_curve(act, grid)
    ok = (eoc.status == OK) & np.isfinite(eoc.q_star) & (eoc.q_star > 0)
    excess = np.full(grid.shape, np.inf)
    if ok.any():
        excess[ok] = _jacobian_excess(act, eoc.q_star[ok])
    fits = np.flatnonzero(ok & (depth * excess <= jacobian_budget))
    i = _first_usable(act, eoc, grid, fits[::-1])
    if i is not None:
        return float(grid[i]), (f"edge of chaos (chi_1 = 1), sigma_b2 the largest <= {sigma_b2_max:g} with depth * "
                                f"(mu2/mu1^2 - 1) <= {jacobian_budget:g} (docs/theory.md)"), ""
    # Budget out of reach (very deep nets, or a kink at 0 that keeps mu2/mu1^2 - 1 finite as
    # q* -> 0, e.g. selu): the largest sigma_b2 whose spread is within 10% of the smallest.
    if ok.any():
        near_min = np.flatnonzero(ok & (excess <= 1.1 * np.min(excess[ok])))
        i = _first_usable(act, eoc, grid, near_min[::-1])
        if i is not None:
            return float(grid[i]), (
                f"edge of chaos (chi_1 = 1), sigma_b2 <= {sigma_b2_max:g} the largest within 10% of the smallest "
                f"Jacobian spread depth * (mu2/mu1^2 - 1): the budget {jacobian_budget:g} is out of reach at "
                f"depth {depth} (docs/theory.md)"), (
                f"the Jacobian budget {jacobian_budget:g} is out of reach at depth {depth}: the smallest spread "
                f"on the critical line is L (mu2/mu1^2 - 1) = {depth * np.min(excess[ok]):.3g}; sigma_b2 is the "
                f"largest within 10% of it")
    # The critical line may start above sigma_b2_max (gelu, silu): take its first usable point.
    wide = np.logspace(-8, 1, 361)
    eoc2 = edge_of_chaos_curve(act, wide)
    ok2 = (eoc2.status == OK) & np.isfinite(eoc2.q_star) & (eoc2.q_star > 0)
    i = _first_usable(act, eoc2, wide, np.flatnonzero(ok2))
    if i is None:
        raise NoFixedPoint(
            f"{act.name} has no edge of chaos for sigma_b2 in [0, 10]: chi_1(q*) = 1 has no solution at a "
            f"stable length fixed point that unit-length inputs reach, so no (sigma_w2, sigma_b2) makes "
            f"xi_c infinite")
    return float(wide[i]), (
        f"edge of chaos (chi_1 = 1) at the first point of {act.name}'s critical line, sigma_b2 = {wide[i]:.3g}: "
        f"it has none at sigma_b2 <= {sigma_b2_max:g} that unit-length inputs reach"), (
        f"the critical line of {act.name} starts at sigma_b2 = {wide[i]:.3g} > sigma_b2_max = {sigma_b2_max:g}; "
        f"its first point is used")


def _best_trainable(act: Activation, depth: int, sb: float, why: str) -> tuple[float, str, str]:
    """(sigma_w2, rule, note) where no critical point exists at this sigma_b2: along the sigma_w2
    axis, the point with xi_c >= depth (docs/theory.md §A1.7's 6 xi_c >= depth, with a margin of 6) and
    the smallest q*; where none reaches it, the largest xi_c, and the note says the depth is
    beyond the trainable depth 6 xi_c."""
    sw_axis = np.logspace(-2, 3, 401)
    grid = solve_grid(act, sw_axis, np.full(sw_axis.shape, sb), with_c_star=True, q0=1.0)
    xi = np.where(np.isfinite(grid.q_star), grid.xi_c, np.nan)
    ok = np.isfinite(grid.q_star) & ~np.isnan(xi)
    usable = np.array([bool(o) and _usable(act, float(w), sb, float(q))
                       for o, w, q in zip(ok, sw_axis, grid.q_star)])
    if not usable.any():
        raise NoFixedPoint(f"cannot advise for {act.name}: {why}; and no sigma_w2 in [0.01, 1000] at sigma_b2 = "
                           f"{sb:g} has a stable length fixed point that unit-length inputs reach")
    reach = usable & (xi >= depth)
    head = (f"best trainable point: {why}; so xi_c is finite everywhere and the advice is the sigma_w2 "
            f"(at sigma_b2 = {sb:g}) ")
    if reach.any():
        idx = np.flatnonzero(reach)
        i = int(idx[np.argmin(grid.q_star[idx])])
        return float(sw_axis[i]), head + ("with xi_c >= depth and the smallest q*, so that the trainability bound "
                                          "6 xi_c >= depth (docs/theory.md §A1.7) holds with a margin of 6"), ""
    idx = np.flatnonzero(usable)
    i = int(idx[np.nanargmax(xi[idx])])
    if i + 1 < sw_axis.size and not usable[i + 1]:
        # xi_c may grow without bound towards the edge of the fixed point's existence (softplus
        # as sigma_w2 -> 2): bisect for the smallest sigma_w2 there with xi_c >= depth.
        lo, hi, found = float(sw_axis[i]), float(sw_axis[i + 1]), None
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            try:
                fp = fixed_point(act, mid, sb, q0=mid + sb)
                ok_mid = _usable(act, mid, sb, fp.q_star)
            except MeanfieldError:
                ok_mid = False
            if ok_mid and fp.xi_c >= depth:
                found, hi = mid, mid
            elif ok_mid:
                lo = mid
            else:
                hi = mid
        if found is not None:
            return found, head + ("with xi_c >= depth, next to where the length map's fixed point ceases to exist, "
                                  "so that 6 xi_c >= depth (docs/theory.md §A1.7) holds with a margin of 6"), ""
    return float(sw_axis[i]), head + "with the largest xi_c (docs/theory.md §A1.7: trainable up to ~6 xi_c layers)", (
        f"no sigma_w2 reaches xi_c >= depth = {depth} for {act.name} at sigma_b2 = {sb:g}: the largest is xi_c = "
        f"{xi[i]:.3g}, trainable depth ~6 xi_c = {6 * xi[i]:.3g}{' < depth' if 6 * xi[i] < depth else ''}")


# Orthogonal weights are advised where they cut the Jacobian's variance at least this much even
# when the budget is out of reach (very deep tanh nets): the law of phi'(h)^2 is then concentrated,
# mu2/mu1^2 - 1 <= 1/9, which relu-like laws (gain 1 + 1/(mu2/mu1^2 - 1) = 2 for relu) never are.
_ORTHOGONAL_MIN_GAIN = 10.0


def _weight_advice(act: Activation, sw: float, sb: float, depth: int, q_star: float, budget: float,
                   homogeneous: bool) -> dict:
    """The Advice fields on the Jacobian's spectrum for Gaussian and orthogonal weights and the
    recommended ensemble (docs/theory.md §A6.2): orthogonal where its variance L (mu2/mu1^2 - 1) is below
    the Jacobian budget (near-isometry) or at most 1/10 of the Gaussian L (mu2/mu1^2)."""
    from .spectra import WEIGHTS, jacobian_spectrum

    spec = {}
    try:
        for w in WEIGHTS:
            spec[w] = jacobian_spectrum(act, sw, sb, depth, w)
    except MeanfieldError as exc:
        reason = f"Gaussian weights (the default): no Jacobian spectrum to compare: {exc}"
        return _weight_fields(None, None, None, "gaussian", reason)
    g, o = spec["gaussian"], spec["orthogonal"]
    # positively homogeneous laws of phi'(h)^2 do not depend on q*, which is then any q (marginal)
    if not homogeneous and math.isfinite(q_star) and abs(g.q_star - q_star) > 1e-6 * (1.0 + q_star):
        # another stable fixed point than the one unit-length inputs reach: not this network's spectrum
        reason = (f"Gaussian weights (the default): the spectrum's fixed point q* = {g.q_star:.6g} is not the "
                  f"advised q* = {q_star:.6g}, so the ensembles are not compared")
        return _weight_fields(None, None, None, "gaussian", reason)
    gain = g.variance / o.variance if o.variance > 0 else None
    excess = g.mu[1] / g.mu[0] ** 2 - 1.0
    shares = (f"variance of the squared singular values of the input-output Jacobian {o.variance:.3g} "
              f"(edge {o.edge:.3g}) with orthogonal weights, {g.variance:.3g} (edge {g.edge:.3g}) with "
              f"Gaussian ones")
    if gain is None:
        weights = "orthogonal"
        reason = f"orthogonal weights: exact dynamical isometry (every squared singular value is {o.edge:.6g}); {shares}"
    elif o.relative_variance < budget or gain >= _ORTHOGONAL_MIN_GAIN:
        # strict: relu at depth 1 sits exactly on the budget (half its singular values are 0)
        weights = "orthogonal"
        near = ("near dynamical isometry" if o.relative_variance < budget else
                f"the smaller spread, though not isometry at this depth (above the Jacobian budget {budget:g})")
        reason = (f"orthogonal weights: the law of phi'(h)^2 is concentrated (mu2/mu1^2 - 1 = {excess:.3g}), so "
                  f"they give {near}: {shares}, {gain:.3g}x smaller (docs/theory.md §A6.2)")
    else:
        weights = "gaussian"
        why = (f"{act.name} is positively homogeneous, so the law of phi'(h)^2 is the same at every q* "
               f"(mu2/mu1^2 - 1 = {excess:.3g})" if homogeneous else
               f"at q* = {g.q_star:.3g} the law of phi'(h)^2 is spread (mu2/mu1^2 - 1 = {excess:.3g})")
        reason = (f"Gaussian weights (orthogonal ones do not give isometry): {why} and the spectrum spreads "
                  f"with depth with either ensemble: {shares} ({gain:.3g}x, below the "
                  f"{_ORTHOGONAL_MIN_GAIN:g}x that makes them worth it) (docs/theory.md §A6.2)")
    return _weight_fields(g, o, gain, weights, reason)


def _weight_fields(g, o, gain, weights: str, reason: str) -> dict:
    return {"jacobian_variance_gaussian": None if g is None else float(g.variance),
            "jacobian_variance_orthogonal": None if o is None else float(o.variance),
            "jacobian_edge_gaussian": None if g is None else float(g.edge),
            "jacobian_edge_orthogonal": None if o is None else float(o.edge),
            "orthogonal_gain": gain, "weights": weights, "weights_reason": reason}


_NTK_MAX_DEPTH = 1000


def advise_mlp(activation, depth: int, *, sigma_b2: float | None = None, width: int | None = None,
               sigma_b2_max: float = 0.05, jacobian_budget: float = 1.0, ntk: bool = True) -> Advice:
    """Edge-of-chaos advice for a vanilla MLP of ``depth`` layers (see the module docstring)."""
    act = get_activation(activation)
    depth = check_depth(depth, in_float_range=True)
    if width is not None:
        width = check_depth(width, "width")
    check_variance("sigma_b2_max", sigma_b2_max)
    if not jacobian_budget > 0:
        raise DomainError(f"jacobian_budget must be positive, got {jacobian_budget}")
    notes: list[str] = []
    if act.d1 is None and act.closed_forms.get("vd") is None:
        raise DomainError(f"cannot advise for {act.name}: {act.missing_reason or 'it has no derivative'}")
    k = _homogeneous_k(act)
    sw = None
    if sigma_b2 is not None:
        sb = float(check_variance("sigma_b2", sigma_b2))
        rule = "edge of chaos at the given sigma_b2: sigma_w2 solves chi_1(q*) = 1"
        try:
            sw = float(edge_of_chaos(act, sb).sigma_w2)
        except NoFixedPoint as exc:
            sw, rule, why = _best_trainable(act, depth, sb, str(exc))
            if why:
                notes.append(why)
    elif k is not None:
        sb = 0.0
        rule = (f"edge of chaos: {act.name} is positively homogeneous, so its only critical point is "
                f"(sigma_w2, sigma_b2) = ({1 / k:g}, 0)")
    else:
        try:
            sb, rule, why = _choose_sigma_b2(act, depth, sigma_b2_max, jacobian_budget)
        except NoFixedPoint as exc:
            # sigma_b2 = 0 first; a bias keeps q* > 0 where phi'(0) = 0 contracts signals to zero
            for sb in (0.0, sigma_b2_max, 10 * sigma_b2_max):
                try:
                    sw, rule, why = _best_trainable(act, depth, sb, str(exc))
                    break
                except NoFixedPoint:
                    if sb == 10 * sigma_b2_max:
                        raise
        if why:
            notes.append(why)
    if sw is None:
        sw = float(edge_of_chaos(act, sb).sigma_w2)
    d = diagnose(act, sw, sb, depth, name="advised")
    q_star = d.q_star if d.q_star is not None else float("nan")
    excess = float(_jacobian_excess(act, q_star)) if math.isfinite(q_star) else 0.0
    spectra = _weight_advice(act, sw, sb, depth, q_star, jacobian_budget, k is not None)
    comps, seen = [], {}
    for nm, w2, b2, nt in _default_inits(act, width):
        # xavier and lecun are the same point for square layers: diagnosed once
        if (w2, b2) not in seen:
            seen[(w2, b2)] = diagnose(act, w2, b2, depth)
        d_i = seen[(w2, b2)]
        comps.append(dict(d_i.to_dict(), name=nm, note="; ".join(x for x in (nt, d_i.note) if x)))
    ntk_cond = None
    if ntk and depth > _NTK_MAX_DEPTH:
        notes.append(f"NTK condition number not computed above depth {_NTK_MAX_DEPTH} (meanfield.kernels "
                     f"iterates every layer, so its cost grows with depth)")
    elif ntk:
        ntk_cond = _ntk_condition(act, depth, sw, sb, notes)
    if sw > 10 and math.isfinite(q_star):
        mean = float(gaussian.m_phi(act, q_star))
        v = float(gaussian.v_phi(act, q_star))
        msg = (f"sigma_w2 = {sw:.3g} is large: at this critical point (q* = {q_star:.3g}) phi' is small over most "
               f"pre-activations (E[phi'^2] = 1/sigma_w2 = {1 / sw:.3g}), and the Jacobian spread "
               f"depth * (mu2/mu1^2 - 1) = {depth * excess:.3g} says how far from isometry the network is")
        if v > 0 and mean * mean / v > 0.5:
            msg += (f"; {act.name} is not zero-centred (E[phi]^2 / E[phi^2] = {mean * mean / v:.2f} at q*): the units' "
                    f"common mean is most of each layer's signal, which is what forces the large sigma_w2; a "
                    f"zero-centred activation (tanh(x) = 2 sigmoid(2x) - 1) reaches criticality at sigma_w2 ~ 1")
        notes.append(msg)
    if k is not None and sb == 0.0 and sw == 1.0 / k:
        notes.append("every q is a fixed point at the critical point; q* is reported for unit-length inputs")
    return Advice(
        arch="mlp", activation=act.name, depth=depth, width=width, rule=rule, sigma_w2=sw, sigma_b2=sb,
        q_star=q_star, chi_1=float(d.chi_1) if d.chi_1 is not None else 1.0, xi_c=d.xi_c,
        trainable_depth=d.trainable_depth, correlation_in=CORRELATION_IN,
        correlation_out=d.correlation_out, log10_gradient_ratio=d.log10_gradient_ratio,
        jacobian_nonlinearity_spread=depth * excess, **spectra,
        weight_std=math.sqrt(sw / width) if width else None, bias_std=math.sqrt(sb),
        ntk_condition_number=ntk_cond, comparisons=comps, notes=notes)


def _ntk_condition(act, depth, sw, sb, notes, n: int = 64, rho: float = 0.5) -> float | None:
    """dynamics.ntk_condition_number("mlp", act, depth, sw, sb) on its default inputs
    (dynamics.CONDITION_INPUTS: n = 64, correlation 0.5, x.x/d = 1), by maps.ntk_pair: one
    (q, c) pair per layer instead of kernel_trace's 2 x 2 blocks, and the Hermite series for
    smooth phi (issue 10: tanh depth 50 1.1 s -> 0.02 s; the kernel entries agree to ~1e-12,
    tests/test_advise.py)."""
    from .dynamics import _equicorrelated_condition
    from .maps import ntk_pair

    try:
        a, b = ntk_pair(act, sw, sb, depth, sw + sb, sw * rho + sb)
    except MeanfieldError as exc:
        notes.append(f"NTK condition number unavailable: {exc}")
        return None
    return _finite_or_none(float(_equicorrelated_condition(a[-1:], b[-1:], n)[0]))


def advise(arch: str = "mlp", activation="tanh", depth: int = 10, **options):
    """Recommended initialisation variances for ``arch`` at ``depth``, with their diagnostics.

    ``arch="mlp"``: :func:`advise_mlp` (edge of chaos, depth-aware bias variance).
    ``arch="resnet-full" | "resnet-reduced"``: meanfield.residual.advise_residual.
    """
    if arch not in ARCHES:
        from ._arch import arch_label

        arch = arch_label(arch)
    if arch == "mlp":
        extra = set(options) - {"sigma_b2", "width", "sigma_b2_max", "jacobian_budget", "ntk"}
        if extra:
            raise DomainError(f"options {sorted(extra)} do not apply to arch 'mlp'")
        return advise_mlp(activation, depth, **options)
    from .residual import advise_residual

    return advise_residual(arch, activation, depth, **options)


__all__ = ["advise", "advise_mlp", "Advice", "Diagnostics", "diagnose", "torch_gain2", "ARCHES"]
