"""The ``avionics`` command. Each subcommand lives in its own module and is imported on use,
so ``avionics dashboard`` never imports torch.

    avionics runs LOGDIR          list the runs under LOGDIR with their status
    avionics dashboard LOGDIR     serve the browser dashboard (http://127.0.0.1:8050)
    avionics diagnose RUN         re-run the diagnosis rules on a saved run
    avionics report RUN -o F      write a self-contained HTML report of a run
    avionics export RUN --format parquet|csv [-o DIR]   the run's series and events as files
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module defining add_arguments(parser) and run(args) -> exit code
COMMANDS = {
    "runs": "instrument.commands.runs",
    "dashboard": "instrument.commands.dashboard",
    "diagnose": "instrument.commands.diagnose",
    "report": "instrument.commands.report",
    "export": "instrument.commands.export",
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="avionics", description="avionics: an instrument "
                                     "panel for PyTorch training runs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = {}
    for name, path in COMMANDS.items():
        module = modules[name] = importlib.import_module(path)
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__)
        module.add_arguments(p)
    args = parser.parse_args(argv)
    return int(modules[args.command].run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
