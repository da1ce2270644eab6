"""Cockpit tests: one intra-op thread (tiny models; on the shared 2-core machine two threads
made them about 3x slower through contention), restored after each test module."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
