"""The writer thread sleeps while it has nothing to write (it used to spin on a past flush
deadline, taking a core and the GIL from the training thread)."""

import os
import time

import pytest

from instrument.store.reader import store_path
from instrument.store.records import StepData
from instrument.store.writer import StoreWriter


def _thread_cpu_seconds(native_id: int) -> float:
    fields = open(f"/proc/self/task/{native_id}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs Linux /proc")
def test_an_idle_writer_uses_no_cpu(tmp_path):
    writer = StoreWriter(store_path(str(tmp_path)), {"name": "idle"}, flush_interval=0.05)
    try:
        writer.submit(StepData(0, scalars={"loss": 1.0}))
        writer.flush()
        time.sleep(0.2)  # past the flush deadline with nothing pending
        before = _thread_cpu_seconds(writer._thread.native_id)
        time.sleep(1.0)
        used = _thread_cpu_seconds(writer._thread.native_id) - before
    finally:
        writer.close()
    assert used < 0.2, f"the idle writer thread used {used:.2f} s of CPU in 1 s"
