"""watch(thresholds=...), the run's diagnosis metadata, and rules that stay silent without a
criterion."""

from __future__ import annotations

import os

import pytest
import torch

import instrument
from instrument.diagnosis import report
from instrument.diagnosis.replay import diagnose
from tests.helpers import batches, mlp, train


def test_bad_thresholds_fail_before_anything_is_created(tmp_path):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="unknown threshold 'dead_fractoin'"):
        instrument.watch(model, opt, run=str(tmp_path / "r"), thresholds={"dead_fractoin": 1})
    with pytest.raises(ValueError, match="unknown rule code"):
        instrument.watch(model, opt, run=str(tmp_path / "r"),
                         thresholds={"disabled_rules": ["dead_unit"]})
    assert not os.path.exists(tmp_path / "r")


def test_overrides_are_recorded_and_reused_by_the_replay(run_dir):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = instrument.watch(model, opt, run=run_dir, strict=True,
                           thresholds={"frozen_window": 3, "disabled_rules": ["lr_too_low"]})
    train(model, opt, batches(4), mon)
    mon.close()
    run = instrument.load(mon.run_dir)
    diag_meta = run.meta["diagnosis"]
    assert diag_meta["thresholds"] == {"frozen_window": 3, "disabled_rules": ["lr_too_low"]}
    assert "disabled" in diag_meta["rules"]["lr_too_low"]
    assert diagnose(run).thresholds.frozen_window == 3
    assert diagnose(run, {"frozen_window": 7}).thresholds.frozen_window == 7


def test_without_loss_fn_the_criterion_rules_are_silent_and_say_so(run_dir):
    # without loss_fn the losses are captured (instrument.losses) and the rules run on them;
    # with the instruments that record them switched off, the rules cannot run and say so
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = instrument.watch(model, opt, run=run_dir + "-captured", strict=True)
    train(model, opt, batches(4), mon)
    mon.close()
    meta = instrument.load(mon.run_dir).meta["diagnosis"]
    assert set(meta["rules"].values()) == {"active"}
    assert meta["facts"]["criterion"]["captured"] is True
    mon = instrument.watch(model, opt, run=run_dir, strict=True,
                           schedules={"criterion": None, "logits": None})
    train(model, opt, batches(4), mon)
    mon.close()
    run = instrument.load(mon.run_dir)
    rules = run.meta["diagnosis"]["rules"]
    silent = {c for c, s in rules.items() if s != "active"}
    assert silent == {"loss_at_chance", "initial_loss", "single_label_batch",
                      "probabilities_into_loss"}
    assert all("loss_fn=criterion" in rules[c] for c in silent)
    text = report.text(diagnose(run))
    assert "Rules that could not run" in text and "loss_at_chance: needs the criterion" in text
    facts = run.meta["diagnosis"]["facts"]
    assert [p["name"] for p in facts["params"]][:2] == ["0.weight", "0.bias"]
    assert facts["criterion"] is None and facts["modules"][1]["kind"] == "relu"


def test_the_rules_run_in_the_store_worker_process(run_dir, caplog, monkeypatch):
    # the engine crosses into the child process by pickle; a rule that does not pickle would
    # silently keep the writes and rules on the training process (as an earlier version did)
    monkeypatch.delenv("AVIONICS_STORE_WORKER", raising=False)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with caplog.at_level("WARNING", logger="avionics"):
        mon = instrument.watch(model, opt, run=run_dir, strict=False)
        assert mon.writer.mode == "process"
        train(model, opt, batches(4), mon)
        mon.close()
    assert not [r for r in caplog.records if "store worker" in r.getMessage()]
    assert instrument.load(mon.run_dir).meta["status"] == "finished"
