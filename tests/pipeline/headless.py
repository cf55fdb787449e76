"""Drive a real headless Chromium over the DevTools protocol (tests only; no fake browser).

Chromium is Debian's ``chromium`` package (``make browser``). It starts with a fresh profile, no
network features (``--disable-background-networking`` and friends), listens on a random loopback
port that it writes to ``DevToolsActivePort`` in its profile, and is stopped by PID.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from websockets.sync.client import ClientConnection, connect

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)


def chromium_path() -> str:
    """The Chromium binary, or an AssertionError naming the make target that installs it."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    raise AssertionError("chromium is not installed: run `make browser` (Debian package chromium)")


class Browser:
    """``with Browser() as b: page = b.open(url)`` — one page, its console and its errors."""

    def __init__(self) -> None:
        self._profile = Path(tempfile.mkdtemp(prefix="saip-chromium-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self._ws: ClientConnection | None = None
        self._ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def __enter__(self) -> Browser:
        self._proc = subprocess.Popen(
            [chromium_path(), *FLAGS, f"--user-data-dir={self._profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        port_file = self._profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and len(port_file.read_text().splitlines()) >= 2):
            if self._proc.poll() is not None:
                raise AssertionError(f"chromium exited with {self._proc.returncode}")
            if time.monotonic() > deadline:
                raise AssertionError("chromium did not open its DevTools port within 60 s")
            time.sleep(0.1)
        port, path = port_file.read_text().splitlines()[:2]
        self._ws = connect(f"ws://127.0.0.1:{port}{path}", max_size=64 << 20).__enter__()
        return self

    def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one command and return its result; events that arrive meanwhile are kept."""
        assert self._ws is not None
        msg_id = next(self._ids)
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        self._ws.send(json.dumps(msg))
        while True:
            reply = json.loads(self._ws.recv(timeout=60))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 60) -> dict[str, Any]:
        assert self._ws is not None
        for ev in self.events:
            if ev.get("method") == method:
                return ev
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ev = json.loads(self._ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            self.events.append(ev)
            if ev.get("method") == method:
                return dict(ev)
        raise AssertionError(f"no {method} within {timeout} s")

    def open(self, url: str, *, width: int = 1200) -> Page:
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            session,
            width=width,
            height=900,
            deviceScaleFactor=1,
            mobile=False,
        )
        self.send("Page.navigate", session, url=url)
        self.wait_event("Page.loadEventFired")
        time.sleep(0.3)  # late console messages
        return Page(self, session)

    def errors(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions, browser log errors (CSP, loads)."""
        found = []
        for ev in self.events:
            method, p = ev.get("method"), ev.get("params", {})
            if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning"):
                found.append(f"console.{p['type']}: {p.get('args')}")
            elif method == "Runtime.exceptionThrown":
                found.append(f"exception: {p.get('exceptionDetails')}")
            elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                found.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        return found

    def console_messages(self) -> list[dict[str, Any]]:
        return [
            ev["params"] for ev in self.events if ev.get("method") == "Runtime.consoleAPICalled"
        ]

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._ws is not None:
                with contextlib.suppress(Exception):  # the socket closes as the browser exits
                    self.send("Browser.close")
                self._ws.close()
        finally:
            if self._proc is not None:
                try:
                    self._proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self._proc.kill()  # by PID: only the browser we started
                    self._proc.wait(timeout=15)
            shutil.rmtree(self._profile, ignore_errors=True)


class Page:
    def __init__(self, browser: Browser, session: str) -> None:
        self._b = browser
        self._s = session

    def evaluate(self, expression: str) -> Any:
        result = self._b.send(
            "Runtime.evaluate", self._s, expression=expression, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"evaluate failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        """A full-page PNG at ``path``."""
        size = self._b.send("Page.getLayoutMetrics", self._s)["cssContentSize"]
        self._b.send(
            "Emulation.setDeviceMetricsOverride",
            self._s,
            width=int(size["width"]),
            height=int(size["height"]),
            deviceScaleFactor=1,
            mobile=False,
        )
        data = self._b.send("Page.captureScreenshot", self._s, format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path
