"""Open an HTML file in headless Chromium and inspect it over the DevTools protocol.

Chromium is started with its own empty profile and a debugging port on 127.0.0.1.
The page is loaded from a file URL while every console error, uncaught exception
and network request is recorded. When Bokeh has rendered every root, the names of
the rendered Bokeh models and a full-page screenshot are returned.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from websockets.sync.client import connect

CHROMIUM = shutil.which("chromium")

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--remote-debugging-port=0", "--window-size=1280,900", "--hide-scrollbars",
]

# Generous limits for a loaded 2-core machine. They bound a hang, they time nothing.
START_TIMEOUT = 60.0
RENDER_TIMEOUT = 120.0

# Evaluated in the page. Returns null until BokehJS has built and rendered a view of
# every root, then the names and sizes of all rendered views that have a name.
_RENDERED_VIEWS = """
(() => {
  if (!window.Bokeh || !Bokeh.index || Bokeh.documents.length === 0) return null;
  const roots = Bokeh.documents.flatMap((doc) => doc.roots());
  const rootViews = [...Bokeh.index];
  if (rootViews.length < roots.length) return null;
  if (!rootViews.every((view) => view.has_finished())) return null;
  const named = [...Bokeh.index.query((view) => view.model.name != null)];
  return named.map((view) => ({
    name: view.model.name,
    type: view.model.type,
    width: view.bbox ? view.bbox.width : null,
    height: view.bbox ? view.bbox.height : null,
  }));
})()
"""


@dataclass
class PageResult:
    """What the browser saw of one page."""

    views: list[dict]
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    notes: list[dict] = field(default_factory=list)
    section_ids: list[str] = field(default_factory=list)
    screenshot: bytes = b""

    def view_names(self) -> set[str]:
        """Return the names of the rendered Bokeh views."""
        return {view["name"] for view in self.views}


class _DevTools:
    """A minimal DevTools protocol session on one page target."""

    def __init__(self, socket):
        self.socket = socket
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, timeout: float = RENDER_TIMEOUT, **params) -> dict:
        self.next_id += 1
        request_id = self.next_id
        self.socket.send(json.dumps({"id": request_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == request_id:
                if "error" in message:
                    raise RuntimeError(f"DevTools {method} failed: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for_event(self, method: str, timeout: float = RENDER_TIMEOUT) -> dict:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            message = json.loads(self.socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            self.events.append(message)
            if message.get("method") == method:
                return message

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"evaluating in the page failed: {result['exceptionDetails']}")
        return result["result"].get("value")


def _wait_for_port(profile: Path, process: subprocess.Popen) -> int:
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited with code {process.returncode} at start")
        if port_file.exists():
            lines = port_file.read_text().splitlines()
            if lines and lines[0].isdigit():
                return int(lines[0])
        time.sleep(0.1)
    raise TimeoutError(f"chromium wrote no {port_file} within {START_TIMEOUT} s")


def _page_websocket(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
        targets = json.load(response)
    for target in targets:
        if target.get("type") == "page":
            return target["webSocketDebuggerUrl"]
    raise RuntimeError(f"chromium lists no page target: {targets}")


def _console_errors(events: list[dict]) -> list[str]:
    errors = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            errors.append(details.get("exception", {}).get("description") or details["text"])
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            errors.append(" ".join(str(arg.get("value", arg.get("description")))
                                   for arg in params["args"]))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            errors.append(f"{params['entry']['source']}: {params['entry']['text']}")
    return errors


def open_page(html_path: Path) -> PageResult:
    """Load ``html_path`` in headless Chromium and return what rendered and what failed.

    Raises
    ------
    TimeoutError
        If Chromium does not start, or Bokeh does not finish rendering, in time.
    """
    # Chromium's helper processes may still write to the profile for a moment after
    # the browser exits, so a failed removal of the profile folder is ignored.
    with tempfile.TemporaryDirectory(prefix="chromium-profile-",
                                     ignore_cleanup_errors=True) as profile_dir:
        profile = Path(profile_dir)
        # A session of its own, so that closing it ends the helper processes too.
        process = subprocess.Popen(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            websocket_url = _page_websocket(_wait_for_port(profile, process))
            with connect(websocket_url, max_size=None, open_timeout=START_TIMEOUT) as socket:
                return _inspect(_DevTools(socket), html_path)
        finally:
            _close(process)


def _close(process: subprocess.Popen) -> None:
    """End Chromium and every process of its session."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _inspect(devtools: _DevTools, html_path: Path) -> PageResult:
    for domain in ("Runtime", "Log", "Page", "Network"):
        devtools.call(f"{domain}.enable")
    devtools.call("Page.navigate", url=html_path.resolve().as_uri())
    devtools.wait_for_event("Page.loadEventFired")

    deadline = time.monotonic() + RENDER_TIMEOUT
    views = devtools.evaluate(_RENDERED_VIEWS)
    while views is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"Bokeh did not render {html_path} within {RENDER_TIMEOUT} s; "
                               f"console errors: {_console_errors(devtools.events)}")
        time.sleep(0.2)
        views = devtools.evaluate(_RENDERED_VIEWS)

    notes = devtools.evaluate(
        "[...document.querySelectorAll('p.missing')].map("
        "(p) => ({table: p.dataset.table, text: p.textContent}))")
    section_ids = devtools.evaluate(
        "[...document.querySelectorAll('section')].map((s) => s.id)")
    metrics = devtools.call("Page.getLayoutMetrics")["cssContentSize"]
    shot = devtools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": metrics["width"],
                               "height": metrics["height"], "scale": 1})

    requests = [event["params"]["request"]["url"] for event in devtools.events
                if event.get("method") == "Network.requestWillBeSent"]
    return PageResult(views=views, console_errors=_console_errors(devtools.events),
                      requests=requests, notes=notes, section_ids=section_ids,
                      screenshot=base64.b64decode(shot["data"]))
