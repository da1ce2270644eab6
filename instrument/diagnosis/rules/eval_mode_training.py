"""eval_mode_training: optimizer steps happen while the model, or one of its dropout or
batch-norm modules, is in eval mode.

Reads the ``train_mode`` instrument's flags, taken at each optimizer step. The usual cause is a
``model.eval()`` for validation without ``model.train()`` afterwards. A batch-norm module put in
eval mode on its own while the model trains is a known fine-tuning technique (frozen
statistics), so that case is reported as info, not as a warning.
"""

from __future__ import annotations

import numpy as np

from instrument.diagnosis.facts import BATCHNORM
from instrument.diagnosis.finding import Finding
from instrument.diagnosis.rule import Rule
from instrument.store import schema
from instrument.store.schema import DKeys


def check(h, th, facts, state):
    if not h.has(DKeys.TRAIN_MODE):
        return []
    steps, mat, names = h.layer(DKeys.TRAIN_MODE, th.eval_window)
    in_eval = mat == 0
    persistent = in_eval[-1] & (in_eval.sum(axis=0) >= th.eval_steps)
    if not persistent.any():
        return []
    kinds = {m["name"]: m["kind"] for m in facts.modules}
    evals = [names[i] for i in np.flatnonzero(persistent)]
    since = int(steps[np.argmax(in_eval.any(axis=1))])
    if DKeys.MODEL_LAYER in evals:
        modules = [n for n in evals if n != DKeys.MODEL_LAYER]
        return [Finding(
            f"The model is in eval mode during training: optimizer steps at step {h.step} "
            f"(and since step {since}) run with dropout off and batch-norm statistics frozen "
            f"({len(modules)} dropout/batch-norm module(s) affected).",
            None, {"modules": modules[:20], "since": since})]
    out = []
    for name in evals:
        bn = kinds.get(name) == BATCHNORM
        out.append(Finding(
            f"Module '{name}' ({'batch norm' if bn else 'dropout'}) is in eval mode at the "
            f"optimizer step {h.step} although the model trains"
            + (": its running statistics are frozen (fine if you froze them on purpose)."
               if bn else ": dropout is off for it."),
            name, {"since": since, "kind": kinds.get(name)},
            severity=schema.INFO if bn else None))
    return out


RULE = Rule(
    code="eval_mode_training", severity=schema.WARNING,
    summary="optimizer steps happen while the model or a dropout/batch-norm module is in eval mode",
    suggestion=("Call model.train() before the training forward passes, e.g. at the start of "
                "every epoch and after each validation that calls model.eval()."),
    check=check, needs=("train_mode",), keys=(DKeys.TRAIN_MODE,), after_nonfinite=True,
    windows=lambda th: {DKeys.TRAIN_MODE: th.eval_window})
