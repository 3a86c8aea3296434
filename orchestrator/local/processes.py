"""Run the Procfile's processes and the robot simulator on one machine (demo, run and tests).

Also picks the Redis to run on: ``REDIS_URL``; else the local Redis on 127.0.0.1:6379
(database 14); else a private ``redis-server`` on a free port; else the embedded Redis
(fakeredis over TCP: slow, for a bare machine only).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import redis
import requests

from ..robots import variable_prefix

ROOT = Path(__file__).resolve().parents[2]
LOCAL_REDIS = "redis://127.0.0.1:6379/14"
REDIS_MODES = ("auto", "embedded")
FLOWER_USER = "operator"


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


def embedded_redis(log_dir: Path) -> tuple[str, Process] | None:
    """Start the embedded Redis (fakeredis over TCP) on a free port if fakeredis is installed."""
    from . import embedded_redis as embedded

    if not embedded.available():
        return None
    port = free_port()
    command = f"{sys.executable} -m orchestrator.local.embedded_redis --port {port}"
    process = Process("embedded-redis", command, {"PATH": bin_path()}, log_dir)
    url = f"redis://127.0.0.1:{port}/0"
    wait_until(lambda: redis_answers(url) or not process.alive(), 30, "the embedded Redis")
    if not process.alive():
        raise RuntimeError(f"the embedded Redis did not start: {process.log()[-500:]}")
    return url, process


def run_line(name: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    """Run one Procfile line to completion with only ``env``; return what it printed."""
    return subprocess.run(
        ["bash", "-c", procfile()[name]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_release(env: dict[str, str]) -> None:
    """Run the Procfile's release command (migrations) to completion, or raise."""
    done = run_line("release", env)
    if done.returncode != 0:
        raise RuntimeError(f"release failed: {done.stderr.strip()[-2000:]}")


def answers(url: str) -> bool:
    """Tell whether a GET of ``url`` answers 200."""
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def port_or_free(preferred: int) -> int:
    """Return ``preferred`` if nothing listens on it, else a free port."""
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", preferred))  # noqa: S104 - the web process binds all addresses
        except OSError:
            return free_port()
    return preferred


@dataclass(frozen=True)
class RedisChoice:
    url: str
    process: Process | None  # a Redis started for this run, to stop at its end
    description: str
    slow: bool = False


def choose_redis(log_dir: Path, mode: str = "auto") -> RedisChoice:
    """Pick the Redis: REDIS_URL, the local one, a private redis-server, else the embedded one.

    ``mode="embedded"`` skips the real ones (to try the fallback on a machine that has Redis).
    """
    if mode not in REDIS_MODES:
        raise ValueError(f"unknown Redis mode {mode!r}")
    if mode == "auto":
        if os.environ.get("REDIS_URL"):
            return RedisChoice(os.environ["REDIS_URL"], None, "REDIS_URL")
        if redis_answers(LOCAL_REDIS):
            return RedisChoice(LOCAL_REDIS, None, f"the local Redis, {LOCAL_REDIS}")
        started = private_redis(log_dir)
        if started is not None:
            url, process = started
            return RedisChoice(url, process, f"a private redis-server on {url}")
    started = embedded_redis(log_dir)
    if started is None:
        raise RuntimeError(
            "no Redis: REDIS_URL is not set, nothing answers on 127.0.0.1:6379, there is no "
            "redis-server binary, and fakeredis[lua] is not installed (pip install -e '.[dev]')"
        )
    url, process = started
    return RedisChoice(
        url,
        process,
        f"the embedded Redis (fakeredis) on {url}. It works, but about 20x slower than a "
        "real Redis: install redis-server for a faster system",
        slow=True,
    )


class Stack:
    """The Procfile's processes and a robot, each started by name and awaited until ready.

    The one launcher of the demo, the tests and the benchmarks: the release, the readiness
    checks, the stop order and the logs are here; a subclass says what its robot is and
    what it adds to a command (``command``).
    """

    ready_timeout = 90.0

    def __init__(
        self,
        log_dir: Path,
        env: dict[str, str],
        web_port: int,
        robot_port: int,
        robots: Iterable[str] = (),
    ):
        self.log_dir = log_dir
        self.env = env
        self.web_port = web_port
        self.robot_port = robot_port
        self.base = f"http://127.0.0.1:{web_port}"
        self.robot = f"http://127.0.0.1:{robot_port}"
        # Several robots (CONTRACT §11): a simulator each, on its own port, started as the
        # process "robot-<name>"; "robot" in ``start`` stands for all of them.
        self.robot_ports = {name: free_port() for name in robots}
        self.robot_urls = {n: f"http://127.0.0.1:{p}" for n, p in self.robot_ports.items()}
        self.flower = ""
        self.processes: dict[str, Process] = {}

    def robots_env(self, api_token: str | None = None) -> dict[str, str]:
        """Return ``ROBOTS`` and each robot's ``ROBOT_<N>_URL`` (and ``_API_TOKEN``, since a
        robot's token has no fallback); nothing for one robot."""
        if not self.robot_urls:
            return {}
        env = {"ROBOTS": ",".join(self.robot_urls)}
        for name, url in self.robot_urls.items():
            env[f"{variable_prefix(name)}URL"] = url
            if api_token:
                env[f"{variable_prefix(name)}API_TOKEN"] = api_token
        return env

    def simulator_port(self, name: str) -> int:
        """Return the port of the simulator process ``name`` ("robot" or "robot-<robot>")."""
        return self.robot_ports[name.removeprefix("robot-")] if name != "robot" else self.robot_port

    def command(self, name: str) -> tuple[str, dict[str, str]]:
        """Return the command line and environment of a process: its Procfile line here."""
        return procfile()[name], self.env

    def start(
        self,
        names: Iterable[str] = ("robot", "web", "worker", "beat"),
        say: Callable[[str], None] = lambda line: None,
    ) -> Self:
        """Run the release, then start each process and wait until it is ready."""
        run_release(self.env)
        say("  release   database migrated")
        for name in self._expand(names):
            self.start_process(name)
            say(f"  {name:<9} up")
        return self

    def _expand(self, names: Iterable[str]) -> list[str]:
        """Replace "robot" by one "robot-<name>" per robot when there are several."""
        robots = [f"robot-{name}" for name in self.robot_ports] or ["robot"]
        return [each for name in names for each in (robots if name == "robot" else [name])]

    def start_process(
        self, name: str, command: str | None = None, label: str | None = None
    ) -> Process:
        """Start a process by name (``command`` replaces its own); ``label`` names its log."""
        own, env = self.command(name)
        label = label or name
        process = Process(label, command or own, env, self.log_dir)
        self.processes[label] = process
        checks: dict[str, Callable[[], bool]] = {
            "robot": lambda: answers(f"{self.robot}/healthz"),
            "web": lambda: answers(f"{self.base}/healthz"),
            "worker": lambda: " ready." in process.log(),
            "beat": lambda: "beat: Starting" in process.log(),
            "flower": lambda: answers(f"{self.flower}/healthcheck"),
        }
        if name.startswith("robot-"):
            checks[name] = lambda: answers(f"{self.robot_urls[name[6:]]}/healthz")
        ready = checks.get(name, lambda: True)
        try:
            wait_until(lambda: ready() or not process.alive(), self.ready_timeout, name)
        except TimeoutError:
            raise RuntimeError(f"{name} did not start; its log: {process.log_path}") from None
        if not process.alive():
            tail = process.log()[-1500:]
            raise RuntimeError(f"{name} exited at start; its log ({process.log_path}):\n{tail}")
        return process

    def dead(self) -> list[Process]:
        """Return the processes that exited on their own."""
        return [p for p in self.processes.values() if not p.alive()]

    def logs(self, tail: int = 4000) -> str:
        """Return the end of every process's log, for a failure message."""
        return "\n".join(f"=== {n} ===\n{p.log()[-tail:]}" for n, p in self.processes.items())

    def stop(self) -> None:
        """Stop every process (see stop_all)."""
        stop_all(list(self.processes.values()))


class LocalSystem(Stack):
    """The demo's system: the Procfile's processes and the robot simulator, as children.

    Each gets only the contract's variables (APP_ENV=development, a fresh API token and
    callback secret); ``settings`` adds or overrides any of them.
    """

    def __init__(
        self,
        log_dir: Path,
        redis_url: str,
        database_url: str,
        *,
        web_port: int | None = None,
        flower_port: int | None = None,
        item_delay: float = 0.15,
        browsers: int | None = None,
        settings: dict[str, str] | None = None,
        robots: Iterable[str] = (),
    ) -> None:
        web_port = web_port or free_port()
        robot_port = free_port()
        self.token = f"dev-{secrets.token_urlsafe(18)}"
        env = {
            "PATH": bin_path(),
            "APP_ENV": "development",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "ROBOT_URL": f"http://127.0.0.1:{robot_port}",
            "PUBLIC_URL": f"http://127.0.0.1:{web_port}",
            "PORT": str(web_port),
            "API_TOKENS": self.token,
            "ROBOT_CALLBACK_SECRET": secrets.token_urlsafe(32),
        }
        super().__init__(log_dir, env, web_port, robot_port, robots)
        self.env.update({**self.robots_env(), **(settings or {})})
        self.flower_port = flower_port or free_port()
        self.flower = f"http://127.0.0.1:{self.flower_port}"
        self.item_delay = item_delay
        self.browsers = browsers

    def command(self, name: str) -> tuple[str, dict[str, str]]:
        if name == "robot" or name.startswith("robot-"):
            command = (
                f"python -m orchestrator.local.robot_simulator --port {self.simulator_port(name)} "
                f"--item-delay {self.item_delay:g}"
            )
            if self.browsers is not None:
                command += f" --browsers {self.browsers}"
            return command, self.env
        if name == "flower":
            env = {
                **self.env,
                "PORT": str(self.flower_port),
                "FLOWER_BASIC_AUTH": f"{FLOWER_USER}:{self.token}",
            }
            return procfile()["flower"] + " --address=127.0.0.1", env
        return super().command(name)


def stop_all(processes: list[Process]) -> None:
    """Stop processes together: one SIGTERM each, then wait for each, killing what overstays."""
    for process in processes:
        if process.alive():
            with contextlib.suppress(ProcessLookupError):
                process.popen.send_signal(signal.SIGTERM)
    for process in reversed(processes):
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.popen.wait(15)
        process.stop()  # kills what overstayed and reaps its session
