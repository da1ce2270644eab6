"""Many layers: a 48-block GPT of width 32 (580 parameter tensors, 340 leaf modules) with
AdamW, batch 8 x 64 tokens (a benchmark with asserted targets, not a test).

1. Overhead: plain, default schedules and the floor (``benchmarks/overhead.py``'s
   interleaved rounds), on this model.
2. The writer keeps up: one watched run of ``--steps`` steps with default schedules; the length
   of the training thread's queue to the writer thread is sampled every 50 steps, and must stay
   bounded (no growth from the first quarter of the run to the last).
3. The store's size on disk, scaled to 10^4 steps, broken down by table and by series
   (raw points against the downsampling pyramid's buckets; read with sqlite's ``dbstat``).
4. ``--dashboard``: every dashboard refresh on that run, timed against its budget
   (``dashboard/probe.py``; imports dash, after training).

    python benchmarks/many_layers.py                  # all of it (about half an hour idle)
    python benchmarks/many_layers.py --steps 300 --rounds 3   # a quick look
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import overhead  # noqa: E402
from models import MANY_LAYERS  # noqa: E402

import instrument  # noqa: E402

MODEL = "gpt48"
QUEUE_BOUND = 200
"""Most steps the writer queue may hold at any sample (it drains every flush interval)."""


def queue_run(steps: int, run_dir: str) -> dict:
    """Train ``steps`` steps watched with default schedules, sampling the writer queue."""
    spec = MANY_LAYERS[MODEL]
    torch.manual_seed(0)
    model = spec.build()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    g = torch.Generator().manual_seed(1)
    data = [spec.make_batch(g) for _ in range(8)]
    mon = instrument.watch(model, opt, run=run_dir)
    samples = []
    t0 = time.perf_counter()
    for i in range(steps):
        opt.zero_grad()
        loss = spec.loss(model, data[i % len(data)])
        loss.backward()
        opt.step()
        mon.log(loss=loss)
        if i % 50 == 49:
            samples.append(len(mon.writer._queue))
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    mon.close()
    close_s = time.perf_counter() - t1
    size = sum(os.path.getsize(os.path.join(mon.run_dir, f)) for f in os.listdir(mon.run_dir))
    q = max(len(samples) // 4, 1)
    return {"run_dir": mon.run_dir, "steps": steps, "train_s": train_s, "close_s": close_s,
            "params": len(list(model.parameters())), "queue_samples": samples,
            "queue_max": max(samples, default=0),
            "queue_first_quarter": statistics.fmean(samples[:q]) if samples else 0.0,
            "queue_last_quarter": statistics.fmean(samples[-q:]) if samples else 0.0,
            "store_bytes": size, "store_mb_per_1e4_steps": size / steps * 1e4 / 1e6}


def store_breakdown(run_dir: str, top: int = 8) -> dict:
    """Bytes on disk per table (sqlite ``dbstat``: pages, indexes included) and the payload
    bytes of the largest series in ``points`` (raw values) and ``buckets`` (the pyramid)."""
    db = sqlite3.connect(os.path.join(run_dir, "avionics.db"))
    try:
        try:
            tables = dict(db.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name "
                                     "ORDER BY 2 DESC").fetchall())
        except sqlite3.OperationalError:  # sqlite built without dbstat
            tables = {}
        names = dict(db.execute("SELECT id, key FROM series").fetchall())
        points = db.execute("SELECT series, SUM(LENGTH(value)), COUNT(*) FROM points "
                            "GROUP BY series ORDER BY 2 DESC").fetchall()
        buckets = db.execute("SELECT series, SUM(LENGTH(count) + LENGTH(mean) + LENGTH(min) + "
                             "LENGTH(max)), COUNT(*) FROM buckets GROUP BY series "
                             "ORDER BY 2 DESC").fetchall()
    finally:
        db.close()
    return {"tables": tables,
            "points_bytes": sum(b for _, b, _ in points),
            "buckets_bytes": sum(b for _, b, _ in buckets),
            "series": len(names),
            "top_points": [(names.get(s, s), b, n) for s, b, n in points[:top]],
            "top_buckets": [(names.get(s, s), b, n) for s, b, n in buckets[:top]]}


def print_breakdown(b: dict, steps: int) -> None:
    per = 1e4 / steps / 1e6  # bytes in this run -> MB per 10^4 steps
    print("store by table (MB per 10^4 steps): " + ", ".join(
        f"{k} {v * per:.0f}" for k, v in b["tables"].items() if v * per >= 0.5))
    print(f"{b['series']} series; payload: raw points {b['points_bytes'] * per:.0f} MB, "
          f"pyramid buckets {b['buckets_bytes'] * per:.0f} MB per 10^4 steps")
    for what in ("top_points", "top_buckets"):
        print(f"largest series in {what[4:]}: " + ", ".join(
            f"{k} {v * per:.1f} MB ({n} rows)" for k, v, n in b[what]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2000, help="steps of the writer/store run")
    p.add_argument("--rounds", type=int, default=10, help="overhead rounds (0: skip)")
    p.add_argument("--block", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dashboard", action="store_true", help="also time dashboard refreshes")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    overhead.MODELS.update(MANY_LAYERS)
    with tempfile.TemporaryDirectory() as tmp:
        if args.rounds:
            print(overhead.HEADER, flush=True)
            overhead.run_matrix([MODEL], ["adamw"], ["plain", "default", "floor: bare norms"],
                                args.rounds, args.block, torch.device("cpu"), tmp,
                                out=lambda line: print(line, flush=True))
        r = queue_run(args.steps, os.path.join(tmp, "queue"))
        print(f"\n{r['params']} parameter tensors, {r['steps']} steps in {r['train_s']:.0f} s; "
              f"writer queue (steps waiting, sampled every 50): max {r['queue_max']}, mean "
              f"{r['queue_first_quarter']:.1f} in the first quarter, "
              f"{r['queue_last_quarter']:.1f} in the last; close() {r['close_s']:.2f} s; "
              f"store {r['store_bytes'] / 1e6:.1f} MB = {r['store_mb_per_1e4_steps']:.0f} MB "
              "per 10^4 steps", flush=True)
        print_breakdown(store_breakdown(r["run_dir"]), r["steps"])
        assert r["queue_max"] <= QUEUE_BOUND, f"writer queue reached {r['queue_max']} steps"
        assert r["queue_last_quarter"] <= 2 * r["queue_first_quarter"] + 5, \
            "the writer queue grows: the writer does not keep up"
        if args.dashboard:
            sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
            from dashboard.probe import measure

            rows = measure(r["run_dir"])
            for row in rows:
                print(f"dashboard {row['name']:34s} {row['median_s'] * 1e3:8.1f} ms "
                      f"{row['bytes'] / 1e3:8.1f} KB {'ok' if row['ok'] else 'OVER BUDGET'}")
            assert all(row["ok"] for row in rows), "a dashboard refresh is over budget"


if __name__ == "__main__":
    main()
