"""avionics' browser dashboard: live and replayed instrument panels read from run stores.

>>> from dashboard import create_app
>>> create_app("runs/").run()         # or, served properly: avionics dashboard runs/

Reads only the store (``instrument.store``); never imports torch. ``create_app`` is imported
on first use (PEP 562), so ``avionics runs`` and other light users do not load Dash.
"""

__all__ = ["create_app"]


def __getattr__(name):
    if name == "create_app":
        from dashboard.app import create_app

        return create_app
    raise AttributeError(f"module 'dashboard' has no attribute {name!r}")
