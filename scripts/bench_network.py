#!/usr/bin/env python
"""Benchmark: NNGP + NTK of a depth-5 CNN, meanfield.network against neural-tangents (issue 8 s. 5).

    python scripts/bench_network.py [--sizes 64] [--acts relu erf] [--repeat 2] [--no-nt]
                                    [--nt-batch 0]

The network (meanfield's JSON spec): 5 x [conv 3x3 SAME (sigma_w2 2, sigma_b2 0.1), activation],
global_avg_pool, dense readout (sigma_w2 1, sigma_b2 0.1), NTK parametrisation, float64, on N
Gaussian inputs of shape 16 x 16 x 3 (``np.random.default_rng(0)``).  It times

* meanfield in this process: ``from_spec(spec).kernel(X)`` -> ``k.nngp``, ``k.ntk`` (N, N); the
  best of --repeat cold calls (a new network from the spec, meanfield's lru caches cleared before
  each; imports warmed up on 2 inputs); its peak memory from one more call under tracemalloc
  (numpy's allocations are traced), and
* neural-tangents on CPU in its side environment .bench_env/ (scripts/_nt_env.py; never a
  meanfield dependency), the same spec translated by scripts/nt_network_reference.py
  (Conv(1, (3, 3), (1, 1), 'SAME', W_std, b_std), Relu() / Erf(), GlobalAvgPool(), Dense),
  ``jax.jit(kernel_fn, static_argnames="get")``, float64: the first call includes the compilation,
  the best of the following --repeat calls is "steady"; its peak memory is the process's peak RSS
  (resource.getrusage) minus the RSS before the first call.  --nt-batch B runs NT through
  ``nt.batch(kernel_fn, B)`` (blocks of B x B inputs) to bound its memory; 0 (default) does not.

NT keeps the full spatial covariance (N, N, 16, 16, 16, 16) between layers, 8 N^2 * 65536 bytes
(2.1 GB per array at N = 64; NT issues #28, #29): jitted and unbatched, NT went past 15 GB
of RSS at N = 64 (stopped on a 23 GB machine); --nt-batch 16 keeps it near 1 GB.  Both kernels are
compared entry by entry: "rel" is max |ours - NT| / |NT| over the N x N entries, "rel/max" is
max |ours - NT| / max |NT|.  Timings on a shared machine vary; ratios come from one run, side by
side; nothing here is a test expectation.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
DEPTH, SW, SB, SHAPE = 5, 2.0, 0.1, (16, 16, 3)
ACTS = ("relu", "erf")


def spec_for(act: str, depth: int = DEPTH) -> list[dict]:
    conv = {"layer": "conv", "filter": [3, 3], "strides": [1, 1], "padding": "same",
            "sigma_w2": SW, "sigma_b2": SB}
    body = [conv, {"layer": "activation", "fn": act}] * depth
    return body + [{"layer": "global_avg_pool"}, {"layer": "dense", "sigma_w2": 1.0, "sigma_b2": 0.1}]


def inputs(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *SHAPE))


# -- neural-tangents worker (side environment) ----------------------------------------------

def worker(job_path: str) -> None:
    import resource
    import warnings

    warnings.simplefilter("ignore")
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import neural_tangents as nt
    from neural_tangents import stax

    sys.path.insert(0, str(SCRIPTS))
    from nt_network_reference import _translate

    job = json.loads(Path(job_path).read_text())
    X = np.load(job["x"])
    layer, expr = _translate(job["spec"], stax, jnp, 0)
    _, _, kfn = layer
    kfn = jax.jit(kfn, static_argnames="get")
    if job["batch"]:
        kfn = nt.batch(kfn, batch_size=job["batch"], store_on_device=False)

    def rss() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kB

    base = rss()
    times = []
    for _ in range(1 + job["repeat"]):
        t = time.perf_counter()
        k = kfn(X, None, get=("nngp", "ntk"))
        nngp, ntk = np.asarray(k.nngp), np.asarray(k.ntk)
        times.append(time.perf_counter() - t)
        del k
    np.savez(job["out"], nngp=nngp, ntk=ntk)
    print(json.dumps({"times": times, "peak_rss": rss(), "base_rss": base, "stax": expr,
                      "nt": nt.__version__, "jax": jax.__version__}))


# -- meanfield side ---------------------------------------------------------------------------

def clear_caches() -> None:
    """Make the next meanfield call cold: clear every functools cache in meanfield's modules."""
    import importlib
    import pkgutil

    import meanfield

    for mod in pkgutil.walk_packages(meanfield.__path__, "meanfield."):
        if mod.name.startswith(("meanfield.torch", "meanfield.plot", "meanfield.scaleout")):
            continue
        m = sys.modules.get(mod.name)
        if m is None:
            continue
        for obj in list(vars(m).values()):
            if callable(getattr(obj, "cache_clear", None)):
                obj.cache_clear()
    try:
        importlib.import_module("meanfield.kernels").clear_cache()
    except (ImportError, AttributeError):
        pass


def time_ours(spec, X, repeat: int):
    import tracemalloc

    from meanfield.network import from_spec

    from_spec(spec).kernel(X[:2])  # warm up imports and lazily built helpers
    best, k = float("inf"), None
    for _ in range(repeat):
        clear_caches()
        t = time.perf_counter()
        k = from_spec(spec).kernel(X)
        nngp, ntk = np.asarray(k.nngp), np.asarray(k.ntk)
        best = min(best, time.perf_counter() - t)
    clear_caches()
    tracemalloc.start()
    tracemalloc.reset_peak()
    k2 = from_spec(spec).kernel(X)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del k2
    return best, nngp, ntk, peak, getattr(k, "peak_bytes", None)


def fmt_bytes(b) -> str:
    if b is None:
        return "n/a"
    for unit, f in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= f:
            return f"{b / f:.2f} {unit}"
    return f"{b} B"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64], help="numbers of inputs N")
    ap.add_argument("--acts", nargs="+", default=list(ACTS))
    ap.add_argument("--repeat", type=int, default=2,
                    help="best of this many cold meanfield calls / NT calls after the compiling one")
    ap.add_argument("--no-nt", action="store_true", help="time meanfield only")
    ap.add_argument("--no-ours", action="store_true",
                    help="time neural-tangents only (meanfield's full-spatial state is large at N = 64)")
    ap.add_argument("--nt-batch", type=int, default=0,
                    help="run NT through nt.batch with this block size (0: one call, no batching)")
    args = ap.parse_args()
    if args.worker:
        worker(args.worker)
        return
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(SCRIPTS))

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    py = None
    if not args.no_nt:
        from _nt_env import ensure_env

        py = ensure_env(log)
    print(f"# CNN: {DEPTH} x [conv 3x3 SAME (sigma_w2 {SW}, sigma_b2 {SB}), act] + global_avg_pool + "
          f"dense readout; inputs {'x'.join(map(str, SHAPE))}, Gaussian seed 0; NTK parametrisation, "
          f"float64; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start"
          + (f"; NT through nt.batch({args.nt_batch})" if args.nt_batch else ""))
    head = (f"{'act':5s} {'N':>4s} {'NT steady s':>11s} {'NT compile s':>12s} {'ours s':>8s} "
            f"{'NT/ours':>8s} {'rel nngp':>9s} {'rel ntk':>9s} {'rel/max ntk':>11s} "
            f"{'NT peak RSS':>12s} {'ours peak':>10s} {'ours state':>10s}")
    print(head)
    nan = float("nan")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            X = inputs(n)
            xpath = os.path.join(tmp, f"X{n}.npy")
            np.save(xpath, X)
            for act in args.acts:
                spec = spec_for(act)
                ours, o_nngp, o_ntk, o_peak, o_state = nan, None, None, None, None
                if not args.no_ours:
                    try:
                        ours, o_nngp, o_ntk, o_peak, o_state = time_ours(spec, X, args.repeat)
                    except ImportError as exc:
                        log(f"meanfield.network unavailable: {exc}")
                nt_steady = nt_first = None
                nt_peak = None
                rel = (nan, nan, nan)
                if py is not None:
                    job = {"x": xpath, "spec": spec, "repeat": args.repeat, "batch": args.nt_batch,
                           "out": os.path.join(tmp, f"nt_{act}_{n}.npz")}
                    jpath = os.path.join(tmp, "job.json")
                    Path(jpath).write_text(json.dumps(job))
                    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
                    proc = subprocess.run([str(py), __file__, "--worker", jpath], capture_output=True,
                                          text=True, env=env)
                    if proc.returncode == 0:
                        out = json.loads(proc.stdout.strip().splitlines()[-1])
                        nt_first = out["times"][0]
                        nt_steady = min(out["times"][1:]) if len(out["times"]) > 1 else nt_first
                        nt_peak = out["peak_rss"] - out["base_rss"]
                        with np.load(job["out"]) as f:
                            n_nngp, n_ntk = f["nngp"], f["ntk"]
                        if o_nngp is not None:
                            rel = (float(np.max(np.abs(o_nngp - n_nngp) / np.abs(n_nngp))),
                                   float(np.max(np.abs(o_ntk - n_ntk) / np.abs(n_ntk))),
                                   float(np.max(np.abs(o_ntk - n_ntk)) / np.max(np.abs(n_ntk))))
                    else:
                        last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
                        log(f"neural-tangents failed for {act}, N = {n} (exit {proc.returncode}): {last}")
                ratio = nt_steady / ours if nt_steady and ours == ours else nan
                print(f"{act:5s} {n:4d} {nt_steady if nt_steady else nan:11.2f} "
                      f"{nt_first if nt_first else nan:12.2f} {ours:8.2f} {ratio:8.2f} "
                      f"{rel[0]:9.1e} {rel[1]:9.1e} {rel[2]:11.1e} {fmt_bytes(nt_peak):>12s} "
                      f"{fmt_bytes(o_peak):>10s} {fmt_bytes(o_state):>10s}", flush=True)
    print("# NT compile s: NT's first call (compilation + one evaluation); NT steady s: best later call")
    print("# NT peak RSS: peak resident memory of the NT process minus its RSS before the first call; "
          "ours peak: tracemalloc peak of one kernel call; ours state: the largest kernel state "
          "meanfield reports (NetworkKernel.peak_bytes)")


if __name__ == "__main__":
    main()
