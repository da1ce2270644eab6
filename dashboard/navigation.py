"""The view (runs, replay step, highlighted layer) and its two mirrors: the URL and the slider.

The URL holds the view, so a page can be bookmarked or shared:
``/?run=exp1&run=exp2&step=1200&layer=fc1.weight``. ``step`` absent means "the last step"
(and a live run keeps following its newest step). Pure functions; the callback that wires them
is in :mod:`dashboard.callbacks`.
"""

from __future__ import annotations

import math
from urllib.parse import parse_qs, urlencode

from dashboard import settings


def parse_query(search: str | None) -> dict:
    """The view in a URL query string (``?run=a&run=b&step=3&layer=x``)."""
    query = parse_qs((search or "").lstrip("?"), keep_blank_values=False)
    runs = [r for r in query.get("run", []) if r][:settings.MAX_URL_RUNS]
    step = None
    for text in query.get("step", [])[:1]:
        try:
            step = max(0, int(text))
        except ValueError:
            step = None
    layer = (query.get("layer") or [None])[0]
    return {"runs": _unique(runs), "step": step, "layer": layer}


KEEP = "keep"
"""The step of a click that selects a layer only (a heatmap row): the step stays."""


def next_view(old: dict | None, trigger, search: str | None, selected, newest: str | None,
              row: tuple | None, latest) -> dict:
    """The view after ``trigger`` fired (see :func:`dashboard.callbacks.navigate`).

    A page whose URL names no run *follows*: it shows the newest run (``latest()``) and
    switches to each run that appears while it is open (``newest``, from the poll), live,
    without a reload or a click. Picking runs stops following; clearing the pick resumes it.
    """
    view = dict(old or {})
    if trigger is None or trigger == "url" or not old:
        view = parse_query(search)
        view["follow"] = not view["runs"]
        first = latest() if view["follow"] else None
        if first:
            view["runs"] = [first]
    elif trigger == "run-select":
        view["runs"] = list(selected or [])
        view["follow"] = not view["runs"]
    elif trigger == "newest":
        if view.get("follow") and newest and view.get("runs") != [newest]:
            view.update(runs=[newest], step=None, layer=None)
    elif row:
        _run, _id, step, layer = row
        view.update(layer=layer, **({} if step is KEEP else {"step": step}))
    return view


def build_query(view: dict) -> str:
    """The URL query string of ``view`` (``""`` for an empty view)."""
    pairs = [("run", r) for r in view.get("runs") or []]
    if view.get("step") is not None:
        pairs.append(("step", str(view["step"])))
    if view.get("layer"):
        pairs.append(("layer", view["layer"]))
    return "?" + urlencode(pairs) if pairs else ""


def step_range(heads: dict | None, runs: list) -> tuple:
    """``(first, last)`` step over the selected runs' heads, ``(0, 0)`` when none has steps."""
    firsts, lasts = [], []
    for run in runs:
        head = (heads or {}).get(run) or {}
        if head.get("last") is not None:
            firsts.append(head["first"])
            lasts.append(head["last"])
    if not lasts:
        return 0, 0
    return min(firsts), max(lasts)


def marks(first: int, last: int, count: int = settings.SLIDER_MARKS) -> dict:
    """About ``count`` labelled slider marks at round steps (1, 2 or 5 times a power of ten)."""
    first, last = int(first), int(last)
    if last <= first:
        return {first: f"{first:,}"}
    raw = (last - first) / max(count, 1)
    power = 10 ** max(0, int(math.floor(math.log10(raw))))  # steps are integers
    stride = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    start = -(-first // stride) * stride
    out = {v: f"{v:,}" for v in range(start, last + 1, stride)}
    out.setdefault(first, f"{first:,}")
    return dict(sorted(out.items()))


def slider_step(value, first: int, last: int) -> int | None:
    """The view step for a slider position: None (follow the last step) at the right end."""
    if value is None or value >= last:
        return None
    return int(max(first, value))


def label(view: dict, first: int, last: int) -> str:
    """The text beside the slider."""
    step = view.get("step")
    if step is None:
        return f"step {last:,} (latest)"
    return f"step {step:,} of {first:,}..{last:,}"


def _unique(items: list) -> list:
    seen, out = set(), []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out
