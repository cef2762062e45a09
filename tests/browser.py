"""Look at an HTML page as a person would: headless Chromium renders it, and we check what it shows.

The kit's `report.html` must be self-contained (inline CSS and <svg>, no scripts needed, no network),
and its plots must show something. Parsing the HTML cannot tell whether a plot is blank on screen or
whether the page asks the network for a font, so this module opens the file in Debian's `chromium`
and reports what the browser saw: a full-page screenshot, the box of every <svg>/<img> with how much
is drawn in it, console errors/warnings, uncaught errors, and every request the page made.

The driver is the Chrome DevTools Protocol spoken directly over its websocket (`websockets`, a small
pure-Python library): no Node.js driver, no browser download, no coupling to a bundled browser
version; only stable CDP domains (Target, Page, Runtime, Network, Fetch, Log, Emulation) are used.

    with Browser() as browser:
        check = browser.render(Path("report.html"), Path("report.png"))
    assert not check.problems(), check.problems()

By hand (prints the checks as JSON, writes the screenshot; exit status 1 when a check fails):

    python tests/browser.py REPORT.html OUT.png [--width 1280]
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# The SVG elements that put ink on screen; a plot with none of them draws nothing.
DRAWN = ("path", "line", "polyline", "polygon", "rect", "circle", "ellipse", "text", "use", "image")
# URL schemes that never leave the page (the page's own file is allowed by its exact URL).
INSIDE_SCHEMES = ("data:", "blob:", "about:")
# Chromium's compositor refuses textures past 16384 px; a taller page is cut there.
MAX_HEIGHT = 16384


class BrowserError(RuntimeError):
    """Chromium could not be started, crashed, or did not answer in time."""


def find_chromium() -> str | None:
    """The Chromium executable: $CHROMIUM when set, else the first of the usual names on PATH."""
    if os.environ.get("CHROMIUM"):
        return shutil.which(os.environ["CHROMIUM"])
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if path := shutil.which(name):
            return path
    return None


@dataclass
class Figure:
    """One <svg> or <img> as laid out: its box in page pixels (CSS px = screenshot px) and its ink."""

    kind: str  # "svg" or "img"
    index: int  # 1-based, in document order among figures of its kind
    label: str  # aria-label, id or src: something a person can find the figure by
    x: float
    y: float
    width: float
    height: float
    drawn: int | None = None  # svg: drawn elements (path/line/rect/text/use...) inside it
    loaded: bool | None = None  # img: decoded with a non-zero natural size
    ink: float | None = None  # fraction of the box's screenshot pixels that differ from its background

    @property
    def name(self) -> str:
        return f"{self.kind} #{self.index}" + (f" ({self.label})" if self.label else "")


@dataclass
class ConsoleMessage:
    level: str  # "error" or "warning"
    text: str
    source: str  # "console" (console.* calls) or the browser's own log ("network", "security"...)


@dataclass
class PageCheck:
    """What the browser saw of one page. `problems()` turns it into failure messages."""

    url: str
    screenshot: Path
    page_width: int
    page_height: int
    svgs: list[Figure] = field(default_factory=list)
    imgs: list[Figure] = field(default_factory=list)
    console: list[ConsoleMessage] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    text: str = ""
    """The page's text as rendered (``document.body.innerText``): what a reader sees."""

    @property
    def outside_requests(self) -> list[str]:
        """Requests for anything but the page itself or data:/blob: URLs (blocked, but recorded)."""
        own = self.url.split("#")[0]
        return [u for u in self.requests if not u.startswith(INSIDE_SCHEMES) and u.split("#")[0] != own]

    def problems(self, min_ink: float = 0.005, min_size: float = 16) -> list[str]:
        """One message per failed check; empty when the page is fine.

        min_ink: the least fraction of a figure's pixels that must differ from its background (an
        axis and a line on a 600x300 plot is ~1-3 %; an empty <svg> is 0).
        min_size: the least width and height in px a figure must have on screen.
        """
        out = []
        for fig in self.svgs + self.imgs:
            if fig.width < min_size or fig.height < min_size:
                out.append(f"{fig.name} is {fig.width:.0f}x{fig.height:.0f} px on screen (needs at least "
                           f"{min_size:.0f}x{min_size:.0f})")
                continue
            if fig.kind == "svg" and not fig.drawn:
                out.append(f"{fig.name} draws nothing: no {'/'.join(DRAWN)} element inside it")
            elif fig.kind == "img" and not fig.loaded:
                out.append(f"{fig.name} did not load")
            elif fig.ink is not None and fig.ink < min_ink:
                out.append(f"{fig.name} is blank on screen: {fig.ink:.2%} of its pixels differ from its "
                           f"background (needs {min_ink:.2%})")
        for msg in self.console:
            out.append(f"console {msg.level} ({msg.source}): {msg.text}")
        for err in self.page_errors:
            out.append(f"uncaught error in the page: {err}")
        for url in self.outside_requests:
            out.append(f"the page requested {_short(url)}: a self-contained page requests nothing but itself")
        return out

    def to_json(self) -> dict[str, Any]:
        """Plain data, for `json.dumps` (the CLI prints it)."""
        data = asdict(self)
        data["screenshot"] = str(self.screenshot)
        data["outside_requests"] = self.outside_requests
        data["problems"] = self.problems()
        return data


def _short(url: str, n: int = 120) -> str:
    return url if len(url) <= n else url[:n] + "..."


def load_rgb(png: Path) -> Any:
    """A screenshot as an (height, width, 3) uint8 array."""
    import numpy as np
    from PIL import Image

    with Image.open(png) as im:
        return np.asarray(im.convert("RGB"))


def ink_fraction(image: Path | Any, x: float, y: float, width: float, height: float,
                 tolerance: int = 24) -> float:
    """The fraction of pixels in a box of the screenshot that differ from the box's background.

    image: the PNG's path, or its array from `load_rgb` (decode once when measuring many boxes).
    The background is the box's most common colour, not white: a plot drawn on a grey panel is
    judged by what is drawn on the panel, and a panel with nothing on it counts as blank.
    tolerance: the largest per-channel difference (0-255) still taken as background, so that
    anti-aliasing noise and colour-profile rounding don't count as ink.
    """
    import numpy as np

    rgb = load_rgb(image) if isinstance(image, (str, Path)) else image
    top, left = max(round(y), 0), max(round(x), 0)
    bottom, right = min(round(y + height), rgb.shape[0]), min(round(x + width), rgb.shape[1])
    box = rgb[top:bottom, left:right].reshape(-1, 3).astype(np.int32)
    if box.size == 0:
        return 0.0
    # One int per colour: a 1-D unique is ~50x faster than unique(axis=0) on pixel rows.
    packed = (box[:, 0] << 16) | (box[:, 1] << 8) | box[:, 2]
    colours, counts = np.unique(packed, return_counts=True)
    top_colour = colours[counts.argmax()]
    background = np.array([(top_colour >> 16) & 255, (top_colour >> 8) & 255, top_colour & 255])
    differs = np.abs(box - background).max(axis=1) > tolerance
    return float(differs.mean())


# The page's figures, measured in page coordinates (the page is not scrolled, but be exact anyway).
# Nested <svg>s are part of their outer plot, so only outermost ones are listed.
_FIGURES_JS = """
(() => {
  const DRAWN = __DRAWN__;
  const box = el => { const r = el.getBoundingClientRect();
    return {x: r.left + scrollX, y: r.top + scrollY, width: r.width, height: r.height}; };
  const svgs = [...document.querySelectorAll('svg')]
    .filter(s => !(s.parentElement && s.parentElement.closest('svg')))
    .map(s => ({...box(s), drawn: s.querySelectorAll(DRAWN).length,
                label: s.getAttribute('aria-label') || s.id || ''}));
  const imgs = [...document.images].map(i => ({...box(i), loaded: i.complete && i.naturalWidth > 0,
                label: i.getAttribute('alt') || (i.getAttribute('src') || '').slice(0, 80)}));
  return {svgs, imgs};
})()
""".replace("__DRAWN__", json.dumps(",".join(DRAWN)))

_SIZE_JS = """
(() => { const d = document.documentElement, b = document.body || d;
  return {width: Math.ceil(Math.max(d.scrollWidth, b.scrollWidth)),
          height: Math.ceil(Math.max(d.scrollHeight, b.scrollHeight))}; })()
"""


class _Cdp:
    """A minimal CDP client: commands wait for their reply; events in between go to a handler."""

    def __init__(self, ws_url: str, deadline: Callable[[], float]) -> None:
        from websockets.sync.client import connect

        # max_size=None: a full-page screenshot comes back as one large base64 message.
        # Entered as a context manager (closed in close()): websockets >= 14 warns on a bare connect().
        self._ws = connect(ws_url, max_size=None, open_timeout=deadline()).__enter__()
        self._next_id = 0
        self._deadline = deadline
        self.on_event: Callable[[dict[str, Any]], None] = lambda msg: None

    def post(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        """Send a command without waiting (used from event handlers, which must not block)."""
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self._ws.send(json.dumps(msg))
        return self._next_id

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send a command and return its result; raises BrowserError on a CDP error or timeout."""
        want = self.post(method, params, session)
        while True:
            msg = self._recv(what=method)
            if msg.get("id") == want:
                if "error" in msg:
                    raise BrowserError(f"{method}: {msg['error'].get('message')}")
                return msg.get("result", {})
            if "method" in msg:
                self.on_event(msg)

    def pump(self, seconds: float) -> None:
        """Handle events for a while (lets late requests and console messages arrive)."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            msg = self._recv(min(left, self._deadline()), what="late events")
            if msg is not None and "method" in msg:
                self.on_event(msg)

    def wait_for(self, event: str, session: str) -> None:
        """Handle events until `event` arrives for `session`."""
        while True:
            msg = self._recv(what=event)
            if "method" in msg:
                self.on_event(msg)
                if msg["method"] == event and msg.get("sessionId") == session:
                    return

    def _recv(self, timeout: float | None = None, what: str = "") -> Any:
        """The next message; None when an explicit `timeout` passes; BrowserError past the deadline."""
        left = self._deadline() if timeout is None else timeout
        late = BrowserError(f"Chromium did not answer in time (waiting for {what})")
        if left <= 0:
            raise late
        try:
            return json.loads(self._ws.recv(timeout=left))
        except TimeoutError:
            if timeout is not None and self._deadline() > 0:
                return None
            raise late from None
        except Exception as exc:  # the connection closed: the browser died
            raise BrowserError(f"lost the connection to Chromium: {exc}") from exc

    def close(self) -> None:
        self._ws.close()


class Browser:
    """One headless Chromium process; `render` opens each page in a fresh, isolated context.

    Always close it (or use `with`): `close` kills the whole process group, so no renderer or GPU
    process outlives a test run.
    """

    def __init__(self, executable: str | None = None, timeout: float = 30.0,
                 start_timeout: float = 30.0) -> None:
        """Start Chromium. timeout: seconds for each page; start_timeout: for the browser to come up."""
        exe = executable or find_chromium()
        if exe is None:
            raise BrowserError("chromium is not installed (apt-get install chromium)")
        self.timeout = timeout
        self._profile = Path(tempfile.mkdtemp(prefix="hft-chromium-"))
        self._log = open(self._profile / "stderr.log", "w+b")  # noqa: SIM115 (closed in close())
        flags = [
            "--headless", "--disable-gpu", "--hide-scrollbars", "--mute-audio",
            # /dev/shm is small in containers; Chromium then crashes on large pages.
            "--disable-dev-shm-usage",
            # The browser's own traffic (updates, sync, field trials) is not the page's and must not
            # leave the machine either.
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            # No crash handler: it runs outside the browser's process group, where close() can't reach.
            "--disable-crash-reporter", "--disable-breakpad",
            "--disable-default-apps", "--disable-extensions", "--no-first-run", "--no-default-browser-check",
            # Same colours on every machine, so pixel checks compare like with like.
            "--force-color-profile=srgb",
            # Port 0: the OS picks a free one; Chromium writes it to DevToolsActivePort (no races).
            "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
            f"--user-data-dir={self._profile}",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            flags.append("--no-sandbox")  # Chromium refuses to start as root with its sandbox
        # Its own session: close() kills the browser and every child it spawned by process group.
        self._proc = subprocess.Popen([exe, *flags, "about:blank"], stdin=subprocess.DEVNULL,
                                      stdout=self._log, stderr=self._log, start_new_session=True)
        try:
            ws_url = self._wait_for_port(time.monotonic() + start_timeout)
            self._end = time.monotonic() + start_timeout
            self._cdp = _Cdp(ws_url, lambda: self._end - time.monotonic())
        except BaseException:
            self.close()
            raise

    def _wait_for_port(self, end: float) -> str:
        port_file = self._profile / "DevToolsActivePort"
        while time.monotonic() < end:
            if self._proc.poll() is not None:
                raise BrowserError(f"chromium exited with status {self._proc.returncode}: {self._stderr()}")
            try:
                port, path = port_file.read_text().split("\n")[:2]
                if port and path:
                    return f"ws://127.0.0.1:{port.strip()}{path.strip()}"
            except (FileNotFoundError, ValueError):
                pass
            time.sleep(0.05)
        raise BrowserError(f"chromium did not start in time: {self._stderr()}")

    def _stderr(self) -> str:
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-2000:].strip() or "(no output)"

    def render(self, html_path: Path, out_png: Path, width: int = 1280) -> PageCheck:
        """Open a local HTML file, screenshot the full page to out_png, and report what was seen.

        Every request other than the file itself and data:/blob: URLs is recorded and failed at
        once (never sent), so an outside reference shows up without waiting on DNS.
        """
        url = Path(html_path).resolve().as_uri()
        self._end = time.monotonic() + self.timeout
        cdp = self._cdp
        context = cdp.call("Target.createBrowserContext")["browserContextId"]
        target = cdp.call("Target.createTarget",
                          {"url": "about:blank", "browserContextId": context})["targetId"]
        try:
            session = cdp.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            check = PageCheck(url=url, screenshot=Path(out_png), page_width=width, page_height=0)
            cdp.on_event = lambda msg: self._on_event(msg, session, check)
            for domain in ("Page", "Runtime", "Network", "Log"):
                cdp.call(f"{domain}.enable", session=session)
            cdp.call("Fetch.enable", {"patterns": [{"urlPattern": "*"}]}, session=session)
            self._viewport(width, 800, session)
            nav = cdp.call("Page.navigate", {"url": url}, session=session)
            if nav.get("errorText"):
                raise BrowserError(f"could not open {url}: {nav['errorText']}")
            cdp.wait_for("Page.loadEventFired", session)
            # Web fonts and late requests/console messages: give them a moment before measuring.
            self._eval("document.fonts.ready.then(() => true)", session, wait=True)
            cdp.pump(0.2)
            # Full page, no more: scrollHeight is at least the viewport's height, so measure in a
            # 1 px tall viewport to get the content's own height, then make the viewport that tall.
            # Content sized in vh grows with the viewport: re-measure, three times at most (100vh
            # plus a header never fits; what is left below is cut from the screenshot, not the boxes).
            height = 1
            for _ in range(3):
                self._viewport(width, height, session)
                size = self._eval(_SIZE_JS, session)
                if size["height"] <= height:
                    break
                height = min(size["height"], MAX_HEIGHT)
            self._viewport(width, height, session)
            check.page_width, check.page_height = max(size["width"], width), height
            figures = self._eval(_FIGURES_JS, session)
            check.text = self._eval("document.body ? document.body.innerText : ''", session) or ""
            shot = cdp.call("Page.captureScreenshot", {"format": "png", "fromSurface": True}, session=session)
            out_png = Path(out_png)
            out_png.parent.mkdir(parents=True, exist_ok=True)
            out_png.write_bytes(base64.b64decode(shot["data"]))
            rgb = load_rgb(out_png)
            for kind, found in (("svg", figures["svgs"]), ("img", figures["imgs"])):
                for i, fig in enumerate(found, 1):
                    figure = Figure(kind=kind, index=i, **fig)
                    figure.ink = ink_fraction(rgb, figure.x, figure.y, figure.width, figure.height)
                    (check.svgs if kind == "svg" else check.imgs).append(figure)
            return check
        finally:
            self._cdp.on_event = lambda msg: None
            # A few seconds of its own for the clean-up, so a page that timed out is still closed
            # and the next page (same browser) starts clean.
            self._end = time.monotonic() + 5
            try:
                cdp.call("Target.closeTarget", {"targetId": target})
                cdp.call("Target.disposeBrowserContext", {"browserContextId": context})
            except BrowserError:
                pass  # the page already failed (that error is the one to report) or the browser died

    def _viewport(self, width: int, height: int, session: str) -> None:
        # Scale 1: one CSS pixel is one screenshot pixel, so DOM boxes index the PNG directly.
        self._cdp.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                       "deviceScaleFactor": 1, "mobile": False}, session=session)

    def _eval(self, expression: str, session: str, wait: bool = False) -> Any:
        res = self._cdp.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                  "awaitPromise": wait}, session=session)
        if "exceptionDetails" in res:
            raise BrowserError(f"measuring the page failed: {res['exceptionDetails'].get('text')}")
        return res["result"].get("value")

    def _on_event(self, msg: dict[str, Any], session: str, check: PageCheck) -> None:
        if msg.get("sessionId") != session:
            return
        method, params = msg["method"], msg.get("params", {})
        if method == "Fetch.requestPaused":
            req_url = params["request"]["url"]
            if req_url not in check.requests:
                check.requests.append(req_url)
            inside = req_url.startswith(INSIDE_SCHEMES) or req_url.split("#")[0] == check.url.split("#")[0]
            if inside:
                self._cdp.post("Fetch.continueRequest", {"requestId": params["requestId"]}, session)
            else:  # fail it now: no DNS lookup, no connection, no waiting in tests
                self._cdp.post("Fetch.failRequest", {"requestId": params["requestId"],
                                                     "errorReason": "BlockedByClient"}, session)
        elif method == "Network.requestWillBeSent":
            # Also seen here: requests Fetch does not pause (file: URLs on some versions).
            req_url = params["request"]["url"]
            if req_url not in check.requests:
                check.requests.append(req_url)
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
            text = " ".join(_remote_text(arg) for arg in params.get("args", []))
            level = "warning" if params["type"] == "warning" else "error"
            check.console.append(ConsoleMessage(level=level, text=text, source="console"))
        elif method == "Log.entryAdded" and params["entry"].get("level") in ("error", "warning"):
            entry = params["entry"]
            if "ERR_BLOCKED_BY_CLIENT" in entry.get("text", "") and entry.get("url") in check.requests:
                return  # our own block of an outside request: that check already reports it
            text = entry.get("text", "") + (f" ({_short(entry['url'])})" if entry.get("url") else "")
            source = entry.get("source", "")
            check.console.append(ConsoleMessage(level=entry["level"], text=text, source=source))
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = (details.get("exception") or {}).get("description") or details.get("text", "")
            check.page_errors.append(text.splitlines()[0] if text else "(no message)")

    def close(self) -> None:
        """Kill Chromium and all its children, and delete its profile. Safe to call twice."""
        if getattr(self, "_cdp", None) is not None:
            with contextlib.suppress(Exception):  # the browser is being killed anyway
                self._cdp.close()
            self._cdp = None
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass  # unkillable (zombie parent): nothing more we can do, and CI must not hang on it
        self._log.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _remote_text(arg: dict[str, Any]) -> str:
    """A console.* argument as text (CDP sends primitives as values, objects as descriptions)."""
    if "value" in arg:
        return arg["value"] if isinstance(arg["value"], str) else json.dumps(arg["value"])
    return arg.get("description") or arg.get("type", "")


def render_page(html_path: Path, out_png: Path, width: int = 1280, timeout: float = 30.0) -> PageCheck:
    """Render one page in a browser of its own (started and killed here); see `Browser.render`."""
    with Browser(timeout=timeout) as browser:
        return browser.render(html_path, out_png, width=width)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render an HTML file in headless Chromium and check it.")
    parser.add_argument("html", type=Path)
    parser.add_argument("png", type=Path)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    if not args.html.is_file():
        print(f"error: no such file: {args.html}", file=sys.stderr)
        return 2
    try:
        check = render_page(args.html, args.png, width=args.width, timeout=args.timeout)
    except BrowserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(check.to_json(), indent=2))
    return 1 if check.problems() else 0


if __name__ == "__main__":
    sys.exit(main())
