"""avionics inside training frameworks. Each module imports its framework on import, so import
the one you use (the package itself imports none of them):

* :mod:`instrument.integrations.transformers` -- ``AvionicsCallback`` for Hugging Face ``Trainer``;
* :mod:`instrument.integrations.lightning` -- ``AvionicsCallback`` and ``AvionicsLogger`` for
  ``lightning`` (``import lightning``; falls back to ``pytorch_lightning`` if only that is
  installed);
* :mod:`instrument.integrations.pytorch_lightning` -- the same for ``import pytorch_lightning``;
* :mod:`instrument.integrations.accelerate` -- ``watch()`` on ``accelerator.prepare``'d objects
  and ``AvionicsTracker`` for ``Accelerator(log_with=...)``.

The frameworks come with the ``integrations`` extra: ``pip install avionics[integrations]``.
"""
