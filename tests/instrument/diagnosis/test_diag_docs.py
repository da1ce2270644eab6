"""docs/rules.md documents every rule and every threshold, with the defaults the code uses."""

from __future__ import annotations

import os
import re

from instrument.diagnosis import Thresholds
from instrument.diagnosis.rules import RULES

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))))
DOC = open(os.path.join(ROOT, "docs", "rules.md"), encoding="utf-8").read()


def test_every_rule_has_a_section_with_meaning_thresholds_and_advice():
    for rule in RULES:
        m = re.search(rf"^### {rule.code}\n(.*?)(?=^### |^## |\Z)", DOC, re.S | re.M)
        assert m, f"docs/rules.md has no section for {rule.code}"
        body = m.group(1)
        assert "**Meaning.**" in body and "**What to try.**" in body, rule.code
        assert f"[`{rule.code}`](#{rule.code}) | {rule.severity} |" in DOC, rule.code


def test_every_threshold_is_documented_with_its_default():
    default = Thresholds()
    for name in Thresholds.names():
        if name in ("history", "disabled_rules"):
            assert f"`{name}`" in DOC or name in DOC, name
            continue
        hits = re.findall(rf"`{name}`\s*=\s*(\d+(?:\.\d+)?(?:e[+-]?\d+)?)( ?%)?", DOC)
        assert hits, f"threshold {name} is not documented with its default"
        for number, percent in hits:
            value = float(number) / (100 if percent else 1)
            assert abs(value - float(getattr(default, name))) <= 1e-12 * max(1, value), name
