"""The rule prefilter never drops a rule that matches: checked on every fixture line and its case variants."""

from __future__ import annotations

import re
from pathlib import Path

from waops.logparse import parse_text
from waops.prefilter import Prefilter, anchors, fold
from waops.rules import COMPILED

LOGS = Path(__file__).resolve().parents[1] / "fixtures" / "logs"
# characters re.IGNORECASE matches to an ASCII letter although str.lower() alone would not give it
TRICKY = str.maketrans({"i": "\u0130", "s": "\u017f", "k": "\u212a"})


def _texts() -> list[str]:
    texts = []
    for f in sorted(LOGS.glob("*.log")):
        texts += [r.text for r in parse_text(f.read_bytes().decode("utf-8", "replace"))]
    return texts


def test_every_matching_rule_is_a_candidate() -> None:
    pre = Prefilter([rx for _, rx in COMPILED])
    checked = 0
    for base in _texts():
        for text in (base, base.upper(), base.swapcase(), base.translate(TRICKY), "x\u0131" + base.title()):
            cands = set(pre.candidates(text))
            for k, (rule, rx) in enumerate(COMPILED):
                if rx.search(text):
                    assert k in cands, (rule.name, text[:200])
                    checked += 1
    assert checked > 500  # the fixtures do exercise the rules


def test_candidates_keep_table_order_and_patterns_without_anchors_always_run() -> None:
    pre = Prefilter([r"bad mac", r"\d+", r"(?:foo|ba)r"])
    assert pre.anchors == (frozenset({"bad mac"}), None, None)  # "ba"+"r" is too short to bother
    assert pre.candidates("BAD MAC 12") == [0, 1, 2]
    assert pre.candidates("nothing") == [1, 2]


def test_anchors_of_alternations_groups_and_repeats() -> None:
    assert anchors(r"opened connection to WA|connection (?:is )?open\b") == {"opened connection to wa", "connection "}
    assert anchors(r"(?:Unexpected end|SyntaxError).{0,80}creds\.json") == {"unexpected end", "syntaxerror"}
    assert anchors(r"(?:error in )+k") == {"error in "}
    assert anchors(r"(?:error )*x") is None  # optional: not required


def test_fold_covers_every_character_ignorecase_maps_to_ascii() -> None:
    letter = re.compile("[a-z]", re.IGNORECASE)
    for cp in range(0x80, 0x20000):
        c = chr(cp)
        if letter.fullmatch(c):
            f = fold(c)
            assert len(f) == 1 and f.isascii() and re.fullmatch(f, c, re.IGNORECASE), hex(cp)
