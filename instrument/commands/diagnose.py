"""Re-run the diagnosis rules on a saved run and print a readable report (--json for
scripts; --set NAME=VALUE overrides a threshold, see docs/rules.md). Exit status: 0 without
critical findings, 1 with critical findings, 2 if the run cannot be read or an option is wrong.
Imports no torch.
"""

from __future__ import annotations

import sys

from instrument.store.errors import StoreError

HELP = "re-run the diagnosis rules on a saved run (exit 1 on critical findings)"


def add_arguments(parser) -> None:
    parser.add_argument("run", help="run directory (or its avionics.db)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override a threshold (repeatable); see docs/rules.md. "
                             "disabled_rules takes comma-separated rule codes")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def parse_overrides(items) -> dict:
    """``["a=1", "disabled_rules=x,y"]`` -> ``{"a": 1.0, "disabled_rules": ["x", "y"]}``."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"--set takes NAME=VALUE, got {item!r}")
        if name == "disabled_rules":
            out[name] = [v.strip() for v in value.split(",") if v.strip()]
            continue
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"--set {name}: {value!r} is not a number") from None
        out[name] = int(number) if number.is_integer() and "." not in value else number
    return out


def run(args) -> int:
    from instrument.diagnosis import report
    from instrument.diagnosis.replay import diagnose
    from instrument.store.reader import load

    try:
        overrides = parse_overrides(args.set)
        diag = diagnose(load(args.run), overrides)
    except StoreError as exc:
        print(f"avionics diagnose: {exc}", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as exc:
        print(f"avionics diagnose: {exc}", file=sys.stderr)
        return 2
    print(report.as_json(diag) if args.json else report.text(diag), end="")
    return 1 if diag.critical else 0
