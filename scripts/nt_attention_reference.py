#!/usr/bin/env python
"""Reference NNGP / NTK values of attention networks from neural-tangents (issue 9 section 1).

    python scripts/nt_attention_reference.py [--out tests/golden/network_nt_attention]

Each case is a network in meanfield's JSON spec format, an input shape (N, T, d) and a seed; the
inputs are ``np.random.default_rng(seed).standard_normal(shape)`` (float64).  The spec is
translated into ``neural_tangents.stax`` (the stax expression is stored with the values) and NT's
``kernel_fn(X, None, ("nngp", "ntk"))`` is evaluated in float64 (``jax_enable_x64``), NTK
parameterization, not jitted.  Values go to ``<out>.npz`` (``<case>/X``, ``<case>/nngp``,
``<case>/ntk``) and the specs, shapes, layout and provenance to ``<out>.json``.

Translation (spec -> stax; widths 1, the infinite-width kernels do not depend on them):

* dense      -> Dense(1, W_std=sqrt(sigma_w2), b_std=sqrt(sigma_b2) or None)
* layer_norm -> LayerNorm(axis=-1, eps=0.0)
* attention  -> GlobalSelfAttention(1, 1, 1, n_heads=heads, linear_scaling=(scaling == "linear"),
                W_query_std=sqrt(sigma_q2), W_key_std=sqrt(sigma_k2), W_value_std=sqrt(sigma_v2),
                W_out_std=sqrt(sigma_o2), b_std=None, attention_mechanism=mechanism.upper(),
                pos_emb_type="NONE")
* activation -> Relu(), Erf();  global_avg_pool -> GlobalAvgPool()

The NT computation runs in the side environment .bench_env/ (scripts/_nt_env.py: jax 0.4.30,
neural-tangents 0.6.5), never imported by meanfield; this file is both the driver (meanfield's
venv) and, with --worker, the NT worker (side venv).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "golden" / "network_nt_attention"


def _att(heads=4, mechanism="softmax", scaling="linear", q=1.0, k=1.0, v=1.0, o=1.0):
    return {"layer": "attention", "heads": heads, "mechanism": mechanism, "scaling": scaling,
            "sigma_q2": q, "sigma_k2": k, "sigma_v2": v, "sigma_o2": o, "causal": False}


DENSE = {"layer": "dense", "sigma_w2": 1.5, "sigma_b2": 0.1}
LN = {"layer": "layer_norm"}


def _cases() -> list[dict]:
    cases = []

    def add(name, spec, shape, seed):
        cases.append({"name": name, "spec": spec, "shape": list(shape), "seed": seed})

    shape = (3, 5, 4)
    # one attention layer after a dense layer, no readout: kernels (N, N, T, T)
    add("single_softmax_linear", [DENSE, _att(4, "softmax", "linear", 1.3, 0.8, 1.5, 0.7)], shape, 201)
    add("single_softmax_linear_unit", [DENSE, _att(1, "softmax", "linear")], shape, 202)
    add("single_identity_linear", [DENSE, _att(4, "identity", "linear", 0.6, 0.9, 1.2, 0.8)], shape, 203)
    add("single_relu_linear", [DENSE, _att(4, "relu", "linear", 1.1, 0.7, 1.0, 1.4)], shape, 204)
    add("single_abs_linear", [DENSE, _att(2, "abs", "linear", 0.9, 1.2, 0.8, 1.1)], shape, 205)
    add("single_identity_sqrt", [DENSE, _att(4, "identity", "sqrt", 1.2, 0.9, 1.1, 1.3)], shape, 206)
    add("single_softmax_on_data", [_att(4, "softmax", "linear", 2.0, 1.0, 1.0, 1.0)], shape, 207)
    # Dense -> LayerNorm -> attention -> relu -> Dense -> LayerNorm -> global_avg_pool -> Dense
    for i, (mech, scaling) in enumerate((("softmax", "linear"), ("identity", "linear"),
                                         ("identity", "sqrt"))):
        spec = [DENSE, LN, _att(4, mech, scaling, 1.3, 0.8, 1.5, 0.7), {"layer": "activation", "fn": "relu"},
                {"layer": "dense", "sigma_w2": 2.0, "sigma_b2": 0.05}, LN, {"layer": "global_avg_pool"},
                {"layer": "dense", "sigma_w2": 1.0, "sigma_b2": 0.1}]
        add(f"block_{mech}_{scaling}", spec, (4, 6, 5), 210 + i)
    return cases


# -- the worker (side venv) --------------------------------------------------------------------

def _translate(spec, stax):
    layers, expr = [], []
    for l in spec:
        kind = l["layer"]
        if kind == "dense":
            b = math.sqrt(l["sigma_b2"]) if "sigma_b2" in l else None
            layers.append(stax.Dense(1, W_std=math.sqrt(l["sigma_w2"]), b_std=b))
            expr.append(f"Dense(1, W_std={math.sqrt(l['sigma_w2'])!r}, b_std={b!r})")
        elif kind == "layer_norm":
            layers.append(stax.LayerNorm(axis=-1, eps=0.0))
            expr.append("LayerNorm(axis=-1, eps=0.0)")
        elif kind == "attention":
            kw = dict(n_heads=l["heads"], linear_scaling=l["scaling"] == "linear",
                      W_query_std=math.sqrt(l["sigma_q2"]), W_key_std=math.sqrt(l["sigma_k2"]),
                      W_value_std=math.sqrt(l["sigma_v2"]), W_out_std=math.sqrt(l["sigma_o2"]),
                      b_std=None, attention_mechanism=l["mechanism"].upper(), pos_emb_type="NONE")
            layers.append(stax.GlobalSelfAttention(1, 1, 1, **kw))
            expr.append("GlobalSelfAttention(1, 1, 1, " + ", ".join(f"{k}={v!r}" for k, v in kw.items()) + ")")
        elif kind == "activation":
            fn = {"relu": stax.Relu, "erf": stax.Erf}[l["fn"]]
            layers.append(fn())
            expr.append(f"{fn.__name__}()")
        elif kind == "global_avg_pool":
            layers.append(stax.GlobalAvgPool())
            expr.append("GlobalAvgPool()")
        else:
            raise ValueError(kind)
    return stax.serial(*layers), "serial(" + ", ".join(expr) + ")"


def worker(job_path: str) -> None:
    import warnings

    warnings.simplefilter("ignore")
    import jax

    jax.config.update("jax_enable_x64", True)
    import jaxlib
    import neural_tangents as nt
    from neural_tangents import stax

    job = json.loads(Path(job_path).read_text())
    arrays, info = {}, {"neural_tangents": nt.__version__, "jax": jax.__version__,
                        "jaxlib": jaxlib.__version__, "numpy": np.__version__, "cases": {}}
    for case in job["cases"]:
        X = np.load(case["x"])
        (_, _, kfn), expr = _translate(case["spec"], stax)
        k = kfn(X, None, ("nngp", "ntk", "is_reversed"))
        nngp, ntk = np.asarray(k.nngp, np.float64), np.asarray(k.ntk, np.float64)
        arrays[case["name"] + "/nngp"], arrays[case["name"] + "/ntk"] = nngp, ntk
        info["cases"][case["name"]] = {"stax": expr, "nt_is_reversed": bool(k.is_reversed),
                                       "nt_dtype": str(k.nngp.dtype)}
        print(f"  NT {case['name']}: {nngp.shape}", file=sys.stderr, flush=True)
    np.savez(job["out_npz"], **arrays)
    Path(job["out_json"]).write_text(json.dumps(info))


# -- the driver (meanfield's venv) -------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(OUT), help="output path without extension")
    args = ap.parse_args()
    if args.worker:
        worker(args.worker)
        return

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    sys.path.insert(0, str(ROOT / "scripts"))
    from _nt_env import PINS, ensure_env

    py = ensure_env(log)
    if py is None:
        sys.exit("neural-tangents is not available")
    cases = _cases()
    with tempfile.TemporaryDirectory() as tmp:
        Xs = {}
        for c in cases:
            Xs[c["name"]] = np.random.default_rng(c["seed"]).standard_normal(tuple(c["shape"]))
            np.save(os.path.join(tmp, c["name"] + ".npy"), Xs[c["name"]])
        job = {"out_npz": os.path.join(tmp, "nt.npz"), "out_json": os.path.join(tmp, "nt.json"),
               "cases": [{"name": c["name"], "spec": c["spec"], "x": os.path.join(tmp, c["name"] + ".npy")}
                         for c in cases]}
        Path(tmp, "job.json").write_text(json.dumps(job))
        env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
        proc = subprocess.run([str(py), __file__, "--worker", os.path.join(tmp, "job.json")], env=env)
        if proc.returncode != 0:
            sys.exit(f"neural-tangents worker failed (exit {proc.returncode})")
        with np.load(job["out_npz"]) as f:
            nt_arrays = {k: f[k] for k in f.files}
        nt_info = json.loads(Path(job["out_json"]).read_text())

    sys.path.insert(0, str(ROOT))
    from meanfield import network as nw

    arrays, out_cases = {}, {}
    for c in cases:
        name = c["name"]
        X = Xs[name]
        nngp, ntk = nt_arrays[f"{name}/nngp"], nt_arrays[f"{name}/ntk"]
        arrays[f"{name}/X"], arrays[f"{name}/nngp"], arrays[f"{name}/ntk"] = X, nngp, ntk
        k = nw.from_spec(c["spec"]).kernel(X)
        diff = {w: float(np.max(np.abs(a - b)) / np.max(np.abs(b)))
                for w, a, b in (("nngp", k.nngp, nngp), ("ntk", k.ntk, ntk))}
        out_cases[name] = {"spec": c["spec"], "seed": c["seed"], "X_shape": list(X.shape),
                           "kernel_shape": list(nngp.shape),
                           "layout": "(N, N)" if nngp.ndim == 2 else "(N, N, T, T')",
                           "meanfield_rel_diff_at_generation": diff, **nt_info["cases"][name]}
        log(f"{name}: max |meanfield - NT| / max |NT|: nngp {diff['nngp']:.2e}, ntk {diff['ntk']:.2e}")
    meta = {
        "what": "neural-tangents 0.6.5 NNGP / NTK (float64, NTK parameterization) of attention "
                "networks, for tests/test_network_attention.py",
        "provenance": {
            "script": "scripts/nt_attention_reference.py",
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "pins": PINS, "neural_tangents": nt_info["neural_tangents"], "jax": nt_info["jax"],
            "jaxlib": nt_info["jaxlib"], "worker_numpy": nt_info["numpy"],
            "python": platform.python_version(), "platform": platform.platform(),
            "inputs": "np.random.default_rng(seed).standard_normal(X_shape), float64",
            "call": "kernel_fn(X, None, ('nngp', 'ntk', 'is_reversed')), jax_enable_x64, not jitted",
        },
        "cases": out_cases,
    }
    out = Path(args.out)
    np.savez_compressed(out.with_suffix(".npz"), **arrays)
    out.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    log(f"wrote {out.with_suffix('.npz')} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
