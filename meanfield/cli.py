"""The `meanfield` command line: thin commands over the public Python functions.

Every command prints data on stdout (``--json``: one JSON object whose keys are the Python
result's fields) and messages on stderr.  Exit codes: 0 ok, 1 numerical failure (one line),
2 bad usage or input outside the theory's domain (one line).
"""

from __future__ import annotations

import functools
import json
import math
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from .errors import ConvergenceError, DomainError, MeanfieldError

app = typer.Typer(
    help="Initialise deep networks from the infinite-width theory of random networks.\n\n"
         "Start with:  meanfield advise --arch mlp --activation tanh --depth 50",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

ACT_HELP = "Activation spec, e.g. tanh, relu, erf, gelu, leaky_relu:0.1, alpha_relu:0.75 (see `meanfield activations`)."
JSON_HELP = "Print one JSON object (the Python result's fields) on stdout instead of a table."


def jsonable(obj: Any) -> Any:
    """Recursively convert to JSON-safe values: numpy scalars/arrays to Python, NaN/inf to None."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def emit(result: Any, as_json: bool, human: Callable[[dict], None] | None = None) -> None:
    d = result.to_dict() if hasattr(result, "to_dict") else result
    d = jsonable(d)
    if as_json:
        sys.stdout.write(json.dumps(d, allow_nan=False) + "\n")
    elif human is not None:
        human(d)
    else:
        _print_mapping(d)


_INFINITE_WHEN_NULL = {"xi_c", "xi_q", "trainable_depth"}


def _fmt(v: Any, key: str = "") -> str:
    if v is None:
        return "inf" if key in _INFINITE_WHEN_NULL else "n/a"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, list):
        if len(v) > 8:
            return "[" + ", ".join(_fmt(x) for x in v[:4]) + ", ..., " + ", ".join(_fmt(x) for x in v[-2:]) + "]"
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


def _print_mapping(d: dict, indent: str = "") -> None:
    width = max((len(k) for k in d), default=0)
    for k, v in d.items():
        if isinstance(v, dict):
            typer.echo(f"{indent}{k}:")
            _print_mapping(v, indent + "  ")
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            typer.echo(f"{indent}{k}:")
            for item in v:
                typer.echo(f"{indent}  - " + ", ".join(f"{a}={_fmt(b)}" for a, b in item.items()))
        else:
            typer.echo(f"{indent}{k:<{width}}  {_fmt(v, k)}")


def fail(message: str, code: int) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def handled(fn: Callable) -> Callable:
    """Turn meanfield's exceptions into a one-line message and exit code (2 domain, 1 numerical)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import warnings

        import numpy as np

        try:
            # numpy's RuntimeWarnings (overflow in a diverging map) are not messages for the
            # user: the outcome is reported as one line, or the result is checked as finite.
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore", RuntimeWarning)
                return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except DomainError as exc:
            fail(_one_line(exc), 2)
        except ConvergenceError as exc:
            fail(_one_line(exc), 1)
        except MeanfieldError as exc:
            fail(_one_line(exc), 1)
        except (FloatingPointError, OverflowError, ZeroDivisionError) as exc:
            fail(f"numerical failure: {_one_line(exc)}", 1)
        except MemoryError:
            # the guards (meanfield._memory) estimate the big allocations; this is the rest
            fail("out of memory: the request is too large for this machine (use smaller inputs, "
                 "grids or depths)", 2)
        except OSError as exc:
            # a path the system refuses (name too long, /proc, no permission) is bad input
            where = f" ({str(exc.filename)[:200]!r})" if exc.filename else ""
            fail(f"{_one_line(exc.strerror or exc)}{where}", 2)

    return wrapper


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def progress_bar(enabled: bool, label: str):
    """A rich progress bar on stderr, or a no-op; returns (callback, close)."""
    if not enabled:
        return None, lambda: None
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    prog = Progress(TextColumn(label), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeRemainingColumn(), console=Console(stderr=True), transient=True)
    prog.start()
    task = prog.add_task(label, total=None)

    def update(done: int, total: int) -> None:
        prog.update(task, completed=done, total=total)

    return update, prog.stop


# ----------------------------------------------------------------------------------------------
# commands
# ----------------------------------------------------------------------------------------------

@app.command("activations")
@handled
def activations_cmd(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """List the activation registry and which Gaussian moments are available in closed form."""
    from .activations import _REGISTRY, get_activation

    rows = []
    examples = {"leaky_relu": "leaky_relu:0.1", "alpha_relu": "alpha_relu:0.75", "elu": "elu:1"}
    for name in sorted(_REGISTRY):
        act = get_activation(examples.get(name, name))
        rows.append({"name": name, "example": examples.get(name, name), "closed_form": list(act.closed),
                     "kinks": list(act.kinks), "description": act.description})
    if as_json:
        emit({"activations": rows, "aliases": {"swish": "silu"}}, True)
        return
    for r in rows:
        cf = ", ".join(r["closed_form"]) or "quadrature"
        typer.echo(f"{r['example']:<18} {cf:<26} {r['description']}")
    typer.echo("aliases: swish -> silu.  Closed-form keys: v=E[phi^2], vd=E[phi'^2], dv=dV/dq, "
               "vdd=E[phi'' phi], w=E[phi(u)phi(v)], wd=E[phi'(u)phi'(v)].")


@app.command("fixed-point")
@handled
def fixed_point_cmd(
    activation: str = typer.Option(..., "--activation", "-a", help=ACT_HELP),
    sigma_w2: float = typer.Option(..., "--sigma-w2", help="Weight variance times fan-in (sigma_w^2)."),
    sigma_b2: float = typer.Option(0.0, "--sigma-b2", help="Bias variance (sigma_b^2)."),
    q0: float = typer.Option(1.0, "--q0", help="First-layer pre-activation length the iteration starts from."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """q*, c*, chi_1, chi_c, depth scales xi_q, xi_c and the phase at (sigma_w2, sigma_b2)."""
    from .fixed_points import fixed_point

    emit(fixed_point(activation, sigma_w2, sigma_b2, q0=q0), as_json)


@app.command("eoc")
@handled
def eoc_cmd(
    activation: str = typer.Option(..., "--activation", "-a", help=ACT_HELP),
    sigma_b2: float = typer.Option(0.0, "--sigma-b2", help="Bias variance at which to find the critical sigma_w2."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """The edge of chaos: sigma_w2 with chi_1(q*) = 1 at the given sigma_b2, and q* there."""
    from .fixed_points import edge_of_chaos

    emit(edge_of_chaos(activation, sigma_b2), as_json)


@app.command("iterate")
@handled
def iterate_cmd(
    activation: str = typer.Option(..., "--activation", "-a", help=ACT_HELP),
    sigma_w2: float = typer.Option(..., "--sigma-w2", help="Weight variance times fan-in."),
    sigma_b2: float = typer.Option(0.0, "--sigma-b2", help="Bias variance."),
    depth: int = typer.Option(..., "--depth", "-L", help="Number of layers to iterate."),
    arch: str = typer.Option("mlp", "--arch", help="mlp, resnet-full or resnet-reduced."),
    q0: float = typer.Option(1.0, "--q0", help="mlp: the first layer's pre-activation length."),
    c0: float = typer.Option(0.5, "--c0", help="Correlation (cosine for resnets) of the two inputs."),
    sigma_v2: Optional[float] = typer.Option(None, "--sigma-v2", help="resnet-full: branch output weight variance (default 1)."),
    sigma_a2: Optional[float] = typer.Option(None, "--sigma-a2", help="resnet-full: branch bias variance (default 0)."),
    p0: float = typer.Option(1.0, "--p0", help="resnets: the input's length p^0 (mean square of x^0)."),
    m0: float = typer.Option(0.0, "--m0", help="resnets: the mean m^0 of the input's coordinates (m0^2 <= p0; it matters for resnet-reduced with E[phi] != 0, docs/residual.md)."),
    every: int = typer.Option(1, "--every", help="resnets: keep every K-th layer in the output."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Iterate the mean-field recursions: q and c (mlp) or p, m, q, e, s, chi (residual networks)."""
    if arch == "mlp":
        if sigma_v2 is not None or sigma_a2 is not None:
            raise DomainError("--sigma-v2/--sigma-a2 apply to resnet architectures only")
        if m0 != 0.0:
            raise DomainError(f"--m0 applies to resnet architectures only (got {m0})")
        from .maps import iterate

        emit(iterate(activation, sigma_w2, sigma_b2, depth, q0=q0, c0=c0), as_json)
        return
    from .residual import _arch, iterate_residual

    arch = _arch(arch)  # resnet-full / resnet-reduced and their aliases (resnet, frn, rrn, ...)

    kw = {k: v for k, v in (("sigma_v2", sigma_v2), ("sigma_a2", sigma_a2)) if v is not None}
    emit(iterate_residual(arch, activation, sigma_w2, sigma_b2, depth, p0=p0, c0=c0, m0=m0, every=every, **kw), as_json)


@app.command("exponents")
@handled
def exponents_cmd(
    activation: str = typer.Option(..., "--activation", "-a", help=ACT_HELP),
    arch: str = typer.Option("resnet-full", "--arch", help="resnet-full or resnet-reduced."),
    sigma_w2: float = typer.Option(1.0, "--sigma-w2", help="Weight variance times fan-in."),
    sigma_b2: float = typer.Option(0.0, "--sigma-b2", help="Bias variance."),
    sigma_v2: Optional[float] = typer.Option(None, "--sigma-v2", help="resnet-full: branch output weight variance (default 1)."),
    sigma_a2: Optional[float] = typer.Option(None, "--sigma-a2", help="resnet-full: branch bias variance (default 0)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Asymptotic depth laws of a residual network: analytic exponents beside fitted ones."""
    from .residual import exponents

    kw = {k: v for k, v in (("sigma_v2", sigma_v2), ("sigma_a2", sigma_a2)) if v is not None}
    emit(exponents(activation, arch, sigma_w2=sigma_w2, sigma_b2=sigma_b2, **kw), as_json)


@app.command("advise")
@handled
def advise_cmd(
    activation: str = typer.Option(..., "--activation", "-a", help=ACT_HELP),
    depth: int = typer.Option(..., "--depth", "-L", help="Number of layers (residual blocks for resnets)."),
    arch: str = typer.Option("mlp", "--arch", help="mlp, resnet-full or resnet-reduced."),
    sigma_b2: Optional[float] = typer.Option(None, "--sigma-b2", help="Fix the bias variance; the advice then solves for sigma_w2."),
    width: Optional[int] = typer.Option(None, "--width", help="Layer width (fan-in), to print per-layer weight stds."),
    sigma_v2: Optional[float] = typer.Option(None, "--sigma-v2", help="resnet-full: fix the branch output weight variance."),
    sigma_a2: Optional[float] = typer.Option(None, "--sigma-a2", help="resnet-full: fix the branch bias variance."),
    budget: Optional[float] = typer.Option(None, "--budget", help="resnets: the allowed log gradient explosion / distance budget (see docs/residual.md)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Recommended initialisation variances at this depth, with the predicted diagnostics."""
    from .advise import advise

    opts = {k: v for k, v in (("sigma_b2", sigma_b2), ("width", width), ("sigma_v2", sigma_v2),
                              ("sigma_a2", sigma_a2), ("budget", budget)) if v is not None}
    result = advise(arch=arch, activation=activation, depth=depth, **opts)
    emit(result, as_json, _human_advice)


def _human_advice(d: dict) -> None:
    main = {k: v for k, v in d.items() if k not in ("comparisons", "notes")}
    _print_mapping(main)
    comps = d.get("comparisons") or []
    if comps:
        keys = [k for k in ("name", "sigma_w2", "sigma_b2", "sigma_v2", "phase", "chi_1", "xi_c",
                            "correlation_out", "log10_gradient_ratio", "log_explosion", "log_p_L",
                            "e_L") if k in comps[0]]
        typer.echo("\ncompared with common defaults at the same depth:")
        typer.echo("  " + "  ".join(f"{k:>14}" for k in keys))
        for c in comps:
            typer.echo("  " + "  ".join(f"{_fmt(c.get(k), k):>14}" for k in keys))
    for n in d.get("notes") or []:
        typer.echo(f"note: {n}")


@app.command("phase-diagram")
@handled
def phase_diagram_cmd(
    activation: str = typer.Option(..., "--activation", "-a", help=ACT_HELP),
    out: Path = typer.Option(..., "--out", help="PNG file to write (its folder must exist)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Also write the grid arrays to this .npz file."),
    grid: int = typer.Option(200, "--grid", help="Points per axis (N x N grid)."),
    sigma_w2_max: float = typer.Option(5.0, "--sigma-w2-max", help="Largest sigma_w2 on the x axis."),
    sigma_b2_max: float = typer.Option(2.0, "--sigma-b2-max", help="Largest sigma_b2 on the y axis."),
    no_xi: bool = typer.Option(False, "--no-xi", help="Skip the xi_c contours (faster)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """chi_1 over a (sigma_w2, sigma_b2) grid with the edge-of-chaos curve and xi_c contours."""
    from ._io import atomic_write_many, check_output_path, savefig_writer, savez_writer
    from .fixed_points import phase_diagram

    check_output_path(out)
    _check_image_format(out)
    if data is not None:
        check_output_path(data)
    update, close = progress_bar(not (quiet or as_json) and grid * grid >= 2500, "chaotic phase c*")
    try:
        pd = phase_diagram(activation, grid=grid, sigma_w2_max=sigma_w2_max, sigma_b2_max=sigma_b2_max,
                           with_xi_c=not no_xi, progress=update)
    finally:
        close()
    from .plot import plot_phase_diagram

    ax = plot_phase_diagram(pd)
    ax.figure.tight_layout()
    # the PNG and the .npz are written together: both, or (on any failure) neither
    files = [(out, savefig_writer(ax.figure, out), "")]
    if data is not None:
        files.append((data, savez_writer(**pd.arrays()), ".npz"))
    atomic_write_many(files)
    summary = pd.summary()
    summary["out"] = str(out)
    if data is not None:
        summary["data"] = str(data)
    emit(summary, as_json)


@app.command("kernel")
@handled
def kernel(
    x: Path = typer.Option(..., "--x", help="Inputs: a .npy file holding an N x d float array (or N x s1 [x s2] x channels, channels last, for --net with conv layers)."),
    out: Path = typer.Option(..., "--out", help=".npz file to write with arrays nngp and ntk (its folder must exist), or a .zarr store written tile by tile on dask (resumable; needs meanfield[dask], docs/scaleout.md)."),
    net: Optional[Path] = typer.Option(None, "--net", help="A network spec (JSON file: a list of layers, docs/architecture.md); replaces the --arch preset flags."),
    activation: Optional[str] = typer.Option(None, "--activation", "-a", help=ACT_HELP + " (presets)"),
    depth: Optional[int] = typer.Option(None, "--depth", "-L", help="Hidden layers (mlp; a linear readout follows) or residual blocks (resnet)."),
    sigma_w2: Optional[float] = typer.Option(None, "--sigma-w2", help="Weight variance times fan-in (sigma_w^2), every dense layer (presets)."),
    sigma_b2: float = typer.Option(0.0, "--sigma-b2", help="Bias variance (sigma_b^2), every dense layer (presets)."),
    arch: str = typer.Option("mlp", "--arch", help="Preset: mlp, resnet (full residual blocks, docs/theory.md §A4.3) or resnet-reduced."),
    x2: Optional[Path] = typer.Option(None, "--x2", help="Second inputs (.npy, same per-input shape): the kernels are then N x M."),
    sigma_v2: float = typer.Option(1.0, "--sigma-v2", help="resnet: branch output weight variance."),
    sigma_a2: float = typer.Option(0.0, "--sigma-a2", help="resnet: branch bias variance."),
    parametrization: Optional[str] = typer.Option(None, "--parametrization", help="ntk, or standard (the NTK divided by the width; docs/theory.md §A4.2); default ntk, or the spec's."),
    dtype: str = typer.Option("float64", "--dtype", help="float64 or float32 for the written arrays."),
    diagonals: bool = typer.Option(False, "--diagonals", help="Presets: also write every layer's kernel diagonal (layer_nngp, layer_ntk, layer_q)."),
    chunk: Optional[int] = typer.Option(None, "--chunk", help=".zarr --out: inputs per tile (default 4096); a tile is chunk x chunk entries."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help=".zarr --out: address of a dask.distributed scheduler (default $DASK_SCHEDULER_ADDRESS, else dask's local threads)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Infinite-width NNGP and NTK of a network (--net spec.json) or of an MLP / residual MLP
    preset on the given inputs.  Arrays: shape (N, M) after a readout, else
    (N, M, s1, s1', s2, s2', ...) (position axes of each spatial dimension in input order).
    With a .zarr --out the kernels go to a zarr store tile by tile (meanfield.scaleout)."""
    from ._io import atomic_savez, check_output_path

    if out.suffix.lower() == ".zarr":
        _kernel_zarr(x, out, net, x2, dtype, diagonals, chunk, scheduler, parametrization, quiet, as_json,
                     dict(arch=arch, activation=activation, depth=depth, sigma_w2=sigma_w2, sigma_b2=sigma_b2,
                          sigma_v2=sigma_v2, sigma_a2=sigma_a2))
        return
    check_output_path(out)
    if out.suffix.lower() != ".npz":
        raise DomainError(f"--out must be an .npz file (it holds the arrays nngp and ntk) or a .zarr store, got {str(out)!r}")
    if chunk is not None or scheduler is not None:
        raise DomainError(f"{'--chunk' if chunk is not None else '--scheduler'} applies to a .zarr --out only, got {str(out)!r}")
    X = _load_array(x, "--x")
    X2 = None if x2 is None else _load_array(x2, "--x2")
    if net is not None:
        given = [f for f, v in (("--activation", activation), ("--depth", depth), ("--sigma-w2", sigma_w2)) if v is not None]
        if given:
            raise DomainError(f"{given[0]} is a preset flag; with --net the spec says everything about the network")
        if dtype not in ("float64", "float32"):
            raise DomainError(f"dtype must be float64 or float32, got {dtype!r}")
        from .network import load_spec

        network = load_spec(net)
        res = network.kernel(X, X2, parametrization=parametrization)
        arrays = {"nngp": res.nngp.astype(dtype), "ntk": res.ntk.astype(dtype)}
        atomic_savez(out, **arrays)
        summary = res.to_dict()
        summary["out"] = str(out)
        emit(summary, as_json, _print_mapping)
        return
    missing = [f for f, v in (("--activation", activation), ("--depth", depth), ("--sigma-w2", sigma_w2)) if v is None]
    if missing:
        raise DomainError(f"{missing[0]} is required with --arch (or give a network spec with --net)")
    from .kernels import kernel as compute_kernel

    rows = X.shape[0] if X.ndim == 2 else 0
    n_entries = rows * (X2.shape[0] if X2 is not None and X2.ndim == 2 else rows)
    update, close = progress_bar(not (quiet or as_json) and n_entries >= 10**6, "kernel")
    try:
        res = compute_kernel(arch, activation, X, X2, depth=depth, sigma_w2=sigma_w2, sigma_b2=sigma_b2,
                             sigma_v2=sigma_v2, sigma_a2=sigma_a2, parametrization=parametrization or "ntk",
                             dtype=dtype, diagonals=diagonals, progress=update)
    finally:
        close()
    arrays = {"nngp": res.nngp, "ntk": res.ntk, "nngp_diag": res.nngp_diag, "ntk_diag": res.ntk_diag}
    if res.nngp_diag2 is not None:
        arrays.update(nngp_diag2=res.nngp_diag2, ntk_diag2=res.ntk_diag2)
    if res.layers is not None:
        arrays.update(layer_nngp=res.layers.nngp, layer_ntk=res.layers.ntk, layer_q=res.layers.q)
    atomic_savez(out, **arrays)
    summary = res.to_dict()
    summary["out"] = str(out)
    emit(summary, as_json)


def _kernel_zarr(x: Path, out: Path, net: Optional[Path], x2: Optional[Path], dtype: str, diagonals: bool,
                 chunk: Optional[int], scheduler: Optional[str], parametrization: Optional[str],
                 quiet: bool, as_json: bool, preset_kw: dict) -> None:
    """`meanfield kernel --out K.zarr`: meanfield.scaleout.kernel_store on the spec or preset."""
    import importlib.util

    for flag, bad in (("--x2", x2 is not None), ("--diagonals", diagonals), ("--dtype", dtype != "float64")):
        if bad:
            raise DomainError(f"{flag} is not available with a .zarr --out (the store holds the float64 "
                              "kernels of --x with itself)")
    missing = [m for m in ("dask", "zarr") if importlib.util.find_spec(m) is None]
    if missing:
        raise DomainError(f"a .zarr --out needs {missing[0]}: pip install 'meanfield[dask]'")
    from .network import load_spec, preset
    from .scaleout import kernel_store

    X = _load_array(x, "--x")
    flags = (("--activation", preset_kw["activation"]), ("--depth", preset_kw["depth"]),
             ("--sigma-w2", preset_kw["sigma_w2"]))
    if net is not None:
        given = [f for f, v in flags if v is not None]
        if given:
            raise DomainError(f"{given[0]} is a preset flag; with --net the spec says everything about the network")
        network = load_spec(net)
    else:
        missing = [f for f, v in flags if v is None]
        if missing:
            raise DomainError(f"{missing[0]} is required with --arch (or give a network spec with --net)")
        kw = dict(preset_kw)
        network = preset(kw.pop("arch"), kw.pop("activation"), kw.pop("depth"), **kw,
                         parametrization=parametrization or "ntk")
    update, close = progress_bar(not (quiet or as_json), "kernel tiles")
    try:
        res = kernel_store(network, X, out, chunk=4096 if chunk is None else chunk, scheduler=scheduler,
                           parametrization=parametrization, progress=update)
    finally:
        close()
    emit(res, as_json)


def _load_array(path: Path, flag: str):
    """A .npy file holding one real numeric array (meanfield._io.load_array; never pickles)."""
    from ._io import load_array

    return load_array(path, flag)


@app.command("sweep")
@handled
def sweep_cmd(
    what: str = typer.Option(..., "--what", help="advise (every activation x depth) or phase-diagram (every activation)."),
    activations: str = typer.Option(..., "--activations", help="Comma-separated activation specs, e.g. tanh,gelu,erf."),
    out: Path = typer.Option(..., "--out", help="JSON file to write with every job's parameters and result (or error)."),
    depths: Optional[str] = typer.Option(None, "--depths", help="advise: comma-separated depths, e.g. 10,50,200."),
    arch: Optional[str] = typer.Option(None, "--arch", help="advise: mlp (default), resnet-full or resnet-reduced."),
    sigma_b2: Optional[float] = typer.Option(None, "--sigma-b2", help="advise: fix the bias variance."),
    budget: Optional[float] = typer.Option(None, "--budget", help="advise, resnets: the gradient budget (docs/residual.md)."),
    data: Optional[Path] = typer.Option(None, "--data", help="phase-diagram: also write every grid to this .npz (arrays '<activation>/<name>')."),
    grid: Optional[int] = typer.Option(None, "--grid", help="phase-diagram: points per axis (default 200)."),
    no_xi: bool = typer.Option(False, "--no-xi", help="phase-diagram: skip the xi_c contours (faster)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Address of a dask.distributed scheduler (default $DASK_SCHEDULER_ADDRESS, else local worker processes)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Local worker processes (default: one per core, at most one per job)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Independent advice or phase-diagram jobs fanned out on dask (meanfield.scaleout.sweep),
    gathered into one JSON file (and one .npz of phase-diagram grids)."""
    import importlib.util

    from ._io import atomic_write_many, check_output_path, savez_writer

    check_output_path(out)
    if data is not None:
        check_output_path(data)
    if importlib.util.find_spec("dask") is None:
        raise DomainError("a sweep needs dask: pip install 'meanfield[dask]'")
    own = {"advise": (("--arch", arch), ("--sigma-b2", sigma_b2), ("--budget", budget), ("--depths", depths)),
           "phase-diagram": (("--data", data), ("--grid", grid), ("--no-xi", no_xi or None))}
    for mode, flags in own.items():
        given = [f for f, v in flags if v is not None]
        if what in own and what != mode and given:
            raise DomainError(f"{given[0]} applies to --what {mode} only")
    if what == "advise":
        opts = {k: v for k, v in (("arch", arch), ("sigma_b2", sigma_b2), ("budget", budget)) if v is not None}
    else:
        opts = {"grid": 200 if grid is None else grid, "with_xi_c": not no_xi}
    ds = None
    if depths is not None:
        try:
            ds = [int(d) for d in depths.split(",")]
        except ValueError:
            raise DomainError(f"--depths must be comma-separated integers, got {depths!r}") from None
    from .scaleout import sweep

    update, close = progress_bar(not (quiet or as_json), f"sweep {what}")
    try:
        res = sweep(what, [a.strip() for a in activations.split(",")], ds, scheduler=scheduler,
                    workers=workers, progress=update, **opts)
    finally:
        close()
    d = jsonable(res.to_dict())
    text = json.dumps(d, allow_nan=False) + "\n"

    def write_json(tmp: str) -> None:
        Path(tmp).write_text(text)

    files = [(out, write_json, ".json")]
    if data is not None:
        files.append((data, savez_writer(**res.arrays), ".npz"))
    atomic_write_many(files)
    if as_json:
        sys.stdout.write(text)
    else:
        typer.echo(f"{len(res.jobs)} jobs ({res.failed} failed) in {res.seconds:.1f} s on {res.scheduler}; "
                   f"written to {out}" + (f" and {data}" if data is not None else ""))


@app.command("propagate")
@handled
def propagate_cmd(
    net: Path = typer.Option(..., "--net", help="A network spec (JSON file: a list of layers, docs/architecture.md)."),
    x: Path = typer.Option(..., "--x", help="Inputs: a .npy file, N x d (or N x s1 [x s2] x channels for conv networks)."),
    steps: bool = typer.Option(False, "--steps", help="Per-step diagnostics of the network's first rnn layer instead (q^t, the correlation of inputs 0 and 1 at each step, the gradient through time), docs/theory.md §A5.4."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Per-layer diagnostics of a network on the given inputs: q (mean squared output), the
    inputs' correlation matrix and the gradient second moment (1 at the output), layer by layer."""
    import numpy as np

    from .network import load_spec, steps as rnn_steps

    if steps:
        emit(rnn_steps(load_spec(net), _load_array(x, "--x")), as_json, _human_rnn_steps)
        return
    res = load_spec(net).propagate(_load_array(x, "--x"))

    def human(d: dict) -> None:
        n = len(d["q"][0]) if d["q"] else 0
        off = [f"c(0,{j})" for j in range(1, min(n, 3))]
        head = ["layer", "name", "q(mean)", "gradient(mean)"] + off
        lines = ["  ".join(f"{h:>14}" for h in head)]
        for i, nm in enumerate(res.layers):
            vals = [str(i), nm, _fmt(float(np.mean(res.q[i]))), _fmt(float(np.mean(res.gradient[i])))]
            vals += [_fmt(float(res.correlation[i][0, j])) for j in range(1, min(n, 3))]
            lines.append("  ".join(f"{v:>14}" for v in vals))
        sys.stdout.write("\n".join(lines) + "\n")

    emit(res, as_json, human)


def _human_rnn_steps(d: dict) -> None:
    """One line per step: means over the inputs (padded steps skipped)."""
    import numpy as np

    def mean(rows, t):
        vals = [r[t] for r in rows if r[t] is not None]
        return _fmt(float(np.mean(vals))) if vals else "n/a"

    corr = d["correlation"]
    pair = len(corr[0]) > 1 if corr else False
    head = ["step", "q(mean)", "gradient(mean)", "chi(mean)"] + (["c(0,1)"] if pair else [])
    lines = ["  ".join(f"{h:>14}" for h in head)]
    for t in range(len(d["q"][0])):
        vals = [str(t + 1), mean(d["q"], t), mean(d["gradient"], t), mean(d["chi"], t)]
        if pair:
            vals.append(_fmt(corr[t][0][1]))
        lines.append("  ".join(f"{v:>14}" for v in vals))
    sys.stdout.write("\n".join(lines) + "\n")


@app.command("abc")
@handled
def abc_cmd(
    parametrization: Optional[str] = typer.Option(None, "--parametrization", "-p", help="A named parametrization: sp, sp-max-lr (SP at its largest stable learning rate), ntp, mup or mfp (one hidden layer only)."),
    depth: Optional[int] = typer.Option(None, "--depth", "-L", help="Number of hidden layers L; the table has L+1 layers (input, L-1 hidden, output). Inferred from --check."),
    optimizer: str = typer.Option("sgd", "--optimizer", help="sgd or adam: the learning-rate exponents c and the regime depend on it."),
    width: Optional[int] = typer.Option(None, "--width", help="Hidden width n: also print each layer's multiplier, init variance and learning-rate factors at n, relative to the base width."),
    base_width: int = typer.Option(1, "--base-width", help="The width the base model was tuned at; the factors are 1 there (default 1: the bare powers of n)."),
    check_text: Optional[str] = typer.Option(None, "--check", help="Your own exponents instead of a named parametrization: one a,b,c triple per layer separated by ';', input layer first, output last (fractions like -1/2 allowed), e.g. '-1/2,1/2,0;0,1/2,0;1/2,1/2,0'."),
    residual: bool = typer.Option(False, "--residual", help="Also print the depth-muP scalings (branch multiplier 1/sqrt(L), learning rate) for L residual blocks."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """abc-parametrization per layer (Yang & Hu 2021), its exponent r and regime: feature learning, kernel, trivial or unstable."""
    from .mup import abc, check, parse_exponents

    if (parametrization is None) == (check_text is None):
        raise DomainError("give either --parametrization NAME (with --depth) or --check 'a1,b1,c1;...', not both or neither")
    if check_text is not None:
        exps = parse_exponents(check_text)
        if depth is not None and depth != exps.shape[0] - 1:
            raise DomainError(f"--depth {depth} does not match --check, which has {exps.shape[0]} layers "
                              f"(depth {exps.shape[0] - 1})")
        result = check(exps, optimizer, width=width, base_width=base_width, residual=residual)
    else:
        if depth is None:
            raise DomainError("--depth is required with --parametrization")
        result = abc(parametrization, depth, optimizer, width=width, base_width=base_width, residual=residual)
    emit(result, as_json, _human_abc)


def _human_abc(d: dict) -> None:
    typer.echo(f"parametrization {d['parametrization']}, optimizer {d['optimizer']}, depth {d['depth']}"
               + (f", width {d['width']} (base {d['base_width']})" if d["width"] is not None else ""))
    keys = ["layer", "role", "a", "b", "c"]
    if d["width"] is not None:
        keys += ["multiplier", "init_variance", "lr_scale", "weight_variance", "folded_lr_scale"]
    typer.echo("  ".join(f"{k:>15}" for k in keys))
    for row in d["layers"]:
        typer.echo("  ".join(f"{_fmt(row[k]):>15}" for k in keys))
    typer.echo(f"r       {_fmt(d['r'])}")
    typer.echo(f"regime  {d['regime']}")
    typer.echo(f"reason  {d['reason']}")
    for cond in d["conditions"]:
        typer.echo(f"  [{'ok' if cond['holds'] else 'no':>2}] {cond['statement']}: {_fmt(cond['value'])} ({cond['meaning']})")
    if d.get("depth_mup"):
        dm = d["depth_mup"]
        typer.echo(f"depth-muP: branch multiplier {_fmt(dm['branch_multiplier'])} (depth^-1/2), "
                   f"learning rate x {_fmt(dm['lr_depth_scale'])} (depth^{_fmt(dm['lr_depth_exponent'])})")
        for n in dm["notes"]:
            typer.echo(f"note: {n}")
    for n in d.get("notes") or []:
        typer.echo(f"note: {n}")


@app.command("spectrum")
@handled
def spectrum_cmd(
    activation: str = typer.Option(..., "--activation", "-a", help=ACT_HELP),
    sigma_w2: float = typer.Option(..., "--sigma-w2", help="Weight variance times fan-in (sigma_w^2)."),
    sigma_b2: float = typer.Option(0.0, "--sigma-b2", help="Bias variance (sigma_b^2)."),
    depth: int = typer.Option(..., "--depth", "-L", help="Number of layers L of the Jacobian J = D^L W^L ... D^1 W^1."),
    weights: str = typer.Option("gaussian", "--weights", help="Weight ensemble: gaussian (iid N(0, sigma_w2 / fan_in)) or orthogonal (sqrt(sigma_w2) times a Haar-random orthogonal matrix)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also draw the density of the squared singular values to this image file (its folder must exist)."),
    points: int = typer.Option(0, "--points", help="Also print the density at this many eigenvalues of J J^T spread over the support (0: none)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Spectrum of J J^T for the input-output Jacobian at the fixed point q* (free probability, docs/theory.md §A6.2): moments, variance, edge, atoms, density."""
    from .spectra import jacobian_spectrum

    if out is not None:
        from ._io import check_output_path

        check_output_path(out)
        _check_image_format(out)
    if points < 0:
        raise DomainError(f"--points must be >= 0, got {points}")
    spec = jacobian_spectrum(activation, sigma_w2, sigma_b2, depth, weights)
    d = spec.to_dict()
    if points:
        lam = spec.grid(points)
        d["density"] = {"lambda": lam, "rho": spec.density(lam)}
    if out is not None:
        from ._io import atomic_savefig
        from .plot import plot_jacobian_spectrum

        ax = plot_jacobian_spectrum(spec)
        ax.figure.tight_layout()
        atomic_savefig(ax.figure, out)
        d["out"] = str(out)
    emit(d, as_json)


def _check_image_format(path: Path) -> None:
    from matplotlib.figure import Figure

    fmt = path.suffix.lstrip(".").lower()
    supported = Figure().canvas.get_supported_filetypes()
    if fmt not in supported:
        raise DomainError(f"cannot write a {fmt or 'extension-less'} image {str(path)!r}; "
                          f"use one of: {', '.join(sorted(supported))}")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
