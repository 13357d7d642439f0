"""JSON network specs -> Network (parsed once, at the boundary; never eval'd).

A spec is a list of layers (serial) or ``{"layers": [...], "parametrization": "ntk"}``; each
layer an object with key ``layer`` (docs/architecture.md lists them all).  Every error names the
path of the bad entry: ``layers[3].filter: expected a list of integers >= 1, got [0]``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import DomainError
from .core import PARAMETRIZATIONS, Layer, Network
from . import layers as L
from .attention import attention
from .batchnorm import batch_norm
from .rnn import rnn

#: allowed keys per layer type (besides "layer"), with the constructor to call
_KEYS: dict[str, tuple[str, ...]] = {
    "dense": ("sigma_w2", "sigma_b2"),
    "conv": ("filter", "strides", "padding", "sigma_w2", "sigma_b2"),
    "activation": ("fn",),
    "avg_pool": ("window", "strides", "padding"),
    "global_avg_pool": (),
    "flatten": (),
    "layer_norm": (),
    "identity": (),
    "residual": ("branch", "shortcut", "scale"),
    "repeat": ("n", "body"),
    "batch_norm": (),
    "attention": ("heads", "mechanism", "scaling", "sigma_q2", "sigma_k2", "sigma_v2", "sigma_o2", "causal",
                  "values", "skip"),
    "rnn": ("fn", "sigma_w2", "sigma_u2", "sigma_b2", "output", "masking"),
}
_REQUIRED = {"activation": ("fn",), "conv": ("filter",), "avg_pool": ("window",),
             "residual": ("branch",), "repeat": ("n", "body"), "rnn": ("fn",)}


def _layer(obj: Any, where: str) -> Layer:
    if not isinstance(obj, dict):
        raise DomainError(f"{where}: expected an object with key 'layer', got {json.dumps(obj)[:60]}")
    kind = obj.get("layer")
    if not isinstance(kind, str) or kind not in _KEYS:
        raise DomainError(f"{where}.layer: expected one of {', '.join(_KEYS)}, got {kind!r}")
    allowed = _KEYS[kind]
    for k in obj:
        if k != "layer" and k not in allowed:
            raise DomainError(f"{where}.{k}: unknown key for a {kind} layer (allowed: "
                              f"{', '.join(allowed) or 'none'})")
    for k in _REQUIRED.get(kind, ()):
        if k not in obj:
            raise DomainError(f"{where}.{k}: missing (a {kind} layer needs it)")
    args = {k: v for k, v in obj.items() if k != "layer"}
    try:
        if kind == "activation":
            fn = args["fn"]
            if not isinstance(fn, str):
                raise DomainError(f"fn: expected an activation name such as 'relu', got {fn!r}")
            return L.activation(fn)
        if kind == "residual":
            branch = _layers(args["branch"], f"{where}.branch")
            short = _layers(args["shortcut"], f"{where}.shortcut") if "shortcut" in args else None
            return L.residual(branch, short, args.get("scale", 1.0))
        if kind == "repeat":
            return L.repeat(_layers(args["body"], f"{where}.body"), args["n"])
        if kind in ("dense", "conv"):
            args.setdefault("sigma_w2", 1.0)
        return {"dense": L.dense, "conv": L.conv, "avg_pool": L.avg_pool,
                "global_avg_pool": L.global_avg_pool, "flatten": L.flatten,
                "layer_norm": L.layer_norm, "identity": L.identity,
                "batch_norm": batch_norm, "attention": attention, "rnn": rnn}[kind](**args)
    except DomainError as exc:
        msg = str(exc)
        if msg.startswith(where):
            raise
        raise DomainError(f"{where}.{msg}" if ":" in msg.split(" ")[0] else f"{where}: {msg}") from None


def _layers(obj: Any, where: str) -> list[Layer]:
    if not isinstance(obj, list):
        raise DomainError(f"{where}: expected a list of layers, got {type(obj).__name__}")
    return [_layer(o, f"{where}[{i}]") for i, o in enumerate(obj)]


def from_spec(spec: Any) -> Network:
    """A Network from a spec: a list of layer objects, or {"layers": [...], "parametrization":
    "ntk" | "standard"}, or a JSON string of either (docs/architecture.md)."""
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except json.JSONDecodeError as exc:
            raise DomainError(f"network spec is not valid JSON: {exc}") from None
    param = "ntk"
    if isinstance(spec, dict):
        for k in spec:
            if k not in ("layers", "parametrization"):
                raise DomainError(f"{k}: unknown key at the top of a network spec (allowed: layers, parametrization)")
        if "layers" not in spec:
            raise DomainError("layers: missing (a network spec is a list of layers or {\"layers\": [...]})")
        param = spec.get("parametrization", "ntk")
        if param not in PARAMETRIZATIONS:
            raise DomainError(f"parametrization: expected one of {', '.join(PARAMETRIZATIONS)}, got {param!r}")
        spec = spec["layers"]
    if not isinstance(spec, list) or not spec:
        raise DomainError("layers: expected a non-empty list of layers")
    return Network(_layers(spec, "layers"), param)


def load_spec(path: "str | Path") -> Network:
    """from_spec of a JSON file (errors name the file)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise DomainError(f"cannot read network spec {str(p)!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise DomainError(f"{p}: not a JSON text file (its bytes are not UTF-8)") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DomainError(f"{p}: not valid JSON ({exc})") from None
    return from_spec(obj)


def to_spec(net: Network) -> dict:
    """The spec of a Network (from_spec(to_spec(net)) rebuilds it)."""
    return {"layers": net.to_spec(), "parametrization": net.parametrization}
