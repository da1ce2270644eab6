"""The series-key registry in the store's schema: one declaration per key, kinds derived."""

import pytest

from instrument.store import schema
from instrument.store.schema import CockpitKeys, DKeys, Keys


def test_every_key_is_declared_once_with_a_known_kind():
    names = [s.name for s in schema.declared()]
    assert len(names) == len(set(names))
    assert all(s.kind in schema.KINDS for s in schema.declared())
    with pytest.raises(ValueError, match="declared twice"):
        schema.declare(Keys.GRAD_NORM, schema.PER_LAYER, layered=True)
    with pytest.raises(ValueError, match="unknown key kind"):
        schema.declare("brand/new", "metric")


def test_class_constants_are_the_declared_names():
    for cls in (Keys, DKeys, CockpitKeys):
        for attr, value in vars(cls).items():
            if attr.isupper() and isinstance(value, str) and "/" in value.rstrip("/"):
                assert schema.specs_of(value) or value.endswith("/"), (cls.__name__, attr)


@pytest.mark.parametrize("key", [
    "loss", "acc", "val_acc", "lr", "train/loss", "grad_norm", "my/input/mean", "lrs/0"])
def test_user_scalars_are_not_reserved(key):
    assert schema.is_user_scalar(key) and not schema.is_reserved_scalar(key)
    assert not schema.is_diagnosis_fact(key)


@pytest.mark.parametrize("key, fact", [
    (Keys.GRAD_NORM_TOTAL, False), (Keys.GRAD_NORM_TOTAL_BEFORE_CLIP, False),
    (Keys.per_group(Keys.LR, 3), False), (Keys.per_group(Keys.BETA2, 0), False),
    (Keys.RANK_STEP_TIME_SPREAD, False), (CockpitKeys.total(CockpitKeys.NORM_TEST), False),
    (CockpitKeys.HESS_MAX_EV, False), (DKeys.INPUT_MEAN, True), (DKeys.INPUT_FP0, True),
    (DKeys.CRIT_CLASSES, True), (DKeys.LOGIT_LSE_DEV, True), ("input/anything_new", True),
])
def test_builtin_scalars_and_facts_are_reserved(key, fact):
    assert schema.is_reserved_scalar(key) and Keys.is_builtin_scalar(key)
    assert not schema.is_user_scalar(key)
    assert schema.is_diagnosis_fact(key) is fact


def test_layer_series_know_they_are_layered():
    for key in (Keys.GRAD_NORM, Keys.ACT_DEAD_FRAC, DKeys.GRAD_STALE, CockpitKeys.NORM_TEST,
                CockpitKeys.hist_1d_of("fc.weight")):
        assert any(s.layered for s in schema.specs_of(key)), key
