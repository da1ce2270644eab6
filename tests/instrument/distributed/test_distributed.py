"""avionics under torch.distributed: 2 CPU ranks (gloo) per test, compared with a brute-force
single-process reference on the global batch (plain torch) and with a single-process avionics
run. Harness: avdist_harness.py (forkserver, FileStore, 1 thread per child, timeouts)."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import avdist_bodies as bodies  # noqa: E402
from avdist_bodies import Case  # noqa: E402
from avdist_harness import run_ranks  # noqa: E402

import instrument  # noqa: E402
from instrument.store import schema  # noqa: E402
from instrument.store.schema import (
    DKeys,  # noqa: E402
    Keys,  # noqa: E402
)

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(900),
              pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                 reason="needs torch.distributed with gloo")]

RTOL = 1e-5
ACT_ATOL = 1e-6  # activation sums accumulate in float32: near-zero means need an absolute slack
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


# ---- helpers ------------------------------------------------------------------------------------
def launch(case: Case, tmp_path, world: int = 2):
    run = str(tmp_path / "run")
    outs = run_ranks(bodies.train, case, run, world=world, tmp_dir=tmp_path)
    return run, outs


def layer_table(run, key):
    df = run.layers([key])
    return df.pivot(index="step", columns="layer", values="value")


def scalar_series(run, key):
    df = run.scalars([key])
    return dict(zip(df.step, df.value))


def close(got, want, rtol=RTOL, atol=0.0):
    return bool(np.isclose(got, want, rtol=rtol, atol=atol, equal_nan=True))


def check_against_reference(run_dir, ref, case, *, norms=True):
    """Every per-parameter and per-module value, the loss and per-rank losses vs brute force."""
    run = instrument.load(run_dir)
    bad = []
    if norms:
        bad += norm_differences(run, ref)
    bad += activation_differences(run, ref)
    bad += loss_differences(run, ref)
    assert not bad, f"{len(bad)} values differ from the single-process reference: {bad[:8]}"
    for key in (Keys.ACT_DEAD_FRAC, Keys.ACT_UNIT_OBSERVATIONS):
        table = layer_table(run, key)
        assert table.isna().all().all(), "dead units cannot be combined across ranks: not recorded"
    return run


def norm_differences(run, ref) -> list:
    bad = []
    for key in (Keys.GRAD_NORM, Keys.WEIGHT_NORM, Keys.UPDATE_NORM):
        table = layer_table(run, key)
        for step, rec in enumerate(ref["steps"]):
            for name in ref["params"]:
                got, want = table.loc[step, name], rec[key][name]
                if not close(got, want):
                    bad.append((key, step, name, got, want))
    totals = scalar_series(run, Keys.GRAD_NORM_TOTAL)
    for step, rec in enumerate(ref["steps"]):
        want = math.sqrt(sum(v * v for v in rec["grad_norm"].values()))
        if not close(totals[step], want):
            bad.append(("grad_norm/total", step, "", totals[step], want))
    return bad


def activation_differences(run, ref) -> list:
    bad = []
    stat_keys = {"mean": Keys.ACT_MEAN, "std": Keys.ACT_STD, "min": Keys.ACT_MIN,
                 "max": Keys.ACT_MAX, "zero_frac": Keys.ACT_ZERO_FRAC,
                 "nonfinite": Keys.ACT_NONFINITE, "saturation_frac": Keys.ACT_SATURATION_FRAC}
    for stat, key in stat_keys.items():
        table = layer_table(run, key)
        for step, rec in enumerate(ref["steps"]):
            for name in ref["modules"]:
                got, want = table.loc[step, name], rec["act"][name][stat]
                if not close(got, want, atol=ACT_ATOL):
                    bad.append((key, step, name, got, want))
    return bad


def loss_differences(run, ref) -> list:
    bad = []
    loss = scalar_series(run, Keys.LOSS)
    rank_loss = layer_table(run, Keys.RANK_LOSS)
    for step, rec in enumerate(ref["steps"]):
        if not close(loss[step], rec["loss"]):
            bad.append(("loss", step, "", loss[step], rec["loss"]))
        for r, want in enumerate(rec["rank_loss"]):
            if not close(rank_loss.loc[step, str(r)], want):
                bad.append(("rank/loss", step, r, rank_loss.loc[step, str(r)], want))
    return bad


def single_process_run(case: Case, tmp_path):
    """The same training with avionics in one process on the global batch."""
    model = bodies.make_model()
    opt = bodies.make_optimizer(case, model.parameters())
    mon = instrument.watch(model, opt, run=str(tmp_path / "single"), strict=True,
                           schedules=case.schedules)
    for step in range(case.steps):
        opt.zero_grad(set_to_none=True)
        for micro in range(case.accumulate):
            x, y = bodies.batch(step, micro, case)
            loss = torch.nn.functional.mse_loss(model(x), y)
            (loss / case.accumulate).backward()
            mon.log(loss=loss)
        opt.step()
    mon.close()
    return instrument.load(mon.run_dir)


def check_every_key(dist_run, single, *, skip=()):
    """Every series the single-process run records, the distributed run records equally."""
    skip = set(skip) | {Keys.ACT_DEAD_FRAC, Keys.ACT_UNIT_OBSERVATIONS}
    for kind in (schema.SCALAR, schema.LAYER):
        keys = [k for k in single.keys(kind) if k not in skip]
        assert keys
        assert set(keys) <= set(dist_run.keys(kind)), set(keys) - set(dist_run.keys(kind))
        get = (lambda r: r.scalars(keys)) if kind == schema.SCALAR else (lambda r: r.layers(keys))
        cols = ["key", "step"] + (["layer"] if kind == schema.LAYER else [])
        a = get(single).set_index(cols)["value"].sort_index()
        b = get(dist_run).set_index(cols)["value"].reindex(a.index)
        ok = np.isclose(b.to_numpy(), a.to_numpy(), rtol=RTOL, atol=ACT_ATOL, equal_nan=True)
        assert ok.all(), a[~ok].to_frame("single").join(b[~ok].to_frame("distributed")).head(10)


def check_one_writer(run_dir, outs, per_rank=False):
    """Only rank 0 wrote the run store; other ranks wrote nothing but their own stores."""
    run = instrument.load(run_dir)
    assert outs[0]["writer"] == os.path.join(run_dir, schema.STORE_FILE)
    meta = run.meta
    assert meta["host"]["pid"] == outs[0]["pid"]
    facts = meta["distributed"]
    assert facts["writer_rank"] == 0 and facts["world_size"] == len(outs)
    assert [r["rank"] for r in facts["ranks"]] == list(range(len(outs)))
    assert {r["pid"] for r in facts["ranks"]} == {o["pid"] for o in outs}
    for r in facts["ranks"]:
        assert r["host"] and r["local_rank"] == r["rank"] and r["node"] == 0
    for o in outs[1:]:
        if per_rank:
            assert o["writer"].endswith(os.path.join("ranks", f"rank-{o['rank']:05d}", schema.STORE_FILE))
        else:
            assert o["writer"] is None
    top = sorted(os.listdir(run_dir))
    assert [f for f in top if f.endswith(".db")] == [schema.STORE_FILE]
    assert not [d for d in os.listdir(os.path.dirname(run_dir)) if d.startswith("run-")]
    assert meta["status"] == schema.FINISHED
    return run


# ---- DDP ---------------------------------------------------------------------------------------
def test_ddp_matches_single_process_with_one_collective_per_step(tmp_path):
    case = Case("ddp", steps=3, count_collectives=True)
    run_dir, outs = launch(case, tmp_path)
    ref = bodies.reference(case)
    run = check_against_reference(run_dir, ref, case)
    check_every_key(run, single_process_run(case, tmp_path))
    check_one_writer(run_dir, outs)
    for o in outs:  # exactly one Python-level collective per step on every rank, all ours
        assert o["calls"] == ["all_gather_single"] * case.steps, o["calls"]
        assert o["collectives"] == case.steps
    assert outs[0]["param_names"] == ref["params"]  # 'module.' prefix stripped
    assert outs[0]["module_names"] == ref["modules"]
    times = layer_table(run, Keys.RANK_STEP_TIME)
    assert list(times.columns) == ["0", "1"] and (times.to_numpy() > 0).all()
    spread = scalar_series(run, Keys.RANK_STEP_TIME_SPREAD)
    for step in range(case.steps):  # layer series are float32: a difference of close times
        row = times.loc[step]           # needs an absolute slack of their rounding
        assert close(spread[step], row.max() - row.min(), atol=1e-6 * row.max())
    layers = {layer["name"]: layer for layer in run.meta["model"]["layers"]}
    assert layers["0"]["params"] == bodies.IN * bodies.HIDDEN + bodies.HIDDEN


def test_ddp_adam_and_per_rank_stores(tmp_path):
    # adaptive_lr runs every 10th step by default: every step here, to compare each one
    case = Case("ddp", optimizer="adam", steps=3, per_rank=True,
                schedules={"activations": 1, "adaptive_lr": 1})
    run_dir, outs = launch(case, tmp_path)
    ref = bodies.reference(case)
    run = check_against_reference(run_dir, ref, case)
    check_one_writer(run_dir, outs, per_rank=True)
    quant = {k: layer_table(run, k) for k in (Keys.ADAPTIVE_LR_P10, Keys.ADAPTIVE_LR_MEDIAN,
                                               Keys.ADAPTIVE_LR_P90)}
    for step, rec in enumerate(ref["steps"]):
        for name in ref["params"]:
            got = [quant[k].loc[step, name] for k in quant]
            assert np.allclose(got, rec["adaptive_lr"][name], rtol=1e-4), (step, name)
    for r in range(2):  # each rank's own store: its loss, its dead units, its step times
        own = instrument.load(os.path.join(run_dir, "ranks", f"rank-{r:05d}"))
        assert own.meta["distributed"]["scope"] == "rank"
        assert own.meta["distributed"]["rank"]["rank"] == r
        loss = scalar_series(own, Keys.LOSS)
        dead = layer_table(own, Keys.ACT_DEAD_FRAC)
        obs = layer_table(own, Keys.ACT_UNIT_OBSERVATIONS)
        for step, rec in enumerate(ref["steps"]):
            assert close(loss[step], rec["rank_loss"][r])
            for name in ref["modules"]:
                assert close(dead.loc[step, name], rec["rank_dead"][r][name]), (r, step, name)
                assert obs.loc[step, name] == rec["rank_obs"][r][name], (r, step, name)
        assert len(scalar_series(own, Keys.RANK_STEP_TIME)) == case.steps


def test_ddp_gradient_accumulation_with_no_sync(tmp_path):
    case = Case("ddp", steps=3, accumulate=3, batch=12)
    run_dir, outs = launch(case, tmp_path)
    check_against_reference(run_dir, bodies.reference(case), case)
    assert outs[0]["steps"] == case.steps


def test_a_rank_that_measured_nothing_still_joins_the_collective(tmp_path):
    """Rank 1 logs nothing at odd steps and every other instrument is off: it must still take
    part in each step's collective (else rank 0 waits forever), and the loss at those steps is
    rank 0's alone, the only rank that logged it."""
    case = Case("ddp", steps=4, rank1_logs_every=2, schedules={"*": None})
    run_dir, outs = launch(case, tmp_path)
    ref = bodies.reference(case)
    loss = scalar_series(instrument.load(run_dir), Keys.LOSS)
    for step, rec in enumerate(ref["steps"]):
        want = rec["loss"] if step % 2 == 0 else rec["rank_loss"][0]
        assert close(loss[step], want), (step, loss[step], want)
    assert [o["collectives"] for o in outs] == [case.steps, case.steps]


def test_scalars_combine_by_name_whatever_each_rank_logged(tmp_path):
    case = Case("ddp", steps=2, extra_logs=True)
    run_dir, _ = launch(case, tmp_path)
    run = instrument.load(run_dir)
    assert scalar_series(run, "a") == {0: 1.5, 1: 1.5}  # ranks log 1 and 2
    assert scalar_series(run, "b") == {0: 15.0, 1: 15.0}  # logged in another order on rank 1
    assert scalar_series(run, "only_rank0") == {1: 7.0}
    assert "only_rank1" not in run.keys(schema.SCALAR)  # rank 0 cannot name it


def test_an_instrument_failing_on_one_rank_is_not_recorded_from_then_on(tmp_path):
    """Rank 1's activation instrument fails at step 1 (fail-open): rank 0's own statistics are
    not the global ones any more, so the run store stops recording them and says why."""
    case = Case("ddp", steps=3, break_on_rank1="activations")
    run_dir, _ = launch(case, tmp_path)
    run = instrument.load(run_dir)
    mean = layer_table(run, Keys.ACT_MEAN)
    assert list(mean.index) == [0]  # combined at step 0 only
    ref = bodies.reference(case)
    assert close(mean.loc[0, "0"], ref["steps"][0]["act"]["0"]["mean"], atol=ACT_ATOL)
    errors = run.events([schema.INSTRUMENT_ERROR])
    assert len(errors) == 1 and errors.iloc[0]["rank"] == 1 and errors.iloc[0].step == 1
    assert "activations" in errors.iloc[0].message
    assert len(scalar_series(run, Keys.LOSS)) == case.steps  # the rest goes on


def test_many_scalar_keys_in_different_orders_and_the_capacity(tmp_path):
    """70 keys, logged in opposite orders by the two ranks: with the loss, each rank keeps 63
    (KEYED_SLOTS = 64) and drops the rest with a warning. Keys both ranks kept (k7..k62)
    combine by name across both reserved sections; keys that only rank 0 kept may have been
    dropped by rank 1, so they are not recorded (rather than recorded as rank 0's alone)."""
    from instrument.instruments.scalars import KEYED_SLOTS

    case = Case("ddp", steps=1, many_keys=70, schedules={"*": None})
    run_dir, _ = launch(case, tmp_path)
    scalars = set(instrument.load(run_dir).keys(schema.SCALAR))
    recorded = {k for k in scalars if k.startswith("k")}
    kept = KEYED_SLOTS - 1  # the loss took the first row on both ranks
    assert recorded == {f"k{k}" for k in range(70 - kept, kept)}  # k7..k62
    run = instrument.load(run_dir)
    for key in recorded:  # rank 0 logs k, rank 1 logs 2k: mean 1.5 k
        assert close(scalar_series(run, key)[0], 1.5 * int(key[1:])), key
    assert close(scalar_series(run, Keys.LOSS)[0], bodies.reference(case)["steps"][0]["loss"])
    notes = run.events([schema.DISTRIBUTED])
    assert notes.message.str.contains("more than 64 distinct scalar keys").any()


def test_nan_event_reaches_rank_0_with_the_rank_where_it_began(tmp_path):
    case = Case("ddp", steps=3, nan_at=(1, 1), per_rank=True)
    run_dir, _ = launch(case, tmp_path)
    events = instrument.load(run_dir).events([schema.NONFINITE])
    first = events[events.step == 1]
    act = first[[e.get("tensor") == "activation" for e in first.evidence]]
    loss = first[[e.get("tensor") == "loss" for e in first.evidence]]
    assert len(act) == 1 and len(loss) == 1
    for _, e in pd_rows(act) + pd_rows(loss):
        assert e["rank"] == 1 and e["evidence"]["ranks"] == [1], e
        assert "began on rank(s) [1]" in e["message"]
    assert act.iloc[0].layer == "0"  # the first module on rank 1's poisoned row
    own = instrument.load(os.path.join(run_dir, "ranks", "rank-00001")).events([schema.NONFINITE])
    assert {(int(s), r) for s, r in zip(own.step, own["rank"])} >= {(1, 1)}
    clean = instrument.load(os.path.join(run_dir, "ranks", "rank-00000")).events([schema.NONFINITE])
    assert (clean.step >= 2).all()  # rank 0's own data only went bad after the update


def pd_rows(df):
    return [(i, row.to_dict()) for i, row in df.iterrows()]


def test_the_rank_panel_names_a_straggler_in_a_real_run(tmp_path):
    """Rank 1 sleeps 0.2 s between steps: its between-steps time shows it, rank 0 waits in
    the collective (sync time), and the rank panel's straggler test names rank 1 from the store.

    Only the between-steps time is asserted on: the sleep dwarfs any scheduling noise of a
    loaded machine, while millisecond compute times of a tiny model do not (a busy core can
    make either rank's compute look slow)."""
    from dashboard.panels import ranks as panel

    sleep = 0.2
    case = Case("ddp", steps=6, sleep_rank1=sleep, schedules={"*": None})
    run_dir, _ = launch(case, tmp_path)
    run = instrument.load(run_dir)
    step_time = layer_table(run, Keys.RANK_STEP_TIME).iloc[1:]  # step 0 has no previous step
    compute = layer_table(run, Keys.RANK_COMPUTE_TIME).iloc[1:]
    between = layer_table(run, Keys.RANK_BETWEEN_TIME).iloc[1:]
    stats = panel.rank_stats(step_time.to_numpy(), compute.to_numpy(), between.to_numpy())
    assert stats["between"][1] > sleep > stats["between"][0] + sleep / 2
    sync = layer_table(run, Keys.RANK_SYNC_TIME).iloc[2:]
    assert sync["0"].median() > sync["1"].median()  # rank 0 waited for rank 1
    assert panel.stragglers(stats["between"]) == [1]


# ---- FSDP2, HSDP, FSDP1 ----------------------------------------------------------------------
def test_fsdp2_uneven_and_empty_shards_match_single_process(tmp_path):
    case = Case("fsdp2", steps=3)
    run_dir, outs = launch(case, tmp_path)
    ref = bodies.reference(case)
    run = check_against_reference(run_dir, ref, case)
    check_every_key(run, single_process_run(case, tmp_path))
    check_one_writer(run_dir, outs)
    facts = run.meta["distributed"]
    assert facts["wrapper"] == "fsdp2" and facts["sharded_parameters"] == len(ref["params"])
    assert run.meta["model"]["parameters"] == sum(p.numel() for p in bodies.make_model().parameters())


def test_hsdp_2x1_mesh_reduces_over_the_shard_dim_only(tmp_path):
    case = Case("hsdp", optimizer="adam", steps=3, accumulate=2)
    run_dir, outs = launch(case, tmp_path)
    ref = bodies.reference(case)
    run = check_against_reference(run_dir, ref, case)
    check_every_key(run, single_process_run(case, tmp_path))
    assert run.meta["distributed"]["wrapper"] == "hsdp"
    assert run.meta["distributed"]["mesh"]["shape"] == [2, 1]


def test_fsdp1_use_orig_params(tmp_path):
    case = Case("fsdp1", steps=3, accumulate=2)
    run_dir, outs = launch(case, tmp_path)
    ref = bodies.reference(case)
    run = check_against_reference(run_dir, ref, case)
    # grad_stale (zero_grad instrument): FSDP1 accumulates into its flat parameters, which the
    # per-parameter hooks do not see; it records "not observed" (NaN) there
    check_every_key(run, single_process_run(case, tmp_path), skip=(DKeys.GRAD_STALE,))
    assert outs[0]["param_names"] == ref["params"]  # '_fsdp_wrapped_module.' stripped
    assert run.meta["distributed"]["wrapper"] == "fsdp1"


def test_fsdp1_flat_params_degrade_with_a_note(tmp_path):
    case = Case("fsdp1-flat", steps=2)
    run_dir, outs = launch(case, tmp_path)
    ref = bodies.reference(case)
    run = instrument.load(run_dir)
    notes = run.events([schema.DISTRIBUTED]).message.tolist()
    assert any("use_orig_params=True" in n for n in notes), notes
    table = layer_table(run, Keys.GRAD_NORM)
    assert all(name.endswith("_flat_param") for name in table.columns)
    total = scalar_series(run, Keys.GRAD_NORM_TOTAL)
    for step, rec in enumerate(ref["steps"]):  # exact, per FSDP unit: Linear 0, 2, 4
        for unit in ("0", "2", "4"):
            want = math.hypot(rec["grad_norm"][f"{unit}.weight"], rec["grad_norm"][f"{unit}.bias"])
            assert close(table.loc[step, f"{unit}._flat_param"], want)
        assert close(total[step], math.sqrt(sum(v * v for v in rec["grad_norm"].values())))


# ---- no process group / one rank -----------------------------------------------------------------
def test_a_world_of_one_is_a_single_process_run(tmp_path):
    """DDP over one rank: no session, no collective, but the names are the model's own."""
    outs = run_ranks(bodies.train, Case("ddp", steps=2), str(tmp_path / "run"), world=1,
                     tmp_dir=tmp_path)
    run = instrument.load(str(tmp_path / "run"))
    assert outs[0]["collectives"] == 0 and "distributed" not in run.meta
    assert Keys.RANK_STEP_TIME not in run.keys(schema.LAYER)
    assert run.layer_names(Keys.GRAD_NORM) == [n for n, _ in bodies.make_model().named_parameters()]


# ---- a real torchrun launch ---------------------------------------------------------------------
def test_torchrun_demo_smoke(tmp_path):
    run_dir = str(tmp_path / "demo")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           os.path.join(REPO, "demos", "ddp_demo.py"), "--out", run_dir, "--steps", "6",
           "--per-rank", "--threads", "1", "--synthetic"]
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env,
                          start_new_session=True, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = instrument.load(run_dir)
    assert run.meta["status"] == schema.FINISHED
    facts = run.meta["distributed"]
    assert facts["world_size"] == 2 and facts["backend"] == "gloo" and facts["wrapper"] == "ddp"
    assert facts.get("run_id") is not None  # torchrun's environment was read
    assert sorted(run.step_range()) == [0, 5]
    assert len(scalar_series(run, Keys.LOSS)) == 6
    for r in range(2):
        own = instrument.load(os.path.join(run_dir, "ranks", f"rank-{r:05d}"))
        assert own.meta["distributed"]["rank"]["rank"] == r
        assert len(scalar_series(own, Keys.RANK_STEP_TIME)) == 6
