"""watch() on a model that an open monitor still watches (a notebook cell run again) closes
the old monitor first: one monitor per model, and the old run holds only its own steps."""

from __future__ import annotations

import pytest
import torch

import instrument
from tests.helpers import batches, mlp, train


def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_watching_a_watched_model_again_closes_the_old_monitor(tmp_path):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    first = instrument.watch(model, opt, run=str(tmp_path / "a"), strict=True)
    once = _hooks(model)
    train(model, opt, batches(2), monitor=first)
    with pytest.warns(UserWarning, match="still watched by an open monitor"):
        second = instrument.watch(model, opt, run=str(tmp_path / "b"), strict=True)
    assert _hooks(model) == once  # the old monitor's hooks are gone, not stacked
    train(model, opt, batches(3), monitor=second)
    second.close()
    old, new = instrument.load(first.run_dir), instrument.load(second.run_dir)
    assert old.meta["status"] == "finished" and old.meta["steps"] == 2
    assert new.meta["steps"] == 3 and new.step_range() == (0, 2)
    first.close()  # closing it again is harmless


def test_a_closed_monitor_leaves_the_model_free(tmp_path, recwarn):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    instrument.watch(model, opt, run=str(tmp_path / "a"), strict=True).close()
    instrument.watch(model, opt, run=str(tmp_path / "b"), strict=True).close()
    assert not [w for w in recwarn if "still watched" in str(w.message)]
