"""The disk cache of the Gaussian tables (meanfield.gaussian.cached_arrays, issue 10).

What is checked: a second build reads the file instead of computing (counted by
gaussian.cache_stats); what is read is bit-equal to a build with the cache off; a truncated,
corrupted or foreign file is rejected and rebuilt; the key moves with the package version, the
activation's spec and the table's parameters; writes are atomic (no partial file is ever at the
final path); custom activations, ``MEANFIELD_CACHE_DIR=off`` and an unwritable folder never
write.  Every test points the cache at its own tmp_path (conftest already keeps the session
away from the home directory).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

import meanfield
from meanfield import gaussian
from meanfield.activations import custom, get_activation
from meanfield.gaussian import TableSet


@pytest.fixture
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv(gaussian.CACHE_ENV, str(d))
    monkeypatch.setattr(gaussian, "_CACHE_UNWRITABLE", set())
    gaussian._table.cache_clear()
    yield d
    gaussian._table.cache_clear()


def _delta(before: dict) -> dict:
    now = gaussian.cache_stats()
    return {k: now[k] - before[k] for k in now}


def _spline_arrays(act, name):
    gaussian._table.cache_clear()
    tab = gaussian._table(act, name)
    return tab.breaks.copy(), tab.coef.copy()


def _files(d):
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def test_second_build_reads_the_file_and_is_bit_equal_to_a_fresh_one(cache, monkeypatch):
    act = get_activation("tanh")
    s0 = gaussian.cache_stats()
    first = _spline_arrays(act, "v")
    assert _delta(s0)["built"] == 1 and _delta(s0)["written"] == 1
    assert len(_files(cache)) == 1
    s1 = gaussian.cache_stats()
    second = _spline_arrays(act, "v")
    assert _delta(s1)["built"] == 0 and _delta(s1)["read"] == 1
    monkeypatch.setenv(gaussian.CACHE_ENV, "off")
    fresh = _spline_arrays(act, "v")
    for a, b, c in zip(first, second, fresh):
        assert a.tobytes() == b.tobytes() == c.tobytes()


def test_kernel_tables_and_correlation_tables_are_cached(cache, monkeypatch):
    """TableSet (per-layer W/D tables, 2-D quadratures) and CorrelationTable (maps.py's
    depth iterations) read back exactly what a build with the cache off gives."""
    act = get_activation("tanh")
    s0 = gaussian.cache_stats()
    a = TableSet(act, np.array([0.7]), np.array([2.0]))
    t = gaussian.CorrelationTable(act, 0.7, derivative=False)
    assert _delta(s0)["built"] == 2
    s1 = gaussian.cache_stats()
    b = TableSet(act, np.array([0.7]), np.array([2.0]))
    u = gaussian.CorrelationTable(act, 0.7, derivative=False)
    assert _delta(s1)["built"] == 0 and _delta(s1)["read"] == 2
    monkeypatch.setenv(gaussian.CACHE_ENV, "off")
    c = TableSet(act, np.array([0.7]), np.array([2.0]))
    v = gaussian.CorrelationTable(act, 0.7, derivative=False)
    for x in (b, c):
        assert x.table.coef.tobytes() == a.table.coef.tobytes() and x.G == a.G
        assert x.error_estimate == a.error_estimate and x.n_nodes == a.n_nodes
    for x in (u, v):
        assert x._tab.coef.tobytes() == t._tab.coef.tobytes()
    # another variance is another table
    s2 = gaussian.cache_stats()
    gaussian.CorrelationTable(act, 0.7000000000000001, derivative=False)
    assert _delta(s2)["built"] == 1


@pytest.mark.parametrize("damage", ["truncate", "flip", "foreign", "garbage", "empty"])
def test_a_damaged_file_is_rebuilt_never_trusted(cache, damage):
    act = get_activation("selu")
    ref = _spline_arrays(act, "vd")
    (path,) = [cache / n for n in _files(cache)]
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip":  # a byte inside the stored coefficients: the checksum catches it
        z = dict(np.load(path))
        z["coef"] = z["coef"].copy()
        z["coef"][3, 100] = np.nextafter(z["coef"][3, 100], np.inf)
        np.savez(path, **z)
    elif damage == "foreign":  # a valid file of another table under this name: the key catches it
        _spline_arrays(act, "v")
        other = [cache / n for n in _files(cache) if cache / n != path][0]
        os.replace(other, path)
    elif damage == "garbage":
        path.write_bytes(b"not a zip file" * 100)
    else:
        path.write_bytes(b"")
    s0 = gaussian.cache_stats()
    got = _spline_arrays(act, "vd")
    d = _delta(s0)
    assert d["rejected"] == 1 and d["built"] == 1 and d["written"] == 1 and d["read"] == 0
    for a, b in zip(ref, got):
        assert a.tobytes() == b.tobytes()
    s1 = gaussian.cache_stats()
    _spline_arrays(act, "vd")  # the rebuilt file is good again
    assert _delta(s1)["read"] == 1


def test_the_key_moves_with_version_spec_and_parameters(cache, monkeypatch):
    k = gaussian.cache_key("spline", "tanh", {"moment": "v"})
    assert k == gaussian.cache_key("spline", "tanh", {"moment": "v"})
    others = [gaussian.cache_key("spline", "gelu", {"moment": "v"}),
              gaussian.cache_key("spline", "tanh", {"moment": "vd"}),
              gaussian.cache_key("wd", "tanh", {"moment": "v"}),
              gaussian.cache_key("spline", "tanh", {"moment": "v", "q": 0.1 + 0.2}),
              gaussian.cache_key("spline", "tanh", {"moment": "v", "q": 0.3})]
    assert len({k, *others}) == 1 + len(others)
    paths = {gaussian.cache_path("spline", "tanh", x) for x in [k] + others}
    assert len(paths) == 1 + len(others)
    monkeypatch.setattr(meanfield, "__version__", "99.0")
    assert gaussian.cache_key("spline", "tanh", {"moment": "v"}) != k
    # a file written under the old version is not read under the new one
    monkeypatch.undo()
    monkeypatch.setenv(gaussian.CACHE_ENV, str(cache))
    act = get_activation("tanh")
    _spline_arrays(act, "v")
    monkeypatch.setattr(meanfield, "__version__", "99.0")
    s0 = gaussian.cache_stats()
    _spline_arrays(act, "v")
    assert _delta(s0)["built"] == 1 and len(_files(cache)) == 2


def test_activation_spec_only_for_registry_activations():
    assert gaussian.activation_spec(get_activation("tanh")) == "tanh"
    assert gaussian.activation_spec(get_activation("leaky_relu:0.1")) == "leaky_relu:0.1"
    assert gaussian.activation_spec(get_activation("elu")) == "elu:1"
    assert gaussian.activation_spec(custom(np.tanh)) is None
    tanh = get_activation("tanh")
    copy = type(tanh)(**{**tanh.__dict__})  # same name and functions, not the registry's object
    assert gaussian.activation_spec(copy) is None


def test_custom_activations_and_off_never_write(cache, monkeypatch):
    s0 = gaussian.cache_stats()
    _spline_arrays(custom(lambda x: np.tanh(1.3 * x)), "v")
    assert _delta(s0)["built"] == 1 and _files(cache) == []
    for off in ("off", "OFF", "none", "0"):
        monkeypatch.setenv(gaussian.CACHE_ENV, off)
        assert gaussian.cache_dir() is None
        _spline_arrays(get_activation("tanh"), "v")
    assert _files(cache) == []


def test_cache_folder_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv(gaussian.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert gaussian.cache_dir() == tmp_path / "xdg" / "meanfield"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # invalid per the XDG spec: ignored
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert gaussian.cache_dir() == tmp_path / "home" / ".cache" / "meanfield"
    monkeypatch.setenv(gaussian.CACHE_ENV, str(tmp_path / "mine"))
    assert gaussian.cache_dir() == tmp_path / "mine"


def test_unwritable_folder_falls_back_to_memory_with_one_warning(cache, monkeypatch, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    monkeypatch.setenv(gaussian.CACHE_ENV, str(blocker / "cache"))  # mkdir under a file fails
    act = get_activation("gelu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = _spline_arrays(act, "v")
        b = _spline_arrays(act, "vd")
        _spline_arrays(act, "v")
    msgs = [w for w in caught if "table cache" in str(w.message)]
    assert len(msgs) == 1, [str(w.message) for w in caught]
    monkeypatch.setenv(gaussian.CACHE_ENV, "off")
    assert _spline_arrays(act, "v")[1].tobytes() == a[1].tobytes()
    assert _spline_arrays(act, "vd")[1].tobytes() == b[1].tobytes()


def test_writes_are_atomic(cache, monkeypatch):
    """The file appears at its final path only by os.replace of a complete temporary file in the
    same folder; a write that fails midway leaves neither the file nor the temporary behind."""
    act = get_activation("softplus")
    real_replace, seen = os.replace, []

    def replace(src, dst):
        seen.append((os.path.dirname(src) == os.path.dirname(dst), os.path.exists(dst),
                     np.load(src)["coef"].shape))
        real_replace(src, dst)

    monkeypatch.setattr(gaussian.os, "replace", replace)
    _spline_arrays(act, "v")
    assert seen and seen[0][0] and not seen[0][1]
    (path,) = [cache / n for n in _files(cache)]
    good = path.read_bytes()

    def savez(fh, **arrays):  # half a file, then the disk is full
        fh.write(good[: len(good) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gaussian.np, "savez", savez)
    path.unlink()
    with pytest.warns(RuntimeWarning, match="table cache"):
        _spline_arrays(act, "v")
    assert _files(cache) == []
