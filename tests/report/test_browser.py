"""Open report.html in headless Debian Chromium (Playwright): sections visible, images decoded, no
console errors, no network request; a screenshot is saved for humans to look at.

Skipped when Playwright or Chromium is missing, except on CI (``CI=true``) where that is a failure.
Never runs ``playwright install``: it drives the system ``chromium`` with offline flags.
"""

import os
import shutil

import pytest

from robustlab.report import SECTIONS, build_report

pytestmark = pytest.mark.browser

#: flags measured to make Chromium open no network connection (see ENVIRONMENT.md); the user data
#: dir is given to launch_persistent_context, which refuses it among the args
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--host-resolver-rules=MAP * ~NOTFOUND"]


def _missing(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (required when CI=true)")
    pytest.skip(reason)


@pytest.fixture
def chromium():
    """(sync_playwright, path of the chromium executable)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install playwright; do not run `playwright install`)")
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        _missing("no chromium executable on PATH (apt-get install chromium)")
    return sync_playwright, exe


def test_report_renders_in_chromium(chromium, run_dir, tmp_path):
    sync_playwright, exe = chromium
    report = build_report(run_dir)
    errors, requests = [], []
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=exe, headless=True,
                                                   args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 900},
                                                   timeout=60_000)
        try:
            page = ctx.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(report.as_uri(), wait_until="load")
            for sid in SECTIONS:
                section = page.locator(f"#{sid}")
                assert section.count() == 1, sid
                assert section.is_visible(), sid
                assert section.bounding_box()["height"] > 40, sid
            images = page.evaluate("() => [...document.images].map(i => [i.complete, i.naturalWidth])")
            assert len(images) == 4
            assert all(done and width > 0 for done, width in images), images
            assert page.title().startswith("fake-suite")
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            ctx.close()
    assert errors == []
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
    assert shot.stat().st_size > 50_000
    if os.environ.get("ROBUSTLAB_SCREENSHOT_DIR"):
        dest = os.path.join(os.environ["ROBUSTLAB_SCREENSHOT_DIR"], "report.png")
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copyfile(shot, dest)
