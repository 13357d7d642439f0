"""Monte Carlo: wide random numpy networks against the mean-field recursions (issue 2 section 6).

meanfield.simulate.simulate_mlp draws n_nets independent networks of width 2048 and depth 24 and
measures, layer by layer, the length q^l (mean square of h^l), the per-network correlation c^l of
two inputs, and the backpropagated second moment q~^l / q~^L.  The mean-field predictions are
maps.iterate (q^l, c^l) and prod_{k=l}^{L-1} chi_1(q^k) for the gradients (MATH.md 1.5).  The
tolerance is 5 standard errors of the mean over the independent networks at every layer; the
finite-width bias, O(depth / width) relative, is far below that at these sizes.
"""

from __future__ import annotations

import numpy as np
import pytest

import meanfield
from meanfield import maps

pytestmark = pytest.mark.slow

WIDTH, DEPTH, NETS, Z = 2048, 24, 32, 5.0


def _critical(spec, sb):
    return float(meanfield.edge_of_chaos(spec, sb).sigma_w2)


CASES = [
    # activation, phase, sigma_w2, sigma_b2
    ("tanh", "ordered", 1.0, 0.05),
    ("tanh", "critical", 1.760955, 0.05),  # REFERENCE_VALUES A1 (golden: 1.7609546...)
    ("tanh", "chaotic", 3.0, 0.05),
    ("relu", "ordered", 1.5, 0.1),
    ("relu", "critical", 2.0, 0.0),
    ("erf", "ordered", 1.0, 0.05),
    ("erf", "critical", None, 0.05),
    ("erf", "chaotic", 2.0, 0.0),
    ("gelu", "ordered", 1.5, 0.1),
    ("gelu", "critical", None, 0.5),
    ("gelu", "chaotic", 1.98, 0.3),
]


@pytest.mark.parametrize("spec,phase,sw,sb", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_simulated_mlp_matches_the_mean_field_maps(spec, phase, sw, sb):
    from meanfield.simulate import simulate_mlp

    sw = _critical(spec, sb) if sw is None else sw
    fp = meanfield.fixed_point(spec, sw, sb)
    assert fp.phase == phase or (phase == "critical" and abs(fp.chi_1 - 1) < 1e-5)
    for q0, c0, seed in ((1.0, 0.5, 11), (0.3, 0.9, 12)):
        sim = simulate_mlp(spec, sw, sb, DEPTH, width=WIDTH, q0=q0, c0=c0, n_nets=NETS, seed=seed)
        tr = maps.iterate(spec, sw, sb, DEPTH, q0=q0, c0=c0)
        q, c = np.asarray(tr.q), np.asarray(tr.c)
        assert sim.q.shape == q.shape == (DEPTH + 1,)
        zq = (sim.q - q) / sim.q_se
        zc = (sim.c - c) / sim.c_se
        assert np.all(np.abs(zq) <= Z), ("q", spec, phase, q0, c0, np.round(zq, 2))
        assert np.all(np.abs(zc) <= Z), ("c", spec, phase, q0, c0, np.round(zc, 2))
        # gradients: E|dE/dh^l|^2 / E|dE/dh^L|^2 = prod_{k=l}^{L-1} chi_1(q^k)  (MATH.md 1.5, GIA)
        chi = np.array([float(maps.chi_1(spec, qq, sw)) for qq in q[:-1]])
        ratio = np.append(np.cumprod(chi[::-1])[::-1], 1.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            zg = np.where(sim.q_tilde_se > 0, (sim.q_tilde - ratio) / sim.q_tilde_se, 0.0)
        assert np.all(np.abs(zg) <= Z), ("grad", spec, phase, q0, c0, np.round(zg, 2))
