"""Headless Chromium driven over the Chrome DevTools Protocol (a WebSocket), for the browser tests.

Why not a driver package: Debian's /usr/bin/chromium plus the `websockets` client already
installed is all it takes, and nothing downloads a browser of its own. The microphone is
Chromium's fake capture device playing a WAV file, so a test "speaks" known words.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

from tests.waiting import wait_until

CHROMIUM = "/usr/bin/chromium"
#: Flags without which Chromium hangs or phones home on this closed network, plus a fake
#: microphone and sound that plays without a user gesture.
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--mute-audio",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required", "--window-size=1280,860",
)


def chromium_missing_reason() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} is not installed (run: .venv/bin/python tools/install_system_deps.py, needs root + apt-get)"
    return None


class CdpError(RuntimeError):
    """The browser answered a command with an error, or a page script threw."""


class Browser:
    """One headless Chromium with one page; `close()` ends every process it started."""

    def __init__(self, fake_audio: Path | None = None, start_timeout_s: float = 30.0) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="voicecall-chromium-"))
        flags = [*FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-port=0"]
        if fake_audio is not None:
            flags.append(f"--use-file-for-fake-audio-capture={fake_audio}%noloop")
        self.log_path = self.profile / "chromium.log"
        self._log = open(self.log_path, "w")
        # Its own session, so close() can end the renderer/zygote children with the parent.
        self.proc = subprocess.Popen([CHROMIUM, *flags, "about:blank"], stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self._ids = itertools.count(1)
        self.console: list[str] = []
        self._ws: Any = None
        self._stack = contextlib.ExitStack()  # owns the DevTools socket
        try:
            self._ws = self._stack.enter_context(connect(self._page_ws_url(start_timeout_s), max_size=None, open_timeout=10))
            self.call("Runtime.enable")
            self.call("Page.enable")
        except BaseException:
            self.close()
            raise

    def _page_ws_url(self, timeout_s: float) -> str:
        port_file = self.profile / "DevToolsActivePort"

        def page_url() -> str | None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            if not (port_file.exists() and port_file.read_text().strip()):
                return None
            port = port_file.read_text().split()[0]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                pages = [t for t in json.loads(r.read()) if t["type"] == "page"]
            return pages[0]["webSocketDebuggerUrl"] if pages else None

        return wait_until(page_url, timeout_s, lambda: f"chromium's DevTools port:\n{self.log()[-3000:]}", poll_s=0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def call(self, method: str, timeout_s: float = 30.0, **params: Any) -> dict[str, Any]:
        """One CDP command; page events met while waiting feed `console`."""
        msg_id = next(self._ids)
        self._ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer to {method} within {timeout_s:.0f} s")
            msg = json.loads(self._ws.recv(timeout=left))
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise CdpError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._on_event(msg)

    def _on_event(self, msg: dict[str, Any]) -> None:
        method, params = msg.get("method"), msg.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.console.append(f"console.{params.get('type')}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.console.append(f"exception: {details.get('exception', {}).get('description') or details.get('text')}")

    def evaluate(self, expression: str, timeout_s: float = 30.0) -> Any:
        """The value of a page expression (promises awaited)."""
        result = self.call("Runtime.evaluate", timeout_s=timeout_s, expression=expression, awaitPromise=True,
                           returnByValue=True)
        if "exceptionDetails" in result:
            raise CdpError(f"{expression[:80]!r} threw: {result['exceptionDetails'].get('exception', {}).get('description')}")
        return result["result"].get("value")

    def navigate(self, url: str, timeout_s: float = 30.0) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'", timeout_s,
                      what=f"{url} to load")

    def wait_for(self, expression: str, timeout_s: float, what: str = "", poll_s: float = 0.1) -> Any:
        """Poll a page expression until it is truthy; the timeout names what was awaited."""
        return wait_until(lambda: self.evaluate(expression), timeout_s,
                          lambda: f"{what or expression}; console:\n" + "\n".join(self.console[-30:]), poll_s=poll_s)

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        if self._ws is not None:
            try:
                self._stack.close()
            except Exception:  # the browser may already be gone
                pass
            self._ws = None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group we created: renderers, zygote
        except ProcessLookupError:
            pass
        if self.proc.poll() is None:
            self.proc.wait(5)
        self._log.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
