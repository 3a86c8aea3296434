"""Run the Procfile's processes and the robot simulator on one machine (demo and tests)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """Return a loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy; raise TimeoutError after ``timeout``."""
    end = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < end:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}; last: {last!r}")


def procfile() -> dict[str, str]:
    """Return the Procfile's process commands by name."""
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip() and not line.startswith("#"))


def bin_path() -> str:
    """Return a PATH that finds this interpreter's scripts (celery, gunicorn) first."""
    return f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"


class Process:
    """One child process in its own session, its output in a log file."""

    def __init__(self, name: str, command: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        """Signal the process, wait for it, kill it if it overstays; return its exit code."""
        if self.alive():
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        # Reap what it left in its session (a prefork child orphaned by a SIGKILL).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self._log.close()
        return self.popen.returncode

    def kill(self) -> None:
        """SIGKILL the whole process group, as a crash would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)
        self._log.close()


def redis_answers(url: str) -> bool:
    """Tell whether a Redis server answers at ``url``."""
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def private_redis(log_dir: Path) -> tuple[str, Process] | None:
    """Start a throwaway redis-server on a free port if the binary exists."""
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    port = free_port()
    command = f"{binary} --port {port} --bind 127.0.0.1 --save '' --appendonly no"
    process = Process("redis", command, {"PATH": bin_path()}, log_dir)
    url = f"redis://127.0.0.1:{port}/0"
    wait_until(lambda: redis_answers(url), 10, "the private redis-server")
    return url, process


def run_release(env: dict[str, str]) -> None:
    """Run the Procfile's release command (migrations) to completion, or raise."""
    done = subprocess.run(
        ["bash", "-c", procfile()["release"]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"release failed: {done.stderr.strip()[-2000:]}")
