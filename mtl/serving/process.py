"""A server in a child process, for whatever drives a real one over loopback (the serving tests, the serving
benchmark): start it with `--port 0`, read the port uvicorn picked from its log, wait for /ready, stop it with
SIGTERM and say whether it shut down gracefully."""
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import httpx

STARTED = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


def serve_command(model: str | Path, *options: str) -> list[str]:
    """`mtl serve --model MODEL --port 0 OPTIONS` with this Python."""
    return [sys.executable, "-m", "mtl", "serve", "--model", str(model), "--port", "0", *options]


class ServerProcess:
    """A running server (any uvicorn app on 127.0.0.1 that logs its port and answers /ready): `url` once
    /ready answers 200. `stop()` sends SIGTERM: requests in flight finish first, then uvicorn re-raises the
    signal, so a graceful exit has status 0 or -SIGTERM and logs "Application shutdown complete"."""

    def __init__(self, command: Sequence[str], log: Path, timeout: float = 180.0,
                 env: dict[str, str] | None = None) -> None:
        self.log = Path(log)
        self._handle = open(self.log, "w", encoding="utf-8")
        self.process = subprocess.Popen(list(command), stdout=self._handle, stderr=subprocess.STDOUT, env=env)
        self.url = self._wait_until_ready(timeout)

    def _wait_until_ready(self, timeout: float) -> str:
        deadline, url = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.text()[-3000:]}")
            found = STARTED.search(self.text()) if url is None else None
            if found:
                url = f"http://127.0.0.1:{found.group(1)}"
            if url is not None:
                try:
                    if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                        return url
                except httpx.TransportError:
                    pass
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"the server was not ready within {timeout:.0f} s:\n{self.text()[-3000:]}")

    def text(self) -> str:
        """Everything the server has logged so far."""
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 60.0) -> bool:
        """SIGTERM, then wait; True when it shut down gracefully."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        finally:
            self.kill()
        return status in (0, -signal.SIGTERM) and "Application shutdown complete" in self.text()

    def kill(self) -> None:
        """Make sure it is gone (after a failure)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._handle.close()

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
