"""Step counting, log() attribution, gradient accumulation and schedules, on real loops."""

import pytest
import torch
from torch import nn

import instrument
from instrument.monitor import UNSTEPPED_FORWARDS
from instrument.store.schema import Keys
from tests.helpers import batches, layer_frame, mlp, scalar_frame, train, watch


def test_log_before_or_after_step_lands_on_the_same_step(run_dir, tmp_path):
    for before, d in ((False, run_dir), (True, str(tmp_path / "b"))):
        model = mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        mon = watch(model, opt, d)
        losses = train(model, opt, batches(5), monitor=mon, log_before_step=before)
        mon.close()
        run = instrument.load(mon.run_dir)
        logged = scalar_frame(run, Keys.LOSS)
        assert sorted(logged) == [0, 1, 2, 3, 4]
        for step, loss in enumerate(losses):
            assert logged[step] == pytest.approx(loss.item(), rel=1e-6)
        assert sorted(scalar_frame(run, Keys.GRAD_NORM_TOTAL)) == [0, 1, 2, 3, 4]


def test_gradient_accumulation_is_one_step_and_logs_are_averaged(run_dir):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = watch(model, opt, run_dir)
    data = batches(12)
    crit = nn.CrossEntropyLoss()
    expected = []
    for i in range(0, 12, 4):
        opt.zero_grad()
        micro = []
        for x, y in data[i:i + 4]:
            loss = crit(model(x), y)
            (loss / 4).backward()
            mon.log(loss=loss)  # once per micro-batch
            micro.append(loss.item())
        opt.step()
        expected.append(sum(micro) / 4)
    mon.close()
    logged = scalar_frame(instrument.load(mon.run_dir), Keys.LOSS)
    assert sorted(logged) == [0, 1, 2]
    for step, want in enumerate(expected):
        assert logged[step] == pytest.approx(want, rel=1e-6)


def test_evaluation_forwards_do_not_start_a_step(run_dir):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = watch(model, opt, run_dir)
    crit = nn.CrossEntropyLoss()
    val_x, val_y = batches(1, seed=9)[0]
    for i, (x, y) in enumerate(batches(4)):
        opt.zero_grad()
        crit(model(x), y).backward()
        opt.step()
        with torch.no_grad():
            val = crit(model(val_x), val_y)
        mon.log(val_loss=val, step_number=float(i))
    mon.close()
    run = instrument.load(mon.run_dir)
    logged = scalar_frame(run, "step_number")
    assert logged == {0: 0.0, 1: 1.0, 2: 2.0, 3: 3.0}
    # activation statistics come from the training forward only (batch 16, not the val batch)
    means = layer_frame(run, Keys.ACT_MEAN)
    assert sorted(means) == [0, 1, 2, 3]


def test_python_numbers_tensors_and_dicts(run_dir):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = watch(model, opt, run_dir)
    x, y = batches(1)[0]
    nn.CrossEntropyLoss()(model(x), y).backward()
    opt.step()
    mon.log({"val/acc": 0.5, "n": 3}, t=torch.tensor([2.0]), i=torch.tensor(7))
    mon.log(t=torch.tensor(4.0, dtype=torch.float64))
    mon.close()
    sc = instrument.load(mon.run_dir).scalars()
    got = dict(zip(sc["key"], sc["value"]))
    assert got["val/acc"] == 0.5 and got["n"] == 3 and got["i"] == 7 and got["t"] == 3.0


@pytest.mark.parametrize("bad, err", [
    ({"loss": torch.ones(3)}, "real scalar"),
    ({"loss": "high"}, "number or a one-element tensor"),
    ({"grad_norm/total": 1.0}, "records itself"),
    ({"lr/0": 1.0}, "records itself"),
    ({"input/mean": 123}, "records itself"),  # the input_stats instrument's fact
    ({"criterion/loss": 1.0}, "records itself"),
    ({"grad_norm/total_before_clip": 1.0}, "records itself"),
    ({"cockpit/norm_test/total": 1.0}, "records itself"),
])
def test_log_rejects_bad_values(run_dir, bad, err):
    model = mlp()
    with instrument.watch(model, torch.optim.SGD(model.parameters(), lr=0.1), run=run_dir) as m:
        with pytest.raises((TypeError, ValueError), match=err):
            m.log(bad)


def test_schedules_per_instrument(run_dir):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    mon = instrument.watch(model, opt, run=run_dir, strict=True, schedules={
        "activations": instrument.every(3), "grad_norm": instrument.every(2, offset=1),
        "update": None, "weight_norm": lambda s: s in (0, 4)})
    train(model, opt, batches(7), monitor=mon)
    mon.close()
    run = instrument.load(mon.run_dir)
    assert sorted(layer_frame(run, Keys.ACT_MEAN)) == [0, 3, 6]
    assert sorted(layer_frame(run, Keys.GRAD_NORM)) == [1, 3, 5]
    assert sorted(layer_frame(run, Keys.WEIGHT_NORM)) == [0, 4]
    assert Keys.UPDATE_NORM not in run.keys()
    assert sorted(scalar_frame(run, Keys.LOSS)) == list(range(7))  # log() is always recorded
    assert run.meta["settings"]["schedules"]["activations"] == "every(3, offset=0)"


@pytest.mark.slow
def test_default_schedules(run_dir):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = instrument.watch(model, opt, run=run_dir, strict=True)
    train(model, opt, batches(12), monitor=mon)
    mon.close()
    run = instrument.load(mon.run_dir)
    assert sorted(layer_frame(run, Keys.GRAD_NORM)) == list(range(12))  # norms: every step
    assert sorted(layer_frame(run, Keys.ACT_MEAN)) == [0, 10]  # activations: cheaper


def test_log_spaced_and_every_semantics():
    s = instrument.log_spaced(per_decade=10, dense_until=100)
    steps = [k for k in range(5000) if s(k)]
    assert steps[:100] == list(range(100))
    assert [k for k in steps if 100 <= k < 1000] == list(range(100, 1000, 10))
    assert [k for k in steps if 1000 <= k < 5000] == list(range(1000, 5000, 100))
    assert [k for k in range(10) if instrument.every(4, offset=2)(k)] == [2, 6]
    with pytest.raises(ValueError):
        instrument.every(0)
    d = instrument.dense_then_every(5, 10)
    assert [k for k in range(45) if d(k)] == [0, 1, 2, 3, 4, 10, 20, 30, 40]
    with pytest.raises(ValueError, match="dense_then_every"):
        instrument.dense_then_every(5, 0)
    p = instrument.dense_then_pairs(3, 10)
    assert [k for k in range(45) if p(k)] == [0, 1, 2, 10, 11, 20, 21, 30, 31, 40, 41]
    with pytest.raises(ValueError, match="dense_then_pairs"):
        instrument.dense_then_pairs(3, 1)


def test_context_manager_marks_crash_on_exception(run_dir):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ZeroDivisionError):
        with instrument.watch(model, opt, run=run_dir) as mon:
            train(model, opt, batches(2), monitor=mon)
            1 / 0
    meta = instrument.load(mon.run_dir).meta
    assert meta["status"] == "crashed" and "ZeroDivisionError" in meta["error"]
    assert meta["steps"] == 2


def test_close_removes_every_hook(run_dir):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    counts = lambda: (sum(len(m._forward_hooks) + len(m._forward_pre_hooks)
                          for m in model.modules()),
                      len(opt._optimizer_step_pre_hooks) + len(opt._optimizer_step_post_hooks),
                      sum(len(p._post_accumulate_grad_hooks or {}) for p in model.parameters()))
    before = counts()
    mon = watch(model, opt, run_dir)
    assert counts() != before
    mon.close()
    assert counts() == before
    train(model, opt, batches(2))  # training after close works and records nothing
    assert instrument.load(mon.run_dir).meta["steps"] == 0


def test_existing_run_gets_a_new_directory_or_is_overwritten(run_dir):
    for _ in range(2):
        model = mlp()
        with instrument.watch(model, torch.optim.SGD(model.parameters(), lr=0.1),
                              run=run_dir) as m:
            pass
    assert m.run_dir == run_dir + "-2"
    model = mlp()
    with instrument.watch(model, torch.optim.SGD(model.parameters(), lr=0.1), run=run_dir,
                          overwrite=True) as m:
        pass
    assert m.run_dir == run_dir


def test_no_optimizer_and_no_step_calls_is_said_once(tmp_path):
    """A hand-written update (no optimizer) without monitor.step(): every forward lands in one
    step. One warning and one stored event say so; calling monitor.step() counts the steps."""
    import warnings

    def loop(mon, step_calls):
        torch.manual_seed(0)
        model = mlp()
        mon = instrument.watch(model, run=str(tmp_path / mon), strict=True)
        for x, y in batches(UNSTEPPED_FORWARDS + 6):
            model.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(p.grad, alpha=-0.1)
            if step_calls:
                mon.step()
        mon.close()
        return instrument.load(mon.run_dir)

    with pytest.warns(UserWarning, match="monitor.step\\(\\) has not been called") as rec:
        run = loop("unstepped", step_calls=False)
    assert len([w for w in rec if "monitor.step()" in str(w.message)]) == 1
    ev = run.events(codes=["steps_not_counted"])
    assert len(ev) == 1 and ev["severity"].iloc[0] == "warning"
    with warnings.catch_warnings(record=True) as caught:  # none when the loop counts steps
        warnings.simplefilter("always")
        run = loop("stepped", step_calls=True)
    assert not [w for w in caught if "monitor.step()" in str(w.message)]
    assert run.meta["steps"] == UNSTEPPED_FORWARDS + 6
    assert not len(run.events(codes=["steps_not_counted"]))
