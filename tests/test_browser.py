"""The browser harness (tests/browser.py) on HTML pages written here: does it catch what a person sees?

Needs Debian's `chromium` (.ci/run installs it): skipped without it locally, a failure on CI.
"""
from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from browser import Browser, BrowserError, PageCheck, find_chromium, ink_fraction
from browser import main as browser_cli
from PIL import Image

HERE = Path(__file__).resolve().parent

LINE_PLOT = """<svg aria-label="{label}" width="480" height="240" viewBox="0 0 480 240" role="img">
  <line x1="40" y1="210" x2="460" y2="210" stroke="#333"/>
  <line x1="40" y1="20" x2="40" y2="210" stroke="#333"/>
  <path d="M40 40 L120 120 L200 150 L300 175 L460 190" fill="none" stroke="{colour}" stroke-width="2.5"/>
  <text x="240" y="232" font-size="12" text-anchor="middle">step</text>
  <text x="240" y="14" font-size="13" text-anchor="middle">{label}</text>
</svg>"""


def page(body: str, head: str = "") -> str:
    """A page in the report's style: inline CSS only."""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>report</title>"
            f"<style>body{{font-family:sans-serif;margin:24px;background:#fff}}</style>{head}</head>"
            f"<body><h1>hftransfer compare</h1>{body}</body></html>")


def write(tmp_path: Path, html: str, name: str = "report.html") -> Path:
    path = tmp_path / name
    path.write_text(html, encoding="utf-8")
    return path


def good_page(extra: str = "", head: str = "") -> str:
    """Two inline SVG plots with paths and text, and a data: PNG (inline, so allowed); then `extra`."""
    buf = io.BytesIO()
    legend = Image.new("RGB", (60, 30), (255, 255, 255))
    legend.paste((30, 120, 200), (5, 10, 55, 20))  # a legend swatch: a blue bar on white
    legend.save(buf, format="PNG")
    png = base64.b64encode(buf.getvalue()).decode()
    return page(LINE_PLOT.format(label="validation loss", colour="#1f77b4")
                + LINE_PLOT.format(label="accuracy", colour="#d62728")
                + f"<p><img alt='legend' src='data:image/png;base64,{png}'></p>"
                + "<table><tr><td>0.91</td></tr></table>" + extra,
                head=head)


@pytest.fixture(scope="module")
def chromium():
    """One browser for the module (each page still gets a fresh browser context)."""
    missing = None
    if find_chromium() is None:
        missing = "chromium is not installed (.ci/run installs it: apt-get install chromium)"
    else:
        try:
            import websockets  # noqa: F401
        except ImportError:
            missing = "websockets is not installed (pip install -e '.[test]')"
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{missing}: CI must run the browser tests, not skip them")
        pytest.skip(missing)
    with Browser(timeout=30) as browser:
        yield browser


def render(chromium: Browser, tmp_path: Path, html: str) -> PageCheck:
    return chromium.render(write(tmp_path, html), tmp_path / "shot.png")


def test_good_page_passes_every_check(chromium, tmp_path):
    check = render(chromium, tmp_path, good_page())
    assert check.problems() == []
    assert [s.label for s in check.svgs] == ["validation loss", "accuracy"]
    for svg in check.svgs:
        assert (svg.width, svg.height) == (480, 240)
        assert svg.drawn == 5  # 2 axes, 1 path, 2 texts
        assert svg.ink > 0.01, f"{svg.name}: {svg.ink:.2%} ink"
    assert len(check.imgs) == 1 and check.imgs[0].loaded and check.imgs[0].ink == pytest.approx(500 / 1800)
    assert check.console == [] and check.page_errors == []
    assert check.requests[0] == check.url and check.requests[1].startswith("data:image/png")
    assert check.outside_requests == []  # the page itself and data: URLs stay inside


def test_empty_svg_is_caught(chromium, tmp_path):
    html = good_page("<svg aria-label='calibration' width='300' height='200'></svg>")
    check = render(chromium, tmp_path, html)
    assert check.problems() == [("svg #3 (calibration) draws nothing: no path/line/polyline/polygon/rect/"
                                 "circle/ellipse/text/use/image element inside it")]


def test_svg_with_nothing_visible_is_caught_by_the_pixels(chromium, tmp_path):
    """Elements are there but nothing shows: a panel alone, a white line on white, a zero-size plot."""
    html = page("<svg aria-label='panel' width='300' height='200'>"
                "<rect width='300' height='200' fill='#eee'/></svg>"
                "<svg aria-label='ghost' width='300' height='200'>"
                "<path d='M0 0 L300 200' stroke='#fff'/></svg>"
                "<svg aria-label='folded' width='0' height='0'><path d='M0 0 L9 9' stroke='#000'/></svg>")
    check = render(chromium, tmp_path, html)
    assert [s.drawn for s in check.svgs] == [1, 1, 1]
    assert check.problems() == [
        "svg #1 (panel) is blank on screen: 0.00% of its pixels differ from its background (needs 0.50%)",
        "svg #2 (ghost) is blank on screen: 0.00% of its pixels differ from its background (needs 0.50%)",
        "svg #3 (folded) is 0x0 px on screen (needs at least 16x16)",
    ]


def test_script_errors_and_console_errors_are_caught(chromium, tmp_path):
    html = good_page("<script>console.error('plot data missing', 3); console.warn('deprecated');"
                     "throw new TypeError('x is undefined')</script>")
    check = render(chromium, tmp_path, html)
    assert [(m.level, m.text) for m in check.console] == [("error", "plot data missing 3"),
                                                          ("warning", "deprecated")]
    assert check.page_errors == ["TypeError: x is undefined"]
    assert check.problems() == ["console error (console): plot data missing 3",
                                "console warning (console): deprecated",
                                "uncaught error in the page: TypeError: x is undefined"]


def test_outside_requests_are_caught_and_blocked(chromium, tmp_path):
    """An image, a stylesheet and a font from outside, and a file beside the report: not self-contained."""
    (tmp_path / "plot.png").write_bytes(b"not really a png")
    head = ("<link rel='stylesheet' href='https://cdn.example.invalid/style.css'>"
            "<style>@font-face{font-family:F;src:url(http://fonts.example.invalid/f.woff2)}"
            "h1{font-family:F}</style>")
    body = "<img src='http://example.invalid/x.png'><img src='plot.png'>"
    start = time.monotonic()
    check = render(chromium, tmp_path, good_page(body, head=head))
    took = time.monotonic() - start
    outside = check.outside_requests
    assert "https://cdn.example.invalid/style.css" in outside
    assert "http://example.invalid/x.png" in outside
    assert "http://fonts.example.invalid/f.woff2" in outside
    assert (tmp_path / "plot.png").as_uri() in outside
    message = ("the page requested http://example.invalid/x.png: "
               "a self-contained page requests nothing but itself")
    assert message in check.problems()
    assert check.console == [], "a blocked request is reported once, as a request, not as a console error"
    assert took < 10, f"blocked requests must fail at once, not wait on DNS ({took:.1f} s)"


def test_screenshot_is_the_full_page_and_not_blank(chromium, tmp_path):
    """A page taller than the window: the screenshot holds all of it, plots where the DOM says."""
    html = good_page().replace("<h1>", "<div style='height:2000px'></div><h1>")
    check = render(chromium, tmp_path, html)
    with Image.open(check.screenshot) as im:
        assert im.size == (1280, check.page_height) and check.page_height > 2000
        rgb = np.asarray(im.convert("RGB"))
    assert (rgb != rgb[0, 0]).any(axis=2).mean() > 0.001, "the screenshot is one flat colour"
    acc = check.svgs[1]
    assert acc.y > 2000
    box = rgb[int(acc.y):int(acc.y + acc.height), int(acc.x):int(acc.x + acc.width)].astype(int)
    red = (box[..., 0] > 180) & (box[..., 1] < 90) & (box[..., 2] < 90)
    assert red.sum() > 200, "the red accuracy line is not inside the box the DOM gave for its plot"


def test_ink_fraction_reads_the_box_against_its_own_background(tmp_path):
    im = Image.new("RGB", (100, 100), (240, 240, 240))
    im.paste((0, 0, 0), (10, 10, 20, 20))  # 100 dark pixels in the box (0, 0, 50, 50)
    im.save(tmp_path / "a.png")
    assert ink_fraction(tmp_path / "a.png", 0, 0, 50, 50) == pytest.approx(100 / 2500)
    assert ink_fraction(tmp_path / "a.png", 50, 50, 50, 50) == 0.0
    assert ink_fraction(tmp_path / "a.png", 200, 200, 10, 10) == 0.0  # off the page


def test_a_hung_page_times_out_and_the_browser_is_killed(chromium, tmp_path):
    """CI must not hang on a page that never finishes loading."""
    path = write(tmp_path, page("<script>while (true) {}</script>"))
    browser = Browser(timeout=2)
    pid = browser._proc.pid
    start = time.monotonic()
    try:
        with pytest.raises(BrowserError, match="did not answer in time"):
            browser.render(path, tmp_path / "shot.png")
    finally:
        browser.close()
    assert time.monotonic() - start < 15
    assert live_processes_in_group(pid) == [], "close() left Chromium processes running"


def live_processes_in_group(pgid: int) -> list[int]:
    """Processes of a group that still run (zombies are dead: only a PID 1 that never reaps keeps them)."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited while we looked
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            live.append(int(stat.parent.name))
    return live


def test_command_line_prints_the_checks_and_writes_the_screenshot(chromium, tmp_path, capsys):
    good, bad = write(tmp_path, good_page(), "good.html"), write(tmp_path, page("<svg></svg>"), "bad.html")
    # As a person runs it: a script, not an import (tests/ is not on its path then).
    out = subprocess.run([sys.executable, str(HERE / "browser.py"), str(good), str(tmp_path / "good.png")],
                         check=False, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["problems"] == [] and len(data["svgs"]) == 2 and (tmp_path / "good.png").stat().st_size > 1000
    # A failed check: status 1, and the JSON says why.
    assert browser_cli([str(bad), str(tmp_path / "bad.png")]) == 1
    assert json.loads(capsys.readouterr().out)["problems"][0].startswith("svg #1 draws nothing")
    assert browser_cli([str(tmp_path / "missing.html"), str(tmp_path / "x.png")]) == 2
    assert "no such file" in capsys.readouterr().err
