"""Any PyTorch model read into the network algebra (issue 12 section 1; docs/torch.md, "Any
model: to_network").

:func:`to_network` traces a model with ``torch.fx`` and writes it as a
:class:`meanfield.network.Network`, with the variances READ from the weights as they are now
(sigma_w2 = fan_in mean(W^2), sigma_b2 = mean(b^2); docs/theory.md §A1.1 and 4.1-4.4), so that
``net.propagate(layout.to_channels_last(x))`` is the infinite-width description of ``model(x)``
as initialised.  :func:`compare_model` measures the model's per-layer q beside that prediction.

What is read: Linear, Conv1d/2d/3d (dilation 1, groups 1, zero or circular padding whose
geometry the algebra has), the registry's activations (modules, functionals, tensor methods),
BatchNorm1d/2d/3d (train-mode batch statistics, affine identity), LayerNorm over the channels
(affine identity), Dropout (the identity: eval mode), AvgPool, AdaptiveAvgPool to 1 (or to an
exact divisor), a mean over all positions, Flatten / flattening reshapes, and additions of two
values (the algebra's residual, split into branch and shortcut at the last layer they share),
nn.MultiheadAttention (self-attention, batch_first, no biases or masks; its logits
q.k/sqrt(d_head) as the algebra's Gaussian-logit attention), and nn.TransformerEncoderLayer /
TransformerEncoder traced through their own submodules.
Everything else is refused in one line naming the module path and the reason; nothing is
skipped silently.
"""

from __future__ import annotations

import math
import operator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .. import network as nw
from ..errors import DomainError
from ..network.attention import SQRT_SAMPLES as _SQRT_SAMPLES
from ..network.core import Layer, Network, Shape
from ..network.layers import geometry
from .trace import _DROPOUT, _METHOD_SPECS, _NEUTRAL_METHODS, _function_spec, _module_spec

# ------------------------------------------------------------------------------------------
# layouts
# ------------------------------------------------------------------------------------------


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, float)


def to_channels_last(x: Any) -> np.ndarray:
    """A torch channels-first batch (N, C, *positions) as the algebra's channels-last float64
    array (N, *positions, C); (N, d) is returned unchanged (docs/architecture.md, Specs)."""
    a = _numpy(x)
    return np.moveaxis(a, 1, -1) if a.ndim >= 3 else a


@dataclass(frozen=True)
class Layout:
    """How the network returned by :func:`to_network` lines up with the model.

    ``channels_first``: the model reads its input with channels on axis 1 (torch convs), so
    the network takes ``to_channels_last(x)``; ``permutation``: the axes of x in the order the
    network takes them.  ``modules[l]`` is the traced module or function whose output is layer
    l of ``net.flat()``; ``notes`` say what was read as something else (dropout as identity,
    eps of a normalisation dropped, ...)."""

    input_shape: tuple[int, ...]
    channels_first: bool
    permutation: tuple[int, ...]
    modules: tuple[str, ...]
    notes: tuple[str, ...] = ()

    def to_channels_last(self, x: Any) -> np.ndarray:
        """x in the network's layout (the recorded permutation), float64 numpy."""
        a = _numpy(x)
        if a.ndim != len(self.permutation):
            raise DomainError(f"x has shape {tuple(a.shape)}; the model was read for inputs shaped "
                              f"like {self.input_shape}")
        return np.transpose(a, self.permutation)

    def to_dict(self) -> dict:
        return {"input_shape": list(self.input_shape), "channels_first": self.channels_first,
                "permutation": list(self.permutation), "modules": list(self.modules),
                "notes": list(self.notes)}


# ------------------------------------------------------------------------------------------
# the traced values
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Entry:
    """One algebra layer and the traced nodes it reads (a residual: those of both paths)."""

    layer: Layer
    node: fx.Node
    covers: frozenset
    shape: Shape          # the algebra's static shape of this layer's output


@dataclass
class _Val:
    """The algebra's description of one traced tensor: the layers from the input to it, its
    static Shape, its torch shape and whether torch holds its channels on axis 1."""

    seq: tuple[_Entry, ...]
    shape: Shape
    tshape: tuple[int, ...]
    cf: bool

    @property
    def spatial(self) -> tuple[int, ...]:
        if len(self.tshape) <= 2:
            return ()
        return self.tshape[2:] if self.cf else self.tshape[1:-1]

    @property
    def channel_axis(self) -> int:
        return 1 if (self.cf or len(self.tshape) <= 2) else len(self.tshape) - 1


_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_AVG = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_ADAPTIVE = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_MAX = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
        nn.AdaptiveMaxPool3d, nn.LPPool1d, nn.LPPool2d)
_ADD = {operator.add, operator.iadd, torch.add}
_RESHAPE_METHODS = {"view", "reshape", "flatten"}
_MEAN = {torch.mean}
_SHAPE_FUNCS = {getattr}
_ZERO_MEAN_Z = 5.0   # a weight whose mean is this many standard errors from 0 is refused


def _where(g: fx.GraphModule, n: fx.Node) -> str:
    """The module path of a traced node, as a user finds it in ``model.named_modules()``."""
    if n.op == "call_module":
        return f"{n.target} ({type(g.get_submodule(n.target)).__name__})"
    stack = n.meta.get("nn_module_stack") or {}
    owner = next(reversed(stack.values()))[0] if stack else ""
    name = getattr(n.target, "__name__", str(n.target))
    what = f".{name}()" if n.op == "call_method" else f"{name}()"
    return f"{owner}: {what}" if owner else what


def _moments(t: torch.Tensor) -> tuple[float, float, int]:
    a = t.detach().to("cpu", torch.float64)
    return float(a.pow(2).mean()), float(a.mean()), a.numel()


def _read_tensor(t: torch.Tensor, name: str, scale: int, where: str) -> float:
    """scale * mean(t^2), refusing a tensor whose mean is far from 0 (see _read_variances)."""
    ms, mean, k = _moments(t)
    if not math.isfinite(ms):
        raise DomainError(f"{where}: its {name} holds NaN or inf")
    # under mean 0 the sample mean has standard error rms / sqrt(k); a constant tensor
    # (nn.init.constant_) is refused however few its entries
    const = k > 1 and ms > 0 and bool((t.detach() == t.detach().reshape(-1)[0]).all())
    if const or abs(mean) > _ZERO_MEAN_Z * math.sqrt(ms / k):
        raise DomainError(f"{where}: its {name} has mean {mean:.4g} (rms {math.sqrt(ms):.4g}); the "
                          "algebra's weights and biases have mean 0, so a shifted init is not "
                          "described")
    return ms * scale


def _read_variances(mod: nn.Module, fan_in: int, where: str) -> tuple[float, float | None]:
    """(sigma_w2, sigma_b2) as the weights now are: fan_in mean(W^2) and mean(b^2) (docs/theory.md
    §A1.1); None for a missing bias.  The algebra's weights have mean 0, so a tensor whose mean
    is far from 0 (a constant bias 0.1, say) is refused, not described wrongly."""
    out: list[float | None] = []
    for name, scale in (("weight", fan_in), ("bias", 1)):
        t = getattr(mod, name, None)
        out.append(None if t is None else _read_tensor(t, name, scale, where))
    return out[0], out[1]


def _attention_layer(m: nn.MultiheadAttention, where: str) -> Layer:
    """nn.MultiheadAttention (self-attention) as the algebra's attention layer, or a one-line
    refusal.  torch computes per head softmax(q k' / sqrt(d_head)) v with q = x W_q, k = x W_k,
    v = x W_v (in_proj_weight split in three) and then out_proj, which is the algebra's
    attention with scaling 'sqrt' (docs/theory.md, "Attention with Gaussian logits") with
    sigma_{q,k,v}2 = E mean(W_{q,k,v}^2) and sigma_o2 = E mean(W_o^2) at fan-in E = embed_dim:
    at wide heads the logits are Gaussian with covariance sigma_q2 sigma_k2 K K, and the maps
    are expectations over them.  With W_q or W_k zero the logits are 0 at every width and the
    same layer is the uniform attention exactly."""
    if not m.batch_first:
        raise DomainError(f"{where}: batch_first=False takes (T, N, E) inputs; only batch_first=True "
                          "((N, T, E), positions before channels) is read")
    if not m._qkv_same_embed_dim or m.bias_k is not None or m.add_zero_attn:
        raise DomainError(f"{where}: kdim/vdim other than embed_dim, add_bias_kv or add_zero_attn "
                          "are refused (the algebra's attention has one input and no extra keys)")
    for name, b in (("in_proj_bias", m.in_proj_bias), ("out_proj.bias", m.out_proj.bias)):
        if b is not None and not bool((b.detach() == 0).all()):
            raise DomainError(f"{where}: its {name} is not 0; the algebra's attention has no "
                              "biases (use bias=False, or torch's init, which zeroes them)")
    E, H = m.embed_dim, m.num_heads
    Wq, Wk, Wv = m.in_proj_weight.detach().chunk(3)
    s = [_read_tensor(w, f"in_proj_weight[{nm}]", E, where) for w, nm in
         ((Wq, "query"), (Wk, "key"), (Wv, "value"))]
    so = _read_tensor(m.out_proj.weight, "out_proj.weight", E, where)
    return nw.attention(heads=H, mechanism="softmax", scaling="sqrt", sigma_q2=s[0],
                        sigma_k2=s[1], sigma_v2=s[2], sigma_o2=so)


def _affine_identity(mod: nn.Module, where: str, kind: str) -> None:
    w, b = getattr(mod, "weight", None), getattr(mod, "bias", None)
    if w is not None and not bool((w.detach() == 1).all()):
        raise DomainError(f"{where}: its affine weight is not 1 everywhere; the algebra's {kind} has "
                          "no affine parameters (they are the identity at torch's init)")
    if b is not None and not bool((b.detach() == 0).all()):
        raise DomainError(f"{where}: its affine bias is not 0 everywhere; the algebra's {kind} has "
                          "no affine parameters (they are the identity at torch's init)")


def _torch_padding(where: str, spatial: tuple[int, ...], k: tuple[int, ...], s: tuple[int, ...],
                   p: tuple[int, ...], mode: str = "zeros") -> str:
    """The algebra's padding whose windows are torch's (p on both ends of each dimension,
    stride s), or a refusal: 'same' pads the extra position at the end (TF convention), so it
    agrees with torch only where its padding before is p and the output counts agree."""
    outs = [(n + 2 * pp - kk) // ss + 1
            for n, kk, ss, pp in zip(spatial, k, s, p)]
    cands = ("valid", "circular" if mode == "circular" else "same")
    for pad in cands:
        if pad == "valid" and any(p):
            continue
        if all(geometry(n, kk, ss, pad)[0] == pp and geometry(n, kk, ss, pad)[2] == o
               for n, kk, ss, pp, o in zip(spatial, k, s, p, outs)):
            return pad
    g = [geometry(n, kk, ss, "same")[:2] for n, kk, ss in zip(spatial, k, s)]
    raise DomainError(f"{where}: torch pads {list(p)} at both ends (window {list(k)}, stride "
                      f"{list(s)}, positions {list(spatial)}); the algebra's 'same' pads "
                      f"{[a for a, _ in g]} before and {[b for _, b in g]} after (TF convention) "
                      "and 'valid' none, so this geometry is not expressible")


def _ints(v: Any, d: int) -> tuple[int, ...]:
    return tuple(int(a) for a in v) if isinstance(v, (tuple, list)) else (int(v),) * d


# ------------------------------------------------------------------------------------------
# the reader
# ------------------------------------------------------------------------------------------


@contextmanager
def _describe_mode(model: nn.Module) -> Iterator[None]:
    """The mode the network describes: dropout off (eval), BatchNorm on batch statistics
    (train); every module's flag and the BatchNorm running buffers are put back afterwards."""
    flags = {m: m.training for m in model.modules()}
    saved = {}
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            saved[m] = {k: v.detach().clone() for k, v in m.named_buffers(recurse=False) if v is not None}
            m.train()
        elif isinstance(m, _DROPOUT + (nn.MultiheadAttention,)):
            m.eval()    # nn.MultiheadAttention: its attention-weight dropout off
    try:
        yield
    finally:
        for m, f in flags.items():
            m.training = f
        with torch.no_grad():
            for m, bufs in saved.items():
                for k, v in bufs.items():
                    getattr(m, k).copy_(v)


def _encoder_forward(m: nn.TransformerEncoderLayer, where: str, src: Any, src_mask: Any = None,
                     src_key_padding_mask: Any = None, is_causal: bool = False) -> Any:
    """torch's TransformerEncoderLayer.forward (its non-fused path, the same arithmetic as its
    fast path) written with the module's own submodules, so that fx records each of them."""
    if src_mask is not None or src_key_padding_mask is not None or is_causal:
        raise DomainError(f"{where}: a mask (src_mask, src_key_padding_mask or is_causal) is refused; "
                          "the algebra's attention here has none")

    def sa(x):
        return m.dropout1(m.self_attn(x, x, x, need_weights=False)[0])

    def ff(x):
        return m.dropout2(m.linear2(m.dropout(m.activation(m.linear1(x)))))

    x = src
    if m.norm_first:
        x = x + sa(m.norm1(x))
        return x + ff(m.norm2(x))
    x = m.norm1(x + sa(x))
    return m.norm2(x + ff(x))


def _stack_forward(m: nn.TransformerEncoder, where: str, src: Any, mask: Any = None,
                   src_key_padding_mask: Any = None, is_causal: Any = None) -> Any:
    """torch's TransformerEncoder.forward without its nested-tensor fast path: the layers in
    turn, then the optional final norm."""
    if mask is not None or src_key_padding_mask is not None or is_causal:
        raise DomainError(f"{where}: a mask (mask, src_key_padding_mask or is_causal) is refused; "
                          "the algebra's attention here has none")
    x = src
    for layer in m.layers:
        x = layer(x)
    return x if m.norm is None else m.norm(x)


def _identical_layers(m: nn.TransformerEncoder) -> tuple[int, int] | None:
    """Two layers of the stack whose parameters are all equal (torch builds the stack from
    deep copies of one layer, so at construction every layer holds the same weights)."""
    params = [[p.detach() for p in layer.parameters()] for layer in m.layers]
    for i in range(len(params)):
        for j in range(i + 1, len(params)):
            if all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(params[i], params[j])):
                return i, j
    return None


class _Tracer(fx.Tracer):
    """fx's tracer, except that a TransformerEncoderLayer or TransformerEncoder (leaves for fx,
    whose forwards branch on their inputs to choose torch's fused paths) is traced through
    _encoder_forward / _stack_forward."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, (nn.TransformerEncoderLayer, nn.TransformerEncoder)):
            return False
        return super().is_leaf_module(m, qualname)

    def call_module(self, m: nn.Module, forward: Any, args: tuple, kwargs: dict) -> Any:
        if isinstance(m, nn.TransformerEncoder):
            where = f"{self.path_of_module(m)} (TransformerEncoder)"
            same = _identical_layers(m)
            if same is not None:
                raise DomainError(
                    f"{where}: layers {same[0]} and {same[1]} hold identical weights (torch's "
                    "TransformerEncoder deep-copies one layer); the algebra draws every layer's "
                    "weights independently, so re-draw each layer's weights first")

            def forward(*a, **k):
                return _stack_forward(m, where, *a, **k)
        elif isinstance(m, nn.TransformerEncoderLayer):
            where = f"{self.path_of_module(m)} (TransformerEncoderLayer)"
            if not m.self_attn.batch_first:
                raise DomainError(f"{where}: batch_first=False takes (T, N, E) inputs; only "
                                  "batch_first=True is read")

            def forward(*a, **k):
                return _encoder_forward(m, where, *a, **k)
        return super().call_module(m, forward, args, kwargs)


_GROUPS = 16  # channel groups whose Gram matrices give the correlation's standard error


class _Run(fx.Interpreter):
    """Runs the traced model and keeps every tensor's shape and, for the nodes in ``axes``,
    summary statistics only (the values are freed as the interpreter goes): each channel's mean
    square, the batch's Gram matrix (mean over units and positions) in up to 16 channel groups
    and, when ``grads`` is set, each channel's mean squared gradient from a tensor hook.  The
    memory kept per layer is C + 16 N^2 + C numbers, whatever the positions."""

    def __init__(self, gm: fx.GraphModule, axes: dict[fx.Node, int], grads: bool = False):
        super().__init__(gm)
        self.axes = axes
        self.grads = grads
        self.ms: dict[fx.Node, np.ndarray] = {}
        self.grams: dict[fx.Node, tuple[np.ndarray, np.ndarray]] = {}
        self.gms: dict[fx.Node, np.ndarray] = {}
        self.shapes: dict[fx.Node, tuple[int, ...]] = {}

    def shapes_of(self, x: torch.Tensor) -> dict[fx.Node, tuple[int, ...]]:
        self.run(x)
        return self.shapes

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        if isinstance(out, torch.Tensor):
            self.shapes[n] = tuple(int(s) for s in out.shape)
        if n in self.axes:
            ax = self.axes[n]
            t = out.detach().to(torch.float64).movedim(ax, -1)
            t = t.reshape(t.shape[0], -1, t.shape[-1])           # (N, positions, C)
            self.ms[n] = t.pow(2).mean(dim=(0, 1)).cpu().numpy()
            G = min(_GROUPS, t.shape[-1])
            grams = [torch.einsum("npc,mpc->nm", t[..., g::G], t[..., g::G]) for g in range(G)]
            sizes = [t[..., g::G].shape[-1] for g in range(G)]
            self.grams[n] = (torch.stack(grams).cpu().numpy(), np.array(sizes, float))
            if self.grads and out.requires_grad:
                out.register_hook(self._grad_hook(n, ax))
        return out

    def _grad_hook(self, n: fx.Node, ax: int):
        def hook(g: torch.Tensor) -> None:
            t = g.detach().to(torch.float64)
            red = tuple(i for i in range(t.ndim) if i != ax)
            self.gms[n] = t.pow(2).mean(dim=red).cpu().numpy()
        return hook


class _Reader:
    def __init__(self, model: nn.Module, example_input: Any):
        if not isinstance(model, nn.Module):
            raise DomainError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        emb = next((f"{k} (Embedding)" for k, m in model.named_modules() if isinstance(m, nn.Embedding)),
                   None)
        if emb is not None:
            # the algebra's inputs are real arrays; on one-hot ids an Embedding is exactly a
            # bias-free dense layer with sigma_w2 = V mean(W^2), which the user can write
            raise DomainError(f"{emb}: an Embedding takes integer token ids and the algebra's "
                              "inputs are real arrays; feed one_hot(ids).float() to an "
                              "nn.Linear(V, d, bias=False) holding weight.T instead (the same "
                              "map, docs/torch.md)")
        if not isinstance(example_input, torch.Tensor) or not example_input.is_floating_point():
            raise DomainError("example_input: expected a floating-point torch.Tensor (a batch), got "
                              f"{type(example_input).__name__}")
        if example_input.ndim < 2:
            raise DomainError(f"example_input: expected a batch (N, ...), got shape {tuple(example_input.shape)}")
        try:
            tracer = _Tracer()
            graph = tracer.trace(model)
            self.gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
        except DomainError:
            raise
        except Exception as exc:  # noqa: BLE001 - any tracing failure is reported the same way
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DomainError(f"torch.fx could not trace {type(model).__name__} ({type(exc).__name__}: "
                              f"{first}); to_network reads only models fx can trace (no "
                              "data-dependent control flow)") from None
        n_in = sum(n.op == "placeholder" for n in self.gm.graph.nodes)
        if n_in != 1:
            raise DomainError(f"the model's forward takes {n_in} inputs; to_network reads models of "
                              "one input tensor")
        try:
            with _describe_mode(model), torch.no_grad():
                self.shapes = _Run(self.gm, {}).shapes_of(example_input)
        except Exception as exc:  # noqa: BLE001 - the model itself rejects the input
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DomainError(f"example_input of shape {tuple(example_input.shape)}: the model fails "
                              f"on it ({type(exc).__name__}: {first})") from None
        self.notes: list[str] = []
        self.vals: dict[fx.Node, _Val] = {}
        self.called: dict[str, str] = {}
        self.paths: dict[int, str] = {}   # id(algebra layer) -> the module path it was read from
        # an nn.MultiheadAttention node (it returns a tuple) -> its input, layer and path, pushed
        # at the node that takes output 0
        self.pending: dict[fx.Node, tuple[_Val, Layer, str]] = {}
        self.labels: dict[fx.Node, str] = {}

    # -- helpers --
    def _tshape(self, n: fx.Node) -> tuple[int, ...]:
        if n not in self.shapes:
            raise DomainError(f"{_where(self.gm, n)}: its output is not one tensor")
        return self.shapes[n]

    def _push(self, n: fx.Node, v: _Val, layer: Layer, where: str, cf: bool | None = None) -> _Val:
        try:
            shape = layer.out_shape(v.shape, where)
        except DomainError as err:
            if not v.seq:
                raise
            prev = v.seq[-1]
            raise DomainError(f"{err}; its input is the output of {_where(self.gm, prev.node)} "
                              f"({prev.layer.name})") from None
        e = _Entry(layer, n, frozenset({n}), shape)
        if n.op == "call_module":
            self.paths[id(layer)] = str(n.target)
        return _Val(v.seq + (e,), shape, self._tshape(n), v.cf if cf is None else cf)

    def _same(self, n: fx.Node, v: _Val) -> _Val:
        return _Val(v.seq, v.shape, self._tshape(n), v.cf)

    def _data_arg(self, n: fx.Node) -> _Val:
        for a in n.args:
            if isinstance(a, fx.Node):
                if a not in self.vals:
                    raise DomainError(f"{_where(self.gm, n)}: reads {a.name}, which is not a tensor "
                                      "to_network follows")
                return self.vals[a]
        raise DomainError(f"{_where(self.gm, n)}: has no tensor input")

    def _input_cf(self, n: fx.Node) -> bool:
        """Channels on axis 1 unless the input goes straight into a Linear or LayerNorm."""
        if len(self._tshape(n)) <= 2:
            return True
        for u in n.users:
            if u.op == "call_module" and isinstance(self.gm.get_submodule(u.target), (
                    nn.Linear, nn.LayerNorm, nn.MultiheadAttention)):
                return False
        return True

    # -- the walk --
    def read(self) -> tuple[Network, Layout]:
        out_val = None
        for n in self.gm.graph.nodes:
            if n.op == "placeholder":
                ts = self._tshape(n)
                cf = self._input_cf(n)
                spatial = ts[2:] if (cf and len(ts) > 2) else ts[1:-1]
                C = ts[1] if (cf and len(ts) > 2) else ts[-1]
                self.vals[n] = _Val((), Shape(tuple(spatial), int(C)), ts, cf)
                self.inp = n
            elif n.op == "get_attr":
                continue
            elif n.op == "output":
                a = n.args[0]
                if not isinstance(a, fx.Node) or a not in self.vals:
                    raise DomainError("the model's output is not one tensor computed from its input "
                                      "(a tuple or dict of outputs is not read)")
                out_val, out_node = self.vals[a], a
            elif self._is_meta(n):
                continue
            else:
                self.vals[n] = self._node(n)
        assert out_val is not None
        live = {out_node}
        for n in reversed(list(self.gm.graph.nodes)):
            if n in live:
                live.update(n.all_input_nodes)
        for n in self.gm.graph.nodes:
            if n.op in ("call_module", "call_function", "call_method") and n not in live \
                    and not self._is_meta(n):
                raise DomainError(f"{_where(self.gm, n)}: its output does not reach the model's "
                                  "output, so it is not described")
        if not out_val.seq:
            raise DomainError("the model computes nothing to_network reads (no layer between input "
                              "and output)")
        net = Network([e.layer for e in out_val.seq], parametrization="standard")
        modules = tuple(self._label(e) for e in out_val.seq for _ in e.layer.flat())
        ts = self._tshape(self.inp)
        cf = self.vals[self.inp].cf and len(ts) > 2
        perm = (0, *range(2, len(ts)), 1) if cf else tuple(range(len(ts)))
        return net, Layout(ts, cf, perm, modules, tuple(dict.fromkeys(self.notes)))

    def _label(self, e: _Entry) -> str:
        return self.labels.get(e.node) or _where(self.gm, e.node)

    def _is_meta(self, n: fx.Node) -> bool:
        if n.op == "call_method" and n.target in ("size", "dim", "numel"):
            return True
        return n.op == "call_function" and n.target in _SHAPE_FUNCS

    def _node(self, n: fx.Node) -> _Val:
        where = _where(self.gm, n)
        if n.op == "call_module":
            m = self.gm.get_submodule(n.target)
            if n.target in self.called and any(True for _ in m.parameters()):
                raise DomainError(f"{where}: called twice (shared weights); the algebra draws every "
                                  "layer's weights independently")
            self.called[n.target] = where
            return self._module(n, m, where)
        if n.op == "call_function" and n.target in _ADD:
            return self._add(n, where)
        if n.op == "call_function" and n.target is operator.getitem and n.args[0] in self.pending:
            v, layer, path = self.pending[n.args[0]]
            if n.args[1] != 0:
                raise DomainError(f"{self.labels[n.args[0]]}: its output {n.args[1]!r} (the attention "
                                  "weights) is not read; only output 0 is")
            self.labels[n] = self.labels[n.args[0]]
            self.paths[id(layer)] = path
            return self._push(n, v, layer, self.labels[n])
        if n.op == "call_function":
            spec = _function_spec(n)
            if spec is not None:
                return self._push(n, self._data_arg(n), nw.activation(spec), where)
            return self._function(n, where)
        if n.op == "call_method":
            spec = _METHOD_SPECS.get(n.target)
            if spec is not None:
                return self._push(n, self._data_arg(n), nw.activation(spec), where)
            return self._method(n, where)
        raise DomainError(f"{where}: not read ({n.op})")

    def _module(self, n: fx.Node, m: nn.Module, where: str) -> _Val:
        v = self._data_arg(n)
        if isinstance(m, nn.Linear):
            if len(v.tshape) > 2 and v.cf:
                raise DomainError(f"{where}: a Linear on the last axis of a channels-first tensor "
                                  f"{v.tshape} mixes positions, not channels; not expressible")
            sw, sb = _read_variances(m, m.in_features, where)
            return self._push(n, v, nw.dense(sw, sb), where)
        if isinstance(m, _CONVS):
            return self._conv(n, m, v, where)
        if isinstance(m, nn.MultiheadAttention):
            return self._mha(n, m, v, where)
        if isinstance(m, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            raise DomainError(f"{where}: transposed convolutions are not in the algebra")
        spec = _module_spec(m)
        if spec is not None:
            return self._push(n, v, nw.activation(spec), where)
        if isinstance(m, _DROPOUT):
            self.notes.append(f"{where}: read as the identity (eval mode; compare_model runs it so)")
            return self._same(n, v)
        if isinstance(m, nn.Identity):
            return self._same(n, v)
        if isinstance(m, nn.Flatten):
            if (m.start_dim, m.end_dim) != (1, -1):
                raise DomainError(f"{where}: flattens dims {m.start_dim}..{m.end_dim}; only "
                                  "Flatten(1, -1) (all but the batch) is read")
            return self._flatten(n, v, where)
        if isinstance(m, _NORMS):
            if not v.cf and len(v.tshape) > 2:
                raise DomainError(f"{where}: BatchNorm on a channels-last tensor normalises "
                                  "positions, not channels; not expressible")
            _affine_identity(m, where, "batch_norm")
            self.notes.append(f"{where}: train-mode batch statistics over the batch and positions "
                              f"(the algebra's batch_norm), eps={m.eps:g} dropped")
            return self._push(n, v, nw.batch_norm(), where)
        if isinstance(m, nn.LayerNorm):
            ns = tuple(m.normalized_shape)
            C = v.tshape[-1]
            if ns != (C,) or (v.cf and len(v.tshape) > 2):
                raise DomainError(f"{where}: normalises over {list(ns)} of a tensor {v.tshape}; only "
                                  "a LayerNorm over the channels (the last axis, channels last) is read")
            _affine_identity(m, where, "layer_norm")
            self.notes.append(f"{where}: eps={m.eps:g} dropped (the algebra's layer_norm has eps 0)")
            return self._push(n, v, nw.layer_norm(), where)
        if isinstance(m, _AVG):
            return self._avg_pool(n, m, v, where)
        if isinstance(m, _ADAPTIVE):
            return self._adaptive(n, _ints(m.output_size, len(v.spatial)), v, where)
        if isinstance(m, _MAX):
            raise DomainError(f"{where}: max pooling is refused: the max over a window of "
                              "correlated Gaussians has no closed kernel map in the algebra, and "
                              "its output is not Gaussian (use AvgPool)")
        raise DomainError(f"{where}: not read by to_network (no map for this module in the "
                          "network algebra)")

    def _mha(self, n: fx.Node, m: nn.MultiheadAttention, v: _Val, where: str) -> _Val:
        args = list(n.args[:3]) + [n.kwargs.get(k) for k in ("query", "key", "value")[len(n.args):]]
        if len(args) != 3 or not all(a is args[0] for a in args):
            raise DomainError(f"{where}: query, key and value are not one tensor; only "
                              "self-attention m(x, x, x) is read")
        rest = dict(zip(("key_padding_mask", "need_weights", "attn_mask", "average_attn_weights",
                         "is_causal"), n.args[3:]), **n.kwargs)
        for k in ("key_padding_mask", "attn_mask"):
            if rest.get(k) is not None:
                raise DomainError(f"{where}: {k} is refused; the algebra's attention here has no mask")
        if rest.get("is_causal", False):
            raise DomainError(f"{where}: is_causal=True is refused (read masks are not supported)")
        if len(v.tshape) != 3 or (v.cf and v.seq):
            raise DomainError(f"{where}: its input has shape {v.tshape}"
                              f"{' with channels on axis 1' if v.cf and v.seq else ''}; only (N, T, E) "
                              "(positions before channels) is read")
        layer = _attention_layer(m, where)
        if m.dropout > 0:
            self.notes.append(f"{where}: attention dropout {m.dropout:g} read as off (eval mode; "
                              "compare_model runs it so)")
        if layer.sigma_q2 * layer.sigma_k2 == 0:
            self.notes.append(f"{where}: W_q or W_k is zero, so the logits are 0 and the attention "
                              "uniform at every width (exact)")
        else:
            self.notes.append(
                f"{where}: logits q.k/sqrt(d_head={m.embed_dim // m.num_heads}) read as Gaussian "
                f"(variance sigma_q2 sigma_k2 K K, exact as d_head grows); the maps are means over "
                f"{_SQRT_SAMPLES} fixed logit samples (their relative "
                f"standard error is the layer's mc_error, 3e-4 to 3e-3 at torch's init); with "
                f"{m.num_heads} heads "
                "the output is a mixture of Gaussians whose second moments these are")
        self.pending[n] = (v, layer, str(n.target))
        self.labels[n] = where
        return v

    def _conv(self, n: fx.Node, m: nn.Module, v: _Val, where: str) -> _Val:
        if not v.cf:
            raise DomainError(f"{where}: a conv on a channels-last tensor {v.tshape}; not expressible")
        d = len(m.kernel_size)
        if tuple(m.dilation) != (1,) * d:
            raise DomainError(f"{where}: dilation {tuple(m.dilation)} is refused (the algebra's "
                              "conv has dilation 1)")
        if m.groups != 1:
            raise DomainError(f"{where}: groups={m.groups} is refused (the algebra's conv connects "
                              "every input channel to every output channel, groups=1)")
        if m.padding_mode not in ("zeros", "circular"):
            raise DomainError(f"{where}: padding_mode {m.padding_mode!r} is refused (zeros or "
                              "circular only)")
        k, s = tuple(m.kernel_size), tuple(m.stride)
        if isinstance(m.padding, str):
            p = tuple((kk - 1) // 2 for kk in k) if m.padding == "same" else (0,) * d
            if m.padding == "same" and any(kk % 2 == 0 for kk in k):
                raise DomainError(f"{where}: padding='same' with an even kernel {k} pads unevenly "
                                  "in torch (more after); not read")
        else:
            p = tuple(m.padding)
        pad = _torch_padding(where, v.spatial, k, s, p, m.padding_mode)
        sw, sb = _read_variances(m, m.in_channels * int(np.prod(k)), where)
        return self._push(n, v, nw.conv(list(k), list(s), pad, sw, sb), where)

    def _avg_pool(self, n: fx.Node, m: nn.Module, v: _Val, where: str) -> _Val:
        d = len(v.spatial)
        k, s = _ints(m.kernel_size, d), _ints(m.stride if m.stride is not None else m.kernel_size, d)
        p = _ints(m.padding, d)
        if getattr(m, "divisor_override", None) is not None:
            raise DomainError(f"{where}: divisor_override is refused (the algebra divides by the window)")
        if any(p) and not m.count_include_pad:
            raise DomainError(f"{where}: count_include_pad=False is refused (the algebra counts "
                              "padded zeros in the divisor)")
        if m.ceil_mode and any((a + 2 * pp - kk) % ss for a, kk, ss, pp in zip(v.spatial, k, s, p)):
            # torch's extra ceil-mode window is averaged over its clipped part only
            raise DomainError(f"{where}: ceil_mode=True adds a partial window here; the algebra's "
                              "pooling has none")
        pad = _torch_padding(where, v.spatial, k, s, p, "zeros")
        return self._push(n, v, nw.avg_pool(list(k), list(s), pad), where)

    def _adaptive(self, n: fx.Node, out: tuple, v: _Val, where: str) -> _Val:
        if not v.cf or not v.spatial:
            raise DomainError(f"{where}: adaptive pooling needs a channels-first tensor with positions")
        out = tuple(a if o is None else int(o) for o, a in zip(out, v.spatial))
        if all(o == 1 for o in out):
            return self._push(n, v, nw.global_avg_pool(), where)
        if any(a % o for a, o in zip(v.spatial, out)):
            raise DomainError(f"{where}: adaptive output {out} does not divide the input's positions "
                              f"{v.spatial}; its windows overlap unevenly, not expressible")
        w = [a // o for a, o in zip(v.spatial, out)]
        return self._push(n, v, nw.avg_pool(w, w, "valid"), where)

    def _flatten(self, n: fx.Node, v: _Val, where: str) -> _Val:
        if len(v.tshape) <= 2:
            return self._same(n, v)
        # the order of the flattened units does not enter the kernel, so either layout flattens
        return self._push(n, v, nw.flatten(), where, cf=True)

    def _reshape(self, n: fx.Node, v: _Val, where: str) -> _Val:
        out = self._tshape(n)
        if out == v.tshape:
            return self._same(n, v)
        if len(out) == 2 and out[0] == v.tshape[0]:
            return self._flatten(n, v, where)
        if len(v.tshape) == 4 and out == v.tshape[:2] and v.tshape[2:] == (1, 1):
            return self._flatten(n, v, where)
        raise DomainError(f"{where}: reshapes {v.tshape} to {out}; only flattening to (N, -1) is read")

    def _function(self, n: fx.Node, where: str) -> _Val:
        t = n.target
        if t in (torch.flatten,):
            start = n.args[1] if len(n.args) > 1 else n.kwargs.get("start_dim", 0)
            end = n.args[2] if len(n.args) > 2 else n.kwargs.get("end_dim", -1)
            v = self._data_arg(n)
            if (start, end) != (1, -1) and not (len(v.tshape) <= 2 and start in (0, 1)):
                raise DomainError(f"{where}: flattens dims {start}..{end}; only flatten(x, 1) is read")
            return self._flatten(n, v, where)
        if t in (torch.reshape,):
            return self._reshape(n, self._data_arg(n), where)
        if t in (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout):
            training = n.kwargs.get("training", n.args[2] if len(n.args) > 2 else True)
            if training is not False:
                raise DomainError(f"{where}: functional dropout with training={training!r} is "
                                  "active in every mode; use nn.Dropout (read as the identity)")
            return self._same(n, self._data_arg(n))
        if t is F.adaptive_avg_pool2d or t is F.adaptive_avg_pool1d:
            v = self._data_arg(n)
            size = n.args[1] if len(n.args) > 1 else n.kwargs["output_size"]
            return self._adaptive(n, _ints(size, len(v.spatial)), v, where)
        if t in _MEAN:
            return self._mean(n, where)
        if t in (F.max_pool1d, F.max_pool2d, F.max_pool3d, F.adaptive_max_pool2d):
            raise DomainError(f"{where}: max pooling is refused: the max over a window of "
                              "correlated Gaussians has no closed kernel map in the algebra")
        if t in (F.linear, F.conv1d, F.conv2d, F.conv3d):
            raise DomainError(f"{where}: a functional layer whose weights are not a module's; "
                              "use nn.Linear / nn.ConvNd so that its variances can be read")
        raise DomainError(f"{where}: not read by to_network (an unknown function is not guessed: "
                          "an elementwise one not in the registry, a product, a concatenation, ...)")

    def _method(self, n: fx.Node, where: str) -> _Val:
        v = self._data_arg(n)
        if n.target in ("contiguous", "clone", "float", "double", "to", "type_as", "detach"):
            return self._same(n, v)
        if n.target in _RESHAPE_METHODS:
            if n.target == "flatten":
                start = n.args[1] if len(n.args) > 1 else n.kwargs.get("start_dim", 0)
                if start not in (1,) and len(v.tshape) > 2:
                    raise DomainError(f"{where}: flattens from dim {start}; only .flatten(1) is read")
            return self._reshape(n, v, where)
        if n.target == "mean":
            return self._mean(n, where)
        if n.target in _NEUTRAL_METHODS:
            return self._reshape(n, v, where)
        raise DomainError(f"{where}: not read by to_network (an unknown method is not guessed)")

    def _mean(self, n: fx.Node, where: str) -> _Val:
        v = self._data_arg(n)
        dims = n.kwargs.get("dim", n.args[1] if len(n.args) > 1 else None)
        nd = len(v.tshape)
        dims = () if dims is None else _ints(dims, 1)
        dims = tuple(sorted(d % nd for d in dims))
        pos = tuple(range(2, nd)) if v.cf else tuple(range(1, nd - 1))
        if not pos or dims != pos:
            raise DomainError(f"{where}: a mean over dims {list(dims)} of {v.tshape}; only the mean "
                              f"over all positions {list(pos)} (global average pooling) is read")
        return self._push(n, v, nw.global_avg_pool(), where)

    def _add(self, n: fx.Node, where: str) -> _Val:
        args = [a for a in n.args if isinstance(a, fx.Node)]
        if len(args) != 2 or len(n.args) != 2 or n.kwargs.get("alpha", 1) != 1:
            raise DomainError(f"{where}: an addition of a constant or a scaled term; only a + b of "
                              "two traced tensors (a residual) is read")
        for x in args:
            if x not in self.vals:
                raise DomainError(f"{where}: adds {x.name}, which is not computed from the input "
                                  "(a parameter or constant tensor); not expressible")
        a, b = (self.vals[x] for x in args)
        if a.tshape != b.tshape:
            raise DomainError(f"{where}: adds tensors of shapes {a.tshape} and {b.tshape} (broadcast)")
        k = 0
        while k < min(len(a.seq), len(b.seq)) and a.seq[k] is b.seq[k]:
            k += 1
        ra, rb = a.seq[k:], b.seq[k:]
        cov_a = frozenset().union(*(e.covers for e in ra)) if ra else frozenset()
        cov_b = frozenset().union(*(e.covers for e in rb)) if rb else frozenset()
        if cov_a & cov_b:
            shared = sorted(_where(self.gm, x) for x in cov_a & cov_b)[0]
            raise DomainError(f"{where}: both sides of the addition read {shared}; the algebra's "
                              "residual needs branch and shortcut to part at one value")
        def weighted(seq):
            return any(isinstance(l, (nw.Dense, nw.Conv, nw.Attention)) for e in seq
                       for l in e.layer.flat())
        # the branch is the side with a weight layer; with two, the longer one
        if weighted(rb) and (not weighted(ra) or len(rb) > len(ra)):
            ra, rb = rb, ra
        if not ra:
            ra, rb = rb, ra
        if not ra:
            raise DomainError(f"{where}: x + x is not a residual; not expressible")
        layer = nw.residual([e.layer for e in ra], [e.layer for e in rb] or None)
        start = a.seq[k - 1].shape if k else self.vals[self.inp].shape
        shape = layer.out_shape(start, where)
        e = _Entry(layer, n, frozenset({n}) | cov_a | cov_b, shape)
        return _Val(a.seq[:k] + (e,), shape, self._tshape(n), a.cf)


def to_network(model: nn.Module, example_input: torch.Tensor) -> tuple[Network, Layout]:
    """The network algebra's description of ``model`` as initialised now (issue 12 section 1;
    docs/theory.md §A1.1, 4.1-4.4, 5.6 for batch_norm).

    Returns ``(net, layout)``: ``net.propagate(layout.to_channels_last(x))`` predicts the
    per-layer q of ``model(x)`` at infinite width for the variances in the weights
    (sigma_w2 = fan_in mean(W^2), sigma_b2 = mean(b^2), None for no bias), with dropout off and
    BatchNorm on batch statistics.  The network is in the standard parametrisation (what torch
    trains).  A module or function that cannot be read raises DomainError naming its path."""
    return _Reader(model, example_input).read()


__all__ = ["to_network", "to_channels_last", "Layout"]
