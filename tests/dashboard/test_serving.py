"""Serving: the `avionics dashboard` command (waitress, loopback by default) and
watch(dashboard=True), which serves from a child process that never outlives training."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request

import pytest
from dash.testing.wait import until

from instrument import cli
from instrument.commands import dashboard as command
from tests.dashboard import stores

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except OSError:
        return 0


def test_cli_arguments_and_defaults():
    import argparse

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(["runs"])
    assert (args.host, args.port, args.debug) == ("127.0.0.1", 8050, False)
    assert "dashboard" in cli.COMMANDS


def test_cli_refuses_a_missing_directory(tmp_path, capsys):
    assert cli.main(["dashboard", str(tmp_path / "nope")]) == 2
    assert "is not a directory" in capsys.readouterr().out


def test_cli_serves_with_waitress_on_loopback(tmp_path):
    stores.write_run(str(tmp_path / "r"), steps=5)
    port = command.free_port("127.0.0.1", 18050)
    proc = subprocess.Popen([sys.executable, "-m", "instrument.cli", "dashboard", str(tmp_path),
                             "--port", str(port)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        until(lambda: _get(f"http://127.0.0.1:{port}/") == 200, timeout=60)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            assert r.headers.get("Server", "").startswith("avionics")  # waitress ident
        # bound to loopback only: not reachable on the machine's other addresses
        try:
            others = {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None,
                                                          socket.AF_INET)} - {"127.0.0.1"}
        except OSError:  # the host name does not resolve: nothing else to try
            others = set()
        for addr in others:
            with socket.socket() as s:
                s.settimeout(1)
                assert s.connect_ex((addr, port)) != 0
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert f"http://127.0.0.1:{port}/" in out


def test_child_server_stops_when_its_parent_dies(tmp_path):
    """The parent is killed (no atexit): the child sees its stdin close and exits."""
    stores.write_run(str(tmp_path / "r"), steps=5)
    port = command.free_port("127.0.0.1", 18150)
    parent = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[1]);"
        "from instrument.commands.dashboard import DashboardProcess;"
        "d = DashboardProcess(sys.argv[2], run='r', port=int(sys.argv[3]));"
        "print(d.process.pid, flush=True); time.sleep(600)"), ROOT, str(tmp_path), str(port)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        printed = parent.stdout.readline()
        assert f"avionics: dashboard at http://127.0.0.1:{port}/?run=r" in printed
        child = int(parent.stdout.readline())
        until(lambda: _get(f"http://127.0.0.1:{port}/") == 200, timeout=60)
    finally:
        parent.kill()
        parent.wait()
    until(lambda: not _pid_alive(child), timeout=30, msg="the dashboard outlived its parent")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie is not serving anymore
        return fh.read().split()[2] != "Z"


@pytest.mark.slow
def test_watch_dashboard_serves_during_and_after_training(tmp_path, capsys):
    import torch
    from torch import nn

    import instrument

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="port number"):
        instrument.watch(model, opt, run=str(tmp_path / "x"), dashboard="yes")
    port = command.free_port("127.0.0.1", 18250)
    monitor = instrument.watch(model, opt, run=str(tmp_path / "logs" / "exp"), strict=True,
                               dashboard=port)
    try:
        assert f"dashboard at http://127.0.0.1:{port}/?run=exp" in capsys.readouterr().out
        assert monitor.dashboard.logdir == str(tmp_path / "logs")
        for _ in range(5):
            opt.zero_grad()
            loss = model(torch.randn(16, 4)).pow(2).mean()
            loss.backward()
            opt.step()
            monitor.log(loss=loss)
        monitor.close()
        until(lambda: _get(monitor.dashboard.url) == 200, timeout=60)
        assert monitor.dashboard.alive  # still serving the finished run after close()
    finally:
        monitor.close()
        if monitor.dashboard is not None:
            monitor.dashboard.stop()
    until(lambda: not monitor.dashboard.alive, timeout=20)
