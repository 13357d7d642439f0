"""Reading a model for :func:`meanfield.torch.init_` and :func:`meanfield.torch.measure`:
:func:`trace_structure` and :class:`Structure` (docs/torch.md, "What init_ reads and sets")."""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .._arch import LABELS as _LABELS
from ..activations import Activation, custom, get_activation
from ..errors import DomainError

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
_DROPOUT = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)
_NEUTRAL_MODULES = (nn.Flatten, nn.Unflatten, nn.Identity) + _DROPOUT
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
        if rec is not None and rec.structure is not None:
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
