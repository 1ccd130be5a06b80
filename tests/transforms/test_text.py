"""Tests of the character-level typo transform (robustlab.transforms.text)."""

import itertools
import time

import pytest
import torch

from robustlab.core import registry
from robustlab.core.errors import ConfigError, DataError
from robustlab.core.rng import torch_generator
from robustlab.transforms.text import OPS, CharTypos, qwerty_neighbours

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A truly wonderful, heart-warming film with superb acting!",
    "I would not recommend this restaurant to anyone I know.",
    "Stocks rallied on Tuesday after the central bank held rates steady.",
] * 25


def changed_words(a: str, b: str) -> int:
    return sum(x != y for x, y in zip(a.split(" "), b.split(" ")))


def test_determinism():
    t = CharTypos()
    a = t(SENTENCES, severity=3, generator=torch_generator(0))
    b = t(SENTENCES, severity=3, generator=torch_generator(0))
    c = t(SENTENCES, severity=3, generator=torch_generator(1))
    assert a == b
    assert a != c


def test_severity_increases_changed_words_and_nests():
    t = CharTypos()
    outs = {s: t(SENTENCES, severity=s, generator=torch_generator(5)) for s in (0, 1, 2, 3, 4, 5)}
    assert outs[0] == SENTENCES
    counts = [sum(changed_words(a, b) for a, b in zip(SENTENCES, outs[s])) for s in (0, 1, 2, 3, 4, 5)]
    assert all(x < y for x, y in itertools.pairwise(counts)), counts
    eligible = sum(sum(sum(ch.isascii() and ch.isalpha() for ch in w) >= 3 for w in s.split()) for s in SENTENCES)
    assert counts[5] / eligible == pytest.approx(0.5, abs=0.07)  # severity 5 edits ~50% of words
    assert counts[1] / eligible == pytest.approx(0.1, abs=0.04)
    # a word edited at a lower severity is edited the same way at every higher one
    for lo, hi in ((1, 3), (3, 5)):
        for orig, a, b in zip(SENTENCES, outs[lo], outs[hi]):
            for wo, wa, wb in zip(orig.split(" "), a.split(" "), b.split(" ")):
                if wa != wo:
                    assert wb == wa


def test_one_edit_per_word_letters_only():
    t = CharTypos(word_fraction=0.2)
    out = t(SENTENCES, severity=5, generator=torch_generator(2))  # every eligible word edited
    for orig, new in zip(SENTENCES, out):
        ow, nw = orig.split(" "), new.split(" ")
        assert len(ow) == len(nw)  # whitespace never touched
        for a, b in zip(ow, nw):
            assert abs(len(a) - len(b)) <= 1
            assert [c for c in a if not c.isalpha()] == [c for c in b if not c.isalpha()]
            if sum(c.isalpha() for c in a) >= 3:
                assert a != b
            else:
                assert a == b


@pytest.mark.parametrize("op", OPS)
def test_each_op(op):
    t = CharTypos(ops=(op,), word_fraction=1.0)
    neighbours = qwerty_neighbours()
    words = ["keyboard", "Typing", "HELLO"]
    out = t([" ".join(words)], severity=1, generator=torch_generator(0))[0].split(" ")
    for a, b in zip(words, out):
        assert a != b
        if op == "swap":
            assert sorted(a) == sorted(b) and len(a) == len(b)
        elif op == "delete":
            assert len(b) == len(a) - 1
        elif op == "insert":
            assert len(b) == len(a) + 1
            i = next(i for i in range(len(a)) if a[i] != b[i]) if b[:len(a)] != a else len(a)
            assert b[i].lower() in neighbours[b[i - 1].lower()]
        else:
            diff = [(x, y) for x, y in zip(a, b) if x != y]
            assert len(diff) == 1 and diff[0][1].lower() in neighbours[diff[0][0].lower()]
            assert diff[0][0].isupper() == diff[0][1].isupper()


def test_qwerty_neighbours():
    n = qwerty_neighbours()
    assert set(n["a"]) == set("qwsz")
    assert set(n["g"]) == set("tyfhvb")
    assert set(n["m"]) == set("njk")
    assert all(k in n[v] for k in n for v in n[k])  # symmetric
    assert len(n) == 26


def test_edge_cases_survive():
    t = CharTypos(word_fraction=1.0)
    texts = ["", "a", "I o", "  ", "aaa", "12345 !!!", "ab cd", "naïve café ok"]
    out = t(texts, severity=5, generator=torch_generator(0))
    assert isinstance(out, list) and len(out) == len(texts) and all(isinstance(s, str) for s in out)
    assert out[:4] == texts[:4] and out[5:7] == texts[5:7]
    assert out[4] != "aaa" and len(out[4]) in (2, 3, 4)  # no swap possible: delete instead
    assert CharTypos(min_letters=2, word_fraction=1.0)(["ab"], severity=5, generator=torch_generator(0)) != ["ab"]
    assert t([], severity=3, generator=torch_generator(0)) == []


def test_input_not_mutated_and_tuple_ok():
    texts = ("hello world again",)
    out = CharTypos()(texts, severity=5, generator=torch_generator(0))
    assert isinstance(out, list) and texts == ("hello world again",)


def test_bad_inputs():
    t = CharTypos()
    with pytest.raises(DataError):
        t("just a string", severity=1, generator=torch_generator(0))
    with pytest.raises(DataError):
        t(["ok", 3], severity=1, generator=torch_generator(0))
    for bad in (-0.1, 5.01, float("inf"), "2"):
        with pytest.raises(ConfigError, match="severity"):
            t(["hello"], severity=bad, generator=torch_generator(0))
    with pytest.raises(ConfigError, match="generator"):
        t(["hello"], severity=1, generator=None)
    with pytest.raises(ConfigError, match="ops"):
        CharTypos(ops=("swap", "shout"))
    with pytest.raises(ConfigError, match="word_fraction"):
        CharTypos(word_fraction=0)


def test_registry():
    t = registry.create("char_typos", word_fraction=0.2)
    assert isinstance(t, CharTypos) and t.kind == "transform" and t.modality == "text"
    assert "char_typos" in registry.names("transform")
    assert repr(t).startswith("CharTypos(word_fraction=0.2")


def test_fast_enough():
    texts = ["the quick brown fox jumps over the lazy dog and runs far away"] * 1000
    t = CharTypos()
    t0 = time.perf_counter()
    out = t(texts, severity=5, generator=torch_generator(0))
    assert time.perf_counter() - t0 < 1.0 and len(out) == 1000


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_generator():
    out = CharTypos()(SENTENCES, severity=3, generator=torch_generator(0, "cuda"))
    assert len(out) == len(SENTENCES) and out != SENTENCES
