"""Issue 16's standing suite: every CLI command and option fed random numbers (nan, inf, negative,
huge), strings, paths (a missing folder, /proc, a folder, a file of the wrong kind) and arrays
(wrong shapes, complex, text saved as .npy).  Whatever the input, the command exits 0, 1 or 2,
prints no traceback, writes a meanfield error as one line, and leaves no file behind unless it
succeeded (and then every file it was asked for).

The commands and their options are read from the Typer app, so a new command or option is fuzzed
without touching this file (its values come from its type; a name listed in VALUES gets values
that reach deeper).  The examples are derandomised and few per command, to keep the file at a
few tens of seconds on 2 cores; MEANFIELD_FUZZ_EXAMPLES=N runs N per command with fresh draws.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
from pathlib import Path

import numpy as np
import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from meanfield.cli import app

GROUP = typer.main.get_command(app)
COMMANDS = sorted(GROUP.commands)

#: options that are not fuzzed, with the reason
SKIP = {"--scheduler": "an address to connect to: random text would wait on the network"}
#: options always given this value: worker processes started from inside the test process
FIXED = {"--workers": "1"}

#: examples per command: the commands that draw a picture or fit 10^6 layers get fewer
EXAMPLES = {"phase-diagram": 5, "spectrum": 8, "exponents": 6, "advise": 8, "sweep": 5}
DEFAULT_EXAMPLES = 12
#: seconds one command may take before the example counts as a hang
TIMEOUT = 60

HUGE_INTS = ["1000000000", str(10 ** 20), str(10 ** 400), "-1", "0", "-9223372036854775809"]
BAD_NUMBERS = ["nan", "inf", "-inf", "-1", "-0.0", "1e308", "1e400", "-1e308", "5e-324", "1e-300",
               "x", "", "1,5", "0x10", "1_0"]
ACTIVATIONS = ["tanh", "relu", "erf", "gelu", "silu", "sigmoid", "selu", "softplus", "leaky_relu:0.1",
               "alpha_relu:0.75", "elu:1", "linear", "step", "abs", "hard_tanh", "sin", "cos"]
BAD_ACTIVATIONS = ["", "nope", "leaky_relu:", "leaky_relu:nan", "leaky_relu:inf", "alpha_relu:-1",
                   "alpha_relu:1e400", "elu:x", "tanh:1", "relu:0.1:2", ":", "leaky_relu:1e308",
                   "alpha_relu:0", "elu:-1e308", "TANH", "tanh "]

#: per option name, values that make the command run (small sizes, usual variances)
VALUES: dict[str, list[str]] = {
    "--activation": ACTIVATIONS,
    "--depth": ["1", "2", "3", "5"],
    "--grid": ["2", "3", "5"],
    "--every": ["1", "2", "3"],
    "--points": ["0", "3", "5"],
    "--width": ["1", "4", "64"],
    "--base-width": ["1", "2", "8"],
    "--chunk": ["1", "2", "3"],
    "--sigma-w2": ["0.5", "1", "1.5", "2", "3"],
    "--sigma-b2": ["0", "0.05", "0.5"],
    "--sigma-v2": ["0.5", "1", "2"],
    "--sigma-a2": ["0", "0.1"],
    "--budget": ["1", "6", "20"],
    "--q0": ["0.5", "1", "3"],
    "--c0": ["0.5", "0", "-0.3", "1", "0.99"],
    "--p0": ["0.5", "1", "2"],
    "--sigma-w2-max": ["1", "2", "5"],
    "--sigma-b2-max": ["0.5", "2"],
    "--arch": ["mlp", "resnet-full", "resnet-reduced"],
    "--dtype": ["float64", "float32"],
    "--weights": ["gaussian", "orthogonal"],
    "--optimizer": ["sgd", "adam"],
    "--what": ["advise"],  # a phase-diagram sweep at the default grid takes tens of seconds
    "--activations": ["tanh", "tanh,relu"],
    "--depths": ["3", "2,3"],
    "--workers": ["1", "2"],
    "--check": ["-1/2,1/2,0;0,1/2,0;1/2,1/2,0", "0,0,0;0,0,0"],
}
#: options that together make a command run, where no option is required on its own
RECIPES = {"kernel": [["--activation", "--depth", "--sigma-w2"], ["--net"]],
           "abc": [["--parametrization", "--depth"], ["--check"]]}
#: per option name, values that must be refused (or survived) beside random text
BAD_VALUES: dict[str, list[str]] = {
    "--arch": ["resnet", "RESNET", "cnn"], "--dtype": ["int8", "float16", "complex128"],
    "--weights": ["Orthogonal", "uniform"], "--optimizer": ["SGD", "rmsprop"],
    "--what": ["Advise", "phase-diagram-x"], "--activations": ["relu,,tanh", "tanh,nope", ",", "leaky_relu:"],
    "--depths": ["0", "3,x", ",", "-1", "1e400", "3,1000000000000"],
    "--check": ["1/0,0,0;0,0,0", "a,b,c", "0,0;0,0,0", "nan,0,0;0,0,0", "1e400,0,0;0,0,0", ";", "0,0,0",
                "1/2,1/2,0;" * 50],
    "--parametrization": ["MUP", "NTK", "x"],
}
#: per (command, option): values where the same name means different things
COMMAND_VALUES = {
    ("abc", "--parametrization"): ["sp", "sp-max-lr", "ntp", "mup", "mfp"],
    ("kernel", "--parametrization"): ["ntk", "standard"],
}


# ------------------------------------------------------------------------------------------
# inputs on disk, shared by all examples (read-only for the commands)
# ------------------------------------------------------------------------------------------

def _write_inputs(d: Path) -> dict[str, list[str]]:
    rng = np.random.default_rng(0)
    arrays = {
        "X.npy": rng.normal(size=(4, 3)), "X2.npy": rng.normal(size=(3, 3)),
        "X_other_dim.npy": rng.normal(size=(3, 5)), "X_1d.npy": rng.normal(size=3),
        "X_image.npy": rng.normal(size=(2, 4, 4, 2)), "X_seq.npy": rng.normal(size=(2, 3, 2)),
        "X_empty.npy": np.zeros((0, 3)), "X_no_features.npy": np.zeros((3, 0)),
        "X_nan.npy": np.array([[np.nan, 1.0], [1.0, 2.0]]), "X_inf.npy": np.array([[np.inf, 1.0], [1.0, 2.0]]),
        "X_huge.npy": np.full((2, 2), 1e300), "X_zero.npy": np.zeros((2, 3)),
        "X_complex.npy": np.ones((2, 2), dtype=complex), "X_int.npy": np.arange(6).reshape(3, 2),
        "X_bool.npy": np.ones((2, 2), dtype=bool), "X_scalar.npy": np.array(1.0),
        "X_strings.npy": np.array([["a", "b"]]),
    }
    for name, a in arrays.items():
        np.save(d / name, a)
    (d / "text.npy").write_text("1 2 3\n4 5 6\n")
    np.savez(d / "arrays.npz", x=np.ones((2, 2)))
    os.replace(d / "arrays.npz", d / "npz_named.npy")
    np.save(d / "X_object.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    specs = {
        "net.json": [{"layer": "dense", "sigma_w2": 2, "sigma_b2": 0.1}, {"layer": "activation", "fn": "relu"},
                     {"layer": "dense", "sigma_w2": 1}],
        "net_conv.json": [{"layer": "conv", "filter": [3, 3], "padding": "same", "sigma_w2": 2},
                          {"layer": "activation", "fn": "erf"}, {"layer": "global_avg_pool"},
                          {"layer": "dense", "sigma_w2": 1}],
        "net_empty.json": [], "net_object.json": {"layer": "dense"},
        "net_unknown.json": [{"layer": "nope"}], "net_bad_value.json": [{"layer": "dense", "sigma_w2": -1}],
        "net_bad_key.json": [{"layer": "dense", "sigma_w3": 1}],
        "net_nested.json": [{"layer": "residual", "branch": [{"layer": "dense", "sigma_w2": "x"}]}],
    }
    for name, spec in specs.items():
        (d / name).write_text(json.dumps(spec))
    (d / "net_nan.json").write_text('[{"layer": "dense", "sigma_w2": NaN}]')
    (d / "net_broken.json").write_text('[{"layer": "dense",')
    (d / "net_binary.json").write_bytes(b"\xff\xfe\x00\x01")
    (d / "folder").mkdir()
    arrays_in = [str(d / n) for n in [*arrays, "text.npy", "npz_named.npy", "X_object.npy"]]
    nets = [str(d / n) for n in [*specs, "net_nan.json", "net_broken.json", "net_binary.json"]]
    bad = [str(d / "missing.npy"), str(d / "folder"), "/proc/x.npy", "", str(d / "nodir" / "x.npy")]
    return {"arrays": arrays_in, "nets": nets, "bad": bad}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz_inputs")
    pool = _write_inputs(d)
    return d, pool


def _snapshot(d: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in d.rglob("*")}


# ------------------------------------------------------------------------------------------
# value strategies
# ------------------------------------------------------------------------------------------

def _number(kind: type, good: list[str] | None):
    wild = st.sampled_from(HUGE_INTS + BAD_NUMBERS) if kind is int else st.one_of(
        st.sampled_from(BAD_NUMBERS + HUGE_INTS), st.floats(allow_nan=True, allow_infinity=True).map(repr))
    if kind is int:
        wild = st.one_of(wild, st.integers().map(str))
    good = good or (["1", "2", "3"] if kind is int else ["0.5", "1", "2"])
    return st.sampled_from(good), wild


def _output(cmd: str, opt: str, out_dir: Path):
    ext = {"kernel": [".npz", ".zarr"], "phase-diagram": [".png", ".svg"], "spectrum": [".png", ".pdf"],
           "sweep": [".json"]}.get(cmd, [".png"])
    if opt == "--data":
        ext = [".npz"]
    good = [str(out_dir / f"result{e}") for e in ext]
    bad = [str(out_dir / "nodir" / f"result{ext[0]}"), f"/proc/x{ext[0]}", str(out_dir),
           str(out_dir / "result.txt"), str(out_dir / "result"), "", "/proc/self/mem",
           str(out_dir / ("x" * 300 + ext[0]))]
    return st.sampled_from(good), st.sampled_from(bad)


def _values(cmd: str, param, pool: dict, out_dir: Path):
    """(values that let the command run, values that should be refused or survived)."""
    opt = param.opts[0]
    kind = param.bare_type()
    # the annotations are strings in meanfield.cli (from __future__ import annotations)
    kind = {"int": int, "float": float, "Path": Path, "str": str}.get(kind, kind) if isinstance(kind, str) else kind
    good = COMMAND_VALUES.get((cmd, opt), VALUES.get(opt))
    text = st.text(max_size=12)
    if param.is_flag:
        return st.just(None), st.just(None)
    if kind in (int, float):
        return _number(kind, good)
    if kind is Path:
        if opt in ("--out", "--data"):
            return _output(cmd, opt, out_dir)
        if opt == "--net":
            return st.just(pool["nets"][0]), st.one_of(st.sampled_from(pool["nets"] + pool["bad"]), text)
        return st.just(pool["arrays"][1 if opt == "--x2" else 0]), st.one_of(
            st.sampled_from(pool["arrays"] + pool["bad"]), text)
    if opt == "--activation":
        return st.sampled_from(ACTIVATIONS), st.one_of(st.sampled_from(BAD_ACTIVATIONS), text)
    bad = st.one_of(st.sampled_from(BAD_VALUES[opt]), text) if opt in BAD_VALUES else text
    return (st.sampled_from(good) if good else text), bad


def _argv(data, cmd: str, pool: dict, out_dir: Path) -> list[str]:
    """A command line: usually every value good but one, sometimes all good, sometimes any."""
    given = []
    fixed = []
    for param in GROUP.commands[cmd].params:
        if param.opts[0] in FIXED:
            fixed += [param.opts[0], FIXED[param.opts[0]]]
        if param.opts[0] in SKIP or param.opts[0] in FIXED:
            continue
        # optional ones a third of the time: most are specific to one mode of the command
        if data.draw(st.sampled_from([True] * 19 + [False]) if param.required else st.sampled_from([True, False, False]),
                     label=f"give {param.opts[0]}"):
            given.append(param)
    mode = data.draw(st.sampled_from(["one bad", "one bad", "all good", "any"]), label="mode")
    if mode == "all good":  # the required options, a recipe and at most one other: a run that should work
        params = [p for p in GROUP.commands[cmd].params if p.opts[0] not in SKIP and p.opts[0] not in FIXED]
        recipe = data.draw(st.sampled_from(RECIPES[cmd]), label="recipe") if cmd in RECIPES else []
        extra = [p for p in params if not p.required and p.opts[0] not in recipe]
        keep = data.draw(st.sampled_from([None] + extra), label="one optional") if extra else None
        given = [p for p in params if p.required or p.opts[0] in recipe or p is keep]
    valued = [i for i, p in enumerate(given) if not p.is_flag]
    bad = data.draw(st.sampled_from(valued), label="bad option") if valued and mode == "one bad" else None
    argv = [cmd, *fixed]
    for i, param in enumerate(given):
        good, wild = _values(cmd, param, pool, out_dir)
        pick = wild if i == bad else good if mode != "any" else st.one_of(good, wild)
        v = data.draw(pick, label=param.opts[0])
        argv += [param.opts[0]] if v is None else [param.opts[0], v]
    return argv


# ------------------------------------------------------------------------------------------
# the test
# ------------------------------------------------------------------------------------------

class _Hang(BaseException):
    """Raised by the alarm: not an Exception, so no handler in meanfield can swallow it."""


def _alarm(signum, frame):
    raise _Hang()


def _outputs_given(argv: list[str]) -> list[Path]:
    return [Path(argv[i + 1]) for i, a in enumerate(argv[:-1]) if a in ("--out", "--data")]


def check_one(argv: list[str], out_dir: Path, in_dir: Path) -> None:
    """Run one command line and check the issue-16 contract on its outcome."""
    before = _snapshot(in_dir)
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIMEOUT)
    try:
        res = CliRunner(env={"DASK_SCHEDULER_ADDRESS": None}).invoke(app, argv, catch_exceptions=True)
    except _Hang:
        pytest.fail(f"meanfield {' '.join(argv)}: still running after {TIMEOUT} s")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    shown = f"meanfield {' '.join(repr(a) if not a or ' ' in a else a for a in argv)}"
    out, err = res.stdout, res.stderr
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        import traceback

        tb = "".join(traceback.format_exception(res.exception))
        pytest.fail(f"{shown}: raised {type(res.exception).__name__}\n{tb[-3000:]}")
    assert res.exit_code in (0, 1, 2), f"{shown}: exit {res.exit_code}\n{err[-2000:]}"
    assert "Traceback" not in out + err, f"{shown}: printed a traceback\n{(out + err)[-3000:]}"
    if "error: " in err:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1, f"{shown}: the error is not one line:\n{err}"
        assert res.exit_code in (1, 2), f"{shown}: printed an error and exited {res.exit_code}"
    if res.exit_code != 0:
        assert not out.strip() or "--json" not in argv, f"{shown}: failed but printed data:\n{out[:500]}"
    elif "--json" in argv:
        parsed = json.loads(out)
        assert isinstance(parsed, dict), shown
    wanted = [p for p in _outputs_given(argv) if p.parent == out_dir]
    left = sorted(p for p in out_dir.iterdir())
    if res.exit_code == 0:
        for p in wanted:
            assert p.exists(), f"{shown}: succeeded but did not write {p}"
        stray = [p for p in left if p not in wanted]
        assert not stray, f"{shown}: left {[p.name for p in stray]}"
    elif not any(p.suffix == ".zarr" for p in wanted):  # a .zarr store is resumable by design
        assert not left, f"{shown}: exit {res.exit_code} but left {[p.name for p in left]}:\n{err}"
    assert _snapshot(in_dir) == before, f"{shown}: changed its inputs"


def _examples(cmd: str) -> int:
    n = os.environ.get("MEANFIELD_FUZZ_EXAMPLES")
    return int(n) if n else EXAMPLES.get(cmd, DEFAULT_EXAMPLES)


@pytest.mark.parametrize("cmd", COMMANDS)
def test_cli_fuzz(cmd, inputs, address_space):
    in_dir, pool = inputs
    out_dir = Path(tempfile.mkdtemp(prefix="fuzz_out_"))
    fresh = bool(os.environ.get("MEANFIELD_FUZZ_EXAMPLES"))

    @settings(max_examples=_examples(cmd), deadline=None, database=None, derandomize=not fresh,
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(data=st.data())
    def run(data):
        for p in out_dir.iterdir():
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        check_one(_argv(data, cmd, pool, out_dir), out_dir, in_dir)

    try:
        run()
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def test_every_command_is_fuzzed():
    # the fuzz reads the app: a command registered there is a parameter of test_cli_fuzz
    assert {"advise", "kernel", "phase-diagram", "spectrum", "abc", "propagate"} <= set(COMMANDS)
    for opt in [*SKIP, *FIXED]:
        assert any(opt in p.opts for c in GROUP.commands.values() for p in c.params), f"stale SKIP entry {opt}"
