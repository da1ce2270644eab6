"""Where the default schedules' cost goes: plain, default, the bare-norms floor, every
instrument off (what is left is avionics' own machinery: the hooks, the step state machine, the
buffer's one host copy and the hand-off to the writer), and default minus one every-step
instrument at a time. Same interleaved rounds and medians as ``overhead.py``.

    python benchmarks/ablation.py --model mlp --optimizer sgd --rounds 10
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import overhead  # noqa: E402
from models import MANY_LAYERS  # noqa: E402

from instrument.instruments import REGISTRY, SCHEDULABLE  # noqa: E402

ALL_OFF = "every instrument off"


def every_step_instruments() -> list:
    """Names of the built-in instruments (not Cockpit's, which are opt-in) whose default
    schedule is every step."""
    return [cls.name for cls in REGISTRY
            if cls.name in SCHEDULABLE and cls.default_schedule == 1
            and cls.__module__.startswith("instrument.instruments.")]


def ablation_settings() -> dict:
    settings = {ALL_OFF: ({"*": None}, False)}
    for name in every_step_instruments():
        settings[f"default without {name}"] = ({name: None}, False)
    return settings


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mlp",
                   help=f"of {','.join([*overhead.MODELS, *MANY_LAYERS])}")
    p.add_argument("--optimizer", default="sgd", help=f"of {','.join(overhead.OPTIMIZERS)}")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--block", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    overhead.MODELS.update(MANY_LAYERS)
    extra = ablation_settings()
    overhead.SETTINGS.update(extra)
    settings = ["plain", "default", "floor: bare norms", *extra]
    print(overhead.HEADER, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        rows = overhead.run_matrix([args.model], [args.optimizer], settings, args.rounds,
                                   args.block, torch.device("cpu"), tmp,
                                   out=lambda line: print(line, flush=True))
    ms = {r["setting"]: r["median_ms"] for r in rows}
    base, default = ms["plain"], ms["default"]
    print(f"\ndefault costs {default - base:.2f} ms a step above plain; every instrument off "
          f"{ms[ALL_OFF] - base:.2f} ms (the machinery); floor {ms['floor: bare norms'] - base:.2f}"
          " ms. Saved by switching off one instrument (default minus it):")
    for name in every_step_instruments():
        print(f"  {name:12s} {default - ms[f'default without {name}']:+.2f} ms")


if __name__ == "__main__":
    main()
