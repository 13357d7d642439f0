"""Measuring a model against the theory: :func:`measure`, :class:`Profile`, :func:`compare`,
:class:`Comparison`, :func:`plot_profile` (docs/torch.md, "Measuring against the theory")."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from .. import maps
from .. import network as nw
from ..errors import DomainError
from ..network.core import Layer, Network, initial_state
from .apply import Variances, _check_advice_fits, _get, _variances_of, fan_in
from .graph import _describe_mode, _Reader, _Run
from .trace import _DROPOUT, MARK, Structure, _structure

# ------------------------------------------------------------------------------------------
# measure / compare
# ------------------------------------------------------------------------------------------


def _nan_list(a: Any) -> Any:
    if a is None:
        return None
    arr = np.asarray(a, dtype=float)
    return [None if not math.isfinite(v) else float(v) for v in arr.ravel()]


@dataclass(frozen=True)
class Profile:
    """Layer-by-layer signal and gradient propagation of one model (measured or predicted).

    ``index`` l = 0..depth.  MLP: entry l is layer l of ``layers`` (0 = the first layer, depth =
    the readout), aligned with ``meanfield.iterate(...).q[l]``; ``q`` is the mean over inputs and
    units of h^2, ``c`` the correlation of the pairs' pre-activations, ``grad2`` the mean square
    of dE/dh^l.  Residual nets: entry l is the stream after l blocks (aligned with
    ``meanfield.residual.iterate_residual``); ``p``, ``e`` are the mean square and pair cosine
    of x^l, ``q``, ``c`` those of h^l = W^l x^(l-1) + b^l (NaN at l = 0), ``grad2`` the mean
    square of dE/dx^l (chi).  Gradients are for E = sum(r * model(x)) with a random readout r,
    divided by their value at the top (grad2[-1] = 1); ``grad_w2`` is the mean square of dE/dW^l
    per input (NaN where not available).
    """

    kind: str  # "measured" or "predicted"
    arch: str
    activation: str
    depth: int
    n_inputs: int
    pairs: tuple[tuple[int, int], ...]
    layers: tuple[str, ...]
    q: np.ndarray
    c: np.ndarray
    grad2: np.ndarray
    grad_w2: np.ndarray
    p: np.ndarray | None = None
    e: np.ndarray | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def index(self) -> np.ndarray:
        return np.arange(self.depth + 1)

    @property
    def gradient_ratio(self) -> float:
        """grad2 at the first layer (mlp) or the stream input (resnets) over the top."""
        return float(self.grad2[0])

    @property
    def log10_gradient_ratio(self) -> float:
        """log10 of :attr:`gradient_ratio`, finite even where the ratio overflows float range."""
        if "log_grad2" in self.extra:
            return float(np.asarray(self.extra["log_grad2"])[0]) / math.log(10.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(np.log10(self.grad2[0]))

    def rows(self) -> list[dict]:
        """Tidy rows: one dict per layer with every quantity."""
        out = []
        for l in range(self.depth + 1):
            row = {
                "l": l,
                "layer": self.layers[l] if l < len(self.layers) else "",
                "q": float(self.q[l]),
                "c": float(self.c[l]),
                "grad2": float(self.grad2[l]),
                "grad_w2": float(self.grad_w2[l]),
            }
            if self.p is not None:
                row.update(p=float(self.p[l]), e=float(self.e[l]))
            out.append(row)
        return out

    def to_dict(self) -> dict:
        d = {
            "kind": self.kind,
            "arch": self.arch,
            "activation": self.activation,
            "depth": self.depth,
            "n_inputs": self.n_inputs,
            "pairs": [list(p) for p in self.pairs],
            "layers": list(self.layers),
        }
        for k in ("q", "c", "grad2", "grad_w2", "p", "e"):
            d[k] = _nan_list(getattr(self, k))
        return d


def _pairs(pairs: Any, n: int) -> tuple[tuple[int, int], ...]:
    if pairs is None:
        return tuple((i, i + 1) for i in range(0, n - 1, 2))
    out = []
    for p in pairs:
        try:
            i, j = (int(v) for v in p)
        except (TypeError, ValueError):
            raise DomainError(
                f"pairs must be (i, j) index pairs into the batch, got {p!r}"
            ) from None
        if not (0 <= i < n and 0 <= j < n) or i == j:
            raise DomainError(f"pair {p!r} is not two different rows of a batch of {n} inputs")
        out.append((i, j))
    return tuple(out)


def _flat64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().reshape(t.shape[0], -1).to(torch.float64)


def _ms(t: torch.Tensor) -> np.ndarray:
    """Per-input mean square over units: (B,)."""
    f = _flat64(t)
    return (f * f).mean(dim=1).cpu().numpy()


def _corr(t: torch.Tensor, pairs) -> np.ndarray:
    f = _flat64(t)
    out = []
    for i, j in pairs:
        num = float((f[i] * f[j]).mean())
        den = math.sqrt(float((f[i] * f[i]).mean()) * float((f[j] * f[j]).mean()))
        out.append(num / den if den > 0 else float("nan"))
    return np.asarray(out)


def _cross(t: torch.Tensor, pairs) -> np.ndarray:
    f = _flat64(t)
    return np.asarray([float((f[i] * f[j]).mean()) for i, j in pairs])


def _mean(a) -> float:
    a = np.asarray(a, dtype=float)
    return float(a.mean()) if a.size else float("nan")


def measure(
    model: nn.Module,
    x: torch.Tensor,
    *,
    pairs: Sequence[tuple[int, int]] | None = None,
    structure: Structure | None = None,
    seed: int = 0,
) -> Profile:
    """Measure q^l, c^l (and p^l, e^l for residual nets) and the gradients layer by layer.

    Forward hooks on the structure's layers capture their inputs and outputs; one backward pass of
    E = sum(r * model(x)), with r ~ N(0, 1) drawn from ``seed``, gives dE/dh^l, dE/dx^l and dE/dW^l
    (``torch.autograd.grad``: the parameters' ``.grad`` is left alone).  ``pairs`` are index pairs
    of rows of x whose correlation is tracked (default (0, 1), (2, 3), ...).  The model runs in its
    current mode (call ``model.eval()`` to switch dropout off) on the device of its parameters.
    """
    st = _structure(model, structure)
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or x.shape[0] < 1:
        raise DomainError(
            "x must be a torch tensor of inputs with the batch in its first dimension"
        )
    mods = dict(model.named_modules())
    roles = st.roles()
    ref = mods[roles[0][0]].weight
    x = x.detach().to(ref.device, ref.dtype).clone().requires_grad_(True)
    n = x.shape[0]
    prs = _pairs(pairs, n)
    seen: dict[str, list] = {name: [] for name, _ in roles}
    handles = []

    def hook(name):
        def f(mod, inp, out):
            seen[name].append((inp[0], out))

        return f

    for name, _ in roles:
        handles.append(mods[name].register_forward_hook(hook(name)))
    try:
        with torch.enable_grad():
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    for name, calls in seen.items():
        if len(calls) != 1:
            raise DomainError(
                f"layer {name!r} ran {len(calls)} times in one forward pass; meanfield measures "
                f"layers that run once per input"
            )
    if not isinstance(out, torch.Tensor):
        raise DomainError(f"the model returned {type(out).__name__}; measure needs a tensor output")
    gen = torch.Generator().manual_seed(int(seed))
    r = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(out.device, out.dtype)
    E = (r * out).sum()
    outs = [seen[name][0][1] for name, _ in roles]
    ins = [seen[name][0][0] for name, _ in roles]
    layers = [mods[name] for name, _ in roles]
    # dE/dW of a Linear layer is sum_r delta_r x_r^T over the rows r: its sum of squares is
    # sum_rs (delta_r . delta_s)(x_r . x_s), cheap for small batches; ConvNd layers use autograd.
    wi = [
        i for i, L in enumerate(layers) if not isinstance(L, nn.Linear) and L.weight.requires_grad
    ]
    targets = outs + ins + [out] + [layers[i].weight for i in wi]
    grads = torch.autograd.grad(E, targets, allow_unused=True)
    k = len(roles)
    g_out, g_in, g_top = grads[:k], grads[k : 2 * k], grads[2 * k]
    g_w: dict[int, torch.Tensor | None] = dict(zip(wi, grads[2 * k + 1 :]))

    def gms(t):
        return _ms(t) if t is not None else np.full(n, np.nan)

    def wms(i):
        """Mean square of dE/dW^l per input."""
        L = layers[i]
        if isinstance(L, nn.Linear):
            d, a = g_out[i], ins[i]
            if d is None:
                return float("nan")
            d = d.detach().reshape(-1, d.shape[-1]).to(torch.float64)
            a = a.detach().reshape(-1, a.shape[-1]).to(torch.float64)
            if d.shape[0] <= max(d.shape[1], a.shape[1]):
                tot = float(((d @ d.T) * (a @ a.T)).sum())
            else:
                tot = float(((d.T @ a) ** 2).sum())
            return tot / L.weight.numel() / n
        gw = g_w.get(i)
        return (
            float((gw.detach().to(torch.float64) ** 2).mean()) / n
            if gw is not None
            else float("nan")
        )

    extra: dict[str, Any] = {}
    if st.arch == "mlp":
        q = np.array([_mean(_ms(o)) for o in outs])
        c = np.array([_mean(_corr(o, prs)) for o in outs])
        d2 = np.array([_mean(gms(g)) for g in g_out])
        top = d2[-1]
        gw2 = np.array([wms(i) for i in range(k)]) / top
        extra.update(x_q=_ms(ins[0]), x_ab=_cross(ins[0], prs))
        return Profile(
            "measured",
            st.arch,
            st.activation,
            st.depth,
            n,
            prs,
            tuple(st.layers),
            q,
            c,
            d2 / top,
            gw2,
            extra=extra,
        )
    # residual: stream x^(l-1) = input of W^l; x^L = input of the head (or the output)
    widx = [i for i, (_, role) in enumerate(roles) if role == "w"]
    head = [i for i, (_, role) in enumerate(roles) if role == "head"]
    streams = [ins[i] for i in widx] + [ins[head[0]] if head else out]
    sgrads = [g_in[i] for i in widx] + [g_in[head[0]] if head else g_top]
    p = np.array([_mean(_ms(s)) for s in streams])
    e = np.array([_mean(_corr(s, prs)) for s in streams])
    chi = np.array([_mean(gms(g)) for g in sgrads])
    top = chi[-1]
    nan = [float("nan")]
    q = np.array(nan + [_mean(_ms(outs[i])) for i in widx])
    c = np.array(nan + [_mean(_corr(outs[i], prs)) for i in widx])
    gw2 = np.array(nan + [wms(i) for i in widx]) / top
    extra.update(p0=_ms(streams[0]), e0=_corr(streams[0], prs))
    names = tuple([st.stem[-1] if st.stem else "input"] + [b[0] for b in st.blocks])
    return Profile(
        "measured",
        st.arch,
        st.activation,
        st.depth,
        n,
        prs,
        names,
        q,
        c,
        chi / top,
        gw2,
        p,
        e,
        extra=extra,
    )


@dataclass(frozen=True)
class Comparison:
    """A measured profile beside the theory's prediction for the same initialisation."""

    measured: Profile
    predicted: Profile
    variances: (
        Any  # Variances, or a list of per-layer (sigma_w2, sigma_b2) for MLPs read from weights
    )
    source: str  # "init_", "advice", "given" or "weights"
    notes: tuple[str, ...] = ()

    def rows(self) -> list[dict]:
        """Tidy rows: (l, layer, quantity, measured, predicted)."""
        out = []
        for m, p in zip(self.measured.rows(), self.predicted.rows()):
            for key in ("q", "c", "p", "e", "grad2", "grad_w2"):
                if key in m:
                    out.append(
                        {
                            "l": m["l"],
                            "layer": m["layer"],
                            "quantity": key,
                            "measured": m[key],
                            "predicted": p[key],
                        }
                    )
        return out

    def to_dict(self) -> dict:
        var = (
            self.variances.to_dict()
            if hasattr(self.variances, "to_dict")
            else [list(v) for v in self.variances]
        )
        return {
            "measured": self.measured.to_dict(),
            "predicted": self.predicted.to_dict(),
            "variances": var,
            "source": self.source,
            "notes": list(self.notes),
        }


def realised_variances(
    model: nn.Module, structure: Structure | None = None
) -> list[tuple[str, str, float, float]]:
    """(name, role, fan_in * mean(W^2), mean(b^2)) of every layer: the variances the weights
    carry."""
    st = _structure(model, structure)
    mods = dict(model.named_modules())
    out = []
    with torch.no_grad():
        for name, role in st.roles():
            m = mods[name]
            w = m.weight.detach().to(torch.float64)
            b = m.bias.detach().to(torch.float64) if m.bias is not None else None
            out.append(
                (
                    name,
                    role,
                    float((w * w).mean()) * fan_in(m),
                    float((b * b).mean()) if b is not None else 0.0,
                )
            )
    return out


def _variances_for_compare(model, st, advice_or_variances):
    notes: list[str] = []
    if advice_or_variances is None:
        rec = getattr(model, MARK, None)
        if rec is not None and rec.variances is not None:
            return rec.variances, "init_", notes
        real = realised_variances(model, st)
        if st.arch == "mlp":
            return [(w2, b2) for _, _, w2, b2 in real], "weights", notes

        def pooled(role):
            v = [(w2, b2) for _, r, w2, b2 in real if r == role]
            return float(np.mean([a for a, _ in v])), float(np.mean([b for _, b in v]))

        sw, sb = pooled("w")
        sv, sa = pooled("v") if st.arch == "resnet-full" else (1.0, 0.0)
        notes.append("variances read from the weights (pooled over blocks)")
        return Variances(sw, sb, sv, sa), "weights", notes
    if isinstance(advice_or_variances, Variances):
        var, source = advice_or_variances, "given"
    else:
        _check_advice_fits(advice_or_variances, st)
        var = _variances_of(
            advice_or_variances,
            st,
            _get(advice_or_variances, "sigma_in2", 1.0),
            _get(advice_or_variances, "sigma_o2", 1.0),
        )
        source = "advice" if not isinstance(advice_or_variances, Mapping) else "given"
    real = realised_variances(model, st)
    for name, role, w2, _ in real:
        want = var.for_role(role)[0]
        if want > 0 and abs(w2 / want - 1) > 0.25:
            notes.append(
                f"layer {name} carries sigma2 = fan_in * mean(W^2) = {w2:.3g}, not the {want:.3g} "
                f"compared against: was init_ applied?"
            )
            break
    return var, source, notes


def _predict_mlp(model, st: Structure, m: Profile, per_layer: list[tuple[float, float]]) -> Profile:
    act = st.act
    mods = dict(model.named_modules())
    layers = [mods[nm] for nm in st.layers]
    sw = [w for w, _ in per_layer]
    sb = [b for _, b in per_layer]
    xq, xab = m.extra["x_q"], m.extra["x_ab"]
    i_idx = np.array([i for i, _ in m.pairs], dtype=int)
    j_idx = np.array([j for _, j in m.pairs], dtype=int)
    qa = sw[0] * xq + sb[0]  # (B,)
    q12 = sw[0] * xab + sb[0]  # (P,)
    qs, cs = [qa], []

    def corr(q12, qa):
        return q12 / np.sqrt(qa[i_idx] * qa[j_idx]) if len(m.pairs) else np.array([])

    cs.append(corr(q12, qa))
    for l in range(1, st.depth + 1):
        q12 = (
            maps.covariance_map(act, qa[i_idx], qa[j_idx], q12, sw[l], sb[l])
            if len(m.pairs)
            else q12
        )
        qa = maps.length_map(act, qa, sw[l], sb[l])
        qs.append(qa)
        cs.append(corr(q12, qa))
    # backward (docs/theory.md §A1.5): E delta^l^2 = E delta^(l+1)^2 chi_1(q^l) N_(l+1) / N_l, per input
    grad = [np.ones_like(xq)]
    for l in range(st.depth - 1, -1, -1):
        w = layers[l + 1].weight
        ratio = w.shape[0] / (w.shape[1] * getattr(layers[l + 1], "groups", 1))
        grad.append(grad[-1] * maps.chi_1(act, qs[l], sw[l + 1]) * ratio)
    grad = grad[::-1]
    conv = [not isinstance(L, nn.Linear) for L in layers]
    gw2 = []
    for l in range(st.depth + 1):
        if conv[l]:
            gw2.append(float("nan"))  # spatial sums correlate; no prediction
            continue
        vin = xq if l == 0 else maps.length_map(act, qs[l - 1], 1.0, 0.0)
        gw2.append(_mean(grad[l] * vin))
    q = np.array([_mean(v) for v in qs])
    c = np.array([_mean(v) for v in cs])
    g2 = np.array([_mean(v) for v in grad])
    return Profile(
        "predicted",
        st.arch,
        st.activation,
        st.depth,
        m.n_inputs,
        m.pairs,
        m.layers,
        q,
        c,
        g2,
        np.asarray(gw2),
    )


def _predict_resnet(st: Structure, m: Profile, var: Variances) -> Profile:
    from ..residual import iterate_residual

    p0 = m.extra["p0"]
    runs = [
        (0.5 * (p0[i] + p0[j]), float(np.clip(e, -1.0, 1.0)))
        for (i, j), e in zip(m.pairs, m.extra["e0"])
    ]
    if not runs:
        runs = [(_mean(p0), 1.0)]
    kw = dict(sigma_v2=var.sigma_v2, sigma_a2=var.sigma_a2) if st.arch == "resnet-full" else {}
    trs = [
        iterate_residual(st.arch, st.act, var.sigma_w2, var.sigma_b2, st.depth, p0=pp, c0=cc, **kw)
        for pp, cc in runs
    ]

    def avg(key):
        return np.mean([np.asarray(getattr(t, key), dtype=float) for t in trs], axis=0)

    p, e, q = avg("p"), avg("e"), avg("q")
    # correlation of h^l = W x^(l-1) + b for equal lengths: (sw gamma + sb) / (sw p + sb)
    ch = []
    for t in trs:
        pp, ee = np.asarray(t.p, dtype=float), np.asarray(t.e, dtype=float)
        num = var.sigma_w2 * ee[:-1] * pp[:-1] + var.sigma_b2
        den = var.sigma_w2 * pp[:-1] + var.sigma_b2
        with np.errstate(invalid="ignore", divide="ignore"):
            ch.append(np.concatenate([[np.nan], num / den]))
    c = np.mean(ch, axis=0)
    chi = avg("chi")
    gw = avg("grad_w")
    return Profile(
        "predicted",
        st.arch,
        st.activation,
        st.depth,
        m.n_inputs,
        m.pairs,
        m.layers,
        q,
        c,
        chi,
        gw,
        p,
        e,
        extra={"log_grad2": avg("log_chi")},
    )


def compare(
    model: nn.Module,
    x: torch.Tensor,
    advice_or_variances: Any = None,
    *,
    pairs: Sequence[tuple[int, int]] | None = None,
    structure: Structure | None = None,
    seed: int = 0,
) -> Comparison:
    """:func:`measure` the model on ``x`` and predict the same profile from the theory.

    The variances are ``advice_or_variances`` (an Advice, a mapping with sigma_w2, ..., or
    :class:`Variances`), else those :func:`init_` recorded, else the ones the weights carry
    (:func:`realised_variances`; per layer for MLPs, pooled over blocks for residual nets).
    MLPs: the prediction starts from the inputs, q^0 = sigma_w2 |x|^2 / fan_in + sigma_b2 per
    input and pair, through the length and covariance maps of meanfield.maps (docs/theory.md §A1.2-1.3)
    and the backward recursion of 1.5 with the layers' widths.  Residual nets: it starts from the
    measured stream x^0 (the stem's output) and runs meanfield.residual.iterate_residual per pair
    (docs/theory.md §A2.3).  Exact at infinite width; for inputs of unequal lengths the residual prediction
    uses each pair's mean length.
    """
    st = _structure(model, structure)
    m = measure(model, x, pairs=pairs, structure=st, seed=seed)
    var, source, notes = _variances_for_compare(model, st, advice_or_variances)
    active = [f"{n} ({type(mod).__name__}, p={getattr(mod, 'p', '?')})" for n, mod in model.named_modules()
              if isinstance(mod, _DROPOUT) and mod.training and getattr(mod, "p", 0) > 0]
    if active:
        import warnings

        msg = (f"the model is in train mode with active dropout ({', '.join(active)}): the measurement "
               f"includes dropout's masks but the prediction assumes eval mode (no dropout; docs/theory.md §A1.8 "
               f"has the maps with dropout, which raise q and bound xi_c); call model.eval() to compare "
               f"like with like")
        warnings.warn(msg, UserWarning, stacklevel=2)
        notes = list(notes) + [msg]
    if st.arch == "mlp":
        per_layer = var if isinstance(var, list) else [var.for_role("layer")] * len(st.layers)
        pred = _predict_mlp(model, st, m, per_layer)
    else:
        if isinstance(var, list):
            raise DomainError("residual networks need uniform variances (Variances or advice)")
        pred = _predict_resnet(st, m, var)
    return Comparison(m, pred, var, source, tuple(notes) + st.notes)


_LOG_QUANTITIES = {
    "q": "$q^l$ (mean squared pre-activation)",
    "p": "$p^l$ (mean square of the stream)",
    "grad2": "gradient second moment / top",
    "grad_w2": "weight-gradient second moment / top",
}
_LIN_QUANTITIES = {"c": "$c^l$ (correlation of input pairs)", "e": "$e^l$ (cosine of the stream)"}


def plot_profile(comparison: Comparison, ax=None, *, quantity: str = "q"):
    """Draw one quantity of a :class:`Comparison` over depth: measured (markers), predicted (line).

    ``quantity``: q, c, grad2, grad_w2 (all architectures), p, e (residual nets).  A
    :class:`ModelComparison` (from :func:`compare_model`) draws q, c or grad per row of the
    network, the measurement with its error bar (2 standard errors).  Returns the Axes.
    """
    if isinstance(comparison, ModelComparison):
        return _plot_model(comparison, ax, quantity)
    if not isinstance(comparison, Comparison):
        raise DomainError(
            f"plot_profile needs a Comparison from compare(), got {type(comparison).__name__}"
        )
    if quantity not in _LOG_QUANTITIES and quantity not in _LIN_QUANTITIES:
        raise DomainError(
            f"quantity must be one of {', '.join(list(_LOG_QUANTITIES) + list(_LIN_QUANTITIES))}, "
            f"got {quantity!r}"
        )
    meas = getattr(comparison.measured, quantity)
    pred = getattr(comparison.predicted, quantity)
    if meas is None:
        raise DomainError(f"quantity {quantity!r} exists for residual networks only")
    from ..plot import _plt

    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.8))
    l = comparison.measured.index
    ax.plot(l, np.asarray(pred, dtype=float), "-", color="C0", label="theory")
    ax.plot(l, np.asarray(meas, dtype=float), "o", color="C1", ms=3.5, label="measured")
    label = {**_LOG_QUANTITIES, **_LIN_QUANTITIES}[quantity]
    vals = np.concatenate([np.asarray(meas, float), np.asarray(pred, float)])
    vals = vals[np.isfinite(vals)]
    if quantity in _LOG_QUANTITIES and vals.size and np.all(vals > 0):
        ax.set_yscale("log")
    ax.set_xlabel("layer $l$" if comparison.measured.arch == "mlp" else "block $l$")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(label)
    mp = comparison.measured
    ax.set_title(f"{mp.arch}, {mp.activation}, depth {mp.depth}", fontsize=10)
    ax.legend(frameon=False)
    return ax


_MODEL_QUANTITIES = {"q": "$q^l$ (mean squared output)", "c": "mean correlation of input pairs",
                     "grad": "gradient second moment / output's"}


def _plot_model(cmp: "ModelComparison", ax, quantity: str):
    if quantity not in _MODEL_QUANTITIES:
        raise DomainError(f"quantity must be one of {', '.join(_MODEL_QUANTITIES)} for a "
                          f"ModelComparison, got {quantity!r}")
    meas, pred, err = {
        "q": (cmp.measured, cmp.predicted, cmp.rel_se * cmp.measured),
        "c": (cmp.c_measured, cmp.c_predicted, cmp.c_se),
        "grad": (cmp.grad_measured, cmp.grad_predicted, cmp.grad_rel_se * cmp.grad_measured),
    }[quantity]
    from ..plot import _plt

    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 3.8))
    l = np.arange(len(cmp.layers))
    ax.plot(l, np.asarray(pred, float), "-", color="C0", label="theory")
    ax.errorbar(l, np.asarray(meas, float), yerr=2 * np.nan_to_num(np.asarray(err, float)),
                fmt="o", color="C1", ms=3.5, label="measured (2 se)")
    vals = np.concatenate([np.asarray(meas, float), np.asarray(pred, float)])
    vals = vals[np.isfinite(vals)]
    if quantity != "c" and vals.size and np.all(vals > 0):
        ax.set_yscale("log")
    ax.set_xticks(l)
    ax.set_xticklabels(cmp.layers, rotation=90, fontsize=7)
    ax.set_ylabel(_MODEL_QUANTITIES[quantity])
    ax.set_title(f"{len(cmp.layers)} rows, width {cmp.width}, batch {cmp.batch}", fontsize=10)
    ax.legend(frameon=False)
    return ax


# ------------------------------------------------------------------------------------------
# measuring against the prediction
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelComparison:
    """Per layer of ``net.flat()``: the model's measured q, correlation and gradient beside the
    algebra's prediction (``Network.propagate``, docs/theory.md §A1.2-1.5).

    q: ``measured``/``predicted`` are the mean squared output (averaged over units, positions and
    the batch); ``se`` the measurement's standard error from the spread of its channels' mean
    squares (this layer's sampling only: the channels are independent given the layer's input);
    ``rel_se`` se/q of row l summed in quadrature with that of every earlier block (a weight
    layer and the rows after it, which see the same draw; the largest of the block's), the
    spread of q^l when each layer's map of log q has slope at most 1, as for relu (slope 1),
    tanh, normalisations and residual streams (docs/torch.md); ``z = rel_error / rel_se``.

    c: ``c_measured``/``c_predicted`` the mean over the batch's pairs of inputs of their
    correlation (position-averaged second moments, normalised); ``c_error`` their difference
    and ``c_se`` its standard error from 16 channel groups' correlations, accumulated over
    blocks as rel_se is; ``c_z = c_error / c_se``.

    gradient: ``grad_measured``/``grad_predicted`` the gradient's second moment at the layer's
    output (averaged over units, positions and the batch) for E = sum(r * model(x)), r ~ N(0, 1),
    divided by its value at the output.  The algebra's backward maps assume a weight layer keeps
    its width, so the prediction is multiplied by fan_out/fan_in channels of every weight layer
    above (exact for the per-unit mean square of W^T delta).  ``grad_rel_se`` accumulates the
    channels' spread from the top down, as rel_se does from the bottom up; NaN where the
    algebra has no backward map (batch_norm), with a note.
    """

    layers: tuple[str, ...]
    modules: tuple[str, ...]
    measured: np.ndarray
    predicted: np.ndarray
    rel_error: np.ndarray
    se: np.ndarray
    rel_se: np.ndarray
    width: int
    batch: int
    notes: tuple[str, ...] = ()
    c_measured: np.ndarray | None = None
    c_predicted: np.ndarray | None = None
    c_error: np.ndarray | None = None
    c_se: np.ndarray | None = None
    grad_measured: np.ndarray | None = None
    grad_predicted: np.ndarray | None = None
    grad_rel_error: np.ndarray | None = None
    grad_rel_se: np.ndarray | None = None

    @property
    def z(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.rel_error / self.rel_se

    @property
    def c_z(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.c_error / self.c_se

    @property
    def grad_z(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.grad_rel_error / self.grad_rel_se

    @property
    def log10_gradient_ratio(self) -> tuple[float, float]:
        """(measured, predicted) log10 of the first row's gradient over the output's."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return (float(np.log10(self.grad_measured[0])), float(np.log10(self.grad_predicted[0])))

    _EXTRA = ("c_measured", "c_predicted", "c_error", "c_se", "grad_measured", "grad_predicted",
              "grad_rel_error", "grad_rel_se")

    def rows(self) -> list[dict]:
        out = []
        cz, gz, z = self.c_z, self.grad_z, self.z
        for i in range(len(self.layers)):
            r = {"l": i, "layer": self.layers[i], "module": self.modules[i],
                 "measured": float(self.measured[i]), "predicted": float(self.predicted[i]),
                 "rel_error": float(self.rel_error[i]), "se": float(self.se[i]),
                 "rel_se": float(self.rel_se[i]), "z": float(z[i])}
            for k in self._EXTRA:
                r[k] = float(getattr(self, k)[i])
            r.update(c_z=float(cz[i]), grad_z=float(gz[i]))
            out.append(r)
        return out

    def to_dict(self) -> dict:
        d = {"layers": list(self.layers), "modules": list(self.modules),
             "measured": self.measured.tolist(), "predicted": self.predicted.tolist(),
             "rel_error": self.rel_error.tolist(), "se": self.se.tolist(),
             "rel_se": self.rel_se.tolist(), "width": self.width, "batch": self.batch,
             "notes": list(self.notes)}
        for k in self._EXTRA:
            d[k] = _nan_list(getattr(self, k))
        return d


def forward_diagnostics(net: Network, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """q[l, n] and the N x N correlation[l] of ``net.propagate(X)``, forward only: a network
    with batch_norm has no backward map (docs/theory.md §A5.6), and these need none."""
    X = np.asarray(X, float)
    net.check(X)
    st = initial_state(X, net.parametrization, False, "auto")
    qs, cs = [], []
    for layer in net.flat():
        st, _ = layer.fold(st)
        q = st.q().reshape(st.N, -1).mean(axis=1)
        Kbar = np.einsum("nsms->nm", st.K.reshape(st.N, st.P, st.N, st.P)) / st.P
        qs.append(q)
        with np.errstate(divide="ignore", invalid="ignore"):
            cs.append(Kbar / np.sqrt(np.outer(q, q)))
    return np.array(qs), np.array(cs)


def predict_rows(net: Network, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """``net.propagate(X)``'s q[l, n], correlation[l] and gradient[l] (mean over the inputs), and
    a note; a network with batch_norm, which has no backward map (docs/theory.md §A5.6), is
    folded forward once and gets NaN gradients and the note saying so."""
    if any(k.name == "batch_norm" for layer in net.flat() for k in _walk(layer)):
        q, K = forward_diagnostics(net, X)
        return q, K, np.full(q.shape[0], math.nan), (
            "no gradient prediction: batch_norm's gradients through the batch statistics are not "
            "in the algebra (docs/theory.md §A5.6)")
    p = net.propagate(X)
    return p.q, p.correlation, p.gradient.mean(axis=1), ""


def predicted_q(net: Network, X: np.ndarray) -> np.ndarray:
    """q[l, n] of ``net.propagate(X)``, forward only (see :func:`forward_diagnostics`)."""
    return forward_diagnostics(net, X)[0]


def _walk(layer: Layer) -> Iterator[Layer]:
    yield layer
    for k in getattr(layer, "layers", ()):
        yield from _walk(k)
    for k in ("branch", "shortcut"):
        if isinstance(getattr(layer, k, None), Layer):
            yield from _walk(getattr(layer, k))


def _accumulate(r2: np.ndarray, fresh: list[bool]) -> np.ndarray:
    """sqrt of the running sum, block by block, of squared relative errors ``r2`` (rows in the
    order the randomness enters), a block starting at each row with ``fresh`` set and counting
    with its largest value (docs/torch.md)."""
    done, block, acc = 0.0, 0.0, []
    for v, new in zip(r2, fresh):
        if new:
            done, block = done + block, 0.0
        if math.isnan(v):
            acc.append(math.nan)
            continue
        block = max(block, float(v))
        acc.append(done + float(v))
    return np.sqrt(np.array(acc))


def _pair_mean(K: np.ndarray) -> float:
    """The mean over pairs n < m of K[n, m] / sqrt(K[n, n] K[m, m])."""
    d = np.sqrt(np.diagonal(K))
    iu = np.triu_indices(K.shape[0], 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.mean(K[iu] / (d[iu[0]] * d[iu[1]]))) if len(iu[0]) else math.nan


def _rows(r: _Reader) -> tuple[list, list[int], list[bool]]:
    """The traced entries behind the rows of ``net.flat()``, each row's channel count, and
    whether fresh weights enter at it (a weight layer, or a residual block holding one)."""
    out_val = None
    for n in r.gm.graph.nodes:
        if n.op == "output":
            out_val = r.vals[n.args[0]]
    entries = [e for e in out_val.seq for _ in e.layer.flat()]
    C = [int(r.vals[e.node].tshape[r.vals[e.node].channel_axis]) for e in entries]
    fresh = [any(isinstance(k, (nw.Dense, nw.Conv, nw.Attention, nw.Residual))
                 for k in _walk(e.layer))
             for e in entries]
    return entries, C, fresh


def _width_factors(r: _Reader) -> np.ndarray:
    """Per row, the product of fan_out / fan_in channels over the weight layers above it: the
    algebra's per-unit backward maps assume a weight layer keeps its width, and the per-unit
    mean square of W^T delta is that factor times larger (docs/torch.md).  A flatten of P
    positions counts too: the algebra's flatten backward divides the gradient by P (its
    width goes from C to P C channels), while a reshape leaves each unit's gradient as it is."""
    entries, C, fresh = _rows(r)
    ts = r._tshape(r.inp)
    c_in = [int(ts[1] if (r.vals[r.inp].cf and len(ts) > 2) else ts[-1])] + C[:-1]
    names, prev = [], None
    for e in entries:   # one entry per row of its layer's flat() (a residual block holds many)
        if e is not prev:
            names += [layer.name for layer in e.layer.flat()]
        prev = e
    ratio = np.array([C[i] / c_in[i] if fresh[i] or names[i] == "flatten" else 1.0
                      for i in range(len(C))])
    return np.concatenate([np.cumprod(ratio[::-1])[::-1][1:], [1.0]])


def compare_model(model: nn.Module, x: torch.Tensor, *, net: Network | None = None,
                  seed: int = 0) -> ModelComparison:
    """The model's per-layer q, input-pair correlation and gradient second moment on the batch
    x beside the network algebra's prediction (``Network.propagate``) for the variances now in
    its weights (issue 12 section 2; docs/theory.md §A1.2-1.5 and 4.1-4.4), with a standard error
    per row.  ``net``: predict with this network instead (the same layers as
    ``to_network(model, x)``, other variances: e.g. advice, or a deliberately wrong one).  The
    gradients are those of E = sum(r * model(x)), r ~ N(0, 1) drawn from ``seed``, taken with
    ``torch.autograd.grad`` on the input (parameters' ``.grad`` are left alone).  The model runs
    with dropout off and BatchNorm on batch statistics (its modes and BatchNorm buffers are
    restored); hooks keep per-channel summaries only (docs/torch.md)."""
    r = _Reader(model, x)
    read, layout = r.read()
    if net is None:
        net = read
    elif not isinstance(net, Network) or [l.name for l in net.flat()] != [
            l.name for l in read.flat()]:
        raise DomainError(
            f"net must be a meanfield Network with the layers of to_network(model, x) "
            f"({', '.join(l.name for l in read.flat())}), got "
            f"{type(net).__name__ if not isinstance(net, Network) else [l.name for l in net.flat()]}")
    flat = net.flat()
    entries, C_rows, fresh = _rows(r)
    axes = {e.node: r.vals[e.node].channel_axis for e in entries}
    interp = _Run(r.gm, axes, grads=True)
    ref = next((p for p in model.parameters()), None)
    xin = x.detach().clone()
    if ref is not None and xin.is_floating_point():
        xin = xin.to(ref.device, ref.dtype)
    xin.requires_grad_(True)
    with _describe_mode(model), torch.enable_grad():
        out = interp.run(xin)
        gen = torch.Generator().manual_seed(int(seed))
        rr = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(out.device, out.dtype)
        torch.autograd.grad((rr * out).sum(), [xin])
    del out
    ms = [interp.ms[e.node] for e in entries]
    measured = np.array([m.mean() for m in ms])
    C = np.array([m.size for m in ms])
    # one channel (a scalar readout) has no spread to estimate its error from
    se = np.array([m.std(ddof=1) / math.sqrt(m.size) if m.size > 1 else math.nan for m in ms])
    X = layout.to_channels_last(x)
    notes = list(layout.notes)
    pq, pc, pg, note = predict_rows(net, X)
    if note:
        notes.append(note)
    pred = pq.mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = (measured - pred) / pred
        rel_se = _accumulate((se / measured) ** 2, fresh)
    # correlations: the mean over pairs, measured from the whole Gram and from 16 channel groups
    c_meas, c_se2 = [], []
    for e in entries:
        grams, sizes = interp.grams[e.node]
        c_meas.append(_pair_mean(grams.sum(axis=0)))
        cg = np.array([_pair_mean(g) for g in grams])
        c_se2.append(float(np.var(cg, ddof=1) / len(cg)) if len(cg) > 1 else math.nan)
    c_meas = np.array(c_meas)
    c_pred = np.array([_pair_mean(k) for k in pc])
    c_se = _accumulate(np.array(c_se2), fresh)
    # gradients: per unit, over the output's; the algebra's per-unit backward maps assume a
    # weight layer keeps its width (fan_out = fan_in), so each weight layer above multiplies
    # the per-unit gradient by its fan_out / fan_in channels
    gm = [interp.gms.get(e.node) for e in entries]
    if any(g is None for g in gm):   # pragma: no cover - a layer the backward pass skipped
        missing = [flat[i].name for i, g in enumerate(gm) if g is None]
        raise DomainError(f"compare_model: no gradient reached rows {missing}")
    g_meas = np.array([g.mean() for g in gm])
    g_meas = g_meas / g_meas[-1]
    g_pred = pg / pg[-1] * _width_factors(r)
    g_se = np.array([g.std(ddof=1) / math.sqrt(g.size) / g.mean() if g.size > 1 else math.nan
                     for g in gm])
    # the gradient at row l's output has passed the backward maps of the rows above it; fresh
    # randomness enters at each weight layer's W^T; the top row is the normalisation
    g_r2 = np.concatenate([g_se[:-1] ** 2, [math.nan]])
    fresh_down = [True] + [fresh[i + 1] for i in range(len(flat) - 2, -1, -1)]
    g_rel_se = _accumulate(g_r2[::-1], fresh_down)[::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        g_rel = (g_meas - g_pred) / g_pred
    width = int(C[:-1].min()) if len(C) > 1 else int(C[0])
    return ModelComparison(tuple(l.name for l in flat), layout.modules, measured, pred, rel, se,
                           rel_se, width, int(x.shape[0]), tuple(notes), c_meas, c_pred,
                           c_meas - c_pred, c_se, g_meas, g_pred, g_rel, g_rel_se)
