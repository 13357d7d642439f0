"""abc-parametrizations, r and regimes (meanfield.mup; issue 13 part 1; MATH.md 7).

The expected values are not produced by the code under test.  `yang_hu` below restates the
conditions of Yang & Hu 2021 (TP IV, section 3) for SGD with one learning-rate exponent c, in
exact rational arithmetic; per-layer c is reduced to one c by the SGD symmetry
(a, b, c) -> (a + t, b - t, c - 2t) before it is applied.  For Adam, `adam_counting` counts
the size of each layer's feature change layer by layer (the forward propagation of updates of
size Theta(lr) per entry), a different route to the same conditions.  The named tables are
written out by hand from MATH.md 7.1 and TP V Table 3.
"""

from __future__ import annotations

import json
import math
import os
import sys
from fractions import Fraction as F

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from meanfield import mup
from meanfield.cli import app
from meanfield.errors import DomainError

HALF = F(1, 2)


# ------------------------------------------------------------------------------------------
# independent statements of the theory
# ------------------------------------------------------------------------------------------

def init_ok(a, b) -> bool:
    L = len(a) - 1
    return (a[0] + b[0] == 0 and all(a[l] + b[l] == HALF for l in range(1, L))
            and a[L] + b[L] >= HALF)


def regime_of(stable: bool, nontrivial: bool, r) -> str:
    if not stable:
        return "unstable"
    if not nontrivial:
        return "trivial"
    return "feature learning" if r == 0 else "kernel"


def yang_hu(a, b, c):
    """TP IV, SGD, one c: returns (r, regime).  Lists are input layer first, output layer last."""
    L = len(a) - 1
    assert init_ok(a, b)
    r = min(a[L] + b[L], 2 * a[L] + c) + c - 1 + min(2 * a[l] + (1 if l == 0 else 0) for l in range(L))
    stable = r >= 0 and a[L] + b[L] + r >= 1 and 2 * a[L] + c >= 1
    nontrivial = stable and (a[L] + b[L] + r == 1 or 2 * a[L] + c == 1)
    return r, regime_of(stable, nontrivial, r)


def yang_hu_per_layer(a, b, c):
    """Per-layer c: move every layer to c[0] by the SGD symmetry (t = (c_l - c_0)/2), then TP IV."""
    t = [(cl - c[0]) / 2 for cl in c]
    a2 = [al + tl for al, tl in zip(a, t)]
    b2 = [bl - tl for bl, tl in zip(b, t)]
    return yang_hu(a2, b2, c[0])


def adam_counting(a, b, c):
    """Adam (updates Theta(lr) per entry): propagate the size exponent of the feature change.

    Delta h^1 ~ n^{-(a_1 + c_1)} (d inputs, a sum of fixed length); hidden layer l adds its own
    update n^{1 - a_l - c_l} (a sum over n coherent terms) to the propagated change of the layer
    below (W^l of size n^{-1/2} maps Theta(1) to Theta(1)).  Output: W_0^{L+1} Delta x^L is a
    coherent sum, n^{1 - (a+b)_{L+1}} times Delta x^L; Delta W^{L+1} x^L ~ n^{1 - a_{L+1} - c_{L+1}}.
    """
    L = len(a) - 1
    assert init_ok(a, b)
    growth = -(a[0] + c[0])              # log_n of |Delta h^1|
    for l in range(1, L):
        growth = max(growth, 1 - a[l] - c[l])
    r = -growth
    from_features = 1 - (a[L] + b[L]) - r  # log_n of W_0 Delta x^L
    from_readout = 1 - a[L] - c[L]         # log_n of Delta W x^L
    stable = r >= 0 and from_features <= 0 and from_readout <= 0
    nontrivial = stable and (from_features == 0 or from_readout == 0)
    return r, regime_of(stable, nontrivial, r)


def table(L, a3, b3, c3):
    """Expand (input, hidden, output) triples to L+1 layers."""
    return [[x[0]] + [x[1]] * (L - 1) + [x[2]] for x in (a3, b3, c3)]


# Hand-written from MATH.md 7.1 (TP IV) for SGD; same a, b for Adam with TP V Table 3's
# learning rates moved into this form by the Adam symmetry (derivation in docs/mup.md).
NAMED_SGD = {
    "sp": ((0, 0, 0), (0, HALF, HALF), (0, 0, 0)),
    "sp-max-lr": ((0, 0, 0), (0, HALF, HALF), (1, 1, 1)),
    "ntp": ((0, HALF, HALF), (0, 0, 0), (0, 0, 0)),
    "mup": ((-HALF, 0, HALF), (HALF, HALF, HALF), (0, 0, 0)),
    "mfp": ((0, None, 1), (0, None, 0), (-1, None, -1)),
}
NAMED_ADAM = {
    "sp": ((0, 0, 0), (0, HALF, HALF), (0, 0, 0)),
    "sp-max-lr": ((0, 0, 0), (0, HALF, HALF), (F(3, 2),) * 3),  # c = 1 when L = 1 (no hidden layer)
    "ntp": ((0, HALF, HALF), (0, 0, 0), (HALF, 1, HALF)),
    "mup": ((-HALF, 0, HALF), (HALF, HALF, HALF), (HALF, 1, HALF)),
    "mfp": ((0, None, 1), (0, None, 0), (0, None, 0)),
}
EXPECTED = {  # the regimes the papers give (TP IV section 3 and 5; MATH.md 7.1), and r
    "sp": ("unstable", F(-1)), "sp-max-lr": ("kernel", HALF), "ntp": ("kernel", HALF),
    "mup": ("feature learning", F(0)), "mfp": ("feature learning", F(0)),
}


def named(name, L, optimizer):
    """(a, b, c) lists for L hidden layers.  SP + Adam at its largest stable lr: with no
    hidden-to-hidden layer (L = 1) the readout's own update sets c = 1; otherwise the hidden
    layers' coherent update n^{1-c} must be <= n^{-1/2}, c = 3/2."""
    a, b, c = table(L, *(NAMED_SGD if optimizer == "sgd" else NAMED_ADAM)[name])
    if name == "sp-max-lr" and optimizer == "adam" and L == 1:
        c = [F(1)] * 2
    return a, b, c


def expected(name, L, optimizer):
    """EXPECTED is for L >= 2.  With one hidden layer the min over layers has only the input
    layer's term 2 a_1 + 1 (SGD) or a_1 + c_1 (Adam), so SP's r differs (by hand from the
    conditions): SP r = 0 but still unstable (2 a_2 + c = 0 < 1, resp. a_2 + c = 0 < 1); SP at
    its largest stable lr: SGD c = 1 gives r = 1/2 + 1 - 1 + 1 = 3/2, Adam c = 1 gives r = 1."""
    if L == 1 and name == "sp":
        return "unstable", F(0)
    if L == 1 and name == "sp-max-lr":
        return "kernel", (F(3, 2) if optimizer == "sgd" else F(1))
    return EXPECTED[name]


def depths(name):
    return [1] if name == "mfp" else [1, 2, 3, 5, 8]


# ------------------------------------------------------------------------------------------
# the named tables
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("optimizer", mup.OPTIMIZERS)
@pytest.mark.parametrize("name", mup.PARAMETRIZATIONS)
def test_named_exponents_are_the_tables(name, optimizer):
    for L in depths(name):
        want = np.array(named(name, L, optimizer), dtype=float).T
        got = mup.exponents(name, L, optimizer)
        np.testing.assert_array_equal(got, want, err_msg=f"{name} {optimizer} L={L}")
        rep = mup.abc(name, L, optimizer)
        np.testing.assert_array_equal(np.stack([rep.a, rep.b, rep.c], axis=1), want)
        assert [layer.role for layer in rep.layers] == ["input"] + ["hidden"] * (L - 1) + ["output"]


@pytest.mark.parametrize("name", mup.PARAMETRIZATIONS)
def test_named_regimes_sgd(name):
    """muP and MFP learn features, NTP and SP at lr 1/n are kernels, SP at lr O(1) is unstable."""
    for L in depths(name):
        regime, r = expected(name, L, "sgd")
        a, b, c = named(name, L, "sgd")
        assert len(set(c)) == 1
        assert yang_hu(a, b, c[0]) == (r, regime)  # the table against TP IV's conditions
        rep = mup.abc(name, L, "sgd")
        assert rep.regime == regime and rep.r == float(r), (name, L, rep.reason)
        assert rep.stable == (regime != "unstable")
        assert rep.feature_learning == (regime == "feature learning")


@pytest.mark.parametrize("name", mup.PARAMETRIZATIONS)
def test_named_regimes_adam(name):
    for L in depths(name):
        regime, r = expected(name, L, "adam")
        a, b, c = named(name, L, "adam")
        assert adam_counting(a, b, c) == (r, regime)
        rep = mup.abc(name, L, "adam")
        assert rep.regime == regime and rep.r == float(r), (name, L, rep.reason)


def test_mup_equals_tp5_table3_when_multipliers_are_folded_in():
    """TP V Table 3 (MATH.md 7.2): weight variance and learning rate relative to the base width.

    SGD: input variance const, lr x fan_out; hidden 1/fan_in, lr const; output 1/fan_in^2, lr
    1/fan_in.  Adam: input lr const, hidden lr 1/fan_in, output lr 1/fan_in.
    """
    n0, n = 64, 1024
    k = n / n0
    for opt, lrs in (("sgd", [k, 1, 1, 1 / k]), ("adam", [1, 1 / k, 1 / k, 1 / k])):
        rep = mup.abc("mup", 3, opt, width=n, base_width=n0)
        np.testing.assert_allclose([x.weight_variance for x in rep.layers], [1, 1 / k, 1 / k, 1 / k**2])
        np.testing.assert_allclose([x.folded_lr_scale for x in rep.layers], lrs)
        # and in the unfolded form: multiplier n^-a, init variance n^-2b, lr n^-c
        np.testing.assert_allclose([x.multiplier for x in rep.layers], [k**0.5, 1, 1, k**-0.5])
        np.testing.assert_allclose([x.init_variance for x in rep.layers], [1 / k] * 4)


def test_sp_folded_is_sp():
    k = 8.0
    rep = mup.abc("sp", 2, "sgd", width=512, base_width=64)
    np.testing.assert_allclose([x.weight_variance for x in rep.layers], [1, 1 / k, 1 / k])
    np.testing.assert_allclose([x.folded_lr_scale for x in rep.layers], [1, 1, 1])


def test_factors_are_one_at_the_base_width():
    for name in ("sp", "ntp", "mup"):
        for opt in mup.OPTIMIZERS:
            rep = mup.abc(name, 4, opt, width=128, base_width=128)
            for x in rep.layers:
                assert (x.multiplier, x.init_variance, x.lr_scale, x.weight_variance, x.folded_lr_scale) == (1,) * 5


def test_max_stable_lr_exponent():
    """SP: c = 1 for SGD (Yang & Hu); for Adam r = c - 1 and a_{L+1}+b_{L+1}+r >= 1 need c >= 3/2."""
    a, b, _ = table(3, *NAMED_SGD["sp"])
    assert mup.max_stable_lr_exponent(a, b, "sgd") == 1.0
    assert mup.max_stable_lr_exponent(a, b, "adam") == 1.5
    # NTP and muP are stable at c = 0 (SGD) but not below: the threshold is exactly 0
    for name in ("ntp", "mup"):
        a, b, _ = table(3, *NAMED_SGD[name])
        assert mup.max_stable_lr_exponent(a, b, "sgd") == 0.0
    # and the threshold is sharp against the independent conditions
    for name in ("sp", "ntp", "mup"):
        for L in (1, 2, 4):
            a, b, _ = table(L, *NAMED_SGD[name])
            c = F(mup.max_stable_lr_exponent(a, b, "sgd")).limit_denominator(8)
            assert yang_hu(a, b, c)[1] != "unstable"
            assert yang_hu(a, b, c - F(1, 8))[1] == "unstable"


def test_depth_mup():
    for L in (1, 4, 100):
        for opt, lr in (("sgd", 1.0), ("adam", L ** -0.5)):
            d = mup.depth_mup(L, opt)
            assert math.isclose(d.branch_multiplier, 1 / math.sqrt(L))
            assert math.isclose(d.lr_depth_scale, lr)
    rep = mup.abc("mup", 16, "adam", residual=True)
    assert rep.to_dict()["depth_mup"]["branch_multiplier"] == 0.25


# ------------------------------------------------------------------------------------------
# check() on hand-made exponents
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, regime, r", [
    ("-1/2,1/2,0; 0,1/2,0; 1/2,1/2,0", "feature learning", 0.0),  # muP, L = 2
    ("0,0,0; 1/2,0,0; 1/2,0,0", "kernel", 0.5),                     # NTP
    ("0,0,2; 0,0.5,2; 0,0.5,2", "trivial", 1.5),                    # SP with lr 1/n^2
    # features move Theta(1) (r = 0) but the readout is too small to feel it: trivial
    ("-1/2,1/2,0; -1/2,1,0; 1,1,0", "trivial", 0.0),
    # SP with lr n^{-1/2}: r = 0, yet the output blows up (a_{L+1}+b_{L+1}+r = 1/2 < 1)
    ("0,0,1/2; 0,1/2,1/2; 0,1/2,1/2", "unstable", 0.0),
    ("0,0,1;0,0.5,1;0,0.5,1", "kernel", 0.5),                        # SP at lr 1/n
    # muP readout with a per-layer c: the SGD symmetry of muP (a_out = 0, lr 1/n on the readout)
    ("-1/2,1/2,0; 0,1/2,0; 0,1,1", "feature learning", 0.0),
    # MFP, L = 1, and the same by the symmetry with t = -1/2 on the output layer
    ("0,0,-1; 1,0,-1", "feature learning", 0.0),
    ("0,0,-1; 1/2,1/2,0", "feature learning", 0.0),
])
def test_check_hand_made(text, regime, r):
    rep = mup.check(text)
    assert (rep.regime, rep.r) == (regime, r), rep.reason
    ex = [[F(x.strip()) for x in part.split(",")] for part in text.split(";")]
    a, b, c = ([row[i] for row in ex] for i in range(3))
    assert yang_hu_per_layer(a, b, c) == (F(r), regime)


def test_check_says_why():
    rep = mup.check("0,0,1/2; 0,1/2,1/2; 0,1/2,1/2")
    held = {cd.name: cd.holds for cd in rep.conditions}
    assert held == {"init_input": True, "init_hidden": True, "init_output": True, "features_stable": True,
                    "output_from_features": False, "output_from_readout": False, "nontrivial": False,
                    "feature_learning": True}  # r = 0 holds, but the output blows up
    assert not rep.feature_learning and rep.regime == "unstable"
    assert "a_3 + b_3 + r >= 1 fails" in rep.reason and "width^(1/2)" in rep.reason
    rep = mup.check("-1/2,1/2,0; -1/2,1,0; 1,1,0")
    assert "output does not move" in rep.reason and "features move" in rep.reason


@pytest.mark.parametrize("text, needle", [
    ("0,-1/2,0; 0,1/2,0", "input layer blows up"),
    ("1/2,0,0; 0,1/2,0", "input layer vanishes"),
    ("0,0,0; 0,0,0; 0,1/2,0", "hidden layer 2 blows up"),
    ("0,0,0; 0,1,0; 0,1/2,0", "hidden layer 2 vanishes"),
    ("0,0,0; 0,0,0", "output blows up"),
])
def test_check_refuses_init_blow_up(text, needle):
    with pytest.raises(DomainError, match=needle):
        mup.check(text)


@pytest.mark.parametrize("text", ["", ";", "1,2", "0,0,0", "0,0,0;0,1/2", "a,b,c;0,0,0", "1/0,0,0;0,1/2,0",
                                  "nan,0,0;0,1/2,0", "__import__('os').system('true'),0,0;0,1/2,0",
                                  "1e999,0,0;0,1/2,0"])
def test_parse_refuses_bad_text(text):
    with pytest.raises(DomainError):
        mup.check(text)


def test_check_accepts_arrays_and_matches_text():
    ex = mup.exponents("mup", 3, "adam")
    assert mup.check(ex, "adam").to_dict() == {**mup.abc("mup", 3, "adam").to_dict(),
                                               "parametrization": "custom", "notes": []}
    np.testing.assert_array_equal(mup.parse_exponents("-1/2, 1/2, 0 ; 0,0.5,0;0.5,0.5,0;"),
                                  [[-0.5, 0.5, 0], [0, 0.5, 0], [0.5, 0.5, 0]])


@pytest.mark.parametrize("call", [
    lambda: mup.abc("xp", 3), lambda: mup.abc("mup", 0), lambda: mup.abc("mup", 2.5),
    lambda: mup.abc("mup", 3, "rmsprop"), lambda: mup.abc("mup", 3, width=32, base_width=64),
    lambda: mup.abc("mfp", 2), lambda: mup.check(np.zeros((3, 2))), lambda: mup.check([[0, 0, 0]]),
])
def test_bad_arguments(call):
    with pytest.raises(DomainError):
        call()


# ------------------------------------------------------------------------------------------
# random exponents against the independent conditions; the symmetries
# ------------------------------------------------------------------------------------------

quarter = st.integers(-8, 8).map(lambda k: F(k, 4))


@st.composite
def init_stable(draw):
    """Init-stable exponents on a 1/4 grid: (a, b) from a_l and the init conditions, any c_l."""
    L = draw(st.integers(1, 4))
    a = [draw(quarter) for _ in range(L + 1)]
    b = [-a[0]] + [HALF - a[l] for l in range(1, L)] + [HALF - a[L] + draw(st.integers(0, 6).map(lambda k: F(k, 4)))]
    c = [draw(quarter) for _ in range(L + 1)]
    return a, b, c


def _as_array(a, b, c):
    return np.array([[float(x) for x in row] for row in zip(a, b, c)])


@settings(max_examples=300, deadline=None)
@given(init_stable())
def test_check_matches_yang_hu_sgd(ex):
    a, b, c = ex
    r, regime = yang_hu_per_layer(a, b, c)
    rep = mup.check(_as_array(a, b, c), "sgd")
    assert rep.regime == regime and math.isclose(rep.r, float(r), abs_tol=1e-12), (ex, rep.reason)
    assert rep.regime in mup.REGIMES


@settings(max_examples=300, deadline=None)
@given(init_stable())
def test_check_matches_counting_adam(ex):
    a, b, c = ex
    r, regime = adam_counting(a, b, c)
    rep = mup.check(_as_array(a, b, c), "adam")
    assert rep.regime == regime and math.isclose(rep.r, float(r), abs_tol=1e-12), (ex, rep.reason)


@settings(max_examples=200, deadline=None)
@given(init_stable(), st.data())
def test_symmetries_leave_the_regime_unchanged(ex, data):
    """SGD: (a+t, b-t, c-2t); Adam: (a+t, b-t, c-t), per layer (TP IV; TP V / MATH.md 7.2)."""
    a, b, c = ex
    t = [data.draw(quarter) for _ in a]
    for opt, k in (("sgd", 2), ("adam", 1)):
        ref = mup.check(_as_array(a, b, c), opt)
        moved = mup.check(_as_array([x + s for x, s in zip(a, t)], [x - s for x, s in zip(b, t)],
                                    [x - k * s for x, s in zip(c, t)]), opt)
        assert (moved.regime, moved.r) == (ref.regime, ref.r)


def test_dichotomy():
    """Stable and nontrivial: feature learning iff r = 0, kernel iff r > 0, never both."""
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(2000):
        L = int(rng.integers(1, 4))
        a = rng.integers(-4, 5, L + 1) / 4
        b = np.concatenate([[-a[0]], 0.5 - a[1:L], [0.5 - a[L] + rng.integers(0, 5) / 4]])
        c = rng.integers(-4, 9, L + 1) / 4
        for opt in mup.OPTIMIZERS:
            rep = mup.check(np.stack([a, b, c], axis=1), opt)
            seen.add(rep.regime)
            if rep.stable and rep.nontrivial:
                assert (rep.r == 0) == (rep.regime == "feature learning") != (rep.regime == "kernel")
    assert seen == set(mup.REGIMES)


# ------------------------------------------------------------------------------------------
# records and the CLI
# ------------------------------------------------------------------------------------------

def test_to_dict_is_the_json():
    d = mup.abc("mup", 3, "sgd", width=256, base_width=64).to_dict()
    assert list(d)[:8] == ["parametrization", "optimizer", "depth", "width", "base_width", "layers", "r", "regime"]
    json.dumps(d, allow_nan=False)
    assert d["layers"][0]["role"] == "input" and len(d["layers"]) == 4
    assert {"name", "statement", "value", "holds", "meaning"} == set(d["conditions"][0])


ANSI = "\x1b["


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def ok_json(*args) -> dict:
    res = run(*args, "--json")
    assert res.exit_code == 0, (res.stdout, res.stderr, res.exception)
    assert ANSI not in res.stdout and res.stdout.count("\n") == 1
    return json.loads(res.stdout)


def one_line_error(res, code, *needles):
    assert res.exit_code == code, (res.exit_code, res.stdout, res.stderr, res.exception)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in res.stderr and res.stdout == "", res.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.mark.parametrize("name", mup.PARAMETRIZATIONS)
@pytest.mark.parametrize("optimizer", mup.OPTIMIZERS)
def test_cli_named(name, optimizer):
    L = 1 if name == "mfp" else 3
    d = ok_json("abc", "--parametrization", name, "--depth", L, "--optimizer", optimizer)
    assert (d["regime"], d["r"]) == (EXPECTED[name][0], float(EXPECTED[name][1]))
    assert len(d["layers"]) == L + 1 and d["layers"][0]["multiplier"] is None


def test_cli_width_and_residual():
    d = ok_json("abc", "-p", "mup", "-L", 2, "--width", 1024, "--base-width", 256, "--residual")
    assert [x["multiplier"] for x in d["layers"]] == [2.0, 1.0, 0.5]
    assert d["depth_mup"]["branch_multiplier"] == pytest.approx(2 ** -0.5)


def test_cli_check():
    d = ok_json("abc", "--check", "0,0,1/2;0,1/2,1/2;0,1/2,1/2")
    assert d["regime"] == "unstable" and d["parametrization"] == "custom" and d["depth"] == 2
    d = ok_json("abc", "--check", "-1/2,1/2,1/2;0,1/2,1;1/2,1/2,1/2", "--optimizer", "adam", "--depth", 2)
    assert d["regime"] == "feature learning"


def test_cli_human_table():
    res = run("abc", "-p", "ntp", "-L", 2, "--width", 512)
    assert res.exit_code == 0 and ANSI not in res.stdout
    assert "regime  kernel" in res.stdout and "[ok] r >= 0" in res.stdout


@pytest.mark.parametrize("args, needle", [
    (("-p", "xp", "-L", 3), "unknown parametrization"),
    (("-p", "mup", "-L", 0), "depth must be >= 1"),
    (("-p", "mup", "-L", 3, "--width", 32, "--base-width", 64), "below the base width"),
    (("-p", "mup", "-L", 3, "--optimizer", "lion"), "unknown optimizer"),
    (("-p", "mup",), "--depth is required"),
    (("-p", "mfp", "-L", 2), "one hidden layer"),
    (("--check", "0,0;1,1,1"), "three numbers"),
    (("--check", "x,0,0;0,1/2,0"), "cannot read 'x'"),
    (("--check", "0,-1/2,0;0,1/2,0"), "blows up at initialisation"),
    (("--check", "0,0,0;0,1/2,0", "-L", 3), "does not match"),
    (("--check", "0,0,0;0,1/2,0", "-p", "mup", "-L", 1), "not both"),
    ((), "not both or neither"),
])
def test_cli_bad_input(args, needle):
    one_line_error(run("abc", *args), 2, needle)


# ------------------------------------------------------------------------------------------
# finite width: a numpy MLP trained a few SGD steps (slow)
# ------------------------------------------------------------------------------------------

def feature_change(a, b, c, width, *, d=8, n_samples=4, steps=3, lr=0.5, seed=0):
    """RMS per coordinate of h^L_t - h^L_0 after `steps` full-batch SGD steps on 1/2 MSE.

    W^l = n^{-a_l} w^l, w^l ~ N(0, n^{-2 b_l}) (input layer: times 1/d), lr of w^l = lr n^{-c_l}.
    """
    rng = np.random.default_rng(seed)
    n = width
    L = len(a) - 1
    dims = [d] + [n] * L + [1]
    X = rng.standard_normal((d, n_samples))
    y = rng.standard_normal((1, n_samples))
    w = [rng.standard_normal((dims[l + 1], dims[l])) * math.sqrt(n ** (-2 * b[l]) * (1 / d if l == 0 else 1))
         for l in range(L + 1)]
    mult = [n ** -a[l] for l in range(L + 1)]

    def forward(w):
        hs, xs = [], [X]
        for l in range(L):
            h = mult[l] * w[l] @ xs[-1]
            hs.append(h)
            xs.append(np.tanh(h))
        return hs, xs, mult[L] * w[L] @ xs[-1]

    h0 = forward(w)[0][-1]
    for _ in range(steps):
        hs, xs, f = forward(w)
        g = (f - y) / n_samples
        grads = [None] * (L + 1)
        for l in range(L, -1, -1):
            grads[l] = mult[l] * g @ xs[l].T
            if l:
                g = (mult[l] * w[l].T @ g) * (1 - np.tanh(hs[l - 1]) ** 2)
        w = [wl - lr * n ** -c[l] * gl for l, (wl, gl) in enumerate(zip(w, grads))]
    return float(np.sqrt(np.mean((forward(w)[0][-1] - h0) ** 2)))


@pytest.mark.slow
def test_feature_change_exponent_finite_width():
    """2 hidden layers, widths 64..1024, 8 seeds: slope of log rms(Delta h^2) against log n.

    The theory says the slope is -r: 0 for muP, -1/2 for NTP and for SP at lr 1/n; SP at a fixed
    lr blows up (r = -1).  Tolerance: 5 standard errors of the mean slope over seeds, plus 0.05
    for the finite-width bias of a fit that starts at n = 64 (relative corrections O(n^{-1/2})).
    Measured (docs/mup.md): muP -0.01 (sd 0.03), NTP -0.49 (sd 0.10), SP at lr 1/n -0.60 (sd 0.18).
    """
    widths = np.array([64, 128, 256, 512, 1024])
    means = {}
    for name in ("mup", "ntp", "sp-max-lr", "sp"):
        a, b, c = (list(map(float, v)) for v in table(2, *NAMED_SGD[name]))
        slopes = np.array([np.polyfit(np.log(widths), np.log([feature_change(a, b, c, int(n), seed=seed)
                                                              for n in widths]), 1)[0]
                           for seed in range(8)])
        means[name] = slopes.mean()
        if name == "sp":
            assert slopes.min() > 1, slopes  # features grow at least as fast as width^1
            continue
        want = -float(EXPECTED[name][1])
        se = slopes.std(ddof=1) / math.sqrt(len(slopes))
        assert abs(slopes.mean() - want) < 5 * se + 0.05, (name, slopes)
    assert means["mup"] > means["ntp"] + 0.3


# ------------------------------------------------------------------------------------------
# PyTorch: mup_ and check_parametrization (meanfield.torch_mup)
# ------------------------------------------------------------------------------------------

def _torch():
    return pytest.importorskip("torch")


def _mlp(width, d=8, hidden=2):
    nn = _torch().nn
    layers = [nn.Linear(d, width), nn.Tanh()]
    for _ in range(hidden - 1):
        layers += [nn.Linear(width, width), nn.Tanh()]
    return nn.Sequential(*layers, nn.Linear(width, 1))


@pytest.mark.torch
@pytest.mark.parametrize("optimizer, lrs", [
    # TP V Table 3 with k = 4: (input w, input b, hidden w, hidden b, output w, output b)
    ("sgd", (0.4, 0.4, 0.1, 0.4, 0.025, 0.1)),
    ("adam", (0.1, 0.1, 0.025, 0.1, 0.025, 0.1)),
])
def test_mup_applies_table3(optimizer, lrs):
    from meanfield.torch_mup import mup_

    model = _mlp(256)
    rec = mup_(model, 64, optimizer=optimizer, lr=0.1, seed=0, sigma_w2=1.0, sigma_b2=0.0)
    assert [g["lr"] for g in rec.param_groups] == pytest.approx(lrs)
    assert rec.report.regime == "feature learning" and rec.width_mult == 4
    # variances: input 1/d, hidden 1/n (SP), readout 1/(n k); 5 standard errors of a mean square
    want = {"0.weight": 1 / 8, "2.weight": 1 / 256, "4.weight": 1 / (256 * 4)}
    for name, p in model.named_parameters():
        if name in want:
            v = float(p.detach().double().pow(2).mean())
            assert abs(v / want[name] - 1) < 5 * math.sqrt(2 / p.numel()), (name, v)
        assert not vars(p)  # nothing glued onto parameters
    json.dumps(rec.to_dict(), allow_nan=False)


@pytest.mark.torch
def test_mup_at_base_width_is_init_():
    torch = _torch()
    from meanfield.torch import init_
    from meanfield.torch_mup import mup_

    a, b = _mlp(64), _mlp(64)
    rec = mup_(a, 64, lr=0.5, seed=3, sigma_w2=1.5)
    init_(b, seed=3, sigma_w2=1.5)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert {g["lr"] for g in rec.param_groups} == {0.5}


@pytest.mark.torch
def test_mup_refuses_twice_and_bad_input():
    from meanfield.torch_mup import mup_

    model = _mlp(128)
    mup_(model, 64, lr=0.1, seed=0)
    with pytest.raises(DomainError, match="already"):
        mup_(model, 64, lr=0.1)
    for kw in ({"base_width": 256}, {"lr": 0.0}, {"parametrization": "xp"}, {"optimizer": "lion"},
               {"parametrization": "mfp"}):
        args = {"base_width": 64, "lr": 0.1, **kw}
        with pytest.raises(DomainError):
            mup_(_mlp(128), args.pop("base_width"), **args)


@pytest.mark.torch
@pytest.mark.parametrize("name", ["mup", "ntp", "sp", "sp-max-lr"])
@pytest.mark.parametrize("optimizer", mup.OPTIMIZERS)
def test_check_parametrization_reads_back_mup_(name, optimizer):
    """mup_ at widths 64 and 512, then the linter on the weights and the optimizers' groups."""
    torch = _torch()
    from meanfield.torch_mup import check_parametrization, mup_

    opt = torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam
    small, large = _mlp(64), _mlp(512)
    r0 = mup_(small, 64, optimizer=optimizer, lr=0.1, parametrization=name, seed=0, sigma_w2=1.0)
    r1 = mup_(large, 64, optimizer=optimizer, lr=0.1, parametrization=name, seed=1, sigma_w2=1.0)
    chk = check_parametrization(large, opt(r1.param_groups), small, opt(r0.param_groups))
    assert chk.regime == EXPECTED[name][0] == r1.report.regime
    folded = [(x.b, x.c) for x in chk.layers]
    want = [(x.a + x.b, (2 * x.a + x.c) if optimizer == "sgd" else (x.a + x.c)) for x in r1.report.layers]
    assert folded == want


@pytest.mark.torch
def test_check_parametrization_of_plain_pytorch():
    """nn.Linear's default init with one learning rate is SP: unstable; lr / width is the kernel regime."""
    torch = _torch()
    from meanfield.torch_mup import check_parametrization

    torch.manual_seed(0)
    small, large = _mlp(64), _mlp(1024)
    chk = check_parametrization(large, torch.optim.SGD(large.parameters(), lr=0.1),
                                small, torch.optim.SGD(small.parameters(), lr=0.1))
    assert chk.regime == "unstable" and [x.b for x in chk.layers] == [0, 0.5, 0.5]
    chk = check_parametrization(large, torch.optim.SGD(large.parameters(), lr=0.1 / 1024),
                                small, torch.optim.SGD(small.parameters(), lr=0.1 / 64))
    assert chk.regime == "kernel"
    with pytest.raises(DomainError, match="two different widths"):
        check_parametrization(small, torch.optim.SGD(small.parameters(), lr=0.1),
                              small, torch.optim.SGD(small.parameters(), lr=0.1))


@pytest.mark.torch
def test_check_parametrization_zero_readout():
    """muP with a zero-initialised readout (TP V's recommendation) still learns features."""
    torch = _torch()
    from meanfield.torch_mup import check_parametrization, mup_

    small, large = _mlp(64), _mlp(256)
    r0 = mup_(small, 64, lr=0.1, seed=0)
    r1 = mup_(large, 64, lr=0.1, seed=1)
    with torch.no_grad():
        small[-1].weight.zero_()
        large[-1].weight.zero_()
    chk = check_parametrization(large, torch.optim.SGD(r1.param_groups), small, torch.optim.SGD(r0.param_groups))
    assert chk.regime == "feature learning" and any("zero at initialisation" in n for n in chk.notes)
    with torch.no_grad():
        small[0].weight.mul_(0.5)  # the input layer's variance now shrinks with width: refused
        large[0].weight.mul_(0.5 * 256 ** -0.5)
    with pytest.raises(DomainError, match="input layer vanishes"):
        check_parametrization(large, torch.optim.SGD(r1.param_groups), small, torch.optim.SGD(r0.param_groups))


@pytest.mark.torch
@pytest.mark.parametrize("name", ["mup", "ntp", "sp-max-lr"])
@pytest.mark.parametrize("optimizer", mup.OPTIMIZERS)
def test_mup_zero_readout(name, optimizer):
    """mup_(zero_readout=True): the readout (weight and bias) is exactly zero, everything else as
    without it; the record says so; the linter reads the readout as b = infinity (ZERO_B, flagged
    zero_at_init) and its c from the learning rates, and then agrees with mup_'s own report.

    The regimes are derived by hand from docs/mup.md §2 with a_{L+1} + b_{L+1} = infinity
    (L = 2): the conditions on the initial readout always hold, so r is set by the readout's
    update, m = 2a + c (SGD) and nontriviality by u = 1.  muP: u = 1, r = 0 (feature learning).
    NTP SGD: m = 1, r = 1 + 0 - 1 + min(0 + 1, 1) = 1 (kernel; 1/2 with the random readout).
    NTP Adam: r = min(0 + 1/2 + 1, 1 + 1) - 1 = 1/2, u = 1 (kernel).  SP at its largest lr, SGD
    (c = 1): m = 1, r = 1 - 1 + min(1 + 1, 1) = 1, u = 1 (kernel); Adam (c = 3/2): u = 3/2 > 1
    and A + r = infinity, so f does not move: trivial."""
    torch = _torch()
    from meanfield.torch_mup import check_parametrization, mup_

    want = {("mup", "sgd"): ("feature learning", 0.0), ("mup", "adam"): ("feature learning", 0.0),
            ("ntp", "sgd"): ("kernel", 1.0), ("ntp", "adam"): ("kernel", 0.5),
            ("sp-max-lr", "sgd"): ("kernel", 1.0), ("sp-max-lr", "adam"): ("trivial", 0.5)}[(name, optimizer)]
    opt = torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam
    small, large, plain = _mlp(64), _mlp(256), _mlp(256)
    kw = dict(optimizer=optimizer, lr=0.1, parametrization=name, sigma_w2=1.0, sigma_b2=0.1)
    r0 = mup_(small, 64, seed=0, zero_readout=True, **kw)
    r1 = mup_(large, 64, seed=1, zero_readout=True, **kw)
    rp = mup_(plain, 64, seed=1, **kw)
    assert r1.zero_readout and not rp.zero_readout and r1.to_dict()["zero_readout"] is True
    assert (r1.report.regime, r1.report.r) == want
    assert not large[-1].weight.any() and not large[-1].bias.any()
    for (na, pa), pb in zip(large.named_parameters(), plain.parameters()):
        if not na.startswith("4."):
            assert torch.equal(pa, pb), na      # only the readout differs
    assert [g["lr"] for g in r1.param_groups] == [g["lr"] for g in rp.param_groups]
    out = {t.name: t for t in r1.tensors}["4.weight"]
    assert out.init_variance == 0 and out.b == mup.ZERO_B
    assert any("starts at zero" in n for n in r1.notes)
    json.dumps(r1.to_dict(), allow_nan=False)

    chk = check_parametrization(large, opt(r1.param_groups), small, opt(r0.param_groups))
    read = chk.layers[-1]
    assert read.zero_at_init and read.b == read.b_estimate == mup.ZERO_B and read.variance == 0
    assert not any(x.zero_at_init for x in chk.layers[:-1])
    folded_c = [(2 * x.a + x.c) if optimizer == "sgd" else (x.a + x.c) for x in rp.report.layers]
    assert [x.c for x in chk.layers] == folded_c
    assert (chk.regime, chk.report.r) == want
    assert [x.change_exponent for x in chk.report.layers] == [x.change_exponent for x in r1.report.layers]
    json.dumps(chk.to_dict(), allow_nan=False)
    with pytest.raises(DomainError, match="zero_readout"):
        mup_(_mlp(128), 64, lr=0.1, zero_readout=1)


@pytest.mark.torch
def test_coord_check_record_and_rng():
    torch = _torch()
    from meanfield.torch_mup import coord_check

    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(4, 8, generator=g), torch.randn(4, 1, generator=g)
    state = torch.get_rng_state()
    cc = coord_check(_mlp, [32, 64], X, y, lr=0.1, steps=1, seeds=[0])
    assert torch.equal(state, torch.get_rng_state())  # global random state untouched
    assert cc.change.shape == (2, 3) and cc.layers == ("0", "2", "4")
    np.testing.assert_array_equal(cc.predicted, [0, 0, 0])
    json.dumps(cc.to_dict(), allow_nan=False)
    again = coord_check(_mlp, [32, 64], X, y, lr=0.1, steps=1, seeds=[0])
    np.testing.assert_array_equal(cc.change, again.change)  # deterministic given the seeds
    with pytest.raises(DomainError):
        coord_check(_mlp, [64], X, y, lr=0.1)
    with pytest.raises(DomainError, match="shape"):
        coord_check(_mlp, [32, 64], X, y[:, 0], lr=0.1, steps=1, seeds=[0])


@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.parametrize("optimizer, lr", [("sgd", 0.1), ("adam", 0.01)])
def test_coord_check_exponents(optimizer, lr):
    """2 hidden layers, widths 64..1024, 4 seeds, 3 steps: SGD at lr 0.1 (lr 0.5 overshoots at
    these sizes: the logits then move by ~7 for targets of size 1 and the slopes scatter by 0.2),
    Adam at lr 0.01 (its derived exponents, docs/mup.md §2).  Hidden layers: muP 0, NTP -1/2
    for both optimizers (theory: AbcReport change_exponent); tolerance 5 standard errors over
    seeds plus 0.05 finite-width bias, as in the numpy check."""
    torch = _torch()
    from meanfield.torch_mup import coord_check

    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(8, 8, generator=g), torch.randn(8, 1, generator=g)
    for name, want in (("mup", 0.0), ("ntp", -0.5)):
        cc = coord_check(_mlp, [64, 128, 256, 512, 1024], X, y, parametrization=name, optimizer=optimizer,
                         lr=lr, steps=3, seeds=range(4), sigma_w2=1.0)
        np.testing.assert_array_equal(cc.predicted[:2], [want, want])
        se = cc.exponent_sd / 2
        for j in range(2):
            assert abs(cc.exponent[j] - want) < 5 * se[j] + 0.05, (name, cc.exponent, cc.exponent_sd)
        assert abs(cc.exponent[2]) < 5 * se[2] + 0.1  # logits move Theta(1) in both


def test_change_exponents_by_hand():
    """Delta h^l ~ n^e per layer (L = 3).  SP at lr 1/n (SGD): the input layer's update is a sum
    over d fixed terms, n^{-c - m} = n^{-3/2}; hidden layers n^{1 - c - m} = n^{-1/2}; f moves
    Theta(1).  NTP: -1/2 everywhere but f.  muP: 0 everywhere."""
    want = {"mup": [0, 0, 0, 0], "ntp": [-0.5, -0.5, -0.5, 0], "sp-max-lr": [-1.5, -0.5, -0.5, 0]}
    for name, e in want.items():
        for opt in mup.OPTIMIZERS:
            assert [x.change_exponent for x in mup.abc(name, 3, opt).layers] == e, (name, opt)


@pytest.mark.torch
def test_mup_residual_and_conv():
    """Stem / blocks / head of a residual MLP and the layers of a conv net take the input /
    hidden / output rows (k = 4, SGD: input and hidden biases lr x k, readout lr / k)."""
    torch = _torch()
    nn = torch.nn
    from meanfield.torch_mup import mup_

    class Block(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.w, self.v = nn.Linear(n, n), nn.Linear(n, n)

        def forward(self, x):
            return x + self.v(torch.tanh(self.w(x)))

    class ResNet(nn.Module):
        def __init__(self, n, depth=3):
            super().__init__()
            self.inp, self.out = nn.Linear(8, n), nn.Linear(n, 1)
            self.blocks = nn.Sequential(*[Block(n) for _ in range(depth)])

        def forward(self, x):
            return self.out(self.blocks(self.inp(x)))

    rec = mup_(ResNet(256), 64, lr=0.1, seed=0)
    lrs = {t.name: t.lr for t in rec.tensors}
    assert lrs["inp.weight"] == lrs["blocks.1.v.bias"] == pytest.approx(0.4)
    assert lrs["blocks.2.w.weight"] == pytest.approx(0.1) and lrs["out.weight"] == pytest.approx(0.025)
    assert rec.report.depth == 7 and rec.report.regime == "feature learning"

    conv = nn.Sequential(nn.Conv2d(3, 128, 3), nn.ReLU(), nn.Conv2d(128, 128, 3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(128 * 4 * 4, 10))
    rec = mup_(conv, 32, lr=0.1, seed=0, sigma_w2=2.0)
    var = {t.name: t.init_variance for t in rec.tensors}
    for name, want in (("0.weight", 2 / 27), ("2.weight", 2 / (128 * 9)), ("5.weight", 2 / (128 * 16) / 4)):
        n_entries = dict(conv.named_parameters())[name].numel()
        assert abs(var[name] / want - 1) < 5 * math.sqrt(2 / n_entries), (name, var[name], want)


def test_depth_mup_with_residual_recursions():
    """ReLU full residual blocks with branch variance sigma_v2 / L: each block multiplies p and
    chi by 1 + sigma_w2 sigma_v2 / (2 L) (V_relu(q) = q / 2, E[relu'^2] = 1/2), so both logs are
    L log(1 + sigma_w2 sigma_v2 / (2L)) -> sigma_w2 sigma_v2 / 2, bounded in depth."""
    for L in (10, 1000):
        d = mup.depth_mup(L, activation="relu", sigma_w2=2.0, sigma_v2=1.0)
        want = L * math.log1p(1.0 / L)
        assert math.isclose(d.log_p_ratio, want, rel_tol=1e-9)
        assert math.isclose(d.log_gradient_explosion, want, rel_tol=1e-9)
        assert d.branch_sigma_v2 == 1.0 / L and 0 < d.advice_sigma_v2 < 1
    assert mup.depth_mup(5).log_p_ratio is None


# ------------------------------------------------------------------------------------------
# scripts/validate_mup.py (issue 13 part 3): the measuring function on a tiny configuration
# ------------------------------------------------------------------------------------------

def _validate_mup_script():
    import importlib.util
    from pathlib import Path

    _torch()
    path = Path(__file__).resolve().parents[1] / "scripts" / "validate_mup.py"
    spec = importlib.util.spec_from_file_location("validate_mup", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("validate_mup", mod)  # its dataclasses look their module up there
    spec.loader.exec_module(sys.modules["validate_mup"])
    return sys.modules["validate_mup"]


@pytest.mark.torch
def test_validate_mup_measures_what_the_plot_reads(tmp_path):
    from dataclasses import replace

    vm = _validate_mup_script()
    # the Gram statistic: orthogonal rows give 1, a repeated row (up to scale) gives 0
    assert vm.gram_min_eig(np.eye(3, 5)) == pytest.approx(1.0)
    assert abs(vm.gram_min_eig(np.array([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0], [0.0, 1.0, 1.0]]))) < 1e-12
    cfg = vm.QUICK
    data = vm.load_data(cfg.data, cfg.n_train, cfg.n_test)
    out = tmp_path / "res.json"
    res = vm.measure(cfg, data, str(out), log=lambda _: None)
    assert set(res["runs"]) == {k for k, _ in vm.planned_runs(cfg)}
    saved = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the results file"))
    assert saved == json.loads(json.dumps(res))
    ran = []
    vm.measure(cfg, data, str(out), log=ran.append)  # resumed: every run is already there
    assert ran == []
    with pytest.raises(DomainError, match="steps"):
        vm.measure(replace(cfg, steps=7), data, str(out))

    s = vm.summarise(saved)
    for p in cfg.coord_parametrizations:
        fc = s["feature_change"][p]
        assert len(fc["exponent"]) == len(fc["exponent_sd"]) == len(fc["predicted"]) == cfg.depth + 1
        assert np.asarray(fc["change"]).shape == (len(cfg.widths), cfg.depth + 1)
    for p in cfg.rich_parametrizations:
        rows = s["richness"][p]["rows"]
        assert [r["width"] for r in rows] == list(cfg.widths)
        for r in rows:
            assert r["seeds"] == len(cfg.seeds) and 0 <= r["gram_min_eig_init"] <= 1 and r["loss"] > 0
    assert 0 < s["reference"]["gram_min_eig_init"] <= 1
    for p in cfg.transfer_parametrizations:
        t = s["transfer"][p]
        assert np.asarray(t["loss"]).shape == (len(cfg.widths), len(cfg.lr_grid))
        assert all(b is None or 2.0 ** b in cfg.lr_grid for b in t["best_log2_lr"])
    paths = vm.plot(s, str(tmp_path))
    assert all(os.path.getsize(p) > 1000 for p in paths)
    assert "(c) sp" in vm.report(s)


# ------------------------------------------------------------------------------------------
# attention in mup_: 1/d_head logits (TP V), docs/mup.md §7.1
# ------------------------------------------------------------------------------------------

_QKVO = [("attn.q", "attn.k", "attn.v", "attn.o")]


def _init_logits(model, kind):
    """The attention logits of ``model`` (a validate_mup.TinyTransformer) on fixed tokens."""
    torch = _torch()
    vm = _validate_mup_script()
    X = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(0))
    got = {}
    if kind == "mha":
        hk = model.attn.register_forward_hook(lambda m, a, kw, o: got.update(s=vm._mha_logits(m, a[0], a[1])),
                                              with_kwargs=True)
    else:
        hk = model.attn.logits.register_forward_hook(lambda m, i, o: got.update(s=o))
    with torch.no_grad():
        model(X)
    hk.remove()
    return got["s"]


@pytest.mark.torch
@pytest.mark.parametrize("optimizer", mup.OPTIMIZERS)
def test_mup_attention_record(optimizer):
    """k = 4 (width 256, base 64).  Hand-written q/k/v/o: q folded with s = k^{-1/2} = 1/2 --
    variance 1/n x 1/4, lr x 1/4 (SGD) or x 1/2 (Adam) on top of the hidden layer's (SGD 0.1,
    Adam 0.1/4), its bias on top of the input layer's (SGD 0.4, Adam 0.1); k, v, o plain hidden
    layers.  nn.MultiheadAttention: in_proj / out_proj hidden, the factor 1/2 in a pre-hook on
    the query.  In both the logits are exactly 1/2 of those with attention_logits="1/sqrt(d)"
    from the same draw (logits are linear in q), and at the base width the factor is 1."""
    torch = _torch()
    from meanfield.torch_mup import mup_

    vm = _validate_mup_script()
    adam = optimizer == "adam"
    hidden = 0.1 / 4 if adam else 0.1
    bias_in = 0.1 if adam else 0.4
    rec = mup_(vm.TinyTransformer(8, 256), 64, optimizer=optimizer, lr=0.1, seed=0, attention=_QKVO,
               sigma_w2=1.0, sigma_b2=0.0)
    t = {x.name: x for x in rec.tensors}
    assert {n: x.attention for n, x in t.items() if x.attention} == {
        f"attn.{p}.{kind}": p for p in "qkvo" for kind in ("weight", "bias")}
    assert t["attn.q.weight"].lr == pytest.approx(hidden * (0.5 if adam else 0.25))
    assert t["attn.q.bias"].lr == pytest.approx(bias_in * (0.5 if adam else 0.25))
    assert t["attn.k.weight"].lr == t["attn.v.weight"].lr == t["attn.o.weight"].lr == pytest.approx(hidden)
    assert t["attn.q.weight"].b == 1.0 and t["attn.k.weight"].b == 0.5
    for name, want in (("attn.q.weight", 1 / (4 * 256)), ("attn.k.weight", 1 / 256)):
        v, n_entries = t[name].init_variance, 256 * 256
        assert abs(v / want - 1) < 5 * math.sqrt(2 / n_entries), (name, v)
    (a,) = rec.attention
    assert (a.module, a.q, a.k, a.v, a.o, a.logits, a.multiplier) == (
        "attn", "attn.q.weight", "attn.k.weight", "attn.v.weight", "attn.o.weight", "1/d", 0.5)
    assert rec.hooks == () and [x.role for x in rec.report.layers] == ["input"] + ["hidden"] * 4 + ["output"]
    json.dumps(rec.to_dict(), allow_nan=False)

    rec = mup_(vm.TinyTransformer(8, 256, "mha"), 64, optimizer=optimizer, lr=0.1, seed=0)
    t = {x.name: x for x in rec.tensors}
    assert {n: x.attention for n, x in t.items() if x.attention} == {"attn.in_proj_weight": "qkv",
                                                                      "attn.out_proj.weight": "o"}
    assert t["attn.in_proj_weight"].lr == t["attn.out_proj.weight"].lr == pytest.approx(hidden)
    (a,) = rec.attention
    assert (a.kind, a.heads, a.head_dim, a.multiplier, len(rec.hooks)) == ("nn.MultiheadAttention", 2, 128, 0.5, 1)
    assert any("pre-hook" in n for n in rec.notes)
    json.dumps(rec.to_dict(), allow_nan=False)
    # the hook scales the query whether it comes as an argument or a keyword; the model still pickles
    mha, x, ones = vm.TinyTransformer(8, 256, "mha"), torch.full((2, 3, 256), 0.1), torch.ones(2, 3, 256)
    mup_(mha, 64, optimizer=optimizer, lr=0.1, seed=0)
    torch.testing.assert_close(mha.attn(x, ones, ones)[0], mha.attn(query=x, key=ones, value=ones)[0])
    import io

    buf = io.BytesIO()
    torch.save(mha, buf)
    buf.seek(0)
    X = torch.randn(2, 3, 8)
    torch.testing.assert_close(torch.load(buf, weights_only=False)(X), mha(X))

    for kind in ("linear", "mha"):
        att = _QKVO if kind == "linear" else None
        logits = {}
        for lg in ("1/d", "1/sqrt(d)"):
            for w in (64, 256):
                m = vm.TinyTransformer(8, w, kind)
                mup_(m, 64, optimizer=optimizer, lr=0.1, seed=3, attention=att, attention_logits=lg)
                logits[lg, w] = _init_logits(m, kind)
        torch.testing.assert_close(logits["1/d", 256], 0.5 * logits["1/sqrt(d)", 256])
        torch.testing.assert_close(logits["1/d", 64], logits["1/sqrt(d)", 64])
    # the default follows the parametrization: SP keeps the model's own 1/sqrt(d)
    assert mup_(vm.TinyTransformer(8, 256, "mha"), 64, lr=0.1, parametrization="sp").attention[0].multiplier == 1

    # coord_check runs on both; MHA's out_proj is applied inside the module (not measured apart);
    # the hand-written q carries the factor k^{-1/2}, so its own output's theory is -1/2
    from meanfield.torch_mup import coord_check

    X, y = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(1)), torch.ones(2, 1)
    cc = coord_check(lambda w: vm.TinyTransformer(8, w, "mha"), [64, 128], X, y, optimizer=optimizer, lr=0.01,
                     steps=1, seeds=[0])
    assert cc.layers == ("inp", "attn", "out") and list(cc.predicted) == [0, 0, 0]
    cc = coord_check(lambda w: vm.TinyTransformer(8, w), [64, 128], X, y, optimizer=optimizer, lr=0.01, steps=1,
                     seeds=[0], attention=_QKVO)
    assert cc.layers == ("inp", "attn.q", "attn.k", "attn.v", "attn.o", "out")
    assert list(cc.predicted) == [0, -0.5, 0, 0, 0, 0] and np.isfinite(cc.change).all()


@pytest.mark.torch
def test_mup_attention_refusals():
    torch = _torch()
    nn = torch.nn
    from meanfield.torch_mup import mup_

    vm = _validate_mup_script()

    class Net(nn.Module):
        def __init__(self, attn, extra=None):
            super().__init__()
            self.inp, self.attn, self.out = nn.Linear(8, 128), attn, nn.Linear(128, 1)
            self.extra = extra

        def forward(self, x):
            h = self.inp(x)
            return self.out(h + self.attn(h, h, h)[0])

    for attn, needle in ((nn.MultiheadAttention(128, 2, batch_first=True), "bias=True"),
                         (nn.MultiheadAttention(128, 2, bias=False, kdim=64, vdim=64), "kdim"),
                         (nn.MultiheadAttention(128, 2, bias=False, add_bias_kv=True), "add_bias_kv")):
        with pytest.raises(DomainError, match=needle) as exc:
            mup_(Net(attn), 64, lr=0.1)
        assert "\n" not in str(exc.value) and "nn.MultiheadAttention" in str(exc.value)
    mha = lambda: nn.MultiheadAttention(128, 2, bias=False)  # noqa: E731
    with pytest.raises(DomainError, match="LayerNorm"):
        mup_(Net(mha(), nn.LayerNorm(128)), 64, lr=0.1)
    with pytest.raises(DomainError, match="does not apply"):
        mup_(Net(mha()), 64, lr=0.1, sigma_o2=2.0)
    with pytest.raises(DomainError, match="attention_logits"):
        mup_(Net(mha()), 64, lr=0.1, attention_logits="1/d^2")
    hand = vm.TinyTransformer(8, 128)
    for bad, needle in (([("attn.q", "attn.k")], r"\(q, k, v, o\)"), ("attn.q", r"\(q, k, v, o\)"),
                        ([("attn.q", "attn.k", "attn.v", "attn.logits")], "not an nn.Linear"),
                        ([("attn.q", "attn.k", "attn.v", "attn.q")], "named twice")):
        with pytest.raises(DomainError, match=needle):
            mup_(hand, 64, lr=0.1, attention=bad)
    with pytest.raises(DomainError, match=r"attention=\[\(q, k, v, o\)\]") as exc:  # tracing refuses it
        mup_(hand, 64, lr=0.1)
    assert "\n" not in str(exc.value)
    with pytest.raises(DomainError, match="width to width"):  # the readout registered before the input layer
        mup_(Net(mha(), nn.Linear(128, 3)), 64, lr=0.1)


@pytest.mark.torch
@pytest.mark.slow
def test_attention_logits_coord_check():
    """The logits' RMS change after 3 full-batch steps on 4 sequences of 6 tokens, d_head = width / 2.
    Theory (docs/mup.md §7.1): under muP with 1/d_head logits it is Theta(1); with the model's
    own 1/sqrt(d_head) it grows as width^(1/2) under Adam (q moves Theta(1) per coordinate along
    k: q.k = Theta(d)) and as width under SGD (q's update is lr n dL/dq, itself ~ d^(-1/2)).
    Tolerance: 5 standard errors over the 4 seeds plus 0.1 (finite-width bias), as for the
    logits in test_coord_check_exponents."""
    torch = _torch()
    vm = _validate_mup_script()
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(4, 6, 8, generator=g), torch.randn(4, 1, generator=g)
    cases = [("adam", "mha", 0.01, (64, 128, 256, 512), 0.5), ("adam", "linear", 0.01, (64, 128, 256, 512), 0.5),
             ("sgd", "linear", 0.5, (64, 128, 256, 512, 1024), 1.0)]
    for optimizer, kind, lr, widths, sp_slope in cases:
        for logits, want in (("1/d", 0.0), ("1/sqrt(d)", sp_slope)):
            r = vm.attention_logit_change(widths, kind, logits, optimizer, lr, 3, range(4), X, y, base_width=64)
            assert abs(r["slope"] - want) < 5 * r["slope_sd"] / 2 + 0.1, (optimizer, kind, logits, r)
