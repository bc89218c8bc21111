"""What the browser tests share: Debian's Chromium, one per module (per xdist worker).

Each test module still skips itself, with the reason, where /usr/bin/chromium or the
playwright package is missing."""

import pytest

BROWSER = "/usr/bin/chromium"
TIMEOUT_MS = 30_000  # generous: CI machines run the suite on every core


@pytest.fixture(scope="module")
def browser(django_db_setup, live_server):
    """One Chromium per module; a test makes its own context.

    The test database and the live server come first: while Playwright's sync API
    runs, an asyncio loop is running on this thread and Django refuses ORM calls
    here (SynchronousOnlyOperation). The ORM calls of these tests and of the
    database flush after each are synchronous and safe, so the check is off only
    while the browser runs."""
    from playwright import sync_api

    with pytest.MonkeyPatch.context() as mp, sync_api.sync_playwright() as p:
        mp.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        chromium = p.chromium.launch(executable_path=BROWSER, headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()
