#!/usr/bin/env python
"""Reference NNGP / NTK values of small networks from neural-tangents (issue 8 section 4).

    python scripts/nt_network_reference.py [--out tests/golden/network_nt] [--only NAME ...]
                                           [--deg 50] [--no-check]

Each case is a network in meanfield's JSON spec format (``meanfield.network.from_spec``), an
input shape and a seed; the inputs are ``np.random.default_rng(seed).standard_normal(shape)``
(float64).  The spec is translated layer by layer into ``neural_tangents.stax`` (the exact stax
expression is stored with the values) and NT's ``kernel_fn(X, None, ("nngp", "ntk"))`` is
evaluated in float64 (``jax_enable_x64``), NTK parameterization, not jitted.  The values go to
``<out>.npz`` (keys ``<case>/X``, ``<case>/nngp``, ``<case>/ntk``; where an independent reference
exists -- every dense-only network, and conv networks whose activations are relu / erf -- also
``<case>/ref_nngp``, ``<case>/ref_ntk``, more accurate than NT for tanh and on the relu NTK
diagonal) and the provenance, the specs, shapes, layout and NT's own accuracy to ``<out>.json``.

Translation (spec -> stax):

* dense         -> Dense(1, W_std=sqrt(sigma_w2), b_std=sqrt(sigma_b2) or None)   (channels axis)
* conv          -> Conv(1, filter, strides, 'SAME'|'VALID'|'CIRCULAR', W_std, b_std), NHWC
* activation    -> Relu(), Erf(), Gelu(approximate=False), tanh: ElementwiseNumerical(jnp.tanh,
                   deg=2 * --deg) (Gauss-Hermite, NNGP and NTK; NT's derivative by jax.grad)
* avg_pool      -> AvgPool(window, strides, padding, normalize_edges=False)
* global_avg_pool, flatten, identity -> GlobalAvgPool(), Flatten(), Identity()
* layer_norm    -> LayerNorm(axis=-1, eps=0.0)   (channels only; eps = 0 as in meanfield, NT's
                   default is 1e-12, added to the variance)
* residual      -> serial(FanOut(2), parallel(serial(*branch), serial(*shortcut) or Identity()),
                   FanInSum())
* repeat        -> serial(*[serial(*body)] * n)

Widths are 1 everywhere: the infinite-width kernels do not depend on them.

Layout.  NT's ``Kernel.nngp`` is documented as ``(batch_size_1, batch_size_2, height, [height,],
width, [width,], ...)`` (neural_tangents/_src/utils/kernel.py), but a layer that convolves the
full spatial covariance (Conv with shared weights) flips ``Kernel.is_reversed`` and the array is
then stored with the spatial pairs in reverse order: after an odd number of Conv layers a 2-D net
without readout returns (N, N, s2, s2', s1, s1') (checked: one Conv on 5 x 7 inputs gives
(N, N, 7, 7, 5, 5), two give (N, N, 5, 5, 7, 7)).  This script asks for ``is_reversed`` too and
undoes the reversal (NT's ``utils.reverse_zipped``), so every stored kernel is (N, N) after a
readout and (N, N, s1, s1', s2, s2') otherwise, entry [i, j, a, a', b, b'] = covariance of
output i at position (a, b) with output j at position (a', b').

Accuracy recorded in the json:

* ``nt_numerical``: for tanh cases the stored values use deg = 2d; the estimate of NT's error is
  max |K(deg d) - K(deg 2d)| / max |K(deg 2d)| (a bound for deg d, conservative for 2d);
* ``independent_check``: an independent recursion of the same network and NT's relative error
  against it, on the (i, i, p, p) entries and off them separately.  Dense-only networks: mpmath
  (dps 30) closed forms for relu (arc-cosine kernel) and erf, nested adaptive QUADPACK integrals
  (tolerance 1e-14) for gelu and tanh.  Conv networks with relu / erf: ``explicit_kernel``, the
  conv / pooling / flatten / layer_norm maps written out in numpy float64 on the padded kernel
  and the activations entry by entry in mpmath.  NT's relu NTK diagonal is off by up to ~1.5e-8
  (dense, d = 784) and ~3e-9 (conv + flatten): its arctan2(sqrt(prod - nngp^2), nngp) sees a
  correlation 1 - O(eps) when its cov1 and nngp diagonals differ by an ulp;
* ``explicit_check`` (one conv or avg_pool layer, optionally + relu / erf): the kernel built
  directly from patches of the padded inputs (``_explicit``), pinning the padding conventions
  and the un-reversed layout.

The NT computation runs in the side environment .bench_env/ (scripts/_nt_env.py, pinned jax 0.4.30,
neural-tangents 0.6.5), never imported by meanfield; this file is both the driver (meanfield's
venv) and, with --worker, the NT worker (side venv).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "golden" / "network_nt"


# -- the cases ---------------------------------------------------------------------------------

def _dense(sw=2.0, sb=0.1):
    d = {"layer": "dense", "sigma_w2": sw}
    if sb is not None:
        d["sigma_b2"] = sb
    return d


def _act(fn):
    return {"layer": "activation", "fn": fn}


def _conv(filt, strides, padding, sw=2.0, sb=0.1):
    d = {"layer": "conv", "filter": list(filt), "strides": list(strides), "padding": padding,
         "sigma_w2": sw}
    if sb is not None:
        d["sigma_b2"] = sb
    return d


READOUT = {"layer": "dense", "sigma_w2": 1.0, "sigma_b2": 0.1}
GAP = {"layer": "global_avg_pool"}
FLAT = {"layer": "flatten"}
LN = {"layer": "layer_norm"}


def _cases() -> list[dict]:
    cases = []

    def add(name, spec, shape, seed, note=""):
        cases.append({"name": name, "spec": spec, "shape": list(shape), "seed": seed, "note": note})

    dense_shape = (4, 5)
    seed = 100
    # -- dense MLPs
    for fn in ("relu", "erf", "gelu", "tanh"):
        seed += 1
        add(f"mlp_{fn}", [_dense(), _act(fn), _dense(), _act(fn), READOUT], dense_shape, seed)
    add("mlp_relu_nobias", [_dense(2.0, None), _act("relu"), _dense(2.0, None), _act("relu"),
                            _dense(1.0, None)], dense_shape, 111,
        "no biases anywhere (sigma_b2 omitted)")
    deep = [_dense(), _act("relu")] * 5 + [READOUT]
    add("mlp_relu_d784_depth5", deep, (4, 784), 115,
        "input dimension 784 so that NT's cov1 and nngp diagonals differ by an ulp (its relu "
        "arctan2(sqrt(prod - nngp^2), nngp) then sees a correlation 1 - O(eps))")
    add("mlp_erf_wide_variance", [_dense(4.0, 0.5), _act("erf"), _dense(4.0, 0.5), _act("erf"),
                                  READOUT], dense_shape, 112)
    add("mlp_layer_norm", [_dense(), LN, _act("relu"), _dense(1.5, 0.2), LN, _act("gelu"), READOUT],
        dense_shape, 113, "layer_norm after dense layers only (NT's LayerNorm ignores the mean)")
    add("mlp_repeat_erf", [{"layer": "repeat", "n": 3, "body": [_dense(1.5, 0.05), _act("erf")]},
                           READOUT], dense_shape, 114)
    # -- NT-style residual blocks x + Dense(phi(x)) after an initial dense
    for k, fn in enumerate(("relu", "erf", "gelu", "tanh")):
        block = {"layer": "residual", "branch": [_act(fn), _dense(1.0, 0.05)], "shortcut": []}
        add(f"resnet_{fn}", [_dense(1.0, 0.1), {"layer": "repeat", "n": 2, "body": [block]},
                             _act(fn), READOUT], dense_shape, 120 + k)
    add("resnet_shortcut_dense_relu",
        [_dense(1.0, 0.1), {"layer": "residual", "branch": [_act("relu"), _dense(2.0, 0.1)],
                            "shortcut": [_dense(0.5, None)]}, _act("relu"), READOUT],
        dense_shape, 125, "residual with a dense shortcut")

    # -- convolutions: 1-D (N, 7, 2) and 2-D (N, 5, 6, 2; not square, to pin the axis order)
    acts = ("relu", "erf", "gelu")
    shapes = {1: (3, 7, 2), 2: (3, 5, 6, 2)}
    seed = 200
    for dim in (1, 2):
        for p, padding in enumerate(("same", "valid", "circular")):
            for stride in (1, 2):
                fn = acts[(p + stride + dim) % 3]
                filt, strd = (3,) * dim, (stride,) * dim
                filt2 = (2,) * dim if padding == "valid" else filt  # 5 x 6 -> 2 x 2 -> 1 x 1
                body = [_conv(filt, strd, padding), _act(fn), _conv(filt2, (1,) * dim, padding, 1.5, 0.05),
                        _act(fn)]
                for end, tail in (("gap", [GAP, READOUT]), ("flatten", [FLAT, READOUT])):
                    seed += 1
                    add(f"conv{dim}d_{padding}_s{stride}_{fn}_{end}", body + tail, shapes[dim], seed)
    # tanh (numerical in NT) in one 1-D conv net
    add("conv1d_circular_s1_tanh_gap",
        [_conv((3,), (1,), "circular"), _act("tanh"), _conv((3,), (1,), "circular", 1.5, 0.05),
         _act("tanh"), GAP, READOUT], shapes[1], 230)
    # 2 x 3 filters, mixed strides
    add("conv2d_same_filter2x3_s2x1_relu_flatten",
        [_conv((2, 3), (2, 1), "same"), _act("relu"), FLAT, READOUT], shapes[2], 231)
    # no readout: the kernel keeps its spatial axes (odd and even numbers of Conv layers)
    add("conv2d_same_relu_noreadout_1conv", [_conv((3, 3), (1, 1), "same"), _act("relu")],
        shapes[2], 240, "one Conv: NT returns it reversed; stored un-reversed")
    add("conv1d_circular_erf_noreadout_1conv", [_conv((3,), (1,), "circular", 1.5, 0.1), _act("erf")],
        shapes[1], 244)
    add("conv2d_valid_erf_noreadout_2conv",
        [_conv((3, 3), (1, 1), "same"), _act("erf"), _conv((2, 2), (1, 1), "valid", 1.5, 0.05)],
        shapes[2], 241)
    add("conv2d_circular_s2_gelu_noreadout_3conv",
        [_conv((3, 3), (1, 1), "circular"), _act("gelu"), _conv((3, 3), (2, 2), "circular"),
         _act("gelu"), _conv((1, 1), (1, 1), "circular", 1.0, None)], shapes[2], 242)
    add("conv1d_same_relu_noreadout", [_conv((3,), (1,), "same"), _act("relu"),
                                       _conv((3,), (2,), "same")], shapes[1], 243)
    # average pooling
    add("conv2d_avgpool_valid_relu_gap",
        [_conv((3, 3), (1, 1), "same"), _act("relu"),
         {"layer": "avg_pool", "window": [2, 2], "strides": [2, 2], "padding": "valid"},
         _conv((3, 3), (1, 1), "same"), _act("relu"), GAP, READOUT], shapes[2], 250)
    add("conv2d_avgpool_same_erf_flatten",
        [_conv((3, 3), (1, 1), "same"), _act("erf"),
         {"layer": "avg_pool", "window": [3, 3], "strides": [2, 2], "padding": "same"},
         FLAT, READOUT], shapes[2], 251, "SAME pooling divides by the full window (padded zeros count)")
    add("conv1d_avgpool_same_gelu_gap",
        [_conv((3,), (1,), "valid"), _act("gelu"),
         {"layer": "avg_pool", "window": [2], "strides": [2], "padding": "same"}, GAP, READOUT],
        (3, 8, 2), 252)
    add("conv2d_avgpool_valid_noreadout",
        [_conv((3, 3), (1, 1), "same"), _act("relu"),
         {"layer": "avg_pool", "window": [2, 2], "strides": [2, 2], "padding": "valid"}],
        shapes[2], 253)
    # layer_norm after convolutions (over channels, per position)
    add("conv2d_layer_norm_relu_gap",
        [_conv((3, 3), (1, 1), "same"), LN, _act("relu"), _conv((3, 3), (1, 1), "same", 1.5, 0.1),
         LN, _act("erf"), GAP, READOUT], shapes[2], 260)
    add("conv1d_layer_norm_gelu_flatten",
        [_conv((3,), (2,), "circular"), LN, _act("gelu"), FLAT, READOUT], shapes[1], 261)
    # residual conv block and a repeat in a conv net
    add("conv2d_residual_relu_gap",
        [_conv((3, 3), (1, 1), "same", 1.0, 0.1),
         {"layer": "residual", "branch": [_act("relu"), _conv((3, 3), (1, 1), "same", 1.0, 0.05)],
          "shortcut": []},
         _act("relu"), GAP, READOUT], shapes[2], 270)
    add("conv1d_repeat_erf_gap",
        [{"layer": "repeat", "n": 3, "body": [_conv((3,), (1,), "same", 1.5, 0.1), _act("erf")]},
         GAP, READOUT], shapes[1], 271)
    # single linear layers on the input: their kernels are written out explicitly in numpy
    # (_explicit) to pin NT's padding / pooling conventions and the un-reversed layout
    seed = 300
    for dim in (1, 2):
        for padding in ("same", "valid", "circular"):
            for stride in ((1, 2) if dim == 1 else (2,)):
                seed += 1
                add(f"single_conv{dim}d_{padding}_s{stride}",
                    [_conv((3,) * dim, (stride,) * dim, padding, 2.0, 0.1)], shapes[dim], seed)
    add("single_conv2d_circular_filter2x3_s2x1", [_conv((2, 3), (2, 1), "circular", 2.0, 0.1)],
        shapes[2], 310, "even filter: the wrap-around pads are (0, 1)")
    for name, win, st, pad, shp in (("single_avgpool2d_valid_w2_s2", [2, 2], [2, 2], "valid", shapes[2]),
                                    ("single_avgpool2d_same_w3_s2", [3, 3], [2, 2], "same", shapes[2]),
                                    ("single_avgpool2d_same_w2_s2", [2, 2], [2, 2], "same", shapes[2]),
                                    ("single_avgpool1d_same_w3_s2", [3], [2], "same", shapes[1])):
        seed += 1
        add(name, [{"layer": "avg_pool", "window": win, "strides": st, "padding": pad}], shp, seed)
    return cases


def _explicit(spec, X) -> tuple[np.ndarray, np.ndarray] | None:
    """NNGP and NTK of one conv or avg_pool layer on the inputs, written out in numpy with the
    conventions stated in the json (lax SAME pads, low = total // 2; CIRCULAR = wrap-around pads
    of the SAME amounts then VALID; avg_pool divides by the full window); None for other specs."""
    if (len(spec) == 2 and spec[0]["layer"] == "conv" and spec[1]["layer"] == "activation"
            and spec[1]["fn"] in ("relu", "erf")):
        return _explicit_activation(spec[1]["fn"], *_explicit(spec[:1], X))
    if len(spec) != 1 or spec[0]["layer"] not in ("conv", "avg_pool"):
        return None
    d = spec[0]
    conv = d["layer"] == "conv"
    filt, strides = (d["filter"], d["strides"]) if conv else (d["window"], d["strides"])
    padding = d["padding"]
    n, *sizes, C = X.shape
    pads, idx = [(0, 0)], []
    for s, f, t in zip(sizes, filt, strides):
        out = (s - f) // t + 1 if padding == "valid" else -(-s // t)
        total = 0 if padding == "valid" else max((out - 1) * t + f - s, 0)
        pads.append((total // 2, total - total // 2))
        idx.append(np.arange(out)[:, None] * t + np.arange(f)[None, :])  # (out, f) padded coords
    pads.append((0, 0))
    Xp = np.pad(X, pads, mode="wrap" if padding == "circular" else "constant")
    if len(sizes) == 1:
        P = Xp[:, idx[0]]                                           # (N, o1, f1, C)
        P = P.reshape(n, P.shape[1], -1, C)
    else:
        P = Xp[:, idx[0][:, None, :, None], idx[1][None, :, None, :]]  # (N, o1, o2, f1, f2, C)
        P = P.reshape(n, P.shape[1], P.shape[2], -1, C)
    F = P.shape[-2]
    if conv:
        Z = P.reshape(*P.shape[:-2], F * C)
        sw, sb = d["sigma_w2"], d.get("sigma_b2", 0.0)
        sub = "iaf,jbf->ijab" if len(sizes) == 1 else "iabf,jcdf->ijacbd"
        nngp = sw * np.einsum(sub, Z, Z) / (F * C) + sb
        return nngp, nngp.copy()  # first layer: NTK = NNGP in the NTK parameterization
    Y = P.sum(axis=-2) / F                                          # avg: divide by the window
    sub = "iac,jbc->ijab" if len(sizes) == 1 else "iabc,jdec->ijadbe"
    nngp = np.einsum(sub, Y, Y) / C
    return nngp, np.zeros_like(nngp)


def _diag(A: np.ndarray) -> np.ndarray:
    """The (i, i, p, p) entries of a kernel in NT's layout (same input, same position)."""
    n, D = A.shape[0], (A.ndim - 2) // 2
    order = [0] + [2 + 2 * k for k in range(D)] + [1] + [3 + 2 * k for k in range(D)]
    P = int(np.prod(A.shape[2::2]))
    return np.diag(A.transpose(order).reshape(n * P, n * P))


def _explicit_activation(fn: str, S: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """relu / erf on a kernel in NT's layout, entry by entry in mpmath (dps 30) from the float64
    pre-activation kernel S, NTK T; correlation exactly 1 on the (i, i, p, p) entries."""
    import mpmath as mp

    mp.mp.dps = 30
    n, D = S.shape[0], (S.ndim - 2) // 2
    sizes = S.shape[2::2]
    # (N, N, s1, s1', s2, s2') -> (N, s1, s2, N, s1', s2') -> (N P, N P)
    order = [0] + [2 + 2 * k for k in range(D)] + [1] + [3 + 2 * k for k in range(D)]
    P = int(np.prod(sizes))
    A = S.transpose(order).reshape(n * P, n * P)
    B = T.transpose(order).reshape(n * P, n * P)
    q = np.diag(A)
    out, outT = np.empty_like(A), np.empty_like(B)
    for r in range(n * P):
        for c in range(r, n * P):
            q1, q2, k12 = mp.mpf(q[r]), mp.mpf(q[c]), mp.mpf(A[r, c])
            if fn == "relu":
                th = mp.mpf(0) if r == c else mp.acos(k12 / mp.sqrt(q1 * q2))
                e = mp.sqrt(q1 * q2) * (mp.sin(th) + (mp.pi - th) * mp.cos(th)) / (2 * mp.pi)
                ed = (mp.pi - th) / (2 * mp.pi)
            else:
                den = (1 + 2 * q1) * (1 + 2 * q2)
                e = 2 / mp.pi * mp.asin(2 * k12 / mp.sqrt(den))
                ed = 4 / mp.pi / mp.sqrt(den - 4 * k12 ** 2)
            out[r, c] = out[c, r] = float(e)
            outT[r, c] = outT[c, r] = float(mp.mpf(B[r, c]) * ed)
    inv = np.argsort(order)
    shape = [n, *sizes, n, *sizes]
    return (out.reshape(shape).transpose(inv), outT.reshape(shape).transpose(inv))


# -- worker (runs in the side environment) -----------------------------------------------------

def _translate(spec, stax, jnp, deg):
    """(stax layer, expression string) for a list of layer dicts (serial)."""
    layers, exprs = [], []
    for i, layer in enumerate(spec):
        lay, ex = _translate_one(layer, stax, jnp, deg, f"[{i}]")
        layers.append(lay)
        exprs.append(ex)
    if len(layers) == 1:
        return layers[0], exprs[0]
    return stax.serial(*layers), "stax.serial(" + ", ".join(exprs) + ")"


def _std(v):
    return None if v is None else float(np.sqrt(v))


def _translate_one(d, stax, jnp, deg, where):
    kind = d["layer"]
    if kind == "dense":
        w, b = _std(d["sigma_w2"]), _std(d.get("sigma_b2"))
        return stax.Dense(1, W_std=w, b_std=b), f"stax.Dense(1, W_std={w!r}, b_std={b!r})"
    if kind == "conv":
        w, b = _std(d["sigma_w2"]), _std(d.get("sigma_b2"))
        f, s, p = tuple(d["filter"]), tuple(d["strides"]), d["padding"].upper()
        return (stax.Conv(1, f, s, p, W_std=w, b_std=b),
                f"stax.Conv(1, {f!r}, {s!r}, {p!r}, W_std={w!r}, b_std={b!r})")
    if kind == "activation":
        fn = d["fn"]
        if fn == "relu":
            return stax.Relu(), "stax.Relu()"
        if fn == "erf":
            return stax.Erf(), "stax.Erf()"
        if fn == "gelu":
            return stax.Gelu(approximate=False), "stax.Gelu(approximate=False)"
        if fn == "tanh":
            return stax.ElementwiseNumerical(jnp.tanh, deg=deg), f"stax.ElementwiseNumerical(jnp.tanh, deg={deg})"
        raise ValueError(f"{where}: no NT layer for activation {fn!r}")
    if kind == "avg_pool":
        w, s, p = tuple(d["window"]), tuple(d["strides"]), d["padding"].upper()
        return (stax.AvgPool(w, s, p, normalize_edges=False),
                f"stax.AvgPool({w!r}, {s!r}, {p!r}, normalize_edges=False)")
    if kind == "global_avg_pool":
        return stax.GlobalAvgPool(), "stax.GlobalAvgPool()"
    if kind == "flatten":
        return stax.Flatten(), "stax.Flatten()"
    if kind == "layer_norm":
        return stax.LayerNorm(axis=-1, eps=0.0), "stax.LayerNorm(axis=-1, eps=0.0)"
    if kind == "identity":
        return stax.Identity(), "stax.Identity()"
    if kind == "residual":
        br, bex = _translate(d["branch"], stax, jnp, deg) if d["branch"] else (stax.Identity(), "stax.Identity()")
        sc = d.get("shortcut") or []
        sh, sex = _translate(sc, stax, jnp, deg) if sc else (stax.Identity(), "stax.Identity()")
        return (stax.serial(stax.FanOut(2), stax.parallel(br, sh), stax.FanInSum()),
                f"stax.serial(stax.FanOut(2), stax.parallel({bex}, {sex}), stax.FanInSum())")
    if kind == "repeat":
        body, bex = _translate(d["body"], stax, jnp, deg)
        n = int(d["n"])
        return stax.serial(*[body] * n), f"stax.serial(*[{bex}] * {n})"
    raise ValueError(f"{where}: unknown layer {kind!r}")


def _unreverse(x: np.ndarray) -> np.ndarray:
    """NT's utils.reverse_zipped(x, 2): reverse the order of the (s, s') pairs after (N, N)."""
    ndim = x.ndim
    src = [j for i in range(ndim - 2, 1, -2) for j in (i, i + 1)]
    return np.moveaxis(x, src, list(range(2, ndim)))


def worker(job_path: str) -> None:
    import warnings

    warnings.simplefilter("ignore")
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import neural_tangents as nt
    from neural_tangents import stax

    job = json.loads(Path(job_path).read_text())
    deg = int(job["deg"])
    import jaxlib

    arrays, info = {}, {"neural_tangents": nt.__version__, "jax": jax.__version__,
                        "jaxlib": jaxlib.__version__, "numpy": np.__version__, "cases": {}}
    for case in job["cases"]:
        name = case["name"]
        X = np.load(case["x"])
        numerical = any_tanh(case["spec"])
        degs = [2 * deg, deg] if numerical else [None]
        res = {}
        for dg in degs:
            layer, expr = _translate(case["spec"], stax, jnp, dg or 0)
            _, _, kfn = layer
            t = time.perf_counter()
            k = kfn(X, None, ("nngp", "ntk", "is_reversed"))
            nngp, ntk = np.asarray(k.nngp, dtype=np.float64), np.asarray(k.ntk, dtype=np.float64)
            dt = time.perf_counter() - t
            if ntk.shape != nngp.shape:  # NT returns a 0-d zero NTK when nothing is trainable yet
                ntk = np.broadcast_to(ntk, nngp.shape).copy()
            if k.is_reversed:
                nngp, ntk = _unreverse(nngp), _unreverse(ntk)
            res[dg] = {"nngp": nngp, "ntk": ntk, "expr": expr, "is_reversed": bool(k.is_reversed),
                       "seconds": dt, "dtype": str(k.nngp.dtype)}
        main = res[degs[0]]
        arrays[f"{name}/nngp"], arrays[f"{name}/ntk"] = main["nngp"], main["ntk"]
        ci = {"stax": main["expr"], "nt_is_reversed": main["is_reversed"], "seconds": main["seconds"],
              "nt_dtype": main["dtype"]}
        if numerical:
            lo = res[deg]
            ci["numerical"] = {
                "deg": 2 * deg, "compared_deg": deg,
                "nngp_rel_diff": float(np.max(np.abs(lo["nngp"] - main["nngp"])) / np.max(np.abs(main["nngp"]))),
                "ntk_rel_diff": float(np.max(np.abs(lo["ntk"] - main["ntk"])) / np.max(np.abs(main["ntk"]))),
            }
        info["cases"][name] = ci
        print(f"  NT {name}: {main['nngp'].shape} in {main['seconds']:.2f} s", file=sys.stderr, flush=True)
    np.savez(job["out_npz"], **arrays)
    Path(job["out_json"]).write_text(json.dumps(info))


def any_tanh(spec) -> bool:
    for d in spec:
        if d["layer"] == "activation" and d["fn"] == "tanh":
            return True
        for key in ("branch", "shortcut", "body"):
            if key in d and any_tanh(d[key]):
                return True
    return False


# -- independent recursion for dense-only networks (driver side) -------------------------------

def _is_dense_only(spec) -> bool:
    for d in spec:
        if d["layer"] in ("conv", "avg_pool", "global_avg_pool", "flatten"):
            return False
        for key in ("branch", "shortcut", "body"):
            if key in d and not _is_dense_only(d[key]):
                return False
    return True


class _Indep:
    """NNGP / NTK of a dense-only spec on all input pairs, written from the equations (MATH.md 4.1):
    dense: S' = sw S + sb, T' = sw T + S'; activation: S' = E[phi phi], T' = T E[phi' phi'];
    layer_norm: divide by sqrt(S_ii S_jj); residual: sum of the two paths.  relu and erf in
    mpmath (dps 30), gelu and tanh by nested QUADPACK in float64 (1e-14)."""

    def __init__(self, dps: int = 30):
        import mpmath as mp

        self.mp = mp
        mp.mp.dps = dps

    def run(self, spec, X):
        mp = self.mp
        n, d = X.shape
        rows = [[mp.mpf(float(v)) for v in x] for x in X]
        S = [[mp.fsum(a * b for a, b in zip(rows[i], rows[j])) / d for j in range(n)] for i in range(n)]
        T = [[mp.mpf(0)] * n for _ in range(n)]
        S, T = self.serial(spec, S, T)
        return (np.array([[float(v) for v in r] for r in S]), np.array([[float(v) for v in r] for r in T]))

    def serial(self, spec, S, T):
        for lay in spec:
            S, T = self.layer(lay, S, T)
        return S, T

    def layer(self, d, S, T):
        mp, n = self.mp, len(S)
        kind = d["layer"]
        if kind == "dense":
            sw, sb = mp.mpf(d["sigma_w2"]), mp.mpf(d.get("sigma_b2", 0))
            S2 = [[sw * S[i][j] + sb for j in range(n)] for i in range(n)]
            return S2, [[sw * T[i][j] + S2[i][j] for j in range(n)] for i in range(n)]
        if kind == "activation":
            S2 = [[None] * n for _ in range(n)]
            T2 = [[None] * n for _ in range(n)]
            for i in range(n):
                for j in range(i, n):
                    if i == j:
                        c = mp.mpf(1)
                    else:
                        c = S[i][j] / mp.sqrt(S[i][i] * S[j][j])
                    e, ed = self.moments(d["fn"], S[i][i], S[j][j], c, i == j)
                    S2[i][j] = S2[j][i] = e
                    T2[i][j] = T2[j][i] = T[i][j] * ed
            return S2, T2
        if kind == "layer_norm":
            S2 = [[S[i][j] / mp.sqrt(S[i][i] * S[j][j]) for j in range(n)] for i in range(n)]
            T2 = [[T[i][j] / mp.sqrt(S[i][i] * S[j][j]) for j in range(n)] for i in range(n)]
            return S2, T2
        if kind == "identity":
            return S, T
        if kind == "residual":
            S1, T1 = self.serial(d["branch"], S, T)
            S0, T0 = self.serial(d.get("shortcut") or [], S, T)
            return ([[S1[i][j] + S0[i][j] for j in range(n)] for i in range(n)],
                    [[T1[i][j] + T0[i][j] for j in range(n)] for i in range(n)])
        if kind == "repeat":
            for _ in range(int(d["n"])):
                S, T = self.serial(d["body"], S, T)
            return S, T
        raise ValueError(kind)

    def moments(self, fn, q1, q2, c, same):
        mp = self.mp
        if fn == "relu":  # arc-cosine kernel of degree 1 and 0 (Cho & Saul)
            th = mp.mpf(0) if same else mp.acos(c)
            return (mp.sqrt(q1 * q2) * (mp.sin(th) + (mp.pi - th) * mp.cos(th)) / (2 * mp.pi),
                    (mp.pi - th) / (2 * mp.pi))
        if fn == "erf":  # Williams (1997)
            q12 = c * mp.sqrt(q1 * q2)
            den = (1 + 2 * q1) * (1 + 2 * q2)
            return (2 / mp.pi * mp.asin(2 * q12 / mp.sqrt(den)), 4 / mp.pi / mp.sqrt(den - 4 * q12 ** 2))
        from _quadpack import quadpack2

        e, ed = quadpack2(fn, float(q1), float(q2), 1.0 if same else float(c))
        return mp.mpf(e), mp.mpf(ed)


def _rel_errors(nt_val: np.ndarray, ref: np.ndarray) -> dict:
    """Relative errors on the (i, i, p, p) entries, on the others (entrywise, where |ref| >= 1e-3
    max |ref|), and max |error| / max |ref| over all entries."""
    dmask = np.zeros(ref.shape, dtype=bool)
    for i in range(ref.shape[0]):
        for pos in np.ndindex(*ref.shape[2::2]):
            dmask[(i, i) + tuple(a for p_ in pos for a in (p_, p_))] = True
    err = np.abs(nt_val - ref)
    big = np.abs(ref) >= 1e-3 * np.max(np.abs(ref))
    off = ~dmask & big
    return {"diagonal": float(np.max(err[dmask] / np.abs(ref[dmask]))),
            "off_diagonal": float(np.max(err[off] / np.abs(ref[off]))) if off.any() else 0.0,
            "max_over_max": float(np.max(err) / np.max(np.abs(ref)))}


# -- independent recursion for conv networks with relu / erf (driver side) ----------------------

def _pads(s: int, f: int, t: int, padding: str) -> tuple[int, int, int]:
    out = (s - f) // t + 1 if padding == "valid" else -(-s // t)
    total = 0 if padding == "valid" else max((out - 1) * t + f - s, 0)
    return out, total // 2, total - total // 2


def _pad_kernel(K: np.ndarray, lohi, padding: str) -> np.ndarray:
    """Pad both position axes of each spatial dimension (zeros, or wrap-around for circular)."""
    pads = [(0, 0), (0, 0)]
    for lo, hi in lohi:
        pads += [(lo, hi), (lo, hi)]
    return np.pad(K, pads, mode="wrap" if padding == "circular" else "constant")


def _gather(K: np.ndarray, r1: list, r2: list) -> np.ndarray:
    """K[:, :, r1[0], r2[0], r1[1], r2[1], ...] with open-mesh index arrays (positions)."""
    D = len(r1)
    idx = [slice(None), slice(None)]
    for k in range(D):
        for which, r in ((0, r1[k]), (1, r2[k])):
            shape = [1] * (2 * D)
            shape[2 * k + which] = len(r)
            idx.append(np.asarray(r).reshape(shape))
    return K[tuple(idx)]


def explicit_kernel(spec, X):
    """NNGP and NTK of a spec of conv / dense / relu / erf / avg_pool / global_avg_pool / flatten /
    layer_norm / identity / residual / repeat layers, in NT's layout, written from the equations
    (kernel padded like the inputs; conv = sigma_w2 * mean over filter offsets of K(o t + f,
    o' t + f) + sigma_b2; avg_pool = mean over pairs of window offsets; relu and erf entry by entry
    in mpmath); None if the spec has another activation."""
    if not _fns(spec) <= {"relu", "erf"}:
        return None
    n, *sizes, C = X.shape
    if sizes:
        sub = "iac,jbc->ijab" if len(sizes) == 1 else "iabc,jdec->ijadbe"
        S = np.einsum(sub, X, X) / C
    else:
        S = X @ X.T / C
    return _explicit_serial(spec, S, np.zeros_like(S))


def _explicit_serial(spec, S, T):
    for d in spec:
        S, T = _explicit_layer(d, S, T)
    return S, T


def _explicit_layer(d, S, T):
    kind = d["layer"]
    D = (S.ndim - 2) // 2
    if kind == "dense":
        S2 = d["sigma_w2"] * S + d.get("sigma_b2", 0.0)
        return S2, d["sigma_w2"] * T + S2
    if kind in ("conv", "avg_pool"):
        filt = d["filter"] if kind == "conv" else d["window"]
        geo = [_pads(S.shape[2 + 2 * k], filt[k], d["strides"][k], d["padding"]) for k in range(D)]
        Sp = _pad_kernel(S, [(lo, hi) for _, lo, hi in geo], d["padding"])
        Tp = _pad_kernel(T, [(lo, hi) for _, lo, hi in geo], d["padding"])
        base = [np.arange(out) * d["strides"][k] for k, (out, _, _) in enumerate(geo)]
        accS, accT, cnt = 0.0, 0.0, 0
        offsets = list(np.ndindex(*filt))
        pairs = [(f, f) for f in offsets] if kind == "conv" else [(f, g) for f in offsets for g in offsets]
        for f, g in pairs:
            r1 = [base[k] + f[k] for k in range(D)]
            r2 = [base[k] + g[k] for k in range(D)]
            accS = accS + _gather(Sp, r1, r2)
            accT = accT + _gather(Tp, r1, r2)
            cnt += 1
        if kind == "avg_pool":  # divide by the window size twice (sum over pairs / |w|^2)
            return accS / cnt, accT / cnt
        S2 = d["sigma_w2"] * accS / cnt + d.get("sigma_b2", 0.0)
        return S2, d["sigma_w2"] * accT / cnt + S2
    if kind == "activation":
        return _explicit_activation(d["fn"], S, T)
    if kind == "global_avg_pool":
        ax = tuple(range(2, S.ndim))
        return S.mean(axis=ax), T.mean(axis=ax)
    if kind == "flatten":
        while S.ndim > 2:
            S = np.trace(S, axis1=-2, axis2=-1) / S.shape[-1]
            T = np.trace(T, axis1=-2, axis2=-1) / T.shape[-1]
        return S, T
    if kind == "layer_norm":
        q = _diag(S).reshape(S.shape[0], -1)  # (N, P)
        n, sizes = S.shape[0], S.shape[2::2]
        order = [0] + [2 + 2 * k for k in range(D)] + [1] + [3 + 2 * k for k in range(D)]
        inv = np.argsort(order)
        norm = np.sqrt(np.outer(q.ravel(), q.ravel())).reshape(n, *sizes, n, *sizes).transpose(inv)
        return S / norm, T / norm
    if kind == "identity":
        return S, T
    if kind == "residual":
        S1, T1 = _explicit_serial(d["branch"], S, T)
        S0, T0 = _explicit_serial(d.get("shortcut") or [], S, T)
        return S1 + S0, T1 + T0
    if kind == "repeat":
        for _ in range(int(d["n"])):
            S, T = _explicit_serial(d["body"], S, T)
        return S, T
    raise ValueError(kind)


# -- driver ------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(OUT), help="output path without extension")
    ap.add_argument("--only", nargs="+", help="case names (default: all)")
    ap.add_argument("--deg", type=int, default=100,
                    help="tanh: NT's Gauss-Hermite degree d; values stored at 2d, error = |K_d - K_2d|")
    ap.add_argument("--no-check", action="store_true", help="skip the independent dense-net check")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    args = ap.parse_args()
    if args.worker:
        worker(args.worker)
        return

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    cases = _cases()
    if args.list:
        for c in cases:
            print(c["name"], c["shape"])
        return
    if args.only:
        unknown = set(args.only) - {c["name"] for c in cases}
        if unknown:
            sys.exit(f"unknown cases: {sorted(unknown)}")
        cases = [c for c in cases if c["name"] in args.only]
    sys.path.insert(0, str(ROOT / "scripts"))
    from _nt_env import ENV, PINS, ensure_env

    py = ensure_env(log)
    if py is None:
        sys.exit("neural-tangents is not available")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        Xs = {}
        for c in cases:
            Xs[c["name"]] = np.random.default_rng(c["seed"]).standard_normal(tuple(c["shape"]))
            np.save(os.path.join(tmp, c["name"] + ".npy"), Xs[c["name"]])
        job = {"deg": args.deg, "out_npz": os.path.join(tmp, "nt.npz"),
               "out_json": os.path.join(tmp, "nt.json"),
               "cases": [{"name": c["name"], "spec": c["spec"],
                          "x": os.path.join(tmp, c["name"] + ".npy")} for c in cases]}
        Path(tmp, "job.json").write_text(json.dumps(job))
        env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
        proc = subprocess.run([str(py), __file__, "--worker", os.path.join(tmp, "job.json")],
                              env=env, text=True, stdout=subprocess.PIPE)
        if proc.returncode != 0:
            sys.exit(f"neural-tangents worker failed (exit {proc.returncode})")
        with np.load(job["out_npz"]) as f:
            nt_arrays = {k: f[k] for k in f.files}
        nt_info = json.loads(Path(job["out_json"]).read_text())
    nt_seconds = time.perf_counter() - t0

    arrays, out_cases = {}, {}
    check = None if args.no_check else _Indep()
    for c in cases:
        name = c["name"]
        X, nngp, ntk = Xs[name], nt_arrays[f"{name}/nngp"], nt_arrays[f"{name}/ntk"]
        arrays[f"{name}/X"], arrays[f"{name}/nngp"], arrays[f"{name}/ntk"] = X, nngp, ntk
        ci = nt_info["cases"][name]
        readout = nngp.ndim == 2
        entry = {
            "spec": c["spec"], "seed": c["seed"], "X_shape": list(X.shape), "kernel_shape": list(nngp.shape),
            "layout": "(N, N)" if readout else
                      "(N, N" + "".join(f", s{k + 1}, s{k + 1}'" for k in range((nngp.ndim - 2) // 2)) + ")",
            "stax": ci["stax"], "nt_is_reversed": ci["nt_is_reversed"],
            "nt_computation": "numerical" if "numerical" in ci else "closed-form",
        }
        if c["note"]:
            entry["note"] = c["note"]
        if "numerical" in ci:
            entry["nt_numerical"] = dict(ci["numerical"], method="ElementwiseNumerical (Gauss-Hermite, "
                                         "derivative by jax.grad); rel_diff = max|K_d - K_2d| / max|K_2d|")
        expl = _explicit(c["spec"], X)
        if expl is not None:
            scale = np.max(np.abs(expl[0]))
            entry["explicit_check"] = {
                "what": "this one-layer kernel (conv or avg_pool, optionally + relu/erf in mpmath) "
                        "written out with the conventions above (_explicit in the script); "
                        "max |NT - explicit| / max |explicit|, and relative on the (i, i, p, p) "
                        "entries (rel_diagonal_*)",
                "nngp": float(np.max(np.abs(nngp - expl[0])) / scale),
                "ntk": float(np.max(np.abs(ntk - expl[1])) / scale),
            }
            for key, a, b in (("nngp", nngp, expl[0]), ("ntk", ntk, expl[1])):
                da, db = _diag(a), _diag(b)
                if np.all(db != 0):
                    entry["explicit_check"][f"rel_diagonal_{key}"] = float(np.max(np.abs(da - db) / np.abs(db)))
            log(f"  explicit {name}: {entry['explicit_check']['nngp']:.1e} / {entry['explicit_check']['ntk']:.1e}")
        if check is not None and _is_dense_only(c["spec"]):
            t = time.perf_counter()
            r_nngp, r_ntk = check.run(c["spec"], X)
            arrays[f"{name}/ref_nngp"], arrays[f"{name}/ref_ntk"] = r_nngp, r_ntk
            fns = _fns(c["spec"])
            entry["independent_check"] = {
                "method": ("mpmath dps 30 closed forms (relu arc-cosine, erf)" if fns <= {"relu", "erf"}
                           else "mpmath dps 30 closed forms for relu/erf, nested QUADPACK (1e-14) for "
                                + "/".join(sorted(fns - {"relu", "erf"}))),
                "nt_rel_error_nngp": _rel_errors(nngp, r_nngp),
                "nt_rel_error_ntk": _rel_errors(ntk, r_ntk),
                "seconds": round(time.perf_counter() - t, 2),
            }
            log(f"  check {name}: NT nngp {entry['independent_check']['nt_rel_error_nngp']}, "
                f"ntk {entry['independent_check']['nt_rel_error_ntk']}")
        elif check is not None and c["spec"] and not _is_dense_only(c["spec"]):
            t = time.perf_counter()
            ref = explicit_kernel(c["spec"], X)
            if ref is not None:
                arrays[f"{name}/ref_nngp"], arrays[f"{name}/ref_ntk"] = ref
                entry["independent_check"] = {
                    "method": "explicit_kernel in the script: the layer maps written out in numpy "
                              "float64 (conv, pooling, flatten, layer_norm), relu/erf entry by entry "
                              "in mpmath dps 30 (correlation exactly 1 on (i, i, p, p))",
                    "nt_rel_error_nngp": _rel_errors(nngp, ref[0]),
                    "nt_rel_error_ntk": _rel_errors(ntk, ref[1]) if np.any(ref[1]) else None,
                    "seconds": round(time.perf_counter() - t, 2),
                }
                log(f"  check {name}: NT nngp {entry['independent_check']['nt_rel_error_nngp']}, "
                    f"ntk {entry['independent_check']['nt_rel_error_ntk']}")
        out_cases[name] = entry

    doc = {
        "provenance": {
            "script": "scripts/nt_network_reference.py",
            "command": "python " + " ".join([os.path.relpath(__file__, ROOT)] + sys.argv[1:]),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "neural_tangents": nt_info["neural_tangents"], "jax": nt_info["jax"],
            "jaxlib": nt_info.get("jaxlib"), "nt_numpy": nt_info["numpy"],
            "side_env": f"{ENV.name}/ with {' '.join(PINS)} (scripts/_nt_env.py)",
            "python": platform.python_version(),
            "call": "kernel_fn(X, None, ('nngp', 'ntk', 'is_reversed')) with jax_enable_x64, "
                    "parameterization 'ntk' (NT's default), not jitted, CPU; widths 1 (irrelevant)",
            "inputs": "X = np.random.default_rng(seed).standard_normal(X_shape), float64",
            "nt_seconds": round(nt_seconds, 1),
        },
        "layout": ("nngp and ntk have shape (N, N) after a readout (dense after global_avg_pool or "
                   "flatten); otherwise (N, N, s1, s1', s2, s2'): entry [i, j, a, a', b, b'] is the "
                   "covariance of input i's output at position (a, b) with input j's at (a', b'). "
                   "This is NT's documented Kernel.nngp layout (neural_tangents/_src/utils/kernel.py: "
                   "(batch_size_1, batch_size_2, height, height, width, width)); NT returns the spatial "
                   "pairs in reverse order when Kernel.is_reversed is True (after an odd number of "
                   "Conv layers), and those were put back in order here (nt_is_reversed records it)."),
        "conventions": {
            "dense": "Dense(1, W_std=sqrt(sigma_w2), b_std=sqrt(sigma_b2)); sigma_b2 omitted -> b_std=None "
                     "(no bias, which in the NTK differs from b_std=0 only in the standard parameterization)",
            "conv": "channels last (N, s1, [s2,] C), NT's default dimension numbers ('NHWC', 'HWIO', 'NHWC'); "
                    "SAME/VALID as lax (SAME: output ceil(s/stride), total pad max((out-1)*stride + f - s, 0), "
                    "pad_low = total // 2, pad_high = total - pad_low; zeros)",
            "circular": "NT's CIRCULAR = wrap-around padding (np.pad mode 'wrap') by the SAME pad amounts, "
                        "then a VALID convolution: output ceil(s/stride); with stride 1 and odd filters it "
                        "is the periodic convolution, but for even total padding or stride > 1 the window is "
                        "not centred (e.g. s = 6, f = 3, stride 2: pads (0, 1), output o sees inputs "
                        "2o, 2o+1, 2o+2 mod 6)",
            "avg_pool": "AvgPool(window, strides, padding, normalize_edges=False): sum over the window "
                        "divided by prod(window) even at SAME-padded edges (padded zeros count); SAME pads "
                        "as lax (low = total // 2)",
            "global_avg_pool": "mean over all positions (both position axes of the kernel)",
            "flatten": "Flatten(): the kernel becomes the mean over positions of the position-diagonal "
                       "(trace / number of positions), i.e. the next dense layer's fan-in is s1*s2*C",
            "layer_norm": "LayerNorm(axis=-1, eps=0.0): K_ij / sqrt(K_ii K_jj) per position (also for the NTK), "
                          "i.e. the raw second moment over channels is normalised and the channel mean is "
                          "ignored (exact only for zero-mean inputs, so layer_norm follows dense/conv here); "
                          "NT's default eps is 1e-12, added to the variances",
            "tanh": f"ElementwiseNumerical(jnp.tanh, deg={2 * args.deg}); deg {args.deg} computed for the error "
                    "estimate",
            "residual": "serial(FanOut(2), parallel(branch, shortcut or Identity()), FanInSum()): NNGP and NTK "
                        "of the two paths add",
        },
        "cases": out_cases,
    }
    relu_diag = _relu_diag_summary(out_cases)
    if relu_diag:
        doc["nt_relu_ntk_diagonal"] = relu_diag
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out.with_suffix(".npz"), **arrays)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    log(f"wrote {out.with_suffix('.npz')} ({out.with_suffix('.npz').stat().st_size / 1e3:.0f} kB) and "
        f"{out.with_suffix('.json')}: {len(cases)} cases in {time.perf_counter() - t0:.0f} s")


def _fns(spec) -> set:
    out = set()
    for d in spec:
        if d["layer"] == "activation":
            out.add(d["fn"])
        for key in ("branch", "shortcut", "body"):
            if key in d:
                out |= _fns(d[key])
    return out


def _relu_diag_summary(cases: dict) -> dict | None:
    rows = {}
    for name, e in cases.items():
        chk = e.get("independent_check")
        if chk and _fns(e["spec"]) == {"relu"}:
            rows[name] = {"ntk_diagonal": chk["nt_rel_error_ntk"]["diagonal"],
                          "nngp_diagonal": chk["nt_rel_error_nngp"]["diagonal"]}
    if not rows:
        return None
    return {"what": "NT's relative error on the relu NTK / NNGP diagonal against the mpmath arc-cosine "
                    "recursion (dps 30); meanfield should do better than these", "cases": rows}


if __name__ == "__main__":
    main()
