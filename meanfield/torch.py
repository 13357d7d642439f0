"""PyTorch integration: apply meanfield's advice to an ``nn.Module`` in place, and measure the
model against the theory.

Import it explicitly (``import meanfield.torch as mft``); ``import meanfield`` never imports
torch.  Four steps, each usable alone:

* :func:`trace_structure` reads the model with ``torch.fx``: its ``nn.Linear`` / ``nn.ConvNd``
  layers, its activation (registry spec, or a custom activation wrapping the traced elementwise
  code), its depth, and the residual additions ``x + f(x)`` that mark residual branches.  What
  tracing cannot read is refused with the reason; pass ``structure=Structure(...)`` instead.
* :func:`init_` draws every weight N(0, sigma^2 / fan_in) and every bias N(0, sigma_b^2) from the
  advice (or asks :func:`meanfield.advise` itself), in place under ``torch.no_grad()``, and marks
  the model so that a second application is refused unless ``force=True`` (as mup refuses to
  re-initialise a readout).
* :func:`measure` records, with forward hooks and one backward pass, the mean squared
  pre-activation q^l, the correlation c^l of input pairs, the residual stream's p^l and cosine
  e^l, and the gradient second moments, layer by layer; :func:`compare` lays the measurement
  beside the theory's prediction for the same initialisation, and :func:`plot_profile` draws it
  (measuring apart from plotting).
* :func:`empirical_ntk` is the NTK of the torch model (``torch.func``), in the standard
  parametrisation that ``nn.Linear`` trains or rescaled to the NTK parametrisation of
  meanfield's kernels (docs/theory.md §A0 and 4.2).

Architectures (docs/theory.md §A1.1 and 2.1): ``"mlp"``, a chain of layers with one elementwise activation
between consecutive layers (depth = number of hidden layers = layers - 1, the last layer is the
readout); ``"resnet-full"``, blocks x + V phi(W x + b) + a; ``"resnet-reduced"``, blocks
x + phi(W x + b); depth = number of blocks; layers before the first block (the stem, x^0 = U xi)
and after the last (the head) are drawn with variance ``sigma_in2`` / ``sigma_o2`` over fan-in
(default 1, as in docs/theory.md §A4.3) and zero bias.
"""

from __future__ import annotations

import copy
import math
import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from . import maps
from ._arch import LABELS as _LABELS
from .activations import Activation, custom, get_activation
from .errors import DomainError

ARCHES = tuple(_LABELS.values())  # meanfield._arch: the labels advice results carry
LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
MARK = "_meanfield_init"

_STRUCTURE_HINT = (
    "tell meanfield the structure instead: init_(model, structure=Structure(arch='mlp', "
    "activation='tanh', layers=('fc1', 'fc2', ...))) or, for residual networks, "
    "Structure(arch='resnet-full', activation='tanh', stem=('inp',), "
    "blocks=(('blocks.0.w', 'blocks.0.v'), ...), head=('out',))"
)

# ------------------------------------------------------------------------------------------
# Reading activations
# ------------------------------------------------------------------------------------------

# Elementwise no-ops (in eval mode) and pure reshapes: identity on a flat tensor of units.
_NEUTRAL_MODULES = (
    nn.Flatten,
    nn.Unflatten,
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)
_NEUTRAL_FUNCTIONS = {
    torch.flatten,
    torch.reshape,
    torch.squeeze,
    torch.unsqueeze,
    torch.clone,
    F.dropout,
    F.dropout1d,
    F.dropout2d,
    F.dropout3d,
    F.alpha_dropout,
}
_NEUTRAL_METHODS = {
    "view",
    "reshape",
    "flatten",
    "contiguous",
    "squeeze",
    "unsqueeze",
    "clone",
    "view_as",
    "reshape_as",
    "float",
    "double",
    "to",
    "type_as",
}
_META_METHODS = {"size", "dim", "numel"}
_DROPOUT = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)

_FUNCTION_SPECS: dict[Any, str] = {
    torch.tanh: "tanh",
    F.tanh: "tanh",
    torch.relu: "relu",
    F.relu: "relu",
    torch.relu_: "relu",
    torch.sigmoid: "sigmoid",
    F.sigmoid: "sigmoid",
    torch.sin: "sin",
    torch.cos: "cos",
    torch.erf: "erf",
    torch.special.erf: "erf",
    torch.abs: "abs",
    F.silu: "silu",
    F.selu: "selu",
    torch.selu: "selu",
}
_METHOD_SPECS = {
    "tanh": "tanh",
    "relu": "relu",
    "sigmoid": "sigmoid",
    "sin": "sin",
    "cos": "cos",
    "erf": "erf",
    "abs": "abs",
    "tanh_": "tanh",
    "relu_": "relu",
    "sigmoid_": "sigmoid",
}


def _arg(node: fx.Node, i: int, name: str, default: Any) -> Any:
    if name in node.kwargs:
        return node.kwargs[name]
    return node.args[i] if len(node.args) > i else default


def _module_spec(m: nn.Module) -> str | None:
    """Registry spec of a torch activation module, or None when the registry has no exact match."""
    if isinstance(m, nn.Tanh):
        return "tanh"
    if isinstance(m, nn.ReLU):
        return "relu"
    if isinstance(m, nn.GELU):
        return "gelu" if m.approximate == "none" else None
    if isinstance(m, nn.SiLU):
        return "silu"
    if isinstance(m, nn.SELU):
        return "selu"
    if isinstance(m, nn.ELU):
        return f"elu:{float(m.alpha)!r}"
    if isinstance(m, nn.LeakyReLU):
        return f"leaky_relu:{float(m.negative_slope)!r}"
    if isinstance(m, nn.PReLU):  # a leaky ReLU with a learnable slope: its value at init
        a = m.weight.detach().reshape(-1)
        return f"leaky_relu:{float(a[0])!r}" if bool((a == a[0]).all()) else None
    if isinstance(m, nn.Sigmoid):
        return "sigmoid"
    if isinstance(m, nn.Softplus):
        return "softplus" if m.beta == 1 and m.threshold >= 20 else None
    if type(m) is nn.Hardtanh:  # nn.ReLU6 is a Hardtanh subclass with other limits
        return "hard_tanh" if (m.min_val, m.max_val) == (-1.0, 1.0) else None
    return None


def _function_spec(node: fx.Node) -> str | None:
    t = node.target
    if t in _FUNCTION_SPECS:
        return _FUNCTION_SPECS[t]
    if t is F.gelu:
        return "gelu" if _arg(node, 1, "approximate", "none") == "none" else None
    if t is F.elu:
        return f"elu:{float(_arg(node, 1, 'alpha', 1.0))!r}"
    if t is F.leaky_relu:
        return f"leaky_relu:{float(_arg(node, 1, 'negative_slope', 0.01))!r}"
    if t is F.softplus:
        return (
            "softplus"
            if _arg(node, 1, "beta", 1.0) == 1 and _arg(node, 2, "threshold", 20.0) >= 20
            else None
        )
    if t is F.hardtanh:
        return (
            "hard_tanh"
            if (_arg(node, 1, "min_val", -1.0), _arg(node, 2, "max_val", 1.0)) == (-1.0, 1.0)
            else None
        )
    return None


class _Graph:
    """A traced model: nodes in topological order and their ancestor sets (as bit masks)."""

    def __init__(self, model: nn.Module):
        try:
            self.gm = fx.symbolic_trace(model)
        except Exception as exc:  # noqa: BLE001 - any tracing failure is reported the same way
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DomainError(
                f"torch.fx could not trace {type(model).__name__} ({type(exc).__name__}: "
                f"{first}); {_STRUCTURE_HINT}"
            ) from None
        self.nodes = list(self.gm.graph.nodes)
        self.idx = {n: i for i, n in enumerate(self.nodes)}
        self.modules = dict(self.gm.named_modules())
        self.anc: list[int] = []
        for n in self.nodes:
            a = 0
            for p in n.all_input_nodes:
                j = self.idx[p]
                a |= self.anc[j] | (1 << j)
            self.anc.append(a)

    def is_anc(self, a: fx.Node, b: fx.Node) -> bool:
        """a is a strict ancestor of b."""
        return bool((self.anc[self.idx[b]] >> self.idx[a]) & 1)

    def module(self, n: fx.Node) -> nn.Module | None:
        return self.modules.get(n.target) if n.op == "call_module" else None

    def is_layer(self, n: fx.Node) -> bool:
        return isinstance(self.module(n), LAYER_TYPES)

    def kind(self, n: fx.Node) -> str:
        """'neutral' (identity on the units), 'meta' (shape queries), 'attr' or 'compute'."""
        if n.op == "get_attr":
            return "attr"
        if n.op == "call_module" and isinstance(self.module(n), _NEUTRAL_MODULES):
            return "neutral"
        if n.op == "call_function":
            if n.target in _NEUTRAL_FUNCTIONS:
                return "neutral"
            if n.target is getattr:
                return "meta"
        if n.op == "call_method":
            if n.target in _NEUTRAL_METHODS:
                return "neutral"
            if n.target in _META_METHODS:
                return "meta"
        return "compute"

    def label(self, n: fx.Node, short: bool = False) -> str:
        if n.op == "call_module":
            m = self.module(n)
            return (
                f"{type(m).__name__}({m.extra_repr()})"
                if short
                else f"{n.target} ({type(m).__name__})"
            )
        if n.op == "call_function":
            name = getattr(n.target, "__name__", str(n.target))
            extra = [repr(a) for a in n.args[1:] if not isinstance(a, fx.Node)]
            extra += [
                f"{k}={v!r}"
                for k, v in n.kwargs.items()
                if k != "inplace" and not isinstance(v, fx.Node)
            ]
            return f"{name}({', '.join(extra)})" if extra else name
        if n.op == "call_method":
            return f".{n.target}()"
        return n.name

    def data_input(self, n: fx.Node) -> fx.Node | None:
        for a in n.args:
            if isinstance(a, fx.Node):
                return a
        return None

    def via_neutral(self, src: fx.Node, dst: fx.Node) -> bool:
        """dst is src, possibly reshaped / dropped out (neutral nodes only)."""
        n = dst
        while n is not src:
            if n is None or self.kind(n) != "neutral":
                return False
            n = self.data_input(n)
        return True

    def region(self, start: fx.Node, end: fx.Node, where: str) -> "_Region":
        """The elementwise map from the value of ``start`` to the value of ``end``."""
        if end is not start and not self.is_anc(start, end):
            raise DomainError(
                f"{where}: {self.label(end)} does not depend on {self.label(start)}; "
                f"{_STRUCTURE_HINT}"
            )
        si = self.idx[start]
        nodes = [
            n
            for n in self.nodes[si + 1 : self.idx[end] + 1]
            if (n is end or self.is_anc(n, end)) and self.is_anc(start, n)
        ]
        inside = set(nodes) | {start}
        for n in nodes:
            for p in n.all_input_nodes:
                if p not in inside and p.op != "get_attr":
                    raise DomainError(
                        f"{where}: {self.label(n)} also reads {self.label(p)}, so the map between "
                        f"the layers is not a function of the layer's output alone (a skip or "
                        f"dense connection that is not an addition x + f(x)?); {_STRUCTURE_HINT}"
                    )
        return _Region(self, start, end, nodes)


class _Region:
    """The traced code between two layers, evaluated on a flat float64 CPU tensor of units."""

    def __init__(self, g: _Graph, start: fx.Node, end: fx.Node, nodes: list[fx.Node]):
        self.g, self.start, self.end = g, start, end
        self.nodes = [n for n in nodes if g.kind(n) != "meta"]
        self.compute = [n for n in self.nodes if g.kind(n) == "compute"]
        self.dropout = [
            n
            for n in nodes
            if isinstance(g.module(n), _DROPOUT)
            or (n.op == "call_function" and "dropout" in getattr(n.target, "__name__", ""))
        ]
        self._mods: dict[str, nn.Module] = {}

    def spec(self) -> str | None:
        if not self.compute:
            return "linear"
        if len(self.compute) == 1:
            n = self.compute[0]
            if n.op == "call_module":
                return _module_spec(self.g.module(n))
            if n.op == "call_function":
                return _function_spec(n)
            if n.op == "call_method":
                return _METHOD_SPECS.get(n.target)
        return None

    def label(self, short: bool = False) -> str:
        return " -> ".join(self.g.label(n, short) for n in self.compute) or "identity"

    def _value(self, a, env):
        if isinstance(a, fx.Node):
            if a in env:
                return env[a]
            if a.op == "get_attr":
                obj = self.g.gm
                for part in a.target.split("."):
                    obj = getattr(obj, part)
                return (
                    obj.detach().to("cpu", torch.float64) if isinstance(obj, torch.Tensor) else obj
                )
            raise DomainError(f"cannot evaluate {self.g.label(a)} inside the activation")
        return a

    def _module64(self, target: str) -> nn.Module:
        if target not in self._mods:
            self._mods[target] = copy.deepcopy(self.g.modules[target]).to("cpu", torch.float64)
        return self._mods[target]

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        env: dict[fx.Node, Any] = {self.start: t}
        for n in self.nodes:
            kind = self.g.kind(n)
            if kind == "neutral":
                env[n] = env[self.g.data_input(n)]
                continue
            args = fx.node.map_arg(n.args, lambda a: self._value(a, env))
            kwargs = fx.node.map_arg(n.kwargs, lambda a: self._value(a, env))
            if n.op == "call_module":
                env[n] = self._module64(n.target)(*args, **kwargs)
            elif n.op == "call_function":
                env[n] = n.target(*args, **kwargs)
            elif n.op == "call_method":
                env[n] = getattr(args[0], n.target)(*args[1:], **kwargs)
            else:  # get_attr
                env[n] = self._value(n, {})
        return env[self.end]


def _np_shim(
    f: Callable[[torch.Tensor], torch.Tensor], order: int
) -> Callable[[np.ndarray], np.ndarray]:
    """numpy callable for phi (order 0) or its derivatives by autograd (order 1, 2), in float64."""

    def fn(x):
        t = torch.as_tensor(np.array(x, dtype=np.float64))
        if order == 0:
            with torch.no_grad():
                return f(t.clone()).numpy().copy()
        t.requires_grad_(True)
        with torch.enable_grad():
            y = f(t.clone())
            (g,) = torch.autograd.grad(y.sum(), t, create_graph=order == 2, allow_unused=True)
            if g is None:
                return np.zeros(t.shape)
            if order == 2:
                if not g.requires_grad:
                    return np.zeros(t.shape)
                (g,) = torch.autograd.grad(g.sum(), t, allow_unused=True)
                if g is None:
                    return np.zeros(t.shape)
        return g.detach().numpy().copy()

    return fn


def _check_elementwise(f: Callable[[torch.Tensor], torch.Tensor], what: str) -> None:
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(64, generator=gen, dtype=torch.float64) - 0.5) * 8.0
    try:
        with torch.no_grad():
            y = f(x.clone())
            ok = (
                isinstance(y, torch.Tensor)
                and y.shape == x.shape
                and torch.allclose(f(x[:7].clone()), y[:7], rtol=1e-12, atol=1e-12)
                and torch.allclose(f(x.view(8, 8).clone()).reshape(-1), y, rtol=1e-12, atol=1e-12)
            )
    except Exception as exc:  # noqa: BLE001 - any failure means "not an elementwise function"
        raise DomainError(
            f"{what} is not elementwise, so meanfield cannot wrap it as an activation "
            f"({type(exc).__name__} on a flat tensor: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); the "
            f"mean-field theory covers elementwise activations only; {_STRUCTURE_HINT}"
        ) from None
    if not ok:
        raise DomainError(
            f"{what} is not elementwise (its value at a unit depends on other units or on the "
            f"shape); the mean-field theory covers elementwise activations only; {_STRUCTURE_HINT}"
        )
    if not bool(torch.isfinite(y).all()):
        raise DomainError(
            f"{what} is not finite on [-4, 4], so meanfield cannot wrap it as an activation"
        )


def wrap_activation(
    fn: "nn.Module | Callable[[torch.Tensor], torch.Tensor] | str | Activation",
    *,
    name: str | None = None,
) -> Activation:
    """meanfield Activation for a torch activation module or an elementwise torch callable.

    Registry activations (nn.Tanh, nn.ReLU, nn.GELU(), nn.ELU(alpha), ...) map to their spec;
    anything else elementwise becomes a custom activation whose derivatives come from autograd
    in float64.  Strings and Activations are passed to :func:`meanfield.get_activation`.
    """
    if isinstance(fn, (str, Activation)):
        return get_activation(fn)
    if isinstance(fn, nn.Module):
        spec = _module_spec(fn)
        if spec is not None:
            return get_activation(spec)
        mod = copy.deepcopy(fn).to("cpu", torch.float64)
        f = mod
        label = name or f"torch:{type(fn).__name__}"
    elif callable(fn):
        spec = _FUNCTION_SPECS.get(fn)
        if spec is not None:
            return get_activation(spec)
        f = fn
        label = name or f"torch:{getattr(fn, '__name__', 'fn')}"
    else:
        raise DomainError(
            f"cannot wrap {fn!r} as an activation: give a torch module, a callable or a spec"
        )
    return _custom_from(f, label)


def _custom_from(
    f: Callable[[torch.Tensor], torch.Tensor], label: str, where: str = ""
) -> Activation:
    _check_elementwise(
        f, f"{label[6:] if label.startswith('torch:') else label}{' ' + where if where else ''}"
    )
    d1, d2 = _np_shim(f, 1), _np_shim(f, 2)
    try:
        d1(np.linspace(-1.0, 1.0, 3))
        d2(np.linspace(-1.0, 1.0, 3))
    except Exception:  # noqa: BLE001 - not differentiable by autograd: finite differences instead
        d1 = d2 = None
    return custom(_np_shim(f, 0), d1, d2, name=label)


# ------------------------------------------------------------------------------------------
# Structure
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Structure:
    """Which modules of a model play which part in the mean-field model.

    ``arch="mlp"``: ``layers`` are the Linear/Conv modules in order, first to readout, with the
    activation between consecutive layers; depth = len(layers) - 1.  Residual arches:
    ``blocks`` are (W, V) pairs (``"resnet-full"``) or (W,) singletons (``"resnet-reduced"``),
    ``stem`` the layers before the first block, ``head`` those after the last; depth =
    len(blocks).  ``activation`` is a registry spec, an Activation, a callable or a torch module;
    it is stored as its name.
    """

    arch: str
    activation: Any
    layers: tuple[str, ...] = ()
    blocks: tuple[tuple[str, ...], ...] = ()
    stem: tuple[str, ...] = ()
    head: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    _act: Activation | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if self.arch not in ARCHES:
            raise DomainError(
                f"Structure: unknown arch {self.arch!r}; choose one of {', '.join(ARCHES)}"
            )
        act = self._act if self._act is not None else wrap_activation(self.activation)
        object.__setattr__(self, "_act", act)
        object.__setattr__(self, "activation", act.name)
        names = lambda v, what: tuple(_check_name(s, what) for s in v)  # noqa: E731
        object.__setattr__(self, "layers", names(self.layers, "layers"))
        object.__setattr__(self, "stem", names(self.stem, "stem"))
        object.__setattr__(self, "head", names(self.head, "head"))
        object.__setattr__(self, "blocks", tuple(names(b, "blocks") for b in self.blocks))
        object.__setattr__(self, "notes", tuple(str(s) for s in self.notes))
        if self.arch == "mlp":
            if self.blocks or self.stem or self.head:
                raise DomainError("Structure(arch='mlp') takes layers=..., not blocks/stem/head")
            if not self.layers:
                raise DomainError(
                    "Structure(arch='mlp') needs layers=(names of the Linear/Conv modules in order)"
                )
        else:
            if self.layers:
                raise DomainError(
                    f"Structure(arch={self.arch!r}) takes stem/blocks/head, not layers"
                )
            if not self.blocks:
                raise DomainError(
                    f"Structure(arch={self.arch!r}) needs blocks=((W, V), ...) or ((W,), ...)"
                )
            want = 2 if self.arch == "resnet-full" else 1
            bad = [b for b in self.blocks if len(b) != want]
            if bad:
                raise DomainError(
                    f"Structure(arch={self.arch!r}): each block names {want} layer(s) "
                    f"({'W, V' if want == 2 else 'W'}), got {bad[0]!r}"
                )
        seen = [n for n, _ in self.roles()]
        dup = sorted({n for n in seen if seen.count(n) > 1})
        if dup:
            raise DomainError(f"Structure names the module(s) {dup} more than once")

    @property
    def depth(self) -> int:
        """Hidden layers (mlp) or residual blocks (resnets)."""
        return len(self.layers) - 1 if self.arch == "mlp" else len(self.blocks)

    @property
    def act(self) -> Activation:
        if self._act is None:
            try:
                object.__setattr__(self, "_act", get_activation(self.activation))
            except DomainError:
                raise DomainError(
                    f"the activation {self.activation!r} of this structure was lost when the "
                    f"model was copied or unpickled; pass structure= or call trace_structure "
                    f"again"
                ) from None
        return self._act

    def roles(self) -> list[tuple[str, str]]:
        """(module name, role) in forward order; roles: layer, stem, w, v, head."""
        if self.arch == "mlp":
            return [(n, "layer") for n in self.layers]
        out = [(n, "stem") for n in self.stem]
        for b in self.blocks:
            out.append((b[0], "w"))
            if len(b) > 1:
                out.append((b[1], "v"))
        return out + [(n, "head") for n in self.head]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_act"] = None  # custom activations wrap traced code and do not pickle
        return state

    def __setstate__(self, state):
        for k, v in state.items():
            object.__setattr__(self, k, v)

    def to_dict(self) -> dict:
        return {
            "arch": self.arch,
            "activation": self.activation,
            "depth": self.depth,
            "layers": list(self.layers),
            "blocks": [list(b) for b in self.blocks],
            "stem": list(self.stem),
            "head": list(self.head),
            "notes": list(self.notes),
        }


def _check_name(s: Any, what: str) -> str:
    if not isinstance(s, str) or not s:
        raise DomainError(f"Structure {what}: module names must be non-empty strings, got {s!r}")
    return s


def _is_add(n: fx.Node) -> bool:
    if n.op == "call_function" and n.target in (operator.add, operator.iadd, torch.add):
        return True
    return n.op == "call_method" and n.target in ("add", "add_")


def _same_activation(g: _Graph, regions: Sequence[tuple[str, _Region]]) -> Activation:
    """The one activation of all regions (spec or custom wrapper); DomainError if they differ."""
    where0, r0 = regions[0]
    spec0 = r0.spec()
    act0 = (
        get_activation(spec0)
        if spec0 is not None
        else _custom_from(r0, f"torch:{r0.label(True)}", where0)
    )
    grid = np.linspace(-4.0, 4.0, 41)
    ref = None
    for where, r in regions[1:]:
        spec = r.spec()
        if spec is not None and spec0 is not None:
            same = get_activation(spec).name == act0.name
        else:
            if ref is None:
                ref = np.asarray(act0(grid))
            with torch.no_grad():
                try:
                    vals = r(torch.as_tensor(grid.copy())).numpy()
                    same = vals.shape == ref.shape and np.allclose(vals, ref, rtol=1e-9, atol=1e-12)
                except Exception:  # noqa: BLE001
                    same = False
        if not same:
            raise DomainError(
                f"the model uses different activations: {r0.label()} ({where0}) and "
                f"{r.label()} ({where}); "
                f"the mean-field theory assumes one activation throughout; {_STRUCTURE_HINT}"
            )
    return act0


def _check_covered(model: nn.Module, st: "Structure") -> "Structure":
    """Refuse a traced structure that leaves parameters of the model out (an Embedding, attention,
    a norm's affine weights, ...): init_ sets every weight it claims, or nothing."""
    claimed = {n for n, _ in st.roles()}
    mods = dict(model.named_modules())
    left: dict[str, str] = {}
    n_left = n_all = 0
    for name, _ in model.named_parameters():
        n_all += 1
        owner = name.rsplit(".", 1)[0] if "." in name else ""
        if owner in claimed or isinstance(mods.get(owner), nn.PReLU):  # PReLU: the activation's slope
            continue
        n_left += 1
        left.setdefault(owner, type(mods.get(owner, model)).__name__)
    if left:
        shown = ", ".join(f"{k or '(the model itself)'} ({v})" for k, v in list(left.items())[:8])
        more = f" and {len(left) - 8} more" if len(left) > 8 else ""
        raise DomainError(
            f"{type(model).__name__} has {n_left} of {n_all} parameter tensors in modules meanfield does "
            f"not handle: {shown}{more}; meanfield reads chains of nn.Linear / nn.ConvNd layers with one "
            f"elementwise activation and identity shortcuts x + f(x), and refuses rather than initialise "
            f"or predict for part of a model; {_STRUCTURE_HINT}")
    return st


def trace_structure(model: nn.Module) -> Structure:
    """Read a model's layers, activation, depth and residual blocks with ``torch.fx``.

    Raises DomainError naming what it cannot read (no Linear/Conv layers, a layer called twice,
    a non-elementwise function between layers, several activations, residual branches other
    than W -> phi -> V or phi(W x), ...); the message says how to pass ``structure=``.
    """
    if not isinstance(model, nn.Module):
        raise DomainError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    g = _Graph(model)
    foreign = [
        f"{n.target} ({type(g.module(n)).__name__})"
        for n in g.nodes
        if n.op == "call_module"
        and not isinstance(g.module(n), LAYER_TYPES + (nn.PReLU,))
        and any(True for _ in g.module(n).parameters())
    ]
    if foreign:
        raise DomainError(
            f"{type(model).__name__} applies modules with parameters that meanfield does not handle: "
            f"{', '.join(dict.fromkeys(foreign))} (their maps are not elementwise activations); meanfield "
            f"reads chains of nn.Linear / nn.ConvNd layers with "
            f"one elementwise activation and identity shortcuts x + f(x), and refuses rather than "
            f"initialise or predict for part of a model; {_STRUCTURE_HINT}")
    layers = [n for n in g.nodes if g.is_layer(n)]
    if not layers:
        kinds = sorted({type(m).__name__ for name, m in g.modules.items() if name})
        raise DomainError(
            f"{type(model).__name__} has no nn.Linear or nn.Conv1d/2d/3d layers that its forward "
            f"pass calls (modules: {', '.join(kinds) or 'none'}); meanfield initialises only "
            f"those"
        )
    calls: dict[str, int] = {}
    for n in layers:
        calls[n.target] = calls.get(n.target, 0) + 1
    shared = [t for t, k in calls.items() if k > 1]
    if shared:
        raise DomainError(
            f"layer {shared[0]!r} is called {calls[shared[0]]} times in one forward pass (shared "
            f"weights); the mean-field theory assumes independent weights in every layer"
        )
    residual = []
    for n in g.nodes:
        if not _is_add(n):
            continue
        ops = [a for a in n.args if isinstance(a, fx.Node)]
        if len(ops) != 2:
            continue
        a, b = ops
        if g.is_anc(a, b):
            skip, branch = a, b
        elif g.is_anc(b, a):
            skip, branch = b, a
        else:
            if any(L is a or g.is_anc(L, a) for L in layers) and any(
                L is b or g.is_anc(L, b) for L in layers
            ):
                raise DomainError(
                    f"the addition {n.name} adds two paths neither of which is the other's input "
                    f"(a projection shortcut?); meanfield reads identity shortcuts x + f(x) only; "
                    f"{_STRUCTURE_HINT}"
                )
            continue
        inner = [L for L in layers if g.is_anc(skip, L) and (L is branch or g.is_anc(L, branch))]
        if inner:
            if "alpha" in n.kwargs:
                raise DomainError(
                    f"the residual addition {n.name} scales its branch (alpha=...); fold the "
                    f"multiplier into sigma_v2 or pass structure="
                )
            residual.append((n, skip, branch, inner))
    notes: list[str] = []
    if not residual:
        regions = []
        for L0, L1 in zip(layers[:-1], layers[1:]):
            where = f"between {L0.target} and {L1.target}"
            if not g.is_anc(L0, L1):
                raise DomainError(
                    f"layer {L1.target} does not read the output of layer {L0.target} (parallel "
                    f"paths?); meanfield reads chains of layers and identity shortcuts x + f(x); "
                    f"{_STRUCTURE_HINT}"
                )
            r = g.region(L0, g.data_input(L1), where)
            regions.append((where, r))
            if r.dropout:
                notes.append(
                    f"dropout {where}: the advice assumes none (docs/theory.md §A1.8 shortens xi_c)"
                )
        act = _same_activation(g, regions) if regions else get_activation("linear")
        return _check_covered(model, Structure(
            "mlp", act.name, layers=tuple(L.target for L in layers), notes=tuple(notes), _act=act
        ))
    # residual network
    blocks, regions, kinds = [], [], set()
    in_branch: set[fx.Node] = set()
    for k, (add, skip, branch, inner) in enumerate(residual):
        where = f"residual block {k} (the addition {add.name})"
        W = inner[0]
        if not g.via_neutral(skip, g.data_input(W)):
            raise DomainError(
                f"{where}: the branch applies something before its first layer {W.target}; the "
                f"Yang-Schoenholz blocks start with h = W x + b; {_STRUCTURE_HINT}"
            )
        if len(inner) == 1:
            regions.append((where, g.region(W, branch, where)))
            kinds.add("resnet-reduced")
            blocks.append((W.target,))
        elif len(inner) == 2:
            V = inner[1]
            regions.append((where, g.region(W, g.data_input(V), where)))
            if not g.via_neutral(V, branch):
                raise DomainError(
                    f"{where}: the branch output of {V.target} passes through "
                    f"{g.label(branch)} before the addition; the full residual block is "
                    f"x + V phi(W x + b) + a (fold a branch multiplier into sigma_v2); "
                    f"{_STRUCTURE_HINT}"
                )
            kinds.add("resnet-full")
            blocks.append((W.target, V.target))
        else:
            raise DomainError(
                f"{where} has {len(inner)} layers in its branch "
                f"({', '.join(L.target for L in inner)}); "
                f"the residual theory covers branches W -> phi -> V (full) or phi(W x + b) "
                f"(reduced); {_STRUCTURE_HINT}"
            )
        in_branch.update(inner)
        if k > 0 and not g.via_neutral(residual[k - 1][0], skip):
            raise DomainError(
                f"between residual blocks {k - 1} and {k} the stream passes through "
                f"{g.label(skip)}; the theory's stream is x^l = x^(l-1) + branch, with nothing "
                f"applied to it between blocks (post-activation or normalised ResNets are not "
                f"covered); {_STRUCTURE_HINT}"
            )
    if len(kinds) > 1:
        raise DomainError(
            f"the model mixes full (W -> phi -> V) and reduced (phi(W x)) residual blocks; "
            f"{_STRUCTURE_HINT}"
        )
    first_skip, last_add = residual[0][1], residual[-1][0]
    stem, head = [], []
    for L in layers:
        if L in in_branch:
            continue
        if L is first_skip or g.is_anc(L, first_skip):
            stem.append(L.target)
        elif g.is_anc(last_add, L):
            head.append(L.target)
        else:
            raise DomainError(
                f"layer {L.target} is neither inside a residual branch nor before or after the "
                f"residual stream; {_STRUCTURE_HINT}"
            )
    for where, r in regions:
        if r.dropout:
            notes.append(f"dropout in {where}: the advice assumes none")
    act = _same_activation(g, regions)
    return _check_covered(model, Structure(
        kinds.pop(),
        act.name,
        blocks=tuple(blocks),
        stem=tuple(stem),
        head=tuple(head),
        notes=tuple(notes),
        _act=act,
    ))


def _structure(model: nn.Module, structure: Structure | None) -> Structure:
    """The structure given, else the one init_ recorded (re-traced if its activation was
    lost), else a traced one."""
    if structure is not None:
        if not isinstance(structure, Structure):
            raise DomainError(
                f"structure must be a meanfield.torch.Structure, got {type(structure).__name__}"
            )
        st = structure
    else:
        rec = getattr(model, MARK, None)
        if rec is not None:
            st = rec.structure
            if st._act is None:
                try:
                    _ = st.act  # resolving the activation may raise
                except DomainError:
                    st = trace_structure(model)
        else:
            st = trace_structure(model)
    mods = dict(model.named_modules())
    for name, role in st.roles():
        if name not in mods:
            raise DomainError(
                f"the structure names {name!r} ({role}), which is not a submodule of "
                f"{type(model).__name__}"
            )
        if not isinstance(mods[name], LAYER_TYPES):
            raise DomainError(
                f"the structure names {name!r} ({role}), a {type(mods[name]).__name__}; "
                f"meanfield initialises nn.Linear and nn.Conv1d/2d/3d layers only"
            )
    return st


# ------------------------------------------------------------------------------------------
# init_
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variances:
    """Initialisation variances: weights N(0, sigma2 / fan_in), biases N(0, sigma_b2).

    sigma_w2/sigma_b2: every MLP layer, the W layers of residual blocks; sigma_v2/sigma_a2: the
    V layers (weight / bias) of full residual blocks; sigma_in2/sigma_o2: the stem and head
    layers of residual networks (zero bias).
    """

    sigma_w2: float
    sigma_b2: float = 0.0
    sigma_v2: float = 1.0
    sigma_a2: float = 0.0
    sigma_in2: float = 1.0
    sigma_o2: float = 1.0

    def for_role(self, role: str) -> tuple[float, float]:
        return {
            "layer": (self.sigma_w2, self.sigma_b2),
            "w": (self.sigma_w2, self.sigma_b2),
            "v": (self.sigma_v2, self.sigma_a2),
            "stem": (self.sigma_in2, 0.0),
            "head": (self.sigma_o2, 0.0),
        }[role]

    def to_dict(self) -> dict:
        return {
            k: getattr(self, k)
            for k in ("sigma_w2", "sigma_b2", "sigma_v2", "sigma_a2", "sigma_in2", "sigma_o2")
        }


@dataclass(frozen=True)
class InitRecord:
    """What :func:`init_` did to a model (stored on it as ``model._meanfield_init``)."""

    structure: Structure
    variances: Variances
    source: str  # "advice", "advise()" or "given"
    seed: int | None
    advice: Any = field(default=None, repr=False)
    untouched: tuple[str, ...] = ()
    # "gaussian" or "orthogonal" (each layer's (out/groups, fan_in) matrix a scaled isometry)
    weights: str = "gaussian"

    def to_dict(self) -> dict:
        adv = self.advice.to_dict() if hasattr(self.advice, "to_dict") else self.advice
        return {
            "structure": self.structure.to_dict(),
            "variances": self.variances.to_dict(),
            "source": self.source,
            "seed": self.seed,
            "advice": adv,
            "untouched": list(self.untouched),
            "weights": self.weights,
        }


def _get(obj: Any, key: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key, default)
    return getattr(obj, key, default)


def _check_advice_fits(advice: Any, st: Structure) -> None:
    a_arch = _get(advice, "arch")
    if a_arch is not None and a_arch != st.arch:
        raise DomainError(
            f"the advice is for arch {a_arch!r} but the model is {st.arch!r} ({_describe(st)})"
        )
    a_depth = _get(advice, "depth")
    if a_depth is not None and int(a_depth) != st.depth:
        raise DomainError(
            f"the advice is for depth {a_depth} but the model has depth {st.depth} "
            f"({_describe(st)})"
        )
    a_act = _get(advice, "activation")
    if a_act is not None:
        try:
            a_name = get_activation(a_act).name
        except DomainError:
            a_name = str(a_act)
        if not st.activation.startswith("torch:") and a_name != st.activation:
            raise DomainError(
                f"the advice is for activation {a_name!r} but the model applies {st.activation!r}"
            )


def _describe(st: Structure) -> str:
    if st.arch == "mlp":
        return (
            f"{len(st.layers)} layers with {st.activation} between them: depth counts the "
            f"{st.depth} hidden layers"
        )
    kind = "W -> phi -> V" if st.arch == "resnet-full" else "phi(W x + b)"
    return f"{st.depth} residual blocks {kind} with phi = {st.activation}"


def _variances_of(advice: Any, st: Structure, sigma_in2: float, sigma_o2: float) -> Variances:
    sw = _get(advice, "sigma_w2")
    if sw is None:
        raise DomainError(f"the advice has no sigma_w2 (got {type(advice).__name__})")
    sb = _get(advice, "sigma_b2", 0.0)
    sv = _get(advice, "sigma_v2", 1.0)
    sa = _get(advice, "sigma_a2", 0.0)
    return _make_variances(st, sw, sb, sv, sa, sigma_in2, sigma_o2)


def _make_variances(st: Structure, sw, sb, sv, sa, sin, so) -> Variances:
    vals = {}
    for name, v in (
        ("sigma_w2", sw),
        ("sigma_b2", sb),
        ("sigma_v2", sv),
        ("sigma_a2", sa),
        ("sigma_in2", sin),
        ("sigma_o2", so),
    ):
        vals[name] = float(maps.check_variance(name, v))
    if st.arch == "resnet-reduced" and (vals["sigma_v2"] != 1.0 or vals["sigma_a2"] != 0.0):
        raise DomainError(
            f"a reduced residual network has no V or a layers: sigma_v2 and sigma_a2 must be "
            f"left at 1 and 0 (got {vals['sigma_v2']:g}, {vals['sigma_a2']:g})"
        )
    return Variances(**vals)


def _hidden_width(model: nn.Module, st: Structure) -> int | None:
    mods = dict(model.named_modules())
    name = st.layers[0] if st.arch == "mlp" else st.blocks[0][0]
    w = mods[name].weight
    return int(w.shape[0]) if w.ndim >= 2 else None


def _generator(generator: torch.Generator | None, seed: Any) -> tuple[torch.Generator, int | None]:
    if generator is not None and seed is not None:
        raise DomainError("give either generator= or seed=, not both")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise DomainError(
                f"generator must be a torch.Generator, got {type(generator).__name__}"
            )
        return generator, None
    g = torch.Generator(device="cpu")
    if seed is None:
        return g, int(g.seed())  # fresh entropy, recorded so the draw can be repeated
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise DomainError(f"seed must be a non-negative integer, got {seed!r}")
    g.manual_seed(int(seed))
    return g, int(seed)


def _fill(t: torch.Tensor, var: float, g: torch.Generator) -> None:
    """t <- N(0, var), drawn as float32 (float64 for float64 tensors) on the generator's device, so
    that a seed gives the same numbers on every device."""
    if var == 0.0:
        t.zero_()
        return
    dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    if t.device == g.device and t.dtype == dtype:
        t.normal_(0.0, math.sqrt(var), generator=g)
    else:
        t.copy_(
            torch.empty(t.shape, dtype=dtype, device=g.device).normal_(
                0.0, math.sqrt(var), generator=g
            )
        )


def _fill_orthogonal(t: torch.Tensor, var: float, groups: int, g: torch.Generator) -> None:
    """t <- a scaled Haar-orthogonal draw (docs/theory.md §A6.2): for each group the (out/groups, fan_in)
    matrix has orthonormal rows (columns when out/groups > fan_in) times the scale that gives its
    entries the mean square ``var`` of the Gaussian draw, so W W^T = var * fan_in * I (rows) and
    q^l is the same as with Gaussian weights.  QR in float64 on the generator's device."""
    if var == 0.0:
        t.zero_()
        return
    rows, cols = t.shape[0] // groups, t[0].numel()
    out = torch.empty((groups, rows, cols), dtype=torch.float64, device=g.device)
    gain = math.sqrt(var * max(rows, cols))
    for blk in out:
        nn.init.orthogonal_(blk, gain=gain, generator=g)
    t.copy_(out.reshape(t.shape))


def fan_in(layer: nn.Module) -> int:
    """in_features (Linear) or in_channels / groups * kernel size (ConvNd): PyTorch's fan-in."""
    w = layer.weight
    return int(w[0].numel())


def init_(
    model: nn.Module,
    advice: Any = None,
    *,
    activation: Any = None,
    depth: int | None = None,
    arch: str | None = None,
    sigma_w2: float | None = None,
    sigma_b2: float | None = None,
    sigma_v2: float | None = None,
    sigma_a2: float | None = None,
    sigma_in2: float = 1.0,
    sigma_o2: float = 1.0,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    force: bool = False,
    structure: Structure | None = None,
    weights: str = "gaussian",
    **advise_options: Any,
) -> nn.Module:
    """Initialise ``model`` in place from mean-field advice and return it.

    Every traced Linear/Conv weight is drawn N(0, sigma2 / fan_in) and every bias N(0, sigma_b2)
    (docs/theory.md §A0); with ``weights="orthogonal"`` each weight is instead a scaled Haar
    orthogonal matrix with entries of the same mean square sigma2 / fan_in (docs/theory.md §A6.2: W W^T =
    sigma2 I for fan_out <= fan_in; a conv's (out/groups, in/groups * kernel size) matrix per group,
    not the delta-orthogonal kernel), as ``advice.weights`` recommends where it gives dynamical
    isometry.  The residual branch layers W, V with (sigma_w2, sigma_b2), (sigma_v2,
    sigma_a2), the stem and head of residual networks with sigma_in2, sigma_o2 and zero bias.
    The variances come from ``advice`` (an Advice / ResidualAdvice, or a mapping with sigma_w2,
    ...), or from ``sigma_w2=...`` (then sigma_b2 = 0, sigma_v2 = 1, sigma_a2 = 0 unless given), or,
    when neither is given, from ``meanfield.advise(arch, activation, depth, **advise_options)`` for
    the traced architecture, activation and depth.  ``activation``, ``depth`` and ``arch``, when
    given, must agree with what tracing reads; advice for another arch, depth or activation is
    refused.  Deterministic given ``seed`` or ``generator`` (weights are drawn on the generator's
    device, a CPU generator by default, so a seed gives the same weights on every device).  A
    second call on the same model is refused unless ``force=True``.
    """
    if not isinstance(model, nn.Module):
        raise DomainError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    from .spectra import _check_weights

    weights = _check_weights(weights)
    prev = getattr(model, MARK, None)
    if prev is not None and not force:
        raise DomainError(
            f"{type(model).__name__} was already initialised by meanfield.torch.init_ (sigma_w2="
            f"{prev.variances.sigma_w2:g}, seed={prev.seed}); a second application would redraw "
            f"every "
            f"weight and discard any training since. Pass force=True to re-initialise on purpose."
        )
    st = _structure(model, structure)
    if arch is not None and arch != st.arch:
        raise DomainError(f"arch={arch!r} was given but the model is {st.arch!r} ({_describe(st)})")
    if depth is not None and depth != st.depth:
        raise DomainError(
            f"depth={depth} was given but the model has depth {st.depth} ({_describe(st)})"
        )
    act = st.act
    if activation is not None:
        user = wrap_activation(activation)
        if st.activation.startswith("torch:"):
            st = Structure(
                st.arch,
                user.name,
                st.layers,
                st.blocks,
                st.stem,
                st.head,
                st.notes + (f"activation {user.name} given for the traced {st.activation}",),
                _act=user,
            )
            act = user
        elif user.name != st.activation:
            raise DomainError(
                f"activation={user.name!r} was given but the model applies {st.activation!r}"
            )
    given = {
        k: v
        for k, v in (
            ("sigma_w2", sigma_w2),
            ("sigma_b2", sigma_b2),
            ("sigma_v2", sigma_v2),
            ("sigma_a2", sigma_a2),
        )
        if v is not None
    }
    if advice is not None:
        if given or advise_options:
            raise DomainError(
                f"give either advice or the variances/advise options "
                f"({', '.join(given or advise_options)}), "
                f"not both"
            )
        _check_advice_fits(advice, st)
        var = _variances_of(advice, st, sigma_in2, sigma_o2)
        source = "advice"
    elif sigma_w2 is not None:
        if advise_options:
            raise DomainError(
                f"advise options {sorted(advise_options)} apply only when sigma_w2 is not given"
            )
        var = _make_variances(
            st,
            sigma_w2,
            0.0 if sigma_b2 is None else sigma_b2,
            1.0 if sigma_v2 is None else sigma_v2,
            0.0 if sigma_a2 is None else sigma_a2,
            sigma_in2,
            sigma_o2,
        )
        source = "given"
    else:
        from .advise import advise

        if st.depth < 1:
            raise DomainError(
                f"the model has a single layer ({st.layers[0]}): there is no depth to advise "
                f"for; give sigma_w2= explicitly"
            )
        opts = dict(advise_options)
        opts.update({k: v for k, v in given.items()})
        if "width" not in opts:
            opts["width"] = _hidden_width(model, st)
        no_bias = st.arch == "mlp" and all(
            getattr(dict(model.named_modules())[n], "bias", None) is None for n in st.layers)
        if no_bias and "sigma_b2" not in opts:
            opts["sigma_b2"] = 0.0
        advice = advise(st.arch, activation=act, depth=st.depth, **opts)
        if no_bias and hasattr(advice, "notes"):
            advice.notes.append("the model's layers have no biases (bias=False): the advice is for sigma_b2 = 0")
        var = _variances_of(advice, st, sigma_in2, sigma_o2)
        source = "advise()"
    gen, used_seed = _generator(generator, seed)
    mods = dict(model.named_modules())
    touched = set()
    with torch.no_grad():
        for name, role in st.roles():
            layer = mods[name]
            vw, vb = var.for_role(role)
            if weights == "orthogonal":
                _fill_orthogonal(layer.weight, vw / fan_in(layer), getattr(layer, "groups", 1), gen)
            else:
                _fill(layer.weight, vw / fan_in(layer), gen)
            touched.add(f"{name}.weight")
            if layer.bias is not None:
                _fill(layer.bias, vb, gen)
                touched.add(f"{name}.bias")
    untouched = tuple(n for n, _ in model.named_parameters() if n not in touched)
    rec = InitRecord(st, var, source, used_seed, advice, untouched, weights)
    object.__setattr__(model, MARK, rec)
    return model


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
        if rec is not None:
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
    from .residual import iterate_residual

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

    ``quantity``: q, c, grad2, grad_w2 (all architectures), p, e (residual nets).  Returns the Axes.
    """
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
    from .plot import _plt

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


# ------------------------------------------------------------------------------------------
# Empirical NTK
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TorchNTK:
    """Empirical NTK of a torch model: ``ntk[a, b]`` = (1/k) sum_o sum_theta s_theta
    df_o(x_a)/dtheta df_o(x'_b)/dtheta over the k outputs (the output-diagonal mean; at infinite
    width the kernel is Theta (x) I_k).  ``parametrization="standard"``: s = 1, the kernel of the
    weights PyTorch trains; ``"ntk"``: s = the parameter's initialisation variance (sigma2/fan_in
    for
    weights, sigma_b2 for biases), the kernel of the N(0, 1) raw parameters of docs/theory.md §A4.1/4.3."""

    ntk: np.ndarray
    parametrization: str
    n_outputs: int
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {
            "ntk": self.ntk.tolist(),
            "parametrization": self.parametrization,
            "n_outputs": self.n_outputs,
            "notes": list(self.notes),
        }


def empirical_ntk(
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    parametrization: str = "standard",
    variances: Any = None,
    structure: Structure | None = None,
) -> TorchNTK:
    """NTK of ``model`` between the rows of x1 and x2 (default x1) by ``torch.func`` (vmap of
    jacrev).

    A torch ``nn.Linear`` is the standard parametrisation: W = sqrt(sigma_w2 / fan_in) * omega with
    omega ~ N(0, 1), so d f/d omega = sqrt(sigma_w2 / fan_in) d f/dW.  ``parametrization="ntk"``
    rescales each layer's term by its variance (from ``variances``, else what init_ recorded, else
    the weights), which turns this kernel into the one meanfield's kernels compute (docs/theory.md §A4.1,
    4.3); in the standard parametrisation the hidden-weight terms grow with width instead (4.2).
    Memory: the Jacobian holds n_inputs x n_outputs x n_parameters numbers.
    """
    from torch.func import functional_call, jacrev, vmap

    if parametrization not in ("standard", "ntk"):
        raise DomainError(f"parametrization must be 'standard' or 'ntk', got {parametrization!r}")
    params = {k: v.detach() for k, v in model.named_parameters()}
    if not params:
        raise DomainError(f"{type(model).__name__} has no parameters: its NTK is zero")
    ref = next(iter(params.values()))
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    for name, t in (("x1", x1), ("x2", x2)):
        if t is not None and (not isinstance(t, torch.Tensor) or t.ndim < 2):
            raise DomainError(
                f"{name} must be a torch tensor with the batch in its first dimension"
            )
    a = x1.detach().to(ref.device, ref.dtype)
    b = a if x2 is None else x2.detach().to(ref.device, ref.dtype)
    scale: dict[str, float] = {k: 1.0 for k in params}
    notes: list[str] = []
    if parametrization == "ntk":
        st = _structure(model, structure)
        if variances is None:
            rec = getattr(model, MARK, None)
            variances = rec.variances if rec is not None else None
        mods = dict(model.named_modules())
        if variances is not None:
            if not isinstance(variances, Variances):
                variances = _variances_of(
                    variances,
                    st,
                    _get(variances, "sigma_in2", 1.0),
                    _get(variances, "sigma_o2", 1.0),
                )
            for name, role in st.roles():
                vw, vb = variances.for_role(role)
                scale[f"{name}.weight"] = vw / fan_in(mods[name])
                if mods[name].bias is not None:
                    scale[f"{name}.bias"] = vb
        else:
            notes.append("variances read from the weights")
            for name, _role, w2, b2 in realised_variances(model, st):
                scale[f"{name}.weight"] = w2 / fan_in(mods[name])
                if mods[name].bias is not None:
                    scale[f"{name}.bias"] = b2
        rest = [
            k
            for k in params
            if k not in {f"{n}.{p}" for n, _ in st.roles() for p in ("weight", "bias")}
        ]
        if rest:
            notes.append(f"parameters outside the traced layers keep scale 1: {', '.join(rest)}")

    def f(p, x):
        return functional_call(model, (p, buffers), (x.unsqueeze(0),)).reshape(-1)

    jac = vmap(jacrev(f), in_dims=(None, 0))
    ja = jac(params, a)
    jb = ja if x2 is None else jac(params, b)
    k = None
    total = None
    for name in params:
        A = ja[name].reshape(ja[name].shape[0], ja[name].shape[1], -1).to(torch.float64)
        B = jb[name].reshape(jb[name].shape[0], jb[name].shape[1], -1).to(torch.float64)
        k = A.shape[1]
        term = torch.einsum("aoi,boi->ab", A, B) * scale[name]
        total = term if total is None else total + term
    ntk = (total / k).cpu().numpy()
    return TorchNTK(ntk, parametrization, int(k), tuple(notes))


# torch_mup imports this module, so its functions are re-exported on first use (PEP 562).
_MUP = ("mup_", "check_parametrization", "coord_check")
# the same for torch_graph (any traced model read into the network algebra)
_GRAPH = ("to_network", "compare_model", "to_channels_last", "Layout", "ModelComparison")


def __getattr__(name: str) -> Any:
    if name in _MUP:
        from . import torch_mup

        return getattr(torch_mup, name)
    if name in _GRAPH:
        from . import torch_graph

        return getattr(torch_graph, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    *_MUP,
    *_GRAPH,
    "init_",
    "trace_structure",
    "Structure",
    "Variances",
    "InitRecord",
    "measure",
    "compare",
    "Profile",
    "Comparison",
    "plot_profile",
    "empirical_ntk",
    "TorchNTK",
    "wrap_activation",
    "realised_variances",
    "fan_in",
    "ARCHES",
    "LAYER_TYPES",
]
