"""An instrument that fails is disabled with one warning and one stored event; training goes on.
Under strict=True the error is raised instead."""

import pytest
import torch

import instrument
from instrument.guard import InstrumentWarning
from instrument.instruments.grad_norm import GradNorm
from instrument.store.schema import Keys
from tests.helpers import batches, mlp, scalar_frame, train


@pytest.fixture
def broken_grad_norm(monkeypatch):
    def boom(self):
        raise RuntimeError("simulated instrument bug")
    monkeypatch.setattr(GradNorm, "pre_step", boom)


def _train_warned(run_dir, steps, match):
    """A watched MLP trained ``steps`` steps (not strict) that warns once, matching ``match``;
    returns the model and its run."""
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = instrument.watch(model, opt, run=run_dir)
    with pytest.warns(InstrumentWarning, match=match) as rec:
        train(model, opt, batches(steps), monitor=mon)
    mon.close()
    assert len([w for w in rec if issubclass(w.category, InstrumentWarning)]) == 1
    return model, instrument.load(mon.run_dir)


def test_failure_disables_only_that_instrument(run_dir, broken_grad_norm):
    _, run = _train_warned(run_dir, 4, "grad_norm.*disabled")
    ev = run.events(codes=["instrument_error"])
    assert len(ev) == 1 and ev.loc[0, "layer"] == "grad_norm" and ev.loc[0, "step"] == 0
    assert "simulated instrument bug" in ev.loc[0, "message"]
    assert Keys.GRAD_NORM_TOTAL not in run.keys()
    assert sorted(scalar_frame(run, Keys.WEIGHT_NORM_TOTAL)) == [0, 1, 2, 3]
    assert sorted(scalar_frame(run, Keys.LOSS)) == [0, 1, 2, 3]


def test_strict_reraises(run_dir, broken_grad_norm):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = instrument.watch(model, opt, run=run_dir, strict=True)
    with pytest.raises(RuntimeError, match="simulated instrument bug"):
        train(model, opt, batches(2), monitor=mon)
    mon.close()


def test_decode_failure_on_the_writer_thread_is_fail_open(run_dir, monkeypatch):
    def bad_decode(self, step, info):
        raise ValueError("cannot decode")
    monkeypatch.setattr(GradNorm, "decode", bad_decode)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = instrument.watch(model, opt, run=run_dir)
    with pytest.warns(InstrumentWarning, match="decode"):
        train(model, opt, batches(3), monitor=mon)
        mon.flush()
    mon.close()
    run = instrument.load(mon.run_dir)
    assert len(run.events(codes=["instrument_error"])) == 1
    assert sorted(scalar_frame(run, Keys.LOSS)) == [0, 1, 2]


def test_training_result_is_unaffected_by_a_failing_instrument(run_dir, broken_grad_norm):
    import copy
    a = mlp()
    b = copy.deepcopy(a)
    oa, ob = torch.optim.SGD(a.parameters(), lr=0.1), torch.optim.SGD(b.parameters(), lr=0.1)
    data = batches(3)
    train(a, oa, data)
    with pytest.warns(InstrumentWarning):
        with instrument.watch(b, ob, run=run_dir) as mon:
            train(b, ob, data, monitor=mon)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_a_failure_of_the_monitor_itself_stops_measuring_not_training(run_dir, monkeypatch):
    """The monitor's own step bookkeeping raises at step 2 (a simulated bug): training goes
    on bit-identically, one warning and one event say so, the steps before it are kept."""
    from instrument.buffer import StatBuffer

    reset = StatBuffer.reset
    calls = []

    def failing_reset(self):
        calls.append(1)
        if len(calls) == 3:  # the third step's start
            raise RuntimeError("simulated monitor bug")
        return reset(self)

    plain = mlp()
    popt = torch.optim.SGD(plain.parameters(), lr=0.1)
    train(plain, popt, batches(5))
    monkeypatch.setattr(StatBuffer, "reset", failing_reset)
    model, run = _train_warned(run_dir, 5, "stopped measuring at step 2")
    for p, q in zip(plain.parameters(), model.parameters()):
        assert torch.equal(p, q)
    ev = run.events(codes=["instrument_error"])
    assert len(ev) == 1 and ev.loc[0, "layer"] == "monitor" and ev.loc[0, "step"] == 2
    assert "simulated monitor bug" in ev.loc[0, "message"]
    assert sorted(scalar_frame(run, Keys.LOSS)) == [0, 1]
    assert run.meta["status"] == "finished"


def test_a_failure_of_the_monitor_itself_is_raised_under_strict(run_dir, monkeypatch):
    from instrument.buffer import StatBuffer

    def failing_reset(self):
        raise RuntimeError("simulated monitor bug")

    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = instrument.watch(model, opt, run=run_dir, strict=True)
    monkeypatch.setattr(StatBuffer, "reset", failing_reset)
    with pytest.raises(RuntimeError, match="simulated monitor bug"):
        train(model, opt, batches(2), monitor=mon)
    mon.close()


def test_after_the_monitor_fails_in_a_step_hook_no_instrument_runs(run_dir, monkeypatch):
    """The step starts in the optimizer's pre-step hook (no measured forward: the loop assigns
    .grad itself) and the monitor fails right there: no instrument runs afterwards, so none
    keeps a copy of the parameters (the update instrument's snapshot) for the rest of the run."""
    from instrument.buffer import StatBuffer

    to_host = StatBuffer.to_host
    calls = []

    def failing_to_host(self):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated monitor bug")
        return to_host(self)

    monkeypatch.setattr(StatBuffer, "to_host", failing_to_host)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    mon = instrument.watch(model, opt, run=run_dir)
    update = next(i for i in mon.instruments if i.name == "update")
    with pytest.warns(InstrumentWarning, match="stopped measuring"):
        for _ in range(4):
            for p in model.parameters():
                p.grad = torch.ones_like(p)
            opt.step()
    assert update._snap is None
    mon.close()
