"""Character-level typos ("butter fingers"): seeded keyboard slips on a growing fraction of words.

Four edits, one per chosen word: swap two adjacent letters, delete a letter, insert a QWERTY
neighbour of a letter next to it, or substitute a letter with a QWERTY neighbour. These are the
"swap / drop / add / key" perturbations of Pruthi, Dhingra & Lipton, "Combating Adversarial
Misspellings with Robust Word Recognition" (ACL 2019), also found as TextAttack's character word-swaps
(Morris et al., 2020) and NL-Augmenter's "butter fingers" perturbation (Dhole et al., 2021).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

import torch

from robustlab.core.errors import ConfigError, DataError
from robustlab.core.probe import Transform
from robustlab.core.registry import register
from robustlab.transforms._common import check_generator, check_severity

__all__ = ["OPS", "CharTypos", "qwerty_neighbours"]

#: the edits ``CharTypos`` can make
OPS = ("swap", "delete", "insert", "substitute")

_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_ROW_OFFSET = (0.0, 0.25, 0.75)  # horizontal stagger of a standard keyboard, in key widths


def qwerty_neighbours() -> dict[str, str]:
    """Lower-case letter -> the letters on the keys touching it on a QWERTY keyboard.

    Same row: the keys left and right; the rows above and below: keys less than one key width away
    (so ``a`` -> ``qwsz`` and ``g`` -> ``tyfhvb``).
    """
    pos = {ch: (r, j + _ROW_OFFSET[r]) for r, row in enumerate(_ROWS) for j, ch in enumerate(row)}
    out = {}
    for ch, (r, x) in pos.items():
        out[ch] = "".join(o for o, (r2, x2) in pos.items() if o != ch and (
            (r2 == r and abs(x2 - x) == 1) or (abs(r2 - r) == 1 and abs(x2 - x) < 1)))
    return out


_NEIGHBOURS = qwerty_neighbours()
_TOKEN = re.compile(r"(\s+)")
_LETTER = re.compile(r"[A-Za-z]")
_NON_LETTER = re.compile(r"[^A-Za-z]+")


def _match_case(ch: str, like: str) -> str:
    return ch.upper() if like.isupper() else ch


def _edit(word: str, op: str, u_pos: float, u_key: float) -> str:
    """``word`` with one ``op`` at a letter chosen by ``u_pos``; ``u_key`` picks the neighbour key."""
    letters = [m.start() for m in _LETTER.finditer(word)]
    if op == "swap":
        pairs = [i for i in letters if i + 1 < len(word) and _LETTER.match(word[i + 1])
                 and word[i] != word[i + 1]]
        if not pairs:  # e.g. "aaa": a swap would change nothing, delete instead
            op = "delete"
        else:
            i = pairs[int(u_pos * len(pairs))]
            return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    i = letters[int(u_pos * len(letters))]
    if op == "delete":
        return word[:i] + word[i + 1:]
    keys = _NEIGHBOURS[word[i].lower()]
    key = _match_case(keys[int(u_key * len(keys))], word[i])
    if op == "insert":
        return word[:i + 1] + key + word[i + 1:]
    return word[:i] + key + word[i + 1:]


@register("transform", "char_typos")
@dataclass
class CharTypos(Transform):
    """Keyboard typos on ``severity × word_fraction`` of the words of each string, one edit per word.

    From Pruthi et al., "Combating Adversarial Misspellings with Robust Word Recognition" (ACL 2019);
    the same family as NL-Augmenter's "butter fingers" (Dhole et al., 2021). A word (a whitespace
    separated token) is eligible when it has at least ``min_letters`` ASCII letters; edits touch
    letters only, never punctuation, digits or whitespace, and keep the letter case. Each eligible
    word is chosen independently with probability ``min(1, severity × word_fraction)`` and gets one
    edit drawn uniformly from ``ops``. The draws do not depend on the severity, so with the same seed
    the words changed at a lower severity are also changed, identically, at every higher one.

    Args:
        word_fraction: fraction of the eligible words edited per severity step (default 0.1:
            severity 1..5 edit 10%..50% of the words, in expectation).
        min_letters: letters a word needs to be edited (default 3; short words stay intact).
        ops: the edits to draw from, a subset of ``("swap", "delete", "insert", "substitute")``.

    Input ``list[str]`` (or a tuple), output a new ``list[str]`` of the same length. A Python loop over
    words (string edits), with all random numbers drawn at once from the generator: 1000 sentences
    of 16 words take a few tens of milliseconds.

    Example:
        >>> from robustlab.core.rng import torch_generator
        >>> CharTypos()(["the quick brown fox"], severity=5, generator=torch_generator(0))  # doctest: +SKIP
    """

    word_fraction: float = 0.1
    min_letters: int = 3
    ops: tuple[str, ...] = OPS

    modality = "text"
    name: ClassVar[str] = "char_typos"

    def __post_init__(self) -> None:
        self.ops = tuple(self.ops) if not isinstance(self.ops, str) else (self.ops,)
        bad = [o for o in self.ops if o not in OPS]
        if bad or not self.ops:
            raise ConfigError(f"char_typos: unknown or empty ops {list(self.ops)!r}",
                              fix=f"choose a non-empty subset of {list(OPS)}")
        if not 0 < float(self.word_fraction) <= 1:
            raise ConfigError(f"char_typos: word_fraction must be in (0, 1], got {self.word_fraction!r}",
                              fix="use e.g. word_fraction=0.1 (severity 5 then edits half the words)")
        if int(self.min_letters) < 1:
            raise ConfigError(f"char_typos: min_letters must be >= 1, got {self.min_letters!r}",
                              fix="use min_letters=3 (the default) or 2")

    def __call__(self, x: list[str], *, severity: float, generator: torch.Generator | None = None) -> list[str]:
        """``x`` with typos; strings only, same length and order."""
        s = check_severity(severity, self.name)
        if isinstance(x, str) or not isinstance(x, (list, tuple)) or not all(isinstance(t, str) for t in x):
            raise DataError("char_typos expects a list of strings",
                            fix="pass the texts as list[str] (wrap a single text as [text])")
        check_generator(generator, self.name)
        p = min(1.0, s * float(self.word_fraction))
        tokens = [_TOKEN.split(t) for t in x]
        need = int(self.min_letters)
        eligible = [(a, b) for a, ws in enumerate(tokens) for b, w in enumerate(ws)
                    if len(w) >= need and len(_NON_LETTER.sub("", w)) >= need]
        if not eligible or p == 0:
            return list(x)
        u = torch.rand((len(eligible), 4), generator=generator, device=generator.device,
                       dtype=torch.float64).cpu().numpy().tolist()
        for (a, b), (u_pick, u_op, u_pos, u_key) in zip(eligible, u):
            if u_pick < p:
                op = self.ops[min(int(u_op * len(self.ops)), len(self.ops) - 1)]
                tokens[a][b] = _edit(tokens[a][b], op, u_pos, u_key)
        return ["".join(ws) for ws in tokens]
