"""Dashboard test set-up: headless Chromium for dash[testing] browser tests, and shared runs.

Browser test modules set ``pytestmark = pytest.mark.browser``. Without an X display Chrome must run
headless, otherwise dash.testing retries the webdriver for 30 s and then fails; this file turns
``--headless`` on when ``$DISPLAY`` is unset and points dash.testing at Debian's chromium.
"""

from __future__ import annotations

import logging
import os
import shutil

# dash.testing stops its Flask server thread by raising an exception in it asynchronously
# (PyThreadState_SetAsyncExc). If that lands while the thread is logging a request, the lock of
# every handler it was in (pytest's own capture handlers, shared by all later tests) stays held,
# and the next log call anywhere in the session waits forever (seen: a diagnosis test hung in
# StoreWriter.close's warning). The server's request log is of no use to the tests: it is off,
# so server threads never take those locks.
logging.getLogger("werkzeug").disabled = True

_chromium = shutil.which("chromium") or shutil.which("chromium-browser")
if _chromium and "DASH_TEST_CHROMEPATH" not in os.environ:
    os.environ["DASH_TEST_CHROMEPATH"] = _chromium


def pytest_configure(config):
    if hasattr(config.option, "headless") and not os.environ.get("DISPLAY"):
        config.option.headless = True


def pytest_setup_options():
    """dash.testing hook: the selenium options browsers start from."""
    from selenium.webdriver.chrome.options import Options

    options = Options()
    options.add_argument("--window-size=1400,1000")
    return options

