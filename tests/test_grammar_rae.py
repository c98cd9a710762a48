"""The GrammarRAE side of E7: the production-sequence autoencoders and their masked objective,
the expression score, Bayesian optimisation, and a smoke run of experiments/grammar_rae.py
through its figures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from balance.bayesopt import BOConfig, expected_improvement, minimise, random_search
from balance.grammar import WORST_SCORE, arithmetic_grammar, fit_score
from balance.models.grammar_ae import SequenceAEConfig
from balance.models.registry import build
from balance.objectives.grammar import (
    GrammarObjective,
    grammar_loss,
    grammar_terms,
    masked_cross_entropy,
    masked_step_accuracy,
    production_mask_table,
)
from balance.train import TrainConfig, train
from experiments import grammar_rae as gr


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _data(n: int = 64, steps: int = 15):
    g = arithmetic_grammar()
    strings = gr.corpus(n, 8, steps, 0)[0]
    return g, strings, gr.one_hot(strings, steps)


def test_masked_cross_entropy_only_lets_the_true_nonterminals_productions_compete():
    g, _, x = _data(8)
    table = production_mask_table(g)
    logits = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    ce = masked_cross_entropy(x, logits, table)
    # By hand for one sequence: at each step, a softmax over the allowed productions only.
    by_hand = 0.0
    for t in range(x.shape[1]):
        true = int(x[0, t].argmax())
        allowed = table[true] > 0
        by_hand -= float(torch.log_softmax(logits[0, t][allowed], 0)[
            allowed.nonzero().flatten().tolist().index(true)])
    assert float(ce[0]) == pytest.approx(by_hand, rel=1e-5)  # float32 sums
    # Logits outside the mask do not matter.
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)) * 100
    outside = (x @ table) == 0
    assert torch.allclose(masked_cross_entropy(x, logits + noise * outside, table), ce)
    assert bool((ce > 0).all())


@pytest.mark.parametrize("kind, decoder, sn", [("vae", "none", False), ("rae", "l2", False),
                                               ("rae", "gp", False), ("rae", "none", True),
                                               ("ae", "none", False)])
def test_every_grammar_model_trains_and_its_regulariser_has_a_gradient(kind, decoder, sn):
    g, _, x = _data(64)
    cfg = SequenceAEConfig(steps=15, classes=g.size, latent_dim=4, dense=16, gru_hidden=16,
                           gru_layers=1, gaussian=kind == "vae", spectral_norm=sn)
    model = build(cfg, x.shape[1:], seed=0)
    objective = GrammarObjective(kind, beta=1e-2 if kind == "rae" else 1.0, decoder=decoder,
                                 lam=1.0)
    terms = grammar_terms(model, x, objective, production_mask_table(g))
    if decoder != "none":  # the decoder regulariser reaches the decoder's weights
        model.zero_grad()
        terms["decoder"].mean().backward()
        grads = [p.grad for p in model.decoder.parameters() if p.grad is not None]
        assert grads and sum(float(gr_.abs().sum()) for gr_ in grads) > 0
    history = train(model, grammar_loss(objective, production_mask_table(g)), x,
                    TrainConfig(epochs=2, batch_size=32, progress=False, device="cpu"))
    assert len(history) == 2 and all(math.isfinite(h["loss"]) for h in history)
    mu, logvar = model.encode(x)
    assert mu.shape == (64, 4) and (logvar is not None) == (kind == "vae")


def test_a_trained_grammar_rae_reconstructs_and_its_samples_are_valid_derivations():
    g, strings, x = _data(256)
    cfg = SequenceAEConfig(steps=15, classes=g.size, latent_dim=16, conv_channels=(32, 32, 32),
                           dense=128, gru_hidden=128, gru_layers=1)
    model = build(cfg, x.shape[1:], seed=0).eval()
    table = production_mask_table(g)

    def step_accuracy():
        return masked_step_accuracy(x, model.decode(model.encode(x)[0]), table)

    untrained = step_accuracy()
    loss = grammar_loss(GrammarObjective("rae", beta=1e-3), table)
    train(model, loss, x, TrainConfig(epochs=80, batch_size=32, lr=5e-3, progress=False,
                                      device="cpu"))
    model.eval()
    # Per step, chance among a nonterminal's productions is about 0.2 (0.22 measured untrained)
    # and these settings reached 0.63 when measured: 0.45 leaves room for other platforms.
    assert untrained < 0.35 and step_accuracy() > 0.45
    decoded = gr.decode_strings(model, model.encode(x)[0])
    exact = np.mean([d == s for d, s in zip(decoded, strings, strict=True)])
    assert exact > 0  # some strings come back whole (3.9% measured; none untrained)
    samples = gr.decode_strings(model, torch.randn(64, 16, generator=torch.Generator()
                                                   .manual_seed(0)))
    for s in samples:  # budgeted masked decoding: every string parses back
        assert g.derive(g.parse(s)) == s


def test_the_fit_score():
    assert fit_score("1/3+x+sin(x*x)") == pytest.approx(0.0, abs=1e-12)  # float64 identity
    assert fit_score("x+sin(x*x)") == pytest.approx(math.log1p(1 / 9), rel=1e-9)
    assert fit_score("exp(exp(exp(x)))") == WORST_SCORE  # overflows: capped
    with pytest.raises(ValueError):
        fit_score("x-1")  # not a string of the grammar


def test_expected_improvement_matches_monte_carlo():
    rng = np.random.default_rng(0)
    mean, std, best = np.array([0.3, 1.0, -0.5]), np.array([0.5, 0.1, 2.0]), 0.2
    draws = rng.normal(mean, std, size=(400_000, 3))
    mc = np.maximum(best - draws, 0).mean(0)
    # Monte Carlo: standard error below 0.005 for these spreads at 400,000 draws
    assert expected_improvement(mean, std, best) == pytest.approx(mc, abs=0.01)


def test_bayesian_optimisation_beats_random_search_on_a_smooth_function():
    def score(p):
        return ((p - 0.7) ** 2).sum(1)

    def propose(n, rng):
        return rng.uniform(-3, 3, size=(n, 2))

    cfg = BOConfig(iterations=6, batch=5, candidates=2000, initial=20)
    gains = []
    for seed in range(3):
        rng = np.random.default_rng(100 + seed)
        x0 = rng.uniform(-3, 3, size=(cfg.initial, 2))
        bo = minimise(score, x0, score(x0), propose, cfg, seed=seed)
        rand = random_search(score, propose, cfg, seed=seed)
        assert bo["scores"].shape == rand["scores"].shape == (30,)
        gains.append(rand["scores"].min() - bo["scores"].min())
    assert min(gains) > 0  # a 2-d quadratic: the GP finds the bowl, 30 random draws do not


def test_grammar_rae_smoke_resume_and_figures(tmp_path):
    from paper_figures import grammar_rae as fig

    config = gr.preset("smoke")
    results = gr.main(config, tmp_path / "g", progress=False)
    assert set(results["models"]) == {r.name for r in config.rows}
    for m in results["models"].values():
        assert 0.0 <= m["reconstruction_accuracy"] <= 1.0
        for s in gr.SAMPLERS:
            assert 0.0 <= m["samplers"][s]["finished_without_budget"] <= 1.0
            assert 0.0 < m["samplers"][s]["unique"] <= 1.0
        assert len(m["bo"]) == len(config.bo_seeds)
        for r in m["bo"]:
            assert len(r["bo"]["best_so_far"]) == config.bo.iterations * config.bo.batch
    assert any(k.startswith("bo_beats_random") for k in results["checks"])
    again = gr.main(config, tmp_path / "g", progress=False)
    assert again["models"] == results["models"]  # resumed, nothing retrained
    names = {p.name for p in fig.make(tmp_path / "g", tmp_path / "fig")}
    assert {"grammar_rae_bo.png", "grammar_rae_expressions.png", "grammar_rae_table.md"} <= names
    with pytest.raises(ValueError, match="unknown preset"):
        gr.preset("nope")
    with pytest.raises(ValueError, match="distinct expressions"):
        gr.corpus(1000, 10, 5, 0)
