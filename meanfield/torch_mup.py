"""muP for PyTorch models: apply it in place, and lint what a model and its optimizer really do.

Import it explicitly (``import meanfield.torch_mup``); it imports torch.  Issue 13 part 2,
built on the theory of :mod:`meanfield.mup` (docs/mup.md) and on the tracing and drawing of
:func:`meanfield.torch.init_`.

* :func:`mup_` sets a parametrization (muP by default; any of ``meanfield.mup.PARAMETRIZATIONS``)
  in place and returns a :class:`MupRecord` whose ``param_groups`` carry the per-layer learning
  rates (``torch.optim.SGD(rec.param_groups)``).  No multipliers are added to the forward pass:
  every layer is used in the folded form a = 0 of TP V Table 3 (same training, by the abc
  symmetry), so the model's code and modules are untouched; no attribute is glued onto a
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
from .torch import Structure, fan_in, init_, trace_structure

__all__ = ["MupRecord", "TensorScaling", "InferredLayer", "ParametrizationCheck", "CoordCheck", "mup_",
           "check_parametrization", "coord_check"]

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

    def to_dict(self) -> dict:
        return {
            "parametrization": self.parametrization, "optimizer": self.optimizer, "width": self.width,
            "base_width": self.base_width, "width_mult": self.width_mult, "lr": self.lr,
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

def mup_(model: nn.Module, base_width: int, *, optimizer: str = "sgd", lr: float,
         parametrization: str = "mup", structure: Structure | None = None, seed: int | None = None,
         generator: torch.Generator | None = None, **init_options: Any) -> MupRecord:
    """Initialise ``model`` in place for ``parametrization`` at its width and return the record.

    ``base_width``: the width the hyperparameters were tuned at (the parametrization equals SP
    there).  ``lr``: the learning rate tuned at the base width.  ``init_options`` go to
    :func:`meanfield.torch.init_` (e.g. ``sigma_w2=2.0``; default: meanfield's advice).  Refused
    on a model it has already been applied to.
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
    st = structure if structure is not None else trace_structure(model)
    roles = _layer_roles(st)
    n = _width_of(model, roles)
    n, n0 = _mup._widths(n, base_width)
    k = n / n0
    depth = sum(1 for _, r in roles if r != "output")
    if name == "mfp" and depth != 1:
        raise DomainError(f"mfp is defined for one hidden layer; this model has {depth} (use mup)")
    role_ex = _role_exponents(name, opt)

    init_(model, structure=st, seed=seed, generator=generator, force=True, **init_options)
    init_rec = getattr(model, "_meanfield_init", None)
    mods = dict(model.named_modules())
    tensors, groups = [], []
    with torch.no_grad():
        for mod_name, role in roles:
            layer = mods[mod_name]
            a, b, c = role_ex[role]
            bf, cf = _fold(a, b, c, opt)
            scale = k ** (-2 * (bf - _SP_FOLDED_B[role]))
            layer.weight.mul_(math.sqrt(scale))
            var = float(layer.weight.detach().double().pow(2).mean()) if layer.weight.numel() else 0.0
            wlr = float(lr * k ** (-cf))
            tensors.append(TensorScaling(f"{mod_name}.weight", mod_name, role, "weight", bf, cf, var, wlr))
            groups.append({"params": [layer.weight], "lr": wlr, "name": f"{mod_name}.weight"})
            if getattr(layer, "bias", None) is not None:
                if role == "output":
                    bb, bc = 0.0, 0.0  # no width dimension
                else:
                    bb, bc = _fold(*role_ex["input"], opt)
                blr = float(lr * k ** (-bc))
                bvar = float(layer.bias.detach().double().pow(2).mean()) if layer.bias.numel() else 0.0
                tensors.append(TensorScaling(f"{mod_name}.bias", mod_name, role, "bias", bb, bc, bvar, blr))
                groups.append({"params": [layer.bias], "lr": blr, "name": f"{mod_name}.bias"})
    covered = {id(g["params"][0]) for g in groups}
    rest = [p for p in model.parameters() if id(p) not in covered]
    notes = []
    if rest:
        groups.append({"params": rest, "lr": lr, "name": "untraced"})
        notes.append(f"{len(rest)} parameter tensor(s) outside the traced layers keep lr {lr:g} "
                     "(norm gains and the like have no width dimension)")
    report = _mup.abc(name, depth, opt, width=n, base_width=n0)
    rec = MupRecord(parametrization=name, optimizer=opt, width=n, base_width=n0, width_mult=k, lr=float(lr),
                    tensors=tuple(tensors), report=report,
                    seed=None if init_rec is None else init_rec.seed, param_groups=groups, notes=tuple(notes))
    object.__setattr__(model, MARK, rec)
    return rec


# ------------------------------------------------------------------------------------------
# check_parametrization
# ------------------------------------------------------------------------------------------

_GRID = 4          # exponents are rounded to multiples of 1/_GRID
_ZERO_B = 1e3      # a zero-initialised weight: effectively b = infinity


def check_parametrization(model: nn.Module, optimizer: Any, base_model: nn.Module, base_optimizer: Any, *,
                          optimizer_kind: str | None = None, structure: Structure | None = None,
                          base_structure: Structure | None = None) -> ParametrizationCheck:
    """Infer (b, c) per layer (folded form, a = 0) from the same model at two widths; report the regime.

    ``model``/``optimizer`` at the larger width, ``base_model``/``base_optimizer`` at the smaller
    one, both freshly initialised (before training).  Variances are the mean squares of the
    weights; learning rates those of the optimizer group holding each weight.  Exponents are
    rounded to multiples of 1/4 (the raw estimates are reported); a weight that is zero at both
    widths (a zero-initialised readout) counts as b = infinity.  Raises DomainError when the
    inferred exponents blow up at initialisation (the message names the layer).
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
        if v == 0 and v0 == 0:
            b_est = b = _ZERO_B
            notes.append(f"{name} is zero at initialisation (b = infinity)")
        elif v == 0 or v0 == 0:
            raise DomainError(f"{name!r} is zero at one width and not at the other")
        else:
            b_est = -math.log(v / v0) / (2 * logk)
            b = round(b_est * _GRID) / _GRID
        c_est = -math.log(lr / lr0) / logk
        c = round(c_est * _GRID) / _GRID
        if role == "input" and fan_in(mods[name]) != fan_in(mods0[name0]):
            notes.append(f"{name}: the input layer's fan-in changes with width; it is read as an input layer anyway")
        layers.append(InferredLayer(name, role, v, v0, lr, lr0, b_est, c_est, b, c))
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
            layer_names = tuple(t.module for t in rec.tensors if t.kind == "weight")
            names = layer_names
            mods = dict(model.named_modules())
            outs: dict[str, torch.Tensor] = {}
            hooks = [mods[nm].register_forward_hook(lambda m, i, o, nm=nm, outs=outs: outs.__setitem__(nm, o.detach().clone()))
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
                      predicted=np.array([x.change_exponent for x in report.layers]))
