"""Shared parametrisation: every registry activation, with parameter examples where it takes one."""

from meanfield.activations import _REGISTRY

# name -> the specs that stand for it in registry-wide tests (parameters chosen to cover each
# family's regimes: leaky slopes of both signs, alpha-ReLU below 1/2, between 1/2 and 1, above 1)
EXAMPLES = {
    "leaky_relu": ["leaky_relu", "leaky_relu:0.1", "leaky_relu:-0.3"],
    "alpha_relu": ["alpha_relu:0", "alpha_relu:0.25", "alpha_relu:0.75", "alpha_relu:1.5",
                   "alpha_relu:2"],
    "elu": ["elu", "elu:0.5"],
}
SPECS = [spec for name in sorted(_REGISTRY) for spec in EXAMPLES.get(name, [name])]


def pytest_generate_tests(metafunc):
    """A test that takes the argument ``registry_spec`` runs once per entry of SPECS."""
    if "registry_spec" in metafunc.fixturenames:
        metafunc.parametrize("registry_spec", SPECS)
