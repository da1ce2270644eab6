"""Fixtures for the diagnosis tests: real digits runs, trained once per session and shared."""

from __future__ import annotations

import pytest
import torch

import instrument
from tests.instrument.diagnosis.diag_scenarios import Config, train


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """``trained(name, config)`` -> ``(result, Run)``; each name is trained once per session
    (several tests read the same run), with one intra-op thread like the benchmarks."""
    cache = {}

    def get(name: str, cfg: Config):
        if name not in cache:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                res = train(cfg, str(tmp_path_factory.mktemp("diag") / name))
            finally:
                torch.set_num_threads(threads)
            cache[name] = (res, instrument.load(res["run_dir"]))
        return cache[name]

    return get


@pytest.fixture
def one_thread():
    """One intra-op thread for the test (restored afterwards): steadier on shared CPUs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
