"""accelerate: instrument.watch() on prepared objects in a loop with gradient accumulation and clipping,
against norms computed by hand and accelerate's own clip_grad_norm_ (real accelerate, CPU)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("accelerate")
from accelerate import Accelerator  # noqa: E402
from accelerate.utils import GradientAccumulationPlugin  # noqa: E402

import instrument  # noqa: E402
from instrument.integrations.accelerate import AvionicsTracker  # noqa: E402
from tests.integrations.lit_models import brute_norm, loaders  # noqa: E402

pytestmark = pytest.mark.integrations

GA = 2


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))


def _loop(run_dir, max_norm, tracker=False):
    """A prepared loop; returns (run, per-sync records of the clip return and the norm the step
    used, losses per micro-batch, micro-batches per sync)."""
    plugin = GradientAccumulationPlugin(num_steps=GA, sync_with_dataloader=False)
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    train, _ = loaders(n=96)
    avionics_tracker = AvionicsTracker() if tracker else None
    accelerator = Accelerator(cpu=True, gradient_accumulation_plugin=plugin,
                              log_with=avionics_tracker)
    model, optimizer, train = accelerator.prepare(model, optimizer, train)
    if tracker:
        monitor = avionics_tracker.watch(model, optimizer, run=run_dir, strict=True)
        accelerator.init_trackers("test", config={"lr": 0.05, "ga": GA})
    else:
        monitor = instrument.watch(model, optimizer, run=run_dir, strict=True)
    clip_returns, used, losses = [], [], []
    for x, y in train:
        with accelerator.accumulate(model):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                norm = accelerator.clip_grad_norm_(model.parameters(), max_norm)
                clip_returns.append(float(norm))
                used.append(brute_norm(model))
            optimizer.step()
            optimizer.zero_grad()
        losses.append(float(loss.detach()))
        monitor.log(loss=loss)  # as the README's example: the tensor as it is
        if tracker:
            accelerator.log({"acc": 0.5, "lr_seen": optimizer.param_groups[0]["lr"]})
    monitor.close()
    return instrument.load(run_dir), clip_returns, used, losses


def _series(run, key):
    df = run.scalars(keys=[key])
    return {int(s): float(v) for s, v in zip(df["step"], df["value"])}


def test_steps_and_norms_under_accumulation(tmp_path):
    """Clipping inactive: the recorded norm is the clip return (and no before-clip value, the
    gradient was not changed), and the step count is accelerate's sync count (12
    micro-batches, 2 per step: 6 steps, not 12)."""
    run, clip_returns, used, losses = _loop(str(tmp_path / "run"), max_norm=1e9)
    assert len(clip_returns) == 6 and run.meta["steps"] == 6
    norms = _series(run, "grad_norm/total")
    assert sorted(norms) == list(range(6))
    assert "grad_norm/total_before_clip" not in run.keys()
    for s in range(6):
        assert norms[s] == pytest.approx(clip_returns[s], rel=1e-5)
        assert norms[s] == pytest.approx(used[s], rel=1e-5)
    loss = _series(run, "loss")
    for s in range(6):  # the mean of the step's micro-batch losses
        assert loss[s] == pytest.approx((losses[2 * s] + losses[2 * s + 1]) / 2, rel=1e-6)


def test_clipped_norm_is_the_one_the_step_used(tmp_path):
    """Clipping active: grad_norm/total is the clipped gradient the step used (norm by hand
    after clipping), grad_norm/total_before_clip what clip_grad_norm_ returned."""
    run, clip_returns, used, _ = _loop(str(tmp_path / "run"), max_norm=0.05)
    norms = _series(run, "grad_norm/total")
    before = _series(run, "grad_norm/total_before_clip")
    assert sorted(norms) == sorted(before) == list(range(6))
    for s in range(6):
        assert clip_returns[s] > 0.05  # clipping was active
        assert norms[s] == pytest.approx(used[s], rel=1e-5)
        assert norms[s] == pytest.approx(0.05, rel=1e-4)
        assert before[s] == pytest.approx(clip_returns[s], rel=1e-5)


def test_tracker_stores_accelerator_log(tmp_path):
    run, *_ = _loop(str(tmp_path / "run"), max_norm=1e9, tracker=True)
    acc = _series(run, "acc")
    assert sorted(acc) == list(range(6)) and set(acc.values()) == {0.5}
    assert _series(run, "lr_seen")[0] == pytest.approx(0.05)
    assert run.meta["config"] == {"lr": 0.05, "ga": GA}
