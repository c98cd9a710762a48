"""balance.grammar: masked decoding yields only complete, valid derivations; parse ->
productions -> string round-trips on a generated corpus; bad input is refused."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from balance.grammar import ARITHMETIC, Grammar, arithmetic_expressions

GRAMMAR = Grammar(ARITHMETIC)


@settings(max_examples=60)
@given(seed=st.integers(0, 2**31 - 1), steps=st.integers(2, 30), sample=st.booleans(),
       scale=st.sampled_from([0.1, 1.0, 10.0, 1000.0]))
def test_masked_decoding_never_produces_an_invalid_derivation(seed, steps, sample, scale):
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(4, steps, GRAMMAR.size, generator=g)
    for derivation in GRAMMAR.decode(logits, sample=sample, generator=g):
        assert len(derivation) == steps
        text = GRAMMAR.derive(derivation)  # raises on an incomplete or invalid derivation
        used = [i for i in derivation if i != GRAMMAR.pad]
        assert derivation[len(used):] == [GRAMMAR.pad] * (steps - len(used))  # padding last
        assert GRAMMAR.parse(text) == used  # the one leftmost derivation of its string


def test_unmasked_argmax_would_be_invalid_so_the_mask_is_doing_the_work():
    logits = torch.full((1, 8, GRAMMAR.size), -10.0)
    logits[0, :, 0] = 10.0  # S -> S '+' T at every step: never terminates without the mask
    derivation = GRAMMAR.decode(logits)[0]
    assert derivation[0] == 0 and GRAMMAR.derive(derivation)  # complete within 8 steps
    with pytest.raises(ValueError, match="incomplete"):
        GRAMMAR.derive([0] * 8)


def test_parse_productions_string_round_trip_on_the_generated_corpus():
    corpus = arithmetic_expressions(300, generator=torch.Generator().manual_seed(0))
    assert len(set(corpus)) > 150  # a varied corpus
    for text in corpus:
        productions = GRAMMAR.parse(text)
        assert GRAMMAR.derive(productions) == text
        hot = GRAMMAR.one_hot(productions, 15)
        assert hot.shape == (15, GRAMMAR.size) and torch.equal(hot.sum(1), torch.ones(15))
        assert hot.argmax(1).tolist()[: len(productions)] == productions


def test_the_corpus_is_seeded():
    a = arithmetic_expressions(20, generator=torch.Generator().manual_seed(3))
    assert a == arithmetic_expressions(20, generator=torch.Generator().manual_seed(3))
    assert a != arithmetic_expressions(20, generator=torch.Generator().manual_seed(4))


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="not a string of the grammar"):
        GRAMMAR.parse("x+")
    with pytest.raises(ValueError, match="no terminal"):
        GRAMMAR.parse("cos(x)")
    with pytest.raises(ValueError, match="cannot hold a derivation"):
        GRAMMAR.decode(torch.zeros(1, 1, GRAMMAR.size))
    with pytest.raises(ValueError, match="logits must be"):
        GRAMMAR.decode(torch.zeros(1, 5, 3))
    with pytest.raises(ValueError, match="more than"):
        GRAMMAR.one_hot(GRAMMAR.parse("sin(x)+2*3"), 4)
    with pytest.raises(ValueError, match="derive no terminal string"):
        Grammar("S -> S 'a'")


def test_any_grammar_works():
    balanced = Grammar("S -> '(' S ')' S | 'e'")
    text = balanced.derive(balanced.decode(torch.randn(1, 9, balanced.size))[0])
    assert balanced.parse(text)
    assert text.count("(") == text.count(")")
