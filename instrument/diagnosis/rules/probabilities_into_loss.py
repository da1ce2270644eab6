"""probabilities_into_loss: the criterion's input looks like probabilities (or log-probabilities
where logits belong, or logits where log-probabilities belong).

Reads the ``logits`` instrument's per-row sums over the class dimension (for captured losses,
of the ``F.cross_entropy`` or ``F.nll_loss`` calls, as ``criterion/nll`` says):

* ``CrossEntropyLoss`` applies log_softmax itself. Inputs >= 0 whose rows sum to 1 are
  probabilities: a softmax was applied twice, which squashes the gradients (warning).
  Inputs whose rows logsumexp to 0 are log-probabilities: harmless (log_softmax is idempotent)
  but redundant (info).
* ``NLLLoss`` expects log-probabilities. Rows summing to 1 are probabilities (the log is
  missing, the loss is then -p[target]); rows whose logsumexp is not 0 are raw logits
  (log_softmax is missing, the loss is unbounded below).
* ``BCEWithLogitsLoss`` applies a sigmoid itself: inputs always inside [0, 1] are probably
  sigmoid outputs already.

The condition must hold in ``prob_records`` consecutive records.
"""

from __future__ import annotations

import numpy as np

from instrument.diagnosis.facts import BCE_LOGITS, CROSS_ENTROPY, NLL
from instrument.diagnosis.finding import Finding
from instrument.diagnosis.history import fmt
from instrument.diagnosis.rule import Rule
from instrument.store import schema
from instrument.store.schema import DKeys


def check(h, th, facts, state):
    return _captured_bce(h, th, facts) + _classifier(h, th, facts)


def _captured_bce(h, th, facts):
    """Captured ``F.binary_cross_entropy_with_logits`` calls whose input stays in [0, 1]."""
    n = th.prob_records
    if not (facts.criterion or {}).get("captured") or h.count(DKeys.BCE_INPUT_MIN) < n:
        return []
    _, lo = h.scalar(DKeys.BCE_INPUT_MIN, n)
    _, hi = h.scalar(DKeys.BCE_INPUT_MAX, n)
    if np.all((lo >= 0) & (hi <= 1)):
        return [_found(h, "F.binary_cross_entropy_with_logits", "sigmoid outputs (all values "
                       "within [0, 1])", lo, hi, {})]
    return []


def _classifier(h, th, facts):
    n = th.prob_records
    if not h.has(DKeys.LOGIT_MIN) or h.count(DKeys.LOGIT_MIN) < n:
        return []
    kind = facts.loss_kind(h, n)
    name = (facts.criterion or {}).get("class", "the criterion")
    if (facts.criterion or {}).get("captured"):
        name = {NLL: "F.nll_loss", CROSS_ENTROPY: "F.cross_entropy"}.get(kind, name)
    _, lo = h.scalar(DKeys.LOGIT_MIN, n)
    _, hi = h.scalar(DKeys.LOGIT_MAX, n)
    if kind == BCE_LOGITS:
        if np.all((lo >= 0) & (hi <= 1)):
            return [_found(h, name, "sigmoid outputs (all values within [0, 1])", lo, hi, {})]
        return []
    _, sdev = h.scalar(DKeys.LOGIT_SUM_DEV, n)
    _, ldev = h.scalar(DKeys.LOGIT_LSE_DEV, n)
    if len(sdev) < n or len(ldev) < n:
        return []
    probs = bool(np.all((lo >= 0) & (sdev <= th.prob_tolerance)))
    logp = bool(np.all((hi <= 0) & (ldev <= th.prob_tolerance)))
    ev = {"row_sum_deviation": float(sdev[-1]), "logsumexp_deviation": float(ldev[-1])}
    if kind == CROSS_ENTROPY and probs:
        return [_found(h, name, "probabilities (rows >= 0 summing to 1): a softmax was applied "
                       "before a loss that applies log_softmax itself", lo, hi, ev)]
    if kind == CROSS_ENTROPY and logp:
        return [_found(h, name, "log-probabilities (rows logsumexp to 0): log_softmax is applied "
                       "twice, which is harmless but redundant", lo, hi, ev, schema.INFO)]
    if kind == NLL and probs:
        return [_found(h, name, "probabilities, not log-probabilities: the log is missing",
                       lo, hi, ev)]
    if kind == NLL and np.all(ldev > th.prob_tolerance) and not logp:
        return [_found(h, name, "raw scores, not log-probabilities (rows do not logsumexp to "
                       "0): log_softmax is missing", lo, hi, ev)]
    return []


def _found(h, name, what, lo, hi, ev, severity=None):
    return Finding(f"The input of {name} at step {h.step} looks like {what}; values in "
                   f"[{fmt(lo[-1])}, {fmt(hi[-1])}].", None,
                   {**ev, "min": float(lo[-1]), "max": float(hi[-1])}, severity=severity)


RULE = Rule(
    code="probabilities_into_loss", severity=schema.WARNING,
    summary="the input of CrossEntropyLoss/NLLLoss looks like probabilities, or "
            "log-probabilities taken twice",
    suggestion=("Give CrossEntropyLoss (and BCEWithLogitsLoss) the raw logits, without "
                "softmax/sigmoid; give NLLLoss log_softmax(logits). Apply softmax only for "
                "predictions, outside the loss."),
    check=check, needs=("logits",),
    keys=(DKeys.LOGIT_MIN, DKeys.LOGIT_MAX, DKeys.LOGIT_SUM_DEV, DKeys.LOGIT_LSE_DEV,
          DKeys.CRIT_NLL, DKeys.BCE_INPUT_MIN, DKeys.BCE_INPUT_MAX))
