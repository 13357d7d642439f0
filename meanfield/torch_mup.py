"""muP for PyTorch models: apply it in place, and lint what a model and its optimizer really do.

Import it explicitly (``import meanfield.torch_mup``); it imports torch.  Issue 13 part 2,
built on the theory of :mod:`meanfield.mup` (docs/mup.md) and on the tracing and drawing of
:func:`meanfield.torch.init_`.

* :func:`mup_` sets a parametrization (muP by default; any of ``meanfield.mup.PARAMETRIZATIONS``)
  in place and returns a :class:`MupRecord` whose ``param_groups`` carry the per-layer learning
  rates (``torch.optim.SGD(rec.param_groups)``).  No multipliers are added to the forward pass
  (one exception: the 1/d_head logits of nn.MultiheadAttention, a pre-hook on its query input,
  docs/mup.md §7.1): every layer is used in the folded form a = 0 of TP V Table 3 (same
  training, by the abc symmetry), so the model's code is untouched; no attribute is glued onto a
  parameter (FSDP and state_dict see plain tensors); the metadata lives in the returned record,
  which is also kept on the model (one attribute on the module) so that a second application is
  refused.
* :func:`check_parametrization` reads the init variances actually in the weights and the
  learning rates actually in the optimizers' groups of the same model at two widths, infers the
  exponents (b, c) per layer in the folded form, and reports the regime with
  :func:`meanfield.mup.check` (a "muP linter").  One width cannot tell an O(1) constant from a
  power of the width, hence two.

Width scaling: k = width / base_width, where the width is the output dimension of the first
traced layer (``out_features`` / ``out_channels``).  At the base width every parametrization is
the standard one: weights N(0, sigma2 / fan_in) (sigma2 from meanfield's advice, as init_ draws
them) and one learning rate ``lr``.  At width n the variance of each weight is that times
k^{-2((a+b) - (a+b)_SP)} and its learning rate ``lr * k^{-c'}`` with c' = 2a + c (SGD) or a + c
(Adam).  Biases of the input and hidden layers follow the input layer's exponents (Yang & Hu
treat biases as input weights); the readout's bias has no width dimension and keeps ``lr``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from . import mup as _mup
from .errors import DomainError
from .torch import LAYER_TYPES, Structure, fan_in, init_, trace_structure
from .torch.apply import _fill, _generator

__all__ = ["MupRecord", "TensorScaling", "AttentionScaling", "InferredLayer", "ParametrizationCheck",
           "CoordCheck", "mup_", "check_parametrization", "coord_check", "ATTENTION_LOGITS"]

MARK = "_meanfield_mup"
_SP_FOLDED_B = {"input": 0.0, "hidden": 0.5, "output": 0.5}  # a + b of SP, per role


@dataclass(frozen=True)
class TensorScaling:
    """What mup_ did to one parameter tensor."""

    name: str
    module: str
    role: str          # input / hidden / output (the layer's place in the abc table)
    kind: str          # weight / bias
    b: float           # folded exponents (a = 0): Var ~ width^{-2b}, lr ~ width^{-c}
    c: float
    init_variance: float
    lr: float
    attention: str = ""  # q, k, v, o (hand-written block), qkv (packed in_proj of nn.MultiheadAttention)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


ATTENTION_LOGITS = ("1/d", "1/sqrt(d)")


@dataclass(frozen=True)
class AttentionScaling:
    """How mup_ set the attention logits of one attention block (docs/mup.md §7.1).

    ``multiplier`` is what the query projection is multiplied by relative to the model's own
    q.k / sqrt(d_head): (d_head / d_head0)^{-1/2} for "1/d" (muP, TP V), 1 for "1/sqrt(d)".
    ``how``: a forward pre-hook on an nn.MultiheadAttention that multiplies its query input, or
    folded into a hand-written block's q Linear (init variance x multiplier^2, learning rate x
    multiplier^2 for SGD, x multiplier for Adam).
    """

    module: str
    kind: str            # "nn.MultiheadAttention" or "q/k/v/o nn.Linear"
    q: str
    k: str
    v: str
    o: str
    heads: int | None
    head_dim: int | None
    logits: str
    multiplier: float
    how: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class MupRecord:
    """The result of :func:`mup_`; ``param_groups`` go to the optimizer as they are."""

    parametrization: str
    optimizer: str
    width: int
    base_width: int
    width_mult: float
    lr: float
    tensors: tuple[TensorScaling, ...]
    report: _mup.AbcReport
    seed: int | None
    param_groups: list = field(default_factory=list, repr=False, compare=False)
    notes: tuple[str, ...] = ()
    zero_readout: bool = False
    attention: tuple[AttentionScaling, ...] = ()
    hooks: tuple = field(default=(), repr=False, compare=False)  # the pre-hooks' handles

    def to_dict(self) -> dict:
        return {
            "parametrization": self.parametrization, "optimizer": self.optimizer, "width": self.width,
            "base_width": self.base_width, "width_mult": self.width_mult, "lr": self.lr,
            "zero_readout": self.zero_readout, "attention": [a.to_dict() for a in self.attention],
            "tensors": [t.to_dict() for t in self.tensors], "regime": self.report.regime, "r": self.report.r,
            "report": self.report.to_dict(), "seed": self.seed, "notes": list(self.notes),
        }


@dataclass(frozen=True)
class InferredLayer:
    """One layer as check_parametrization read it at the two widths."""

    module: str
    role: str
    variance: float
    base_variance: float
    lr: float
    base_lr: float
    b_estimate: float
    c_estimate: float
    b: float
    c: float
    zero_at_init: bool = False   # then b = meanfield.mup.ZERO_B (infinity): no variance to read

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ParametrizationCheck:
    """Exponents inferred from a model at two widths, and the regime they imply."""

    optimizer: str
    width: int
    base_width: int
    layers: tuple[InferredLayer, ...]
    report: _mup.AbcReport
    notes: tuple[str, ...] = ()

    @property
    def regime(self) -> str:
        return self.report.regime

    def to_dict(self) -> dict:
        return {"optimizer": self.optimizer, "width": self.width, "base_width": self.base_width,
                "layers": [x.to_dict() for x in self.layers], "regime": self.report.regime,
                "r": self.report.r, "report": self.report.to_dict(), "notes": list(self.notes)}


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------

def _layer_roles(st: Structure) -> list[tuple[str, str]]:
    """(module name, abc role) in forward order."""
    if st.arch == "mlp":
        names = list(st.layers)
        if len(names) < 2:
            raise DomainError("muP needs at least an input layer and a readout (two traced layers)")
        return [(names[0], "input")] + [(n, "hidden") for n in names[1:-1]] + [(names[-1], "output")]
    roles = st.roles()
    stem = [n for n, r in roles if r == "stem"]
    head = [n for n, r in roles if r == "head"]
    if not stem or not head:
        raise DomainError("muP for a residual network needs a stem (input layer) and a head (readout) "
                          "around the blocks; pass structure=Structure(..., stem=(...), head=(...))")
    return [(n, "input" if r == "stem" else "output" if r == "head" else "hidden") for n, r in roles]


def _width_of(model: nn.Module, roles: list[tuple[str, str]]) -> int:
    w = dict(model.named_modules())[roles[0][0]].weight
    return int(w.shape[0])


def _role_exponents(parametrization: str, optimizer: str) -> dict[str, tuple[float, float, float]]:
    ex = _mup.exponents(parametrization, 1 if _mup._parametrization(parametrization) == "mfp" else 2, optimizer)
    return {"input": tuple(ex[0]), "hidden": tuple(ex[1 if ex.shape[0] > 2 else 0]), "output": tuple(ex[-1])}


def _fold(a: float, b: float, c: float, optimizer: str) -> tuple[float, float]:
    return a + b, (2 * a + c) if optimizer == "sgd" else (a + c)


def _optimizer_kind(opt: Any, given: str | None) -> str:
    if given is not None:
        return _mup._optimizer(given)
    if isinstance(opt, torch.optim.SGD):
        return "sgd"
    if isinstance(opt, (torch.optim.Adam, torch.optim.AdamW)):
        return "adam"
    raise DomainError(f"cannot tell whether {type(opt).__name__} is SGD-like or Adam-like; pass optimizer='sgd' or 'adam'")


def _lrs(opt: Any) -> dict[int, float]:
    if not isinstance(opt, torch.optim.Optimizer):
        raise DomainError(f"expected a torch.optim.Optimizer, got {type(opt).__name__}")
    return {id(p): float(g["lr"]) for g in opt.param_groups for p in g["params"]}


# ------------------------------------------------------------------------------------------
# mup_
# ------------------------------------------------------------------------------------------

def _attention_blocks(attention: Any, mods: dict[str, nn.Module]) -> dict[str, tuple[str, str]]:
    """{q/k/v/o module name: (its part, the block's q name)} of the hand-written blocks given."""
    if attention is None:
        return {}
    if isinstance(attention, (str, bytes)) or not hasattr(attention, "__iter__"):
        raise DomainError(f"attention= takes (q, k, v, o) tuples of nn.Linear module names, got {attention!r}")
    parts: dict[str, tuple[str, str]] = {}
    for blk in attention:
        if isinstance(blk, (str, bytes)) or not hasattr(blk, "__len__") or len(blk) != 4:
            raise DomainError(f"attention= takes (q, k, v, o) tuples of nn.Linear module names, got {blk!r}")
        for part, nm in zip("qkvo", blk):
            if not isinstance(nm, str) or not isinstance(mods.get(nm), nn.Linear):
                raise DomainError(f"attention block {tuple(blk)!r}: {nm!r} is not an nn.Linear of the model")
            if nm in parts:
                raise DomainError(f"attention: {nm!r} is named twice")
            parts[nm] = (part, blk[0])
    return parts


def _check_mha(name: str, m: nn.MultiheadAttention) -> None:
    """Refuse the nn.MultiheadAttention variants whose query projection cannot be scaled alone."""
    why = None
    if not m._qkv_same_embed_dim:
        why = "kdim/vdim differ from embed_dim (separate q/k/v projections)"
    elif m.bias_k is not None or m.add_zero_attn:
        why = "add_bias_kv / add_zero_attn is set"
    elif m.in_proj_bias is not None:
        why = ("bias=True packs the query bias with the key and value biases, so 1/d_head logits "
               "cannot be applied to the query alone; build it with bias=False")
    if why:
        raise DomainError(f"mup_ cannot give {name!r} (nn.MultiheadAttention) muP's 1/d_head logits: {why}, "
                          "or write the block with q/k/v/o nn.Linear and pass attention=[(q, k, v, o)]")


def _attention_layers(model: nn.Module, parts: dict[str, tuple[str, str]]) -> list[tuple[str, str, str]]:
    """(module name, role, attention part) of a model with attention, in registration order
    (taken as the forward order; the width checks below catch a readout or input out of place)."""
    entries: list[tuple[str, str]] = []
    inside: set[str] = set()
    for nm, m in model.named_modules():
        if nm in inside:
            continue
        if isinstance(m, nn.MultiheadAttention):
            _check_mha(nm, m)
            entries += [(nm, "qkv"), (f"{nm}.out_proj", "o")]
            inside.add(f"{nm}.out_proj")
        elif isinstance(m, LAYER_TYPES):
            entries.append((nm, parts.get(nm, ("", ""))[0]))
        elif any(True for _ in m.parameters(recurse=False)):
            raise DomainError(f"mup_ with attention reads nn.Linear, nn.ConvNd and nn.MultiheadAttention; "
                              f"{nm or '(the model itself)'} ({type(m).__name__}) has parameters of its own")
    if len(entries) < 3 or entries[0][1] or entries[-1][1]:
        raise DomainError("mup_ with attention needs an input layer first and a readout last (nn.Linear / "
                          "nn.ConvNd, outside the attention blocks), in registration order")
    return [(nm, "input" if i == 0 else "output" if i == len(entries) - 1 else "hidden", part)
            for i, (nm, part) in enumerate(entries)]


def _weight_bias(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    if isinstance(layer, nn.MultiheadAttention):
        return layer.in_proj_weight, layer.in_proj_bias, "in_proj_"
    return layer.weight, getattr(layer, "bias", None), ""


class _ScaleQuery:
    """Forward pre-hook multiplying an nn.MultiheadAttention's query input (a class, not a
    closure, so that a model carrying it still pickles)."""

    def __init__(self, alpha: float):
        self.alpha = alpha

    def __call__(self, module, args, kwargs):
        if args:
            return (args[0] * self.alpha,) + tuple(args[1:]), kwargs
        return args, {**kwargs, "query": kwargs["query"] * self.alpha}


def mup_(model: nn.Module, base_width: int, *, optimizer: str = "sgd", lr: float,
         parametrization: str = "mup", zero_readout: bool = False, attention: Any = None,
         attention_logits: str | None = None, structure: Structure | None = None,
         seed: int | None = None, generator: torch.Generator | None = None, **init_options: Any) -> MupRecord:
    """Initialise ``model`` in place for ``parametrization`` at its width and return the record.

    ``base_width``: the width the hyperparameters were tuned at (the parametrization equals SP
    there).  ``lr``: the learning rate tuned at the base width.  ``zero_readout``: start the
    readout (weight and bias) at zero, TP V's recommendation (f_0 = 0 at every width; the
    exponents of docs/theory.md §A7.1 with a_{L+1} + b_{L+1} = infinity, ``meanfield.mup.abc``'s
    ``zero_readout``); off by default, so that at the base width mup_ is init_ (docs/mup.md §7).
    ``init_options`` go to :func:`meanfield.torch.init_` (e.g. ``sigma_w2=2.0``; default:
    meanfield's advice).  Refused on a model it has already been applied to.

    Attention (docs/mup.md §7.1): a model with ``nn.MultiheadAttention`` modules, or with
    hand-written blocks named by ``attention=[(q, k, v, o), ...]`` (nn.Linear names; the block
    computing q.k / sqrt(d_head) itself), is read layer by layer in registration order (first
    layer input, last readout, the rest hidden, attention projections included) and drawn
    N(0, sigma_w2 / fan_in), biases N(0, sigma_b2) (``init_options`` may hold only these two;
    defaults 1 and 0: meanfield's advice covers Linear/Conv chains only).  ``attention_logits``:
    "1/d" (muP, TP V; the default for muP) or "1/sqrt(d)" (the model's own; the default for the
    others) -- "1/d" multiplies the query projection by (d_head / d_head0)^{-1/2} = k^{-1/2},
    the number of heads being the same at the base width.
    """
    if not isinstance(model, nn.Module):
        raise DomainError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    prev = getattr(model, MARK, None)
    if prev is not None:
        raise DomainError(f"{type(model).__name__} already has {prev.parametrization} applied by mup_ (width "
                          f"{prev.width}, base width {prev.base_width}); applying it twice would rescale the "
                          "readout again. Build a fresh model instead.")
    name = _mup._parametrization(parametrization)
    opt = _mup._optimizer(optimizer)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise DomainError(f"lr must be a positive number, got {lr!r}")
    if not isinstance(zero_readout, bool):
        raise DomainError(f"zero_readout must be True or False, got {zero_readout!r}")
    logits = attention_logits if attention_logits is not None else ("1/d" if name == "mup" else "1/sqrt(d)")
    if logits not in ATTENTION_LOGITS:
        raise DomainError(f"attention_logits must be one of {', '.join(ATTENTION_LOGITS)}, got {attention_logits!r}")
    mods = dict(model.named_modules())
    parts = _attention_blocks(attention, mods)
    has_attention = bool(parts) or any(isinstance(m, nn.MultiheadAttention) for m in mods.values())
    if has_attention:
        if structure is not None:
            raise DomainError("structure= describes Linear/Conv chains for init_; a model with attention is read "
                              "layer by layer (pass attention= for hand-written blocks)")
        extra = sorted(set(init_options) - {"sigma_w2", "sigma_b2"})
        if extra:
            raise DomainError(f"a model with attention is drawn N(0, sigma_w2 / fan_in), biases N(0, sigma_b2); "
                              f"{extra[0]!r} does not apply to it")
        layers = _attention_layers(model, parts)
        roles = [(nm, r) for nm, r, _ in layers]
        n = int(_weight_bias(mods[roles[0][0]])[0].shape[0])
        for nm, r, _ in layers[1:]:
            w = _weight_bias(mods[nm])[0]
            if w.shape[1] % n or (r == "hidden" and w.shape[0] % n):
                raise DomainError(f"{nm!r} ({tuple(w.shape)}) does not map width to width (width {n}, from the "
                                  f"input layer {roles[0][0]!r}); mup_ reads layers in registration order")
    else:
        try:
            st = structure if structure is not None else trace_structure(model)
        except DomainError as exc:
            raise DomainError(f"{exc}; for attention written with nn.Linear layers, pass "
                              "mup_(..., attention=[(q, k, v, o)]) (docs/mup.md §7.1)") from None
        roles = _layer_roles(st)
        layers = [(nm, r, "") for nm, r in roles]
        n = _width_of(model, roles)
    n, n0 = _mup._widths(n, base_width)
    k = n / n0
    depth = sum(1 for _, r in roles if r != "output")
    if name == "mfp" and depth != 1:
        raise DomainError(f"mfp is defined for one hidden layer; this model has {depth} (use mup)")
    role_ex = _role_exponents(name, opt)
    # 1/d logits as q.k / sqrt(d_head) with q multiplied by s = k^{-1/2} (exponent t = 1/2 of width);
    # folded into q (abc symmetry): variance x s^2 (b + t), lr x s^2 (SGD, c + 2t) or x s (Adam, c + t)
    t_q = 0.5 if logits == "1/d" else 0.0
    s_q = k ** -t_q

    if has_attention:
        g, used_seed = _generator(generator, seed)
        sw2, sb2 = (float(init_options.get(key, dflt)) for key, dflt in (("sigma_w2", 1.0), ("sigma_b2", 0.0)))
        if not (math.isfinite(sw2) and sw2 > 0 and math.isfinite(sb2) and sb2 >= 0):
            raise DomainError(f"sigma_w2 must be positive and sigma_b2 non-negative, got {sw2!r}, {sb2!r}")
        with torch.no_grad():
            for nm, _, _ in layers:
                w, bias, _ = _weight_bias(mods[nm])
                _fill(w, sw2 / (w[0].numel()), g)
                if bias is not None:
                    _fill(bias, sb2, g)
    else:
        init_(model, structure=st, seed=seed, generator=generator, force=True, **init_options)
        init_rec = getattr(model, "_meanfield_init", None)
        used_seed = None if init_rec is None else init_rec.seed
    tensors, groups, attn, hooks = [], [], [], []
    with torch.no_grad():
        for mod_name, role, part in layers:
            layer = mods[mod_name]
            weight, bias, prefix = _weight_bias(layer)
            a, b, c = role_ex[role]
            bf, cf = _fold(a, b, c, opt)
            scale = k ** (-2 * (bf - _SP_FOLDED_B[role]))
            bb, bc = (0.0, 0.0) if role == "output" else _fold(*role_ex["input"], opt)  # readout bias: no width
            if part == "q" and t_q:
                scale *= s_q ** 2
                bf, cf = bf + t_q, cf + (2 * t_q if opt == "sgd" else t_q)
                bb, bc = bb + t_q, bc + (2 * t_q if opt == "sgd" else t_q)
                if bias is not None:
                    bias.mul_(s_q)
            weight.mul_(math.sqrt(scale))
            if zero_readout and role == "output":
                bf = _mup.ZERO_B
                weight.zero_()
                if bias is not None:
                    bias.zero_()
            var = float(weight.detach().double().pow(2).mean()) if weight.numel() else 0.0
            wlr = float(lr * k ** (-cf))
            tensors.append(TensorScaling(f"{mod_name}.{prefix}weight", mod_name, role, "weight", bf, cf, var, wlr,
                                         part))
            groups.append({"params": [weight], "lr": wlr, "name": f"{mod_name}.{prefix}weight"})
            if bias is not None:
                blr = float(lr * k ** (-bc))
                bvar = float(bias.detach().double().pow(2).mean()) if bias.numel() else 0.0
                tensors.append(TensorScaling(f"{mod_name}.{prefix}bias", mod_name, role, "bias", bb, bc, bvar, blr,
                                             part))
                groups.append({"params": [bias], "lr": blr, "name": f"{mod_name}.{prefix}bias"})
            if part == "qkv":
                if t_q:
                    hooks.append(layer.register_forward_pre_hook(_ScaleQuery(s_q), with_kwargs=True))
                attn.append(AttentionScaling(
                    mod_name, "nn.MultiheadAttention", *(f"{mod_name}.in_proj_weight",) * 3,
                    f"{mod_name}.out_proj.weight", layer.num_heads, layer.head_dim, logits, s_q,
                    "forward pre-hook multiplying the query input" if t_q else "unchanged"))
            elif part == "q":
                blk = [nm for nm, (_, q) in parts.items() if q == mod_name]
                pn = {parts[nm][0]: f"{nm}.weight" for nm in blk}
                attn.append(AttentionScaling(
                    mod_name.rpartition(".")[0], "q/k/v/o nn.Linear", pn["q"], pn["k"], pn["v"], pn["o"], None,
                    None, logits, s_q, "folded into q (init and learning rate)" if t_q else "unchanged"))
    covered = {id(g["params"][0]) for g in groups}
    rest = [p for p in model.parameters() if id(p) not in covered]
    notes = []
    if rest:
        groups.append({"params": rest, "lr": lr, "name": "untraced"})
        notes.append(f"{len(rest)} parameter tensor(s) outside the traced layers keep lr {lr:g} "
                     "(norm gains and the like have no width dimension)")
    if zero_readout:
        notes.append(f"the readout {roles[-1][0]} (weight and bias) starts at zero: f_0 = 0, and the first "
                     "step moves the readout only (no backward signal reaches the features through it)")
    if hooks:
        notes.append("the 1/d_head logits of nn.MultiheadAttention live in forward pre-hooks on the module "
                     "(record.hooks): load a state_dict into a model mup_ has set up, not into a fresh one")
    report = _mup.abc(name, depth, opt, width=n, base_width=n0, zero_readout=zero_readout)
    rec = MupRecord(parametrization=name, optimizer=opt, width=n, base_width=n0, width_mult=k, lr=float(lr),
                    tensors=tuple(tensors), report=report, seed=used_seed, param_groups=groups,
                    notes=tuple(notes), zero_readout=zero_readout, attention=tuple(attn), hooks=tuple(hooks))
    object.__setattr__(model, MARK, rec)
    return rec


# ------------------------------------------------------------------------------------------
# check_parametrization
# ------------------------------------------------------------------------------------------

_GRID = 4          # exponents are rounded to multiples of 1/_GRID


def check_parametrization(model: nn.Module, optimizer: Any, base_model: nn.Module, base_optimizer: Any, *,
                          optimizer_kind: str | None = None, structure: Structure | None = None,
                          base_structure: Structure | None = None) -> ParametrizationCheck:
    """Infer (b, c) per layer (folded form, a = 0) from the same model at two widths; report the regime.

    ``model``/``optimizer`` at the larger width, ``base_model``/``base_optimizer`` at the smaller
    one, both freshly initialised (before training).  Variances are the mean squares of the
    weights; learning rates those of the optimizer group holding each weight.  Exponents are
    rounded to multiples of 1/4 (the raw estimates are reported).  A weight that is zero at both
    widths (a zero-initialised readout) has no variance to read: it is reported with
    ``zero_at_init=True`` and b = b_estimate = ``meanfield.mup.ZERO_B`` (b = infinity), its c is
    read from the learning rates as for any layer, and the regime follows from those (for a
    readout, c alone decides whether f moves).  Raises DomainError when the inferred exponents
    blow up at initialisation (the message names the layer).
    """
    kind = _optimizer_kind(optimizer, optimizer_kind)
    base_kind = _optimizer_kind(base_optimizer, optimizer_kind)
    if kind != base_kind:
        raise DomainError(f"the two optimizers differ ({kind} vs {base_kind})")
    st = structure if structure is not None else trace_structure(model)
    st0 = base_structure if base_structure is not None else trace_structure(base_model)
    roles, roles0 = _layer_roles(st), _layer_roles(st0)
    if [r for _, r in roles] != [r for _, r in roles0]:
        raise DomainError("the two models do not have the same layers (compare the same architecture at two widths)")
    n, n0 = _width_of(model, roles), _width_of(base_model, roles0)
    if n == n0:
        raise DomainError(f"both models have width {n}; exponents need two different widths")
    if n < n0:
        raise DomainError(f"model (width {n}) must be the wider one; base_model has width {n0}")
    lrs, lrs0 = _lrs(optimizer), _lrs(base_optimizer)
    mods, mods0 = dict(model.named_modules()), dict(base_model.named_modules())
    logk = math.log(n / n0)
    layers, rows, notes = [], [], []
    for (name, role), (name0, _) in zip(roles, roles0):
        w, w0 = mods[name].weight, mods0[name0].weight
        if id(w) not in lrs or id(w0) not in lrs0:
            missing = name if id(w) not in lrs else name0
            raise DomainError(f"the weight of {missing!r} is in no parameter group of its optimizer")
        v = float(w.detach().double().pow(2).mean())
        v0 = float(w0.detach().double().pow(2).mean())
        lr, lr0 = lrs[id(w)], lrs0[id(w0)]
        if lr <= 0 or lr0 <= 0:
            raise DomainError(f"{name!r} has learning rate {lr if lr <= 0 else lr0:g}; a frozen layer has no exponent c")
        zero = v == 0 and v0 == 0
        if zero:
            b_est = b = _mup.ZERO_B
            notes.append(f"{name} is zero at initialisation (b = infinity, reported as {_mup.ZERO_B:g}); "
                         "its c is read from the learning rates")
        elif v == 0 or v0 == 0:
            raise DomainError(f"{name!r} is zero at one width and not at the other")
        else:
            b_est = -math.log(v / v0) / (2 * logk)
            b = round(b_est * _GRID) / _GRID
        c_est = -math.log(lr / lr0) / logk
        c = round(c_est * _GRID) / _GRID
        if role == "input" and fan_in(mods[name]) != fan_in(mods0[name0]):
            notes.append(f"{name}: the input layer's fan-in changes with width; it is read as an input layer anyway")
        layers.append(InferredLayer(name, role, v, v0, lr, lr0, b_est, c_est, b, c, zero))
        rows.append((0.0, b, c))
    report = _mup.check(np.array(rows), kind, width=n, base_width=n0)
    return ParametrizationCheck(optimizer=kind, width=n, base_width=n0, layers=tuple(layers), report=report,
                                notes=tuple(notes))


# ------------------------------------------------------------------------------------------
# coord_check
# ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CoordCheck:
    """Feature change after training, per layer and width, with fitted width exponents.

    ``change[i, j]``: root mean square per coordinate of h_t - h_0 (the output of traced layer
    j, i.e. its pre-activation; the last is the logits) at ``widths[i]``, mean over seeds.
    ``exponent[j]``: the slope of log change against log width (mean over seeds, ``exponent_sd``
    their standard deviation); ``predicted[j]``: the theory's (``AbcReport.layers[j].change_exponent``).
    """

    parametrization: str
    optimizer: str
    widths: tuple[int, ...]
    base_width: int
    steps: int
    lr: float
    seeds: tuple[int, ...]
    layers: tuple[str, ...]
    change: np.ndarray
    exponent: np.ndarray
    exponent_sd: np.ndarray
    predicted: np.ndarray

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        for k in ("change", "exponent", "exponent_sd", "predicted"):
            d[k] = np.asarray(d[k]).tolist()
        for k in ("widths", "seeds", "layers"):
            d[k] = list(d[k])
        return d


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out  # nn.MultiheadAttention returns (output, weights)


def coord_check(make_model, widths, X, y, *, parametrization: str = "mup", optimizer: str = "sgd",
                lr: float, steps: int = 3, seeds=(0, 1, 2), base_width: int | None = None,
                **init_options: Any) -> CoordCheck:
    """Train ``make_model(width)`` under ``parametrization`` (via :func:`mup_`) for ``steps``
    full-batch steps on 1/2 mean squared error and measure how far every layer's output moved.

    ``X``, ``y``: tensors (N x d, N x outputs).  ``base_width`` defaults to the smallest width.
    The global random state is left as it was (models are built inside ``fork_rng``; weights are
    drawn by mup_ from ``seed``).  Measuring only; plotting is apart.
    """
    ws = tuple(_mup._positive_int(w, "width") for w in widths)
    if len(ws) < 2 or len(set(ws)) != len(ws):
        raise DomainError(f"coord_check needs at least two different widths, got {list(widths)}")
    n_steps = _mup._positive_int(steps, "steps")
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise DomainError("coord_check needs at least one seed")
    n0 = min(ws) if base_width is None else base_width
    if not (isinstance(X, torch.Tensor) and isinstance(y, torch.Tensor)) or X.shape[0] != y.shape[0]:
        raise DomainError("X and y must be tensors with the same number of rows (samples)")
    opt_name = _mup._optimizer(optimizer)
    changes: list[list[list[float]]] = [[[] for _ in ws] for _ in seeds]
    names: tuple[str, ...] = ()
    report = None
    for si, seed in enumerate(seeds):
        for wi, width in enumerate(ws):
            with torch.random.fork_rng(devices=[]):
                model = make_model(width)
            rec = mup_(model, n0, optimizer=opt_name, lr=lr, parametrization=parametrization, seed=seed,
                       **init_options)
            report = rec.report
            mods = dict(model.named_modules())
            # nn.MultiheadAttention applies its out_proj's weight without calling the module: its
            # output is the attention module's own, already measured
            weights = [(i, t.module) for i, t in enumerate(t for t in rec.tensors if t.kind == "weight")
                       if not (t.attention == "o" and isinstance(mods.get(t.module.rpartition(".")[0]),
                                                                   nn.MultiheadAttention))]
            kept = [i for i, _ in weights]
            # a hand-written block's q is multiplied by k^{-1/2} under 1/d logits: its output moves
            # as width^{-1/2} by design (the logits, q.k / sqrt(d), move Theta(1))
            q_shift = {a.q.rpartition(".")[0]: (-0.5 if a.logits == "1/d" else 0.0)
                       for a in rec.attention if a.kind != "nn.MultiheadAttention"}
            layer_names = tuple(nm for _, nm in weights)
            names = layer_names
            outs: dict[str, torch.Tensor] = {}
            hooks = [mods[nm].register_forward_hook(
                lambda m, i, o, nm=nm, outs=outs: outs.__setitem__(nm, _first(o).detach().clone()))
                for nm in layer_names]
            try:
                with torch.no_grad():
                    out = model(X)
                if out.shape != y.shape:
                    raise DomainError(f"the model's output has shape {tuple(out.shape)} but y has {tuple(y.shape)}")
                h0 = dict(outs)
                opt = (torch.optim.SGD if opt_name == "sgd" else torch.optim.Adam)(rec.param_groups)
                for _ in range(n_steps):
                    opt.zero_grad()
                    loss = 0.5 * ((model(X) - y) ** 2).mean()
                    loss.backward()
                    opt.step()
                with torch.no_grad():
                    model(X)
            finally:
                for hk in hooks:
                    hk.remove()
            changes[si][wi] = [float((outs[nm] - h0[nm]).double().pow(2).mean().sqrt()) for nm in layer_names]
    C = np.array(changes)                               # seeds x widths x layers
    logw = np.log(np.array(ws, dtype=float))
    with np.errstate(divide="ignore"):
        slopes = np.array([[np.polyfit(logw, np.log(C[s, :, j]), 1)[0] for j in range(C.shape[2])]
                           for s in range(C.shape[0])])
    return CoordCheck(parametrization=report.parametrization, optimizer=opt_name, widths=ws, base_width=n0,
                      steps=n_steps, lr=float(lr), seeds=seeds, layers=names, change=C.mean(axis=0),
                      exponent=slopes.mean(axis=0),
                      exponent_sd=slopes.std(axis=0, ddof=1) if len(seeds) > 1 else np.zeros(C.shape[2]),
                      predicted=np.array([report.layers[i].change_exponent + q_shift.get(nm, 0.0)
                                          for i, nm in zip(kept, names)]))
