"""List the runs under a log directory: name, status, steps and last update."""

from __future__ import annotations

import os
import time

from instrument.store.errors import StoreError
from instrument.store.reader import is_run_dir, load

HELP = "list the runs under a log directory"


def find_runs(logdir: str) -> list:
    """Run directories under ``logdir`` (itself included), sorted by path."""
    found = []
    for root, dirs, _ in os.walk(logdir):
        if is_run_dir(root):
            found.append(root)
        dirs.sort()
    return found


def add_arguments(parser) -> None:
    parser.add_argument("logdir", help="directory holding run directories")


def run(args) -> int:
    if not os.path.isdir(args.logdir):
        print(f"avionics: {args.logdir} is not a directory")
        return 2
    runs = find_runs(args.logdir)
    if not runs:
        print(f"no runs under {args.logdir}")
        return 0
    for path in runs:
        try:
            r = load(path)
            meta = r.meta
            last = r.last_step()
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(meta.get("start_time", 0)))
            print(f"{os.path.relpath(path, args.logdir):40s} {meta['status']:9s} "
                  f"steps={'-' if last is None else last + 1:<8} started {when}")
        except StoreError as exc:
            print(f"{os.path.relpath(path, args.logdir):40s} unreadable: {exc}")
    return 0
