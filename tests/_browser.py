"""A real browser for tests: headless Chromium driven over the DevTools protocol on a pipe.

Chromium (Debian's ``chromium`` package) is started with ``--remote-debugging-pipe``: it reads
DevTools commands on fd 3 and writes answers on fd 4, NUL-separated JSON. No port, no
driver, no extra package. :func:`chromium_binary` is ``None`` when it is not installed, and
the tests that need it skip with that reason.

``Browser.measure(url, width)`` opens a page at a device width (as a phone does: the
viewport meta tag is honoured), waits until it and its images have loaded, saves a
full-page screenshot and returns what the page's DOM says (see :data:`MEASURE_JS`).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-pipe",
)
SKIP_REASON = "Chromium is not installed (apt-get install chromium; .ci/run installs it): browser tests skipped"

#: What a test reads from a page: its layout width, overflow, images, and the text of marked parts.
MEASURE_JS = """(() => {
  const doc = document.documentElement;
  const wide = [];
  for (const el of document.body.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (r.right > window.innerWidth + 1 && !el.closest('.scroll'))
      wide.push(el.tagName + (el.id ? '#' + el.id : '') + ' ' + Math.round(r.right));
  }
  const text = sel => Array.from(document.querySelectorAll(sel)).map(e => e.innerText.trim());
  // Labels drawn on top of each other: any two texts of one SVG whose boxes share more than 1 px².
  const overlaps = [];
  for (const svg of document.querySelectorAll('svg')) {
    const boxes = Array.from(svg.querySelectorAll('text')).filter(t => t.textContent.trim())
      .map(t => [t.textContent.trim(), t.getBoundingClientRect()]);
    for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
      const [a, r] = boxes[i], [b, q] = boxes[j];
      const w = Math.min(r.right, q.right) - Math.max(r.left, q.left), h = Math.min(r.bottom, q.bottom) - Math.max(r.top, q.top);
      if (w > 0 && h > 0 && w * h > 1) overlaps.push(`${svg.getAttribute('aria-label') || 'svg'}: '${a}' on '${b}'`);
    }
  }
  // Content cut off at a box's edge (overflow hidden, or a scrolling box that is not one of the page's .scroll tables).
  const clipped = [];
  for (const el of document.body.querySelectorAll('*')) {
    const style = getComputedStyle(el);
    if (['hidden', 'clip', 'auto', 'scroll'].includes(style.overflowX) && !el.classList.contains('scroll')
        && el.scrollWidth > el.clientWidth + 1)
      clipped.push(el.tagName + (el.id ? '#' + el.id : '') + ` ${el.scrollWidth}>${el.clientWidth}`);
  }
  return JSON.stringify({
    title: document.title,
    innerWidth: window.innerWidth,
    scrollWidth: doc.scrollWidth,
    viewportMeta: !!document.querySelector('meta[name=viewport]'),
    images: Array.from(document.images).map(i => ({
      complete: i.complete, naturalWidth: i.naturalWidth, width: i.getBoundingClientRect().width, alt: i.alt})),
    tooWide: wide.slice(0, 20),
    textOverlaps: overlaps.slice(0, 20),
    clipped: clipped.slice(0, 20),
    svgs: document.querySelectorAll('svg').length,
    scrolledBoxes: Array.from(document.querySelectorAll('.scroll'))
      .filter(b => b.scrollWidth > b.clientWidth + 1).map(b => (b.firstElementChild || b).id || b.className),
    verdict: text('#verdict'),
    checks: text('#checks tr'),
    comparison: text('#comparison tr'),
    segments: text('#segments tr'),
    slices: text('#slices tr'),
    runs: text('#runs tr'),
    body: document.body.innerText,
  });
})()"""


def chromium_binary() -> str | None:
    """The Chromium executable, or ``None`` when there is none."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """One headless Chromium process and one page in it."""

    def __init__(self, binary: str, artifacts_dir: str) -> None:
        """Start ``binary`` with a fresh profile; screenshots go to ``artifacts_dir``."""
        self.artifacts_dir = artifacts_dir
        os.makedirs(artifacts_dir, exist_ok=True)
        self._profile = tempfile.mkdtemp(prefix="taxifare-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire() -> None:  # in the child, before exec: fd 3 = commands in, fd 4 = answers out
            # Move both out of the way first: the pipe ends may themselves be fds 3 or 4.
            high_r, high_w = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
            os.dup2(high_r, 3)  # dup2 to another number clears close-on-exec
            os.dup2(high_w, 4)

        self.proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={self._profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=False,
            preexec_fn=wire,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._ids = itertools.count(1)
        self._buffer = b""
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def send(self, method: str, session: str | None = None, timeout: float = 60.0, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result (events in between are dropped)."""
        msg_id = next(self._ids)
        message: dict[str, Any] = {"id": msg_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                answer = json.loads(raw)
                if answer.get("id") == msg_id:
                    if "error" in answer:
                        raise RuntimeError(f"{method}: {answer['error']}")
                    return answer.get("result", {})
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"Chromium did not answer {method}")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = self.send("Runtime.evaluate", session=self.session, expression=expression, returnByValue=True, awaitPromise=True)
        return result["result"].get("value")

    def measure(self, url: str, width: int, name: str, height: int = 900) -> dict[str, Any]:
        """Open ``url`` at ``width`` CSS pixels, save ``<name>-<width>.png`` and return :data:`MEASURE_JS`'s findings."""
        self.send(
            "Emulation.setDeviceMetricsOverride", session=self.session, width=width, height=height, deviceScaleFactor=1, mobile=width < 600
        )
        self.send("Page.navigate", session=self.session, url=url)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready = self.evaluate(
                "document.readyState === 'complete' && location.href !== 'about:blank'"
                " && Array.from(document.images).every(i => i.complete)"
            )
            if ready:
                break
            time.sleep(0.1)
        found = json.loads(self.evaluate(MEASURE_JS))
        shot = self.send("Page.captureScreenshot", session=self.session, format="png", captureBeyondViewport=True)
        path = os.path.join(self.artifacts_dir, f"{name}-{width}.png")
        with open(path, "wb") as fh:
            fh.write(base64.b64decode(shot["data"]))
        found["screenshot"] = path
        return found

    def close(self) -> None:
        """Stop Chromium and remove its profile."""
        with contextlib.suppress(RuntimeError, OSError):
            self.send("Browser.close", timeout=5)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_browser, self._from_browser):
            os.close(fd)
        shutil.rmtree(self._profile, ignore_errors=True)


def check_page(found: dict[str, Any], width: int) -> None:
    """Assert what every page must do at ``width``: viewport honoured, images loaded and shown, no horizontal overflow.

    Also: nothing cut off at the edge of a box, and no two labels of an SVG plot on top of each other.
    """
    assert found["viewportMeta"], "the page has no viewport meta tag"
    assert found["innerWidth"] == width, f"layout viewport is {found['innerWidth']} px at a {width} px device"
    assert found["scrollWidth"] <= width, f"the page is {found['scrollWidth']} px wide at {width} px: {found['tooWide']}"
    assert not found["tooWide"], f"elements stick out at {width} px: {found['tooWide']}"
    assert not found["scrolledBoxes"], f"tables need a sideways scroll at {width} px: {found['scrolledBoxes']}"
    assert not found["clipped"], f"content is cut off at a box's edge at {width} px: {found['clipped']}"
    assert not found["textOverlaps"], f"labels overlap at {width} px: {found['textOverlaps']}"
    for image in found["images"]:
        assert image["complete"] and image["naturalWidth"] > 0, f"image {image['alt']!r} did not load"
        assert 0 < image["width"] <= width, f"image {image['alt']!r} is {image['width']} px wide at {width} px"


#: Where screenshots are kept (not committed).
ARTIFACTS = Path(os.environ.get("TAXIFARE_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "runs" / "test-artifacts")) / "browser"


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium per test module; skips with the reason when it is not installed."""
    binary = chromium_binary()
    if binary is None:
        pytest.skip(SKIP_REASON)
    b = Browser(binary, str(ARTIFACTS))
    yield b
    b.close()
