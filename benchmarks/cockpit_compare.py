"""Side-by-side overhead of Cockpit's configurations: avionics' presets vs cockpit-for-pytorch.

    python benchmarks/cockpit_compare.py                      # full comparison (~8 min idle)
    python benchmarks/cockpit_compare.py --rounds 3 --quick   # a short smoke run
    python benchmarks/cockpit_compare.py --no-cockpit         # avionics only

Workload (the one of ``shared/research/cockpit.md`` section 5.3): a small CNN (Conv 3->16, Conv
16->32, Linear 2048->64->10; 136,874 parameters), synthetic CIFAR-shaped batches of 128 (8 fixed
batches, cycled), cross-entropy, SGD (lr 0.01, no momentum: Cockpit's fast Alpha path and its
CABS/early-stopping conditions), CPU, ``torch.set_num_threads(1)``.

Configurations: ``plain`` (no instrumentation); ``avionics-X`` = ``watch(..., preset=X)`` with
every instrument outside Cockpit's configuration switched off (activations, adaptive LR, NaN
origin, weight norms, hyper-parameters, the diagnosis facts), so both sides track the same
quantities;
``cockpit-X`` = ``Cockpit(configuration(X))`` on a BackPACK-extended model, the loop Cockpit's
documentation prescribes; ``@10`` = tracking every 10th step (else every step); and
``avionics-core`` (the default core instruments, no Cockpit) for context. ``avionics-hess_max_ev``
is HessMaxEV alone with its default (Lanczos until the error bound is met, at most
``LANCZOS_ITERATIONS`` products) and ``avionics-hess_max_ev_cap4`` the same with at most 4
products (about the cost of the former fixed default); the worker reports the products used per
tracked step. ``--configs`` runs a subset (plain is always included).

Cockpit runs in its own virtual environment, created here on first use (``--cockpit-venv``) with
``pip install "torch==<this torch>" cockpit-for-pytorch "setuptools<81"`` (Cockpit imports
``pkg_resources``, gone from setuptools 81; without the torch pin pip replaces the CPU torch
with a CUDA build). Each side runs in a worker process that holds all its configurations; the
orchestrator interleaves blocks of consecutive steps of every configuration in shuffled order,
round after round, so that machine load hits all of them alike; after each avionics block the
monitor is flushed and that time is added to the block's last step, so that one
configuration's background writer never runs during (and is never charged to) another's
block. Round 0 is warm-up. Reported:
median and mean seconds per step and their ratio to ``plain`` (of the same worker; both
workers run the same torch build), in wall-clock time and in process CPU time (all threads of
the worker, which is less sensitive to other processes on a shared machine). For every-step
tracking the median is the figure of merit (Cockpit's research numbers are medians); for
``@10`` the mean, i.e. the amortized cost.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(HERE, "out")

BATCH, CLASSES, N_BATCHES, LR, SEED = 128, 10, 8, 0.01, 0
PRESET_NAMES = ("economy", "business", "full")
SINGLE = {"hess_max_ev": None, "hess_max_ev_cap4": 4}  # HessMaxEV alone: lanczos_iterations
TARGETS = {"avionics-economy": 3.0, "avionics-full": 20.0, "avionics-economy@10": 1.2}


# ---- shared by both workers (imports torch only) ------------------------------------------------
def make_model():
    import torch
    from torch import nn

    torch.manual_seed(SEED)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(2048, 64), nn.ReLU(), nn.Linear(64, CLASSES))


def make_data():
    import torch

    g = torch.Generator().manual_seed(SEED + 1)
    return [(torch.randn(BATCH, 3, 32, 32, generator=g),
             torch.randint(0, CLASSES, (BATCH,), generator=g)) for _ in range(N_BATCHES)]


def split(config):
    name, _, every = config.partition("@")
    return name, int(every or 1)


class Plain:
    def __init__(self):
        import torch
        from torch import nn

        self.model = make_model()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR)
        self.crit = nn.CrossEntropyLoss()

    def step(self, x, y, k):
        self.opt.zero_grad()
        loss = self.crit(self.model(x), y)
        loss.backward()
        self.opt.step()

    def close(self):
        pass


class Avionics(Plain):
    def __init__(self, config, run_root):
        super().__init__()
        import instrument
        from instrument.cockpit.presets import PRESETS
        from instrument.instruments import SCHEDULABLE

        name, every = split(config)
        name = name.replace("avionics-", "")
        preset, schedules = None, None  # "core": watch()'s defaults
        if name in SINGLE:
            from instrument.cockpit import Preset

            options = {} if SINGLE[name] is None else {"lanczos_iterations": SINGLE[name]}
            preset = Preset(extra=("hess_max_ev",), **options)
            schedules = {n: None for n in SCHEDULABLE if n != "hess_max_ev"}
            schedules["hess_max_ev"] = every
        elif name != "core":
            # like for like: Cockpit's quantities only, every other instrument off
            preset = name
            schedules = {n: None for n in SCHEDULABLE if n not in PRESETS[name]}
            schedules.update({n: every for n in PRESETS[name]})
        self.monitor = instrument.watch(self.model, self.opt, run=os.path.join(run_root, config),
                                        loss_fn=self.crit, preset=preset, schedules=schedules)

    def step(self, x, y, k):
        self.opt.zero_grad()
        loss = self.crit(self.model(x), y)
        loss.backward()
        self.opt.step()
        self.monitor.log(loss=loss)

    def flush(self):
        self.monitor.flush()

    def close(self):
        self.monitor.close()

    def products(self):
        """HessMaxEV's Hessian-vector products per tracked step (None without HessMaxEV)."""
        import instrument
        from instrument.store.schema import CockpitKeys

        run = instrument.load(self.monitor.run_dir)
        if CockpitKeys.HESS_MAX_EV_ITERATIONS not in run.keys():
            return None
        return run.scalars([CockpitKeys.HESS_MAX_EV_ITERATIONS])["value"].tolist()


class CockpitRun:
    """The loop of Cockpit's examples (``examples/01_basic_fmnist.py``)."""

    def __init__(self, config):
        import torch
        from backpack import extend
        from cockpit import Cockpit
        from cockpit.utils import schedules
        from cockpit.utils.configuration import configuration
        from torch import nn

        name, every = split(config)
        self.model = extend(make_model())
        self.crit = extend(nn.CrossEntropyLoss())
        self.individual = nn.CrossEntropyLoss(reduction="none")
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR)
        quantities = configuration(name.replace("cockpit-", ""),
                                   track_schedule=schedules.linear(every))
        self.cockpit = Cockpit(self.model.parameters(), quantities=quantities)

    def step(self, x, y, k):
        self.opt.zero_grad()
        out = self.model(x)
        loss = self.crit(out, y)
        losses = self.individual(out, y)
        with self.cockpit(k, info={"batch_size": x.shape[0], "individual_losses": losses,
                                   "loss": loss, "optimizer": self.opt}):
            loss.backward(create_graph=self.cockpit.create_graph(k))
        self.opt.step()

    def close(self):
        pass


def worker(side: str) -> None:
    """Serve ``setup`` / ``run`` / ``quit`` commands (JSON lines on stdin/stdout)."""
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    data = make_data()
    runs, counters = {}, {}
    run_root = None
    out = sys.stdout
    sys.stdout = sys.stderr  # library prints must not corrupt the protocol
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "setup":
            run_root = cmd.get("run_root")
            for config in cmd["configs"]:
                if config.startswith("plain"):
                    runs[config] = Plain()
                elif side == "avionics":
                    runs[config] = Avionics(config, run_root)
                else:
                    runs[config] = CockpitRun(config)
                counters[config] = 0
            reply = {"ok": True, "torch": torch.__version__}
        elif cmd["cmd"] == "run":
            r, config = runs[cmd["config"]], cmd["config"]
            times, cpu = [], []
            for _ in range(cmd["steps"]):
                k = counters[config]
                x, y = data[k % N_BATCHES]
                c0, t0 = time.process_time(), time.perf_counter()
                r.step(x, y, k)
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
                counters[config] = k + 1
            if hasattr(r, "flush"):
                # the store writer's work on this block counts (added to its last step), and
                # it must not spill into the next block, which may be another configuration
                c0, t0 = time.process_time(), time.perf_counter()
                r.flush()
                times[-1] += time.perf_counter() - t0
                cpu[-1] += time.process_time() - c0
            gc.collect()  # untimed, after the block, as in the research benchmark
            reply = {"times": times, "cpu": cpu}
        else:
            products = {}
            for config, r in runs.items():
                r.close()
                if hasattr(r, "products"):
                    products[config] = r.products()
            reply = {"bye": True, "products": products}
        out.write(json.dumps(reply) + "\n")
        out.flush()
        if cmd["cmd"] == "quit":
            return


# ---- orchestration -----------------------------------------------------------------------------
class Worker:
    def __init__(self, python, side, env=None):
        self.proc = subprocess.Popen([python, os.path.abspath(__file__), "--worker", side],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=env, cwd=ROOT)

    def ask(self, **cmd):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark worker exited (code {self.proc.wait()})")
        return json.loads(line)

    def close(self):
        try:
            return self.ask(cmd="quit")
        finally:
            self.proc.wait(timeout=120)


def ensure_cockpit_venv(path: str) -> str:
    """The python of a venv with cockpit-for-pytorch (created on first use)."""
    import torch

    python = os.path.join(path, "bin", "python")
    probe = [python, "-c", "import cockpit, backpack, torch; print(torch.__version__)"]
    if os.path.exists(python) and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"creating the Cockpit venv at {path} (a few minutes) ...", flush=True)
    shutil.rmtree(path, ignore_errors=True)
    subprocess.run([_base_python(), "-m", "venv", path], check=True)
    pin = torch.__version__.split("+")[0]
    subprocess.run([python, "-m", "pip", "install", "-q", f"torch=={pin}",
                    "cockpit-for-pytorch", "setuptools<81"], check=True)
    out = subprocess.run(probe, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"cockpit does not import in {path}:\n{out.stderr}")
    return python


def _base_python() -> str:
    """The interpreter this venv was made from (a venv's python cannot host another venv's
    pip cleanly on every platform)."""
    return getattr(sys, "_base_executable", None) or sys.executable


def summarize(times: dict, rounds_skip: int, plain_of: dict) -> list:
    rows = []
    for config, per_round in times.items():
        ts = [t for r in per_round[rounds_skip:] for t in r]
        if not ts:
            continue
        rows.append({"config": config, "steps": len(ts), "median_s": statistics.median(ts),
                     "mean_s": statistics.fmean(ts)})
    by = {r["config"]: r for r in rows}
    for r in rows:
        base = by.get(plain_of[r["config"]])
        if base:
            r["x_median"] = r["median_s"] / base["median_s"]
            r["x_mean"] = r["mean_s"] / base["mean_s"]
    return rows


def table(rows: list) -> str:
    lines = ["| configuration | steps | median s/step | x plain (median) | mean s/step | "
             "x plain (mean) | target |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        target = TARGETS.get(r["config"])
        key = "x_mean" if "@" in r["config"] else "x_median"
        verdict = ""
        if target is not None and key in r:
            verdict = f"<= {target} ({'met' if r[key] <= target else 'NOT met'})"
        lines.append(f"| {r['config']} | {r['steps']} | {r['median_s']:.4f} | "
                     f"{r.get('x_median', float('nan')):.2f} | {r['mean_s']:.4f} | "
                     f"{r.get('x_mean', float('nan')):.2f} | {verdict} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", choices=("avionics", "cockpit"), help=argparse.SUPPRESS)
    p.add_argument("--rounds", type=int, default=6, help="rounds, the first is warm-up")
    p.add_argument("--block", type=int, default=4, help="steps per block (every-step configs)")
    p.add_argument("--block10", type=int, default=10, help="steps per block (@10 configs)")
    p.add_argument("--no-cockpit", action="store_true", help="skip cockpit-for-pytorch")
    p.add_argument("--quick", action="store_true", help="economy and full only")
    p.add_argument("--configs", nargs="*", help="run only these configurations (and plain)")
    p.add_argument("--cockpit-venv", default=os.path.join(OUT, "cockpit-venv"))
    p.add_argument("--out", default=os.path.join(OUT, "cockpit_compare.json"))
    p.add_argument("--seed", type=int, default=0, help="seed of the block order")
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0
    names = ("economy", "full") if args.quick else PRESET_NAMES
    ours = ["plain", "avionics-core"] + [f"avionics-{n}" for n in names + tuple(SINGLE)] + \
        [f"avionics-{n}@10" for n in names + tuple(SINGLE)]
    theirs = [] if args.no_cockpit else (["plain(cockpit venv)"] + [f"cockpit-{n}" for n in names]
                                         + [f"cockpit-{n}@10" for n in names])
    if args.configs:
        unknown = set(args.configs) - set(ours) - set(theirs)
        if unknown:
            p.error(f"unknown configurations {sorted(unknown)}; choose from {ours + theirs}")
        ours = [c for c in ours if c == "plain" or c in args.configs]
        theirs = [c for c in theirs if c.startswith("plain") or c in args.configs]
        theirs = theirs if len(theirs) > 1 else []
    os.makedirs(OUT, exist_ok=True)
    run_root = tempfile.mkdtemp(prefix="cockpit_compare_", dir=OUT)
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    workers = {"avionics": Worker(sys.executable, "avionics", env)}
    info = {"avionics_torch": workers["avionics"].ask(cmd="setup", configs=ours,
                                                      run_root=run_root)["torch"]}
    if theirs:
        python = ensure_cockpit_venv(args.cockpit_venv)
        cenv = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        workers["cockpit"] = Worker(python, "cockpit", cenv)
        info["cockpit_torch"] = workers["cockpit"].ask(cmd="setup", configs=theirs)["torch"]
    side = {c: "avionics" for c in ours} | {c: "cockpit" for c in theirs}
    plain_of = {c: "plain" for c in ours} | {c: "plain(cockpit venv)" for c in theirs}
    times = {c: [] for c in side}
    cpu = {c: [] for c in side}
    rng = random.Random(args.seed)
    t_start = time.time()
    try:
        for rnd in range(args.rounds):
            order = list(side)
            rng.shuffle(order)
            for config in order:
                steps = args.block10 if "@" in config else args.block
                reply = workers[side[config]].ask(cmd="run", config=config, steps=steps)
                times[config].append(reply["times"])
                cpu[config].append(reply["cpu"])
            print(f"round {rnd + 1}/{args.rounds} done ({time.time() - t_start:.0f} s)",
                  flush=True)
    finally:
        products = {}
        for w in workers.values():
            products.update(w.close().get("products", {}))
        shutil.rmtree(run_root, ignore_errors=True)
    skip = 1 if args.rounds > 1 else 0
    rows = summarize(times, skip, plain_of)
    cpu_rows = summarize(cpu, skip, plain_of)
    with open(args.out, "w") as f:
        json.dump({"info": info, "args": vars(args), "summary": rows, "summary_cpu": cpu_rows,
                   "raw": times, "raw_cpu": cpu, "load_avg": os.getloadavg(),
                   "hess_max_ev_products": products}, f, indent=1)
    print(f"\ntorch {info}; load average at the end {os.getloadavg()}\n")
    print("Wall-clock time per step:\n")
    print(table(rows))
    print("\nProcess CPU time per step (all threads; less sensitive to other load):\n")
    print(table(cpu_rows))
    for config, n in products.items():
        if n:
            print(f"{config}: HessMaxEV products per tracked step: mean "
                  f"{statistics.fmean(n):.1f}, range {min(n):.0f}-{max(n):.0f} ({len(n)} steps)")
    print(f"\nraw per-step times: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
