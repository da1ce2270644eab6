"""Which engine is faster for each Cockpit building block, measured (the choices in
docs/cockpit.md): BackPACK, torch.func and avionics' own engines on the benchmark CNN.

    python benchmarks/cockpit_engines.py [--rounds 8]

Every candidate runs one training step's worth of work on the same batch (CPU, one thread);
candidates are interleaved in shuffled order per round, round 0 is warm-up, and the median
CPU time of the process per call is reported (less sensitive to other load than wall time).
The avionics rows are whole training steps with only that instrument on, minus ``plain``.
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import statistics
import sys
import tempfile
import time
import warnings

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.cockpit_compare import BATCH, LR, make_data, make_model  # noqa: E402


def candidates(tmp):
    from backpack import backpack, extend
    from backpack.extensions import BatchGrad, DiagGGNExact, DiagHessian
    from torch.func import functional_call, grad, jvp, vmap

    import instrument

    x, y = make_data()[0]
    crit = nn.CrossEntropyLoss()
    model = make_model()
    params = dict(model.named_parameters())
    ext = extend(copy.deepcopy(model))
    ext_crit = extend(nn.CrossEntropyLoss())
    out = {}

    def plain():
        for p in model.parameters():
            p.grad = None
        crit(model(x), y).backward()
    out["plain forward+backward"] = plain

    def backpack_ext(extension):
        def run():
            for p in ext.parameters():
                p.grad = None
            with backpack(extension()):
                ext_crit(ext(x), y).backward()
        return run
    out["BackPACK BatchGrad (forward+backward)"] = backpack_ext(BatchGrad)
    out["BackPACK DiagGGNExact (forward+backward)"] = backpack_ext(DiagGGNExact)
    out["BackPACK DiagHessian (forward+backward)"] = backpack_ext(DiagHessian)

    def loss_one(p, xi, yi):
        return crit(functional_call(model, p, (xi[None],)), yi[None])
    per_sample = vmap(grad(loss_one), in_dims=(None, 0, 0))
    out["torch.func vmap(grad) individual gradients"] = lambda: per_sample(params, x, y)

    ps = list(model.parameters())
    state = {}

    def hvp_setup():
        state["g"] = torch.autograd.grad(crit(model(x), y), ps, create_graph=True)
        state["v"] = [torch.randn_like(p) for p in ps]
    hvp_setup()
    out["HVP: double backward (one product)"] = lambda: torch.autograd.grad(
        state["g"], ps, state["v"], retain_graph=True)
    loss_all = lambda p: crit(functional_call(model, p, (x,)), y)  # noqa: E731
    tangents = {n: torch.randn_like(p) for n, p in params.items()}
    out["HVP: torch.func jvp(grad) (forward+one product)"] = lambda: jvp(
        grad(loss_all), (params,), (tangents,))

    def avionics(names):
        from instrument.instruments import SCHEDULABLE

        m = make_model()
        opt = torch.optim.SGD(m.parameters(), lr=LR)
        own = nn.CrossEntropyLoss()  # its own criterion: the monitor hooks it
        sched = {n: None for n in SCHEDULABLE} | {n: 1 for n in names}
        mon = instrument.watch(m, opt, run=os.path.join(tmp, "_".join(names)), loss_fn=own,
                               schedules=sched)

        def run():
            opt.zero_grad()
            loss = own(m(x), y)
            loss.backward()
            opt.step()
            mon.log(loss=loss)
        run.monitor = mon
        return run

    def plain_step():
        m = make_model()
        opt = torch.optim.SGD(m.parameters(), lr=LR)

        def run():
            opt.zero_grad()
            crit(m(x), y).backward()
            opt.step()
        return run
    out["step: plain"] = plain_step()
    for label, names in (("gradient tests", ("norm_test", "inner_test", "ortho_test")),
                         ("tests + GradHist1d", ("norm_test", "inner_test", "ortho_test",
                                                 "grad_hist_1d")),
                         ("GradHist2d", ("grad_hist_2d",)),
                         ("Alpha", ("alpha",)),
                         ("HessTrace (GGN diagonal)", ("hess_trace",)),
                         ("HessMaxEV", ("hess_max_ev",))):
        out[f"step: avionics {label}"] = avionics(names)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=8)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        runs = candidates(tmp)
        times = {k: [] for k in runs}
        rng = random.Random(0)
        for rnd in range(args.rounds):
            order = list(runs)
            rng.shuffle(order)
            for k in order:
                c0 = time.process_time()
                runs[k]()
                if rnd:
                    times[k].append(time.process_time() - c0)
        for fn in runs.values():
            if hasattr(fn, "monitor"):
                fn.monitor.close()
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    base = med["plain forward+backward"]
    step = med["step: plain"]
    print(f"batch {BATCH}, CPU time per call (median of {args.rounds - 1} rounds), ms\n")
    print("| candidate | ms | x plain forward+backward | added to a step |")
    print("|---|---|---|---|")
    for k, v in med.items():
        added = f"+{v - step:.0f}" if k.startswith("step: avionics") else ""
        print(f"| {k} | {v:.1f} | {v / base:.2f} | {added} |")


if __name__ == "__main__":
    main()
