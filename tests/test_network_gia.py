"""The Simple GIA Check (MATH.md 5.3) and a network where the gradient independence assumption
gives the wrong NTK: a readout with non-zero mean (meanfield.network.gia, docs/theory.md)."""

from __future__ import annotations

import numpy as np
import pytest

from meanfield import network as nw
from meanfield.errors import DomainError
from meanfield.network import gia


@pytest.mark.parametrize("layers,holds,readout,word", [
    ([nw.dense(2.0, 0.1), nw.activation("relu"), nw.dense(1.0)], True, "layers[2]", "holds"),
    ([nw.conv([3], sigma_w2=2.0), nw.activation("erf"), nw.global_avg_pool(), nw.dense(1.0)],
     True, "layers[3]", "holds"),
    ([nw.conv([3], sigma_w2=2.0), nw.activation("erf"), nw.dense(1.0), nw.global_avg_pool()],
     True, "layers[2]", "holds"),
    ([nw.dense(2.0), nw.activation("relu")], False, "layers[0]", "layers[1] (relu)"),
    ([nw.dense(2.0), nw.activation("relu"), nw.dense(1.0), nw.layer_norm()], False, "layers[2]",
     "layers[3] (layer_norm)"),
    ([nw.activation("relu")], False, None, "no weight layer"),
    ([nw.dense(2.0), nw.repeat([nw.activation("tanh"), nw.dense(1.5)], 3)], True,
     "layers[1].body[1]", "holds"),
    ([nw.dense(2.0), nw.residual([nw.activation("relu"), nw.dense(1.0)])], False, "layers[1]",
     "not a linear readout"),
])
def test_simple_gia_check(layers, holds, readout, word):
    res = nw.serial(*layers).gia_check()
    assert res.holds is holds
    assert res.readout == readout
    assert word in res.reason
    assert res.to_dict() == {"holds": holds, "readout": readout, "reason": res.reason}


def _inputs():
    X = np.random.default_rng(1).standard_normal((3, 4))
    X[1] = 0.6 * X[0] + 0.8 * X[1]   # a correlated pair
    return X


def test_zero_mean_readout_is_the_algebras_ntk():
    """With mu = 0 the readout is an ordinary dense layer: both answers equal the algebra's NTK of
    dense -> gelu -> dense -> gelu -> dense (no biases), and the correction vanishes."""
    X = _inputs()
    r = gia.mean_readout_ntk(X, "gelu", (2.0, 1.5), sigma_v2=0.7, mu=0.0)
    net = nw.serial(nw.dense(2.0), nw.activation("gelu"), nw.dense(1.5), nw.activation("gelu"),
                    nw.dense(0.7))
    k = net.kernel(X)
    np.testing.assert_allclose(r.gia, k.ntk, rtol=1e-11, atol=0)
    np.testing.assert_array_equal(r.gap, 0.0)
    assert net.gia_check().holds


def test_mean_readout_bad_input():
    with pytest.raises(DomainError, match="needs phi' and phi''"):
        gia.mean_readout_ntk(_inputs(), "relu")
    with pytest.raises(DomainError, match="sigma_v2"):
        gia.mean_readout_ntk(_inputs(), sigma_v2=-1.0)
    with pytest.raises(DomainError, match="width"):
        gia.mean_readout_empirical(_inputs(), 0)


@pytest.mark.slow
def test_wide_networks_follow_the_correction_not_gia():
    """Random gelu networks with readout mean 1 at widths 256..4096 (6 each): their mean NTK is
    within 4 SE of the corrected value at every width, the GIA value stays off by a gap that
    does not shrink (measured gap / predicted gap ~ 1 at every width), and the networks'
    spread about the corrected value falls like width^(-1/2)."""
    X = _inputs()
    theory = gia.mean_readout_ntk(X)
    iu = np.triu_indices(3)
    widths, seeds = [256, 512, 1024, 2048, 4096], 6
    rms, ratio = [], []
    for n in widths:
        E = np.array([gia.mean_readout_empirical(X, n, rng=1000 * n + s) for s in range(seeds)])
        mean, se = E.mean(0)[iu], E.std(0, ddof=1)[iu] / np.sqrt(seeds)
        z = (mean - theory.correct[iu]) / se
        assert np.max(np.abs(z)) <= 4.0, (n, z)
        rms.append(np.sqrt(np.mean((E[:, iu[0], iu[1]] - theory.correct[iu]) ** 2)))
        diag = np.arange(3)
        ratio.append(np.mean((E.mean(0)[diag, diag] - theory.gia[diag, diag]) / theory.gap[diag, diag]))
    # the gap is 12-17% of the NTK's diagonal here, several SE at the widest networks
    assert np.all(theory.gap[np.arange(3), np.arange(3)] > 0.1 * theory.correct[np.arange(3), np.arange(3)])
    assert all(0.6 < r < 1.4 for r in ratio[2:]), ratio
    slope = np.polyfit(np.log(widths), np.log(rms), 1)[0]
    assert -0.8 < slope < -0.3, slope


def test_tied_attention_is_not_a_weight_layer():
    """Tied attention (values = the input) has no weights: the dense before it is the last
    weight layer, and the attention after it makes the output non-linear in it."""
    net = nw.from_spec([{"layer": "dense", "sigma_w2": 1.0},
                        {"layer": "attention", "values": "input", "skip": True}])
    res = net.gia_check()
    assert (res.holds, res.readout) == (False, "layers[0]")
    assert "layers[1] (attention) comes after the readout" in res.reason
