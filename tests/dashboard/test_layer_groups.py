"""Layer groups (numbered blocks, module types): every group and the layers its pattern picks
through the panels' own search (``base.select``) against a brute-force reference."""

from __future__ import annotations

import random

from benchmarks.models import GPT
from dashboard import layer_groups
from dashboard.panels.base import select
from instrument.modules import display_name
from instrument.summary import model_summary


def brute_path_groups(names: list) -> dict:
    """``{prefix: members}``: every prefix ending in an integer segment whose container has at
    least two distinct integer children, with the names whose segments start with it."""
    split = [n.split(".") for n in names]
    prefixes = {tuple(s[:k]) for s in split for k in range(1, len(s) + 1) if s[k - 1].isdigit()}
    out = {}
    for p in prefixes:
        siblings = {q for q in prefixes if len(q) == len(p) and q[:-1] == p[:-1]}
        if len(siblings) >= 2:
            out[".".join(p)] = {n for n, s in zip(names, split) if tuple(s[:len(p)]) == p}
    return out


def brute_type_groups(runs: list) -> dict:
    out = {}
    for names, meta in runs:
        types = {}
        for m in (meta.get("model") or {}).get("layers", []):
            types[m["name"]] = m["type"]
        for n in names:
            parent = n[:n.rfind(".")] if "." in n else None
            kind = types[n] if n in types else types.get(parent)
            if kind is not None:
                out.setdefault(kind, set()).add(n)
    return out


def check(runs: list) -> list:
    names = sorted({n for layer_names, _ in runs for n in layer_names})
    got = layer_groups.groups(runs)
    paths = {g["label"].split(" ")[1]: g for g in got if g["kind"] == "path"}
    kinds = {g["label"].split(" ")[1]: g for g in got if g["kind"] == "type"}
    want_paths, want_types = brute_path_groups(names), brute_type_groups(runs)
    assert set(paths) == set(want_paths)
    assert set(kinds) == set(want_types)
    for prefix, members in want_paths.items():
        assert set(select(names, paths[prefix]["value"])) == members, prefix
        assert paths[prefix]["layers"] == len(members)
    for kind, members in want_types.items():
        assert set(select(names, kinds[kind]["value"])) == members, kind
        assert kinds[kind]["layers"] == len(members)
    return got


def gpt_run(blocks: int, tied: bool = True) -> tuple:
    """Layer names and meta as a real run of benchmarks' GPT records them: parameter names (the
    gradient and update series) and leaf module names (activations)."""
    model = GPT(blocks=blocks, d=8, heads=2, vocab=16, ctx=4)
    params = [display_name(n) for n, _ in model.named_parameters()]
    leaves = [display_name(n) for n, m in model.named_modules() if n and not list(m.children())]
    meta = {"model": model_summary(model, leaves)}
    return params + leaves, meta


def test_gpt_blocks_and_types():
    got = check([gpt_run(3)])
    labels = [g["label"] for g in got]
    # 12 parameters and 7 leaf modules per block; the blocks first, then the children of
    # their Sequential MLPs
    assert labels[:6] == ["path h.0 (19 layers)", "path h.1 (19 layers)",
                          "path h.2 (19 layers)", "path h.0.mlp.0 (3 layers)",
                          "path h.0.mlp.1 (1 layer)", "path h.0.mlp.2 (3 layers)"]
    assert {"Linear", "LayerNorm", "Embedding"} <= {g.split(" ")[1] for g in labels
                                                    if g.startswith("type ")}
    h1 = next(g for g in got if g["label"].startswith("path h.1 "))
    assert h1["value"] == r"^h\.1(\.|$)"


def test_natural_order_and_prefix_boundaries():
    names = [f"layers.{i}.w" for i in range(12)] + ["layers.1x.w", "layers1.w"]
    got = check([(names, {})])
    order = [g["label"].split(" ")[1] for g in got]
    assert order == [f"layers.{i}" for i in range(12)]  # 2 before 10, 1 never takes 10..11
    assert not any(g["kind"] == "type" for g in got), "no meta: path groups only"


def test_top_level_sequential_and_nested_blocks():
    names = ["0.weight", "0.bias", "2.weight", "2", "0", "enc.layer.0.ff.0.weight",
             "enc.layer.0.ff.2.weight", "enc.layer.1.ff.0.weight", "single.0.w"]
    meta = {"model": {"layers": [{"name": "0", "type": "Linear"}, {"name": "2", "type": "Linear"},
                                 {"name": "1", "type": "ReLU"}]}}
    got = check([(names, meta)])
    prefixes = {g["label"].split(" ")[1] for g in got if g["kind"] == "path"}
    assert prefixes == {"0", "2", "enc.layer.0", "enc.layer.1", "enc.layer.0.ff.0",
                        "enc.layer.0.ff.2"}  # single.0 has no sibling, ff.* of layer 1 neither


def test_case_and_regex_characters_stay_exact():
    names = ["H.0.w", "h.0.w", "h.1.w", "H.1.w", "a+b.0.w", "a+b.1.w", "aab.0.w"]
    check([(names, {"model": {"layers": [{"name": "h.0", "type": "Lin"},
                                         {"name": "H.0", "type": "Other"}]}})])


def test_compare_union_and_a_run_without_meta():
    a = gpt_run(2)
    b = gpt_run(4)
    bare = ([f"blocks.{i}.fc.weight" for i in range(3)], {"model": None})
    got = check([a, b, bare])
    assert any(g["label"].startswith("path h.3 ") for g in got)
    assert any(g["label"].startswith("path blocks.2 ") for g in got)


def test_random_names_against_brute_force():
    rng = random.Random(0)
    segs = ["0", "1", "2", "10", "h", "H", "attn", "mlp", "weight", "bias", "x.y"]
    for _ in range(200):
        names = sorted({".".join(rng.choice(segs) for _ in range(rng.randint(1, 4)))
                        for _ in range(rng.randint(1, 25))})
        mods = rng.sample(names, k=min(len(names), 4))
        meta = {"model": {"layers": [{"name": m, "type": rng.choice(["Linear", "Conv2d"])}
                                     for m in mods]}}
        check([(names, meta)])


def test_choices_of_real_stores_and_the_fill(tmp_path):
    """The picker's options for two stores written through the real writer (one without a model
    summary), and a pick filling exactly the layer search boxes."""
    from dash import no_update

    from dashboard import layer_groups_ui
    from dashboard.panels import PANELS
    from dashboard.panels.base import hook
    from dashboard.runs import RunCatalog
    from instrument.store.reader import load
    from tests.dashboard import stores
    from tests.dashboard.test_walltime import write

    stores.write_run(str(tmp_path / "a"), steps=5)
    write(str(tmp_path / "b"), 6, seed=0)  # layers a.weight, b.weight; no model summary
    cat = RunCatalog(str(tmp_path))
    runs = []
    for name in ("a", "b"):
        run = load(str(tmp_path / name))
        names = {n for k in run.keys("layer") for n in run.layer_names(k)}
        runs.append((sorted(names), run.meta))
    assert "model" not in runs[1][1] and "b.weight" in runs[1][0]
    got, patterns = layer_groups_ui.choices(cat, ["a", "b", "../nope"])
    want = check(runs)
    # short option values (the labels); the patterns are looked up on a pick
    assert [(o["label"], o["value"], patterns[o["value"]]) for o in got] == \
        [(g["label"], g["label"], g["value"]) for g in want]
    assert "path 0 (3 layers)" in [o["label"] for o in got]  # 0.weight, 0.bias, module 0
    specs = [{"id": {"type": "panel-filter", "panel": p.NAME}} for p in PANELS]
    pattern = patterns[got[0]["value"]]
    filled = layer_groups_ui.fills(specs, pattern)
    for panel, value in zip(PANELS, filled):
        assert (value == pattern) == bool(hook(panel, "LAYER_FILTER"))
    cleared = layer_groups_ui.fills(specs, None)
    for panel, value in zip(PANELS, cleared):
        assert value == ("" if hook(panel, "LAYER_FILTER") else no_update)
