"""Trainer + AvionicsCallback on 2 CPU ranks (gloo): every rank attaches through avionics'
torch.distributed path, the world-process-zero writes the one run store, and the recorded loss
and before-clip norm equal what Trainer logs (its loss is the mean over ranks)."""

from __future__ import annotations

import os
import sys

import pytest
import torch.distributed as dist

pytest.importorskip("transformers")

import instrument  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "instrument", "distributed"))
from avdist_harness import run_ranks  # noqa: E402

from tests.integrations.hf_dist_body import train_ranks  # noqa: E402

pytestmark = [pytest.mark.integrations, pytest.mark.distributed, pytest.mark.slow,
              pytest.mark.timeout(900),
              pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                 reason="needs torch.distributed with gloo")]


def test_trainer_on_two_ranks(tmp_path):
    run_dir = str(tmp_path / "run")
    results = run_ranks(train_ranks, run_dir, str(tmp_path / "hf"), timeout=360,
                        pg_timeout=300)
    assert [r["world"] for r in results] == [2, 2]
    logs = [h for h in results[0]["log_history"] if "loss" in h and "grad_norm" in h]
    steps = results[0]["global_step"]
    assert len(logs) == steps == 3
    run = instrument.load(run_dir)
    assert run.meta["steps"] == steps
    # one store, written by process zero; rank 1 wrote none (no per-rank stores asked for)
    stores = [os.path.join(d, f) for d, _, files in os.walk(tmp_path) for f in files
              if f == "avionics.db"]
    assert stores == [os.path.join(run_dir, "avionics.db")]
    scalars = run.scalars()
    for h in logs:
        s = h["step"] - 1
        at = scalars[scalars["step"] == s].set_index("key")["value"]
        assert at["loss"] == pytest.approx(h["loss"], abs=1e-4)
        assert at["grad_norm/total_before_clip"] == pytest.approx(h["grad_norm"], abs=1e-4)
