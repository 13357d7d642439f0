"""Applying the advice in place: :func:`init_`, :class:`Variances`, :class:`InitRecord`
(docs/torch.md, "What init_ reads and sets")."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn as nn

from .. import maps
from ..activations import get_activation
from ..errors import DomainError
from .trace import MARK, Structure, _structure, wrap_activation

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
    from ..spectra import _check_weights
    from .advice import ModelAdvice, init_model_

    if isinstance(advice, ModelAdvice):
        extra = [k for k, v in (("activation", activation), ("depth", depth), ("arch", arch),
                                ("sigma_w2", sigma_w2), ("sigma_b2", sigma_b2),
                                ("sigma_v2", sigma_v2), ("sigma_a2", sigma_a2),
                                ("structure", structure)) if v is not None]
        extra += sorted(advise_options) + (["weights"] if weights != "gaussian" else [])
        if extra:
            raise DomainError(f"a ModelAdvice from advise_model carries every layer's variances; "
                              f"{', '.join(extra)} cannot be given with it")
        return init_model_(model, advice, generator=generator, seed=seed, force=force)
    weights = _check_weights(weights)
    prev = getattr(model, MARK, None)
    if prev is not None and not force:
        sw = f"sigma_w2={prev.variances.sigma_w2:g}, " if prev.variances is not None else ""
        raise DomainError(
            f"{type(model).__name__} was already initialised by meanfield.torch.init_ ({sw}"
            f"seed={prev.seed}); a second application would redraw "
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
        from ..advise import advise

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
