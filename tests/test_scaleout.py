"""Kernels written to a zarr store in tiles on dask (meanfield.scaleout, issue 14).

The reference for every stored entry is the in-memory ``Network.kernel`` on the same inputs (the
tile code is shared, so the stored kernel must equal it to rounding, for tile sizes that divide
N and ones that do not); the resume tests break a finished store or kill a run mid-way and check
that only the missing tiles are recomputed and the result is unchanged.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from meanfield import network as nw
from meanfield.errors import DomainError

HAVE_DASK = all(importlib.util.find_spec(m) is not None for m in ("dask", "zarr"))
needs_dask = pytest.mark.skipif(not HAVE_DASK, reason="dask and zarr (the meanfield[dask] extra) are not installed")


def mlp():
    # relu and erf: closed-form kernels, so each tile costs milliseconds
    return nw.serial(nw.dense(1.5, sigma_b2=0.1), nw.activation("relu"), nw.dense(2.0, sigma_b2=0.05),
                     nw.activation("erf"), nw.dense(1.0))


def cnn(readout: bool):
    body = [nw.conv([3, 3], padding="same", sigma_w2=2.0, sigma_b2=0.1), nw.activation("relu"),
            nw.conv([2, 2], sigma_w2=1.5), nw.activation("erf")]
    tail = [nw.flatten(), nw.dense(1.0)] if readout else [nw.avg_pool([2, 2])]
    return nw.serial(*body, *tail)


def inputs(n: int, shape=(8,), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *shape))


def stored(path, name):
    from meanfield.scaleout import open_kernel

    return np.asarray(open_kernel(path, name)[...])


def assert_same(got, want):
    # the tile code is the in-memory code: equal up to the order of a few sums
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) <= 1e-14 * np.max(np.abs(want)), np.max(np.abs(got - want))


# ------------------------------------------------------------------------------------------
# equality with Network.kernel
# ------------------------------------------------------------------------------------------

@needs_dask
@pytest.mark.parametrize("chunk", [4, 7, 23, 40])
@pytest.mark.parametrize("param", ["ntk", "standard"])
def test_mlp_store_equals_kernel(tmp_path, chunk, param):
    from meanfield.scaleout import kernel_store

    net, X = mlp(), inputs(23)
    ref = net.kernel(X, parametrization=param)
    res = kernel_store(net, X, tmp_path / "k.zarr", chunk=chunk, parametrization=param)
    nb = -(-23 // chunk)
    assert (res.n, res.tiles, res.computed, res.already_done) == (23, nb * (nb + 1) // 2, nb * (nb + 1) // 2, 0)
    assert res.parametrization == param
    assert_same(stored(tmp_path / "k.zarr", "nngp"), ref.nngp)
    assert_same(stored(tmp_path / "k.zarr", "ntk"), ref.ntk)


@needs_dask
@pytest.mark.parametrize("chunk", [2, 3, 7])
@pytest.mark.parametrize("readout", [True, False])
def test_cnn_store_equals_kernel(tmp_path, chunk, readout):
    from meanfield.scaleout import kernel_store

    net, X = cnn(readout), inputs(7, (6, 6, 2), seed=1)
    ref = net.kernel(X)
    kernel_store(net, X, tmp_path / "c.zarr", chunk=chunk)
    for name in ("nngp", "ntk"):
        got = stored(tmp_path / "c.zarr", name)
        # without a readout the kernel keeps position pairs (N, N, s1, s1', s2, s2'): the mirrored
        # tiles must swap the position axes too, which an asymmetric network would expose
        assert got.shape == ((7, 7) if readout else (7, 7, 3, 3, 3, 3))
        assert_same(got, getattr(ref, name))


@needs_dask
def test_nngp_only_and_local_workers(tmp_path):
    from meanfield.scaleout import kernel_store, open_kernel

    net, X = mlp(), inputs(11)
    seen = []
    kernel_store(net, X, tmp_path / "k.zarr", chunk=3, ntk=False, workers=1,
                 progress=lambda done, total: seen.append((done, total)))
    assert_same(stored(tmp_path / "k.zarr", "nngp"), net.kernel(X).nngp)
    assert seen[-1] == (10, 10) and [d for d, _ in seen] == list(range(1, 11))
    with pytest.raises(DomainError, match="ntk"):
        open_kernel(tmp_path / "k.zarr", "ntk")


# ------------------------------------------------------------------------------------------
# resume
# ------------------------------------------------------------------------------------------

@needs_dask
def test_resume_recomputes_only_unmarked_tiles(tmp_path):
    import zarr

    from meanfield.scaleout import kernel_store, open_kernel

    net, X = mlp(), inputs(20)
    path = tmp_path / "k.zarr"
    kernel_store(net, X, path, chunk=6)          # 4 x 4 blocks: 10 tiles
    ref = net.kernel(X)
    done = path / "meanfield" / "done"
    # a half-written upper tile (garbage in one half, marker gone) and a lost diagonal tile
    nngp = zarr.open_array(str(path / "nngp"), mode="r+")
    nngp[0:3, 6:12] = 123.0
    nngp[6:12, 0:6] = np.nan
    (done / "0_1").unlink()
    (done / "2_2").unlink()
    with pytest.raises(DomainError, match="incomplete: 2 tiles missing"):
        open_kernel(path)
    res = kernel_store(net, X, path, chunk=6)
    assert (res.tiles, res.computed, res.already_done) == (10, 2, 8)
    assert_same(stored(path, "nngp"), ref.nngp)
    assert_same(stored(path, "ntk"), ref.ntk)
    again = kernel_store(net, X, path, chunk=6)
    assert (again.computed, again.already_done) == (0, 10)


@needs_dask
def test_resume_after_a_hard_kill(tmp_path):
    """A run killed with os._exit after 4 tiles (threads still writing other tiles) resumes."""
    path = tmp_path / "k.zarr"
    code = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_scaleout import mlp, inputs
        from meanfield.scaleout import kernel_store
        def progress(done, total):
            if done >= 4:
                os._exit(9)
        kernel_store(mlp(), inputs(30), {str(path)!r}, chunk=5, workers=2, progress=progress)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr
    from meanfield.scaleout import kernel_store

    # a marker being written when the process died is a hidden temporary file, not a marker
    marked = len([f for f in os.listdir(path / "meanfield" / "done") if not f.startswith(".")])
    assert 4 <= marked < 21
    net, X = mlp(), inputs(30)
    res = kernel_store(net, X, path, chunk=5)
    assert res.already_done == marked and res.computed == 21 - marked
    ref = net.kernel(X)
    assert_same(stored(path, "nngp"), ref.nngp)
    assert_same(stored(path, "ntk"), ref.ntk)


@needs_dask
def test_refuses_to_resume_with_other_spec_inputs_version_or_chunk(tmp_path, monkeypatch):
    import meanfield
    from meanfield.scaleout import kernel_store

    net, X = mlp(), inputs(9)
    path = tmp_path / "k.zarr"
    kernel_store(net, X, path, chunk=4)
    other = nw.serial(nw.dense(1.6, sigma_b2=0.1), nw.activation("relu"), nw.dense(2.0, sigma_b2=0.05),
                      nw.activation("erf"), nw.dense(1.0))
    X2 = X.copy()
    X2[3, 2] += 1e-12
    cases = [((other, X), {}, "spec (sha256 "), ((net, X2), {}, "inputs (sha256 "),
             ((net, X), {"chunk": 5}, "chunk"), ((net, X), {"parametrization": "standard"}, "parametrization"),
             ((net, X), {"ntk": False}, "ntk")]
    for args, kw, field in cases:
        with pytest.raises(DomainError) as e:
            kernel_store(*args, path, **{"chunk": 4, **kw})
        msg = str(e.value)
        assert "\n" not in msg and f"different {field}" in msg and "refusing to resume" in msg, msg
    monkeypatch.setattr(meanfield, "__version__", "0.0.0-other")
    with pytest.raises(DomainError, match="different version .*refusing to resume"):
        kernel_store(net, X, path, chunk=4)


@needs_dask
def test_bad_arguments_one_line(tmp_path):
    from meanfield.scaleout import kernel_store, open_kernel

    net, X = mlp(), inputs(5)
    (tmp_path / "plain").mkdir()
    bad = [(dict(store=tmp_path / "plain"), "not a meanfield kernel store"),
           (dict(store=tmp_path / "no" / "k.zarr"), "output folder does not exist"),
           (dict(store=tmp_path / "k.zarr", chunk=0), "chunk must be a positive integer"),
           (dict(store=tmp_path / "k.zarr", chunk=2.5), "chunk must be a positive integer"),
           (dict(store=tmp_path / "k.zarr", parametrization="mup"), "parametrization must be one of"),
           (dict(store=tmp_path / "k.zarr", method="spline"), "method must be one of")]
    for kw, needle in bad:
        with pytest.raises(DomainError) as e:
            kernel_store(net, X, **kw)
        assert needle in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "k.zarr").exists() and not (tmp_path / "no").exists()
    bn = nw.serial(nw.dense(1.0), nw.batch_norm(), nw.activation("relu"), nw.dense(1.0))
    with pytest.raises(DomainError, match="needs the whole batch"):
        kernel_store(bn, X, tmp_path / "k.zarr")
    with pytest.raises(DomainError, match="not a readable meanfield kernel store"):
        open_kernel(tmp_path / "plain")
    assert sorted(os.listdir(tmp_path)) == ["plain"]   # nothing half-written


# ------------------------------------------------------------------------------------------
# the core package never imports dask
# ------------------------------------------------------------------------------------------

def test_core_package_never_imports_dask():
    code = ("import meanfield, meanfield.network, meanfield.dynamics, meanfield.scaleout, meanfield.cli, sys; "
            "bad = [m for m in ('dask', 'distributed', 'zarr') if m in sys.modules]; "
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


# ------------------------------------------------------------------------------------------
# a dask.distributed cluster
# ------------------------------------------------------------------------------------------

@needs_dask
@pytest.mark.slow
def test_distributed_cluster_same_result(tmp_path):
    pytest.importorskip("distributed")
    from distributed import LocalCluster

    from meanfield.scaleout import kernel_store

    net, X = mlp(), inputs(25)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        res = kernel_store(net, X, tmp_path / "k.zarr", chunk=6, scheduler=cluster.scheduler_address)
    assert (res.computed, res.already_done) == (15, 0)
    ref = net.kernel(X)
    assert_same(stored(tmp_path / "k.zarr", "nngp"), ref.nngp)
    assert_same(stored(tmp_path / "k.zarr", "ntk"), ref.ntk)


@needs_dask
@pytest.mark.slow
def test_distributed_worker_killed_mid_run(tmp_path):
    """Two worker processes; one is SIGKILLed after 3 tiles: its tiles are rerun elsewhere and
    the store is complete and right."""
    pytest.importorskip("distributed")
    import signal

    from distributed import LocalCluster

    from meanfield.scaleout import kernel_store

    net, X = mlp(), inputs(24)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        # the nannies' worker processes (no second Client in this process: one is enough)
        pids = sorted(w.process.pid for w in cluster.workers.values())
        killed = []

        def progress(done, total):
            if done == 3 and not killed:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])

        res = kernel_store(net, X, tmp_path / "k.zarr", chunk=3, scheduler=cluster.scheduler_address,
                           progress=progress)
    assert killed and (res.computed, res.already_done) == (36, 0)
    ref = net.kernel(X)
    assert_same(stored(tmp_path / "k.zarr", "nngp"), ref.nngp)
    assert_same(stored(tmp_path / "k.zarr", "ntk"), ref.ntk)


@needs_dask
def test_unreachable_scheduler_one_line(tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    from meanfield import scaleout

    monkeypatch.setattr(scaleout, "CONNECT_TIMEOUT", "1s")
    with pytest.raises(DomainError, match="cannot reach the dask scheduler at 'tcp://127.0.0.1:9'"):
        scaleout.kernel_store(mlp(), inputs(4), tmp_path / "k.zarr", scheduler="tcp://127.0.0.1:9")
    assert not (tmp_path / "k.zarr").exists()
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://127.0.0.1:9")
    with pytest.raises(DomainError, match="cannot reach the dask scheduler"):
        scaleout.kernel_store(mlp(), inputs(4), tmp_path / "k.zarr")


# ------------------------------------------------------------------------------------------
# the command line: meanfield kernel --out K.zarr
# ------------------------------------------------------------------------------------------

def cli(*args, env=None):
    from typer.testing import CliRunner

    from meanfield.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def cli_error(res, code, needle):
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.exit_code == code and len(lines) == 1 and needle in lines[0], (res.exit_code, res.stderr)
    assert res.stdout == "" and "Traceback" not in res.stderr


@pytest.fixture
def files(tmp_path):
    import json

    net, X = mlp(), inputs(13)
    (tmp_path / "net.json").write_text(json.dumps(net.to_spec()))
    np.save(tmp_path / "x.npy", X)
    return tmp_path, net, X


@needs_dask
def test_cli_kernel_zarr_json_and_resume(files):
    import json
    from dataclasses import fields

    from meanfield.scaleout import StoredKernel

    d, net, X = files
    args = ("kernel", "--net", d / "net.json", "--x", d / "x.npy", "--out", d / "k.zarr", "--chunk", 5, "--json")
    res = cli(*args)
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert list(out) == [f.name for f in fields(StoredKernel)]
    assert (out["n"], out["chunk"], out["tiles"], out["computed"], out["store"]) == (13, 5, 6, 6, str(d / "k.zarr"))
    ref = net.kernel(X)
    assert_same(stored(d / "k.zarr", "nngp"), ref.nngp)
    assert_same(stored(d / "k.zarr", "ntk"), ref.ntk)
    again = json.loads(cli(*args).stdout)
    assert (again["computed"], again["already_done"]) == (0, 6)
    # the same store asked for with another tile size is refused, not mixed
    cli_error(cli(*args[:-3], "--chunk", 4), 2, "different chunk")


@needs_dask
def test_cli_kernel_zarr_preset_equals_kernels(files):
    from meanfield.kernels import kernel

    d, _, X = files
    res = cli("kernel", "--arch", "mlp", "-a", "erf", "-L", 3, "--sigma-w2", 1.7, "--sigma-b2", 0.2,
              "--x", d / "x.npy", "--out", d / "p.zarr", "--chunk", 4, "--parametrization", "standard", "--quiet")
    assert res.exit_code == 0, res.stderr
    ref = kernel("mlp", "erf", X, depth=3, sigma_w2=1.7, sigma_b2=0.2, parametrization="standard")
    assert_same(stored(d / "p.zarr", "nngp"), ref.nngp)
    assert_same(stored(d / "p.zarr", "ntk"), ref.ntk)


@needs_dask
def test_cli_kernel_zarr_bad_usage(files, monkeypatch):
    import importlib.util

    from meanfield import scaleout

    d, _, _ = files
    base = ("kernel", "--net", d / "net.json", "--x", d / "x.npy")
    np.save(d / "x2.npy", inputs(3))
    cli_error(cli(*base, "--out", d / "k.zarr", "--x2", d / "x2.npy"), 2, "--x2 is not available with a .zarr")
    cli_error(cli(*base, "--out", d / "k.zarr", "--dtype", "float32"), 2, "--dtype is not available")
    cli_error(cli(*base, "--out", d / "k.npz", "--chunk", 4), 2, "--chunk applies to a .zarr --out only")
    cli_error(cli(*base, "--out", d / "k.npz", "--scheduler", "tcp://x:1"), 2, "--scheduler applies")
    cli_error(cli(*base, "--out", d / "k.zarr", "-a", "relu"), 2, "-a")
    cli_error(cli("kernel", "--x", d / "x.npy", "--out", d / "k.zarr", "-a", "relu"), 2, "--depth is required")
    monkeypatch.setattr(scaleout, "CONNECT_TIMEOUT", "1s")
    cli_error(cli(*base, "--out", d / "k.zarr", "--scheduler", "tcp://127.0.0.1:9"), 2,
              "cannot reach the dask scheduler at 'tcp://127.0.0.1:9'")
    cli_error(cli(*base, "--out", d / "k.zarr", env={"DASK_SCHEDULER_ADDRESS": "tcp://127.0.0.1:9"}), 2,
              "cannot reach the dask scheduler")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "dask" else real(name, *a))
    cli_error(cli(*base, "--out", d / "k.zarr"), 2, "pip install 'meanfield[dask]'")
    assert sorted(os.listdir(d)) == ["net.json", "x.npy", "x2.npy"]   # nothing written


# ------------------------------------------------------------------------------------------
# out-of-core solves (meanfield.dynamics.stored_posterior_mean / stored_flow_mean)
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def solve_store(tmp_path_factory):
    """40 training inputs then 9 test inputs, one store, tiles of 16 (not dividing 40 or 49)."""
    from meanfield.scaleout import kernel_store

    if not HAVE_DASK:
        pytest.skip("dask and zarr (the meanfield[dask] extra) are not installed")
    net, X = mlp(), inputs(49, seed=5)
    path = tmp_path_factory.mktemp("solve") / "k.zarr"
    kernel_store(net, X, path, chunk=16)
    return path, net.kernel(X)


def rel(got, want):
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


@needs_dask
@pytest.mark.parametrize("noise,diag_reg", [(0.0, 0.0), (0.1, 0.0), (0.0, 1e-3)])
def test_stored_posterior_mean_equals_in_memory(solve_store, noise, diag_reg):
    from meanfield.dynamics import nngp_posterior, stored_posterior_mean

    path, k = solve_store
    Y = np.random.default_rng(2).standard_normal((40, 2))
    got = stored_posterior_mean(path, Y, 40, noise=noise, diag_reg=diag_reg)
    want = nngp_posterior(k.nngp[:40, :40], Y, k.nngp[40:, :40], noise=noise, diag_reg=diag_reg)
    assert got.mean.shape == (9, 2) and (got.n_train, got.n_test, got.tile) == (40, 9, 16)
    assert rel(got.mean, want.mean) <= 1e-10
    assert got.diag_reg == pytest.approx(want.diag_reg, rel=1e-15)
    # the coefficients solve the regularised system (an independent check of the residual)
    A = k.nngp[:40, :40] + (noise + want.diag_reg) * np.eye(40)
    assert np.linalg.norm(A @ got.coefficients - Y) <= 1e-11 * np.linalg.norm(Y)
    assert got.relative_residual <= 1e-11


@needs_dask
@pytest.mark.parametrize("diag_reg", [0.0, 1e-2])
def test_stored_flow_mean_equals_gradient_flow(solve_store, diag_reg):
    from meanfield.dynamics import gradient_flow, stored_flow_mean

    path, k = solve_store
    y = np.random.default_rng(3).standard_normal(40)
    got = stored_flow_mean(path, y, 40, diag_reg=diag_reg)
    want = gradient_flow(k.ntk[:40, :40], y, np.inf, ntk_test_train=k.ntk[40:, :40], diag_reg=diag_reg,
                         learning_rate=0.3, loss="mean")
    assert got.mean.shape == (9,) and got.kernel == "ntk"
    assert rel(got.mean, want.mean[0]) <= 1e-10


@needs_dask
def test_stored_solve_from_any_array_and_bad_input(solve_store):
    import zarr

    from meanfield.dynamics import nngp_posterior, stored_posterior_mean
    from meanfield.errors import ConvergenceError

    path, k = solve_store
    y = np.linspace(-1, 1, 30)
    # an in-memory array with a tile that does not divide N; the training set alone (no test means)
    got = stored_posterior_mean(k.nngp[:30, :30], y, tile=4)
    assert got.n_test == 0 and got.mean.shape == (0,)
    alpha = np.linalg.solve(k.nngp[:30, :30], y)
    assert rel(got.coefficients, alpha) <= 1e-9
    m = nngp_posterior(k.nngp[:30, :30], y, k.nngp[30:, :30]).mean
    assert rel(stored_posterior_mean(zarr.open_array(str(path / "nngp"), mode="r")[:, :], y, 30).mean, m) <= 1e-10
    # duplicate training inputs: the kernel is singular and CG cannot reach the tolerance
    Kd = k.nngp[np.ix_([0, 0, 1, 2], [0, 0, 1, 2])]
    with pytest.raises(ConvergenceError, match="singular or badly conditioned|not positive definite"):
        stored_posterior_mean(Kd, [1.0, -1.0, 0.5, 0.2])
    for kw, needle in [(dict(store=k.nngp[:5, :4], y_train=np.ones(5)), "square N x N"),
                       (dict(store=k.nngp, y_train=np.ones(40), n_train=50), "n_train must be an integer in 1..49"),
                       (dict(store=k.nngp, y_train=np.ones(39), n_train=40), "y_train must have 40 rows"),
                       (dict(store=k.nngp, y_train=np.ones(49), noise=-1), "noise must be non-negative"),
                       (dict(store=k.nngp, y_train=np.ones(49), tile=0), "tile must be a positive integer")]:
        with pytest.raises(DomainError, match=needle):
            stored_posterior_mean(**kw)
    bad = k.nngp.copy()
    bad[3, 7] = np.nan
    with pytest.raises(DomainError, match="non-finite entries in rows 0:4"):
        stored_posterior_mean(bad, np.ones(49), tile=4)


# ------------------------------------------------------------------------------------------
# sweeps (meanfield.scaleout.sweep, meanfield sweep)
# ------------------------------------------------------------------------------------------

@needs_dask
def test_sweep_advise_gathers_each_job_in_order():
    from meanfield.advise import advise
    from meanfield.scaleout import sweep

    seen = []
    res = sweep("advise", ["relu", "erf"], [10, 40], processes=False, workers=2,
                progress=lambda d, t: seen.append((d, t)))
    assert [(j["activation"], j["depth"]) for j in res.jobs] == [("relu", 10), ("relu", 40), ("erf", 10), ("erf", 40)]
    assert res.failed == 0 and seen[-1] == (4, 4) and res.arrays == {}
    for j in res.jobs:
        want = advise("mlp", j["activation"], j["depth"]).to_dict()
        assert (j["result"]["sigma_w2"], j["result"]["sigma_b2"]) == (want["sigma_w2"], want["sigma_b2"])
    # a job outside the theory's domain is that job's error, not the sweep's
    bad = sweep("advise", ["erf"], [10], processes=False, budget=3.0)
    assert bad.failed == 1 and "do not apply to arch 'mlp'" in bad.jobs[0]["error"] and "result" not in bad.jobs[0]


@needs_dask
def test_sweep_phase_diagram_arrays_and_refusals():
    from meanfield.fixed_points import phase_diagram
    from meanfield.scaleout import sweep

    res = sweep("phase-diagram", ["tanh", "erf"], processes=False, grid=8, with_xi_c=False)
    for a in ("tanh", "erf"):
        want = phase_diagram(a, grid=8, with_xi_c=False)
        for name, arr in want.arrays().items():
            np.testing.assert_array_equal(res.arrays[f"{a}/{name}"], arr)
    assert res.jobs[1]["result"] == phase_diagram("erf", grid=8, with_xi_c=False).summary()
    for args, kw, needle in [(("plot", ["tanh"]), {}, "what must be one of"),
                             (("advise", ["tanh"]), {}, "depths must be a non-empty list"),
                             (("advise", ["tanh"], [0]), {}, "depths must be a non-empty list"),
                             (("advise", ["nope"], [3]), {}, "nope"),
                             (("advise", []), {"depths": [3]}, "activations must be a non-empty list"),
                             (("phase-diagram", ["tanh"], [3]), {}, "depths do not apply"),
                             (("advise", ["tanh"], [3]), {"workers": 0}, "workers must be a positive integer")]:
        with pytest.raises(DomainError, match=needle):
            sweep(*args, **kw)


@needs_dask
@pytest.mark.slow
def test_sweep_on_processes_and_a_cluster():
    pytest.importorskip("distributed")
    from distributed import LocalCluster

    from meanfield.scaleout import sweep

    ref = sweep("advise", ["erf", "relu"], [8], processes=False)
    local = sweep("advise", ["erf", "relu"], [8], workers=2)
    assert local.scheduler == "local processes (2)"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        remote = sweep("advise", ["erf", "relu"], [8], scheduler=cluster.scheduler_address)
    for other in (local, remote):
        assert [j["result"]["sigma_w2"] for j in other.jobs] == [j["result"]["sigma_w2"] for j in ref.jobs]


@needs_dask
def test_cli_sweep(tmp_path, monkeypatch):
    import importlib.util
    import json

    out = tmp_path / "s.json"
    res = cli("sweep", "--what", "advise", "--activations", "relu,erf", "--depths", "10,20", "--out", out,
              "--workers", 1, "--json")
    assert res.exit_code == 0, res.stderr
    d = json.loads(res.stdout)
    assert d == json.loads(out.read_text())
    assert list(d) == ["what", "jobs", "failed", "seconds", "scheduler"] and len(d["jobs"]) == 4
    assert d["scheduler"] == "local threads (1)"
    res = cli("sweep", "--what", "phase-diagram", "--activations", "erf", "--grid", 6, "--no-xi",
              "--out", tmp_path / "p.json", "--data", tmp_path / "p.npz", "--workers", 1, "--quiet")
    assert res.exit_code == 0 and "1 jobs (0 failed)" in res.stdout, res.stderr
    with np.load(tmp_path / "p.npz") as z:
        assert z["erf/chi_1"].shape == (6, 6)
    base = ("sweep", "--activations", "tanh", "--out", tmp_path / "e.json")
    cli_error(cli(*base, "--what", "phase-diagram", "--depths", "3"), 2, "--depths applies to --what advise only")
    cli_error(cli(*base, "--what", "advise", "--depths", "3", "--grid", 5), 2, "--grid applies to --what phase-diagram")
    cli_error(cli(*base, "--what", "advise", "--depths", "3,x"), 2, "--depths must be comma-separated integers")
    cli_error(cli(*base, "--what", "fit", "--depths", "3"), 2, "what must be one of")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "dask" else real(name, *a))
    cli_error(cli(*base, "--what", "advise", "--depths", "3"), 2, "pip install 'meanfield[dask]'")
    assert not (tmp_path / "e.json").exists()


@needs_dask
def test_network_kernel_store_argument(tmp_path):
    """Network.kernel(X, store=...) is kernel_store: the same tiles, the same values."""
    from meanfield import scaleout

    net = nw.serial(nw.dense(2.0, 0.1), nw.activation("relu"), nw.dense(1.0))
    X = np.random.default_rng(3).standard_normal((10, 5))
    res = net.kernel(X, store=tmp_path / "K.zarr", chunk=4)
    k = net.kernel(X)
    for name in ("nngp", "ntk"):
        stored = np.asarray(scaleout.open_kernel(tmp_path / "K.zarr", name)[:])
        np.testing.assert_allclose(stored, getattr(k, name), rtol=1e-14, atol=0)
    assert res.n == 10
    with pytest.raises(DomainError, match="X2, diagonals and block do not apply"):
        net.kernel(X, X, store=tmp_path / "K2.zarr")
