"""Advice for any readable PyTorch model: :func:`advise_model` gives every weight layer its
variances with the reason, and the algebra's predicted diagnostics at the advised point and at
PyTorch's default; ``init_(model, advice)`` applies it (docs/torch.md, "Advice for any model").

The reasons come from the package's own laws: the edge of chaos of each nonlinearity at the
model's depth (:func:`meanfield.advise.advise`, docs/theory.md §A1.4-1.7), depth-scaled residual
branches (:func:`meanfield.residual.advise_residual`, docs/theory.md §A2.8) and BatchNorm's
gradient explosion (:func:`meanfield.network.batchnorm.gradient_growth`, docs/theory.md §A5.6).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .. import network as nw
from ..errors import DomainError, MeanfieldError
from ..network.core import Layer, Network
from .apply import _fill, _generator, fan_in
from .graph import _Reader
from .measure import _pair_mean, _walk, _width_factors, predict_rows
from .trace import MARK

# layers that pass a signal on without a variance of their own: the weight layer before them is
# advised for the nonlinearity after them
_PASS = ("avg_pool", "global_avg_pool", "flatten", "identity")


@dataclass(frozen=True)
class LayerAdvice:
    """One weight layer's advised variances: weights N(0, sigma_w2 / fan_in), bias N(0, sigma_b2)
    (None: the layer has no bias), with the law they come from."""

    module: str
    role: str        # "hidden", "readout", "stem", "branch W", "branch V", "head", "shortcut"
    sigma_w2: float
    sigma_b2: float | None
    reason: str

    def to_dict(self) -> dict:
        return {"module": self.module, "role": self.role, "sigma_w2": self.sigma_w2,
                "sigma_b2": self.sigma_b2, "reason": self.reason}


@dataclass(frozen=True)
class ModelDiagnostics:
    """The algebra's prediction for the model on the example batch (``Network.propagate``):
    per row of ``to_network(model, x)``, q (mean over the batch), the mean pair correlation
    and the gradient's second moment over the output's (per unit, the widths' fan_out/fan_in
    included as in :func:`compare_model`; NaN without a backward map)."""

    name: str
    q: np.ndarray
    correlation: np.ndarray
    gradient: np.ndarray
    note: str = ""

    @property
    def log10_gradient_ratio(self) -> float:
        """log10 of the first row's gradient over the output's (NaN if not predicted)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(np.log10(self.gradient[0]))

    def to_dict(self) -> dict:
        def lst(a):
            return [None if not math.isfinite(v) else float(v) for v in np.asarray(a, float)]
        return {"name": self.name, "q": lst(self.q), "correlation": lst(self.correlation),
                "gradient": lst(self.gradient),
                "log10_gradient_ratio": lst([self.log10_gradient_ratio])[0], "note": self.note}


@dataclass(frozen=True)
class ModelAdvice:
    """What :func:`advise_model` advises for one model, and why."""

    model: str
    arch: str                 # "mlp" (a chain), "resnet-full", "resnet-reduced" or "resnet-any"
    depth: int                # hidden layers of a chain, or residual blocks
    activations: tuple[str, ...]
    layers: tuple[LayerAdvice, ...]
    rows: tuple[str, ...]     # the algebra's rows the diagnostics are given for
    advised: ModelDiagnostics
    default: ModelDiagnostics
    batch_norm: str | None    # BatchNorm's gradient explosion, stated; None without BatchNorm
    advice: tuple[Any, ...] = field(default=(), repr=False)   # the meanfield.advise results used
    notes: tuple[str, ...] = ()
    # the advised point as a Network of the model's layers: compare_model(model, x, net=network)
    network: Network | None = field(default=None, repr=False)

    def rows_table(self) -> list[dict]:
        """One dict per weight layer."""
        return [la.to_dict() for la in self.layers]

    def to_dict(self) -> dict:
        return {"model": self.model, "arch": self.arch, "depth": self.depth,
                "activations": list(self.activations),
                "layers": [la.to_dict() for la in self.layers], "rows": list(self.rows),
                "advised": self.advised.to_dict(), "default": self.default.to_dict(),
                "batch_norm": self.batch_norm,
                "advice": [a.to_dict() if hasattr(a, "to_dict") else a for a in self.advice],
                "notes": list(self.notes)}


@dataclass(frozen=True)
class ModelInitRecord:
    """What ``init_(model, model_advice)`` did (stored as ``model._meanfield_init``)."""

    advice: ModelAdvice = field(repr=False)
    seed: int | None
    layers: tuple[tuple[str, float, float | None], ...]   # (module, sigma_w2, sigma_b2)
    reset: tuple[str, ...] = ()          # normalisation layers set to the identity affine map
    untouched: tuple[str, ...] = ()
    weights: str = "gaussian"
    source: str = "advise_model()"
    structure: Any = None                # no Structure: the model was read by to_network
    variances: Any = None

    def to_dict(self) -> dict:
        return {"advice": self.advice.to_dict(), "seed": self.seed,
                "layers": [list(t) for t in self.layers], "reset": list(self.reset),
                "untouched": list(self.untouched), "weights": self.weights, "source": self.source}


# ------------------------------------------------------------------------------------------
# walking the network
# ------------------------------------------------------------------------------------------


def _weighted(layer: Layer) -> bool:
    return isinstance(layer, (nw.Dense, nw.Conv))


def _next_kind(seq: list[Layer], i: int) -> Layer | None:
    """The first layer after seq[i] that is not a pass-through (pooling, flatten)."""
    for layer in seq[i + 1:]:
        if layer.name not in _PASS:
            return layer
    return None


def _act_after(seq: list[Layer], i: int) -> tuple[Any, list[str]]:
    """The nonlinearity that reads weight layer seq[i] (through normalisations and pooling), and
    the normalisations on the way."""
    norms = []
    for layer in seq[i + 1:]:
        if _is_act(layer):
            return layer.act, norms
        if layer.name in ("batch_norm", "layer_norm"):
            norms.append(layer.name)
            continue
        if layer.name in _PASS:
            continue
        return None, norms
    return None, norms


def _is_act(layer: Layer) -> bool:
    return isinstance(layer, nw.ActivationLayer)


def _weight_layers(net: Network) -> list[Layer]:
    out: list[Layer] = []

    def walk(layers):
        for layer in layers:
            if _weighted(layer):
                out.append(layer)
            elif isinstance(layer, nw.Residual):
                walk(layer.branch.layers)
                walk(layer.shortcut.layers)
            elif isinstance(layer, Network):
                walk(layer.layers)
    walk(net.layers)
    return out


def _attention_layers(net: Network) -> list[Layer]:
    return [k for layer in net.layers for k in _walk(layer) if isinstance(k, nw.Attention)]


def _with_variances(net: Network, values: list[tuple[float, float | None]],
                    attention: dict[int, tuple[float, float]] | None = None) -> Network:
    """A copy of ``net`` whose weight layers (in :func:`_weight_layers` order) carry ``values``,
    and whose attention layers (keyed by ``id`` in ``net``) carry (sigma_q2, sigma_o2)."""
    new = copy.deepcopy(net)
    for layer, (sw, sb) in zip(_weight_layers(new), values):
        layer.sigma_w2 = float(sw)
        layer.sigma_b2 = None if sb is None else float(sb)
    for old, layer in zip(_attention_layers(net), _attention_layers(new)):
        if attention and id(old) in attention:
            layer.sigma_q2, layer.sigma_o2 = map(float, attention[id(old)])
    return new


def _diagnostics(name: str, net: Network, X: np.ndarray, factors: np.ndarray) -> ModelDiagnostics:
    q, corr, g, note = predict_rows(net, X)
    g = g / g[-1] * factors
    return ModelDiagnostics(name, q.mean(axis=1), np.array([_pair_mean(k) for k in corr]), g, note)


# ------------------------------------------------------------------------------------------
# advise_model
# ------------------------------------------------------------------------------------------


def _mlp_advice(act, depth: int, has_bias: bool, cache: dict, options: dict):
    from ..advise import advise

    key = (act.name, has_bias)
    if key not in cache:
        opts = dict(options)
        opts.setdefault("ntk", False)   # the NTK condition number costs seconds and is not used here
        if not has_bias:
            opts["sigma_b2"] = 0.0
        cache[key] = advise("mlp", activation=act, depth=depth, **opts)
    return cache[key]


def advise_model(model: nn.Module, example_input: torch.Tensor, **advise_options: Any) -> ModelAdvice:
    """Per-layer initialisation variances for any model :func:`to_network` reads, each with its
    reason, and the predicted diagnostics at the advised point and at PyTorch's default.

    * A chain (no residual additions): each weight layer gets the edge-of-chaos point of the
      nonlinearity that reads it (through pooling and normalisations), from
      ``meanfield.advise("mlp", phi, depth)`` with depth = the number of weight layers - 1
      (docs/theory.md §A1.4-1.7); the readout the same as the layer before it.
    * Residual blocks x + V phi(W x + b) + a (or x + phi(W x + b)) with identity shortcuts:
      ``meanfield.residual.advise_residual`` for the number of blocks (docs/theory.md §A2.8);
      the stem and head layers get sigma2 = 1 and zero bias.
    * BatchNorm: its gradient explosion at initialisation is stated from
      ``network.batchnorm.gradient_growth`` for the example batch (docs/theory.md §A5.6).

    ``advise_options`` go to ``meanfield.advise`` (e.g. ``sigma_b2_max``, ``budget``).
    Refused, in one line naming the module: a model :func:`to_network` cannot read, other
    residual branches, a weight layer that no nonlinearity reads except the readout."""
    r = _Reader(model, example_input)
    net, layout = r.read()
    X = layout.to_channels_last(example_input)
    top = list(net.layers)
    weights = _weight_layers(net)
    if not weights:
        raise DomainError(f"{type(model).__name__} has no Linear or Conv layer to advise")

    def path(layer):
        return r.paths.get(id(layer), layer.name)

    advice: dict[int, LayerAdvice] = {}
    used: list[Any] = []
    notes: list[str] = []
    acts: list[str] = []
    blocks = [layer for layer in top if isinstance(layer, nw.Residual)]
    factors = _width_factors(r)
    attn_over: dict[int, tuple[float, float]] = {}
    if blocks and not all(_named_block(b) for b in blocks):
        arch, depth = _advise_branches(net, X, factors, top, blocks, path, advice, attn_over, used, acts,
                                       notes, advise_options)
    elif blocks:
        arch, depth = _advise_residual(top, blocks, path, advice, used, acts, advise_options)
    else:
        arch, depth = "mlp", len(weights) - 1
        if depth < 1:
            raise DomainError(f"{path(weights[0])}: a single weight layer has no depth to advise for")
        cache: dict = {}
        last, last_sb = None, 0.0
        for i, layer in enumerate(top):
            if not _weighted(layer):
                continue
            act, norms = _act_after(top, i)
            has_bias = layer.sigma_b2 is not None
            if act is None:
                if _next_kind(top, i) is not None:
                    raise DomainError(f"{path(layer)}: no nonlinearity reads this layer before "
                                      f"{_next_kind(top, i).name}; advise_model advises weight layers "
                                      "for the activation after them")
                if last is None:   # pragma: no cover - depth >= 1 means a layer came before
                    raise DomainError(f"{path(layer)}: a readout with no hidden layer before it")
                sw, sb = last.sigma_w2, (last_sb if has_bias else None)
                advice[id(layer)] = LayerAdvice(path(layer), "readout", sw, sb,
                                                f"readout: the hidden layers' variances (as "
                                                f"meanfield.advise's depth-{depth} network)")
                continue
            a = _mlp_advice(act, depth, has_bias, cache, advise_options)
            if a not in used:
                used.append(a)
            if act.name not in acts:
                acts.append(act.name)
            why = f"edge of chaos of {act.name} for depth {depth}: {a.rule}"
            if "batch_norm" in norms:
                why = (f"batch_norm follows, so the forward pass is scale-free and this only sets the "
                       f"weights' gradient scale; {why}")
                sb = 0.0 if has_bias else None
                if has_bias:
                    why += "; bias 0 (batch_norm subtracts it)"
            elif "layer_norm" in norms:
                why = f"layer_norm follows (q resets to 1 at it); {why}"
                sb = a.sigma_b2 if has_bias else None
            else:
                sb = a.sigma_b2 if has_bias else None
            last = LayerAdvice(path(layer), "hidden", a.sigma_w2, sb, why)
            last_sb = 0.0 if "batch_norm" in norms else a.sigma_b2
            advice[id(layer)] = last
    missing = [path(w) for w in weights if id(w) not in advice]
    if missing:
        raise DomainError(f"{missing[0]}: advise_model has no law for this weight layer's place "
                          "in the model")
    layers = tuple(advice[id(w)] for w in weights) + tuple(
        a for a in advice.values() if a.role in ("attention out", "attention query"))
    adv_net = _with_variances(net, [(advice[id(w)].sigma_w2, advice[id(w)].sigma_b2) for w in weights],
                              attn_over)
    mods = dict(model.named_modules())
    default_vals = []
    for w in weights:
        m = mods.get(path(w))
        fi = fan_in(m) if m is not None else 1
        default_vals.append((1.0 / 3.0, None if w.sigma_b2 is None else 1.0 / (3.0 * fi)))
    def_net = _with_variances(net, default_vals)
    rows = tuple(layer.name for layer in net.flat())
    for layer in _attention_layers(net):
        if id(layer) not in attn_over:
            notes.append(f"{path(layer)}: attention keeps the variances read from the model "
                         "(advise_model has no law for its q, k, v, o projections)")
    adv_d = _diagnostics("advised", adv_net, X, factors)
    def_d = _diagnostics("pytorch_default", def_net, X, factors)
    bn = _batch_norm_statement(net, X.shape[0])
    return ModelAdvice(type(model).__name__, arch, int(depth), tuple(acts), layers, rows, adv_d,
                       def_d, bn, tuple(used), tuple(notes), adv_net)


def _stem_and_head(top: list[Layer], first: int, path, advice: dict) -> None:
    """The weight layers before the first residual block (stem) and after it (head)."""
    for i, layer in enumerate(top):
        if _weighted(layer):
            role = "stem" if i < first else "head"
            advice[id(layer)] = LayerAdvice(path(layer), role, 1.0,
                                            0.0 if layer.sigma_b2 is not None else None,
                                            f"{role}: sigma2 = 1 over fan-in, zero bias (x^0 = U xi, "
                                            "docs/theory.md §A4.3), as init_ does for residual nets")


def _named_block(b: Layer) -> bool:
    """A block x + V phi(W x + b) + a or x + phi(W x + b): meanfield.residual has its law."""
    br = list(b.branch.layers)
    return not b.shortcut.layers and (
        (len(br) == 3 and _weighted(br[0]) and _is_act(br[1]) and _weighted(br[2]))
        or (len(br) == 2 and _weighted(br[0]) and _is_act(br[1])))


#: the branch scale's search range below its variance-preserving value (decades)
_BRANCH_DECADES = 8


def _advise_branches(net, X, factors, top, blocks, path, advice, attn_over, used, acts, notes,
                     options) -> tuple[str, int]:
    """Any residual branch with an identity shortcut (a transformer's attention and MLP blocks,
    pre- or post-norm; a branch with normalisations inside): the residual advice generalised,
    read from the algebra rather than from a named recursion.

    The layers inside a branch get the edge-of-chaos point of the nonlinearity after them (as in
    a chain, for the number of blocks); attention inside gets W_Q = 0, so the logits are 0 and
    the attention is uniform at initialisation (the muP choice, docs/mup.md §7.1). The branch's
    last scaling layer (a weight layer, or an attention's output projection) gets one common
    variance s for all blocks: the variance-preserving s = 1 if the stream's forward growth
    log(q_out/q_in) and the gradient's growth over the blocks are both within the budget
    (residual.DEFAULT_BUDGETS' calibrated 1 nat unless ``budget`` is given), else the s at which
    the larger of the two equals it, found on ``Network.propagate`` of the advised model.
    """
    from .._roots import _find_root_scalar

    options = dict(options)
    budget = options.pop("budget", 1.0)     # the branches' budget; the rest is meanfield.advise's
    try:
        G = float(budget)
    except (TypeError, ValueError):
        G = math.nan
    if not (math.isfinite(G) and G > 0):
        raise DomainError(f"budget must be a positive number of nats, got {budget!r}")
    depth = len(blocks)
    ends: list[Layer] = []
    inner: list[tuple[Layer, list[Layer], int]] = []
    for b in blocks:
        br = b.branch.flat()
        first = next((x for x in br if _weighted(x) or isinstance(x, nw.Attention)), b)
        if b.shortcut.layers:
            raise DomainError(f"{path(first)}: a residual block with a projection shortcut; the "
                              "depth-scaled residual laws (docs/theory.md §A2.8) are for identity shortcuts")
        k = max((i for i, x in enumerate(br) if _weighted(x) or isinstance(x, nw.Attention)), default=None)
        if k is None:
            raise DomainError(f"{path(b)}: a residual branch with no weight layer to scale")
        after = [x.name for x in br[k + 1:] if x.name not in _PASS]
        if after:
            raise DomainError(f"{path(br[k])}: the branch's last weight layer is followed by "
                              f"{' -> '.join(after)}, which sets the branch's scale instead (a "
                              "normalisation's affine weight, held at 1 by the prediction); "
                              "advise_model scales branches that end in a weight layer or attention")
        ends.append(br[k])
        inner += [(x, br, i) for i, x in enumerate(br[:k]) if _weighted(x) or isinstance(x, nw.Attention)]
    cache: dict = {}
    for layer, br, i in inner:
        if isinstance(layer, nw.Attention):
            attn_over[id(layer)] = (0.0, layer.sigma_o2)
            advice[id(layer)] = _query_advice(layer, path)
            continue
        act, norms = _act_after(br, i)
        if act is None:
            raise DomainError(f"{path(layer)}: no nonlinearity reads this weight layer inside its "
                              "residual branch; advise_model advises weight layers for the activation "
                              "after them")
        a = _mlp_advice(act, depth, layer.sigma_b2 is not None, cache, options)
        if a not in used:
            used.append(a)
        if act.name not in acts:
            acts.append(act.name)
        bn = "batch_norm" in norms
        sb = None if layer.sigma_b2 is None else (0.0 if bn else a.sigma_b2)
        advice[id(layer)] = LayerAdvice(path(layer), "branch inner", a.sigma_w2, sb,
                                        f"edge of chaos of {act.name} for depth {depth}: {a.rule}")
    first, last = top.index(blocks[0]), top.index(blocks[-1])
    _stem_and_head(top, first, path, advice)
    weights = _weight_layers(net)
    q_in = float(np.mean(X.astype(float) ** 2))

    def network(scale: float) -> Network:
        over = dict(attn_over)
        for e in ends:
            if isinstance(e, nw.Attention):
                over[id(e)] = (0.0, scale)
        vals = []
        for w in weights:
            if any(w is e for e in ends):
                vals.append((scale, 0.0 if w.sigma_b2 is not None else None))
            else:
                a = advice[id(w)]
                vals.append((a.sigma_w2, a.sigma_b2))
        return _with_variances(net, vals, over)

    def growth(log_s: float) -> float:
        q, _, g, _ = predict_rows(network(10.0 ** log_s), X)
        qm = q.mean(axis=1)
        before = qm[first - 1] if first > 0 else q_in
        out = math.log(qm[last] / before)
        g = g / g[-1] * factors
        if math.isfinite(g[first]) and math.isfinite(g[last]):
            out = max(out, abs(math.log(g[first] / g[last])))
        return out - G

    g0 = growth(0.0)
    if g0 <= 0:
        log_s, why = 0.0, (f"sigma2 = 1 (variance preserving): the growth over the {depth} blocks is "
                           f"{g0 + G:.3g} nats, within the {G:g}-nat budget")
    else:
        lo = -float(_BRANCH_DECADES)
        glo = growth(lo)
        if glo > 0:
            raise DomainError(f"{path(ends[0])}: the growth over the {depth} blocks is still {glo + G:.3g} "
                              f"nats with the branches scaled by 1e-{_BRANCH_DECADES}; allow a larger budget")
        log_s = _find_root_scalar(growth, lo, 0.0, xtol=1e-6, rtol=1e-6, fa=glo, fb=g0)
        why = (f"the branch scale at which the larger of the stream's growth log(q_out/q_in) and the "
               f"gradient's over the {depth} blocks is the {G:g}-nat budget (variance preserving: "
               f"{g0 + G:.3g} nats)")
    scale = 10.0 ** log_s
    for e in ends:
        if isinstance(e, nw.Attention):
            attn_over[id(e)] = (0.0, scale)
            advice[id(e)] = _query_advice(e, path)
            advice[(id(e), "out")] = LayerAdvice(f"{path(e)}.out_proj", "attention out", scale, 0.0,
                                                 f"branch end: {why}")
        else:
            advice[id(e)] = LayerAdvice(path(e), "branch end", scale,
                                        0.0 if e.sigma_b2 is not None else None, f"branch end: {why}")
    notes.append(f"residual branches of any form: inner layers at the edge of chaos, the {depth} "
                 f"branch ends scaled to sigma2 = {scale:.4g} for a {G:g}-nat budget")
    return "resnet-any", depth


def _query_advice(layer: Layer, path) -> LayerAdvice:
    return LayerAdvice(path(layer), "attention query", 0.0, None,
                       "attention: W_Q = 0, so the logits are 0 and the attention uniform at "
                       "initialisation (muP's choice, docs/mup.md §7.1); W_K and W_V keep their variances")


def _advise_residual(top, blocks, path, advice, used, acts, options) -> tuple[str, int]:
    from ..advise import advise

    kinds = set()
    phis = set()
    for b in blocks:
        br = list(b.branch.layers)
        names = [type(x).__name__ for x in br]
        where = path(next((x for x in br if _weighted(x)), b))
        if b.shortcut.layers:
            raise DomainError(f"{where}: a residual block with a projection shortcut; the depth-scaled "
                              "residual laws (docs/theory.md §A2.8) are for identity shortcuts")
        if len(br) == 3 and _weighted(br[0]) and _is_act(br[1]) and _weighted(br[2]):
            kinds.add("resnet-full")
        elif len(br) == 2 and _weighted(br[0]) and _is_act(br[1]):
            kinds.add("resnet-reduced")
        else:
            raise DomainError(f"{where}: a residual branch {' -> '.join(x.name for x in br)} ({names}); "
                              "advise_model scales branches W -> phi -> V or W -> phi only "
                              "(docs/theory.md §A2.1)")
        phis.add(br[1].act.name)
    if len(kinds) != 1 or len(phis) != 1:
        raise DomainError(f"{path(blocks[0].branch.layers[0])}: the residual blocks differ "
                          f"({sorted(kinds)}, {sorted(phis)}); advise_model needs one block form")
    arch, depth = kinds.pop(), len(blocks)
    phi = blocks[0].branch.layers[1].act
    opts = dict(options)
    if arch == "resnet-full" and blocks[0].branch.layers[0].sigma_b2 is None:
        opts.setdefault("sigma_b2", 0.0)
    a = advise(arch, activation=phi, depth=depth, **opts)
    used.append(a)
    acts.append(phi.name)
    law = f"{arch} advice for {depth} blocks of {phi.name}: {getattr(a, 'rule', '')}".rstrip(": ")
    for b in blocks:
        br = b.branch.layers
        w = br[0]
        advice[id(w)] = LayerAdvice(path(w), "branch W", a.sigma_w2,
                                    a.sigma_b2 if w.sigma_b2 is not None else None, law)
        if arch == "resnet-full":
            v = br[2]
            sv, sa = float(getattr(a, "sigma_v2", 1.0)), float(getattr(a, "sigma_a2", 0.0))
            advice[id(v)] = LayerAdvice(path(v), "branch V", sv, sa if v.sigma_b2 is not None else None,
                                        law + f" (sigma_v2 = {sv:g} scales the branch for the depth)")
    _stem_and_head(top, top.index(blocks[0]), path, advice)
    return arch, depth


def _batch_norm_statement(net: Network, B: int) -> str | None:
    flat = net.flat()
    n_bn = sum(layer.name == "batch_norm" for layer in flat)
    if not n_bn:
        return None
    from ..network.batchnorm import gradient_growth

    act = next((layer.act.name for layer in flat if _is_act(layer)), None)
    head = (f"{n_bn} BatchNorm layer(s) in train mode: at initialisation the gradient's second "
            "moment grows by a factor lambda per BatchNorm layer going down, whatever the weights' "
            "variances (Yang et al. 2019, docs/theory.md §A5.6)")
    try:
        lam = gradient_growth(int(B), act or "relu")
    except MeanfieldError as exc:
        return f"{head}; lambda not computed: {exc}"
    return (f"{head}; lambda = {lam:.4g} for {act} at batch {B}, so lambda^{n_bn} = "
            f"{lam ** n_bn:.4g} from the last to the first BatchNorm layer")


# ------------------------------------------------------------------------------------------
# init_ with a ModelAdvice
# ------------------------------------------------------------------------------------------

_NORM_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm)


def init_model_(model: nn.Module, advice: ModelAdvice, *, generator: torch.Generator | None = None,
                seed: int | None = None, force: bool = False) -> nn.Module:
    """Apply a :class:`ModelAdvice` in place (``init_(model, advice)`` calls this): every listed
    weight N(0, sigma_w2 / fan_in), bias N(0, sigma_b2), under no_grad from a seeded CPU
    generator; normalisation layers get the identity affine map the prediction assumes.  A
    second call is refused unless ``force=True``; the record is ``model._meanfield_init``."""
    if not isinstance(model, nn.Module):
        raise DomainError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    prev = getattr(model, MARK, None)
    if prev is not None and not force:
        raise DomainError(f"{type(model).__name__} was already initialised by meanfield.torch.init_ "
                          f"(seed={prev.seed}); a second application would redraw every weight and "
                          "discard any training since. Pass force=True to re-initialise on purpose.")
    mods = dict(model.named_modules())
    for la in advice.layers:
        m = mods.get(la.module)
        if la.role == "attention query" and isinstance(m, nn.MultiheadAttention):
            continue
        if m is None or not hasattr(m, "weight"):
            raise DomainError(f"{la.module}: the advice names a module this model does not have "
                              f"(advice for {advice.model}, model {type(model).__name__})")
        if (getattr(m, "bias", None) is None) != (la.sigma_b2 is None):
            raise DomainError(f"{la.module}: the advice is for a layer "
                              f"{'without' if la.sigma_b2 is None else 'with'} a bias")
    gen, used_seed = _generator(generator, seed)
    touched, reset = set(), []
    with torch.no_grad():
        for la in advice.layers:
            m = mods[la.module]
            if la.role == "attention query":
                # in_proj_weight stacks W_q, W_k, W_v; only W_q is advised (zero)
                m.in_proj_weight[:m.embed_dim].zero_()
                touched.add(f"{la.module}.in_proj_weight")
                continue
            _fill(m.weight, la.sigma_w2 / fan_in(m), gen)
            touched.add(f"{la.module}.weight")
            if la.sigma_b2 is not None:
                _fill(m.bias, la.sigma_b2, gen)
                touched.add(f"{la.module}.bias")
        for name, m in mods.items():
            if isinstance(m, _NORM_MODULES) and getattr(m, "weight", None) is not None:
                m.weight.fill_(1.0)
                m.bias.fill_(0.0)
                touched.update({f"{name}.weight", f"{name}.bias"})
                reset.append(name)
    untouched = tuple(n for n, _ in model.named_parameters() if n not in touched)
    rec = ModelInitRecord(advice, used_seed,
                          tuple((la.module, la.sigma_w2, la.sigma_b2) for la in advice.layers),
                          tuple(reset), untouched)
    object.__setattr__(model, MARK, rec)
    return model
