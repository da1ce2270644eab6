"""avionics' browser dashboard: live and replayed instrument panels read from run stores.

>>> from dashboard import create_app
>>> create_app("runs/").run()         # or, served properly: avionics dashboard runs/

Reads only the store (``instrument.store``); never imports torch.
"""

from dashboard.app import create_app

__all__ = ["create_app"]
