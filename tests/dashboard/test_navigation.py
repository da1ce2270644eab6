"""The URL <-> view mapping and the step slider's arithmetic."""

from __future__ import annotations

import pytest

from dashboard import navigation, settings


@pytest.mark.parametrize("view", [
    {"runs": ["a"], "step": None, "layer": None},
    {"runs": ["a", "sweep/lr 0.1", "x&y=z"], "step": 1200, "layer": "fc1.weight"},
    {"runs": [], "step": None, "layer": None},
])
def test_query_round_trip(view):
    assert navigation.parse_query(navigation.build_query(view)) == view


def test_parse_query_is_defensive():
    got = navigation.parse_query("?run=a&run=a&run=&step=-5&step=9")
    assert got == {"runs": ["a"], "step": 0, "layer": None}
    assert navigation.parse_query("?step=ten")["step"] is None
    many = "&".join(f"run=r{i}" for i in range(100))
    assert len(navigation.parse_query(many)["runs"]) == settings.MAX_URL_RUNS
    assert navigation.parse_query(None) == {"runs": [], "step": None, "layer": None}
    assert navigation.build_query({"runs": []}) == ""


def test_step_range_over_selected_runs():
    heads = {"a": {"first": 5, "last": 90}, "b": {"first": 0, "last": 40},
             "c": {"error": "corrupt"}, "d": {"first": None, "last": None}}
    assert navigation.step_range(heads, ["a", "b", "c", "d"]) == (0, 90)
    assert navigation.step_range(heads, ["c"]) == (0, 0)
    assert navigation.step_range(None, ["a"]) == (0, 0)


def test_slider_end_means_follow():
    assert navigation.slider_step(90, 0, 90) is None
    assert navigation.slider_step(None, 0, 90) is None
    assert navigation.slider_step(12, 0, 90) == 12
    assert navigation.slider_step(-3, 5, 90) == 5
    assert navigation.label({"step": None}, 0, 1234) == "step 1,234 (latest)"
    assert navigation.label({"step": 7}, 0, 90) == "step 7 of 0..90"


@pytest.mark.parametrize("first,last", [(0, 299), (0, 999_999), (17, 23), (5, 1_234_567),
                                        (0, 0), (100, 101)])
def test_marks_are_few_round_and_in_range(first, last):
    marks = navigation.marks(first, last)
    assert first in marks and all(first <= m <= last for m in marks)
    assert len(marks) <= 2 * settings.SLIDER_MARKS + 1
    inner = [m for m in marks if m != first]
    if len(inner) > 1:
        stride = inner[1] - inner[0]
        digits = str(stride).rstrip("0")
        assert digits in ("1", "2", "5")  # 1, 2 or 5 times a power of ten
        assert all(m % stride == 0 for m in inner)
    assert marks[first] == f"{first:,}"


def test_a_page_without_a_chosen_run_follows_the_newest_one():
    from dashboard.navigation import next_view
    view = next_view(None, None, "", None, None, None, lambda: None)
    assert view["runs"] == [] and view["follow"] is True  # nothing yet: follow
    view = next_view(view, "newest", "", None, "new", None, lambda: None)
    assert view["runs"] == ["new"]
    picked = next_view(view, "run-select", "", ["old"], None, None, lambda: None)
    assert picked["runs"] == ["old"] and picked["follow"] is False
    assert next_view(picked, "newest", "", None, "newer", None, lambda: None)["runs"] == ["old"]
    named = next_view(None, "url", "?run=x", None, None, None, lambda: "latest")
    assert named["runs"] == ["x"] and named["follow"] is False
    assert next_view(None, "url", "", None, None, None, lambda: "l")["runs"] == ["l"]
