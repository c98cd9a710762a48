"""Objectives of the production-sequence autoencoders (:mod:`balance.models.grammar_ae`), per
sequence, in the package's vocabulary of logged terms (``reconstruction``, ``latent``,
``decoder``):

- reconstruction: the cross-entropy of the true production at every step under the decoder's
  logits *masked by the grammar*: at a step whose true production expands nonterminal A, only
  A's productions compete (after the derivation ends, only padding). This is the Grammar VAE's
  training mask (Kusner et al. 2017, section 3); it is computed from the data alone through
  :func:`production_mask_table`, ``mask = x @ table``;
- ``vae``: + ``beta`` KL(q(z|x) || N(0, I)) (the Grammar VAE);
- ``rae``: + ``beta`` ||z||^2 / 2 + ``lam`` times a decoder regulariser (Ghosh et al.'s
  GrammarRAE): ``"l2"`` (squared weights of the decoder's dense and recurrent layers), ``"gp"``
  (the squared Frobenius norm of d logits / dz at the code, Hutchinson's estimator) or
  ``"none"`` (with the model's spectral normalisation, GrammarRAE-SN);
- ``ae``: reconstruction only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from balance.objectives.autoencoders import (
    DECODER_REGULARIZERS,
    decoder_weight_norm,
    embedding_penalty,
    gaussian_kl,
    gradient_penalty,
)

__all__ = ["GRAMMAR_KINDS", "GrammarObjective", "grammar_loss", "grammar_terms",
           "masked_cross_entropy", "masked_step_accuracy", "production_mask_table"]

GRAMMAR_KINDS = ("vae", "rae", "ae")


@dataclass(frozen=True)
class GrammarObjective:
    kind: str = "rae"
    beta: float = 1.0
    decoder: str = "none"
    lam: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in GRAMMAR_KINDS:
            raise ValueError(f"unknown grammar objective {self.kind!r}; choose one of "
                             f"{GRAMMAR_KINDS}")
        if self.decoder not in DECODER_REGULARIZERS:
            raise ValueError(f"decoder must be one of {DECODER_REGULARIZERS}, got "
                             f"{self.decoder!r}")


def production_mask_table(grammar) -> Tensor:
    """``[P + 1, P + 1]`` float: row i marks the productions with production i's left side
    (the padding row marks padding alone)."""
    size = grammar.size
    table = torch.zeros(size, size)
    for i, p in enumerate(grammar.productions):
        table[i, :-1] = torch.from_numpy(grammar.masks[p.lhs()][:-1]).float()
    table[grammar.pad, grammar.pad] = 1.0
    return table


def masked_cross_entropy(x: Tensor, logits: Tensor, table: Tensor) -> Tensor:
    """Per sequence [B]: sum over steps of -log softmax(logits masked to the true step's
    nonterminal)[true production]; ``x`` one-hot [B, steps, C]."""
    allowed = (x @ table.to(x)) > 0
    masked = logits.masked_fill(~allowed, float("-inf"))
    log_p = torch.log_softmax(masked, -1)
    return -(log_p.masked_fill(~allowed, 0.0) * x).sum((1, 2))


def grammar_terms(model: nn.Module, x: Tensor, objective: GrammarObjective,
                  table: Tensor) -> dict[str, Tensor]:
    """Per-sequence terms ``reconstruction``, ``latent``, ``decoder`` and ``loss`` ([B] each)."""
    out = model(x)
    rec = masked_cross_entropy(x, out.x_hat, table)
    zero = torch.zeros_like(rec)
    latent, dec = zero, zero
    if objective.kind == "vae":
        if out.logvar_z is None:
            raise ValueError("the VAE objective needs a Gaussian encoder head")
        latent = gaussian_kl(out.mu_z, out.logvar_z)
    elif objective.kind == "rae":
        latent = embedding_penalty(out.z)
        if objective.decoder == "l2":
            dec = zero + decoder_weight_norm(model.decoder)
        elif objective.decoder == "gp":
            z = out.z.detach().requires_grad_(True)
            dec = gradient_penalty(model.decode(z), z)
    total = rec + objective.beta * latent + objective.lam * dec
    return {"reconstruction": rec, "latent": latent, "decoder": dec, "loss": total}


def grammar_loss(objective: GrammarObjective, table: Tensor) -> Callable:
    """The trainer's ``loss_fn(model, batch) -> (loss, logs)``."""

    def loss_fn(model: nn.Module, batch) -> tuple[Tensor, dict[str, Tensor]]:
        x = batch[0] if isinstance(batch, tuple | list) else batch
        terms = grammar_terms(model, x, objective, table)
        logs = {k: v.detach().mean() for k, v in terms.items() if k != "loss"}
        return terms["loss"].mean(), logs

    return loss_fn


def masked_step_accuracy(x: Tensor, logits: Tensor, table: Tensor) -> float:
    """Fraction of the derivation steps (padding excluded) whose masked argmax is the true
    production: per-step reconstruction, which exact string matches hide."""
    with torch.no_grad():
        allowed = (x @ table.to(x)) > 0
        pred = logits.masked_fill(~allowed, float("-inf")).argmax(-1)
        real = x[..., :-1].sum(-1) > 0
        return float(((pred == x.argmax(-1)) & real).sum() / real.sum().clamp_min(1))
