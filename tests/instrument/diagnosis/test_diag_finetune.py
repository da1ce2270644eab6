"""Fine-tuning a trained model: the loss starts low and noisy. Healthy fine-tuning must stay
quiet (no "diverging" from one bad batch or a noisy rolling minimum); too high a learning rate,
which wrecks the model in its first step, is lr_too_high at once. Real CPU runs on digits."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import instrument
from tests.instrument.diagnosis.diag_scenarios import N_TRAIN, digits


@pytest.fixture(scope="module")
def pretrained():
    x, y = digits()
    x = (x - x[:N_TRAIN].mean()) / x[:N_TRAIN].std()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        g = torch.Generator().manual_seed(0)
        for _ in range(400):
            idx = torch.randint(0, N_TRAIN, (16,), generator=g)
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.state_dict(), x, y


def finetune(pretrained, run_dir, make_opt, batch, steps=300, seed=1):
    state, x, y = pretrained
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    model.load_state_dict(state)
    opt = make_opt(model.parameters())
    g = torch.Generator().manual_seed(seed)
    crit = nn.CrossEntropyLoss()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with instrument.watch(model, opt, run=run_dir, loss_fn=crit, strict=True) as mon:
            for _ in range(steps):
                idx = torch.randint(0, N_TRAIN, (batch,), generator=g)
                opt.zero_grad()
                loss = crit(model(x[idx]), y[idx])
                loss.backward()
                opt.step()
                mon.log(loss=loss)
    finally:
        torch.set_num_threads(threads)
    return instrument.load(mon.run_dir)


@pytest.mark.parametrize("batch,opt", [
    (8, lambda p: torch.optim.Adam(p, 1e-4)),
    (16, lambda p: torch.optim.Adam(p, 1e-4)),
    (32, lambda p: torch.optim.SGD(p, 0.01, momentum=0.9)),
])
def test_healthy_finetuning_is_quiet(pretrained, tmp_path, batch, opt):
    run = finetune(pretrained, str(tmp_path / "r"), opt, batch)
    ev = run.events()
    warnings = ev[ev.severity != "info"]
    assert warnings.empty, warnings[["code", "step", "message"]].to_string()
    loss = run.scalars(keys=["loss"])["value"]
    assert loss.iloc[:10].median() < 0.5  # it was trained: a low, noisy start


@pytest.mark.parametrize("opt", [lambda p: torch.optim.Adam(p, 5e-2),
                                 lambda p: torch.optim.SGD(p, 1.0, momentum=0.9)])
def test_too_high_a_learning_rate_is_found_within_two_steps(pretrained, tmp_path, opt):
    run = finetune(pretrained, str(tmp_path / "r"), opt, 16, steps=20)
    ev = run.events(codes=["lr_too_high"])
    assert len(ev) == 1 and ev["step"].iloc[0] <= 2, run.events()[["code", "step", "message"]]
    loss = run.scalars(keys=["loss"]).set_index("step")["value"]
    assert loss[1] > 10 * loss[0] or loss[2] > 10 * loss[0]  # it did wreck the model
