"""dead_units judges each layer by the values its units saw (act/unit_observations), not by the
input batch: real training runs with dead ReLUs at small and large batches, MLP and CNN."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import instrument
from instrument.store.schema import Keys
from tests.helpers import layer_frame
from tests.instrument.diagnosis.diag_scenarios import Config, train

MIN = 16  # Thresholds().dead_min_batch, written out: the test must not read the code's value


def _dead_codes(run):
    ev = run.events(codes=["dead_units"])
    return sorted(set(ev["layer"]))


def test_mlp_small_batches_are_quiet_large_ones_fire(tmp_path, one_thread):
    small = instrument.load(train(Config(bugs={"dead_bias"}, steps=45, batch=8),
                                  str(tmp_path / "small"))["run_dir"])
    large = instrument.load(train(Config(bugs={"dead_bias"}, steps=45, batch=32),
                                  str(tmp_path / "large"))["run_dir"])
    for run, batch in ((small, 8), (large, 32)):
        obs = layer_frame(run, Keys.ACT_UNIT_OBSERVATIONS)
        assert set(obs) == {0, 10, 20, 30, 40}
        assert all(v == batch for row in obs.values() for v in row.values())
    dead = layer_frame(large, Keys.ACT_DEAD_FRAC)
    assert all(dead[s]["2"] > 0.9 for s in dead)  # the ReLU after the -4 biases is dead ...
    assert _dead_codes(small) == []  # ... but 8 rows per unit are no evidence
    assert "2" in _dead_codes(large)


def test_cnn_channels_count_every_position(tmp_path, one_thread):
    """Batch 4 of 8x8 images: each channel saw 4 * 64 values, enough to call it dead, though
    the batch is below the minimum."""
    from tests.instrument.diagnosis.diag_scenarios import digits

    x, y = digits()
    x = (x - x.mean()) / x.std()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 64, 10))
    with torch.no_grad():
        model[0].bias[:6] = -100.0  # 6 of 8 channels never fire
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(0)
    mon = instrument.watch(model, opt, run=str(tmp_path / "cnn"), strict=True)
    for _ in range(45):
        idx = torch.randint(0, 1500, (4,), generator=g)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x[idx, None]), y[idx])
        loss.backward()
        opt.step()
        mon.log(loss=loss)
    mon.close()
    run = instrument.load(mon.run_dir)
    obs = layer_frame(run, Keys.ACT_UNIT_OBSERVATIONS)
    assert obs[0]["1"] == 4 * 8 * 8 and obs[0]["3"] == 4  # Linear: units are features
    assert 4 < MIN <= obs[0]["1"]
    assert np.isclose(layer_frame(run, Keys.ACT_DEAD_FRAC)[40]["1"], 6 / 8)
    assert _dead_codes(run) == ["1"]
