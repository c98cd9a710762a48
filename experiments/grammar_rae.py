"""E7: the GrammarRAE on symbolic expressions (Ghosh et al. 2020, structured inputs; the Grammar
VAE of Kusner et al. 2017, section 4.1 and 4.3; EXPERIMENTS.md E7).

Expressions of the univariate arithmetic grammar (:data:`balance.grammar.ARITHMETIC`) are
encoded as the one-hot productions of their leftmost derivations; a 1-d conv encoder and a GRU
decoder (:mod:`balance.models.grammar_ae`) are trained with the grammar-masked cross-entropy
(:mod:`balance.objectives.grammar`) as

- the Grammar VAE (Gaussian encoder, KL to N(0, I); beta = 1 and 0.1);
- GrammarRAEs: deterministic codes, ||z||^2 / 2, and the decoder regularised by L2, a gradient
  penalty or spectral normalisation;
- a plain autoencoder (no regularisation) as the floor.

Each is sampled from N(0, I) and from a 10-component GMM fitted ex post on its training codes.

Question: does the RAE recipe (deterministic codes + explicit decoder regularisation + ex-post
density) match the Grammar VAE on structured inputs? Scores:

- reconstruction accuracy: held-out expressions decoded (masked argmax) back exactly, and the
  fraction of their derivation steps decoded right (step accuracy);
- per sampler: the fraction of decoded samples that finish a derivation within the step
  limit *without* the step budget (masked decoding with the budget always does: that fraction
  is 1 by construction and is not a result), and the fraction of distinct strings;
- Bayesian optimisation in the latent space (:mod:`balance.bayesopt`) for an expression close
  to 1/3 + x + sin(x * x) on 1,000 points of [-10, 10], score log(1 + MSE): the best score and
  the mean of the top 50 found, over seeds, against random search with as many evaluations
  drawn from the same ex-post GMM.

Checks (:func:`checks`): each GrammarRAE's reconstruction accuracy against the VAE's
(binomial standard error as the yardstick), and for each model whether the optimisation beats
random search by more than the seed spread.

Usage::

    python experiments/grammar_rae.py                  # quick: 5,000 expressions, CPU
    python experiments/grammar_rae.py --preset paper   # 100,000 expressions, the paper's sizes
    python -m paper_figures.grammar_rae runs/grammar_rae/quick --out out/

Another grammar (e.g. SMILES, with ZINC): :class:`balance.grammar.Grammar` takes any CFG in
NLTK's notation, ``Grammar.parse`` / ``one_hot`` turn a corpus into training data, and the
model, objective, densities and :func:`balance.bayesopt.minimise` take it unchanged; the score
(e.g. penalised logP) is the user's function of a decoded string (the README's recipe).

Run folder (default ``runs/grammar_rae/<preset>``): one sub-folder per model (training run,
results.json), results.json and table.md. Cells run through the engine; re-running resumes.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # python experiments/grammar_rae.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from balance import reporting
from balance.bayesopt import BOConfig
from balance.engine import EngineConfig, run_cells
from balance.experiment import run_script
from balance.models.grammar_ae import SequenceAEConfig
from balance.reporting import markdown_table
from balance.runs import RESULTS_FILE, Stage, prepare_run, results_header, run_identity, write_json
from balance.threads import limit_threads
from balance.train import TrainConfig

NAME = "grammar_rae"
PRESETS = ("quick", "paper", "smoke")
SAMPLERS = ("normal", "gmm")
SAMPLER_LABELS = {"normal": "N(0, I)", "gmm": "GMM (ex post)"}


@dataclass(frozen=True)
class GrammarRow:
    """One model: encoder head (``gaussian``), spectral norm, objective kind and weights."""

    name: str
    kind: str
    beta: float = 1.0
    decoder: str = "none"
    lam: float = 0.0
    spectral_norm: bool = False
    label: str = ""


#: The Grammar VAE (the ELBO, and beta = 0.1: the usual remedy when the KL term switches the
#: code off), three GrammarRAEs (Ghosh et al.'s L2 / GP / SN variants) and a plain AE.
ROWS = (
    GrammarRow("gvae", "vae", beta=1.0, label="Grammar VAE"),
    GrammarRow("gvae_b01", "vae", beta=0.1, label="Grammar VAE (beta 0.1)"),
    GrammarRow("grae_l2", "rae", beta=1e-2, decoder="l2", lam=1e-4, label="GrammarRAE-L2"),
    GrammarRow("grae_gp", "rae", beta=1e-2, decoder="gp", lam=1e-3, label="GrammarRAE-GP"),
    GrammarRow("grae_sn", "rae", beta=1e-2, spectral_norm=True, label="GrammarRAE-SN"),
    GrammarRow("gae", "ae", beta=0.0, label="AE (no regularisation)"),
)


@dataclass(frozen=True)
class Config:
    """Corpus (``n_train`` + ``n_test`` expressions of at most ``steps`` productions, from
    ``corpus_seed``), the network (``net``: its steps and classes are set from the grammar),
    the rows, training, samples per sampler, the GMM, the optimisation and its ``bo_seeds``."""

    preset: str = "quick"
    n_train: int = 10_000
    n_test: int = 1_000
    steps: int = 15
    corpus_seed: int = 0
    net: SequenceAEConfig = SequenceAEConfig(steps=15, classes=12)
    rows: tuple[GrammarRow, ...] = ROWS
    train: TrainConfig = TrainConfig()
    n_samples: int = 1000
    gmm_components: int = 10
    bo: BOConfig = BOConfig()
    bo_seeds: tuple[int, ...] = (0, 1, 2)
    device: str = "cpu"
    threads: int | None = 1
    engine: EngineConfig = EngineConfig()


def preset(name: str) -> Config:
    """``quick`` (5,000 expressions, CPU minutes), ``paper`` (100,000 expressions, Kusner et
    al.'s widths: latent 25, dense 435, GRU 3 x 501) or ``smoke`` (seconds; the tests)."""
    if name == "quick":
        # 5,000 expressions, 40 epochs of batch 64 (3,160 steps), Adam at 5e-3 then 5e-4
        return Config(preset=name, n_train=5_000, n_test=1_000,
                      net=SequenceAEConfig(steps=15, classes=12, latent_dim=16,
                                           conv_channels=(32, 32, 32), dense=256,
                                           gru_hidden=128, gru_layers=1),
                      train=TrainConfig(epochs=40, batch_size=64, lr=5e-3, lr_milestones=(30,),
                                        progress=False),
                      bo=BOConfig(iterations=8, batch=10, candidates=2000, initial=300))
    if name == "paper":
        return Config(preset=name, n_train=100_000, n_test=5_000,
                      net=SequenceAEConfig(steps=15, classes=12, latent_dim=25, dense=435,
                                           gru_hidden=501, gru_layers=3),
                      train=TrainConfig(epochs=50, batch_size=500, lr=1e-3,
                                        lr_milestones=(30, 40), lr_decay=0.3),
                      n_samples=5000, bo=BOConfig(iterations=20, batch=50, candidates=10_000,
                                                  initial=2000),
                      bo_seeds=tuple(range(10)), device="auto", threads=None)
    if name == "smoke":
        return Config(preset=name, n_train=128, n_test=32,
                      net=SequenceAEConfig(steps=15, classes=12, latent_dim=3, dense=8,
                                           gru_hidden=8, gru_layers=1),
                      rows=ROWS[:2],
                      train=TrainConfig(epochs=1, batch_size=32, lr=1e-3, progress=False),
                      n_samples=32, gmm_components=2,
                      bo=BOConfig(iterations=2, batch=3, candidates=50, initial=32, top=5),
                      bo_seeds=(0, 1))
    raise ValueError(f"unknown preset {name!r}; choose one of {PRESETS}")


# ------------------------------------------------------------------------------------ data


@functools.lru_cache(maxsize=2)
def corpus(n_train: int, n_test: int, steps: int, seed: int) -> tuple[list[str], list[str]]:
    """Train and test expressions: distinct draws of
    :func:`balance.grammar.arithmetic_expressions` (the test strings never in training), their
    step limits spread evenly over 5 to ``steps`` (a random derivation nearly always uses its
    whole budget; Kusner et al.'s corpus has expressions of every length up to 15 steps)."""
    from balance.grammar import arithmetic_expressions, arithmetic_grammar

    gen = torch.Generator().manual_seed(seed)
    seen: dict[str, None] = {}
    limits = range(min(5, steps), steps + 1)
    for _ in range(100):
        before = len(seen)
        for limit in limits:
            for s in arithmetic_expressions(2 * (n_train + n_test) // len(limits) + 1,
                                            generator=gen, max_steps=limit,
                                            grammar=arithmetic_grammar()):
                seen.setdefault(s, None)
        if len(seen) >= n_train + n_test or len(seen) == before:
            break
    strings = list(seen)
    if len(strings) < n_train + n_test:
        raise ValueError(f"the grammar gave {len(strings)} distinct expressions of at most "
                         f"{steps} steps; ask for fewer than {n_train + n_test}")
    order = torch.randperm(len(strings), generator=gen)[: n_train + n_test]
    picked = [strings[i] for i in order]
    return picked[:n_train], picked[n_train:]


def one_hot(strings: list[str], steps: int) -> torch.Tensor:
    from balance.grammar import arithmetic_grammar

    g = arithmetic_grammar()
    return torch.stack([g.one_hot(g.parse(s), steps) for s in strings])


def decode_strings(model, z: torch.Tensor, *, budget: bool = True) -> list[str | None]:
    """Masked argmax decoding of codes; None where a derivation did not finish."""
    from balance.grammar import arithmetic_grammar

    g = arithmetic_grammar()
    with torch.no_grad():
        logits = torch.cat([model.decode(b) for b in z.float().split(500)])
    out = []
    for d in g.decode(logits, budget=budget):
        try:
            out.append(g.derive(d))
        except ValueError:
            out.append(None)
    return out


# --------------------------------------------------------------------------------- one cell


def run_model(run_dir: Path, config: Config, row: GrammarRow) -> dict:
    """Train one model; score reconstructions, samples and the optimisation (skipped when
    done)."""
    from balance.bayesopt import minimise, random_search, summary
    from balance.density_estimation import make_estimator
    from balance.grammar import arithmetic_grammar, fit_score
    from balance.models.registry import build, save_model_record
    from balance.objectives.grammar import (
        GrammarObjective,
        grammar_loss,
        masked_step_accuracy,
        production_mask_table,
    )
    from balance.train import train

    folder = run_dir / row.name
    stage = Stage(folder, {"row": row, "config": run_identity(config, drop=("rows",))},
                  config.device)
    if stage.done is not None:
        return stage.done
    with limit_threads(config.threads):
        g = arithmetic_grammar()
        train_s, test_s = corpus(config.n_train, config.n_test, config.steps,
                                 config.corpus_seed)
        train_x, test_x = one_hot(train_s, config.steps), one_hot(test_s, config.steps)
        spec = replace(config.net, steps=config.steps, classes=g.size,
                       gaussian=row.kind == "vae", spectral_norm=row.spectral_norm)
        model = build(spec, train_x.shape[1:], config.train.seed)
        save_model_record(folder, spec, train_x.shape[1:], config.train.seed)
        loss_fn = grammar_loss(GrammarObjective(row.kind, row.beta, row.decoder, row.lam),
                               production_mask_table(g))
        history = train(model, loss_fn, train_x, replace(config.train, device=config.device),
                        run_dir=folder)
        model = model.cpu().eval()
        with torch.no_grad():
            codes = torch.cat([model.encode(b)[0] for b in train_x.split(500)]).double()
            test_codes = torch.cat([model.encode(b)[0] for b in test_x.split(500)])
        decoded = decode_strings(model, test_codes)
        accuracy = float(np.mean([d == s for d, s in zip(decoded, test_s, strict=True)]))
        with torch.no_grad():
            step_accuracy = masked_step_accuracy(test_x, model.decode(test_codes),
                                                 production_mask_table(g))
        gmm = make_estimator("gmm", n_components=config.gmm_components,
                             seed=config.train.seed).fit(codes)
        densities = {"normal": make_estimator("normal").fit(codes), "gmm": gmm}
        train_set = set(train_s)
        samplers, examples = {}, {}
        for name, density in densities.items():
            z = density.sample(config.n_samples, generator=torch.Generator().manual_seed(1),
                               dtype=torch.float32)
            free = decode_strings(model, z, budget=False)
            strings = decode_strings(model, z)
            samplers[name] = {
                "finished_without_budget": float(np.mean([s is not None for s in free])),
                "unique": len(set(strings)) / len(strings),
                "novel": float(np.mean([s not in train_set for s in strings])),
                "mean_score": float(np.mean([fit_score(s, g) for s in strings])),
            }
            examples[name] = strings[:12]

        def score(points: np.ndarray) -> np.ndarray:
            return np.array([fit_score(s, g) for s in decode_strings(
                model, torch.from_numpy(points))])

        def propose(n: int, rng: np.random.Generator) -> np.ndarray:
            seed = int(rng.integers(2**31))
            return gmm.sample(n, generator=torch.Generator().manual_seed(seed),
                              dtype=torch.float64).numpy()

        bo_runs = []
        b = config.bo
        for seed in config.bo_seeds:
            pick = np.random.default_rng(seed).choice(len(train_s), b.initial, replace=False)
            x0 = codes[pick].numpy()
            y0 = np.array([fit_score(train_s[i], g) for i in pick])
            opt = minimise(score, x0, y0, propose, b, seed=seed)
            rand = random_search(score, propose, b, seed=seed)
            best_opt = decode_strings(model, torch.from_numpy(
                opt["points"][[int(np.argmin(opt["scores"]))]]))[0]
            bo_runs.append({"seed": seed, "initial_best": float(y0.min()),
                            "bo": summary(opt["scores"], b.top),
                            "random": summary(rand["scores"], b.top),
                            "bo_best_expression": best_opt})
    return stage.save({
        "model": row.name, "label": row.label, "kind": row.kind,
        "reconstruction_accuracy": accuracy, "step_accuracy": step_accuracy,
        "n_test": len(test_s),
        "reconstruction_examples": [[s, d] for s, d in zip(test_s[:8], decoded[:8],
                                                            strict=True)],
        "samplers": samplers, "examples": examples, "bo": bo_runs,
        "final_epoch": {k: history[-1][k] for k in ("epoch", "loss", "reconstruction",
                                                    "latent", "decoder") if k in history[-1]},
        "train_time_s": float(sum(h.get("time_s", 0.0) for h in history)),
    })


# ---------------------------------------------------------------------------- checks, table


def bo_summary(model: dict, top: int) -> dict:
    """Means and standard deviations over seeds of the best and top-``top`` scores, for the
    optimisation, random search and their difference (random minus optimisation)."""
    key = f"top{top}_mean"
    out = {}
    for what in ("best", key):
        bo = np.array([r["bo"][what] for r in model["bo"]])
        rand = np.array([r["random"][what] for r in model["bo"]])
        diff = rand - bo
        sd = float(diff.std(ddof=1)) if len(diff) > 1 else float("nan")
        out[what] = {"bo": float(bo.mean()), "random": float(rand.mean()),
                     "gain": float(diff.mean()), "gain_sd": sd}
    return out


def checks(models: dict, top: int) -> dict:
    """Per GrammarRAE: reconstruction accuracy against each Grammar VAE's (``shown`` when it is
    higher by more than 2 binomial standard errors of the difference, ``contradicted`` when
    lower by as much, else within the spread); per model: the optimisation against random
    search (``beats_random`` when the mean gain over seeds exceeds the seeds' standard
    deviation of the gain, for both the best and the top-``top`` mean)."""
    out: dict = {}
    vaes = {n: m for n, m in models.items() if m["kind"] == "vae"}
    for name, m in models.items():
        for vae_name, vae in vaes.items() if m["kind"] == "rae" else ():
            p, q, n = m["reconstruction_accuracy"], vae["reconstruction_accuracy"], m["n_test"]
            se = float(np.sqrt((p * (1 - p) + q * (1 - q)) / n))
            gap = p - q
            verdict = "shown" if gap > 2 * se else "contradicted" if gap < -2 * se \
                else "within spread"
            out[f"rae_reconstructs_better_than_vae[{name},{vae_name}]"] = {
                "verdict": verdict, "difference": gap, "margin": 2 * se}
        s = bo_summary(m, top)
        for what, v in s.items():
            out[f"bo_beats_random[{name},{what}]"] = {
                "verdict": "shown" if v["gain"] > v["gain_sd"] else "not shown",
                "difference": v["gain"], "margin": v["gain_sd"]}
    return out


TABLE_HEADERS = ("model", "rec. accuracy", "step accuracy", "sampler", "finished w/o budget",
                 "unique", "novel", "mean score", "BO best", "random best", "BO top mean",
                 "random top mean")


def table_rows(results: dict) -> list[list]:
    top = results["bo_top"]
    rows = []
    for m in results["models"].values():
        s = bo_summary(m, top)
        key = f"top{top}_mean"
        for i, name in enumerate(SAMPLERS):
            c = m["samplers"][name]
            bo = [s["best"]["bo"], s["best"]["random"], s[key]["bo"], s[key]["random"]] \
                if i == 0 else [None] * 4
            rows.append([m["label"], m["reconstruction_accuracy"] if i == 0 else None,
                         m["step_accuracy"] if i == 0 else None, SAMPLER_LABELS[name],
                         c["finished_without_budget"], c["unique"], c["novel"],
                         c["mean_score"], *bo])
    return rows


def main(config: Config, run_dir: Path | None = None, *, progress: bool = False) -> dict:
    run_dir = Path(run_dir or Path("runs") / NAME / config.preset)
    prepare_run(run_dir, run_identity(config), device=config.device)
    done = run_cells(run_model, [(run_dir, config, row) for row in config.rows],
                     config.engine, progress=progress,
                     done=lambda cell: (run_dir / cell[2].name / RESULTS_FILE).is_file())
    models = {row.name: result for row, result in zip(config.rows, done, strict=True)}
    results = {**results_header(NAME, config), "config": run_identity(config),
               "bo_top": config.bo.top, "models": models,
               "checks": checks(models, config.bo.top),
               "wall_time_s": float(sum(m["wall_time_s"] for m in models.values()))}
    results["table"] = {"columns": list(TABLE_HEADERS), "rows": table_rows(results)}
    write_json(run_dir / RESULTS_FILE, results)
    (run_dir / "table.md").write_text(markdown_table(TABLE_HEADERS, table_rows(results)))
    return results


def report(results: dict) -> str:
    verdicts = {k: f"{v['verdict']} ({v['difference']:.4g} vs margin {v['margin']:.4g})"
                for k, v in results["checks"].items()}
    return reporting.report([markdown_table(TABLE_HEADERS, table_rows(results))], verdicts,
                            results["wall_time_s"])


if __name__ == "__main__":
    run_script(sys.modules[__name__], sys.argv[1:])
