#!/usr/bin/env python
"""Benchmark: kernels written to a zarr store on dask (meanfield.scaleout; issue 14 section 3).

    python scripts/bench_scaleout.py equality [--n 2000] [--tiles 256,500,512,999,1000,1333,2000,4096]
    python scripts/bench_scaleout.py big --n 50000 [--chunk 4096] [--workers 2] [--dir DIR] [--keep]
    python scripts/bench_scaleout.py memory [--n 2000,4000]
    python scripts/bench_scaleout.py distributed [--n 2000] [--chunk 500]
    python scripts/bench_scaleout.py solve [--n 4000] [--train 3500] [--chunk 1000] [--noise 0.01]

The network is bench_kernels.py's: N inputs of dimension 784 (Gaussian vectors rescaled to
x.x/d = 1, seed 0), a depth-10 relu MLP with a linear readout, sigma_w2 = 2, sigma_b2 = 0.1, NTK
parametrisation, float64.

* ``equality``: the store (local threads) against the in-memory ``Network.kernel`` on the same
  inputs, for every tile size given (dividing N or not): the largest |difference| relative to
  the largest entry, NNGP and NTK.
* ``big``: one store of N inputs; wall time and the peak RSS of this process
  (``ru_maxrss``: everything the tiles, dask and zarr held at once).  The store goes to --dir
  (default a temporary folder on /tmp, deleted afterwards unless --keep); it needs 16 N^2 bytes
  of disk (40 GB at N = 50,000).
* ``memory``: the in-memory ``Network.kernel`` at each N (time, peak RSS), each in a fresh
  subprocess so that the peaks do not mix; its time extrapolates as N^2 to the sizes that do not
  fit (two N^2 float64 arrays: 40 GB at N = 50,000).
* ``distributed``: a dask.distributed LocalCluster with 2 worker processes started here; one is
  SIGKILLed after the first few tiles; the finished store is compared with the in-memory kernel.
* ``solve``: the NNGP posterior mean and the t = inf gradient-flow mean on the last N - train
  inputs, by conjugate gradients from the store (meanfield.dynamics.stored_posterior_mean,
  stored_flow_mean), against the in-memory eigendecomposition (nngp_posterior, gradient_flow);
  targets sin(3 x_0 sqrt(d)) + x_1 sqrt(d), seed 0.

Each mode prints one JSON object per measurement.  Timings on a shared machine vary.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEPTH, SW, SB, DIM = 10, 2.0, 0.1, 784


def network():
    from meanfield import network as nw

    return nw.preset("mlp", "relu", DEPTH, sigma_w2=SW, sigma_b2=SB)


def inputs(n: int) -> np.ndarray:
    X = np.random.default_rng(0).standard_normal((n, DIM))
    return X * np.sqrt(DIM / np.sum(X * X, axis=1, keepdims=True))


def peak_rss_gb() -> float:
    # Linux reports ru_maxrss in KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def compare(store: Path, ref) -> dict:
    """Largest |stored - in memory| / max |in memory|, read back one row block at a time."""
    import zarr

    out = {}
    for name in ("nngp", "ntk"):
        A, R = zarr.open_array(str(store / name), mode="r"), getattr(ref, name)
        worst, bitwise = 0.0, True
        for a in range(0, A.shape[0], 1000):
            blk = A[a:a + 1000]
            worst = max(worst, float(np.max(np.abs(blk - R[a:a + 1000]))))
            bitwise &= bool(np.array_equal(blk, R[a:a + 1000]))
        out[f"{name}_rel_diff"] = worst / float(np.max(np.abs(R)))
        out[f"{name}_bitwise"] = bitwise
    return out


def emit(d: dict) -> None:
    print(json.dumps(d), flush=True)


def equality(args) -> None:
    from meanfield.scaleout import kernel_store

    X, net = inputs(args.n), network()
    t0 = time.perf_counter()
    ref = net.kernel(X)
    emit({"mode": "memory", "n": args.n, "seconds": time.perf_counter() - t0})
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        for tile in [int(t) for t in args.tiles.split(",")]:
            path = Path(d) / f"k{tile}.zarr"
            res = kernel_store(net, X, path, chunk=tile)
            emit({"mode": "equality", "n": args.n, "tile": tile, "tiles": res.tiles,
                  "seconds": res.seconds, **compare(path, ref)})
            shutil.rmtree(path)


def big(args) -> None:
    from meanfield.scaleout import kernel_store

    X, net = inputs(args.n), network()
    d = Path(tempfile.mkdtemp(dir=args.dir, prefix="bench_scaleout_"))
    try:
        res = kernel_store(net, X, d / "k.zarr", chunk=args.chunk, workers=args.workers)
        size = sum(f.stat().st_size for f in (d / "k.zarr").rglob("*") if f.is_file())
        emit({"mode": "big", "n": args.n, "chunk": args.chunk, "workers": args.workers,
              "tiles": res.tiles, "seconds": res.seconds, "peak_rss_gb": peak_rss_gb(),
              "store_gb": size / 1e9, "store": str(d / "k.zarr") if args.keep else None})
    finally:
        if not args.keep:
            shutil.rmtree(d, ignore_errors=True)


MEMORY_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[2])
from bench_scaleout import inputs, network, peak_rss_gb
n = int(sys.argv[1]); X, net = inputs(n), network()
net.kernel(X[:64])                       # imports and tables warmed, as in the store's run
t0 = time.perf_counter(); net.kernel(X); t = time.perf_counter() - t0
print(json.dumps({"mode": "memory", "n": n, "seconds": t, "peak_rss_gb": peak_rss_gb()}))
"""


def memory(args) -> None:
    for n in [int(v) for v in args.n.split(",")]:
        out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(n), str(Path(__file__).parent)],
                             capture_output=True, text=True, check=True)
        print(out.stdout.strip(), flush=True)


def distributed(args) -> None:
    from distributed import LocalCluster

    from meanfield.scaleout import kernel_store

    X, net = inputs(args.n), network()
    ref = net.kernel(X)
    with tempfile.TemporaryDirectory(dir=args.dir) as d, \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        # the nannies' worker processes (no second Client in this process: one is enough)
        pids = sorted(w.process.pid for w in cluster.workers.values())
        killed: list[int] = []

        def progress(done: int, total: int) -> None:
            if done >= 3 and not killed:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])

        res = kernel_store(net, X, Path(d) / "k.zarr", chunk=args.chunk,
                           scheduler=cluster.scheduler_address, progress=progress)
        emit({"mode": "distributed", "n": args.n, "chunk": args.chunk, "tiles": res.tiles,
              "computed": res.computed, "worker_killed": bool(killed), "seconds": res.seconds,
              **compare(Path(d) / "k.zarr", ref)})


def solve(args) -> None:
    from meanfield.dynamics import gradient_flow, nngp_posterior, stored_flow_mean, stored_posterior_mean
    from meanfield.scaleout import kernel_store

    X, net, n = inputs(args.n), network(), args.train
    y = np.sin(3 * X[:n, 0] * np.sqrt(DIM)) + X[:n, 1] * np.sqrt(DIM)
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        path = Path(d) / "k.zarr"
        kernel_store(net, X, path, chunk=args.chunk)
        ref = net.kernel(X)
        t0 = time.perf_counter()
        got = stored_posterior_mean(path, y, n, noise=args.noise)
        t_cg = time.perf_counter() - t0
        t0 = time.perf_counter()
        want = nngp_posterior(ref.nngp[:n, :n], y, ref.nngp[n:, :n], noise=args.noise).mean
        t_mem = time.perf_counter() - t0
        emit({"mode": "solve", "what": "nngp_posterior", "n": args.n, "train": n, "noise": args.noise,
              "iterations": got.iterations, "cg_seconds": t_cg, "eigh_seconds": t_mem,
              "rel_diff": float(np.max(np.abs(got.mean - want)) / np.max(np.abs(want)))})
        t0 = time.perf_counter()
        got = stored_flow_mean(path, y, n)
        t_cg = time.perf_counter() - t0
        want = gradient_flow(ref.ntk[:n, :n], y, np.inf, ntk_test_train=ref.ntk[n:, :n]).mean[0]
        emit({"mode": "solve", "what": "gradient_flow_t_inf", "n": args.n, "train": n,
              "iterations": got.iterations, "cg_seconds": t_cg,
              "rel_diff": float(np.max(np.abs(got.mean - want)) / np.max(np.abs(want)))})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("equality")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--tiles", default="256,500,512,999,1000,1333,2000,4096")
    p = sub.add_parser("big")
    p.add_argument("--n", type=int, default=50000)
    p.add_argument("--chunk", type=int, default=4096)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--keep", action="store_true")
    p = sub.add_parser("memory")
    p.add_argument("--n", default="2000,4000")
    p = sub.add_parser("distributed")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--chunk", type=int, default=500)
    p = sub.add_parser("solve")
    p.add_argument("--n", type=int, default=4000)
    p.add_argument("--train", type=int, default=3500)
    p.add_argument("--chunk", type=int, default=1000)
    p.add_argument("--noise", type=float, default=0.01)
    for p in sub.choices.values():
        p.add_argument("--dir", default=None, help="folder for the stores (default the system's temporary folder)")
    args = ap.parse_args()
    {"equality": equality, "big": big, "memory": memory, "distributed": distributed, "solve": solve}[args.mode](args)


if __name__ == "__main__":
    main()
