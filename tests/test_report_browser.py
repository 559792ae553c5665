"""The report in a real browser: headless Chromium over the DevTools protocol.

Opens the report from file://, records console errors, uncaught exceptions and every network
request, and takes a screenshot. A self-contained report makes no request other than for
its own file (and data: URLs plotly builds in memory). Skips only when Chromium is absent.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import struct
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from test_store import sample_results

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
websocket = pytest.importorskip("websocket", reason="websocket-client is not installed")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    """Just enough of the DevTools protocol: send a command, wait for its reply, keep events."""

    def __init__(self, tmp: Path) -> None:
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",  # containers often give /dev/shm only 64 MiB
                "--disable-quic",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-extensions",
                "--hide-scrollbars",
                "--window-size=1280,2400",
                f"--user-data-dir={tmp / 'profile'}",
                f"--remote-debugging-port={self.port}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # no Origin header: Chromium rejects DevTools sockets from unlisted origins
        self.ws = websocket.create_connection(self._page_ws_url(), timeout=60, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []

    def _page_ws_url(self) -> str:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list") as r:
                    pages = [t for t in json.load(r) if t["type"] == "page"]
                if pages:
                    return pages[0]["webSocketDebuggerUrl"]
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.2)

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, method: str, timeout: float = 60) -> dict:
        for ev in self.events:
            if ev.get("method") == method:
                return ev
        self.ws.settimeout(timeout)
        while True:
            msg = json.loads(self.ws.recv())
            self.events.append(msg)
            if msg.get("method") == method:
                return msg

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def test_report_in_headless_chromium(tmp_path):
    from voxmeter.report.html import write_report
    from voxmeter.sweep.grid import Constraints

    report = write_report(sample_results(), tmp_path / "report.html", constraints=Constraints(20.0))
    b = Browser(tmp_path)
    try:
        for domain in ("Page", "Runtime", "Log", "Network"):
            b.call(f"{domain}.enable")
        b.call("Page.navigate", url=report.as_uri())
        b.wait_for("Page.loadEventFired")
        # plotly draws after load; wait until every figure has its SVG
        n_divs = n_svgs = -1
        for _ in range(100):
            r = b.call(
                "Runtime.evaluate",
                expression="[document.querySelectorAll('.plotly-graph-div').length,"
                "document.querySelectorAll('.plotly-graph-div .main-svg').length]",
                returnByValue=True,
            )
            n_divs, n_svgs = r["result"]["value"]
            if n_divs and n_svgs >= n_divs:
                break
            time.sleep(0.1)
        assert n_divs == 9, "6 Pareto plots, iso-FLOPs, latency and memory"
        assert n_svgs >= n_divs, "plotly did not draw every figure"

        # sorting works: click the WER header twice -> descending WER
        sort = b.call(
            "Runtime.evaluate",
            expression="""(() => {
              const th = [...document.querySelectorAll('#results th')]
                .find(h => h.textContent === 'WER %');
              th.click(); th.click();
              const col = [...th.parentNode.children].indexOf(th);
              return [...document.querySelectorAll('#results tbody tr')]
                .map(tr => tr.cells[col].dataset.v).filter(v => v !== '').map(Number);
            })()""",
            returnByValue=True,
        )["result"]["value"]
        assert sort == sorted(sort, reverse=True) and len(sort) >= 3

        shot = base64.b64decode(b.call("Page.captureScreenshot", format="png")["data"])
    finally:
        b.close()
    png = tmp_path / "report.png"
    png.write_bytes(shot)

    errors = [
        e
        for e in b.events
        if (e.get("method") == "Runtime.exceptionThrown")
        or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")
        or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
    ]
    assert not errors, errors
    urls = [
        e["params"]["request"]["url"]
        for e in b.events
        if e.get("method") == "Network.requestWillBeSent"
    ]
    foreign = [u for u in urls if not (u == report.as_uri() or u.startswith("data:"))]
    assert foreign == [], f"the report fetched {foreign}"
    assert report.as_uri() in urls

    w, h = _png_size(shot)
    assert w >= 800 and h >= 600
    assert len(shot) > 20_000, "a blank page compresses to almost nothing"
