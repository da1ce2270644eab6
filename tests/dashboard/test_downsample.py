"""Downsampling helpers against brute-force references."""

from __future__ import annotations

import base64
import json
import math
from decimal import Decimal

import numpy as np
import pytest

from dashboard import downsample, settings


def test_budgets_stay_within_the_limits():
    for n in (1, 3, 8, 200, 5000):
        per = downsample.points_per_trace(n)
        assert settings.MIN_TRACE_POINTS <= per <= settings.MAX_TRACE_POINTS
        if settings.MIN_TRACE_POINTS < per:
            assert per * n <= settings.MAX_FIGURE_POINTS
    assert downsample.points_per_trace(1) == settings.MAX_TRACE_POINTS
    for rows in (1, 9, 200, 800, 10**6):
        cols = downsample.heatmap_columns(rows)
        assert 1 <= cols <= settings.MAX_HEATMAP_COLUMNS
        assert cols == 1 or cols * rows <= settings.MAX_FIGURE_CELLS


def _brute_buckets(steps, values, size, last_step):
    """Buckets of the rows up to ``last_step`` by a plain loop: (last step, mean, min, max,
    complete?)."""
    out = []
    rows = [(s, v) for s, v in zip(steps, values) if s <= last_step]
    for b in sorted({s // size for s, _ in rows}):
        part = [(s, v) for s, v in rows if s // size == b]
        vals = np.array([v for _, v in part], dtype=float)
        out.append((part[-1][0], np.nanmean(vals, axis=0), np.nanmin(vals, axis=0),
                    np.nanmax(vals, axis=0), (b + 1) * size - 1 <= last_step))
    return out


@pytest.mark.parametrize("size", [1, 4, 16])
def test_tail_buckets_match_a_loop(size):
    rng = np.random.default_rng(size)
    steps = np.sort(rng.choice(np.arange(100, 400), 150, replace=False))
    values = rng.normal(size=(150, 3))
    values[rng.random((150, 3)) < 0.1] = np.nan
    values[:, 2] = np.nan  # a layer never recorded
    last_step = int(steps[-1]) - 5  # the last rows are not logged yet as far as we know
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        expected = _brute_buckets(list(steps), list(values), size, last_step)
    got_steps, mean, mn, mx, complete, consumed = downsample.tail_buckets(
        steps, values, size, last_step)
    assert list(got_steps) == [e[0] for e in expected]
    np.testing.assert_allclose(mean, np.array([e[1] for e in expected]), equal_nan=True)
    np.testing.assert_allclose(mn, np.array([e[2] for e in expected]), equal_nan=True)
    np.testing.assert_allclose(mx, np.array([e[3] for e in expected]), equal_nan=True)
    assert complete == sum(e[4] for e in expected)
    assert all(e[4] for e in expected[:complete]) and not any(e[4] for e in expected[complete:])
    assert len(expected) - complete <= 1  # at most one bucket still filling, the last one
    if size == 1:
        assert consumed == max(s for s in steps if s <= last_step)
    else:
        assert consumed == (last_step + 1) // size * size - 1


def test_tail_buckets_only_one_filling():
    steps = np.array([8, 9, 10])
    got, mean, _, _, complete, consumed = downsample.tail_buckets(steps, np.arange(3.0), 16, 10)
    assert complete == 0 and consumed is None
    assert list(got) == [10] and list(mean) == [1.0]
    empty = downsample.tail_buckets(steps, np.ones(3), 16, 5)
    assert len(empty[0]) == 0 and empty[4:] == (0, None)


def _brute_ema(values, weight, counts):
    num = den = 0.0
    out = []
    for x, n in zip(values, counts):
        if math.isnan(x):
            out.append(math.nan)
            continue
        w = weight ** n
        num = w * num + (1 - w) * x
        den = w * den + (1 - w)
        out.append(num / den)
    return out


def test_ema_is_debiased_and_continues_across_calls():
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    x[[5, 17]] = np.nan
    counts = rng.integers(1, 5, size=40)
    whole, _ = downsample.ema(x, 0.8, counts)
    np.testing.assert_allclose(whole, _brute_ema(x, 0.8, counts), equal_nan=True)
    assert whole[0] == pytest.approx(x[0])  # debiased: the first value is itself
    head, state = downsample.ema(x[:23], 0.8, counts[:23])
    tail, _ = downsample.ema(x[23:], 0.8, counts[23:], state=state)
    np.testing.assert_allclose(np.r_[head, tail], whole, equal_nan=True)


def test_round_sig_matches_formatting():
    rng = np.random.default_rng(1)
    x = np.r_[rng.normal(size=200) * 10.0 ** rng.integers(-12, 12, size=200), 0.0, -3.5,
              1e-30, np.nan, np.inf]
    got = downsample.round_sig(x, 6)
    for g, v in zip(got, x):
        if not np.isfinite(v):
            assert g is None
        elif abs(v) < 1e-17:
            assert g == v
        else:
            assert g == pytest.approx(float(f"{v:.6g}"), rel=1e-12)
            # the shortest text of the result has at most 6 significant digits
            assert len(Decimal(repr(g)).normalize().as_tuple().digits) <= 6
    # JSON text stays short
    assert len(json.dumps(downsample.round_sig([1 / 3]))) <= len("[0.333333]")


def test_typed_array_round_trips():
    z = np.arange(12, dtype=np.float64).reshape(3, 4) / 7
    spec = downsample.typed_array(z, "f4")
    assert spec["dtype"] == "f4" and spec["shape"] == "3, 4"
    back = np.frombuffer(base64.b64decode(spec["bdata"]), "<f4").reshape(3, 4)
    np.testing.assert_allclose(back, z.astype(np.float32))
    steps = downsample.typed_array(np.array([0, 5, 10]), "i4")
    assert "shape" not in steps
    assert list(np.frombuffer(base64.b64decode(steps["bdata"]), "<i4")) == [0, 5, 10]


def test_log_and_decade_ticks():
    got = downsample.log10_positive([100.0, 0.0, -1.0, 1e-3, np.nan])
    np.testing.assert_allclose(got, [2.0, np.nan, np.nan, -3.0, np.nan], equal_nan=True)
    vals, text = downsample.decade_ticks(-3.2, 1.5)
    assert vals == [-4, -3, -2, -1, 0, 1, 2] and text[0] == "1e-4"
    assert downsample.decade_ticks(np.nan, 1.0) == ([], [])
    vals, _ = downsample.decade_ticks(-30, 30, max_ticks=8)
    assert len(vals) <= 8 + 1
