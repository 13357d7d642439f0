"""Shared parametrisation: every registry activation, with parameter examples where it takes one."""

import os

import pytest

from meanfield.activations import _REGISTRY

#: bytes of address space a test under ``address_space`` may add to what the process maps
ADDRESS_SPACE = 3 * 10 ** 9

# name -> the specs that stand for it in registry-wide tests (parameters chosen to cover each
# family's regimes: leaky slopes of both signs, alpha-ReLU below 1/2, between 1/2 and 1, above 1)
EXAMPLES = {
    "leaky_relu": ["leaky_relu", "leaky_relu:0.1", "leaky_relu:-0.3"],
    "alpha_relu": ["alpha_relu:0", "alpha_relu:0.25", "alpha_relu:0.75", "alpha_relu:1.5",
                   "alpha_relu:2"],
    "elu": ["elu", "elu:0.5"],
}
SPECS = [spec for name in sorted(_REGISTRY) for spec in EXAMPLES.get(name, [name])]


def pytest_configure(config):
    """The tables' disk cache (meanfield.gaussian.cached_arrays) goes to a temporary folder for
    the session: tests never write to the user's home, and every session starts cold."""
    import tempfile

    from meanfield.gaussian import CACHE_ENV

    config._meanfield_cache = tempfile.TemporaryDirectory(prefix="meanfield-cache-")
    os.environ[CACHE_ENV] = config._meanfield_cache.name


def pytest_unconfigure(config):
    tmp = getattr(config, "_meanfield_cache", None)
    if tmp is not None:
        tmp.cleanup()


def pytest_generate_tests(metafunc):
    """A test that takes the argument ``registry_spec`` runs once per entry of SPECS."""
    if "registry_spec" in metafunc.fixturenames:
        metafunc.parametrize("registry_spec", SPECS)


@pytest.fixture(scope="module")
def torch_one_thread():
    """One torch intra-op thread for a module's tests: on small shared CI machines two threads
    wait on each other and are slower than one."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def address_space():
    """Caps the process's address space at its current size + ADDRESS_SPACE for one test: an
    allocation that escapes meanfield's memory guards raises MemoryError (a failure) instead of
    taking the machine's memory.  No cap where the hard limit is already lower."""
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as fh:
        used = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    if hard != resource.RLIM_INFINITY and hard < used + ADDRESS_SPACE:
        yield None
        return
    resource.setrlimit(resource.RLIMIT_AS, (used + ADDRESS_SPACE, hard))
    try:
        yield used + ADDRESS_SPACE
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
