"""Kernels beyond one machine's memory: a network's NNGP and NTK written to a zarr store tile by
tile, on dask (docs/scaleout.md).

Every tile is folded by the network algebra's own tile code (``Network.fold`` on the states that
``Network.kernel``'s tiled path builds, docs/architecture.md "Tiles"): the diagonal blocks as
squares, recording every layer's per-input variances and means on a ``Tape``; the tiles above
the diagonal as rectangles reading the whole tape back.  So each entry is the in-memory value.

dask, distributed and zarr are the optional extra ``meanfield[dask]``; they are imported here,
inside the functions, never by the core package.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import DomainError

#: the folder inside the store holding the tapes and the completion markers
_META = "meanfield"
_CACHE: dict = {}
_CACHE_LOCK = threading.Lock()


def _need(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise DomainError(f"{module} is not installed: the scale-out needs the extra "
                          "meanfield[dask] (pip install 'meanfield[dask]')") from None


@dataclass
class StoredKernel:
    """What :func:`kernel_store` wrote: the store, its tiles, how many were computed now."""
    store: str
    n: int
    chunk: int
    tiles: int
    computed: int
    already_done: int
    seconds: float
    parametrization: str
    spec_sha256: str
    inputs_sha256: str
    version: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def inputs_hash(X: np.ndarray) -> str:
    """SHA-256 of the inputs' shape, dtype and bytes (C order)."""
    X = np.ascontiguousarray(X)
    return _sha(f"{X.shape}|{X.dtype.str}|".encode() + X.tobytes())


def _spans(n: int, chunk: int) -> list[slice]:
    return [slice(a, min(n, a + chunk)) for a in range(0, n, chunk)]


def _marker(store: Path, i: int, j: int) -> Path:
    return store / _META / "done" / f"{i}_{j}"


def _write_atomic(path: Path, write: Callable[[str], None]) -> None:
    from ._io import atomic_write

    atomic_write(path, write, path.suffix)


def _save_tape(path: Path, tape) -> None:
    arrays = {}
    for k, (q, mu) in enumerate(tape.entries):
        arrays[f"q{k}"] = q
        if mu is not None:
            arrays[f"mu{k}"] = mu

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, n=np.array(len(tape.entries)), **arrays)

    _write_atomic(path, write)


def _load_tape(path: Path):
    from .network.core import Tape

    t = Tape()
    with np.load(path, allow_pickle=False) as z:
        for k in range(int(z["n"])):
            t.record(z[f"q{k}"], z[f"mu{k}"] if f"mu{k}" in z.files else None)
    return t


def _context(store: str, store_id: str):
    """The network, inputs and settings of a store, read once per process (threads share them).

    Keyed by the store's id too: a dask worker process outlives a run, and a store deleted and
    made again under the same name must not be read from its cache."""
    with _CACHE_LOCK:
        if (store, store_id) in _CACHE:
            return _CACHE[store, store_id]
        import zarr

        from .network import from_spec

        g = zarr.open_group(store, mode="r")
        a = dict(g.attrs)
        ctx = {"net": from_spec(json.loads(a["spec"])), "x": g["x"], "attrs": a,
               "nngp": zarr.open_array(f"{store}/nngp", mode="r+"),
               "ntk": zarr.open_array(f"{store}/ntk", mode="r+") if a["ntk"] else None,
               "tape": None}
        _CACHE[store, store_id] = ctx
        return ctx


def _full_tape(store: str, ctx: dict):
    from .network.core import Tape

    with _CACHE_LOCK:
        if ctx["tape"] is None:
            n = len(_spans(ctx["attrs"]["n"], ctx["attrs"]["chunk"]))
            ctx["tape"] = Tape.stack([_load_tape(Path(store) / _META / "tapes" / f"{i}.npz")
                                      for i in range(n)])
        return ctx["tape"]


def _fold_tile(store: str, store_id: str, i: int, j: int) -> int:
    """Fold tile (i, j) (i <= j), write it (and its mirror) into the store, then mark it done."""
    from .network.core import Tape, _to_nt_layout, initial_state

    ctx = _context(store, store_id)
    a = ctx["attrs"]
    spans = _spans(a["n"], a["chunk"])
    ri, cj = spans[i], spans[j]
    net, N = ctx["net"], a["n"]
    with np.errstate(over="ignore", invalid="ignore"):
        if i == j:
            st = initial_state(np.asarray(ctx["x"][ri]), a["parametrization"], a["ntk"], a["method"])
            st.tape, st.total_inputs = Tape(), N
        else:
            st = initial_state(np.asarray(ctx["x"][ri]), a["parametrization"], a["ntk"], a["method"],
                               np.asarray(ctx["x"][cj]))
            st.tape, st.total_inputs = _full_tape(store, ctx).replay(ri, cj), N
        st = net.fold(st)[0]
    K = _to_nt_layout(st.K, st.spatial)
    T = None if st.T is None else _to_nt_layout(st.T, st.spatial)
    for nm, arr in (("NNGP", K), ("NTK", T)):
        if arr is not None and not np.all(np.isfinite(arr)):
            raise DomainError(f"the {nm} overflows float64 in tile ({i}, {j}): the variances grow "
                              "without bound through this network; use smaller variances or fewer layers")
    perm = [1, 0] + [ax for d in range(len(st.spatial)) for ax in (3 + 2 * d, 2 + 2 * d)]
    for name, arr in (("nngp", K), ("ntk", T)):
        if arr is None:
            continue
        ctx[name][ri, cj] = arr
        if i != j:  # the mirror tile: swap inputs and position pairs
            ctx[name][cj, ri] = arr.transpose(perm)
    if i == j:
        _save_tape(Path(store) / _META / "tapes" / f"{i}.npz", st.tape)

    def touch(tmp: str) -> None:
        Path(tmp).write_text("done\n")

    _write_atomic(_marker(Path(store), i, j), touch)   # last: a half-written tile is never done
    return 1


def _open_store(net, X: np.ndarray, store: Path, chunk: int, param: str, ntk: bool,
                method: str) -> dict:
    """Create the store, or check that an existing one was made from the same spec, inputs,
    package version and settings (else refuse to resume: one line)."""
    import zarr

    from . import __version__

    spec = json.dumps(net.to_spec(), sort_keys=True)
    want = {"spec_sha256": _sha(spec.encode()), "inputs_sha256": inputs_hash(X),
            "version": __version__, "n": int(X.shape[0]), "chunk": int(chunk),
            "parametrization": param, "ntk": bool(ntk), "method": method}
    if store.exists():
        try:
            have = dict(zarr.open_group(str(store), mode="r").attrs)
        except Exception:  # noqa: BLE001 - any unreadable store is refused the same way
            have = {}
        if "spec_sha256" not in have:
            raise DomainError(f"{str(store)!r} exists and is not a meanfield kernel store; "
                              "delete it or choose another --out")
        bad = [k for k in want if have.get(k) != want[k]]
        if bad:
            k = bad[0]
            if k.endswith("_sha256"):   # hashes shortened: the line names what differs
                what, old, new = k[:-7], f"sha256 {str(have.get(k))[:12]}...", f"{want[k][:12]}..."
            else:
                what, old, new = k, repr(have.get(k)), repr(want[k])
            raise DomainError(f"{str(store)!r} was made with a different {what} ({old}, now {new}): "
                              "refusing to resume; delete it or choose another --out")
        return {**want, "store_id": have.get("store_id", "")}
    parent = store.parent if str(store.parent) else Path(".")
    if not parent.is_dir():
        raise DomainError(f"output folder does not exist: {str(parent)!r} (for {str(store)!r})")
    out = net.check(X)
    extra = tuple(s for s in out.spatial for _ in (0, 1))
    n = X.shape[0]
    # built under a temporary name and renamed: a store either has its attributes or is absent
    tmp = store.with_name(f".{store.name}.{os.getpid()}.tmp")
    g = zarr.open_group(str(tmp), mode="w")
    xa = g.create_array("x", shape=X.shape, chunks=(min(chunk, n),) + X.shape[1:], dtype="f8")
    xa[...] = X
    for name in ("nngp",) + (("ntk",) if ntk else ()):
        # uncompressed: kernel entries are dense float64 that compress by a few percent, and
        # every conjugate-gradient product would pay the decompression again
        g.create_array(name, shape=(n, n) + extra, chunks=(min(chunk, n),) * 2 + extra, dtype="f8",
                       fill_value=np.nan, compressors=None)
    sid = uuid.uuid4().hex
    g.attrs.update({**want, "spec": spec, "store_id": sid})
    (tmp / _META / "done").mkdir(parents=True)
    (tmp / _META / "tapes").mkdir()
    os.replace(tmp, store)
    return {**want, "store_id": sid}


#: how long to wait for a dask scheduler before refusing it
CONNECT_TIMEOUT = "10s"


def _connect(address: str):
    _need("distributed")
    from distributed import Client

    try:
        return Client(address, timeout=CONNECT_TIMEOUT)
    except OSError as exc:
        raise DomainError(f"cannot reach the dask scheduler at {address!r}: {exc}") from None


def kernel_store(net, X: Any, store: "str | os.PathLike[str]", *, chunk: int = 4096,
                 scheduler: str | None = None, parametrization: str | None = None,
                 ntk: bool = True, method: str = "auto", workers: int | None = None,
                 progress: Callable[[int, int], None] | None = None) -> StoredKernel:
    """The NNGP and NTK Gram matrices of ``net`` on X (docs/theory.md §A4.1-4.4, docs/architecture.md
    "Tiles") written to the zarr store ``store`` (arrays ``nngp``, ``ntk``, ``x``) in
    ``chunk`` x ``chunk`` tiles, upper triangle computed, both triangles stored.

    Tiles run on dask: its local threaded scheduler by default, or the dask.distributed
    cluster at ``scheduler`` (or ``$DASK_SCHEDULER_ADDRESS``); the store must then be on a
    filesystem the workers share.  Resumable: run again with the same arguments and only the
    tiles without a completion marker are computed; a store made from another spec, other
    inputs, another package version or other settings is refused.  Peak memory: a few tiles
    per worker, whatever N.
    """
    from .network.core import PARAMETRIZATIONS, _check_array, tileable
    from .network.layers import METHODS

    _need("zarr"), _need("dask")
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise DomainError(f"chunk must be a positive integer (inputs per tile), got {chunk!r}")
    param = net.parametrization if parametrization is None else parametrization
    if param not in PARAMETRIZATIONS:
        raise DomainError(f"parametrization must be one of {', '.join(PARAMETRIZATIONS)}, got {param!r}")
    if method not in METHODS:
        raise DomainError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    X = np.ascontiguousarray(_check_array("X", X), dtype=np.float64)
    net.check(X)
    if not tileable(net):
        raise DomainError("this network has a layer that needs the whole batch (batch_norm, "
                          "attention): it cannot be computed in tiles")
    if ntk and net.needs_derivative():
        raise DomainError(f"activation {net.needs_derivative()[0]!r} has no derivative, so the NTK "
                          "is undefined; ask for the NNGP only (ntk=False)")
    store = Path(store)
    t0 = time.perf_counter()
    address = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    client = _connect(address) if address else None   # before the store: an unreachable one leaves nothing
    try:
        attrs = _open_store(net, X, store, int(chunk), param, ntk, method)
    except BaseException:
        if client is not None:
            client.close()
        raise
    spans = _spans(attrs["n"], attrs["chunk"])
    nb = len(spans)
    diag = [(i, i) for i in range(nb)]
    upper = [(i, j) for i in range(nb) for j in range(i + 1, nb)]
    todo_d = [t for t in diag if not _marker(store, *t).exists()]
    todo_u = [t for t in upper if not _marker(store, *t).exists()]
    total = len(diag) + len(upper)
    done = total - len(todo_d) - len(todo_u)
    already = done
    key, sid = str(store.resolve()), attrs["store_id"]
    counter = [done]

    def tick(k: int = 1) -> None:
        counter[0] += k
        if progress is not None:
            progress(counter[0], total)

    if client is not None:
        from distributed import as_completed

        try:
            # the diagonal tiles write the tapes the others read: two waves
            for wave in (todo_d, todo_u):
                futs = [client.submit(_fold_tile, key, sid, i, j, pure=False, retries=3) for i, j in wave]
                for f in as_completed(futs):
                    # the tile is on disk once its task has finished: its value (1) is never
                    # gathered, so a worker lost afterwards costs nothing; release it at once
                    if f.status == "error":
                        f.result()
                    f.release()
                    tick()
        finally:
            client.close()
    else:
        import dask

        from .network.core import _workers

        nw = workers or _workers(len(todo_d) + len(todo_u))
        for wave in (todo_d, todo_u):
            tasks = [dask.delayed(_fold_tile)(key, sid, i, j, dask_key_name=f"tile-{i}-{j}") for i, j in wave]
            if not tasks:
                continue
            from dask.callbacks import Callback

            with Callback(posttask=lambda k, r, d, s, i: tick() if str(k).startswith("tile-") else None):
                dask.compute(*tasks, scheduler="threads", num_workers=nw)
    with _CACHE_LOCK:
        _CACHE.pop((key, sid), None)
    return StoredKernel(store=str(store), n=attrs["n"], chunk=attrs["chunk"], tiles=total,
                        computed=total - already, already_done=already,
                        seconds=time.perf_counter() - t0, parametrization=param,
                        spec_sha256=attrs["spec_sha256"], inputs_sha256=attrs["inputs_sha256"],
                        version=attrs["version"])


def open_kernel(store: "str | os.PathLike[str]", name: str = "nngp"):
    """The zarr array ``name`` ("nngp" or "ntk") of a complete kernel store (refused while
    tiles are missing)."""
    zarr = _need("zarr")
    store = Path(store)
    try:
        g = zarr.open_group(str(store), mode="r")
        a = dict(g.attrs)
        arr = g[name]
    except Exception as exc:  # noqa: BLE001 - one line for any unreadable store
        raise DomainError(f"{str(store)!r} is not a readable meanfield kernel store ({name}): {exc}") from None
    nb = len(_spans(a["n"], a["chunk"]))
    missing = sum(not _marker(store, i, j).exists() for i in range(nb) for j in range(i, nb))
    if missing:
        raise DomainError(f"{str(store)!r} is incomplete: {missing} tiles missing; run kernel_store again")
    return arr


# ------------------------------------------------------------------------------------------
# sweeps: independent advice / phase-diagram jobs fanned out on the same schedulers
# ------------------------------------------------------------------------------------------

#: what a sweep can compute per job
SWEEPS = ("advise", "phase-diagram")


@dataclass
class Sweep:
    """What :func:`sweep` gathered: one entry per job, in job order, with its parameters and
    either ``result`` (the job's summary: ``Advice.to_dict()``, ``PhaseDiagram.summary()``) or
    ``error`` (its one-line message: a job outside the theory's domain does not stop the
    others).  ``arrays``: each phase diagram's grids, keyed ``"<activation>/<name>"``."""
    what: str
    jobs: list
    failed: int
    seconds: float
    scheduler: str
    arrays: dict

    def to_dict(self) -> dict[str, Any]:
        return {"what": self.what, "jobs": self.jobs, "failed": self.failed, "seconds": self.seconds,
                "scheduler": self.scheduler}


def _sweep_job(what: str, params: dict) -> dict:
    """One job of a sweep, run on a worker; a meanfield error is the job's result, not the sweep's."""
    import warnings

    from .errors import MeanfieldError

    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            if what == "advise":
                from .advise import advise

                kw = dict(params)
                return {"result": advise(kw.pop("arch"), kw.pop("activation"), kw.pop("depth"), **kw).to_dict()}
            from .fixed_points import phase_diagram

            kw = dict(params)
            pd = phase_diagram(kw.pop("activation"), **kw)
            return {"result": pd.summary(), "arrays": pd.arrays()}
    except MeanfieldError as exc:
        return {"error": " ".join(str(exc).split()) or type(exc).__name__}


def sweep(what: str, activations: "list[str]", depths: "list[int] | None" = None, *,
          scheduler: str | None = None, workers: int | None = None, processes: bool = True,
          progress: Callable[[int, int], None] | None = None, **options: Any) -> Sweep:
    """Advice (``what="advise"``: every activation x depth, ``options`` passed to
    :func:`meanfield.advise.advise`, e.g. ``arch``, ``sigma_b2``, ``budget``) or phase diagrams
    (``what="phase-diagram"``: every activation, ``options`` passed to
    :func:`meanfield.fixed_points.phase_diagram`, e.g. ``grid``, ``with_xi_c``), docs/theory.md §A1.3-1.6
    and 2.x, as independent jobs on dask: local worker processes by default (``processes=False``:
    threads; one worker: this process), or the dask.distributed cluster at ``scheduler`` (or
    ``$DASK_SCHEDULER_ADDRESS``).
    ``progress(done, total)`` is called as jobs finish."""
    _need("dask")
    if what not in SWEEPS:
        raise DomainError(f"what must be one of {', '.join(SWEEPS)}, got {what!r}")
    acts = list(activations) if not isinstance(activations, str) else [activations]
    if not acts or not all(isinstance(a, str) and a for a in acts):
        raise DomainError(f"activations must be a non-empty list of activation specs, got {activations!r}")
    from .activations import get_activation

    for a in acts:
        get_activation(a)   # an unknown name is the caller's mistake, refused before any job runs
    if what == "advise":
        ds = [] if depths is None else list(depths)
        if not ds or any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1 for d in ds):
            raise DomainError(f"depths must be a non-empty list of positive integers for an advice sweep, got {depths!r}")
        options.setdefault("arch", "mlp")
        jobs = [{**options, "activation": a, "depth": int(d)} for a in acts for d in ds]
    else:
        if depths is not None:
            raise DomainError("depths do not apply to a phase-diagram sweep (a phase diagram is depth-free)")
        jobs = [{**options, "activation": a} for a in acts]
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, (int, np.integer))
                                or workers < 1):
        raise DomainError(f"workers must be a positive integer, got {workers!r}")
    address = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    t0 = time.perf_counter()
    done = [0]

    def tick() -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], len(jobs))

    if address:
        from distributed import as_completed

        client = _connect(address)
        try:
            futs = [client.submit(_sweep_job, what, p, pure=False, retries=2) for p in jobs]
            index = {f.key: k for k, f in enumerate(futs)}
            outs: list = [None] * len(jobs)
            for f in as_completed(futs):
                outs[index[f.key]] = f.result()
                tick()
        finally:
            client.close()
        where = address
    else:
        import dask
        from dask.callbacks import Callback

        nw = workers or max(1, min(len(jobs), os.cpu_count() or 1))
        processes = processes and nw > 1   # one worker: no pool to start, the jobs run here
        tasks = [dask.delayed(_sweep_job)(what, p, dask_key_name=f"job-{k}") for k, p in enumerate(jobs)]
        with Callback(posttask=lambda k, r, d, s, i: tick() if str(k).startswith("job-") else None):
            outs = list(dask.compute(*tasks, scheduler="processes" if processes else "threads",
                                     num_workers=nw))
        where = f"local {'processes' if processes else 'threads'} ({nw})"
    rows, arrays = [], {}
    for p, o in zip(jobs, outs):
        rows.append({**p, **{k: v for k, v in o.items() if k != "arrays"}})
        for name, arr in (o.get("arrays") or {}).items():
            arrays[f"{p['activation']}/{name}"] = arr
    return Sweep(what, rows, sum("error" in r for r in rows), time.perf_counter() - t0, where, arrays)
