"""Context-free grammars for structured inputs (the Grammar VAE of Kusner et al. 2017, and the
GrammarRAE of Ghosh et al. 2020): a string is represented by the sequence of productions of
its leftmost derivation, one-hot per step, and a decoder's logits are decoded under a mask so
that every decoded sequence is a complete, valid derivation.

- :class:`Grammar`: any CFG in NLTK's notation (``Grammar(text)``); ``parse(string)`` -> the
  production indices of its leftmost derivation (NLTK's chart parser), ``derive(indices)`` ->
  the string, ``one_hot(indices, steps)`` -> ``[steps, P + 1]`` (the last column: padding
  after the derivation ends), ``decode(logits)`` -> valid derivations from ``[B, steps, P + 1]``
  logits (argmax or sampled).
- :data:`ARITHMETIC`: the univariate arithmetic-expression grammar of the Grammar VAE paper;
  :func:`arithmetic_expressions`: a seeded corpus of its expressions.

Masked decoding keeps a stack of the nonterminals still to expand (the leftmost on top). At each
step only productions of the top nonterminal are allowed, and of those only the ones whose
derivation can still be completed within the remaining steps (each nonterminal's fewest steps
to a terminal string are precomputed), so the result never exceeds ``steps`` and always ends
in a string of the grammar. NLTK parses (a solved problem); the mask and the budget are the
Grammar VAE's own construction, written here.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["ARITHMETIC", "Grammar", "TARGET_GRID", "WORST_SCORE", "arithmetic_expressions",
           "arithmetic_grammar",
           "arithmetic_values", "fit_score", "target_function"]

#: Kusner et al. (2017), section 4.1: univariate arithmetic expressions in x.
ARITHMETIC = """
S -> S '+' T | S '*' T | S '/' T | T
T -> '(' S ')' | 'sin(' S ')' | 'exp(' S ')' | 'x' | '1' | '2' | '3'
"""


class Grammar:
    """A context-free grammar over tokens (module docstring). Production ``i`` is
    ``self.productions[i]``; index ``len(self.productions)`` is the padding symbol."""

    def __init__(self, text: str):
        import nltk

        self.cfg = nltk.CFG.fromstring(text)
        self.productions = list(self.cfg.productions())
        self.start = self.cfg.start()
        self.nonterminals = sorted({p.lhs() for p in self.productions}, key=str)
        self.pad = len(self.productions)
        self._index = {p: i for i, p in enumerate(self.productions)}
        self._rhs_nonterminals = [[s for s in p.rhs() if isinstance(s, nltk.Nonterminal)]
                                  for p in self.productions]
        terminals = {s for p in self.productions for s in p.rhs() if isinstance(s, str)}
        # longest terminals first, so that "sin(" is one token, not "s", "i", ...
        self._token = re.compile("|".join(re.escape(t) for t in sorted(terminals, key=len,
                                                                        reverse=True)))
        self._parser = nltk.ChartParser(self.cfg)
        self.min_steps = self._min_steps()
        # mask[A, i]: production i expands nonterminal A (padding allowed for none)
        self.masks = {a: np.array([p.lhs() == a for p in self.productions] + [False])
                      for a in self.nonterminals}

    @property
    def size(self) -> int:
        """Production classes of a one-hot step: the productions plus padding."""
        return self.pad + 1

    def _min_steps(self) -> dict:
        """Fewest productions that turn each nonterminal into a terminal string (a fixed
        point of min over its productions of 1 + the sum over the right side's nonterminals)."""
        steps = dict.fromkeys(self.nonterminals, math.inf)
        changed = True
        while changed:
            changed = False
            for p, rhs in zip(self.productions, self._rhs_nonterminals, strict=True):
                cost = 1 + sum(steps[s] for s in rhs)
                if cost < steps[p.lhs()]:
                    steps[p.lhs()], changed = cost, True
        unreachable = [str(a) for a, v in steps.items() if v == math.inf]
        if unreachable:
            raise ValueError(f"nonterminals {unreachable} derive no terminal string")
        return steps

    def tokenize(self, text: str) -> list[str]:
        """The string's tokens (the grammar's terminals, spaces ignored); ValueError on
        anything else."""
        compact = re.sub(r"\s+", "", text)
        tokens, at = [], 0
        for match in self._token.finditer(compact):
            if match.start() != at:
                break
            tokens.append(match.group())
            at = match.end()
        if at != len(compact):
            raise ValueError(f"{text!r}: no terminal of the grammar at {compact[at:]!r}")
        return tokens

    def parse(self, text: str) -> list[int]:
        """Production indices of the leftmost derivation of ``text`` (ValueError when the
        grammar does not generate it)."""
        tree = next(iter(self._parser.parse(self.tokenize(text))), None)
        if tree is None:
            raise ValueError(f"{text!r} is not a string of the grammar")
        return [self._index[p] for p in tree.productions()]

    def derive(self, indices: Sequence[int]) -> str:
        """The string of a leftmost derivation (padding ignored); ValueError when the
        sequence is not a complete derivation from the start symbol."""
        import nltk

        stack: list = [self.start]
        out: list[str] = []
        for i in indices:
            if i == self.pad:
                break
            if not stack:
                raise ValueError("productions after the derivation ended")
            p = self.productions[i]
            if p.lhs() != stack[-1]:
                raise ValueError(f"production {p} does not expand {stack[-1]}")
            stack.pop()
            for s in reversed(p.rhs()):
                stack.append(s)
            while stack and not isinstance(stack[-1], nltk.Nonterminal):
                out.append(stack.pop())
        if stack:
            raise ValueError(f"incomplete derivation: {[str(s) for s in stack]} left")
        return "".join(out)

    def one_hot(self, indices: Sequence[int], steps: int) -> Tensor:
        """``[steps, size]`` float32: one production per step, then padding."""
        if len(indices) > steps:
            raise ValueError(f"the derivation has {len(indices)} steps, more than {steps}")
        out = torch.zeros(steps, self.size)
        padded = list(indices) + [self.pad] * (steps - len(indices))
        out[torch.arange(steps), torch.tensor(padded)] = 1.0
        return out

    def decode(self, logits: Tensor, *, sample: bool = False,
               generator: torch.Generator | None = None, budget: bool = True) -> list[list[int]]:
        """Valid derivations from decoder logits ``[B, steps, size]``: at each step the most
        likely (or, with ``sample``, a sampled) production among those the mask allows.
        ``budget=False`` drops the step budget (the mask of the top nonterminal alone, as in
        Kusner et al.): a derivation may then run out of steps unfinished, which
        :meth:`derive` rejects; the fraction that finish measures how well the decoder has
        learnt to close its derivations."""
        import nltk

        if logits.dim() != 3 or logits.shape[2] != self.size:
            raise ValueError(f"logits must be [B, steps, {self.size}], got "
                             f"{tuple(logits.shape)}")
        batch, steps, _ = logits.shape
        if budget and self.min_steps[self.start] > steps:
            raise ValueError(f"{steps} steps cannot hold a derivation (the shortest has "
                             f"{self.min_steps[self.start]})")
        values = logits.detach().float().cpu()
        cost = np.array([1 + sum(self.min_steps[s] for s in rhs)
                         for rhs in self._rhs_nonterminals] + [0], dtype=float)
        out = []
        for b in range(batch):
            stack, chosen = [self.start], []
            pending = self.min_steps[self.start]  # fewest steps to finish the stack
            for t in range(steps):
                if not stack:
                    chosen.append(self.pad)
                    continue
                top = stack[-1]
                allowed = self.masks[top]
                if budget:
                    left = steps - t - (pending - self.min_steps[top])
                    allowed = allowed & (cost <= left)
                allowed = torch.from_numpy(allowed)
                scores = values[b, t].masked_fill(~allowed, -math.inf)
                if sample:
                    i = int(torch.multinomial(torch.softmax(scores, 0), 1, generator=generator))
                else:
                    i = int(scores.argmax())
                chosen.append(i)
                stack.pop()
                pending += cost[i] - 1 - self.min_steps[top]
                for s in reversed(self.productions[i].rhs()):
                    if isinstance(s, nltk.Nonterminal):
                        stack.append(s)
            out.append(chosen)
        return out


def arithmetic_expressions(n: int, *, generator: torch.Generator, max_steps: int = 15,
                           grammar: Grammar | None = None) -> list[str]:
    """``n`` distinct-or-not expressions of :data:`ARITHMETIC`, each a random leftmost
    derivation of at most ``max_steps`` productions: every step picks uniformly among the
    productions that still fit the budget (the same rule as masked decoding, with uniform
    scores), drawn from ``generator``."""
    grammar = grammar or Grammar(ARITHMETIC)
    logits = torch.zeros(n, max_steps, grammar.size)
    derivations = grammar.decode(logits, sample=True, generator=generator)
    return [grammar.derive(d) for d in derivations]


#: The Grammar VAE's optimisation target (Kusner et al. 2017, section 4.1) on 1,000 points of
#: [-10, 10]; a string's score is log(1 + MSE) against it (lower is better).
TARGET_GRID = np.linspace(-10.0, 10.0, 1000)
#: The score of an expression whose values overflow or are undefined somewhere on the grid
#: (e.g. exp(exp(x))): log(1 + MSE) capped here, so that one such string cannot dominate a
#: Gaussian process fitted to the scores.
WORST_SCORE = 10.0


@functools.lru_cache(maxsize=1)
def arithmetic_grammar() -> Grammar:
    """:data:`ARITHMETIC` as a :class:`Grammar` (built once per process)."""
    return Grammar(ARITHMETIC)


def target_function(x: np.ndarray) -> np.ndarray:
    """1/3 + x + sin(x * x)."""
    return 1.0 / 3.0 + x + np.sin(x * x)


def arithmetic_values(expression: str, x: np.ndarray, grammar: Grammar | None = None) -> np.ndarray:
    """Values of an :data:`ARITHMETIC` expression at the points ``x`` (float64; inf / nan
    where it overflows or divides by zero). The string is tokenized by the grammar first, so
    only its terminals reach Python's evaluator."""
    grammar = grammar or arithmetic_grammar()
    names = {"sin(": "np.sin(", "exp(": "np.exp("}
    code = "".join(names.get(t, t) for t in grammar.tokenize(expression))
    with np.errstate(all="ignore"):
        value = eval(code, {"__builtins__": {}, "np": np}, {"x": x})  # noqa: S307 (grammar tokens)
    return np.broadcast_to(np.asarray(value, dtype=np.float64), x.shape)


def fit_score(expression: str, grammar: Grammar | None = None) -> float:
    """log(1 + MSE) of the expression against :func:`target_function` on
    :data:`TARGET_GRID`, capped at :data:`WORST_SCORE` (lower is better)."""
    values = arithmetic_values(expression, TARGET_GRID, grammar)
    with np.errstate(all="ignore"):
        mse = float(np.mean((values - target_function(TARGET_GRID)) ** 2))
    if not math.isfinite(mse):
        return WORST_SCORE
    return min(math.log1p(mse), WORST_SCORE)
