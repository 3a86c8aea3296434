"""A private RabbitMQ node for the fault tests and the benchmarks, never the shared one."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import kombu

from .processes import Process, free_port, wait_until


class PrivateRabbitMQ:
    """A private RabbitMQ node on free ports, in its own folder, never the shared one.

    Its own node name, Erlang cookie (``HOME``), database and logs; no plugins; the server's
    ``consumer_timeout`` as given. Run as the ``rabbitmq`` user when the tests run as root.
    ``restart()`` stops and starts it on the same ports and data (durable queues survive).
    """

    def __init__(self, base: Path, consumer_timeout_ms: int = 60_000) -> None:
        self.base = base
        self.name = f"test-{uuid.uuid4().hex[:8]}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.generation = 0
        self.process: Process | None = None
        for sub in ("home", "mnesia", "log"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        cookie = base / "home" / ".erlang.cookie"
        cookie.write_text(uuid.uuid4().hex)
        cookie.chmod(0o400)
        (base / "enabled_plugins").write_text("[].\n")
        (base / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            f"consumer_timeout = {consumer_timeout_ms}\n"
            "loopback_users = none\n"
        )
        self._as_rabbitmq = os.geteuid() == 0
        if self._as_rabbitmq:
            shutil.chown(base, "rabbitmq", "rabbitmq")
            for path in base.rglob("*"):
                shutil.chown(path, "rabbitmq", "rabbitmq")

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def _env(self) -> dict[str, str]:
        return {
            "PATH": "/usr/lib/rabbitmq/bin:/usr/sbin:/usr/bin:/bin",
            "HOME": str(self.base / "home"),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
        }

    def _command(self, tool: str, *args: str) -> str:
        env = " ".join(f"{k}={v}" for k, v in self._env().items())
        prefix = "runuser -u rabbitmq -- " if self._as_rabbitmq else ""
        return f"{prefix}env {env} /usr/lib/rabbitmq/bin/{tool} " + " ".join(args)

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run rabbitmqctl against this node only."""
        return subprocess.run(
            ["bash", "-c", self._command("rabbitmqctl", "-n", self.name, "-q", *args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.base,
        )

    def answers(self) -> bool:
        """Tell whether the AMQP port accepts a login."""
        try:
            with kombu.Connection(self.url, connect_timeout=2) as conn:
                conn.connect()
                return True
        except Exception:  # any failure to log in means: not up yet
            return False

    def start(self) -> PrivateRabbitMQ:
        self.generation += 1
        self.process = Process(
            f"rabbitmq-{self.generation}",
            self._command("rabbitmq-server"),
            {"PATH": "/usr/sbin:/usr/bin:/bin"},
            self.base,
        )
        try:
            wait_until(self.answers, 90, f"the private RabbitMQ node {self.name}", interval=0.5)
        except TimeoutError:
            log = self.process.log()[-3000:]
            self.stop()
            raise RuntimeError(f"private RabbitMQ did not start:\n{log}") from None
        return self

    def stop(self) -> None:
        """Stop the node gracefully (its durable queues stay on disk); kill it if it hangs."""
        if self.process is None or not self.process.alive():
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.ctl("stop", timeout=60)
        self.process.stop(timeout=20)

    def restart(self) -> None:
        self.stop()
        self.start()

    def queue_depths(self) -> dict[str, int]:
        """Messages ready or unacknowledged per queue (rabbitmqctl list_queues)."""
        answer = self.ctl("list_queues", "name", "messages", "--no-table-headers")
        depths = {}
        for line in answer.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                depths[parts[0]] = int(parts[1])
        return depths
