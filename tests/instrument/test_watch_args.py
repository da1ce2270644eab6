"""Bad arguments fail at watch() with a message that says how to fix them."""

import pytest
import torch
from torch import nn

import instrument
from tests.helpers import mlp


def test_model_must_be_a_module(run_dir):
    with pytest.raises(TypeError, match="torch.nn.Module you train"):
        instrument.watch(lambda x: x, None, run=run_dir)


def test_optimizer_must_be_an_optimizer(run_dir):
    model = mlp()
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        instrument.watch(model, list(model.parameters()), run=run_dir)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 10)
    with pytest.raises(TypeError, match="scheduler; pass the optimizer it wraps"):
        instrument.watch(model, sched, run=run_dir)


def test_optimizer_must_hold_the_models_parameters(run_dir):
    other = mlp(seed=1)
    with pytest.raises(ValueError, match="holds none of the model's parameters"):
        instrument.watch(mlp(), torch.optim.SGD(other.parameters(), lr=0.1), run=run_dir)


def test_run_path_that_is_a_file(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("hi")
    model = mlp()
    with pytest.raises(ValueError, match="is an existing file"):
        instrument.watch(model, torch.optim.SGD(model.parameters(), lr=0.1), run=str(f))
    with pytest.raises(ValueError, match="cannot create the run directory"):
        instrument.watch(model, torch.optim.SGD(model.parameters(), lr=0.1),
                         run=str(f / "sub"))


def test_schedules_are_checked(run_dir):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="unknown instrument name.*activatons"):
        instrument.watch(model, opt, run=run_dir, schedules={"activatons": 1})
    with pytest.raises(TypeError, match="schedules\\['activations'\\]"):
        instrument.watch(model, opt, run=run_dir, schedules={"activations": "often"})
    with pytest.raises(ValueError, match="integer n >= 1"):
        instrument.watch(model, opt, run=run_dir, schedules={"activations": 0})


def test_loss_fn_must_be_callable(tmp_path):
    model = mlp()
    with pytest.raises(TypeError, match="loss_fn must be the criterion the loop calls.*got "
                                        "Tensor tensor"):
        instrument.watch(model, torch.optim.SGD(model.parameters(), lr=0.1),
                         run=str(tmp_path / "r"), loss_fn=torch.tensor(1.0))
    assert not (tmp_path / "r").exists()
    # a plain function is not hooked; the functional losses it calls are captured
    mon = instrument.watch(model, torch.optim.SGD(model.parameters(), lr=0.1),
                           run=str(tmp_path / "f"), loss_fn=nn.functional.cross_entropy)
    assert mon.ctx.loss_fn is None and "criterion" in [i.name for i in mon.instruments]
    mon.close()


def test_nothing_is_created_on_bad_arguments(tmp_path):
    run = tmp_path / "never"
    with pytest.raises(TypeError):
        instrument.watch("not a model", None, run=str(run))
    assert not run.exists()
