"""The empirical NTK of a torch model (docs/torch.md, "Empirical NTK and parametrisations")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..errors import DomainError
from .apply import Variances, _get, _variances_of, fan_in
from .measure import realised_variances
from .trace import MARK, Structure, _structure

# ------------------------------------------------------------------------------------------
# Empirical NTK
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TorchNTK:
    """Empirical NTK of a torch model: ``ntk[a, b]`` = (1/k) sum_o sum_theta s_theta
    df_o(x_a)/dtheta df_o(x'_b)/dtheta over the k outputs (the output-diagonal mean; at infinite
    width the kernel is Theta (x) I_k).  ``parametrization="standard"``: s = 1, the kernel of the
    weights PyTorch trains; ``"ntk"``: s = the parameter's initialisation variance (sigma2/fan_in
    for
    weights, sigma_b2 for biases), the kernel of the N(0, 1) raw parameters of docs/theory.md §A4.1/4.3."""

    ntk: np.ndarray
    parametrization: str
    n_outputs: int
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {
            "ntk": self.ntk.tolist(),
            "parametrization": self.parametrization,
            "n_outputs": self.n_outputs,
            "notes": list(self.notes),
        }


def empirical_ntk(
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    parametrization: str = "standard",
    variances: Any = None,
    structure: Structure | None = None,
) -> TorchNTK:
    """NTK of ``model`` between the rows of x1 and x2 (default x1) by ``torch.func`` (vmap of
    jacrev).

    A torch ``nn.Linear`` is the standard parametrisation: W = sqrt(sigma_w2 / fan_in) * omega with
    omega ~ N(0, 1), so d f/d omega = sqrt(sigma_w2 / fan_in) d f/dW.  ``parametrization="ntk"``
    rescales each layer's term by its variance (from ``variances``, else what init_ recorded, else
    the weights), which turns this kernel into the one meanfield's kernels compute (docs/theory.md §A4.1,
    4.3); in the standard parametrisation the hidden-weight terms grow with width instead (4.2).
    Memory: the Jacobian holds n_inputs x n_outputs x n_parameters numbers.
    """
    from torch.func import functional_call, jacrev, vmap

    if parametrization not in ("standard", "ntk"):
        raise DomainError(f"parametrization must be 'standard' or 'ntk', got {parametrization!r}")
    params = {k: v.detach() for k, v in model.named_parameters()}
    if not params:
        raise DomainError(f"{type(model).__name__} has no parameters: its NTK is zero")
    ref = next(iter(params.values()))
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    for name, t in (("x1", x1), ("x2", x2)):
        if t is not None and (not isinstance(t, torch.Tensor) or t.ndim < 2):
            raise DomainError(
                f"{name} must be a torch tensor with the batch in its first dimension"
            )
    a = x1.detach().to(ref.device, ref.dtype)
    b = a if x2 is None else x2.detach().to(ref.device, ref.dtype)
    scale: dict[str, float] = {k: 1.0 for k in params}
    notes: list[str] = []
    if parametrization == "ntk":
        st = _structure(model, structure)
        if variances is None:
            rec = getattr(model, MARK, None)
            variances = rec.variances if rec is not None else None
        mods = dict(model.named_modules())
        if variances is not None:
            if not isinstance(variances, Variances):
                variances = _variances_of(
                    variances,
                    st,
                    _get(variances, "sigma_in2", 1.0),
                    _get(variances, "sigma_o2", 1.0),
                )
            for name, role in st.roles():
                vw, vb = variances.for_role(role)
                scale[f"{name}.weight"] = vw / fan_in(mods[name])
                if mods[name].bias is not None:
                    scale[f"{name}.bias"] = vb
        else:
            notes.append("variances read from the weights")
            for name, _role, w2, b2 in realised_variances(model, st):
                scale[f"{name}.weight"] = w2 / fan_in(mods[name])
                if mods[name].bias is not None:
                    scale[f"{name}.bias"] = b2
        rest = [
            k
            for k in params
            if k not in {f"{n}.{p}" for n, _ in st.roles() for p in ("weight", "bias")}
        ]
        if rest:
            notes.append(f"parameters outside the traced layers keep scale 1: {', '.join(rest)}")

    def f(p, x):
        return functional_call(model, (p, buffers), (x.unsqueeze(0),)).reshape(-1)

    jac = vmap(jacrev(f), in_dims=(None, 0))
    ja = jac(params, a)
    jb = ja if x2 is None else jac(params, b)
    k = None
    total = None
    for name in params:
        A = ja[name].reshape(ja[name].shape[0], ja[name].shape[1], -1).to(torch.float64)
        B = jb[name].reshape(jb[name].shape[0], jb[name].shape[1], -1).to(torch.float64)
        k = A.shape[1]
        term = torch.einsum("aoi,boi->ab", A, B) * scale[name]
        total = term if total is None else total + term
    ntk = (total / k).cpu().numpy()
    return TorchNTK(ntk, parametrization, int(k), tuple(notes))
