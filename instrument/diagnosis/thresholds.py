"""Every threshold of the diagnosis rules, named and documented in one place.

Override any of them per run with ``instrument.watch(..., thresholds={"dead_fraction": 0.7})``
or on a saved run with ``avionics diagnose RUN --set dead_fraction=0.7``. Unknown names and
values of the wrong kind raise errors that say what is allowed.

Windows count *recorded* steps of the series a rule reads: gradient statistics are recorded
every step by default, activation statistics every 10th step (``schedules={"activations": n}``).
The defaults are chosen so that healthy training stays quiet: every rule needs its condition to
persist over several records before it fires.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def _t(default: Any, doc: str):
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class Thresholds:
    """The rules' thresholds. Field docs say what each one means (``Thresholds.doc(name)``)."""

    # ---- engine -----------------------------------------------------------------------------
    history: int = _t(256, "Records kept per series for the windowed rules (bounds memory).")
    explain_steps: int = _t(50, "A finding is linked to a root cause (a code in its rule's "
                                "suppressed_by) found at most this many steps later.")
    disabled_rules: tuple = _t((), "Rule codes to switch off, e.g. ('repeated_batch',) for "
                                   "deliberate full-batch training.")

    # ---- missing_zero_grad --------------------------------------------------------------------
    zero_grad_steps: int = _t(2, "Optimizer steps (within the last zero_grad_window) whose "
                                 "backward accumulated into the previous step's gradient.")
    zero_grad_window: int = _t(5, "Recorded steps looked at by missing_zero_grad.")

    # ---- lr_too_high ---------------------------------------------------------------------------
    lr_high_update_ratio: float = _t(0.1, "Median update/weight ratio of the weight matrices "
                                          "above this (100x the healthy ~1e-3) counts as a "
                                          "too-large step.")
    lr_high_window: int = _t(20, "Recorded steps over which the update ratio must stay high.")
    lr_high_fraction: float = _t(0.8, "Fraction of lr_high_window steps that must be high.")
    lr_extreme_update_ratio: float = _t(0.5, "A median update/weight ratio above this (each "
                                             "step moves the weights by half their size or "
                                             "more; the ratio saturates near 1) fires after "
                                             "lr_extreme_steps steps in a row.")
    lr_extreme_steps: int = _t(2, "Consecutive steps above lr_extreme_update_ratio.")
    loss_smooth: int = _t(9, "Losses in the rolling median that smooths the loss curve.")
    loss_rise_factor: float = _t(2.0, "Divergence: the loss exceeds this multiple of its "
                                      "initial value ...")
    loss_rise_steps: int = _t(3, "... after rising at this many consecutive records (one less "
                                 "when the update ratio is above lr_high_update_ratio too) ...")
    loss_noise_min: int = _t(5, "... and, once this many losses precede the rise, ...")
    loss_noise_records: int = _t(16, "... (the last this many of them) ...")
    loss_rise_noise: float = _t(4.0, "... every loss of the rise is more than this many sigmas "
                                     "(1.4826 MAD; of the log-losses when all are positive) "
                                     "above their median (fine-tuning starts at a low, noisy "
                                     "loss; bad batches are spikes).")
    zero_init_records: int = _t(100, "Weight matrices that start at exactly zero are left out of "
                                     "the update-ratio median for this many records (their "
                                     "ratio is 1, 1/2, 1/3, ... by construction).")
    loss_jump_factor: float = _t(10.0, "A loss more than this many times the median of the "
                                       "losses before it, right after an update above "
                                       "lr_high_update_ratio, is a divergence (one step "
                                       "wrecked the model).")
    loss_regain_fraction: float = _t(0.5, "Divergence later in training: the smoothed loss "
                                          "gives back this fraction of the progress made ...")
    loss_regain_window: int = _t(10, "... and stays there for this many records ...")
    loss_regain_min_progress: float = _t(0.2, "... once the progress is at least this fraction "
                                              "of the initial loss (noise on a flat curve is "
                                              "not divergence) ...")
    loss_regain_noise: float = _t(4.0, "... and progress and rise both exceed this many "
                                       "standard errors of the rolling median (a noisy "
                                       "plateau's rolling minimum is no progress) ...")
    loss_regain_noise_records: int = _t(64, "... with sigma from the MAD of the last this many "
                                            "losses.")

    lr_growth_window: int = _t(100, "Growth criterion (adaptive optimizers, no divergence): "
                                    "over this many records ...")
    lr_growth_update_ratio: float = _t(0.01, "... the median update/weight ratio is above this "
                                             "(10x the healthy ~1e-3) in lr_high_fraction of "
                                             "them ...")
    lr_growth_factor: float = _t(5.0, "... the total weight-matrix norm is this many times its "
                                      "first value ...")
    lr_growth_recent: float = _t(0.1, "... and grew by this fraction over the window, while the "
                                      "loss changed by less than lr_low_loss_change (a "
                                      "plateau).")

    # ---- lr_too_low ----------------------------------------------------------------------------
    lr_low_update_ratio: float = _t(1e-5, "Update/weight ratio below this (100x below the "
                                          "healthy ~1e-3) counts as a vanishing step.")
    lr_low_layer_fraction: float = _t(0.75, "Fraction of weight matrices that must be below "
                                            "lr_low_update_ratio.")
    lr_low_window: int = _t(100, "Recorded steps over which updates must stay tiny.")
    lr_low_loss_change: float = _t(0.02, "... while the smoothed loss changes by less than this "
                                         "fraction over the window.")
    lr_low_schedule_fraction: float = _t(0.1, "Quiet while the learning rate is below this "
                                              "fraction of its peak (the end of a decay), and "
                                              "while it rises (warm-up).")

    # ---- exploding_gradients --------------------------------------------------------------------
    explode_factor: float = _t(10.0, "The global gradient norm is this many times its running "
                                     "median ...")
    explode_window: int = _t(50, "... over this many recorded steps (the running median) ...")
    explode_steps: int = _t(5, "... in this many of the last explode_recent records (near "
                               "convergence single batches spike 10-50x: only a sustained "
                               "level shift counts).")
    explode_recent: int = _t(5, "Recent records inspected by exploding_gradients.")
    explode_min_baseline: int = _t(50, "Records before the rule judges (early training moves "
                                       "the gradient norm by 10x and more as the network "
                                       "leaves its initialization).")
    explode_spike_factor: float = _t(1e3, "Or: spikes above this multiple of the median of the "
                                          "last explode_window records ...")
    explode_spikes: int = _t(2, "... at least this many of them in that window.")
    explode_growth: float = _t(1e3, "Or: the gradient norm (rolling median of 5) grew by this "
                                    "factor over its median in the 5 records before judging "
                                    "starts.")

    # ---- clipping_saturated --------------------------------------------------------------------
    clip_fraction: float = _t(0.5, "Fraction of recent steps whose global gradient norm sits at "
                                   "the same ceiling (clipped) ...")
    clip_window: int = _t(100, "... over this many recorded steps.")
    clip_tolerance: float = _t(1e-4, "Relative distance to the ceiling that counts as clipped.")

    # ---- vanishing_gradients --------------------------------------------------------------------
    vanish_ratio: float = _t(1e-3, "RMS gradient of the first weight layers divided by that of "
                                   "the last ones below this ...")
    vanish_window: int = _t(20, "... in the median over this many recorded steps.")
    vanish_min_layers: int = _t(3, "Weight matrices needed before the rule looks at depth.")

    # ---- dead_units / saturated_units / activation_scale ----------------------------------------
    act_records: int = _t(5, "Activation records looked at by the activation rules.")
    act_persist: float = _t(0.8, "Fraction of those records in which the condition must hold.")
    dead_fraction: float = _t(0.5, "Fraction of a ReLU-like layer's units that are zero for the "
                                   "whole batch.")
    dead_min_batch: int = _t(16, "Below this many values per unit in a step (batch rows times "
                                 "positions) a unit is easily zero for a whole batch by "
                                 "chance: dead_units stays quiet for that layer.")
    saturation_fraction: float = _t(0.5, "Fraction of a hidden tanh/sigmoid layer's outputs "
                                         "within 3% of the range limits (trained tanh nets "
                                         "reach 20-30% while healthy).")
    act_std_low: float = _t(0.02, "Hidden activation std below this (25x below the healthy "
                                  "~[0.5, 2]; default-initialized nets start near 0.05) ...")
    act_std_high: float = _t(20.0, "... or above this (10x above).")
    act_origin_factor: float = _t(4.0, "A std off its bounds counts as grown (shrunk) during "
                                       "training, not set by the initialization, when it was "
                                       "within bounds at the first record and changed by this "
                                       "factor since.")
    act_drift: float = _t(100.0, "Or: std changes by this factor, monotonically, across ...")
    act_drift_layers: int = _t(4, "... at least this many consecutive weight layers.")

    # ---- frozen_parameters -----------------------------------------------------------------------
    frozen_window: int = _t(50, "Recorded steps over which a trainable parameter gets no "
                                "gradient, or does not change.")
    frozen_grad_ratio: float = _t(1e-6, "Gradient norm / weight norm below which a gradient is "
                                        "rounding noise, not a reason to change.")

    # ---- lr_schedule_increasing -----------------------------------------------------------------
    schedule_rise_steps: int = _t(5, "Consecutive learning-rate increases after a decay has "
                                     "begun (a warm restart is one jump and stays quiet).")
    schedule_tolerance: float = _t(1e-6, "Relative change of the learning rate that counts.")
    schedule_growth_factor: float = _t(100.0, "Before any decay: a learning rate this many "
                                              "times its first positive value ...")
    schedule_log_ratio: float = _t(0.9, "... whose logarithm rose over the second half of the "
                                        "rise by at least this fraction of the first half's "
                                        "rise grows geometrically (gamma > 1), not like a "
                                        "warm-up.")
    schedule_warmup_max: int = _t(20000, "Steps a learning rate may keep rising from its first "
                                         "positive value before it is no warm-up.")

    # ---- eval_mode_training -------------------------------------------------------------------
    eval_steps: int = _t(2, "Optimizer steps with a module in eval mode, within ...")
    eval_window: int = _t(5, "... the last this many recorded steps.")

    # ---- loss_at_chance / initial_loss -----------------------------------------------------------
    chance_tolerance: float = _t(0.03, "The loss is within this fraction of ln(classes) ...")
    chance_window: int = _t(50, "... for the median of this many recorded steps and for both "
                                "halves of it ...")
    chance_min_step: int = _t(100, "... and no earlier than this step.")
    initial_records: int = _t(1, "First criterion losses compared with ln(classes) (the "
                                 "first step's loss is taken before any update).")
    initial_high_factor: float = _t(1.5, "First losses above this multiple of ln(classes) "
                                         "(over-confident initialization) ...")
    initial_high_excess: float = _t(0.5, "... and at least this many nats above it.")
    initial_low_factor: float = _t(0.25, "First losses below this multiple of ln(classes) "
                                         "(a trained model, or leaked labels): info.")

    # ---- input_scale -----------------------------------------------------------------------------
    input_records: int = _t(5, "Recorded steps looked at by input_scale (all must agree).")
    input_std_high: float = _t(10.0, "Input std above this (e.g. pixels in 0..255).")
    input_mean_ratio: float = _t(4.0, "|mean| above this many stds (and above "
                                      "input_mean_min) ...")
    input_mean_min: float = _t(1.0, "... and above this absolute value.")
    input_absmax_low: float = _t(0.01, "Largest |input| below this (e.g. scaled twice).")

    # ---- probabilities_into_loss -----------------------------------------------------------------
    prob_tolerance: float = _t(1e-3, "Rows of the loss input summing (or exp-summing) to 1 "
                                     "within this tolerance count as probabilities "
                                     "(log-probabilities).")
    prob_records: int = _t(3, "Consecutive logits records that must agree.")

    # ---- single_label_batch ----------------------------------------------------------------------
    single_window: int = _t(20, "Recorded steps looked at by single_label_batch ...")
    single_fraction: float = _t(0.5, "... of which at least this fraction have one class only ...")
    single_min_targets: int = _t(8, "... counting batches with at least this many targets.")

    # ---- repeated_batch --------------------------------------------------------------------------
    repeat_steps: int = _t(10, "Consecutive recorded steps fed the identical input batch.")
    repeat_tolerance: float = _t(1e-9, "Relative difference of input fingerprints that counts "
                                       "as identical.")

    # ---- construction ----------------------------------------------------------------------------
    @classmethod
    def names(cls) -> list:
        """All threshold names, in declaration order."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def doc(cls, name: str) -> str:
        """The documentation of threshold ``name``."""
        return {f.name: f.metadata["doc"] for f in dataclasses.fields(cls)}[name]

    @classmethod
    def from_overrides(cls, overrides: Mapping[str, Any] | None = None,
                       known_codes: tuple | None = None) -> Thresholds:
        """Defaults with ``overrides`` applied, checked.

        Args:
            overrides: threshold name -> value (``None`` keeps all defaults).
            known_codes: rule codes accepted in ``disabled_rules`` (checked when given).

        Raises:
            TypeError: ``overrides`` is not a mapping, or a value has the wrong type.
            ValueError: an unknown name, a non-positive or non-finite value, a bad rule code.
        """
        if overrides is None:
            return cls()
        if isinstance(overrides, Thresholds):
            return overrides
        if not isinstance(overrides, Mapping):
            raise TypeError(f"thresholds must be a dict of threshold name -> value, got "
                            f"{type(overrides).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values = {}
        for name, value in overrides.items():
            if name not in fields:
                close = difflib.get_close_matches(str(name), fields, n=3)
                hint = f" Did you mean {', '.join(close)}?" if close else ""
                raise ValueError(f"unknown threshold {name!r}.{hint} Known thresholds: "
                                 f"{', '.join(fields)} (documented in docs/rules.md).")
            values[name] = _check_value(name, fields[name].default, value, known_codes)
        return dataclasses.replace(cls(), **values)

    def overrides(self) -> dict:
        """The thresholds that differ from the defaults (JSON-friendly), for the run's metadata."""
        default = Thresholds()
        out = {}
        for name in self.names():
            value = getattr(self, name)
            if value != getattr(default, name):
                out[name] = list(value) if isinstance(value, tuple) else value
        return out


def _check_value(name: str, default: Any, value: Any, known_codes) -> Any:
    if isinstance(default, tuple):
        if isinstance(value, str):
            value = (value,)
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise TypeError(f"threshold {name!r} takes a list of rule codes, got {value!r}")
        if known_codes is not None:
            bad = [v for v in value if v not in known_codes]
            if bad:
                raise ValueError(f"threshold {name!r}: unknown rule code(s) {bad}; known: "
                                 f"{', '.join(known_codes)}")
        return tuple(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"threshold {name!r} takes a number, got {type(value).__name__} "
                        f"{value!r}")
    if isinstance(default, int):
        if float(value) != int(value):
            raise TypeError(f"threshold {name!r} counts records and takes an integer, got "
                            f"{value!r}")
        value = int(value)
        if value < 1:
            raise ValueError(f"threshold {name!r} must be >= 1, got {value}")
        return value
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"threshold {name!r} must be a positive finite number, got {value!r}")
    return value
