"""Names of the series that the diagnosis instruments record (torch-free, like store.schema.Keys).

The built-in series (gradient norms, update ratios, activations, ...) are named in
:class:`instrument.store.schema.Keys`; these are the extra facts some rules need. Instruments
write them, rules read them, and the dashboard shows them like any other series.
"""

from __future__ import annotations


class DKeys:
    """Series recorded for the diagnosis rules (see ``instrument/instruments/``)."""

    # zero_grad instrument, per parameter: 1 = this step's first backward accumulated into the
    # gradient left over from the previous optimizer step, 0 = into a cleared one, NaN = no
    # accumulation observed.
    GRAD_STALE = "grad_stale"

    # train_mode instrument, per module ("(model)" first, then dropout / batch-norm modules):
    # 1 = training mode, 0 = eval mode, at the optimizer step.
    TRAIN_MODE = "train_mode"

    # forward_order instrument, per leaf module: rank in the forward pass (0 = called first)
    FORWARD_ORDER = "forward_order"

    # inputs instrument (first tensor argument of the model's grad-enabled forward calls);
    # INPUT_BATCH counts the samples of the step (all micro-batches, all data-parallel ranks)
    INPUT_MEAN = "input/mean"
    INPUT_STD = "input/std"
    INPUT_MIN = "input/min"
    INPUT_MAX = "input/max"
    INPUT_BATCH = "input/batch"
    INPUT_FP0 = "input/fingerprint0"
    INPUT_FP1 = "input/fingerprint1"

    # criterion instrument (the loss module given as watch(loss_fn=...))
    CRIT_LOSS = "criterion/loss"
    CRIT_CLASSES = "criterion/classes"
    CRIT_TARGETS = "criterion/targets"
    CRIT_TARGET_MIN = "criterion/target_min"
    CRIT_TARGET_MAX = "criterion/target_max"

    # logits instrument (the criterion's first argument, class dimension = 1)
    LOGIT_MIN = "logits/min"
    LOGIT_MAX = "logits/max"
    LOGIT_SUM_DEV = "logits/rowsum_dev"
    LOGIT_LSE_DEV = "logits/logsumexp_dev"

    MODEL_LAYER = "(model)"
    """Layer name of the model itself in :attr:`TRAIN_MODE`."""
