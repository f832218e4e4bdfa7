"""The page in a real browser: headless Chromium driven by Playwright.

Needs the `playwright` Python package and a Chromium binary (Debian: `apt-get install
chromium`; or set REELCHAIN_CHROMIUM to one). Playwright's own browser download is not
needed. Without them the test is skipped. Screenshots go to the test's temporary folder,
or to REELCHAIN_SCREENSHOTS when set.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STORY = """\
fps: 8
width: 32
height: 32
shots:
  - prompt: a paper boat on a rainy street
    seconds: 1
  - prompt: the boat reaches a river at dawn
    seconds: 1
"""


def chromium() -> str | None:
    named = os.environ.get("REELCHAIN_CHROMIUM")
    if named:
        return named
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    binary = chromium()
    if binary is None:
        pytest.skip("no Chromium binary (apt-get install chromium, or set REELCHAIN_CHROMIUM)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=binary, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("REELCHAIN_AUTH", None)
    log = folder / "server.log"
    cmd = [sys.executable, "app.py", "--model", "tiny", "--port", str(port),
           "--runs", str(folder / "runs")]  # fmt: skip
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=fh)
    address = f"http://127.0.0.1:{port}/"
    try:
        end = time.monotonic() + 90
        while True:
            if proc.poll() is not None or time.monotonic() > end:
                pytest.fail(f"server did not start:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(address, timeout=2):
                    break
            except OSError:
                time.sleep(0.3)
        yield address
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture
def shots(tmp_path):
    folder = Path(os.environ.get("REELCHAIN_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_generate_a_video_from_the_page(browser, url, shots):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.locator("#storyboard textarea").fill(STORY)
    # Plan first: what Generate would make, with nothing run.
    page.locator("#plan").click()
    page.locator("#plan-text").get_by_text("video calls make", exact=False).wait_for(timeout=30_000)
    page.screenshot(path=shots / "plan.png", full_page=True)
    page.locator("#generate").click()
    page.locator("#final-video video").wait_for(timeout=120_000)
    status = page.locator("#video-status")
    status.get_by_text("done", exact=True).wait_for(timeout=30_000)
    job_id = status.locator("code").inner_text()
    page.screenshot(path=shots / "video-tab.png", full_page=True)
    print(f"screenshot: {shots / 'video-tab.png'}")

    # History reads the store: the job is there, with its video.
    page.get_by_role("tab", name="History").click()
    cell = page.locator("#history-table").get_by_text(job_id).filter(visible=True)
    cell.first.wait_for(timeout=30_000)
    page.screenshot(path=shots / "history-tab.png", full_page=True)

    # A reopened page follows the same job again.
    page.reload()
    page.get_by_role("tab", name="Video").click()
    page.locator("#final-video video").wait_for(timeout=30_000)
    assert page.locator("#video-status code").inner_text() == job_id
    page.close()
