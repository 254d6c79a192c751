"""A substring prefilter for a table of regexes: which patterns can possibly match a text.

Python's `re` is slow on case-insensitive alternations (~15 µs per search on a 500-character pino line),
and a log window is a few hundred lines times ~25 rules. Most rules cannot match most lines, and a
substring test (`in`, in C) costs a fraction of a search. So each pattern is reduced, once, to a set of
lowercase literals ("anchors") such that every match contains at least one of them; a text runs a
pattern's regex only when one of its anchors occurs in the text. A pattern without usable anchors always
runs. The filter is exact by construction: it may let through a pattern that then does not match, never
drop one that would (tests/unit/test_prefilter.py checks it on every rule and the case-folding tables).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# the parser's own node names (private, but stable since 3.11; a failure only disables filtering)
from re import _constants as sre
from re import _parser as sre_parse

MIN_ANCHOR = 3  # shorter literals are in nearly every line: no point testing them

# Non-ASCII characters that re.IGNORECASE lets match an ASCII letter: U+0130 (simple lowercase i),
# U+0131 dotless i and U+017F long s (re._casefix), U+212A Kelvin sign. Folded before lower(), so that
# every ASCII anchor re would find case-insensitively is also found by `in` (U+0130's full lowercase is
# two characters; translating it first keeps positions 1:1).
_FOLD = str.maketrans({"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k"})

_REPEATS = {sre.MAX_REPEAT, sre.MIN_REPEAT, getattr(sre, "POSSESSIVE_REPEAT", sre.MAX_REPEAT)}


def fold(text: str) -> str:
    """The form anchors are searched in."""
    return (text if text.isascii() else text.translate(_FOLD)).lower()


def anchors(pattern: str | re.Pattern[str], flags: int = 0) -> frozenset[str] | None:
    """Lowercase literals of which every match of `pattern` contains one, or None when the pattern
    has no required literal of MIN_ANCHOR characters in every alternative. A pattern given as text is
    parsed, not compiled (its table may compile it only when a text needs it)."""
    text, flags = (pattern, flags) if isinstance(pattern, str) else (pattern.pattern, pattern.flags)
    try:
        tree = sre_parse.parse(text, flags)
    except Exception:  # an unparseable pattern simply is not filtered
        return None
    found = _sequence(list(tree))
    return frozenset(found) if found else None


def _sequence(items: list[tuple[object, object]]) -> set[str] | None:
    """The best requirement of a sequence of nodes: a set of strings, one of which is in every match."""
    options: list[set[str]] = []
    run: list[str] = []

    def close() -> None:
        if run:
            options.append({"".join(run)})
            run.clear()

    for op, av in items:
        if op is sre.LITERAL:
            run.append(chr(av))  # type: ignore[arg-type]
            continue
        close()
        sub: set[str] | None = None
        if op is sre.SUBPATTERN:
            sub = _sequence(list(av[-1]))  # type: ignore[index]
        elif op is sre.BRANCH:
            alts = [_sequence(list(a)) for a in av[1]]  # type: ignore[index]
            sub = set().union(*alts) if alts and all(alts) else None  # type: ignore[arg-type]
        elif op in _REPEATS and av[0] >= 1:  # type: ignore[index]
            sub = _sequence(list(av[2]))  # type: ignore[index]
        if sub:
            options.append(sub)
    close()
    usable = [o for o in options if all(len(s) >= MIN_ANCHOR and s.isascii() for s in o)]
    if not usable:
        return None
    best = max(usable, key=lambda o: (min(len(s) for s in o), -len(o)))
    return {s.lower() for s in best}


class Prefilter:
    """For a sequence of patterns, the indexes of those that may match a text."""

    def __init__(self, patterns: Sequence[str | re.Pattern[str]], flags: int = 0) -> None:
        self.anchors: tuple[frozenset[str] | None, ...] = tuple(anchors(p, flags) for p in patterns)
        self._always = frozenset(k for k, a in enumerate(self.anchors) if a is None)
        # (anchor, pattern index) flat, one `in` per anchor: cheaper than a generator per pattern
        self._pairs = tuple((a, k) for k, need in enumerate(self.anchors) if need for a in sorted(need))

    def candidates(self, text: str) -> list[int]:
        """Indexes in ascending order (callers may rely on the table's order)."""
        low = fold(text)
        hits = {k for a, k in self._pairs if a in low}
        return sorted(hits | self._always) if self._always else sorted(hits)
