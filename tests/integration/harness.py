"""Start the real processes (Procfile lines, simulator) and drive them over HTTP."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import requests

from orchestrator.local.processes import Stack, bin_path, free_port, procfile, wait_until
from orchestrator.local.robot_simulator import signed_headers
from orchestrator.signing import job_callback_secret
from tests import REDIS_PORT

API_TOKEN = "integration-token"
ROBOT_TOKEN = "robot-token-integration"
MASTER_SECRET = "integration-master-secret"
FINAL = ("completed", "failed", "cancelled")


class System(Stack):
    """release, web, worker, beat (Procfile) and the robot simulator on one Redis DB."""

    def __init__(
        self,
        log_dir: Path,
        database_url: str,
        redis_db: int,
        *,
        redis_url: str | None = None,
        robots: tuple[str, ...] = (),
        **env: str,
    ) -> None:
        web_port, robot_port = free_port(), free_port()
        # redis_url (optional) replaces the shared Redis, e.g. with a private redis-server.
        self.redis_url = redis_url or f"redis://127.0.0.1:{REDIS_PORT}/{redis_db}"
        super().__init__(
            log_dir,
            {
                "PATH": bin_path(),
                "APP_ENV": "production",
                "DATABASE_URL": database_url,
                "REDIS_URL": self.redis_url,
                "ROBOT_URL": f"http://127.0.0.1:{robot_port}",
                "ROBOT_API_TOKEN": ROBOT_TOKEN,
                "ROBOT_CALLBACK_SECRET": MASTER_SECRET,
                "PUBLIC_URL": f"http://127.0.0.1:{web_port}",
                "API_TOKENS": f"{API_TOKEN},other-token",
                "PORT": str(web_port),
                "ROBOT_SECONDS_PER_ITEM": "1",
                "ROBOT_DEADLINE_MARGIN_SECONDS": "4",
                "ROBOT_SETTLE_SECONDS": "0.3",
                "ROBOT_DISPATCH_TIMEOUT_SECONDS": "2",
                # The suites provoke §4 failures one after another on shared systems: the
                # pause after failures (§7) would stop them all; its own tests set it.
                "ROBOT_PAUSE_AFTER_FAILURES": "0",
                **env,
            },
            web_port,
            robot_port,
            robots,
        )
        # Several robots (CONTRACT §11): a simulator each; the test's settings win.
        self.env.update({**self.robots_env(ROBOT_TOKEN), **env})
        # Extra command-line arguments per process name, appended to its command.
        self.extra_args: dict[str, str] = {}
        self.http = requests.Session()
        # A new connection per request: the web process closes an idle kept-alive connection
        # after 2 s (docs/security.md), and a request sent on it at that moment is reset
        # unanswered. Tests often wait about that long between two requests.
        self.http.headers["Connection"] = "close"

    def command(self, name: str) -> tuple[str, dict[str, str]]:
        if name == "robot" or name.startswith("robot-"):
            command = (
                f"python -m orchestrator.local.robot_simulator "
                f"--port {self.simulator_port(name)} --item-delay 0.02 --token {ROBOT_TOKEN}"
            )
        else:
            command = procfile()[name]
        if name == "worker":
            # Distinct node names let a replacement worker start beside a killed one.
            command += f" --hostname=worker-{uuid.uuid4().hex[:6]}@%h"
        if self.extra_args.get(name):
            command += f" {self.extra_args[name]}"
        return command, self.env

    def stop(self) -> None:
        super().stop()
        self.http.close()

    # --- job API ---

    def headers(self, token: str = API_TOKEN, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}", **extra}

    def submit(
        self, orders: list[dict[str, Any]], key: str | None = None, robot: str | None = None
    ) -> requests.Response:
        headers = self.headers(**({"Idempotency-Key": key} if key else {}))
        body: dict[str, Any] = {"orders": orders}
        if robot is not None:
            body["robot"] = robot
        return self.http.post(f"{self.base}/api/jobs", json=body, headers=headers, timeout=10)

    def job(self, job_id: str) -> dict[str, Any]:
        answer = self.http.get(f"{self.base}/api/jobs/{job_id}", headers=self.headers(), timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def wait_final(self, job_id: str, timeout: float = 60) -> dict[str, Any]:
        def final() -> dict[str, Any] | None:
            job = self.job(job_id)
            return job if job["status"] in FINAL else None

        try:
            return wait_until(final, timeout, f"job {job_id} to finish")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None

    # --- robot simulator ---

    def simulator(self, robot: str | None = None) -> str:
        """The URL of the simulator of ``robot`` (several robots), else of the one robot."""
        return self.robot_urls[robot] if robot is not None else self.robot

    def robot_config(self, robot: str | None = None, **options: Any) -> None:
        answer = requests.post(f"{self.simulator(robot)}/_sim/config", json=options, timeout=5)
        assert answer.status_code == 200, answer.text

    def robot_stats(self, robot: str | None = None) -> dict[str, Any]:
        return requests.get(f"{self.simulator(robot)}/_sim/stats", timeout=5).json()

    def robot_reset(self) -> None:
        requests.post(f"{self.robot}/_sim/reset", timeout=5)
        self.robot_config(
            mode="normal", item_delay=0.02, failure_rate=0, browsers=None, heartbeat=None
        )

    # --- robot callbacks, signed as the robot would ---

    def send_event(
        self,
        job_id: str,
        event_type: str,
        data: dict[str, Any],
        webhook_id: str | None = None,
        secret: str | None = None,
    ) -> requests.Response:
        body = json.dumps({"type": event_type, "data": data})
        key = secret or job_callback_secret(MASTER_SECRET, job_id)
        headers = signed_headers(key, body, webhook_id)
        return self.http.post(
            f"{self.base}/api/robot/jobs/{job_id}/events", data=body, headers=headers, timeout=10
        )


def orders(count: int, prefix: str = "ORD", **pedido: Any) -> list[dict[str, Any]]:
    """Return ``count`` orders with unique ids."""
    run = uuid.uuid4().hex[:6]
    return [
        {"orderId": f"{prefix}-{run}-{n}", "pedidoInput": {"n": n, **pedido}} for n in range(count)
    ]
