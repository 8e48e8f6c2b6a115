"""The one way the HMI tests drive a real browser: playwright on Debian's chromium.

No ``playwright install``: the distribution's /usr/bin/chromium is launched headless with
nothing that phones home (no component updates, sync or background networking).
"""

from __future__ import annotations

import contextlib
import shutil
import time

import pytest

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--no-first-run']
needs_chromium = pytest.mark.skipif(CHROMIUM is None,
                                    reason='chromium not installed (apt-get install chromium)')


@contextlib.contextmanager
def browser_page(width: int = 1600, height: int = 1000, init_script: str | None = None):
    """A fresh headless chromium page (playwright sync API); closed on exit."""
    sync_api = pytest.importorskip('playwright.sync_api',
                                   reason='pip install playwright (drives /usr/bin/chromium)')
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={'width': width, 'height': height})
            if init_script:
                page.add_init_script(init_script)
            yield page
        finally:
            browser.close()


def text(page, element_id: str) -> str:
    """The rendered text of the element with this id."""
    return page.locator(f'#{element_id}').inner_text()


def until(check, what: str, timeout_s: float = 20.0, period_s: float = 0.1):
    """Poll ``check()`` until it returns something truthy; fail with ``what`` otherwise."""
    deadline = time.monotonic() + timeout_s
    value = None
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(period_s)
    raise AssertionError(f'{what} (last: {value!r})')
