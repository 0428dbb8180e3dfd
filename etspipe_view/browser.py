"""A headless system Chromium driven by Playwright, for the page's tests, benchmark and screenshots.

Playwright's own browser downloads are not used: the system browser (Debian's
`chromium`, installed by scripts/ensure_chromium.sh) is launched by its path.
Nothing here is needed to build or open a page; Playwright is imported only
when a browser is asked for.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = ("install Chromium (Debian/Ubuntu as root: bash scripts/ensure_chromium.sh, or apt-get install "
                "chromium) and Playwright for Python (pip install playwright), or point ETSPIPE_CHROMIUM at a "
                "Chromium/Chrome executable")


def find_chromium() -> str | None:
    """The browser executable: $ETSPIPE_CHROMIUM, else the first Chromium/Chrome on PATH."""
    env = os.environ.get("ETSPIPE_CHROMIUM")
    if env:
        return env if os.path.isfile(env) and os.access(env, os.X_OK) else None
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def browser_missing() -> str | None:
    """Why no browser can be driven here (None when one can)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed; " + INSTALL_HINT
    if find_chromium() is None:
        return "no Chromium found; " + INSTALL_HINT
    return None


@contextmanager
def chromium(**launch: Any) -> Iterator[Any]:
    """A launched headless browser (Playwright `Browser`), closed on exit."""
    from playwright.sync_api import sync_playwright

    path = find_chromium()
    if path is None:
        raise RuntimeError("no Chromium found; " + INSTALL_HINT)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, headless=True,
                                     args=["--autoplay-policy=no-user-gesture-required", "--mute-audio",
                                           "--disable-dev-shm-usage"], **launch)
        try:
            yield browser
        finally:
            browser.close()
