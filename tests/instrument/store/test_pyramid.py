"""The downsampling pyramid against brute-force bucketing of the raw values."""

import warnings

import numpy as np
import pytest

from instrument.store.pyramid import SeriesPyramid


def brute(steps, values, level, base):
    out = {}
    for s, v in zip(steps, values):
        out.setdefault(s // base**level, []).append((s, v))
    rows = {}
    for b, items in out.items():
        ss = [s for s, _ in items]
        vv = np.array([v for _, v in items], dtype=float)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            rows[b] = (len(items), min(ss), max(ss), np.nanmean(vv, 0), np.nanmin(vv, 0),
                       np.nanmax(vv, 0))
    return rows


@pytest.mark.parametrize("chunks", [1, 7, 100])
def test_pyramid_matches_bruteforce_in_any_chunking(chunks):
    rng = np.random.default_rng(0)
    steps = np.sort(rng.choice(5000, 1200, replace=False))
    values = rng.normal(size=(len(steps), 3))
    values[rng.random(values.shape) < 0.1] = np.nan  # "not recorded" cells
    values[5, 1] = np.inf
    pyr = SeriesPyramid(levels=4, base=4)
    latest = {}
    for part in np.array_split(np.arange(len(steps)), chunks):
        for row in pyr.add(steps[part], values[part]):
            assert (row.level, row.bucket) not in latest  # each bucket is written once
            latest[(row.level, row.bucket)] = row
    closed = {0: {int(s) for s in steps}}
    for level in range(1, 5):
        parents = {b // 4 for b in closed[level - 1]}
        parents.discard(max(parents))  # still open: its last child may grow
        closed[level] = parents
        expect = brute(steps, values, level, 4)
        got = {b: r for (lv, b), r in latest.items() if lv == level}
        assert set(got) == parents
        for b in parents:
            n, first, last, mean, mn, mx = expect[b]
            r = got[b]
            assert (r.n, r.first_step, r.last_step) == (n, first, last)
            sel = (steps // 4**level) == b
            np.testing.assert_array_equal(r.count, (~np.isnan(values[sel])).sum(0))
            np.testing.assert_allclose(r.mean, mean, rtol=1e-12, equal_nan=True)
            np.testing.assert_array_equal(r.min, mn)
            np.testing.assert_array_equal(r.max, mx)


def test_old_steps_are_not_counted_twice():
    pyr = SeriesPyramid(levels=2, base=4)
    pyr.add(np.array([0, 1, 2]), np.array([[1.0], [2.0], [3.0]]))
    rows = pyr.add(np.array([2, 3, 4]), np.array([[100.0], [4.0], [0.0]]))
    (level1,) = [r for r in rows if r.level == 1]
    assert level1.n == 4 and level1.mean[0] == pytest.approx(2.5)


def test_layers_added_later_are_padded():
    pyr = SeriesPyramid(levels=1, base=4)
    pyr.add(np.array([0]), np.array([[1.0]]))
    pyr.add(np.array([1]), np.array([[3.0, 5.0]]))
    (r,) = pyr.add(np.array([4]), np.array([[0.0, 0.0]]))
    assert r.mean.tolist() == [2.0, 5.0]
    assert r.min.tolist() == [1.0, 5.0]
