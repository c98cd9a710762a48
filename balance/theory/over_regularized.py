"""Theorem 2 (THEORY.md section 2): the over-regularized stationary point of a deep Gaussian VAE.

Latent dimension j is *switched off* when column j of the decoder's first layer (and of the
affine skip ``W_x``, when there is one), row j of both encoder output layers and the matching
biases are zero: then ``mu_j = 0``, ``sigma_j^2 = 1`` and the decoder ignores ``z_j ~ N(0, 1)``.
With every dimension off, the decoder constant at the data mean and gamma = tr(S) / d, the
gradient of the expected energy vanishes in every parameter (the *all-off point*). With the
affine skip, the point is a strict saddle: the skip column along the top data eigenvector and
the encoder row curve the energy downwards together. Through a deep decoder's first layer the
same coupling passes through the decoder's Jacobian and is much weaker.

The functions take a :class:`balance.models.vae.GaussianVAE` with an
:class:`balance.models.mlp.MLPEncoder` (``mu_head``, ``logvar_head``) and an
:class:`balance.models.mlp.MLPDecoder` (``first_layer``, optional ``skip``, ``output``).
Checked by ``proofs_checks/test_theorem2.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor
from torch.func import functional_call

from balance.metrics.active_units import active_units
from balance.objectives.elbo import elbo_terms

__all__ = ["escape", "expected_energy", "move_to_all_off_point", "off_blocks", "switch_off"]


def off_blocks(model, dims) -> dict[str, tuple[Tensor, tuple]]:
    """The parameter blocks that switch dimensions ``dims`` (an int or a list) off:
    ``name -> (parameter, index)``."""
    enc, dec = model.encoder, model.decoder
    blocks = {
        "decoder first-layer column": (dec.first_layer.weight, (slice(None), dims)),
        "mu_z row": (enc.mu_head.weight, (dims,)),
        "mu_z bias": (enc.mu_head.bias, (dims,)),
        "logvar_z row": (enc.logvar_head.weight, (dims,)),
        "logvar_z bias": (enc.logvar_head.bias, (dims,)),
    }
    if dec.skip is not None:
        blocks["skip column"] = (dec.skip.weight, (slice(None), dims))
    return blocks


@torch.no_grad()
def switch_off(model, dims: Iterable[int], *, perturbation: float = 0.0,
               generator: torch.Generator | None = None) -> None:
    """Zero the blocks of ``dims``, plus ``perturbation * N(0, 1)`` (drawn block by block from
    ``generator``, in the order of :func:`off_blocks`)."""
    for param, index in off_blocks(model, list(dims)).values():
        shape = param[index].shape
        param[index] = perturbation * torch.randn(shape, generator=generator, dtype=param.dtype)


@torch.no_grad()
def move_to_all_off_point(model, x: Tensor) -> None:
    """Switch every dimension off, shift the decoder's output bias so that it outputs the data
    mean of ``x [n, d]``, and set gamma to its optimum tr(S) / d: the all-off point, where the
    gradient of the expected energy vanishes."""
    kappa = model.encoder.mu_head.out_features
    switch_off(model, range(kappa))
    constant = model.decode(torch.zeros(1, kappa, dtype=x.dtype))[0]
    model.decoder.output.bias += x.mean(0) - constant
    model.set_gamma(float((x - x.mean(0)).square().sum(1).mean()) / x.shape[1])


def expected_energy(model, x: Tensor, params: Mapping[str, Tensor]) -> Tensor:
    """``E_q[-ELBO]`` averaged over ``x``, by the two-point rule ``z = mu + sigma * (+-1)``,
    with the model's parameters replaced by ``params`` (``torch.func.functional_call``).

    Exact for anything that depends on the noise through its first two moments only: at the
    all-off point, and along directions where the decoder sees ``z_j`` through a linear map,
    the energy is a polynomial of degree 2 in the noise.
    """
    kappa = model.encoder.mu_head.out_features
    ones = torch.ones(x.shape[0], kappa, dtype=x.dtype)
    xx = torch.cat([x, x])
    out = functional_call(model, dict(params), (xx, torch.cat([ones, -ones])))
    return elbo_terms(xx, out).loss()


def escape(model, x: Tensor, steps: int, *, check_every: int = 50, lr: float = 2e-3,
           generator: torch.Generator | None = None) -> tuple[int | None, int]:
    """Full-batch Adam on the negative ELBO from the model's current point; returns (the first
    checked step with an active unit, or None; the active count at the end). Active units:
    Burda's ``Var_x(mu_z) >= 0.01``, checked every ``check_every`` steps."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    first, count = None, 0
    for step in range(steps + 1):
        if step % check_every == 0:
            with torch.no_grad():
                count = active_units(model.encode(x)[0])[0]
            if count > 0 and first is None:
                first = step
        if step == steps:
            break
        loss = elbo_terms(x, model(x, generator=generator)).loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return first, count
