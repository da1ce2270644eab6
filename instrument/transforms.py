"""``torch.func`` transforms (``vmap``, ``grad``, ``jacrev``...): forwards run inside them are
not measured.

Per-sample gradients computed the functional way (``vmap(grad(loss))(params, x, y)`` with
``functional_call``, as differential-privacy code does) call the model's forward inside a
transform: its tensors are functorch wrappers, one sample at a time under ``vmap``, and
functorch refuses in-place writes from inside a transform to tensors created outside it (the
monitor's statistics buffer). Measured there, the monitor would break the user's step. So
model, module and loss hooks do nothing inside a transform; the step itself is still counted by
the optimizer's hooks, and the gradient, weight, update and optimizer statistics read the
``.grad`` the loop assigns. Activation statistics and the forward NaN origin come from forwards
run outside transforms (none, if every forward is transformed).
"""

from __future__ import annotations

import torch

_peek = torch._C._functorch.peek_interpreter_stack

SKIPPED = "transformed_forwards"
"""``ctx.services`` key set once a forward or captured loss was skipped inside a transform (the
criterion instrument's ``loss_not_captured`` note then says why it saw no loss)."""


def in_transform() -> bool:
    """True while a ``torch.func`` transform runs on this thread (about 0.1 us)."""
    return _peek() is not None
