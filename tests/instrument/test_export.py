"""``avionics export``: the files pandas reads back equal what the reader returns."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

from instrument.commands import export as export_cmd
from instrument.store.reader import load
from tests.helpers import batches, mlp, watch

pytestmark = pytest.mark.slow  # exports of real runs in chunks: in make test, not in make test-fast

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def avionics(*args):
    return subprocess.run([sys.executable, "-m", "instrument.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A real run with scalars, layer series and events: the loop never calls zero_grad (a
    diagnosis finding with evidence) and logs a NaN (a nonfinite event without a layer)."""
    run_dir = str(tmp_path_factory.mktemp("export") / "run")
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    monitor = watch(model, opt, run_dir)
    criterion = torch.nn.CrossEntropyLoss()
    for x, y in batches(12):
        loss = criterion(model(x), y)
        loss.backward()
        opt.step()
        monitor.log(loss=loss.detach())
    monitor.log(loss=float("nan"))
    monitor.close()
    return load(run_dir)


def _same(read, expected):
    """Equal frames; string columns compared as Python objects (pandas 3 reads Arrow strings
    as its ``str`` dtype where the reader builds ``object`` columns)."""
    read, expected = read.reset_index(drop=True), expected.reset_index(drop=True)
    assert list(read.columns) == list(expected.columns)
    for col in expected.columns:
        if expected[col].dtype == object or pd.api.types.is_string_dtype(expected[col]):
            a = [None if pd.isna(v) else v for v in read[col].astype(object)]
            b = [None if pd.isna(v) else v for v in expected[col].astype(object)]
            assert a == b, col
        else:
            pd.testing.assert_series_equal(read[col], expected[col], check_dtype=False,
                                           check_exact=True, check_names=False)


def _expected_events(run):
    events = run.events()
    events["evidence"] = [None if e is None else json.dumps(e, sort_keys=True)
                          for e in events["evidence"]]
    return events


def test_parquet_round_trip(recorded, tmp_path):
    out = str(tmp_path / "pq")
    res = avionics("export", recorded.run_dir, "--format", "parquet", "-o", out)
    assert res.returncode == 0, res.stderr
    scalars = pd.read_parquet(os.path.join(out, "scalars.parquet"))
    layers = pd.read_parquet(os.path.join(out, "layers.parquet"))
    events = pd.read_parquet(os.path.join(out, "events.parquet"))
    assert len(scalars) > 12 and len(layers) > 100 and len(events) >= 2
    assert events["evidence"].notna().any() and events["layer"].isna().any()
    pd.testing.assert_frame_equal(scalars[["step", "wall_time", "value"]],
                                  recorded.scalars()[["step", "wall_time", "value"]])
    _same(scalars, recorded.scalars())
    _same(layers, recorded.layers())
    _same(events, _expected_events(recorded))
    assert events["step"].dtype == "Int64"  # the nullable step survives Parquet
    with open(os.path.join(out, "meta.json")) as fh:
        assert json.load(fh)["status"] == "finished"


def test_csv_round_trip_in_chunks(recorded, tmp_path, monkeypatch):
    # chunks of a few steps: the chunked path must give the same rows as one read
    monkeypatch.setattr(export_cmd, "CHUNK_ROWS", 40)
    paths = export_cmd.export(recorded, str(tmp_path / "csv"), "csv", progress=False)
    assert [os.path.basename(p) for p in paths] == ["scalars.csv", "layers.csv", "events.csv",
                                                     "meta.json"]
    _same(pd.read_csv(paths[0]), recorded.scalars())
    layers = pd.read_csv(paths[1])
    expected = recorded.layers()
    assert len(layers) == len(expected)
    # chunks come series by series in step order, as run.layers() returns them
    _same(layers, expected)
    _same(pd.read_csv(paths[2], dtype={"step": "Int64"}), _expected_events(recorded))


def test_default_out_dir_and_errors(recorded, tmp_path):
    res = avionics("export", recorded.run_dir, "--format", "csv", "--quiet")
    assert res.returncode == 0, res.stderr
    assert os.path.isfile(os.path.join(recorded.run_dir, "export", "layers.csv"))
    res = avionics("export", str(tmp_path / "nope"), "--format", "csv")
    assert res.returncode == 2 and "no avionics run" in res.stderr
    res = avionics("export", recorded.run_dir, "--format", "xlsx")
    assert res.returncode == 2 and "invalid choice" in res.stderr
    with pytest.raises(ValueError, match="unknown format"):
        export_cmd.export(recorded, str(tmp_path / "x"), "xlsx")
