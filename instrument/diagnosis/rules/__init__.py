"""The diagnosis rules, one file each, in the order the engine runs them.

To add a rule: write ``rules/<code>.py`` with a ``check`` function and ``RULE = Rule(...)``
(see :mod:`instrument.diagnosis.rule`), put its thresholds into
:class:`~instrument.diagnosis.thresholds.Thresholds`, list it here, and document it in
docs/rules.md. Rules that explain other rules' symptoms come first (``suppressed_by``).
"""

from instrument.diagnosis.rules import (
                                        activation_scale,
                                        clipping_saturated,
                                        dead_units,
                                        eval_mode_training,
                                        exploding_gradients,
                                        frozen_in_optimizer,
                                        frozen_parameters,
                                        initial_loss,
                                        input_scale,
                                        loss_at_chance,
                                        lr_schedule_increasing,
                                        lr_too_high,
                                        lr_too_low,
                                        missing_zero_grad,
                                        nonfinite,
                                        probabilities_into_loss,
                                        repeated_batch,
                                        saturated_units,
                                        single_label_batch,
                                        vanishing_gradients,
)
from instrument.registries import unique

RULES = unique((m.RULE for m in (
    nonfinite, missing_zero_grad, eval_mode_training, probabilities_into_loss, input_scale,
    repeated_batch, single_label_batch, initial_loss, lr_too_high, exploding_gradients,
    clipping_saturated, lr_too_low, lr_schedule_increasing, loss_at_chance, frozen_parameters,
    frozen_in_optimizer,
    vanishing_gradients, dead_units, saturated_units, activation_scale,
)), lambda rule: rule.code, "rules")
"""All rules, in evaluation order."""

CODES = tuple(r.code for r in RULES)
"""Their codes (a public contract: stored with every finding)."""

__all__ = ["CODES", "RULES"]
