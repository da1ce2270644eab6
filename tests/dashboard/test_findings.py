"""Findings ranked and grouped for the health strip, checked against orders written out by hand."""

from __future__ import annotations

import json

import pandas as pd

from dashboard import findings


def _frame(rows) -> pd.DataFrame:
    cols = ["id", "step", "code", "severity", "layer", "message", "evidence", "suggestion"]
    df = pd.DataFrame([dict(zip(cols, r)) for r in rows], columns=cols)
    return df.assign(run="r", run_label="r", wall_time=0.0)


def test_one_code_across_layers_is_one_group_with_every_layer():
    rows = [(i + 1, 10 + i, "dead_units", "warning", f"m{i}", f"dead in m{i}", None, None)
            for i in range(37)]
    groups = findings.groups(_frame(rows))
    assert len(groups) == 1
    g = groups[0]
    assert g.layers == [f"m{i}" for i in range(37)] and g.count == 37
    assert g.summary() == "dead_units: 37 layers"
    assert (g.step, g.layer, g.event_id) == (10, "m0", 1)  # headline: the earliest


def test_layers_listed_in_the_evidence_count_and_the_worst_layer_heads_the_group():
    ev = json.dumps({"layers": ["a", "b", "c"]})
    groups = findings.groups(_frame([(1, 5, "dead_units", "warning", "b", "m", ev, None)]))
    assert groups[0].layers == ["a", "b", "c"] and groups[0].layer == "b"


def test_rank_severity_then_cause_before_consequence_then_step():
    cause = json.dumps({"explains": ["dead_units@3:m0"]})
    rows = [(1, 3, "dead_units", "warning", "m0", "", None, None),
            (2, 9, "vanishing_gradients", "warning", None, "", cause, None),
            (3, 1, "clipping_saturated", "info", None, "", None, None),
            (4, 50, "nonfinite", "critical", "0", "", None, None),
            (5, 2, "initial_loss", "warning", None, "", None, None),
            (6, 4, "lr_too_high", "warning", None, "",
             json.dumps({"suppressed_by": ["missing_zero_grad"]}), None)]
    order = [g.code for g in findings.groups(_frame(rows))]
    # by hand: critical first; among warnings the cause (step 9) before the plain one (step 2),
    # then the consequences by step (dead_units 3, lr_too_high 4); info last
    assert order == ["nonfinite", "vanishing_gradients", "initial_loss", "dead_units",
                     "lr_too_high", "clipping_saturated"]
    assert findings.counts(_frame(rows)) == {"info": 1, "warning": 4, "critical": 1}


def test_no_events_no_groups():
    assert findings.groups(_frame([])) == []
    assert findings.nonfinite_steps(_frame([])) == []
